"""Read AffectGPT / MER-UniBench output and label files and score them as the benchmark does.

Output kinds (one checkpoint ``X`` of a run folder ``results-<dataset>/<model>/``):

- ``X.npz`` — ``name2reason`` (name → the model's free-text answer);
- ``X-openset.npz`` — ``filenames`` / ``fileitems`` (the judge's emotion list, ``"[a, b]"``);
- ``X-openset-sentiment.npz`` — ``filenames`` / ``fileitems`` (``positive`` / ``negative`` / …).

Emotion tasks are scored from ``X-openset.npz``, sentiment tasks from ``X-openset-sentiment.npz``;
given any one of the three files the needed sibling is found. A results folder is scored
checkpoint by checkpoint and the best (first maximum of the main score) is reported, as the
reference ``main_zeroshot_scores`` does. All npz files are read through :mod:`.safe_npz`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from ..errors import DataError
from .metrics import HitRate, SentimentScore, hit_rate, mean_score, sentiment_scores
from .safe_npz import load_npz, load_npz_item
from .wheels import EmotionWheels, as_wheels

Score = Union[HitRate, SentimentScore]

#: canonical dataset names (the benchmark's spelling) in table order
UNIBENCH_DATASETS: tuple[str, ...] = ("MER2023", "MER2024", "MELD", "IEMOCAPFour",
                                      "CMUMOSI", "CMUMOSEI", "SIMS", "SIMSv2")
EMOTION_DATASETS = frozenset({"MER2023", "MER2024", "MELD", "IEMOCAPFour"})
SENTIMENT_DATASETS = frozenset({"CMUMOSI", "CMUMOSEI", "SIMS", "SIMSv2"})
_ALIASES = {"mosi": "CMUMOSI", "mosei": "CMUMOSEI", "iemocap": "IEMOCAPFour", "iemocap4": "IEMOCAPFour",
            "simsv1": "SIMS", "chsims": "SIMS", "chsimsv2": "SIMSv2", "cmu-mosi": "CMUMOSI",
            "cmu-mosei": "CMUMOSEI", "ch-sims": "SIMS", "ch-simsv2": "SIMSv2"}
_INDEX_EMOTIONS = {"MELD": ("anger", "joy", "sadness", "neutral", "disgust", "fear", "surprise"),
                   "IEMOCAPFour": ("happy", "sad", "neutral", "anger")}


@dataclass(frozen=True)
class LabelSpec:
    """Where a dataset's test labels live inside a labels folder, and how to read them."""

    relpath: str
    corpus: str
    field: str
    expected: int


LABEL_SPECS: dict[str, LabelSpec] = {
    "MER2023": LabelSpec("mer2023-dataset-process/label-6way.npz", "test1_corpus", "emo", 411),
    "MER2024": LabelSpec("mer2024-dataset-process/label-6way.npz", "test1_corpus", "emo", 1169),
    "MELD": LabelSpec("meld-process/label.npz", "test_corpus", "emo", 2610),
    "IEMOCAPFour": LabelSpec("iemocap-process/label_4way.npz", "whole_corpus", "emo", 1241),
    "CMUMOSI": LabelSpec("cmumosi-process/label.npz", "test_corpus", "val", 686),
    "CMUMOSEI": LabelSpec("cmumosei-process/label.npz", "test_corpus", "val", 4659),
    "SIMS": LabelSpec("sims-process/label.npz", "test_corpus", "val", 457),
    "SIMSv2": LabelSpec("simsv2-process/label.npz", "test_corpus", "val", 1034),
}


def normalise_dataset(name: str) -> str:
    """A dataset name, case-insensitive, with aliases (mosi, mosei, iemocap) → its canonical name."""
    key = str(name).strip().lower()
    for canon in UNIBENCH_DATASETS:
        if canon.lower() == key:
            return canon
    key2 = key.replace("_", "-")
    if key2 in _ALIASES:
        return _ALIASES[key2]
    if key2.replace("-", "") in _ALIASES:
        return _ALIASES[key2.replace("-", "")]
    raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(UNIBENCH_DATASETS)} "
                    "(case-insensitive; aliases: mosi, mosei, iemocap)")


def dataset_kind(dataset: str) -> str:
    """``"emotion"`` (five-wheel hit rate) or ``"sentiment"`` (weighted F1)."""
    return "emotion" if normalise_dataset(dataset) in EMOTION_DATASETS else "sentiment"


def dataset_from_path(path: str | Path) -> str | None:
    """The dataset named by a ``results-<dataset>`` component of ``path``, if any."""
    for part in reversed(Path(path).resolve().parts):
        m = re.fullmatch(r"results-(.+)", part)
        if m:
            try:
                return normalise_dataset(m.group(1))
            except DataError:
                return None
    return None


# ---------------------------------------------------------------- labels
def label_file(labels: str | Path, dataset: str) -> Path:
    """``labels`` itself if a file, else the dataset's standard file inside the labels folder."""
    path = Path(labels)
    if path.is_dir():
        spec = LABEL_SPECS[normalise_dataset(dataset)]
        path = path / spec.relpath
    if not path.is_file():
        spec = LABEL_SPECS[normalise_dataset(dataset)]
        raise DataError(f"label file not found: {path} (for {normalise_dataset(dataset)} expected an npz "
                        f"like <labels>/{spec.relpath} holding {spec.corpus!r})")
    return path


def load_test_labels(labels: str | Path, dataset: str) -> dict[str, Any]:
    """Test-set ground truth: name → emotion word (emotion tasks) or valence (sentiment tasks).

    MER2023/MER2024 read ``test1_corpus``; MELD ``test_corpus`` (index → word);
    IEMOCAPFour session 5 of ``whole_corpus`` (names ``Ses05…``; index → word); the sentiment
    tasks ``test_corpus`` valences.
    """
    ds = normalise_dataset(dataset)
    spec = LABEL_SPECS[ds]
    path = label_file(labels, ds)
    corpus = load_npz_item(path, spec.corpus)
    if not isinstance(corpus, dict):
        raise DataError(f"{path}: {spec.corpus!r} is a {type(corpus).__name__}, "
                        "expected a dict name → {emo, val}")
    out: dict[str, Any] = {}
    for name, entry in corpus.items():
        if ds == "IEMOCAPFour" and (len(str(name)) < 5 or str(name)[4] != "5"):
            continue
        if not isinstance(entry, dict) or spec.field not in entry:
            raise DataError(f"{path}: {spec.corpus}[{name!r}] has no {spec.field!r} field")
        value = entry[spec.field]
        if spec.field == "emo" and not isinstance(value, str):
            words = _INDEX_EMOTIONS.get(ds)
            idx = int(value)
            if words is None or not 0 <= idx < len(words):
                raise DataError(f"{path}: {name!r} has emotion index {value!r} with no word for {ds}")
            value = words[idx]
        elif spec.field == "val":
            value = float(value)
        out[str(name)] = value
    if not out:
        raise DataError(f"{path}: no {ds} test samples in {spec.corpus!r}")
    return out


# ---------------------------------------------------------------- outputs
def read_reasons(path: str | Path) -> dict[str, str]:
    """``checkpoint_*.npz`` → name → answer text (``name2reason``)."""
    value = load_npz_item(path, "name2reason")
    if not isinstance(value, dict):
        raise DataError(f"{path}: name2reason is a {type(value).__name__}, expected a dict")
    return {str(k): v for k, v in value.items()}


def read_items(path: str | Path) -> dict[str, Any]:
    """``*-openset.npz`` / ``*-openset-sentiment.npz`` → name → item (later duplicates win)."""
    arrays = load_npz(path)
    for key in ("filenames", "fileitems"):
        if key not in arrays:
            raise DataError(f"{path}: has no array {key!r}; it holds: {', '.join(sorted(arrays))}")
    names, items = arrays["filenames"].tolist(), arrays["fileitems"].tolist()
    if len(names) != len(items):
        raise DataError(f"{path}: {len(names)} filenames but {len(items)} fileitems")
    return {str(n): i for n, i in zip(names, items)}


def checkpoint_base(path: str | Path) -> Path:
    """The checkpoint stem shared by an output's three files (``…/checkpoint_000060_loss_0.480``)."""
    path = Path(path)
    name = path.name
    for suffix in ("-openset-sentiment.npz", "-openset.npz", ".npz"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    raise DataError(f"{path}: not an AffectGPT output "
                    "(expected X.npz, X-openset.npz or X-openset-sentiment.npz)")


def scoring_file(path: str | Path, dataset: str) -> Path:
    """The sibling file a dataset is scored from, checked to exist."""
    base = checkpoint_base(path)
    suffix = "-openset.npz" if dataset_kind(dataset) == "emotion" else "-openset-sentiment.npz"
    target = base.with_name(base.name + suffix)
    if not target.is_file():
        step = "emotion lists" if suffix == "-openset.npz" else "sentiment labels"
        raise DataError(f"{normalise_dataset(dataset)} is scored from the judge's {step} in {target}, which "
                        f"does not exist (run the judge on {base.name}.npz first)")
    return target


def score_output(path: str | Path, dataset: str, labels: str | Path | Mapping[str, Any],
                 wheels: EmotionWheels | str | Path | None = None) -> Score:
    """Score one checkpoint's outputs (any of its three files) on ``dataset``.

    ``labels`` is a label npz, a labels folder, or already-loaded truth (:func:`load_test_labels`);
    ``wheels`` (emotion tasks only) is an :class:`EmotionWheels` or its folder; None: the packaged tables.
    """
    ds = normalise_dataset(dataset)
    truth = dict(labels) if isinstance(labels, Mapping) else load_test_labels(labels, ds)
    source = scoring_file(path, ds)
    items = read_items(source)
    if truth and not any(name in items for name in truth):
        raise DataError(f"{source}: none of its {len(items)} samples is in the {ds} test labels "
                        f"({len(truth)} samples, e.g. {next(iter(truth))!r}); wrong labels or dataset?")
    if ds in EMOTION_DATASETS:
        return hit_rate(items, truth, as_wheels(wheels))
    return sentiment_scores(items, truth)


@dataclass
class FolderScore:
    """Every checkpoint of one run folder, and the best (first maximum of ``score``)."""

    dataset: str
    run_dir: str
    best_checkpoint: str | None
    best: Score | None
    checkpoints: dict[str, Score] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Best result's fields at top level, plus the per-checkpoint scores and skips."""
        out: dict[str, Any] = {"dataset": self.dataset, "run_dir": self.run_dir,
                               "best_checkpoint": self.best_checkpoint}
        out.update(self.best.to_dict() if self.best is not None else {"score": None})
        out["checkpoints"] = {k: v.to_dict() for k, v in self.checkpoints.items()}
        out["skipped"] = dict(self.skipped)
        return out


def _checkpoints(folder: Path) -> list[Path]:
    """Answer files (``checkpoint_*.npz`` without ``openset``/``sentiment``), sorted by path."""
    return sorted(p for p in folder.glob("*.npz")
                  if "openset" not in p.name and "sentiment" not in p.name)


def find_run_dir(folder: str | Path) -> Path:
    """``folder`` if it holds checkpoints, else its sub-folder holding the most (as the reference)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"results folder not found: {folder}")
    if _checkpoints(folder):
        return folder
    best, count = None, 0
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        n = sum(1 for p in sub.iterdir() if p.name.startswith("checkpoint_") and "-" not in p.name)
        if n > count:
            best, count = sub, n
    if best is None:
        raise DataError(f"{folder}: no checkpoint_*.npz here or in its sub-folders")
    return best


def score_run(folder: str | Path, dataset: str | None, labels: str | Path | Mapping[str, Any],
              wheels: EmotionWheels | str | Path | None = None) -> FolderScore:
    """Score every checkpoint of one run folder (or a ``results-<dataset>`` folder above it)."""
    run = find_run_dir(folder)
    ds = normalise_dataset(dataset) if dataset else dataset_from_path(run)
    if ds is None:
        raise DataError(f"{folder}: cannot tell the dataset from the path (no results-<dataset> folder); "
                        f"pass one of {', '.join(UNIBENCH_DATASETS)}")
    truth = dict(labels) if isinstance(labels, Mapping) else load_test_labels(labels, ds)
    if ds in EMOTION_DATASETS:
        wheels = as_wheels(wheels)
    result = FolderScore(dataset=ds, run_dir=str(run), best_checkpoint=None, best=None)
    for ckpt in _checkpoints(run):
        try:
            result.checkpoints[ckpt.name] = score_output(ckpt, ds, truth, wheels)
        except DataError as exc:
            result.skipped[ckpt.name] = str(exc)
    scores = [(s.score if s.score is not None else -np.inf) for s in result.checkpoints.values()]
    if scores:
        names = list(result.checkpoints)
        i = int(np.argmax(scores))
        result.best_checkpoint, result.best = names[i], result.checkpoints[names[i]]
    return result


def score_results_folder(folder: str | Path, labels: str | Path | Mapping[str, Any],
                         wheels: EmotionWheels | str | Path | None = None,
                         dataset: str | None = None) -> dict[str, FolderScore]:
    """Score a run folder, a ``results-<dataset>`` folder, or a parent of several; best per dataset.

    With several datasets ``labels`` must be a labels folder (``<dataset>-process/label*.npz``); a
    dataset that cannot be scored (no label file — MER2024 has no public labels) is kept with
    ``best=None`` and the reason in ``skipped``. ``wheels`` None: the packaged tables.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"results folder not found: {folder}")
    subs = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("results-")
                   and dataset_from_path(p) is not None),
                  key=lambda p: (UNIBENCH_DATASETS.index(dataset_from_path(p) or ""), p.name))
    if not subs or _checkpoints(folder) or dataset_from_path(folder) is not None:
        res = score_run(folder, dataset, labels, wheels)
        return {res.dataset: res}
    if dataset is not None:
        ds = normalise_dataset(dataset)
        subs = [p for p in subs if dataset_from_path(p) == ds]
        if not subs:
            raise DataError(f"{folder}: no results-{ds.lower()} folder")
    label_dir = not isinstance(labels, Mapping) and Path(labels).is_dir()
    if len(subs) > 1 and not label_dir:
        raise DataError(f"{folder} holds results for {len(subs)} datasets: give a labels folder "
                        "(<dataset>-process/label*.npz inside) or choose one dataset")
    if any(dataset_from_path(p) in EMOTION_DATASETS for p in subs):
        wheels = as_wheels(wheels)  # loaded once for every emotion dataset
    out: dict[str, FolderScore] = {}
    for sub in subs:
        ds = dataset_from_path(sub)
        assert ds is not None
        try:
            out[ds] = score_run(sub, ds, labels, wheels)
        except DataError as exc:
            out[ds] = FolderScore(dataset=ds, run_dir=str(sub), best_checkpoint=None, best=None,
                                  skipped={"*": str(exc)})
    return out


def summary_mean(results: Mapping[str, FolderScore]) -> float | None:
    """Mean of the best scores over the datasets scored (the benchmark's reported mean)."""
    return mean_score([r.best.score if r.best else None for r in results.values()])


__all__ = ["UNIBENCH_DATASETS", "EMOTION_DATASETS", "SENTIMENT_DATASETS", "LABEL_SPECS", "LabelSpec",
           "FolderScore", "normalise_dataset", "dataset_kind", "dataset_from_path", "label_file",
           "load_test_labels", "read_reasons",
           "read_items", "checkpoint_base", "scoring_file", "score_output", "find_run_dir", "score_run",
           "score_results_folder", "summary_mean"]
