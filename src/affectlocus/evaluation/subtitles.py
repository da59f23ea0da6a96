"""Run a text LLM on the eight MER-UniBench tasks from their subtitles, scored as the benchmark does.

You bring the files: per dataset a label npz (or a labels folder holding ``<dataset>-process/…``, see
:data:`~affectlocus.unibench.outputs.LABEL_SPECS`) and a subtitle CSV with a ``name`` column and an
``english`` and/or ``chinese`` column. The emotion wheels of the emotion tasks ship with the package
(``wheels`` overrides them). Describe the files in a TOML/JSON config (paths relative to it)::

    labels = "labels"               # a folder of <dataset>-process/ folders (optional)
    wheels = "emotion_wheel"        # optional; default: the packaged MER-UniBench tables
    language = "english"            # or "chinese"; default: english when the CSV has it
    [subtitles]
    MER2023 = "subtitles/mer2023.csv"
    MELD = "subtitles/meld.csv"
    [label_files]                   # optional per-dataset npz overriding `labels`
    MELD = "meld-process/label.npz"

or give a folder with ``labels/``, ``subtitles/<Dataset>.csv`` (any case) and, optionally, ``emotion_wheel/``.

Emotion tasks (MER2023, MER2024, MELD, IEMOCAPFour) are scored with the five-wheel hit rate,
sentiment tasks (CMUMOSI, CMUMOSEI, SIMS, SIMSv2) with weighted F1, both through the scoring
module's own :func:`hit_rate` / :func:`sentiment_scores`; CIs come from a seeded bootstrap over
samples. ``mode="generate"``: the model answers openly and a judge (default: the lexicon judge on
the wheels) turns answers into emotion words / a sentiment; ``mode="label"``: the model's most
likely label among the dataset's own emotion words (or negative/neutral/positive). Samples without
a subtitle are counted as missing predictions (reported as ``n_missing``).
"""
from __future__ import annotations

import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError
from ..tasks.classification import classification_metrics, percentile_ci
from ..tasks.datasets import Example, Task
from ..tasks.prompts import PromptStyle
from ..unibench.metrics import hit_rate, sentiment_scores
from ..unibench.outputs import EMOTION_DATASETS, LABEL_SPECS, UNIBENCH_DATASETS, load_test_labels, normalise_dataset
from ..unibench.wheels import EmotionWheels, parse_labels
from .judges import Judge, LexiconJudge
from .runner import ResultCache, Scores, TaskScore, bootstrap_rng, judge_records, model_env, run_task, task_key

SENTIMENT_LABELS = ("negative", "neutral", "positive")


@dataclass
class UniBenchSources:
    """Where a user's MER-UniBench files are (see the module docstring)."""

    subtitles: dict[str, Path] = field(default_factory=dict)
    labels: Path | None = None
    label_files: dict[str, Path] = field(default_factory=dict)
    wheels: Path | None = None  # None: the packaged MER-UniBench tables
    language: str | None = None
    origin: str = ""

    @classmethod
    def from_config(cls, path: str | Path) -> "UniBenchSources":
        """Read a ``.toml`` or ``.json`` config; relative paths are taken from its folder."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"MER-UniBench config not found: {path}")
        if path.suffix == ".json":
            cfg = json.loads(path.read_text(encoding="utf-8"))
        else:
            import tomllib
            cfg = tomllib.loads(path.read_text(encoding="utf-8"))
        base = path.parent
        rel = lambda p: (base / Path(p).expanduser()) if p else None  # noqa: E731
        unknown = set(cfg) - {"labels", "wheels", "language", "subtitles", "label_files"}
        if unknown:
            raise DataError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected labels, wheels, "
                            "language, [subtitles], [label_files]")
        return cls(subtitles={normalise_dataset(k): rel(v) for k, v in cfg.get("subtitles", {}).items()},
                   labels=rel(cfg.get("labels")),
                   label_files={normalise_dataset(k): rel(v) for k, v in cfg.get("label_files", {}).items()},
                   wheels=rel(cfg.get("wheels")), language=cfg.get("language"), origin=str(path))

    @classmethod
    def from_folder(cls, root: str | Path, language: str | None = None) -> "UniBenchSources":
        """``root/labels``, ``root/subtitles/<Dataset>.csv`` and ``root/emotion_wheel`` if present."""
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"MER-UniBench folder not found: {root}")
        subs = {}
        for csv in sorted((root / "subtitles").glob("*.csv")):
            try:
                subs[normalise_dataset(csv.stem)] = csv
            except DataError:
                continue
        wheels = root / "emotion_wheel"
        return cls(subs, root / "labels", {}, wheels if wheels.is_dir() else None, language, str(root))

    @classmethod
    def load(cls, path: str | Path) -> "UniBenchSources":
        return cls.from_folder(path) if Path(path).is_dir() else cls.from_config(path)

    def label_source(self, dataset: str) -> Path:
        ds = normalise_dataset(dataset)
        if ds in self.label_files:
            return self.label_files[ds]
        if self.labels is None:
            raise DataError(f"no labels for {ds}: set `labels` (a folder holding {LABEL_SPECS[ds].relpath}) "
                            f"or [label_files] {ds} = PATH in {self.origin or 'the config'}")
        return self.labels

    def subtitle_file(self, dataset: str) -> Path:
        ds = normalise_dataset(dataset)
        if ds not in self.subtitles:
            where = f"{self.origin}/subtitles/{ds}.csv" if Path(self.origin or ".").is_dir() else \
                f"[subtitles] {ds} = PATH in {self.origin or 'the config'}"
            raise DataError(f"no subtitle CSV for {ds}: expected {where} (columns name, english/chinese)")
        path = self.subtitles[ds]
        if not path.is_file():
            raise DataError(f"subtitle CSV for {ds} not found: expected {path} (columns name, english/chinese)")
        return path


def read_subtitles(path: Path, language: str | None = None) -> tuple[dict[str, str], str]:
    """``name → text`` from a subtitle CSV, and the language column used."""
    import pandas as pd
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = {c.strip().lower(): c for c in df.columns}
    if "name" not in cols:
        raise DataError(f"{path}: no 'name' column; it has {', '.join(map(str, df.columns))}")
    lang = (language or ("english" if "english" in cols else "chinese")).lower()
    if lang not in cols:
        want = repr(lang) if language else "'english' or 'chinese'"
        raise DataError(f"{path}: no {want} column; it has {', '.join(map(str, df.columns))}")
    return {str(n).strip(): str(t).strip() for n, t in zip(df[cols["name"]], df[cols[lang]])}, lang


def unibench_task(sources: UniBenchSources, dataset: str, *, max_examples: int | None = None,
                  seed: int = 0) -> tuple[Task, dict[str, Any]]:
    """The dataset as a :class:`Task` (test split = samples with a subtitle) and its ground truth
    (``name → emotion word`` or ``name → valence``, restricted to the evaluated sample)."""
    ds = normalise_dataset(dataset)
    texts, lang = read_subtitles(sources.subtitle_file(ds), sources.language)
    truth = load_test_labels(sources.label_source(ds), ds)
    names = sorted(truth)
    if max_examples is not None and max_examples < len(names):
        random.Random(seed).shuffle(names)
        names = sorted(names[:max_examples])
    truth = {n: truth[n] for n in names}
    if ds in EMOTION_DATASETS:
        labels = tuple(sorted({str(v).lower().strip() for v in truth.values()}))
        lab = {n: str(truth[n]).lower().strip() for n in names}
    else:
        labels = SENTIMENT_LABELS
        lab = {n: "positive" if truth[n] > 0 else "negative" if truth[n] < 0 else "neutral" for n in names}
    test = [Example(texts[n], lab[n], n) for n in names if texts.get(n)]
    if not test:
        raise DataError(f"{ds}: none of the {len(names)} test samples has a subtitle in "
                        f"{sources.subtitle_file(ds)} (names look like {names[0]!r})")
    task = Task(ds, labels, "zh" if lang == "chinese" else "en", [], test, f"MER-UniBench {ds} from subtitles",
                str(sources.subtitle_file(ds)), seed, cleaning={"no_subtitle": len(names) - len(test)})
    return task, truth


def wheel_hits(predictions: Mapping[str, Sequence[str]], truth: Mapping[str, Any],
               wheels: EmotionWheels) -> np.ndarray:
    """``[n, wheels]`` per-sample hits (NaN where the truth maps to nothing on that wheel)."""
    out = np.full((len(truth), len(wheels.wheels)), np.nan)
    for i, (name, gt) in enumerate(truth.items()):
        gt_words = [str(w).lower().strip() for w in parse_labels(gt)]
        pred_words = [str(w).lower().strip() for w in parse_labels(predictions.get(name, []))]
        for k in range(len(wheels.wheels)):
            g = wheels.clusters(gt_words, k)
            if g:
                out[i, k] = len(g & wheels.clusters(pred_words, k))
    return out


def score_emotion(dataset: str, predictions: Mapping[str, Sequence[str]], truth: Mapping[str, Any],
                  wheels: EmotionWheels, *, n_boot: int = 1000, seed: int = 0) -> TaskScore:
    """Hit rate (via :func:`hit_rate`) with a bootstrap CI over samples."""
    hr = hit_rate(predictions, truth, wheels)
    boot = None
    if n_boot and truth:
        hits = wheel_hits(predictions, truth, wheels)
        idx = bootstrap_rng(seed, dataset).integers(0, len(hits), (n_boot, len(hits)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample may miss a wheel entirely
            boot = np.nanmean(np.nanmean(hits[idx], axis=1), axis=1)
        boot = boot[~np.isnan(boot)]
    return TaskScore(dataset, "hit_rate", hr.score, percentile_ci(boot), hr.n_samples,
                     {"hit_rate": hr.score, "per_wheel": hr.per_wheel}, {"hit_rate": percentile_ci(boot)},
                     {"n_scored": hr.n_scored, "n_skipped": hr.n_skipped, "n_missing": hr.n_missing}, boot)


def score_sentiment(dataset: str, predictions: Mapping[str, str], truth: Mapping[str, float], *,
                    n_boot: int = 1000, seed: int = 0) -> TaskScore:
    """Weighted F1 and accuracy (via :func:`sentiment_scores`) with bootstrap CIs."""
    ss = sentiment_scores(predictions, truth)
    names = [n for n, v in truth.items() if float(v) != 0]
    y = np.array([float(truth[n]) > 0 for n in names], dtype=int)
    p = np.array([predictions.get(n) == "positive" for n in names], dtype=int)
    dists: dict[str, np.ndarray | None] = {"weighted_f1": None, "accuracy": None}
    if n_boot and names:
        idx = bootstrap_rng(seed, dataset).integers(0, len(y), (n_boot, len(y)))
        dists.update({k: v for k, v in classification_metrics(y[idx], p[idx], 2).items() if k in dists})
    return TaskScore(dataset, "weighted_f1", ss.score, percentile_ci(dists["weighted_f1"]), ss.n_samples,
                     {"weighted_f1": ss.score, "accuracy": ss.accuracy},
                     {k: percentile_ci(v) for k, v in dists.items()},
                     {"n_scored": ss.n_scored, "n_dropped_zero": ss.n_dropped_zero, "n_missing": ss.n_missing,
                      "n_other_labels": ss.n_other_labels}, dists["weighted_f1"])


def run_unibench(model, tokenizer, sources: UniBenchSources | str | Path, datasets: Sequence[str] | None = None,
                 mode: str = "generate", *, judge: Judge | None = None, seed: int = 0,
                 cache_dir: str | Path | None = None, max_examples: int | None = None, batch_size: int = 16,
                 max_new_tokens: int = 64, n_boot: int = 1000, style: PromptStyle | None = None,
                 progress: bool = True) -> Scores:
    """Score ``model`` (as it is now, interventions included) on MER-UniBench datasets from subtitles.

    ``datasets`` defaults to every dataset with a subtitle CSV in ``sources``. Returns
    :class:`Scores` (hit rate for emotion tasks, weighted F1 for sentiment tasks; mean over them).
    """
    if not isinstance(sources, UniBenchSources):
        sources = UniBenchSources.load(sources)
    names = [normalise_dataset(d) for d in (datasets or [d for d in UNIBENCH_DATASETS if d in sources.subtitles])]
    if not names:
        raise DataError(f"no MER-UniBench dataset to run: {sources.origin or 'the sources'} lists no subtitle CSV")
    wheels = EmotionWheels.load(sources.wheels) if any(d in EMOTION_DATASETS for d in names) else None
    judge = judge or LexiconJudge(wheels)
    style = style or PromptStyle(shots_per_label=0)
    cache = ResultCache(cache_dir)
    env = model_env(model, tokenizer)
    stats: dict[str, int] = {}
    scores, all_records = [], {}
    for ds in names:
        task, truth = unibench_task(sources, ds, max_examples=max_examples, seed=seed)
        key = task_key(model, tokenizer, task, "test", len(task.test), mode, seed, style, max_new_tokens,
                       "unibench", env)
        records = run_task(model, tokenizer, task, task.test, key, mode=mode, cache=cache, batch_size=batch_size,
                           seed=seed, style=style, max_new_tokens=max_new_tokens, progress=progress, stats=stats)
        if mode == "generate":
            records = judge_records(records, judge, cache.folder(key))
        if ds in EMOTION_DATASETS:
            preds = {r["id"]: (r["emotions"] if mode == "generate" else [task.labels[int(np.argmax(r["logprobs"]))]])
                     for r in records}
            ts = score_emotion(ds, preds, truth, wheels, n_boot=n_boot, seed=seed)  # type: ignore[arg-type]
        else:
            spreds = {r["id"]: (r["sentiment"] if mode == "generate" else task.labels[int(np.argmax(r["logprobs"]))])
                      for r in records}
            ts = score_sentiment(ds, spreds, truth, n_boot=n_boot, seed=seed)
        ts.details["no_subtitle"] = task.cleaning.get("no_subtitle", 0)
        scores.append(ts)
        all_records[ds] = records
    meta = {**env, "mode": mode, "seed": seed, "judge": judge.describe() if mode == "generate" else None,
            "sources": sources.origin, "n_boot": n_boot, "stats": stats}
    return Scores.from_tasks(scores, meta, all_records)


__all__ = ["SENTIMENT_LABELS", "UniBenchSources", "read_subtitles", "run_unibench", "score_emotion",
           "score_sentiment", "unibench_task", "wheel_hits"]
