"""affectlocus — find where a fine-tune lives inside a transformer LLM, and prove it by moving it.

Public names (stable; see README): ``load_model``, ``select``, ``open_source``, ``intervene``,
``attach``, the intervention factories (``graft``, ``interpolate``, ``zero``, ``scale``, ``noise``,
``neuron_mask``, ``record``, ``zero_output``, ``scale_output``, ``patch_output``, ``mean_ablate``),
``active`` / ``assert_clean`` / ``detach_all``, and the error hierarchy.
"""
from . import diff  # the package is callable: al.diff(base, tuned)
from .diff import DiffTable, compare_diffs
from .errors import (AffectLocusError, ArchitectureError, DataError, InterventionError, ModelLoadError,
                     NonFiniteError, ShapeMismatchError, SiteError, SourceError, UnsafeFileError)
from .interventions import (graft, interpolate, mean_ablate, neuron_mask, noise, patch_output, random_revert,
                            record, scale, scale_output, zero, zero_output)
from .models import load_model
from .registry import Handle, active, assert_clean, attach, detach_all, intervene
from .sites import Selection, Site, find_decoder, select
from .sources import Source, open_source
from .tuning import count_trainable, export_adapter, lora_config

__version__ = "0.1.0"

__all__ = [
    "AffectLocusError", "ArchitectureError", "DataError", "DiffTable", "compare_diffs", "diff", "Handle", "InterventionError", "ModelLoadError",
    "NonFiniteError", "Selection", "ShapeMismatchError", "Site", "SiteError", "Source", "SourceError",
    "UnsafeFileError", "active", "assert_clean", "attach", "count_trainable", "export_adapter", "lora_config", "detach_all", "find_decoder", "graft",
    "intervene", "interpolate", "load_model", "mean_ablate", "neuron_mask", "noise", "open_source",
    "patch_output", "random_revert", "record", "scale", "scale_output", "select", "zero", "zero_output",
]
