"""``affectlocus bench score PATH --dataset D --labels LABELS [--wheels DIR] [--json]``.

PATH is one output npz (``X.npz``, ``X-openset.npz`` or ``X-openset-sentiment.npz``; the needed
sibling is found) or a results folder (every checkpoint scored, the best per dataset reported).
Emotion tasks are scored on the MER-UniBench emotion wheels shipped with the package; ``--wheels``
gives another folder of the same layout. ``--json`` prints fractions in [0, 1]; the plain output is
a table in percent.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from .._cli import run_standalone
from ..errors import DataError
from .metrics import HitRate, SentimentScore
from .outputs import (UNIBENCH_DATASETS, FolderScore, dataset_from_path, normalise_dataset, score_output,
                      score_results_folder, scoring_file, summary_mean)
from .wheels import WHEEL_NAMES

_HELP = "score precomputed AffectGPT-style outputs exactly as MER-UniBench does"


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("path", metavar="PATH", help="an output npz, or a results folder (results-<dataset>/…)")
    p.add_argument("--dataset", "-d", help=f"one of {', '.join(UNIBENCH_DATASETS)} (case-insensitive; "
                   "aliases mosi, mosei, iemocap); default: from a results-<dataset> folder in PATH")
    p.add_argument("--labels", "-l", required=True,
                   help="label npz (e.g. mer2023-dataset-process/label-6way.npz) "
                   "or a folder of <dataset>-process/ folders")
    p.add_argument("--wheels", "-w", help="emotion-wheel folder (format.csv, synonym.xlsx, wheel1..5.xlsx) "
                   "for MER2023, MER2024, MELD, IEMOCAPFour; default: the MER-UniBench tables shipped "
                   "with affectlocus")
    p.add_argument("--json", action="store_true", help="print the result as JSON (fractions in [0, 1])")
    p.set_defaults(func=run_score)
    return p


def add_score_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``score`` on a subparsers object (e.g. the ``bench`` group's)."""
    return _configure(subparsers.add_parser("score", help=_HELP, description=_HELP))


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _format_score(res: HitRate | SentimentScore) -> list[str]:
    if isinstance(res, HitRate):
        missing = f", missing predictions: {res.n_missing}" if res.n_missing else ""
        lines = [f"hit rate (mean of {sum(s is not None for s in res.per_wheel)} wheels): {_pct(res.score)}"
                 f"   samples: {res.n_samples}{missing}",
                 f"  {'wheel':<8}{'hit rate':>10}{'scored':>9}{'skipped':>9}"]
        for name, s, n, k in zip(WHEEL_NAMES, res.per_wheel, res.n_scored, res.n_skipped):
            lines.append(f"  {name:<8}{_pct(s):>10}{n:>9}{k:>9}")
        return lines
    extra = f"; {res.n_other_labels} other labels counted as not positive" if res.n_other_labels else ""
    extra += f"; {res.n_missing} missing predictions" if res.n_missing else ""
    return [f"weighted F1: {_pct(res.score)}   accuracy: {_pct(res.accuracy)}",
            f"  scored {res.n_scored} of {res.n_samples} "
            f"({res.n_dropped_zero} with valence 0 dropped{extra})"]


def _format_folder(res: FolderScore) -> list[str]:
    lines = [f"{res.dataset}  run: {res.run_dir}"]
    if res.checkpoints:
        lines.append(f"  {'checkpoint':<40}{'score':>8}")
        for name, s in res.checkpoints.items():
            mark = "  ← best" if name == res.best_checkpoint else ""
            lines.append(f"  {name:<40}{_pct(s.score):>8}{mark}")
    for name, why in res.skipped.items():
        lines.append(f"  skipped {name}: {why}")
    if res.best is not None:
        lines.append(f"  best: {res.best_checkpoint}")
        lines.extend("  " + line for line in _format_score(res.best))
    return lines


#: What PATH scores to: a results folder's best checkpoint per dataset, or one file's (dataset, scored file, result).
Scored = dict[str, FolderScore] | tuple[str, Path, HitRate | SentimentScore]


def _score(path: Path, dataset: str | None, labels: str | Path, wheels: str | Path | None) -> Scored:
    """A folder's results per dataset, or a file's ``(dataset, scored file, result)``."""
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_dir():
        return score_results_folder(path, labels, wheels, dataset)
    ds = normalise_dataset(dataset) if dataset else dataset_from_path(path)
    if ds is None:
        raise DataError(f"{path}: cannot tell the dataset from the path; pass --dataset "
                        f"(one of {', '.join(UNIBENCH_DATASETS)})")
    return ds, scoring_file(path, ds), score_output(path, ds, labels, wheels)


def _as_json(path: Path, scored: Scored) -> dict[str, Any]:
    """The JSON-ready result (fractions in [0, 1])."""
    if isinstance(scored, dict):
        if len(scored) == 1:
            return next(iter(scored.values())).to_dict()
        return {"datasets": {ds: r.to_dict() for ds, r in scored.items()}, "mean": summary_mean(scored),
                "n_datasets": sum(r.best is not None for r in scored.values())}
    ds, source, res = scored
    return {"dataset": ds, "path": str(path), "scored_from": str(source), **res.to_dict()}


def _as_lines(scored: Scored) -> list[str]:
    """The plain-text result (percent)."""
    if not isinstance(scored, dict):
        ds, source, res = scored
        return [f"{ds}  {source}", *_format_score(res)]
    lines = [line for r in scored.values() for line in _format_folder(r)]
    if len(scored) > 1:
        lines += ["", f"{'dataset':<14}{'best':>8}  checkpoint"]
        for ds, r in scored.items():
            lines.append(f"{ds:<14}{_pct(r.best.score if r.best else None):>8}  {r.best_checkpoint or '—'}")
        lines.append(f"{'mean':<14}{_pct(summary_mean(scored)):>8}")
    return lines


def run_score(args: argparse.Namespace) -> int:
    """Handler for the parsed ``score`` arguments; prints the result, returns the exit code."""
    path = Path(args.path)
    scored = _score(path, args.dataset, args.labels, args.wheels)
    print(json.dumps(_as_json(path, scored), indent=2) if args.json else "\n".join(_as_lines(scored)))
    return 0


def main_score(argv: Sequence[str] | None = None) -> int:
    """Run ``bench score`` on ``argv`` directly (errors → message on stderr, exit code 2)."""
    return run_standalone("affectlocus bench score", _HELP, _configure, run_score, argv)


__all__ = ["add_score_parser", "main_score", "run_score"]
