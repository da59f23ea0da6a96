"""``affectlocus bench --model M [--adapter A] [--graft SRC:MODULES[:LAYERS]] [--zero MODULES[:LAYERS]]
--tasks T1,T2 [--mode label|generate] [--max-examples N] --out DIR``: score a model under an
intervention stack, print a table, write ``scores.json`` / ``scores.csv`` / ``predictions/<task>.jsonl``.

Tasks are embedded-suite names (``rt-polarity``, ``tweets-sentiment``, ``zh-reviews``, and with
``--meld DIR`` ``meld-emotion`` / ``meld-sentiment``) and/or MER-UniBench datasets (``MER2023`` …
``SIMSv2``, read from ``--unibench CONFIG_OR_FOLDER``, see :mod:`.subtitles`). Results are cached
under ``--cache`` (default ``OUT/cache``): rerunning recomputes nothing, a killed run resumes.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .._io import atomic_write_text
from ..errors import AffectLocusError, DataError
from ..models.cli_args import add_device_args, device_kwargs
from ..unibench.outputs import normalise_dataset
from ..tasks.prompts import PromptStyle
from .runner import METRICS, MODES, Scores, _safe, evaluate

_HELP = "score a model (± adapter, grafts, zeroing) on affective tasks; cached and resumable"
DEFAULT_TASKS = "rt-polarity,tweets-sentiment"


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model", help="smollm2-135m, an HF folder, a .safetensors or a .gguf file")
    p.add_argument("--adapter", action="append", default=[],
                   help="peft adapter folder or .pth adapter, grafted wherever it has weights (repeatable)")
    p.add_argument("--graft", action="append", default=[], metavar="SRC:MODULES[:LAYERS]",
                   help="graft MODULES (q,k,v,o,gate,up,down, attn, mlp, all) from SRC, e.g. runs/tuned:gate:10-19")
    p.add_argument("--zero", action="append", default=[], metavar="MODULES[:LAYERS]",
                   help="zero the weights of MODULES, e.g. gate:10:20 (repeatable)")
    p.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma list (default {DEFAULT_TASKS})")
    p.add_argument("--mode", choices=MODES, default="label", help="label scoring (default) or generate + judge")
    p.add_argument("--max-examples", type=int, default=None, help="test examples per task (default all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="splits, few-shot choice, bootstrap (default 0)")
    p.add_argument("--shots-per-label", type=int, default=2, help="few-shot examples per label (label mode)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="generate mode (default 48)")
    p.add_argument("--metric", choices=METRICS, default="balanced_accuracy",
                   help="embedded tasks' score (default balanced_accuracy: mean recall over labels, chance 1/K)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--meld", dest="meld_dir", default=None, help="MELD folder for meld-emotion / meld-sentiment")
    p.add_argument("--unibench", default=None, help="MER-UniBench config (.toml/.json) or folder, for MER2023 …")
    p.add_argument("--wheels", default=None, help="emotion-wheel folder: lexicon judge vocabulary (generate mode)")
    p.add_argument("--judge-model", default=None, help="use this local model as LLM judge (generate mode)")
    p.add_argument("--cache", default=None, help="results cache folder (default OUT/cache)")
    p.add_argument("--out", default=None, help="output folder (required to run)")
    p.add_argument("--no-progress", action="store_true")
    add_device_args(p)
    p.set_defaults(func=run_bench, _bench_parser=p)
    return p


def register(target: argparse.ArgumentParser | argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the run options to the ``bench`` parser itself (``affectlocus bench --model …``), or, given
    a subparsers object, as its ``run`` subcommand."""
    if isinstance(target, argparse._SubParsersAction):
        return _configure(target.add_parser("run", help=_HELP, description=_HELP))
    return _configure(target)


def split_graft(spec: str) -> tuple[str, str, str | None]:
    """``SRC:MODULES[:LAYERS]`` → (src, modules, layers); LAYERS may itself hold ':' (``10:20``)."""
    from ..sites.selection import parse_modules
    parts = spec.split(":")
    for i in range(1, len(parts)):
        try:
            parse_modules(parts[i])
        except AffectLocusError:
            continue
        src, layers = ":".join(parts[:i]), ":".join(parts[i + 1:]) or None
        if src:
            return src, parts[i], layers
    raise DataError(f"--graft {spec!r}: expected SRC:MODULES[:LAYERS], e.g. runs/tuned:gate or "
                    "runs/tuned:o,gate:10-19 (modules: q,k,v,o,gate,up,down, attn, mlp, all)")


def split_zero(spec: str) -> tuple[str, str | None]:
    """``MODULES[:LAYERS]`` → (modules, layers)."""
    mods, _, layers = spec.partition(":")
    if not mods:
        raise DataError(f"--zero {spec!r}: expected MODULES[:LAYERS], e.g. gate or gate:10-19")
    return mods, layers or None


def adapter_grafts(model, path: str) -> list:
    """Grafts applying an adapter exactly where it has weights (one per group of modules sharing
    the same covered layers), so uncovered projections are left alone rather than copied."""
    from ..interventions import graft
    from ..sites import select
    from ..sources import open_source
    source = open_source(path)
    layers: dict[str, list[int]] = {}
    for site in select(model, "all"):
        if source.covers(site):
            layers.setdefault(site.module, []).append(site.layer)
    if not layers:
        raise DataError(f"--adapter {path}: it holds no weights for any projection of this model")
    groups: dict[tuple[int, ...], list[str]] = {}
    for module, ls in layers.items():
        groups.setdefault(tuple(sorted(set(ls))), []).append(module)
    return [graft(source, modules=mods, layers=list(ls)) for ls, mods in groups.items()]


def build_interventions(adapters: Sequence[str], grafts: Sequence[str], zeros: Sequence[str],
                        model=None) -> list:
    """The intervention objects for ``--adapter`` / ``--graft`` / ``--zero`` (applied in that order).
    Adapters need the ``model`` (to graft only the sites they cover)."""
    from ..interventions import graft, zero
    out = [g for a in adapters for g in (adapter_grafts(model, a) if model is not None else [graft(a)])]
    for spec in grafts:
        src, mods, layers = split_graft(spec)
        out.append(graft(src, modules=mods, layers=layers))
    for spec in zeros:
        mods, layers = split_zero(spec)
        out.append(zero(modules=mods, layers=layers))
    return out


def _is_unibench(name: str) -> bool:
    try:
        normalise_dataset(name)
        return True
    except DataError:
        return False


def run_bench(args: argparse.Namespace) -> int:
    """Handler: load, intervene, evaluate, print, write. Returns the exit code."""
    if not args.model:
        args._bench_parser.print_help()
        return 2
    if not args.out:
        raise DataError("--out DIR is required (scores, predictions and the cache go there)")
    from ..models import load_model
    from ..registry import intervene
    from .judges import LexiconJudge, LLMJudge
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not names:
        raise DataError("--tasks is empty")
    uni = [n for n in names if _is_unibench(n)]
    embedded = [n for n in names if n not in uni]
    if uni and not args.unibench:
        raise DataError(f"{', '.join(uni)}: MER-UniBench tasks need --unibench CONFIG_OR_FOLDER (label npz + "
                        "subtitle CSV per dataset, and the emotion wheels)")
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    build_interventions([], args.graft, args.zero)  # fail on a malformed spec before loading anything
    placement = device_kwargs(args)  # a bad --device / --dtype / --device-map fails before loading too
    model, tok = load_model(args.model, **placement)
    interventions = build_interventions(args.adapter, args.graft, args.zero, model)
    judge = None
    if args.mode == "generate":
        if args.judge_model:
            jm, jt = ((model, tok) if args.judge_model == args.model
                      else load_model(args.judge_model, **placement))
            judge = LLMJudge(jm, jt, seed=args.seed, name=args.judge_model)
        elif args.wheels:
            judge = LexiconJudge(args.wheels)
    style = PromptStyle(shots_per_label=args.shots_per_label)
    common = dict(seed=args.seed, cache_dir=cache, max_examples=args.max_examples, batch_size=args.batch_size,
                  n_boot=args.n_boot, max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
    parts: list[Scores] = []
    with intervene(model, *interventions) as handle:
        described = handle.describe().split(": ", 1)[-1] if interventions else "none"
        if embedded:
            parts.append(evaluate(model, tok, embedded, args.mode, style=style, judge=judge, metric=args.metric,
                                  meld_dir=args.meld_dir, **common))
        if uni:
            from .subtitles import run_unibench
            parts.append(run_unibench(model, tok, args.unibench, uni, args.mode, judge=judge, **common))
    tasks = [t for s in parts for t in s.tasks.values()]
    scores = Scores.from_tasks(tasks, {**parts[0].meta, "model": args.model, "interventions": described,
                                       "tasks": names}, {k: v for s in parts for k, v in s.records.items()})
    print(f"model: {args.model}   interventions: {described}   mode: {args.mode}")
    print(scores.table())
    scores.save(out / "scores.json")
    scores.save(out / "scores.csv")
    for task, records in scores.records.items():
        atomic_write_text(out / "predictions" / f"{_safe(task)}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"written: {out / 'scores.json'}, {out / 'scores.csv'}, {out / 'predictions'}/")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``affectlocus bench …`` on ``argv`` (errors → message on stderr, exit code 2)."""
    parser = _configure(argparse.ArgumentParser(prog="affectlocus bench", description=_HELP))
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return run_bench(args)
    except AffectLocusError as exc:
        print(f"affectlocus: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


__all__ = ["adapter_grafts", "build_interventions", "main", "register", "run_bench", "split_graft", "split_zero"]
