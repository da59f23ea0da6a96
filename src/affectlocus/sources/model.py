"""In-memory donors: another model, a state dict, or the model's own original weights."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..errors import SourceError
from ..sites import Site, find_decoder
from ..sites.selection import sites_of
from .base import KeyIndex, Source, slice_rows


class ModelSource(Source):
    """Donor weights read from an in-memory model, matched by canonical site (not by key).

    The donor may even be another layout (a Phi-3 donor for a Llama-style base of equal shapes).
    Weights are read at the moment they are needed; the donor is never copied.
    """

    def __init__(self, model: nn.Module, name: str | None = None):
        self.model = model
        self.name = name or type(model).__name__
        self.stack = find_decoder(model)

    @property
    def description(self) -> str:
        return f"in-memory model {self.name}"

    def covers(self, site: Site) -> bool:
        return site.layer < self.stack.num_layers

    def site_names(self) -> list[str]:
        return [f"layers.0..{self.stack.num_layers - 1}"]

    def donor_site(self, site: Site) -> Site:
        if not self.covers(site):
            raise SourceError(f"{self.description} has {self.stack.num_layers} layers; "
                              f"no layer {site.layer}")
        return sites_of(self.stack, [site.module], [site.layer])[0]

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        donor = self.donor_site(site)
        weight = self.model.get_submodule(donor.path).weight
        return slice_rows(donor, weight.detach())


class StateDictSource(Source):
    """Donor weights from a ``{key: tensor}`` mapping, matched by key suffix."""

    def __init__(self, state: Mapping[str, torch.Tensor], origin: str = "state dict"):
        self.state = state
        self.origin = origin
        self.index = KeyIndex(state, origin)

    @property
    def description(self) -> str:
        return self.origin

    def covers(self, site: Site) -> bool:
        return self.index.find(site) is not None

    def site_names(self) -> list[str]:
        return list(self.state)

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        key = self.index.find(site)
        if key is None:
            raise SourceError(f"{self.origin} has no tensor for {site.name}")
        return slice_rows(site, self.state[key])


class OriginalSource(Source):
    """The model's own weights as they were before any intervention of ours (for revert/blend)."""

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def description(self) -> str:
        return f"original weights of {type(self.model).__name__}"

    def covers(self, site: Site) -> bool:
        return True

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        from ..registry import original_weight
        return slice_rows(site, original_weight(self.model.get_submodule(site.path), "weight"))
