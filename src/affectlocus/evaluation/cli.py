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
from pathlib import Path
from typing import Sequence

from .._cli import run_standalone
from .._runlog import RunLog, add_quiet_arg, model_placement, show_progress
from ..errors import ConfigError
from ..models.cli_args import add_device_args, device_kwargs
from ..tasks.prompts import PromptStyle
from .runner import METRICS, MODES
from .suite import evaluate_tasks, parse_task_list, save_results, split_tasks

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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet_arg(p)
    add_device_args(p)
    p.set_defaults(func=run_bench, _bench_parser=p)
    return p


def register(target: argparse.ArgumentParser | argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the run options to the ``bench`` parser itself (``affectlocus bench --model …``), or, given
    a subparsers object, as its ``run`` subcommand."""
    if isinstance(target, argparse._SubParsersAction):
        return _configure(target.add_parser("run", help=_HELP, description=_HELP))
    return _configure(target)


def run_bench(args: argparse.Namespace) -> int:
    """Handler: load, intervene, evaluate, print, write. Returns the exit code."""
    if not args.model:
        args._bench_parser.print_help()
        return 2
    if not args.out:
        raise ConfigError("--out DIR is required (scores, predictions and the cache go there)")
    from ..interventions.spec import build_interventions
    names = parse_task_list(args.tasks)
    split_tasks(names, args.unibench)  # MER-UniBench names without --unibench fail before loading
    out = Path(args.out)
    build_interventions([], args.graft, args.zero)  # fail on a malformed spec before loading anything
    placement = device_kwargs(args)  # a bad --device / --dtype / --device-map fails before loading too
    with RunLog(out, "bench", args) as log:
        scores, described = _score(args, names, placement, log)
        for task in scores.tasks.values():
            log.event("task", **{k: v for k, v in task.to_dict().items() if k != "details"})
        log.event("summary", mean=scores.mean, mean_ci=scores.mean_ci, interventions=described,
                  written=[str(p) for p in save_results(scores, out)])
    print(f"model: {args.model}   interventions: {described}   mode: {args.mode}")
    print(scores.table())
    if not args.quiet:
        print(f"written: {out / 'scores.json'}, {out / 'scores.csv'}, {out / 'predictions'}/")
    return 0


def _score(args: argparse.Namespace, names: list[str], placement: dict, log: RunLog):
    """Load the model (and judge), score it under the interventions: ``(scores, interventions described)``."""
    from ..interventions.spec import build_interventions
    from ..models import load_model
    from ..registry import intervene
    from .judges import LexiconJudge, LLMJudge
    out = Path(args.out)
    model, tok = load_model(args.model, **placement)
    log.event("model", name=args.model, **model_placement(model))
    interventions = build_interventions(args.adapter, args.graft, args.zero, model)
    judge = None
    if args.mode == "generate":
        if args.judge_model:
            jm, jt = ((model, tok) if args.judge_model == args.model
                      else load_model(args.judge_model, **placement))
            judge = LLMJudge(jm, jt, seed=args.seed, name=args.judge_model)
        elif args.wheels:
            judge = LexiconJudge(args.wheels)
    with intervene(model, *interventions) as handle:
        described = handle.describe().split(": ", 1)[-1] if interventions else "none"
        scores = evaluate_tasks(
            model, tok, names, args.mode, unibench=args.unibench, judge=judge,
            style=PromptStyle(shots_per_label=args.shots_per_label), metric=args.metric, meld_dir=args.meld_dir,
            seed=args.seed, cache_dir=Path(args.cache) if args.cache else out / "cache",
            max_examples=args.max_examples, batch_size=args.batch_size, n_boot=args.n_boot,
            max_new_tokens=args.max_new_tokens, progress=show_progress(args))
    scores.meta.update(model=args.model, interventions=described)
    return scores, described


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``affectlocus bench …`` on ``argv`` (errors → message on stderr, exit code 2)."""
    return run_standalone("affectlocus bench", _HELP, _configure, run_bench, argv)


__all__ = ["main", "register", "run_bench"]
