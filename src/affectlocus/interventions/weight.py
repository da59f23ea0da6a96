"""Weight-space interventions: graft, interpolate, zero, scale, noise, neuron masks."""
from __future__ import annotations

import zlib
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from ..errors import InterventionError
from ..sites import Site
from ..sites.selection import LayerSpec, ModuleSpec
from ..sources import Source, open_source
from ..sources.base import row_blocks
from .base import WeightIntervention


class Graft(WeightIntervention):
    """Replace the selected weights by a donor's (for an adapter: current weight + ΔW)."""

    def __init__(self, source, modules: ModuleSpec = "all", layers: LayerSpec = None):
        super().__init__(modules, layers)
        self.source: Source = open_source(source)

    def prepare(self, model: nn.Module, sites: list[Site]) -> None:
        self.source.check_covers(sites)

    def acts_on(self, site: Site) -> bool:
        return not self.source.is_delta or self.source.covers(site)  # an adapter leaves the rest alone

    def donor(self, site: Site, current: torch.Tensor) -> torch.Tensor:
        """The donor at ``site`` on ``current``'s device and in its dtype (cast once)."""
        return self.source.donor(site, current)

    def new_weight(self, site, current, model):
        return self.donor(site, current)

    def _extra(self) -> str:
        return f", source={self.source.description}"


class Interpolate(Graft):
    """W + α (W_donor − W): α = 0 is the model itself, α = 1 the graft (both exact)."""

    def __init__(self, source, alpha: float, modules: ModuleSpec = "all", layers: LayerSpec = None):
        super().__init__(source, modules, layers)
        if not isinstance(alpha, (int, float)) or alpha != alpha:
            raise InterventionError(f"alpha must be a real number, got {alpha!r}")
        self.alpha = float(alpha)

    def new_weight(self, site, current, model):
        if self.alpha == 0.0:
            return current
        return self.source.donor(site, current, self.alpha)

    def _extra(self) -> str:
        return f", alpha={self.alpha:g}, source={self.source.description}"


class Zero(WeightIntervention):
    """Set the selected weights to zero."""

    def new_weight(self, site, current, model):
        return torch.zeros_like(current)


class Scale(WeightIntervention):
    """Multiply the selected weights by ``factor``."""

    def __init__(self, factor: float, modules: ModuleSpec = "all", layers: LayerSpec = None):
        super().__init__(modules, layers)
        self.factor = float(factor)

    def new_weight(self, site, current, model):
        return (current.float() * self.factor).to(current.dtype)

    def _extra(self) -> str:
        return f", factor={self.factor:g}"


def site_generator(seed: int, site: Site) -> torch.Generator:
    """A CPU generator seeded by (seed, site) — the same noise for the same site on every run."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + zlib.crc32(site.name.encode())) % 2**63)


_BLOCK = 1 << 20  # elements drawn per block from a site's generator


def seeded_blocks(seed: int, site: Site, shape: Sequence[int], draw=torch.randn):
    """``(r0, rows, values)`` row blocks of ``draw`` (``torch.randn``/``torch.rand``) from the
    site's CPU generator, ≤ 2**20 values each, on the host.

    Every device gets the same numbers (torch's CPU and CUDA generators differ, so values are
    always drawn on the CPU and copied); memory stays bounded for 7B-sized weights. A weight of
    ≤ 2**20 entries is one block, i.e. exactly ``draw(shape, generator=…)``.
    """
    gen = site_generator(seed, site)
    for r0, n in row_blocks(shape, _BLOCK):
        yield r0, n, draw((n, *shape[1:]), generator=gen)


class Noise(WeightIntervention):
    """Add seeded Gaussian noise. Give exactly one of:

    - ``std``: absolute standard deviation;
    - ``relative``: noise Frobenius norm = ``relative`` · ‖W‖_F;
    - ``match``: a source; noise norm = ‖W_match − W‖_F and the result is W_match + noise — i.e.
      the update between the model and ``match`` is replaced by a random direction of equal norm
      (apply to a tuned model with ``match=base`` for the "norm-matched noise" ablation).

    Noise is drawn on the host (:func:`seeded_blocks`), so a seed gives the same noise on every
    device; norms stay on the weight's device (no sync).
    """

    def __init__(self, std: float | None = None, *, relative: float | None = None, match=None,
                 seed: int = 0, modules: ModuleSpec = "all", layers: LayerSpec = None):
        super().__init__(modules, layers)
        if sum(x is not None for x in (std, relative, match)) != 1:
            raise InterventionError("noise needs exactly one of std=, relative= or match=")
        self.std, self.relative, self.seed = std, relative, int(seed)
        self.match: Source | None = open_source(match) if match is not None else None

    def prepare(self, model, sites):
        if self.match is not None:
            self.match.check_covers(sites)

    def new_weight(self, site, current, model):
        blocks = list(seeded_blocks(self.seed, site, current.shape))
        start = current
        if self.std is not None:
            factor = float(self.std)
        else:
            if self.relative is not None:
                target = float(self.relative) * current.float().norm()
            else:
                start = self.match.donor(site, current)
                target = (current.float() - start.float()).norm()
            norms = [b.norm() for _, _, b in blocks]
            eps_norm = norms[0] if len(norms) == 1 else torch.stack(norms).norm()
            factor = target / eps_norm.to(current.device).clamp_min(1e-30)
        return _join([(start.narrow(0, r0, n).float() + eps.to(current.device) * factor).to(current.dtype)
                      for r0, n, eps in blocks])

    def _extra(self) -> str:
        how = (f"std={self.std:g}" if self.std is not None else f"relative={self.relative:g}"
               if self.relative is not None else f"match={self.match.description}")
        return f", {how}, seed={self.seed}"


def _join(blocks: list[torch.Tensor]) -> torch.Tensor:
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class NeuronMask(WeightIntervention):
    """Zero (or scale) MLP neurons: rows of gate/up, columns of down.

    ``neurons`` is a list of channel indices (same in every selected layer) or ``{layer: [idx]}``.
    """

    def __init__(self, neurons: Sequence[int] | Mapping[int, Sequence[int]], modules: ModuleSpec = "mlp",
                 layers: LayerSpec = None, factor: float = 0.0):
        super().__init__(modules, layers)
        from ..sites import parse_modules
        wrong = [m for m in parse_modules(modules) if m not in ("gate", "up", "down")]
        if wrong:
            raise InterventionError(f"neuron masks act on MLP channels (gate, up, down); got {wrong}")
        self.neurons = neurons
        self.factor = float(factor)

    def channels(self, site: Site) -> list[int]:
        if isinstance(self.neurons, Mapping):
            chosen = list(self.neurons.get(site.layer, []))
        else:
            chosen = list(self.neurons)
        width = site.shape[1] if site.module == "down" else site.shape[0]
        bad = [c for c in chosen if not -width <= int(c) < width]
        if bad:
            raise InterventionError(f"neurons {bad[:5]} out of range for {site.name} "
                                    f"({width} MLP channels)")
        return [int(c) for c in chosen]

    def new_weight(self, site, current, model):
        dim = 1 if site.module == "down" else 0
        chosen = sorted({c % current.shape[dim] for c in self.channels(site)})
        idx = torch.tensor(chosen, dtype=torch.long, device=current.device)
        new = current.clone()
        return new.index_copy_(dim, idx, new.index_select(dim, idx) * self.factor)

    def _extra(self) -> str:
        n = sum(len(v) for v in self.neurons.values()) if isinstance(self.neurons, Mapping) \
            else len(self.neurons)
        return f", neurons={n}, factor={self.factor:g}"


class RandomRevert(Graft):
    """Set a seeded random ``fraction`` of each selected weight's entries to the source's values.

    With the base model as source, inside a graft of a tuned model, this reverts a random,
    parameter-matched subset of the update — the control for "reverting module X hurts most".
    """

    def __init__(self, source, fraction: float, seed: int = 0, modules: ModuleSpec = "all",
                 layers: LayerSpec = None):
        super().__init__(source, modules, layers)
        if not 0.0 <= float(fraction) <= 1.0:
            raise InterventionError(f"fraction must be within [0, 1], got {fraction!r}")
        self.fraction, self.seed = float(fraction), int(seed)

    def new_weight(self, site, current, model):
        donor = self.donor(site, current)
        if donor is current:  # the source leaves this site alone: nothing to revert
            return current
        return _join([torch.where((u < self.fraction).to(current.device), donor.narrow(0, r0, n),
                                  current.narrow(0, r0, n))
                      for r0, n, u in seeded_blocks(self.seed, site, current.shape, torch.rand)])

    def _extra(self) -> str:
        return f", fraction={self.fraction:g}, seed={self.seed}, source={self.source.description}"
