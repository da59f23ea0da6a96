"""``affectlocus train`` / ``sweep`` / ``params``: fine-tune selected sites, sweep module sets, count.

``register(subparsers)`` adds the three commands to the main CLI (:mod:`affectlocus.cli`); under
``accelerate launch`` run ``accelerate launch -m affectlocus train …``.
"""
from __future__ import annotations

import argparse

from ..models.cli_args import add_device_args, device_kwargs
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


def _config(args: argparse.Namespace):
    from .trainer import TrainConfig
    return TrainConfig(method=args.method, modules=getattr(args, "modules", "all"), layers=args.layers,
                       r=args.r, alpha=args.alpha, dropout=args.dropout, rslora=args.rslora, steps=args.steps,
                       batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                       weight_decay=args.weight_decay, warmup=args.warmup,
                       max_grad_norm=args.max_grad_norm or None, max_length=args.max_length, seed=args.seed,
                       template=False if args.no_template else None, save_every=args.save_every,
                       device=getattr(args, "device", None))


def _data(args: argparse.Namespace):
    from ..errors import DataError
    from .data import arithmetic_control, load_pairs
    if args.control:
        return arithmetic_control(args.control, seed=args.seed)
    if not args.data:
        raise DataError("give --data pairs.jsonl ({'prompt': …, 'answer': …} per line) or --control N")
    return load_pairs(args.data)


def _load(args: argparse.Namespace):
    """The base model and tokenizer, placed as --device / --dtype / --device-map ask (checked first)."""
    from ..models import load_model
    return load_model(args.model, **device_kwargs(args))


def run_train(args: argparse.Namespace) -> int:
    from .trainer import train
    model, tok = _load(args)
    res = train(model, tok, _data(args), args.out, _config(args), overwrite=args.overwrite,
                progress=not args.quiet)
    from accelerate import PartialState
    if PartialState().is_main_process:
        state = "already finished (loaded)" if res.loaded else f"trained {res.steps - res.resumed_from} steps" \
            + (f" (resumed at step {res.resumed_from})" if res.resumed_from else "")
        last = f"{res.losses[-1]:.4f}" if res.losses else "n/a"
        print(f"{args.out}: {state}; {res.method} on {len(res.sites)} sites, {res.trainable:,} trainable "
              f"parameters; final loss {last}; result {res.artifact}")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .sweep import DEFAULT_SETS, sweep
    model, tok = _load(args)
    sets = DEFAULT_SETS if args.sets == "default" else [s for s in args.sets.split(";") if s.strip()]
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    frame = sweep(model, tok, _data(args), args.out, module_sets=sets, seeds=seeds,
                  eval_data=args.eval_data, config=_config(args), progress=not args.quiet)
    cols = [c for c in ("cell", "trainable", "trainable_ratio", "final_loss", "eval_loss") if c in frame]
    print(frame[cols].to_string(index=False))
    print(f"\n{len(frame)} cells in {args.out}/results.jsonl")
    return 0


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, HF folder, .safetensors or .gguf")
    p.add_argument("--data", help="JSONL of {\"prompt\": …, \"answer\": …}")
    p.add_argument("--control", type=int, default=0, metavar="N",
                   help="train on N generated arithmetic problems (the non-affective control) instead")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds an unfinished run)")
    p.add_argument("--method", choices=("lora", "full"), default="lora",
                   help="LoRA on the sites, or full fine-tuning of only the selected weights")
    p.add_argument("--layers", default=None, help="layers: '10:20', '0,5', '-1' (default: all)")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--rslora", action="store_true")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8, help="per process and micro-batch")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=0.03, help="fraction of steps (<1) or steps (≥1)")
    p.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=50, help="checkpoint period in steps (0: none)")
    p.add_argument("--no-template", action="store_true", help="ignore the tokenizer's chat template")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_args(p)  # the model trains where it is loaded (no silent move to a GPU)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="exact LoRA parameter counts and ratios (gate-only vs all-seven, "
                                      "every single module and pair), computed on the meta device")
    p.add_argument("--arch", default="qwen2.5-7b",
                   help=f"shipped config ({', '.join(known_archs())}) or a config.json / model folder")
    p.add_argument("--r", type=int, default=16, help="LoRA rank (default 16)")
    p.set_defaults(func=run_params)
    t = sub.add_parser("train", help="fine-tune selected sites (LoRA or full) on prompt/answer pairs; "
                                     "resumable; runs under accelerate launch")
    _training_args(t)
    t.add_argument("--modules", default="gate", help="e.g. gate (GET), attn+gate, all (default: gate)")
    t.add_argument("--overwrite", action="store_true", help="discard a run already in --out")
    t.set_defaults(func=run_train)
    s = sub.add_parser("sweep", help="train + evaluate module sets × seeds; one row per finished cell; "
                                     "restart to resume")
    _training_args(s)
    s.add_argument("--sets", default="default",
                   help="'default' (singles, attn, attn+gate/up/down and pairs, all) or 'gate;attn;all'")
    s.add_argument("--seeds", default="0", help="comma-separated seeds")
    s.add_argument("--eval-data", help="held-out JSONL (default: 10%% of --data)")
    s.set_defaults(func=run_sweep)

