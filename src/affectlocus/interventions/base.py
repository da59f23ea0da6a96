"""Interventions are small value objects: a selection plus what to do at each selected site."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from ..sites import Selection, Site
from ..sites.selection import LayerSpec, ModuleSpec, Resolved, resolve

if TYPE_CHECKING:  # the registry applies interventions; they only see its handle
    from ..registry import Handle


class Intervention(ABC):
    """Base class: holds a :class:`Selection`; :meth:`apply` acts through a registry handle."""

    def __init__(self, modules: ModuleSpec = "all", layers: LayerSpec = None):
        self.selection = Selection(modules, layers)

    def sites(self, model: nn.Module) -> list[Site]:
        """The sites this intervention acts on (narrow them by overriding :meth:`resolved` only)."""
        return [r.site for r in self.resolved(model)]

    def resolved(self, model: nn.Module) -> list[Resolved]:
        """The selected sites with their modules (one walk of the model)."""
        return resolve(model, self.selection.modules, self.selection.layers)

    @abstractmethod
    def apply(self, model: nn.Module, handle: Handle) -> None:
        """Apply to ``model``, recording every change on ``handle`` so it can be undone."""

    def describe(self) -> str:
        return f"{type(self).__name__.lower()}({self.selection.describe()}{self._extra()})"

    def _extra(self) -> str:
        return ""

    def __repr__(self) -> str:
        return self.describe()


class WeightIntervention(Intervention):
    """Replaces the selected sites' weights; subclasses define :meth:`new_weight` for one site."""

    def prepare(self, model: nn.Module, sites: list[Site]) -> None:
        """Validate before anything is changed (e.g. that a source covers the sites)."""

    @abstractmethod
    def new_weight(self, site: Site, current: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The site's new (row-sliced) weight, given its current one."""

    def acts_on(self, site: Site) -> bool:
        """Whether :meth:`new_weight` can change ``site`` (sites it cannot are skipped unread)."""
        return True

    def apply(self, model: nn.Module, handle: Handle) -> None:
        resolved = self.resolved(model)
        self.prepare(model, [r.site for r in resolved])
        by_param: dict[str, list[Resolved]] = defaultdict(list)
        for r in resolved:
            if self.acts_on(r.site):
                by_param[r.site.path].append(r)
        for path, group in by_param.items():
            module = group[0].weight_module
            current = module.weight.detach()
            if len(group) == 1 and group[0].site.rows is None:
                new = self.new_weight(group[0].site, current, model)
            else:  # fused weight: rebuild it once with every selected row span replaced
                new = _fused(current, {r.site.rows or (0, current.shape[0]): r.site for r in group},
                             lambda site, rows: self.new_weight(site, rows, model))
            if new is current:  # unchanged (e.g. an adapter without this site, α = 0): nothing to undo
                continue
            handle.replace(module, "weight", new.to(device=current.device, dtype=current.dtype), path)


def _fused(current: torch.Tensor, spans: dict, new_rows) -> torch.Tensor:
    """``current`` with each ``(a, b)`` row span replaced by ``new_rows(site, rows)`` (one new tensor);
    ``current`` itself when every span came back unchanged."""
    parts, at, changed = [], 0, False
    for (a, b), site in sorted(spans.items()):
        if a > at:
            parts.append(current.narrow(0, at, a - at))
        rows = current.narrow(0, a, b - a)
        parts.append(new_rows(site, rows).to(current.dtype))
        changed |= parts[-1] is not rows
        at = b
    if at < current.shape[0]:
        parts.append(current.narrow(0, at, current.shape[0] - at))
    return torch.cat(parts) if changed else current


class OutputIntervention(Intervention):
    """Acts on the selected projections' outputs through forward hooks (plain tensors)."""

    @abstractmethod
    def transform(self, site: Site, output: torch.Tensor) -> torch.Tensor | None:
        """New output for the site's channels (``None`` leaves it unchanged)."""

    def apply(self, model: nn.Module, handle: Handle) -> None:
        for r in self.resolved(model):
            handle.add_hook(r.hook_module, self._hook_fn(r.site), r.site.hook_path)

    def _hook_fn(self, site: Site):
        def fn(output):
            if site.rows is None:
                return self.transform(site, output)
            a, b = site.rows
            new = self.transform(site, output.narrow(-1, a, b - a))
            if new is None:
                return None
            width = output.shape[-1]
            return torch.cat([output.narrow(-1, 0, a), new.to(output.dtype),
                              output.narrow(-1, b, width - b)], dim=-1)
        return fn
