"""affectlocus — find where a fine-tune lives inside a transformer LLM, and prove it by moving it.

Public names (stable; see README and docs/architecture.md): ``load_model``, ``select``,
``open_source``, ``intervene``, ``attach``, the intervention factories (``graft``, ``interpolate``,
``zero``, ``scale``, ``noise``, ``random_revert``, ``neuron_mask``, ``record``, ``zero_output``,
``scale_output``, ``patch_output``, ``patch``, ``mean_ablate``), ``active`` / ``assert_clean`` /
``detach_all``, ``diff`` / ``compare_diffs``, the tuning entry points (``lora_config``,
``count_trainable``, ``train``, ``sweep``, ``export_adapter``), ``evaluate`` (the one evaluator), the
neuron tools (``rank_neurons``, ``probe``, ``pooled_activations``), the three witnesses of where a
fine-tune acts (``mediate``, ``attribute``, ``spectrum``) and the error hierarchy.

The package is lazy (PEP 562): ``import affectlocus.registry`` loads the intervention core only;
each public name imports its layer on first use (``al.diff`` loads pandas/matplotlib, ``al.train``
peft and accelerate, ``al.evaluate`` the tasks and judges).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (AffectLocusError, ArchitectureError, CheckpointError, ConfigError, DataError,
                     InterventionError, ModelLoadError, NonFiniteError, ResumeError, ShapeMismatchError, SiteError,
                     SourceError, TuningError, UnsafeFileError)

#: public name → the module that defines it (imported on first access)
_LAZY = {
    **dict.fromkeys(("graft", "interpolate", "mean_ablate", "neuron_mask", "noise", "patch", "patch_output",
                     "random_revert", "record", "scale", "scale_output", "zero", "zero_output"),
                    "affectlocus.interventions"),
    **dict.fromkeys(("Handle", "active", "assert_clean", "attach", "detach_all", "intervene"), "affectlocus.registry"),
    **dict.fromkeys(("Selection", "Site", "find_decoder", "select"), "affectlocus.sites"),
    **dict.fromkeys(("Source", "open_source"), "affectlocus.sources"),
    "load_model": "affectlocus.models",
    **dict.fromkeys(("DiffTable", "compare_diffs"), "affectlocus.diff"),
    **dict.fromkeys(("TrainConfig", "TrainResult", "count_trainable", "export_adapter", "lora_config", "sweep",
                     "train"), "affectlocus.tuning"),
    "evaluate": "affectlocus.evaluation.runner",
    **dict.fromkeys(("pooled_activations", "probe", "rank_neurons"), "affectlocus.neurons"),
    "attribute": "affectlocus.witnesses.attribution",
    "mediate": "affectlocus.witnesses.mediation",
    "spectrum": "affectlocus.witnesses.spectra",
}


def __getattr__(name: str):
    """Import a public name's layer on first use; ``al.diff`` is the (callable) diff package."""
    if name == "diff":
        return importlib.import_module("affectlocus.diff")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'affectlocus' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"diff"})


if TYPE_CHECKING:  # static analysers and IDEs see the eager names
    from . import diff
    from .diff import DiffTable, compare_diffs
    from .evaluation.runner import evaluate
    from .interventions import (graft, interpolate, mean_ablate, neuron_mask, noise, patch, patch_output,
                                random_revert, record, scale, scale_output, zero, zero_output)
    from .models import load_model
    from .neurons import pooled_activations, probe, rank_neurons
    from .registry import Handle, active, assert_clean, attach, detach_all, intervene
    from .sites import Selection, Site, find_decoder, select
    from .sources import Source, open_source
    from .tuning import TrainConfig, TrainResult, count_trainable, export_adapter, lora_config, sweep, train
    from .witnesses.attribution import attribute
    from .witnesses.mediation import mediate
    from .witnesses.spectra import spectrum

__all__ = [
    "AffectLocusError", "ArchitectureError", "CheckpointError", "ConfigError", "DataError", "DiffTable", "Handle",
    "InterventionError", "ModelLoadError", "NonFiniteError", "ResumeError", "Selection", "ShapeMismatchError",
    "Site", "SiteError", "Source", "SourceError", "TrainConfig", "TrainResult", "TuningError", "UnsafeFileError",
    "__version__", "active", "assert_clean", "attach", "attribute", "compare_diffs", "count_trainable", "detach_all",
    "diff", "evaluate", "export_adapter", "find_decoder", "graft", "intervene", "interpolate", "load_model",
    "lora_config", "mean_ablate", "mediate", "neuron_mask", "noise", "open_source", "patch",
    "patch_output", "pooled_activations", "probe",
    "random_revert", "rank_neurons", "record", "scale", "scale_output", "select", "spectrum", "sweep", "train", "zero",
    "zero_output",
]
