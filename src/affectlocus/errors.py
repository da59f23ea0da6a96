"""Typed error hierarchy: every error names what was wrong and what was available.

All errors derive from :class:`AffectLocusError`, so ``except al.AffectLocusError`` catches
everything this library raises on purpose. Messages are meant to be read by a person.
"""
from __future__ import annotations

from typing import Iterable


def _preview(items: Iterable[object], limit: int = 12) -> str:
    """Render up to ``limit`` items as a comma-separated list, with a count of the rest."""
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


class AffectLocusError(Exception):
    """Base class of every error this library raises on purpose."""


class SiteError(AffectLocusError, ValueError):
    """A module/layer selection that names something the model does not have, or nothing at all."""


class ArchitectureError(AffectLocusError):
    """The model's structure is not one we can map to canonical projection sites."""


class SourceError(AffectLocusError):
    """A donor weight source is missing, corrupt, unsafe or does not fit the model."""


class UnsafeFileError(SourceError):
    """A file would need to run pickled code (or hold non-plain objects) to load."""


class ShapeMismatchError(SourceError):
    """A donor tensor's shape does not match the site it is meant for."""


class NonFiniteError(SourceError):
    """A donor tensor holds NaN or Inf values."""


class InterventionError(AffectLocusError):
    """An intervention that cannot be applied as asked (bad argument, conflicting state)."""


class ConfigError(AffectLocusError, ValueError):
    """A configuration field or option value is missing, unknown or out of range (e.g. a study field,
    a metric name); the message names the allowed values."""


class ModelLoadError(AffectLocusError):
    """A model could not be loaded from the given name or path."""


class DataError(AffectLocusError):
    """A dataset, label file or benchmark output is missing or malformed."""


class TuningError(AffectLocusError):
    """A training, sweep or export request that cannot be carried out as asked."""


class CheckpointError(TuningError):
    """A checkpoint could not be written or read (the previous checkpoint is kept)."""


class ResumeError(TuningError):
    """A run folder holds a run with a different configuration, data or base model."""


__all__ = [
    "AffectLocusError",
    "SiteError",
    "ArchitectureError",
    "SourceError",
    "UnsafeFileError",
    "ShapeMismatchError",
    "NonFiniteError",
    "InterventionError",
    "ConfigError",
    "ModelLoadError",
    "DataError",
    "TuningError",
    "CheckpointError",
    "ResumeError",
    "_preview",
]
