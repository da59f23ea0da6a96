"""Locate: where does a fine-tune change the model? Streaming module-wise weight differences.

``diff(base, tuned, modules=..., layers=..., metrics=...)`` → :class:`DiffTable`
(``.to_frame()``, ``.summary()``, ``.top()``, ``.heatmap()``, ``.histograms()``, ``.save()``,
``DiffTable.load()``); :func:`compare_diffs` puts several tables side by side.

The package itself is callable (``affectlocus.diff(base, tuned)`` works whether ``affectlocus.diff``
names this package or the function).
"""
from __future__ import annotations

import sys
import types

from .compare import diff
from .plots import compare_diffs, heatmap, histograms, save_figure
from .stats import DEFAULT_METRICS, DEFAULT_QUANTILES, DEFAULT_SAMPLE, HIST_EDGES, METRIC_GROUPS, tensor_stats
from .table import DiffTable, SiteResult

__all__ = ["DEFAULT_METRICS", "DEFAULT_QUANTILES", "DEFAULT_SAMPLE", "DiffTable", "HIST_EDGES",
           "METRIC_GROUPS", "SiteResult", "compare_diffs", "diff", "heatmap", "histograms", "save_figure",
           "tensor_stats"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> DiffTable:
        return diff(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
