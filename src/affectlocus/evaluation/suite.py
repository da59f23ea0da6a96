"""Mixed task lists: route names to the embedded-suite evaluator or to MER-UniBench from subtitles,
run both on the model as it is now, and write the results (what ``affectlocus bench`` does)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .._io import atomic_write_text
from ..errors import ConfigError, DataError
from ..tasks.prompts import PromptStyle
from ..unibench.outputs import normalise_dataset
from .judges import Judge
from .runner import Scores, safe_name, evaluate


def is_unibench_task(name: str) -> bool:
    """Whether ``name`` is a MER-UniBench dataset (case-insensitive, aliases included)."""
    try:
        normalise_dataset(name)
        return True
    except DataError:
        return False


def parse_task_list(text: str) -> list[str]:
    """``"rt-polarity, MELD"`` → ``["rt-polarity", "MELD"]`` (a comma list; empty items dropped)."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError(f"task list {text!r} is empty; give a comma list of task names, e.g. "
                          "rt-polarity,tweets-sentiment or MER2023")
    return names


def split_tasks(names: Sequence[str], unibench: str | Path | None = None) -> tuple[list[str], list[str]]:
    """``(embedded-suite names, MER-UniBench names)``, each in the given order. MER-UniBench names
    need ``unibench`` (its config or folder): without it they raise :class:`ConfigError`."""
    uni = [n for n in names if is_unibench_task(n)]
    if uni and not unibench:
        raise ConfigError(f"{', '.join(uni)}: MER-UniBench tasks need --unibench CONFIG_OR_FOLDER (label npz + "
                          "subtitle CSV per dataset, and the emotion wheels)")
    return [n for n in names if n not in uni], uni


def evaluate_tasks(model, tokenizer, names: Sequence[str], mode: str = "label", *,
                   unibench: str | Path | None = None, judge: Judge | None = None, style: PromptStyle | None = None,
                   metric: str = "balanced_accuracy", meld_dir: str | Path | None = None, **common: Any) -> Scores:
    """Score ``model`` (as it is now) on a mix of embedded-suite tasks (:func:`evaluate`, with
    ``style``, ``metric`` and ``meld_dir``) and MER-UniBench datasets (:func:`run_unibench` on
    ``unibench``). ``common`` (seed, cache_dir, max_examples, batch_size, n_boot, max_new_tokens,
    progress) goes to both. The result's meta is the first part's, plus ``tasks``."""
    embedded, uni = split_tasks(names, unibench)
    parts: list[Scores] = []
    if embedded:
        parts.append(evaluate(model, tokenizer, embedded, mode, style=style, judge=judge, metric=metric,
                              meld_dir=meld_dir, **common))
    if uni:
        from .subtitles import run_unibench
        parts.append(run_unibench(model, tokenizer, unibench, uni, mode, judge=judge, **common))
    if not parts:
        raise ConfigError("no tasks to evaluate; give at least one task name")
    tasks = [t for s in parts for t in s.tasks.values()]
    return Scores.from_tasks(tasks, {**parts[0].meta, "tasks": list(names)},
                             {k: v for s in parts for k, v in s.records.items()})


def save_results(scores: Scores, out: str | Path) -> list[Path]:
    """Write ``scores.json``, ``scores.csv`` and ``predictions/<task>.jsonl`` under ``out`` (atomically);
    returns the two score files and the predictions folder."""
    out = Path(out)
    scores.save(out / "scores.json")
    scores.save(out / "scores.csv")
    for task, records in scores.records.items():
        atomic_write_text(out / "predictions" / f"{safe_name(task)}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return [out / "scores.json", out / "scores.csv", out / "predictions"]


__all__ = ["evaluate_tasks", "is_unibench_task", "parse_task_list", "save_results", "split_tasks"]
