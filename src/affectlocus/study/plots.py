"""Study figures: score bars with CIs, dose–response, cost–performance, neurons, the three witnesses.

Figures are built with matplotlib's object API (:class:`matplotlib.figure.Figure`, saved as PNG by
Agg), so drawing them neither needs a display nor touches pyplot's state or a notebook's backend.
Rows may be :class:`~.results.ScoreRow` or their JSON form.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from ..diff.plots import save_figure
from .results import RowLike, ScoreRow

GATE = "#d62728"
OTHER = "#4c72b0"


def _err(row: ScoreRow) -> tuple[float, float]:
    lo, hi = row.interval
    return max(0.0, float(row.mean) - lo), max(0.0, hi - float(row.mean))


def _axes(width: float, height: float):
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def score_bars(rows: Mapping[str, RowLike], path: str | Path, title: str, xlabel: str = "mean score",
               reference: Mapping[str, float] | None = None) -> Path:
    """Horizontal bars (mean ± bootstrap CI); bars whose name mentions gate are red."""
    rows = {n: ScoreRow.coerce(r) for n, r in rows.items()}
    names = list(rows)
    fig, ax = _axes(7, 0.38 * len(names) + 1.4)
    means = [float(rows[n].mean) for n in names]
    errs = list(zip(*[_err(rows[n]) for n in names])) if names else [[], []]
    colors = [GATE if "gate" in n else OTHER for n in names]
    ax.barh(range(len(names)), means, xerr=errs, color=colors, alpha=0.85, capsize=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for label, value in (reference or {}).items():
        ax.axvline(value, ls="--", lw=1, color="grey")
        ax.text(value, len(names) - 0.5, f" {label}", fontsize=8, color="grey", va="top")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def dose_response(curves: Mapping[str, Sequence[tuple[float, RowLike]]], path: str | Path,
                  title: str = "Interpolation between base and affective weights") -> Path:
    """Score vs α (0 = base weights, 1 = affective weights) per module, with CI bands."""
    fig, ax = _axes(6.5, 4)
    for name, points in curves.items():
        rows = [ScoreRow.coerce(r) for _, r in points]
        xs = [a for a, _ in points]
        ys = [float(r.mean) for r in rows]
        lo = [r.interval[0] for r in rows]
        hi = [r.interval[1] for r in rows]
        color = GATE if "gate" in name else None
        line, = ax.plot(xs, ys, marker="o", label=name, color=color)
        ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
    ax.axvline(0, color="grey", lw=0.8)
    ax.axvline(1, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("α  (W_base + α·ΔW; 0 = base, 1 = affective)")
    ax.set_ylabel("mean score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def cost_performance(points: Mapping[str, tuple[int, RowLike]], path: str | Path, highlight: str = "gate",
                     title: str = "Trainable parameters vs gain over the base",
                     ylabel: str = "gain over base (paired 95% CI)") -> Path:
    """Scatter of trainable parameters (log x) against a score (default: base-subtracted gain)."""
    fig, ax = _axes(6.5, 4.2)
    for name, (params, point) in points.items():
        row, is_hl = ScoreRow.coerce(point), name == highlight
        err = _err(row)
        ax.errorbar(params, float(row.mean), yerr=[[err[0]], [err[1]]], fmt="o",
                    color=GATE if is_hl else OTHER, ms=8 if is_hl else 5, capsize=3)
        ax.annotate(name + (" (GET)" if is_hl else ""), (params, float(row.mean)), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("trainable parameters (LoRA)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def neuron_curves(curves: Mapping[str, Sequence[tuple[int, RowLike]]], path: str | Path,
                  title: str = "Ablating gate channels in the affective model") -> Path:
    """Score vs number of ablated gate channels per layer, for ranked and random choices."""
    fig, ax = _axes(6.5, 4)
    for name, points in curves.items():
        rows = [ScoreRow.coerce(r) for _, r in points]
        xs = [k for k, _ in points]
        ys = [float(r.mean) for r in rows]
        yerr = list(zip(*[_err(r) for r in rows])) if points else None
        ax.errorbar(xs, ys, yerr=yerr, marker="o", capsize=3, label=name,
                    color=OTHER if "random" in name else None)
    ks = sorted({int(k) for pts in curves.values() for k, _ in pts})
    if len(ks) > 3 and ks[-1] / max(ks[1], 1) > 20:
        ax.set_xscale("symlog", linthresh=max(ks[1], 1))
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("gate channels ablated per layer (k)")
    ax.set_ylabel("mean score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def probe_accuracy(series: Mapping[str, Mapping], chance: float, path: str | Path,
                   title: str = "Linear probe on gate_proj activations") -> Path:
    """Held-out accuracy of a logistic-regression probe per layer (one line per model), with the
    majority-class rate."""
    fig, ax = _axes(6.5, 3.6)
    for name, per_layer in series.items():
        layers = sorted(int(k) for k in per_layer)
        ax.plot(layers, [per_layer[str(k)] if str(k) in per_layer else per_layer[k] for k in layers],
                marker="o", label=name, color=GATE if name == "affective" else OTHER)
    ax.axhline(chance, ls="--", color="grey", label=f"majority class {chance:.2f}")
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def witness_panels(tables: Mapping, columns: Mapping[str, str], agreement, path: str | Path,
                   title: str) -> Path:
    """One heatmap (layers × modules) per witness side by side, then the agreement matrix (Kendall's τ,
    one-sided permutation p in each cell). ``tables``: witness → ``WitnessTable``; ``columns``: the
    column drawn per witness; ``agreement``: an :class:`~affectlocus.witnesses.agreement.Agreement`."""
    import numpy as np
    from matplotlib.colors import Normalize

    layers = max(len(t.layers()) for t in tables.values())
    width = max(3.2, 0.25 * layers + 2.2)
    fig = Figure(figsize=(len(tables) * width + 3.6, 3.6), layout="constrained")
    axes = fig.subplots(1, len(tables) + 1, width_ratios=[width] * len(tables) + [3.0])
    for ax, (name, table) in zip(axes, tables.items()):
        table.heatmap(columns[name], ax=ax, title=f"{name}: {columns[name]}")
    ax = axes[-1]
    tau = np.asarray(agreement.tau, dtype=float)
    image = ax.imshow(np.ma.masked_invalid(tau), cmap="RdBu_r", norm=Normalize(-1, 1))
    names = list(agreement.names)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            p = agreement.p[i, j]
            text = "—" if i == j else ("τ n/a" if not np.isfinite(tau[i, j]) else
                                       f"τ {tau[i, j]:+.2f}\np {p:.3g}")
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="Kendall's τ", shrink=0.8)
    ax.set_title(f"agreement: {agreement.verdict}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
