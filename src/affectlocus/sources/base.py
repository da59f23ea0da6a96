"""The source abstraction: *where donor weights come from*, answered one site at a time."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..errors import NonFiniteError, ShapeMismatchError, SourceError, _preview
from ..sites import Site


@dataclass(frozen=True)
class LoraFactors:
    """ΔW = scale · B @ A for one site (B already row-sliced for fused sites). fp32 on CPU."""

    A: torch.Tensor  # (r, in_features)
    B: torch.Tensor  # (out_features, r)
    scale: float
    transpose: bool = False  # fan_in_fan_out: ΔW is (scale · B @ A)ᵀ

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def dense(self) -> torch.Tensor:
        delta = self.scale * (self.B @ self.A)
        return delta.T if self.transpose else delta


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
        """The donor weight (or ΔW for delta sources) at ``site``, unvalidated."""

    def weight(self, site: Site, base: torch.Tensor | None = None) -> torch.Tensor:
        """The donor weight at ``site``; delta sources need the ``base`` weight it applies to."""
        if self.is_delta:
            if base is None:
                raise SourceError(f"{self.description} holds updates (ΔW), not weights: "
                                  f"pass the base weight for {site.name}")
            if not self.covers(site):
                return base
            return base + self.delta(site, base).to(base.dtype)
        return self._validated(site, self._read(site, base))

    def delta(self, site: Site, base: torch.Tensor) -> torch.Tensor:
        """ΔW = donor − base at ``site`` (exact for adapters; a subtraction for weight sources)."""
        if self.is_delta:
            if not self.covers(site):
                return torch.zeros(site.shape, dtype=torch.float32)
            return self._validated(site, self._read(site, base))
        return self.weight(site).float() - base.float().to(self.weight(site).device)

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

    def _validated(self, site: Site, tensor: torch.Tensor, origin: str | None = None) -> torch.Tensor:
        where = origin or self.description
        if tuple(tensor.shape) != tuple(site.shape):
            hint = (" — was it made for another base model (hidden/intermediate size differs)?"
                    if tensor.dim() == 2 else "")
            raise ShapeMismatchError(f"{where}: tensor for {site.name} ({site.path}) has shape "
                                     f"{tuple(tensor.shape)}, the model's site is {site.shape}{hint}")
        # One fp32-accumulated pass (no temporary mask); the exact check runs only if the sum is off.
        if tensor.is_floating_point() and not bool(torch.sum(tensor, dtype=torch.float32).isfinite()) \
                and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteError(f"{where}: tensor for {site.name} holds {bad} NaN/Inf values")
        return tensor


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


def slice_rows(site: Site, tensor: torch.Tensor) -> torch.Tensor:
    """The site's rows of a (possibly fused) weight."""
    return tensor if site.rows is None else tensor[site.rows[0]:site.rows[1]]
