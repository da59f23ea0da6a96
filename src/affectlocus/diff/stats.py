"""Per-site statistics of ΔW = W_tuned − W_base, accumulated one row-chunk at a time.

Squared norms are summed in fp32 over cache-sized sub-chunks (64 Ki elements: accurate and fast)
and in float64 across them, on the weights' device (0-d tensors: no host sync per chunk). The elementwise relative change |ΔW| / (|W_base| + ε) is computed on
every element of small tensors and on a seeded stratified sample of large ones; its quantiles and a fixed-bin histogram of log10 of it describe the
distribution. For LoRA sites the norms come from the factors: ‖s·BA‖²_F = s²·tr((BᵀB)(AAᵀ)),
per-row / per-column norms from the same r×r Gram matrices, sampled entries as dot products.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..sites import CANONICAL
from ..sources import LoraFactors
from ..sources.base import row_blocks

#: Metric groups ``diff(metrics=...)`` accepts.
METRIC_GROUPS = ("l2", "relative", "rms", "quantiles", "hist", "rows")
DEFAULT_METRICS = ("l2", "relative", "rms", "quantiles", "hist")
DEFAULT_QUANTILES = (0.5, 0.9, 0.99)
DEFAULT_SAMPLE = 1 << 18
#: Fixed histogram edges on log10 |ΔW| / (|W_base| + ε); values outside land in the end bins.
HIST_EDGES = np.linspace(-8.0, 4.0, 49)
#: Modules whose neuron-level view is per row (gate/up: one row per channel) or per column (down).
LINE_AXIS = {"gate": 1, "up": 1, "down": 0}
CHUNK_ELEMENTS = 1 << 22   # elements read per request (whole rows)
SUB_ELEMENTS = 1 << 16     # elements per arithmetic step (stays in cache)


def parse_metrics(metrics: str | tuple[str, ...] | list[str] | None) -> frozenset[str]:
    """Metric groups from names (``"all"`` = every group, ``None`` = the defaults)."""
    if metrics is None:
        return frozenset(DEFAULT_METRICS)
    items = [metrics] if isinstance(metrics, str) else list(metrics)
    out: set[str] = set()
    for item in items:
        for word in str(item).replace("+", ",").split(","):
            word = word.strip().lower()
            if word == "all":
                out.update(METRIC_GROUPS)
            elif word == "default":
                out.update(DEFAULT_METRICS)
            elif word in METRIC_GROUPS:
                out.add(word)
            elif word:
                raise ConfigError(f"unknown metric {word!r}; available: {', '.join(METRIC_GROUPS)}, all")
    if not out:
        raise ConfigError(f"metric selection {metrics!r} is empty; available: {', '.join(METRIC_GROUPS)}")
    return frozenset(out)


def quantile_name(q: float) -> str:
    """Column name of a quantile of the elementwise relative change, e.g. ``relchg_q99``."""
    text = f"{q * 100:g}".replace(".", "_")
    return f"relchg_q{text.zfill(2)}"


@dataclass(frozen=True)
class StatsConfig:
    """What to compute, and how (shared by every site of one diff)."""

    metrics: frozenset[str] = frozenset(DEFAULT_METRICS)
    eps: float = 1e-8
    sample: int | None = DEFAULT_SAMPLE
    seed: int = 0
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    edges: np.ndarray = field(default_factory=lambda: HIST_EDGES.copy())

    @property
    def elementwise(self) -> bool:
        return bool({"quantiles", "hist"} & self.metrics)

    @property
    def needs_base(self) -> bool:
        """Whether the base tensor must be read even when ΔW comes from factors."""
        return self.elementwise or "relative" in self.metrics


def sample_indices(numel: int, cfg: StatsConfig, layer: int, module: str) -> torch.Tensor | None:
    """Sorted flat indices of the seeded sample for one site (``None``: use every element).

    Stratified: the flat index range is cut into ``sample`` equal strata and one element is drawn
    uniformly from each (every element equally likely, no duplicates, already sorted). The seed
    depends only on (seed, layer, module), so a site gets the same sample whatever else is selected
    and whichever source the weights come from.
    """
    if cfg.sample is None or numel <= cfg.sample:
        return None
    mod = CANONICAL.index(module) if module in CANONICAL else 7
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + layer * 101 + mod)
    k = int(cfg.sample)
    bounds = (torch.arange(k + 1, dtype=torch.float64) * (numel / k)).floor_().long()
    lo, width = bounds[:-1], bounds[1:] - bounds[:-1]
    return lo + (torch.rand(k, generator=gen, dtype=torch.float64) * width).floor_().long()


def factor_norm2(f: LoraFactors) -> float:
    """‖s·B·A‖²_F = s²·tr((BᵀB)(AAᵀ)) from r×r Gram matrices (fp32), never forming B·A."""
    A, B = f.A.float(), f.B.float()
    return float(f.scale) ** 2 * float(((B.T @ B).double() * (A @ A.T).double()).sum())


def factor_line_norms(f: LoraFactors, axis: int) -> torch.Tensor:
    """Norms of ΔW's rows (``axis=1`` reduces over columns) or columns (``axis=0``), from factors."""
    A, B = f.A.double(), f.B.double()
    if f.transpose:  # ΔW = (sBA)ᵀ: its rows are sBA's columns
        axis = 1 - axis
    if axis == 1:  # rows of sBA: s²·b_i (AAᵀ) b_iᵀ
        sq = ((B @ (A @ A.T)) * B).sum(1)
    else:          # columns of sBA: s²·a_jᵀ (BᵀB) a_j
        sq = (((B.T @ B) @ A) * A).sum(0)
    return (float(f.scale) * sq.clamp_min(0).sqrt()).float()


def factor_entries(f: LoraFactors, flat: torch.Tensor, cols: int, block: int = 1 << 18) -> torch.Tensor:
    """ΔW at flat indices of the (out, in) weight, as s·⟨B[i], A[:, j]⟩ (no dense product)."""
    out = torch.empty(flat.numel(), dtype=torch.float32)
    At = f.A.T.contiguous()
    for lo in range(0, flat.numel(), block):
        idx = flat[lo:lo + block]
        i, j = idx // cols, idx % cols
        if f.transpose:
            i, j = j, i
        out[lo:lo + block] = (f.B[i] * At[j]).sum(1) * f.scale
    return out


def factor_rows(f: LoraFactors, r0: int, r1: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Rows ``r0:r1`` of the dense ΔW on ``device`` (for tensors small enough to use every element)."""
    m1, m2 = f._operands(device)
    return f.scale * (m1.narrow(0, r0, r1 - r0) @ m2)


class SiteAccumulator:
    """Accumulates one site's statistics over row-chunks of the base and ΔW."""

    def __init__(self, shape: tuple[int, int], layer: int, module: str, cfg: StatsConfig):
        self.shape, self.layer, self.module, self.cfg = shape, layer, module, cfg
        self.cols = shape[1]
        self.d2 = 0.0
        self.b2: float | None = 0.0 if cfg.needs_base else None
        self.axis = LINE_AXIS.get(module) if "rows" in cfg.metrics else None
        self.lines: torch.Tensor | None = None
        if self.axis is not None:
            self.lines = torch.zeros(shape[0] if self.axis == 1 else shape[1], dtype=torch.float64)
        self.idx = sample_indices(shape[0] * shape[1], cfg, layer, module) if cfg.elementwise else None
        self._idx_host = None if self.idx is None else self.idx.numpy()  # bounds found on the host
        self.d_at_idx: torch.Tensor | None = None
        self.rel: list[torch.Tensor] = []
        self.norms_given = False

    def set_factors(self, f: LoraFactors) -> None:
        """Take norms (and sampled entries) from LoRA factors; chunks then bring only the base."""
        self.d2 = factor_norm2(f)
        if self.lines is not None:
            self.lines = factor_line_norms(f, self.axis).double() ** 2
        if self.idx is not None:
            self.d_at_idx = factor_entries(f, self.idx, self.cols)
        self.norms_given = True

    def set_zero(self) -> None:
        """ΔW is exactly zero (an adapter that does not touch this site)."""
        self.d2 = 0.0
        self.norms_given = True
        if self.idx is not None:
            self.d_at_idx = torch.zeros(self.idx.numel())

    def add_pair(self, row0: int, base: torch.Tensor, tuned: torch.Tensor) -> None:
        """Rows ``row0 : row0 + n`` of the base and the tuned weight (stored dtypes, not modified).

        Work goes in cache-sized sub-chunks (fp32); sampled elements are gathered from the raw
        rows, so ΔW there is computed exactly as in the dense pass.
        """
        step = max(1, SUB_ELEMENTS // self.cols)
        exact = self.cfg.elementwise and self.idx is None
        for s, n in row_blocks(base.shape, step * self.cols):
            b = base.narrow(0, s, n).to(torch.float32)
            d = tuned.narrow(0, s, n).to(device=b.device, dtype=torch.float32, copy=True).sub_(b)
            self.d2 = self.d2 + _norm2(d)
            if self.b2 is not None:
                self.b2 = self.b2 + _norm2(b)
            if self.lines is not None:
                self._add_lines(row0 + s, d)
            if exact:
                self.rel.append(self._rel(d, b))
        if self.cfg.elementwise and self.idx is not None:
            local, _ = self._local(row0, base.shape[0])
            bv = _gather(base, local)
            self.rel.append(self._rel(_gather(tuned, local) - bv, bv))

    def add_base(self, row0: int, base: torch.Tensor, delta: torch.Tensor | None = None) -> None:
        """Rows of the base alone (ΔW known from factors); ``delta``: its dense rows on the base's
        device (:func:`factor_rows`), when every element is used."""
        step = max(1, SUB_ELEMENTS // self.cols)
        for s, n in row_blocks(base.shape, step * self.cols):
            b = base.narrow(0, s, n).to(torch.float32)
            if self.b2 is not None:
                self.b2 = self.b2 + _norm2(b)
            if delta is not None:
                self.rel.append(self._rel(delta.narrow(0, s, n), b))
        if self.cfg.elementwise and self.idx is not None:
            local, (a, z) = self._local(row0, base.shape[0])
            self.rel.append(self._rel(self.d_at_idx[a:z], _gather(base, local)))

    def _local(self, row0: int, rows: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """Sample indices inside rows ``row0 : row0 + rows`` (chunk-local), and their span in idx."""
        lo, hi = row0 * self.cols, (row0 + rows) * self.cols
        a, z = (int(i) for i in np.searchsorted(self._idx_host, (lo, hi)))
        return self.idx[a:z] - lo, (a, z)

    def _rel(self, d: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (d.reshape(-1).abs() / (b.reshape(-1).abs() + self.cfg.eps)).cpu()

    def _add_lines(self, row0: int, d: torch.Tensor) -> None:
        if self.lines.device != d.device:  # accumulate where ΔW is (moved once per site)
            self.lines = self.lines.to(d.device)
        if self.axis == 1:
            self.lines.narrow(0, row0, d.shape[0]).add_(d.square().sum(1).double())
        else:
            self.lines += d.square().sum(0).double()

    def result(self) -> tuple[dict[str, float], np.ndarray | None, np.ndarray | None, int]:
        """(scalar metrics, histogram counts, neuron-line norms, elements used for distributions)."""
        cfg, values = self.cfg, {}
        l2 = float(np.sqrt(max(float(self.d2), 0.0)))
        numel = self.shape[0] * self.shape[1]
        if "l2" in cfg.metrics:
            values["l2"] = l2
        if "rms" in cfg.metrics:
            values["rms"] = l2 / float(np.sqrt(numel))
        if "relative" in cfg.metrics:
            base_l2 = float(np.sqrt(float(self.b2))) if self.b2 is not None else float("nan")
            values["base_l2"] = base_l2
            values["relative"] = l2 / (base_l2 + cfg.eps)
        hist, used = None, 0
        if cfg.elementwise and self.rel:
            rel = torch.cat(self.rel) if len(self.rel) > 1 else self.rel[0]
            used = int(rel.numel())
            nonzero = rel[rel > 0]
            values["unchanged"] = 1.0 - nonzero.numel() / max(used, 1)
            if "quantiles" in cfg.metrics:
                for q, v in zip(cfg.quantiles, np.quantile(rel.numpy(), cfg.quantiles)):
                    values[quantile_name(q)] = float(v)
            if "hist" in cfg.metrics:
                hist = _histogram(nonzero.log10_(), cfg.edges)
        lines = None
        if self.lines is not None:
            lines = self.lines.clamp_min(0).sqrt().float().cpu().numpy()
        return values, hist, lines, used


def _norm2(x: torch.Tensor) -> torch.Tensor:
    """‖x‖² as a float64 0-d tensor on x's device (fp32 norm, squared in float64)."""
    return torch.linalg.vector_norm(x).double().square()


def _histogram(logs: torch.Tensor, edges: np.ndarray) -> np.ndarray:
    """Counts in fixed bins; values beyond the edges land in the end bins."""
    lo, hi, n = float(edges[0]), float(edges[-1]), len(edges) - 1
    if np.allclose(np.diff(edges), (hi - lo) / n):  # uniform bins: one pass, no sort
        idx = ((logs - lo) * (n / (hi - lo))).floor_().clamp_(0, n - 1).long()
        return torch.bincount(idx, minlength=n).numpy().astype(np.int64)
    clipped = np.clip(logs.numpy(), lo, hi)
    return np.histogram(clipped, bins=edges)[0].astype(np.int64)


def _gather(x: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Elements of a contiguous chunk at flat indices, as fp32 on the CPU."""
    return x.reshape(-1).index_select(0, local.to(x.device)).float().cpu()


def tensor_stats(base: torch.Tensor, tuned: torch.Tensor, layer: int, module: str,
                 cfg: StatsConfig = StatsConfig(), chunk_elements: int = CHUNK_ELEMENTS):
    """Statistics of one in-memory pair (the same arithmetic the streaming diff uses)."""
    acc = SiteAccumulator(tuple(base.shape), layer, module, cfg)
    step = max(1, chunk_elements // max(1, base.shape[1]))
    for r0 in range(0, base.shape[0], step):
        acc.add_pair(r0, base[r0:r0 + step], tuned[r0:r0 + step])
    return acc.result()
