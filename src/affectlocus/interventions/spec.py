"""Interventions from text specs, as command lines and configs write them.

* a graft: ``SRC:MODULES[:LAYERS]`` — e.g. ``runs/tuned:gate``, ``runs/tuned:o,gate:10-19``; SRC may
  itself hold ``:`` (the first field that names modules ends it);
* a site selection (zeroing): ``MODULES[:LAYERS]`` — e.g. ``gate``, ``mlp:3-5``, ``gate:10:20``;
* an adapter: a peft adapter folder or ``.pth`` file, grafted exactly where it has weights.

MODULES is what :func:`~affectlocus.sites.parse_modules` reads (``q,k,v,o,gate,up,down``, ``attn``,
``mlp``, ``all``), LAYERS what :func:`~affectlocus.sites.parse_layers` reads (``3``, ``0,5``,
``10:20``, ``10-19``); LAYERS may hold ``:``.
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from ..errors import AffectLocusError, InterventionError, SiteError, SourceError
from ..sites import find_decoder, parse_layers, parse_modules, select
from ..sources import open_source
from .base import Intervention
from .weight import Graft, Zero

GRAFT_FORM = ("SRC:MODULES[:LAYERS], e.g. runs/tuned:gate or runs/tuned:o,gate:10-19 "
              "(modules: q,k,v,o,gate,up,down, attn, mlp, all)")
SITE_FORM = "MODULES[:LAYERS], e.g. gate, gate:10-19 or gate:10:20 (modules: q,k,v,o,gate,up,down, attn, mlp, all)"


def _checked_layers(spec: str, layers: str | None, num_layers: int | None, form: str) -> str | None:
    if layers is not None and num_layers is not None:
        try:
            parse_layers(layers, num_layers)
        except SiteError as exc:
            raise SiteError(f"{spec!r}: {exc}; expected {form}") from None
    return layers


def parse_graft_spec(spec: str, num_layers: int | None = None) -> tuple[str, str, str | None]:
    """``SRC:MODULES[:LAYERS]`` → ``(src, modules, layers)`` (``layers`` None: every layer).
    With ``num_layers`` the layers are checked against a model of that depth too."""
    parts = str(spec).split(":")
    for i in range(1, len(parts)):
        try:
            parse_modules(parts[i])
        except AffectLocusError:
            continue
        src, layers = ":".join(parts[:i]), ":".join(parts[i + 1:]) or None
        if src:
            return src, parts[i], _checked_layers(spec, layers, num_layers, GRAFT_FORM)
    raise InterventionError(f"graft {spec!r}: expected {GRAFT_FORM}")


def parse_site_spec(spec: str, num_layers: int | None = None) -> tuple[str, str | None]:
    """``MODULES[:LAYERS]`` → ``(modules, layers)`` (``layers`` None: every layer).
    With ``num_layers`` the layers are checked against a model of that depth too."""
    mods, _, layers = str(spec).partition(":")
    try:
        parse_modules(mods)
    except SiteError as exc:
        raise SiteError(f"{spec!r}: {exc}; expected {SITE_FORM}") from None
    return mods, _checked_layers(spec, layers or None, num_layers, SITE_FORM)


def adapter_grafts(model: nn.Module, path: str) -> list[Graft]:
    """Grafts applying an adapter exactly where it has weights (one per group of modules sharing
    the same covered layers), so uncovered projections are left alone rather than copied."""
    source = open_source(path)
    layers: dict[str, list[int]] = {}
    for site in select(model, "all"):
        if source.covers(site):
            layers.setdefault(site.module, []).append(site.layer)
    if not layers:
        raise SourceError(f"adapter {path}: it holds no weights for any projection of this model "
                          f"({type(model).__name__}); expected an adapter trained on it")
    groups: dict[tuple[int, ...], list[str]] = {}
    for module, ls in layers.items():
        groups.setdefault(tuple(sorted(set(ls))), []).append(module)
    return [Graft(source, modules=mods, layers=list(ls)) for ls, mods in groups.items()]


def build_interventions(adapters: Sequence[str] = (), grafts: Sequence[str] = (), zeros: Sequence[str] = (),
                        model: nn.Module | None = None) -> list[Intervention]:
    """The interventions for adapter paths, graft specs and zero specs (applied in that order).

    Without ``model`` the specs and sources are checked (fail before loading a model) and adapters
    become whole-model grafts; with it, adapters are grafted only where they have weights
    (:func:`adapter_grafts`) and LAYERS are checked against the model's depth.
    """
    n = find_decoder(model).num_layers if model is not None else None
    out: list[Intervention] = [g for a in adapters
                               for g in (adapter_grafts(model, a) if model is not None else [Graft(a)])]
    for spec in grafts:
        src, mods, layers = parse_graft_spec(spec, n)
        out.append(Graft(src, modules=mods, layers=layers))
    for spec in zeros:
        mods, layers = parse_site_spec(spec, n)
        out.append(Zero(modules=mods, layers=layers))
    return out


__all__ = ["GRAFT_FORM", "SITE_FORM", "adapter_grafts", "build_interventions", "parse_graft_spec",
           "parse_site_spec"]
