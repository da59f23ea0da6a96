"""`WitnessTable`: per (layer, module) answers of one witness (mediation, attribution, spectrum).

The three witnesses share this one result type so they can be put side by side: ``to_frame()``
(columns ``layer``, ``module`` + the witness's columns), ``matrix(column)`` and ``heatmap`` (drawn
like a diff's), ``by_module(column)`` (the module ranking the agreement step compares) and atomic
``save(folder)`` as CSV + JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .._io import atomic_write
from ..errors import ConfigError
from ..sites import CANONICAL


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclass
class WitnessTable:
    """Rows of ``{"layer": int, "module": str, <column>: value, ...}`` plus run metadata.

    ``kind`` names the witness (``"mediation"`` / ``"attribution"`` / ``"spectrum"``); ``columns``
    lists the numeric columns in display order; ``meta`` holds the run's settings and scalars
    (e.g. attribution's ``total`` and ``error``); ``notes`` are plain-language caveats (e.g.
    "tuned = base: no effect to explain").
    """

    kind: str
    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def _check(self, column: str) -> None:
        if column not in self.columns:
            raise ConfigError(f"{self.kind} table has no column {column!r}; available: {', '.join(self.columns)}")

    def to_frame(self):
        """A pandas DataFrame with columns ``layer``, ``module`` and :attr:`columns`."""
        import pandas as pd
        return pd.DataFrame(self.rows, columns=["layer", "module", *self.columns])

    def modules(self) -> list[str]:
        present = {r["module"] for r in self.rows}
        return [m for m in CANONICAL if m in present] + sorted(present - set(CANONICAL))

    def layers(self) -> list[int]:
        return sorted({int(r["layer"]) for r in self.rows})

    def matrix(self, column: str) -> tuple[list[str], list[int], np.ndarray]:
        """(modules, layers, grid[module, layer]) of ``column``; NaN where a site is absent."""
        self._check(column)
        mods, layers = self.modules(), self.layers()
        grid = np.full((len(mods), len(layers)), np.nan)
        for r in self.rows:
            value = r.get(column)
            if value is not None:
                grid[mods.index(r["module"]), layers.index(int(r["layer"]))] = float(value)
        return mods, layers, grid

    def by_module(self, column: str, *, absolute: bool = False) -> dict[str, float]:
        """``column`` summed over layers per module (``absolute``: sum of |values|), NaNs skipped."""
        self._check(column)
        out: dict[str, float] = {}
        for r in self.rows:
            value = r.get(column)
            if value is None or not math.isfinite(float(value)):
                continue
            out[r["module"]] = out.get(r["module"], 0.0) + (abs(float(value)) if absolute else float(value))
        return {m: out[m] for m in self.modules() if m in out}

    def heatmap(self, column: str, path: str | Path | None = None, *, cmap: str = "magma",
                title: str | None = None, ax=None):
        """Layers (x) × modules (y) heatmap of ``column`` (diverging colours when it has both signs)."""
        from matplotlib.colors import Normalize
        from matplotlib.figure import Figure
        from ..diff.plots import _draw, save_figure
        mods, layers, grid = self.matrix(column)
        finite = grid[np.isfinite(grid)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo < 0 < hi:
            bound = max(-lo, hi)
            norm, cmap = Normalize(-bound, bound), "RdBu_r"
        else:
            norm = Normalize(min(lo, 0.0), hi if hi > min(lo, 0.0) else min(lo, 0.0) + 1e-12)
        fig = None
        if ax is None:
            fig = Figure(figsize=(max(6.0, 0.22 * len(layers) + 2.5), 0.45 * len(mods) + 1.6))
            ax = fig.add_subplot()
        image = _draw(ax, mods, layers, grid, norm, cmap)
        ax.figure.colorbar(image, ax=ax, label=column, pad=0.01)
        ax.set_title(title or f"{self.kind}: {column} per layer and module", fontsize=9)
        if path is not None:
            save_figure(ax.figure, path)
        return fig if fig is not None else ax.figure

    def to_json(self) -> dict[str, Any]:
        return {"format": f"affectlocus.{self.kind}/1", "kind": self.kind, "columns": list(self.columns),
                "meta": self.meta, "notes": self.notes,
                "rows": [{k: _num(v) for k, v in r.items()} for r in self.rows]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WitnessTable":
        rows = [{k: (math.nan if v is None and k not in ("layer", "module") else v) for k, v in r.items()}
                for r in data["rows"]]
        return cls(data["kind"], rows, tuple(data["columns"]), dict(data.get("meta", {})),
                   list(data.get("notes", [])))

    def save(self, folder: str | Path, stem: str | None = None) -> list[Path]:
        """Write ``<stem>.csv`` and ``<stem>.json`` (stem defaults to :attr:`kind`) atomically."""
        folder = Path(folder)
        stem = stem or self.kind
        csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
        text = self.to_frame().to_csv(index=False)
        atomic_write(csv_path, lambda fh: fh.write(text.encode()))
        blob = json.dumps(self.to_json(), indent=1, allow_nan=False).encode()
        atomic_write(json_path, lambda fh: fh.write(blob))
        return [csv_path, json_path]

    @classmethod
    def load(cls, path: str | Path) -> "WitnessTable":
        return cls.from_json(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v:.4g}" for k, v in self.meta.items() if isinstance(v, float))
        return f"WitnessTable({self.kind}, {len(self.rows)} sites{', ' + extra if extra else ''})"


def site_rows(sites: Iterable, values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in site order: ``{"layer", "module", **values[site.name]}``."""
    return [{"layer": s.layer, "module": s.module, **values[s.name]} for s in sites]
