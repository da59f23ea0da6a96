"""Activation-space interventions: hooks on projection outputs (always plain tensors)."""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping, Sequence

import torch

from ..errors import InterventionError
from ..sites import Site
from ..sites.selection import LayerSpec, ModuleSpec
from .base import OutputIntervention


def _channel_index(channels, output: torch.Tensor, site: Site):
    """The selected channels as an index on ``output``'s device (a slice for all of them)."""
    width = output.shape[-1]
    if channels is None:
        return slice(None)
    idx = list(channels.get(site.layer, [])) if isinstance(channels, Mapping) else list(channels)
    bad = [c for c in idx if not -width <= int(c) < width]
    if bad:
        raise InterventionError(f"channels {bad[:5]} out of range for {site.name} ({width} channels)")
    return torch.tensor(sorted({int(c) % width for c in idx}), dtype=torch.long, device=output.device)


class Record(OutputIntervention):
    """Record the selected projections' outputs: ``.outputs[site.name]`` is a list, one per call.

    Tensors are detached (and moved to CPU unless ``to_cpu=False``). Use :meth:`means` for per-channel
    means over every recorded position (padding included — pass unpadded batches for exact means).
    """

    def __init__(self, modules: ModuleSpec = "all", layers: LayerSpec = None, to_cpu: bool = True):
        super().__init__(modules, layers)
        self.to_cpu = to_cpu
        self.outputs: dict[str, list[torch.Tensor]] = defaultdict(list)

    def transform(self, site, output):
        value = output.detach()
        self.outputs[site.name].append(value.cpu() if self.to_cpu else value.clone())
        return None

    def clear(self) -> None:
        self.outputs.clear()

    def means(self) -> dict[str, torch.Tensor]:
        """Per-channel mean over all recorded positions, per site."""
        if not self.outputs:
            raise InterventionError("nothing recorded yet: run the model inside the intervention first")
        return {name: torch.cat([v.reshape(-1, v.shape[-1]).float() for v in vals]).mean(0)
                for name, vals in self.outputs.items()}


class ZeroOutput(OutputIntervention):
    """Zero the selected projections' outputs (all channels, or ``channels``)."""

    def __init__(self, modules: ModuleSpec = "all", layers: LayerSpec = None,
                 channels: Sequence[int] | Mapping[int, Sequence[int]] | None = None):
        super().__init__(modules, layers)
        self.channels = channels

    def transform(self, site, output):
        idx = _channel_index(self.channels, output, site)
        if isinstance(idx, slice):
            return torch.zeros_like(output)
        return output.index_fill(-1, idx, 0)


class ScaleOutput(ZeroOutput):
    """Multiply the selected projections' outputs (all channels, or ``channels``) by ``factor``."""

    def __init__(self, factor: float, modules: ModuleSpec = "all", layers: LayerSpec = None,
                 channels: Sequence[int] | Mapping[int, Sequence[int]] | None = None):
        super().__init__(modules, layers, channels)
        self.factor = float(factor)

    def transform(self, site, output):
        idx = _channel_index(self.channels, output, site)
        if isinstance(idx, slice):
            return output * self.factor
        return output.index_copy(-1, idx, output.index_select(-1, idx) * self.factor)


class PatchOutput(OutputIntervention):
    """Replace outputs by ``fn(output, site)`` (return ``None`` to leave one unchanged)."""

    def __init__(self, fn: Callable[[torch.Tensor, Site], torch.Tensor | None],
                 modules: ModuleSpec = "all", layers: LayerSpec = None):
        super().__init__(modules, layers)
        if not callable(fn):
            raise InterventionError(f"patch needs a callable fn(output, site), got {fn!r}")
        self.fn = fn

    def transform(self, site, output):
        new = self.fn(output, site)
        if new is not None and new.shape != output.shape:
            raise InterventionError(f"patch fn returned shape {tuple(new.shape)} for {site.name}, "
                                    f"expected {tuple(output.shape)}")
        return new


class MeanAblate(OutputIntervention):
    """Replace outputs by a fixed per-channel mean (from :meth:`Record.means` or given)."""

    def __init__(self, means: Mapping[str, torch.Tensor] | Record, modules: ModuleSpec = "all",
                 layers: LayerSpec = None):
        super().__init__(modules, layers)
        self.means = means.means() if isinstance(means, Record) else dict(means)

    def apply(self, model, handle):
        missing = [s.name for s in self.sites(model) if s.name not in self.means]
        if missing:
            raise InterventionError(f"mean_ablate has no means for {missing[:6]}; it has "
                                    f"{sorted(self.means)[:6]} — record those sites first")
        super().apply(model, handle)

    def transform(self, site, output):
        mean = self.means[site.name].to(device=output.device, dtype=output.dtype)
        if mean.shape[-1] != output.shape[-1]:
            raise InterventionError(f"mean for {site.name} has {mean.shape[-1]} channels, output has "
                                    f"{output.shape[-1]}")
        return mean.expand_as(output).clone()
