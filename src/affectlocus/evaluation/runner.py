"""The evaluator: evaluate a model *as it currently is* (any intervention stack active) on tasks,
with a results cache, resume after a kill, and scores with seeded bootstrap confidence intervals.

Cache: ``cache_dir/<task>/<key>/`` where ``key`` hashes (fingerprint of the current weights and
buffers — so weight-space interventions change it by themselves —, the descriptions of the active
intervention handles — hooks leave weights alone —, tokenizer, task fingerprint, split, number of
examples, mode, prompt version/style, seed, ``cache_tag``). Each finished batch is written as its own
``part-*.jsonl`` (atomically), so a killed run resumes with the batches it had not finished, formed
exactly as before (same numbers as an uninterrupted run); a complete entry recomputes nothing.
Activation interventions are keyed by ``describe()``; one whose behaviour it does not capture (e.g.
``mean_ablate`` with different means) needs a distinct ``cache_tag``.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .._io import atomic_write_text
from ..errors import ConfigError, DataError
from ..models.fingerprint import model_fingerprint
from ..tasks.classification import chance_level, classification_metrics, percentile_ci
from ..tasks.datasets import Example, Task, load_task
from ..tasks.prompts import PromptStyle, build_label_prompts, generation_prompts, label_kind, tokenizer_fingerprint
from .judges import Judge, LexiconJudge, map_to_label
from .predict import LabelScorer, generate_answers

RUNNER_VERSION = "runner-1"
MODES = ("label", "generate")
METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "weighted_f1")


# ---------------------------------------------------------------- keys
def intervention_stack(model: torch.nn.Module) -> list[str]:
    """Stable descriptions of the active handles (without the per-process handle ids)."""
    from ..registry import active
    return ["; ".join(i.describe() for i in h.interventions) for h in active(model)]


def safe_name(name: str) -> str:
    """``name`` as a file name: letters, digits and ``-_.`` kept, anything else ``_`` (80 at most)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "task"


class ResultCache:
    """Per-example records in chunk files; ``root=None`` keeps nothing on disk."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None

    def folder(self, key: dict[str, Any]) -> Path | None:
        if self.root is None:
            return None
        text = json.dumps(key, sort_keys=True)
        folder = self.root / safe_name(str(key.get("task", "task"))) / hashlib.sha256(text.encode()).hexdigest()[:20]
        if not (folder / "key.json").exists():
            atomic_write_text(folder / "key.json", json.dumps(key, indent=1, sort_keys=True))
        return folder

    @staticmethod
    def load(folder: Path | None) -> dict[str, dict]:
        out: dict[str, dict] = {}
        if folder is None or not folder.is_dir():
            return out
        for part in sorted(folder.glob("part-*.jsonl")):
            for line in part.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    out[rec["id"]] = rec
        return out

    @staticmethod
    def write(folder: Path | None, name: str, records: Sequence[dict]) -> None:
        if folder is not None:
            atomic_write_text(folder / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


# ---------------------------------------------------------------- scores
def bootstrap_rng(seed: int, task: str) -> np.random.Generator:
    """The generator of a task's bootstrap: depends on (seed, task name) only, not on task order."""
    return np.random.default_rng([seed, zlib.crc32(task.encode())])


@dataclass
class TaskScore:
    """One task's score: ``score`` is ``metrics[metric]``, ``ci`` its bootstrap 95% interval."""

    task: str
    metric: str
    score: float | None
    ci: tuple[float, float] | None
    n: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    cis: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    boot: np.ndarray | None = field(default=None, repr=False, compare=False)
    chance: float | None = None         # a constant predictor's best ``metric`` on these examples

    def __post_init__(self) -> None:  # intervals are kept as tuples (percentile_ci gives lists)
        self.ci = tuple(self.ci) if self.ci else None
        self.cis = {k: tuple(v) if v else None for k, v in self.cis.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "score": self.score, "chance": self.chance,
                "ci": list(self.ci) if self.ci else None, "n": self.n, "metrics": self.metrics,
                "cis": {k: list(v) if v else None for k, v in self.cis.items()}, "details": self.details}


def score_classification(task: str, labels: Sequence[str], truth: Sequence[str], preds: Sequence[str | None], *,
                         metric: str = "balanced_accuracy", n_boot: int = 1000, seed: int = 0,
                         details: dict | None = None) -> TaskScore:
    """Accuracy / macro F1 / weighted F1 with seeded bootstrap CIs (``n_boot`` resamples)."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[t] for t in truth], dtype=int)
    p = np.array([index.get(q, -1) if q is not None else -1 for q in preds], dtype=int)
    point = {k: float(v[0]) for k, v in classification_metrics(y, p, len(labels)).items()} if len(y) else \
        {k: None for k in METRICS}
    dists: dict[str, np.ndarray | None] = {k: None for k in METRICS}
    if n_boot and len(y):
        idx = bootstrap_rng(seed, task).integers(0, len(y), (n_boot, len(y)))
        dists = dict(classification_metrics(y[idx], p[idx], len(labels)))
    extra = {"n_unmapped": int((p < 0).sum()), **(details or {})}
    return TaskScore(task, metric, point[metric], percentile_ci(dists[metric]), len(y), point,
                     {k: percentile_ci(v) for k, v in dists.items()}, extra, dists[metric],
                     chance_level(y, len(labels), metric) if len(y) else None)


@dataclass
class Scores:
    """Per-task scores, their mean and its bootstrap CI (mean of the tasks' resamples)."""

    tasks: dict[str, TaskScore]
    mean: float | None = None
    mean_ci: tuple[float, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    records: dict[str, list[dict]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.mean_ci = tuple(self.mean_ci) if self.mean_ci else None

    @classmethod
    def from_tasks(cls, tasks: Iterable[TaskScore], meta: dict | None = None,
                   records: dict | None = None) -> "Scores":
        tasks = {t.task: t for t in tasks}
        vals = [t.score for t in tasks.values() if t.score is not None]
        boots = [t.boot for t in tasks.values() if t.score is not None and t.boot is not None]
        mean_ci = percentile_ci(np.mean(np.stack(boots), axis=0)) if boots and len(boots) == len(vals) else None
        return cls(tasks, float(np.mean(vals)) if vals else None, mean_ci, dict(meta or {}), dict(records or {}))

    def __getitem__(self, task: str) -> TaskScore:
        return self.tasks[task]

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": {k: v.to_dict() for k, v in self.tasks.items()}, "mean": self.mean,
                "mean_ci": list(self.mean_ci) if self.mean_ci else None, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scores":
        tasks = {k: TaskScore(v["task"], v["metric"], v["score"], v["ci"], v["n"], v["metrics"], v["cis"],
                              v["details"], chance=v.get("chance")) for k, v in d["tasks"].items()}
        return cls(tasks, d["mean"], d["mean_ci"], d.get("meta", {}))

    def to_frame(self):
        """One row per task plus a ``mean`` row (fractions in [0, 1])."""
        import pandas as pd
        rows = []
        for t in self.tasks.values():
            rows.append({"task": t.task, "metric": t.metric, "score": t.score,
                         "ci_low": t.ci[0] if t.ci else None, "ci_high": t.ci[1] if t.ci else None,
                         "n": t.n, **{k: v for k, v in t.metrics.items() if not isinstance(v, (list, dict))}})
        rows.append({"task": "mean", "metric": "mean", "score": self.mean,
                     "ci_low": self.mean_ci[0] if self.mean_ci else None,
                     "ci_high": self.mean_ci[1] if self.mean_ci else None,
                     "n": sum(t.n for t in self.tasks.values())})
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write atomically: ``.csv`` → :meth:`to_frame`, anything else → JSON of :meth:`to_dict`."""
        path = Path(path)
        text = self.to_frame().to_csv(index=False) if path.suffix == ".csv" else \
            json.dumps(self.to_dict(), indent=1, ensure_ascii=False)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "Scores":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def table(self) -> str:
        """A plain-text table (percent)."""
        pct = lambda x: "—" if x is None else f"{100 * x:6.2f}"  # noqa: E731
        lines = [f"{'task':<20}{'metric':<13}{'score':>7}  {'95% CI':<17}{'n':>6}", "-" * 64]
        for t in self.tasks.values():
            ci = f"[{pct(t.ci[0])}, {pct(t.ci[1])}]" if t.ci else ""
            lines.append(f"{t.task:<20}{t.metric:<13}{pct(t.score):>7}  {ci:<17}{t.n:>6}")
        ci = f"[{pct(self.mean_ci[0])}, {pct(self.mean_ci[1])}]" if self.mean_ci else ""
        lines.append(f"{'mean':<20}{'':<13}{pct(self.mean):>7}  {ci:<17}")
        return "\n".join(lines)


# ---------------------------------------------------------------- running
def _label_batch(scorer: LabelScorer, query_ids: list[list[int]]) -> np.ndarray:
    return scorer.score_batch(query_ids)


def _generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int) -> list[str]:
    return generate_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)


def run_task(model, tokenizer, task: Task, examples: Sequence[Example], key: dict[str, Any], *,
             mode: str = "label", cache: ResultCache | None = None, batch_size: int = 16, seed: int = 0,
             style: PromptStyle | None = None, max_new_tokens: int = 32, reuse_prefix: bool = True,
             progress: bool = False, stats: dict | None = None) -> list[dict]:
    """Per-example records (in ``examples`` order), computing only what ``cache`` lacks."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    cache = cache or ResultCache(None)
    stats = stats if stats is not None else {}
    folder = cache.folder(key)
    done = cache.load(folder)
    ids = {e.id for e in examples}
    done = {k: v for k, v in done.items() if k in ids}
    todo: list[int] = []
    if len(done) < len(examples):
        texts = [e.text for e in examples]
        if mode == "label":
            prompts = build_label_prompts(tokenizer, task.labels, texts, task.train, seed=seed, style=style)
            lengths = [len(q) for q in prompts.query_ids]
            scorer = LabelScorer(model, prompts.prefix_ids, prompts.label_ids, reuse_prefix=reuse_prefix,
                                 pad_id=tokenizer.pad_token_id or 0)
        else:
            gen = generation_prompts(tokenizer, texts, label_kind(task.labels), style=style)
            lengths = [len(g) for g in gen]
        order = sorted(range(len(examples)), key=lambda i: (lengths[i], i))
        todo = [i for i in order if examples[i].id not in done]
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        from tqdm.auto import tqdm
        for batch in tqdm(batches, desc=task.name, disable=not progress, leave=False):
            if mode == "label":
                lp = _label_batch(scorer, [prompts.query_ids[i] for i in batch])
                lens = np.array([len(x) for x in prompts.label_ids], dtype=float)
                recs = [{"i": i, "id": examples[i].id, "label": examples[i].label, "logprobs": row.tolist(),
                         "norm": (row / lens).tolist()} for i, row in zip(batch, lp)]
            else:
                answers = _generate_batch(model, tokenizer, [gen[i] for i in batch], max_new_tokens, seed)
                recs = [{"i": i, "id": examples[i].id, "label": examples[i].label, "answer": a}
                        for i, a in zip(batch, answers)]
            cache.write(folder, f"part-{order.index(batch[0]):06d}.jsonl", recs)
            done.update({r["id"]: r for r in recs})
            stats["batches"] = stats.get("batches", 0) + 1
    stats["computed"] = stats.get("computed", 0) + len(todo)
    stats["cached"] = stats.get("cached", 0) + len(examples) - len(todo)
    return [done[e.id] for e in examples]


def judge_records(records: list[dict], judge: Judge, folder: Path | None) -> list[dict]:
    """Attach ``emotions`` and ``sentiment`` from ``judge`` to generation records (cached per judge)."""
    path = folder / f"judge-{hashlib.sha256(judge.describe().encode()).hexdigest()[:12]}.json" if folder else None
    known = json.loads(path.read_text()) if path is not None and path.exists() else {}
    todo = [r for r in records if r["id"] not in known]
    if todo:
        answers = [r["answer"] for r in todo]
        for r, emo, sen in zip(todo, judge.emotions(answers), judge.sentiments(answers)):
            known[r["id"]] = {"emotions": emo, "sentiment": sen}
        if path is not None:
            atomic_write_text(path, json.dumps(known, ensure_ascii=False))
    return [{**r, **known[r["id"]]} for r in records]


def predicted_label(record: dict, labels: Sequence[str], judge: Judge | None = None,
                    normalised: bool = False) -> str | None:
    """The label a record predicts: argmax log-likelihood, or the judge's answer mapped onto ``labels``."""
    if "logprobs" in record:
        return labels[int(np.argmax(record["norm" if normalised else "logprobs"]))]
    if label_kind(labels) == "sentiment":
        return record["sentiment"] if record["sentiment"] in labels else None
    return map_to_label(record["emotions"], labels, getattr(judge, "wheels", None))


def _probs(record: dict) -> dict:
    """``{"probs": softmax over the labels' summed log-likelihoods}`` for label-mode records."""
    if "logprobs" not in record:
        return {}
    z = np.asarray(record["logprobs"]) - max(record["logprobs"])
    return {"probs": (np.exp(z) / np.exp(z).sum()).tolist()}


def model_env(model, tokenizer) -> dict[str, Any]:
    """What identifies the model as it is now in a cache key: weights fingerprint, tokenizer, active
    interventions."""
    return {"model": model_fingerprint(model), "tokenizer": tokenizer_fingerprint(tokenizer),
            "interventions": intervention_stack(model)}


def task_key(model, tokenizer, task: Task, split: str, n: int, mode: str, seed: int,
             style: PromptStyle, max_new_tokens: int, tag: str = "", env: dict | None = None) -> dict[str, Any]:
    """The cache key of one (configuration, task) evaluation."""
    env = env or model_env(model, tokenizer)
    return {"version": RUNNER_VERSION, **env, "task": task.name, "task_fingerprint": task.fingerprint(),
            "split": split, "n": n, "mode": mode, "seed": seed, "tag": tag,
            "prompt": style.key() if mode == "label" else f"{style.key()}|max_new_tokens={max_new_tokens}"}


def evaluate(model, tokenizer, tasks: Sequence[str | Task], mode: str = "label", *, seed: int = 0,
             cache_dir: str | Path | None = None, max_examples: int | None = None, batch_size: int = 16,
             split: str = "test", style: PromptStyle | None = None, judge: Judge | None = None,
             max_new_tokens: int = 32, metric: str = "balanced_accuracy", n_boot: int = 1000,
             meld_dir: str | Path | None = None, reuse_prefix: bool = True, cache_tag: str = "",
             progress: bool = True, env: dict | None = None) -> Scores:
    """Score ``model`` (as it is now) on ``tasks`` (names for :func:`load_task`, or :class:`Task`).

    ``mode="label"`` scores every verbalised label (few-shot, prefix KV cache reused);
    ``mode="generate"`` answers greedily (``max_new_tokens``) and maps the answer with ``judge``
    (default :class:`LexiconJudge`). Names are loaded with ``seed`` and ``max_test=max_examples``
    (label-stratified); given Tasks are cut to their first ``max_examples``. ``env``: the caller's
    :func:`model_env` of the model as it is now (computed here when not given).
    """
    style = style or PromptStyle()
    judge = judge or LexiconJudge()
    cache = ResultCache(cache_dir)
    env = env or model_env(model, tokenizer)
    stats: dict[str, int] = {}
    scores, all_records = [], {}
    was_training = model.training
    model.eval()
    try:
        for spec in tasks:
            task = spec if isinstance(spec, Task) else load_task(spec, meld_dir=meld_dir, seed=seed,
                                                                  max_test=max_examples)
            split_items = task.splits().get(split, [])
            examples = split_items[:max_examples] if max_examples is not None else split_items
            if not examples:
                raise DataError(f"task {task.name} has no {split!r} examples")
            key = task_key(model, tokenizer, task, split, len(examples), mode, seed, style, max_new_tokens,
                           cache_tag, env)
            records = run_task(model, tokenizer, task, examples, key, mode=mode, cache=cache,
                               batch_size=batch_size, seed=seed, style=style, max_new_tokens=max_new_tokens,
                               reuse_prefix=reuse_prefix, progress=progress, stats=stats)
            details: dict[str, Any] = {}
            if mode == "generate":
                records = judge_records(records, judge, cache.folder(key))
                details["judge"] = judge.describe()
            preds = [predicted_label(r, task.labels, judge) for r in records]
            if mode == "label":
                norm = [predicted_label(r, task.labels, normalised=True) for r in records]
                details["accuracy_length_normalised"] = float(np.mean([a == r["label"] for a, r in zip(norm, records)]))
            scores.append(score_classification(task.name, task.labels, [r["label"] for r in records], preds,
                                               metric=metric, n_boot=n_boot, seed=seed, details=details))
            all_records[task.name] = [{**r, "pred": q, **_probs(r)} for r, q in zip(records, preds)]
    finally:
        model.train(was_training)
    meta = {**env, "mode": mode, "seed": seed, "split": split, "metric": metric, "n_boot": n_boot,
            "prompt": style.key(), "stats": stats}
    return Scores.from_tasks(scores, meta, all_records)


__all__ = ["MODES", "METRICS", "ResultCache", "Scores", "TaskScore", "classification_metrics", "evaluate",
           "intervention_stack", "judge_records", "model_env", "predicted_label", "run_task", "safe_name",
           "score_classification", "task_key", "chance_level"]
