"""Typed score rows and the one CI formatter.

Steps store plain JSON (``steps/<step>.json``, ``results.json``) and :mod:`.stats` computes on it;
:class:`ScoreRow` and :class:`TaskRow` (one task's part of a row; not the evaluator's
:class:`~affectlocus.evaluation.TaskScore`, which it is built from) are the typed view the evaluator builds rows with and the
report and figures read them through. ``from_dict`` reads the stored JSON and ``to_dict`` writes it
back key for key: a field is written when it is set (``ci`` always, ``None`` when there is no CI),
keys the class does not know are kept, and the order is the evaluator's.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence, TypeVar, Union

_T = TypeVar("_T", bound="_Json")


def fmt_ci(ci: Sequence[float] | None, spec: str = ".3f", missing: str = "—") -> str:
    """``[low, high]`` with ``spec`` (``".3f"``, ``"+.3f"``, ``".0%"``); ``missing`` without a CI."""
    return missing if not ci else f"[{format(ci[0], spec)}, {format(ci[1], spec)}]"


def ci_above_zero(ci: Sequence[float] | None) -> bool:
    """The CI lies above 0 (an effect beyond its CI)."""
    return bool(ci) and ci[0] > 0


def ci_below_zero(ci: Sequence[float] | None) -> bool:
    """The CI lies below 0 (the opposite effect beyond its CI)."""
    return bool(ci) and ci[1] < 0


class _Json:
    """``to_dict`` / ``from_dict`` of a dataclass whose fields are JSON keys (see the module docstring)."""

    ALWAYS: tuple[str, ...] = ()
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.name in self.ALWAYS):
                out[f.name] = self._dump(f.name, value)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any]) -> _T:
        """Read the JSON form (unknown keys kept as they are)."""
        names = {f.name for f in fields(cls)} - {"extra"}  # type: ignore[arg-type]
        known = {k: cls._load(k, v) for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    def _dump(self, name: str, value: Any) -> Any:
        return list(value) if isinstance(value, (list, tuple)) else value

    @classmethod
    def _load(cls, name: str, value: Any) -> Any:
        return value


@dataclass
class TaskRow(_Json):
    """One task of a score row. A single-seed row carries its per-example answers ``pred`` and
    ``truth`` (indices into ``labels``; ``-1``: no label), which every paired bootstrap resamples."""

    mean: float | None = None
    n: int | None = None
    chance: float | None = None
    labels: list[str] | None = None
    pred: list[int] | None = None
    truth: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class ScoreRow(_Json):
    """One configuration's score: the mean over tasks of the study's metric, its 95 % CI and per-task
    scores. A single-seed row (the evaluator's) has per-example answers; a multi-seed row
    (:func:`.stats.over_seeds`) has the seeds, their ``sd`` and the single-seed rows in ``per_seed``."""

    ALWAYS = ("ci",)
    metric: str | None = None
    mean: float | None = None
    chance: float | None = None
    per_task: dict[str, TaskRow] | None = None
    ci: list[float] | None = None
    name: str | None = None
    seed: int | None = None
    sd: float | None = None
    seeds: list[int | None] | None = None
    per_seed: list[ScoreRow] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def coerce(cls, row: RowLike) -> ScoreRow:
        """``row`` itself when typed, else read from its JSON form."""
        return row if isinstance(row, ScoreRow) else cls.from_dict(row)

    @property
    def interval(self) -> tuple[float, float]:
        """``(low, high)`` of the CI; ``(mean, mean)`` without one."""
        lo, hi = self.ci or (self.mean, self.mean)
        return float(lo), float(hi)

    def _dump(self, name: str, value: Any) -> Any:
        if name == "per_task":
            return {t: v.to_dict() for t, v in value.items()}
        if name == "per_seed":
            return [r.to_dict() for r in value]
        return super()._dump(name, value)

    @classmethod
    def _load(cls, name: str, value: Any) -> Any:
        if name == "per_task" and value is not None:
            return {t: TaskRow.from_dict(v) for t, v in value.items()}
        if name == "per_seed" and value is not None:
            return [cls.from_dict(r) for r in value]
        return value


#: A score row, typed or in its JSON form.
RowLike = Union[ScoreRow, Mapping[str, Any]]

__all__ = ["RowLike", "ScoreRow", "TaskRow", "ci_above_zero", "ci_below_zero", "fmt_ci"]
