"""`DiffTable`: the result of a diff — per (layer, module) metrics, histograms, neuron-level norms."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_write
from ..errors import DataError
from ..sites import CANONICAL

FORMAT = "affectlocus.diff/1"
CSV_NAME, JSON_NAME, ROWS_NAME = "diff.csv", "diff.json", "rows.safetensors"
#: Metrics shown side by side wherever a ranking is printed (raw L2 tracks matrix size).
HEADLINE = ("l2", "rms", "relative")


@dataclass
class SiteResult:
    """One compared site: its metrics and, where asked for, histogram counts and neuron norms."""

    layer: int
    module: str
    shape: tuple[int, int]
    method: str                      # "dense" | "factors" (LoRA, no B·A formed) | "untouched" (ΔW = 0)
    values: dict[str, float]
    n_sampled: int = 0               # elements behind the distribution statistics
    hist: np.ndarray | None = None
    lines: np.ndarray | None = None  # per-row (gate/up) or per-column (down) ‖ΔW‖

    @property
    def name(self) -> str:
        return f"layers.{self.layer}.{self.module}"

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class DiffTable:
    """Per-site weight-difference statistics; see :func:`affectlocus.diff.diff`."""

    results: list[SiteResult]
    meta: dict[str, Any] = field(default_factory=dict)
    edges: np.ndarray | None = None

    # ---- views ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"DiffTable({self.describe()}; metrics {', '.join(self.metrics)})"

    @property
    def metrics(self) -> list[str]:
        """Scalar metric names present, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.results:
            seen.update(dict.fromkeys(r.values))
        return list(seen)

    @property
    def modules(self) -> list[str]:
        present = {r.module for r in self.results}
        return [m for m in CANONICAL if m in present] + sorted(present - set(CANONICAL))

    @property
    def layers(self) -> list[int]:
        return sorted({r.layer for r in self.results})

    def describe(self) -> str:
        """Which sites were compared, in words."""
        layers = self.layers
        span = (f"{layers[0]}–{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1))
                else ",".join(map(str, layers))) if layers else "none"
        total = self.meta.get("num_layers")
        of = f" of {total}" if total else ""
        return (f"{len(self.results)} sites: modules {','.join(self.modules)} × layers {span}{of}")

    def to_frame(self) -> pd.DataFrame:
        """Tidy frame with columns ``layer, module, metric, value``."""
        rows = [(r.layer, r.module, k, v) for r in self.results for k, v in r.values.items()]
        return pd.DataFrame(rows, columns=["layer", "module", "metric", "value"])

    def wide(self) -> pd.DataFrame:
        """One row per site (``layer, module, numel, method`` + one column per metric)."""
        rows = [{"layer": r.layer, "module": r.module, "numel": r.numel, "method": r.method, **r.values}
                for r in self.results]
        return pd.DataFrame(rows, columns=["layer", "module", "numel", "method", *self.metrics])

    def matrix(self, metric: str) -> tuple[list[str], list[int], np.ndarray]:
        """(modules, layers, values[module, layer]) with NaN where a site was not compared."""
        self._check_metric(metric)
        mods, layers = self.modules, self.layers
        grid = np.full((len(mods), len(layers)), np.nan)
        mi, li = {m: i for i, m in enumerate(mods)}, {l: i for i, l in enumerate(layers)}
        for r in self.results:
            grid[mi[r.module], li[r.layer]] = r.values.get(metric, np.nan)
        return mods, layers, grid

    def top(self, k: int = 10, metric: str = "relative") -> pd.DataFrame:
        """The ``k`` sites with the largest ``metric`` (all scalar metrics as columns)."""
        self._check_metric(metric)
        frame = self.wide().sort_values(metric, ascending=False, kind="stable")
        return frame.head(k).reset_index(drop=True)

    def summary(self, metric: str = "relative") -> pd.DataFrame:
        """Per-module mean over layers of the headline metrics, ranked by ``metric`` (1 = largest)."""
        self._check_metric(metric)
        wide = self.wide()
        cols = [c for c in dict.fromkeys([*HEADLINE, metric]) if c in wide]
        frame = wide.groupby("module", sort=False)[cols].mean()
        frame.insert(0, "layers", wide.groupby("module", sort=False).size())
        frame.insert(1, "numel", wide.groupby("module", sort=False)["numel"].first())
        frame = frame.sort_values(metric, ascending=False, kind="stable")
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame

    def histogram(self, module: str, layers: list[int] | None = None) -> np.ndarray:
        """Histogram counts of log10 relative change for ``module``, summed over ``layers``."""
        hs = [r.hist for r in self.results if r.module == module and r.hist is not None
              and (layers is None or r.layer in layers)]
        if not hs:
            raise DataError(f"no histogram for module {module!r}: run diff with metrics including 'hist'")
        return np.sum(hs, axis=0)

    def row_norms(self, layer: int, module: str) -> np.ndarray:
        """Per-row (gate/up) or per-column (down) ‖ΔW‖ of one site (needs ``metrics`` with 'rows')."""
        for r in self.results:
            if r.layer == layer and r.module == module:
                if r.lines is None:
                    raise DataError(f"no neuron norms for layers.{layer}.{module}: run diff with "
                                    f"metrics including 'rows' (gate, up and down only)")
                return r.lines
        raise DataError(f"layers.{layer}.{module} was not compared; the table holds {self.describe()}")

    def _check_metric(self, metric: str) -> None:
        if metric not in self.metrics:
            raise DataError(f"metric {metric!r} not in this table; available: {', '.join(self.metrics)}")

    # ---- figures (see plots.py) -----------------------------------------------------------------
    def heatmap(self, metric: str = "relative", path: str | Path | None = None, **kwargs):
        """Layers × modules heatmap (one band per module across depth); saved when ``path`` given."""
        from .plots import heatmap
        return heatmap(self, metric, path=path, **kwargs)

    def histograms(self, path: str | Path | None = None, **kwargs):
        """Per-module distributions of the elementwise relative change (one line per layer)."""
        from .plots import histograms
        return histograms(self, path=path, **kwargs)

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``diff.csv`` (tidy), ``diff.json`` (everything) and ``rows.safetensors`` (neuron
        norms, if any) into ``directory``, each atomically (temp file + rename)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / CSV_NAME, self.to_frame().to_csv(index=False).encode())
        doc = {"format": FORMAT, "meta": self.meta,
               "edges": None if self.edges is None else [float(e) for e in self.edges],
               "sites": [{"layer": r.layer, "module": r.module, "shape": list(r.shape), "method": r.method,
                          "n_sampled": r.n_sampled, "values": {k: _num(v) for k, v in r.values.items()},
                          "hist": None if r.hist is None else [int(c) for c in r.hist]}
                         for r in self.results]}
        _atomic_write(out / JSON_NAME, json.dumps(doc, indent=1, allow_nan=False).encode())
        lines = {r.name: r.lines for r in self.results if r.lines is not None}
        if lines:
            import torch
            from safetensors.torch import save
            _atomic_write(out / ROWS_NAME, save({k: torch.from_numpy(np.ascontiguousarray(v))
                                                 for k, v in lines.items()}))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "DiffTable":
        """Read a table written by :meth:`save`."""
        folder = Path(directory)
        path = folder / JSON_NAME
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"no {JSON_NAME} in {folder}: not a saved diff table") from None
        except ValueError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataError(f"{path} is not an affectlocus diff table (format {FORMAT!r} expected)")
        lines = {}
        if (folder / ROWS_NAME).exists():
            from safetensors.torch import load_file
            lines = {k: v.numpy() for k, v in load_file(str(folder / ROWS_NAME)).items()}
        results = []
        for s in doc["sites"]:
            r = SiteResult(int(s["layer"]), s["module"], tuple(s["shape"]), s["method"],
                           {k: (float("nan") if v is None else float(v)) for k, v in s["values"].items()},
                           int(s.get("n_sampled", 0)),
                           None if s.get("hist") is None else np.asarray(s["hist"], dtype=np.int64))
            r.lines = lines.get(r.name)
            results.append(r)
        edges = None if doc.get("edges") is None else np.asarray(doc["edges"], dtype=float)
        return cls(results, doc.get("meta", {}), edges)
