"""``affectlocus train`` / ``sweep`` / ``params``: fine-tune selected sites, sweep module sets, count.

``register(subparsers)`` adds the three commands to the main CLI (:mod:`affectlocus.cli`); under
``accelerate launch`` run ``accelerate launch -m affectlocus train …``.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from .._runlog import RunLog, add_quiet_arg, model_placement
from ..models.cli_args import add_device_args, device_kwargs
from .params import count_trainable, known_archs, ratio_table
from .trainer import TrainConfig, train

#: :class:`TrainConfig` fields ``train`` and ``sweep`` do not offer as ``--field-name`` (type, default and
#: help come from the dataclass): ``modules`` is train's own (its default is the GET cell), ``template``
#: is offered negated, ``device`` by :func:`add_device_args`; the rest stay library-only.
_OWN = ("modules", "template", "device", "bf16", "gradient_checkpointing", "group_by_length")
_NO_TEMPLATE_HELP = "ignore the tokenizer's chat template"
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


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


def _config(args: argparse.Namespace) -> TrainConfig:
    values = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    values["max_grad_norm"] = values["max_grad_norm"] or None  # the command line's 0: no clipping
    return TrainConfig(**values, template=False if args.no_template else None)


def _data(args: argparse.Namespace):
    from ..errors import DataError
    from .data import arithmetic_control, load_pairs
    if args.control:
        return arithmetic_control(args.control, seed=args.seed)
    if not args.data:
        raise DataError("give --data pairs.jsonl ({'prompt': …, 'answer': …} per line) or --control N")
    return load_pairs(args.data)


def _load(args: argparse.Namespace, placement: dict, log: RunLog):
    """The base model and tokenizer, placed as ``placement`` (checked --device / --dtype / --device-map)
    asks; where it landed goes to the run log."""
    from ..models import load_model
    model, tok = load_model(args.model, **placement)
    log.event("model", name=args.model, **model_placement(model))
    return model, tok


def run_train(args: argparse.Namespace) -> int:
    placement = device_kwargs(args)  # a bad --device fails before anything is written
    with RunLog(args.out, "train", args) as log:
        model, tok = _load(args, placement, log)
        data = _data(args)
        log.event("train", status="started", out=args.out, log=str(Path(args.out) / "log.jsonl"))
        res = train(model, tok, data, args.out, _config(args), overwrite=args.overwrite,
                    progress=not args.quiet)
        log.event("train", status="finished", out=args.out, log=str(Path(args.out) / "log.jsonl"),
                  loaded=res.loaded, steps=res.steps, resumed_from=res.resumed_from, method=res.method,
                  sites=len(res.sites), trainable=res.trainable, seconds=res.seconds,
                  final_loss=res.losses[-1] if res.losses else None, artifact=str(res.artifact))
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
    placement = device_kwargs(args)
    with RunLog(args.out, "sweep", args) as log:
        model, tok = _load(args, placement, log)
        sets = DEFAULT_SETS if args.sets == "default" else [s for s in args.sets.split(";") if s.strip()]
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        frame = sweep(model, tok, _data(args), args.out, module_sets=sets, seeds=seeds,
                      eval_data=args.eval_data, config=_config(args), progress=not args.quiet)
        for row in frame.to_dict("records"):  # each cell's per-step losses: cells/<cell>/log.jsonl
            log.event("cell", **row, log=str(Path(args.out) / "cells" / str(row.get("cell")) / "log.jsonl"))
    cols = [c for c in ("cell", "trainable", "trainable_ratio", "final_loss", "eval_loss") if c in frame]
    print(frame[cols].to_string(index=False))
    print(f"\n{len(frame)} cells in {args.out}/results.jsonl")
    return 0


def _option(f: dataclasses.Field, hint) -> dict:
    """``add_argument`` keywords for one :class:`TrainConfig` field: its default, help and choices, its
    type (``X | None`` → ``X``; ``Any`` → a string), and a flag for a ``bool`` that defaults to False."""
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    kwargs = {"default": f.default, "help": f.metadata.get("help")}
    if kinds[0] is bool:
        return {**kwargs, "action": "store_true"}
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    return {**kwargs, "type": kinds[0]} if kinds[0] in (int, float, str) else kwargs


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="alias, HF folder, .safetensors or .gguf")
    p.add_argument("--data", help="JSONL of {\"prompt\": …, \"answer\": …}")
    p.add_argument("--control", type=int, default=0, metavar="N",
                   help="train on N generated arithmetic problems (the non-affective control) instead")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds an unfinished run)")
    hints = typing.get_type_hints(TrainConfig)
    for name, f in _FIELDS.items():
        if name not in _OWN:
            p.add_argument(f"--{name.replace('_', '-')}", **_option(f, hints[name]))
    p.add_argument("--no-template", action="store_true", help=_NO_TEMPLATE_HELP)
    add_quiet_arg(p)
    add_device_args(p)  # the model trains where it is loaded (no silent move to a GPU)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="exact LoRA parameter counts and ratios (gate-only vs all-seven, "
                                      "every single module and pair), computed on the meta device")
    p.add_argument("--arch", default="qwen2.5-7b",
                   help=f"shipped config ({', '.join(known_archs())}) or a config.json / model folder")
    p.add_argument("--r", type=int, default=TrainConfig.r, help=f"LoRA rank (default {TrainConfig.r})")
    p.set_defaults(func=run_params)
    t = sub.add_parser("train", help="fine-tune selected sites (LoRA or full) on prompt/answer pairs; "
                                     "resumable; runs under accelerate launch")
    _training_args(t)
    t.add_argument("--modules", default="gate",
                   help=f"{_FIELDS['modules'].metadata['help']} (default: gate)")
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

