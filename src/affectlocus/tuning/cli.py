"""``affectlocus params``: exact LoRA parameter ratios for shipped or user configs."""
from __future__ import annotations

import argparse

from .params import count_trainable, known_archs, ratio_table


def run_params(args: argparse.Namespace) -> int:
    rows = ratio_table(args.arch, r=args.r)
    allp = rows[0][1]
    model = count_trainable(args.arch, "all", r=args.r).model_params
    print(f"{args.arch}: {model:,} parameters; LoRA r={args.r} on every layer (uniform rank)")
    print(f"{'modules':12s} {'trainable':>14s} {'÷ all-seven':>12s} {'% of model':>11s}")
    for name, n, ratio in rows:
        print(f"{name:12s} {n:14,d} {ratio:12.4f} {100 * n / model:10.3f}%")
    gate = dict((k, v) for k, v, _ in rows)["gate"]
    print(f"\ngate-only / all-seven = {gate}/{allp} = {gate / allp:.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="exact LoRA parameter counts and ratios (gate-only vs all-seven, "
                                      "every single module and pair), computed on the meta device")
    p.add_argument("--arch", default="qwen2.5-7b",
                   help=f"shipped config ({', '.join(known_archs())}) or a config.json / model folder")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (default 16)")
    p.set_defaults(func=run_params)
