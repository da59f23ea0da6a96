"""Figures of diff tables: banded heatmaps, per-module histograms, side-by-side comparisons.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg), so
nothing here touches pyplot's global state or needs a display.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..errors import DataError
from ..sites import CANONICAL
from .._io import atomic_write

if TYPE_CHECKING:  # tables draw themselves through this module
    from .table import DiffTable

LABELS = {"l2": "‖ΔW‖_F", "relative": "‖ΔW‖_F / (‖W_base‖_F + ε)",
          "rms": "‖ΔW‖_F / √numel", "base_l2": "‖W_base‖_F", "unchanged": "fraction of ΔW = 0"}
NORMALISE = (None, "max", "sum", "zscore")


def label(metric: str) -> str:
    """Readable name of a metric."""
    if metric.startswith("relchg_q"):
        return f"{metric[8:].replace('_', '.')}th pct of |ΔW| / (|W_base| + ε)"
    return LABELS.get(metric, metric)


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save atomically (temp file in the same folder, then rename); format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight"),
                        suffix=f".{fmt}")


def _draw(ax, mods: list[str], layers: list[int], grid: np.ndarray, norm: Normalize, cmap: str):
    cm = colormaps[cmap].with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap=cm,
                      norm=norm)
    ax.set_yticks(range(len(mods)), mods)
    step = max(1, int(np.ceil(len(layers) / 16)))
    ax.set_xticks(range(0, len(layers), step), [str(l) for l in layers[::step]])
    for i in range(1, len(mods)):  # white rules between module bands
        ax.axhline(i - 0.5, color="white", lw=1.5)
    ax.set_xlabel("layer")
    return image


def _norm(values: np.ndarray, log: bool, vmin=None, vmax=None) -> Normalize:
    from matplotlib.colors import LogNorm
    finite = values[np.isfinite(values)]
    if log:
        pos = finite[finite > 0]
        lo = vmin if vmin is not None else (pos.min() if pos.size else 1e-12)
        hi = vmax if vmax is not None else (pos.max() if pos.size else 1.0)
        return LogNorm(lo, max(hi, lo * 1.0001))
    lo = vmin if vmin is not None else (min(finite.min(), 0.0) if finite.size else 0.0)  # 0-based
    hi = vmax if vmax is not None else (finite.max() if finite.size else 1.0)
    return Normalize(lo, hi if hi > lo else lo + 1e-12)


def heatmap(table: DiffTable, metric: str = "relative", path: str | Path | None = None, *,
            log: bool = False, cmap: str = "magma", title: str | None = None) -> Figure:
    """Layers (x) × modules (y) heatmap of ``metric``: one band per module across depth."""
    mods, layers, grid = table.matrix(metric)
    fig = Figure(figsize=(max(6.0, 0.22 * len(layers) + 2.5), 0.45 * len(mods) + 1.6))
    ax = fig.add_subplot()
    image = _draw(ax, mods, layers, grid, _norm(grid, log), cmap)
    fig.colorbar(image, ax=ax, label=label(metric), pad=0.01)
    ax.set_title(title or f"{metric} per layer and module ({table.describe()})", fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


def histograms(table: DiffTable, path: str | Path | None = None, *, layers: list[int] | None = None,
               cmap: str = "viridis") -> Figure:
    """Per-module distributions of log10 |ΔW| / (|W_base| + ε): one line per layer (colour =
    depth), the layer-pooled distribution in black; y = fraction of the elements examined."""
    if table.edges is None:
        raise DataError("this table has no histograms: run diff with metrics including 'hist'")
    edges = table.edges
    centres = (edges[:-1] + edges[1:]) / 2
    mods = [m for m in table.modules if any(r.module == m and r.hist is not None for r in table.results)]
    ncols = min(4, len(mods))
    nrows = int(np.ceil(len(mods) / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    all_layers = table.layers
    depth = Normalize(min(all_layers), max(max(all_layers), min(all_layers) + 1))
    cm = colormaps[cmap]
    every = np.sum([r.hist for r in table.results if r.hist is not None], axis=0)
    used = np.flatnonzero(every)
    span = (centres[used[0]] - 0.5, centres[used[-1]] + 0.5) if used.size else (edges[0], edges[-1])
    for ax, mod in zip(axes.flat, mods):
        rows = [r for r in table.results if r.module == mod and r.hist is not None
                and (layers is None or r.layer in layers)]
        for r in rows:
            ax.plot(centres, r.hist / max(r.n_sampled, 1), color=cm(depth(r.layer)), lw=0.7, alpha=0.7)
        pooled = np.sum([r.hist for r in rows], axis=0) / max(sum(r.n_sampled for r in rows), 1)
        ax.plot(centres, pooled, color="black", lw=1.6)
        unchanged = float(np.mean([r.values.get("unchanged", 0.0) for r in rows]))
        note = ("  (ΔW = 0)" if unchanged == 1.0 else f"  ({unchanged:.1%} unchanged)" if unchanged else "")
        ax.set_title(mod + note, fontsize=9)
        ax.set_xlim(*span)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("log10 relative change")
    for ax in list(axes.flat)[len(mods):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("fraction of elements")
    fig.colorbar(_scalar(depth, cm), ax=axes, label="layer", shrink=0.8)
    fig.suptitle(f"elementwise |ΔW| / (|W_base| + ε) — {table.describe()}", fontsize=9)
    if path is not None:
        save_figure(fig, path)
    return fig


def _scalar(norm: Normalize, cmap):
    from matplotlib.cm import ScalarMappable
    return ScalarMappable(norm=norm, cmap=cmap)


def normalised(grid: np.ndarray, how: str | None) -> np.ndarray:
    """A table's grid rescaled for comparison across tables (``max``, ``sum``, ``zscore``)."""
    finite = grid[np.isfinite(grid)]
    if how is None or how == "none" or not finite.size:
        return grid
    if how == "max":
        return grid / (np.abs(finite).max() or 1.0)
    if how == "sum":
        return grid / (finite.sum() or 1.0)
    if how == "zscore":
        return (grid - finite.mean()) / (finite.std() or 1.0)
    raise DataError(f"normalise={how!r}; choose one of {', '.join(map(str, NORMALISE))}")


def compare_diffs(tables: Mapping[str, DiffTable], metric: str = "relative",
                  normalise: str | None = None, shared_scale: bool = False,
                  path: str | Path | None = None, *, log: bool = False, cmap: str = "magma") -> Figure:
    """Side-by-side heatmaps of several tables (each its own colour scale, or ``shared_scale``),
    above grouped bars of each table's per-module mean over layers.

    ``normalise``: ``None`` (raw), ``"max"`` (÷ the table's largest site), ``"sum"`` (share of the
    table's total), ``"zscore"`` (over the table's sites) — applied per table before plotting.
    """
    if not tables:
        raise DataError("compare_diffs needs at least one table")
    if normalise not in NORMALISE and normalise != "none":
        raise DataError(f"normalise={normalise!r}; choose one of {', '.join(map(str, NORMALISE))}")
    grids = {}
    for name, table in tables.items():
        mods, layers, grid = table.matrix(metric)
        grids[name] = (mods, layers, normalised(grid, normalise))
    every = np.concatenate([g.ravel() for _, _, g in grids.values()])
    shared = _norm(every, log) if shared_scale else None
    n = len(grids)
    max_mods = max(len(m) for m, _, _ in grids.values())
    fig = Figure(figsize=(max(5.0 * n, 7.0), 0.45 * max_mods + 4.4), layout="constrained")
    gs = fig.add_gridspec(2, n, height_ratios=[0.45 * max_mods + 1.2, 2.6])
    axes, image = [], None
    for i, (name, (mods, layers, grid)) in enumerate(grids.items()):
        ax = fig.add_subplot(gs[0, i])
        image = _draw(ax, mods, layers, grid, shared or _norm(grid, log), cmap)
        ax.set_title(name, fontsize=10)
        axes.append(ax)
        if not shared_scale:
            fig.colorbar(image, ax=ax, pad=0.01)
    what = label(metric) + ("" if normalise in (None, "none") else f", normalised: {normalise}")
    if shared_scale:
        fig.colorbar(image, ax=axes, label=what, pad=0.01)
    bars = fig.add_subplot(gs[1, :])
    all_mods = [m for m in CANONICAL if any(m in g[0] for g in grids.values())]
    width = 0.8 / n
    for i, (name, (mods, _, grid)) in enumerate(grids.items()):
        means = [np.nanmean(grid[mods.index(m)]) if m in mods else np.nan for m in all_mods]
        bars.bar(np.arange(len(all_mods)) + (i - (n - 1) / 2) * width, means, width, label=name)
    bars.set_xticks(range(len(all_mods)), all_mods)
    bars.set_ylabel("mean over layers")
    bars.legend(fontsize=8)
    fig.suptitle(what, fontsize=10)
    if path is not None:
        save_figure(fig, path)
    return fig
