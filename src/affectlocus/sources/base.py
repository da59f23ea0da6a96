"""The source abstraction: *where donor weights come from*, answered one site at a time."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from ..errors import NonFiniteError, ShapeMismatchError, SourceError, _preview
from ..sites import Site


_BLOCK = 1 << 24  # elements per row block of a donor computed on the site's device


@dataclass(frozen=True)
class LoraFactors:
    """ΔW = scale · B @ A for one site (B already row-sliced for fused sites).

    Factors are fp32, contiguous and on the host; they were validated (finite, ranks) when the
    adapter was opened, so nothing here reads a value back from the device.
    """

    A: torch.Tensor  # (r, in_features)
    B: torch.Tensor  # (out_features, r)
    scale: float
    transpose: bool = False  # fan_in_fan_out: ΔW is (scale · B @ A)ᵀ

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of ΔW (out, in) as it applies to the site."""
        out_in = (int(self.B.shape[0]), int(self.A.shape[1]))
        return out_in[::-1] if self.transpose else out_in

    def _operands(self, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(m1, m2) with ΔW = scale · m1 @ m2, on ``device`` in fp32."""
        A, B = self.A.to(device=device, dtype=torch.float32), self.B.to(device=device, dtype=torch.float32)
        return (A.T, B.T) if self.transpose else (B, A)

    def dense(self, device: torch.device | str | None = None) -> torch.Tensor:
        """ΔW in fp32 on ``device`` (default: where the factors are)."""
        m1, m2 = self._operands(device)
        return torch.mm(m1, m2).mul_(self.scale)

    def donor(self, weight: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """The one reference for an adapter donor: ``(W.float() + α·s·B@A).to(W.dtype)``.

        Computed on ``weight``'s device with one fused ``addmm`` per bounded row block (fp32 work
        memory of at most ~64 MB) and cast once; ``weight`` is never modified.
        """
        m1, m2 = self._operands(weight.device)
        coef = float(alpha) * self.scale
        blocks = [torch.addmm(weight.narrow(0, r0, n).float(), m1.narrow(0, r0, n), m2, alpha=coef)
                  .to(weight.dtype) for r0, n in row_blocks(weight.shape, _BLOCK)]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


def row_blocks(shape: Sequence[int], elements: int) -> list[tuple[int, int]]:
    """``(first row, rows)`` spans of at most ``elements`` entries (≥ 1 row each) covering ``shape``."""
    rows, cols = int(shape[0]), max(1, int(math.prod(shape[1:])))
    step = max(1, elements // cols)
    return [(r0, min(step, rows - r0)) for r0 in range(0, rows, step)] or [(0, 0)]


class Source(ABC):
    """Answers "the donor weight at this site" (and, for adapters, "the LoRA factors at this site").

    Tensors are returned as stored (dtype/device of the source); callers cast to the site's.
    ``is_delta`` sources (adapters) define the donor as the model's current weight plus ΔW.
    """

    is_delta: bool = False

    @property
    @abstractmethod
    def description(self) -> str:
        """Human-readable origin, used in error messages and reports."""

    @abstractmethod
    def covers(self, site: Site) -> bool:
        """Whether this source holds anything for ``site``."""

    @abstractmethod
    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        """The donor weight (or, for delta sources, ΔW in fp32 on ``base``'s device) at ``site``,
        unvalidated."""

    def weight(self, site: Site, base: torch.Tensor | None = None) -> torch.Tensor:
        """The donor weight at ``site`` (as stored; delta sources need the ``base`` it applies to)."""
        if self.is_delta:
            if base is None:
                raise SourceError(f"{self.description} holds updates (ΔW), not weights: "
                                  f"pass the base weight for {site.name}")
            return self.donor(site, base)
        return self._validated(site, self._host_read(site, base))

    def donor(self, site: Site, current: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """``current + α·(donor − current)`` at ``site``, on ``current``'s device and in its dtype.

        α = 1 is the graft, exact: a weight source's tensor cast once; an adapter's
        ``(W.float() + s·B@A).to(W.dtype)`` (:meth:`LoraFactors.donor`). Other α blend in fp32.
        """
        if self.is_delta:
            if not self.covers(site):
                return current
            factors = self.factors(site)
            if factors is not None:
                self._check_shape(site, factors.shape)
                return factors.donor(current, alpha)
            delta = self.delta(site, current)
            return torch.add(current.float(), delta, alpha=float(alpha)).to(current.dtype)
        weight = self.weight(site)
        if alpha == 1.0:
            return weight.to(device=current.device, dtype=current.dtype)
        start = current.float()  # never modified in place: it may be the model's own tensor
        return torch.add(start, weight.to(current.device, torch.float32) - start,
                         alpha=float(alpha)).to(current.dtype)

    def delta(self, site: Site, base: torch.Tensor) -> torch.Tensor:
        """ΔW = donor − base at ``site`` in fp32 on ``base``'s device (exact for adapters)."""
        if self.is_delta:
            if not self.covers(site):
                return torch.zeros(site.shape, dtype=torch.float32, device=base.device)
            # delta sources check their values as they open (LoRA factors) and compute ΔW on
            # ``base``'s device; shapes are checked here
            return self._validated(site, self._read(site, base))
        return self.weight(site).to(base.device, torch.float32) - base.float()

    def factors(self, site: Site) -> LoraFactors | None:
        """LoRA factors at ``site`` (``None`` for weight sources and uncovered sites)."""
        return None

    def check_covers(self, sites: Sequence[Site]) -> None:
        """Raise :class:`SourceError` naming the sites this source cannot answer for."""
        missing = [s for s in sites if not self.covers(s)]
        if self.is_delta:
            if missing and len(missing) == len(sites):
                raise SourceError(f"{self.description} has no update for any selected site "
                                  f"({_preview(s.name for s in sites)}); it targets "
                                  f"{_preview(self.site_names())}")
            return
        if missing:
            raise SourceError(f"{self.description} lacks weights for {_preview(s.name for s in missing)}"
                              f" (looked for keys ending in {missing[0].weight_key!r})")

    def site_names(self) -> list[str]:
        """Names of keys this source holds (for error messages)."""
        return []

    def close(self) -> None:
        """Release open files (safe to call twice)."""

    def _check_shape(self, site: Site, shape: tuple[int, ...], where: str | None = None) -> None:
        if tuple(shape) != tuple(site.shape):
            hint = (" — was it made for another base model (hidden/intermediate size differs)?"
                    if len(shape) == 2 else "")
            raise ShapeMismatchError(f"{where or self.description}: tensor for {site.name} ({site.path}) "
                                     f"has shape {tuple(shape)}, the model's site is {site.shape}{hint}")

    def _host_read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        """``_read``, with the values checked where they were read: a host tensor (a file just
        read, a CPU state dict) gets one finite check; a tensor already on an accelerator is not
        read back (no sync). Delta sources check their values when they open instead."""
        tensor = self._read(site, base)
        if _host_values(tensor):
            _check_finite(tensor, lambda: f"{self.description}: tensor for {site.name}")
        return tensor

    def _validated(self, site: Site, tensor: torch.Tensor, origin: str | None = None) -> torch.Tensor:
        self._check_shape(site, tuple(tensor.shape), origin)
        return tensor


def _host_values(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s values can be read without a device sync (a real host tensor).

    Donors are validated where they are read — on the host, as files and adapters are opened —
    so the on-device path has no data-dependent branch (no GPU sync per site; fake tensors pass).
    """
    from torch._subclasses.fake_tensor import FakeTensor
    return tensor.device.type == "cpu" and not isinstance(tensor, FakeTensor) and not tensor.is_meta


def _check_finite(tensor: torch.Tensor, what: str | Callable[[], str]) -> None:
    """Raise :class:`NonFiniteError` if a floating host tensor holds NaN/Inf (one fp32 pass).

    ``what`` names the tensor in the error (a callable is formatted only when there is one)."""
    if tensor.is_floating_point() and not math.isfinite(float(torch.sum(tensor, dtype=torch.float32))) \
            and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what() if callable(what) else what} holds {bad} NaN/Inf values")


def layer_of_key(key: str, layers_name: str = "layers") -> int | None:
    """The layer index of a checkpoint key (``…<layers_name>.N.…``), or ``None`` when it has none."""
    parts = key.split(".")
    found = [int(parts[i + 1]) for i in range(len(parts) - 1) if parts[i] == layers_name and parts[i + 1].isdigit()]
    return found[-1] if found else None


class KeyIndex:
    """Maps sites to checkpoint keys by suffix, so wrapper prefixes never matter.

    ``layers.3.mlp.gate_proj.weight`` matches ``model.layers.3.mlp.gate_proj.weight`` as well as
    ``llama_model.base_model.model.model.layers.3.mlp.gate_proj.weight``. Several matches are
    disambiguated by the site's full path; otherwise :class:`SourceError` lists them.
    """

    def __init__(self, keys: Iterable[str], origin: str):
        self.keys = list(keys)
        self.origin = origin
        self._by_suffix: dict[str, list[str]] = {}
        for key in self.keys:
            parts = key.split(".")
            for i in range(len(parts) - 1):
                if parts[i + 1].isdigit():
                    self._by_suffix.setdefault(".".join(parts[i:]), []).append(key)

    def find(self, site: Site, suffix: str | None = None) -> str | None:
        suffix = suffix or site.weight_key
        matches = self._by_suffix.get(suffix, [])
        if len(matches) <= 1:
            return matches[0] if matches else None
        full = f"{site.layers_path}.{site.layer}.{site.rel_path}"
        best = [k for k in matches if full in k]
        if len(best) == 1:
            return best[0]
        raise SourceError(f"{self.origin}: several keys match {site.name}: {_preview(matches)}")

    def max_layer(self, layers_name: str = "layers") -> int:
        """The largest layer index among the keys (−1 when none has one)."""
        return max((i for k in self.keys if (i := layer_of_key(k, layers_name)) is not None), default=-1)


def slice_rows(site: Site, tensor: torch.Tensor) -> torch.Tensor:
    """The site's rows of a (possibly fused) weight (a view)."""
    return tensor if site.rows is None else tensor.narrow(0, site.rows[0], site.rows[1] - site.rows[0])
