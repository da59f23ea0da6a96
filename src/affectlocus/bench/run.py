"""``affectlocus bench run``: score a model (with optional adapter / grafts / zeroing) on text tasks.

Results are cached under ``--out/cache`` by a key of (effective-weights fingerprint, active
intervention handles, tasks, sizes, prompt version, seed): rerunning recomputes nothing, and a run
killed midway keeps every finished configuration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from .._io import atomic_write_text
from ..errors import AffectLocusError
from .datasets import load_task
from .label_scoring import SYSTEM, Evaluator

PROMPT_VERSION = "label-v1"


def weights_fingerprint(model: torch.nn.Module, stride: int = 9973) -> str:
    """A fast checksum of the model's *current* weights (sums + strided samples per parameter), so
    any weight-space intervention changes it."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            h.update(name.encode())
            h.update(repr((tuple(p.shape), str(p.dtype), float(flat.double().sum()))).encode())
            h.update(flat[::stride].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_key(model, tasks: list[str], n: int, seed: int) -> str:
    from ..registry import active
    # intervention descriptions (not handle ids, which change every run); hooks don't alter weights
    parts = [weights_fingerprint(model), *[i.describe() for h in active(model) for i in h.interventions], *tasks, str(n), str(seed),
             PROMPT_VERSION, SYSTEM]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _split(spec: str) -> tuple[str, str | None]:
    mods, _, layers = spec.partition(":")
    return mods, layers or None


def parse_interventions(args: argparse.Namespace) -> list:
    """``--adapter A`` (graft every module), ``--graft SRC:MODULES[:LAYERS]``, ``--zero MODULES[:LAYERS]``."""
    from ..interventions import graft, zero
    out = []
    if args.adapter:
        out.append(graft(args.adapter))
    for spec in args.graft or []:
        src, _, rest = spec.partition(":")
        if not rest:
            raise AffectLocusError(f"--graft {spec!r}: expected SRC:MODULES[:LAYERS]")
        mods, layers = _split(rest)
        out.append(graft(src, modules=mods, layers=layers))
    for spec in args.zero or []:
        mods, layers = _split(spec)
        out.append(zero(modules=mods, layers=layers))
    return out


def run(args: argparse.Namespace) -> int:
    from ..models import load_model
    from ..registry import intervene
    model, tok = load_model(args.model, dtype=args.dtype)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    tasks = [load_task(t, meld_dir=args.meld_dir, seed=args.seed, max_test=args.max_examples) for t in names]
    out = Path(args.out)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    ev = Evaluator(model, tok, tasks, args.max_examples, args.batch_size, args.bootstrap, seed=args.seed,
                   cache_dir=out / "cache")
    with intervene(model, *parse_interventions(args)) as handle:
        key = run_key(model, names, args.max_examples, args.seed)
        row = ev.score(key)
    row.update(model=args.model, interventions=handle.describe(), tasks=names)
    lines = [f"{'task':20s} {'balanced acc':>12s}  95% CI            n", "-" * 52]
    for t, r in row["per_task"].items():
        lines.append(f"{t:20s} {r['mean']:12.3f}  [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]  {r['n']}")
    lines.append(f"{'mean':20s} {row['mean']:12.3f}  [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")
    print("\n".join(lines))
    atomic_write_text(out / "scores.json", json.dumps(row, indent=1))
    csv = ["task,score,ci_low,ci_high,n"] + [f"{t},{r['mean']},{r['ci'][0]},{r['ci'][1]},{r['n']}"
                                            for t, r in row["per_task"].items()]
    atomic_write_text(out / "scores.csv", "\n".join(csv) + "\n")
    return 0


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="score a model (± adapter, grafts, zeroing) on text tasks by label scoring")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dtype", default=None)
    p.add_argument("--adapter", help="peft adapter folder grafted on every module")
    p.add_argument("--graft", action="append", help="SRC:MODULES[:LAYERS], e.g. runs/a:gate:10:20")
    p.add_argument("--zero", action="append", help="MODULES[:LAYERS], e.g. gate:10-19")
    p.add_argument("--tasks", default="rt-polarity,tweets-sentiment")
    p.add_argument("--meld-dir", default=None)
    p.add_argument("--max-examples", type=int, default=200, help="test examples per task")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench")
    p.set_defaults(func=run)
