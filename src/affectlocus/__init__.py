"""affectlocus — find where a fine-tune lives inside a transformer LLM, and prove it by moving it.

Public names (stable; see README): ``load_model``, ``select``, ``open_source``, ``intervene``,
``attach``, the intervention factories (``graft``, ``interpolate``, ``zero``, ``scale``, ``noise``,
``neuron_mask``, ``record``, ``zero_output``, ``scale_output``, ``patch_output``, ``mean_ablate``),
``active`` / ``assert_clean`` / ``detach_all``, ``diff``, the tuning entry points (``lora_config``,
``count_trainable``, ``train``, ``sweep``, ``export_adapter``), ``evaluate`` (the one evaluator), and
the error hierarchy.
"""
from . import diff  # the package is callable: al.diff(base, tuned)
from .diff import DiffTable, compare_diffs
from .errors import (AffectLocusError, ArchitectureError, CheckpointError, DataError, InterventionError,
                     ModelLoadError, NonFiniteError, ResumeError, ShapeMismatchError, SiteError, SourceError,
                     TuningError, UnsafeFileError)
from .interventions import (graft, interpolate, mean_ablate, neuron_mask, noise, patch_output, random_revert,
                            record, scale, scale_output, zero, zero_output)
from .models import load_model
from .registry import Handle, active, assert_clean, attach, detach_all, intervene
from .sites import Selection, Site, find_decoder, select
from .sources import Source, open_source
from .tuning import TrainConfig, TrainResult, count_trainable, export_adapter, lora_config, sweep, train

__version__ = "0.1.0"


def __getattr__(name: str):
    """``evaluate`` loads the bench runner (datasets, judges, prompts) only when first used."""
    if name == "evaluate":
        from .evaluation.runner import evaluate
        return evaluate
    raise AttributeError(f"module 'affectlocus' has no attribute {name!r}")

__all__ = [
    "AffectLocusError", "ArchitectureError", "CheckpointError", "DataError", "DiffTable", "Handle",
    "InterventionError", "ModelLoadError", "NonFiniteError", "ResumeError", "Selection", "ShapeMismatchError",
    "Site", "SiteError", "Source", "SourceError", "TrainConfig", "TrainResult", "TuningError", "UnsafeFileError",
    "active", "assert_clean", "attach", "compare_diffs", "count_trainable", "detach_all", "diff",
    "evaluate", "export_adapter", "find_decoder", "graft", "intervene", "interpolate", "load_model", "lora_config",
    "mean_ablate", "neuron_mask", "noise", "open_source", "patch_output", "random_revert", "record", "scale",
    "scale_output", "select", "sweep", "train", "zero", "zero_output",
]
