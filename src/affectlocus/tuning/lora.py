"""Selections → peft ``LoraConfig`` that target exactly the selected sites, verified after wrapping.

Module names come from :func:`affectlocus.sites.select` on a model (any architecture of the table), or,
without one, from the architecture table itself (:data:`affectlocus.sites.LAYOUTS`).
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import torch.nn as nn

from ..errors import ConfigError, SiteError
from ..sites import LAYOUTS, Layout, parse_layers, parse_modules, select
from ..sites.selection import LayerSpec, ModuleSpec

#: More layers than any model has: a layer spec that reads the same at this depth and one more
#: names its layers outright (no negative index, no slice or range without an end).
_DEEPEST = 1 << 16


def projection_members(layouts: Iterable[Layout] = LAYOUTS) -> dict[str, frozenset[str]]:
    """Projection path inside a layer → the canonical projections its weight holds (``{"q", "k", "v"}``
    for Phi-3's ``self_attn.qkv_proj``), over ``layouts`` (default: the whole table)."""
    held: dict[str, set[str]] = {}
    for layout in layouts:
        for name, proj in layout.projections.items():
            held.setdefault(proj.path, set()).add(name)
    return {path: frozenset(names) for path, names in held.items()}


def _fused_refusal(partial: list[str]) -> SiteError:
    return SiteError(f"LoRA cannot target part of a fused weight: {partial[:3]}; select all of "
                     f"q,k,v (qkv_proj) or gate,up (gate_up_proj), or use full fine-tuning of rows")


def target_regex(model: nn.Module, modules: ModuleSpec = "all", layers: LayerSpec = None
                 ) -> tuple[str, list[str]]:
    """A full-name regex (peft ``re.fullmatch``) matching exactly the selected projections of ``model``,
    and the module names it must match. Fused sub-selections (Phi-3 ``q`` alone) are refused: a LoRA
    on a fused weight always adapts all of its rows."""
    sites = select(model, modules, layers)
    chosen: dict[str, set[str]] = {}
    for s in sites:
        chosen.setdefault(s.hook_path, set()).add(s.module)
    if any(s.rows is not None for s in sites):
        held: dict[str, set[str]] = {}
        for s in select(model, "all", layers):
            held.setdefault(s.hook_path, set()).add(s.module)
        partial = [f"{path} ({'+'.join(sorted(m))})" for path, m in chosen.items() if m != held[path]]
        if partial:
            raise _fused_refusal(partial)
    names = sorted(chosen)
    return "^(" + "|".join(re.escape(n) for n in names) + ")$", names


def layer_paths(modules: ModuleSpec = "all", layouts: Iterable[Layout] = LAYOUTS) -> list[str]:
    """Paths inside a decoder layer that LoRA must adapt for exactly ``modules``, over every layout of
    ``layouts`` that can serve the selection (a layout whose fused weight would be adapted only in
    part is left out; :class:`SiteError` when none is left)."""
    mods = set(parse_modules(modules))
    paths: list[str] = []
    for layout in layouts:
        held = projection_members([layout])
        chosen = [path for path, names in held.items() if names & mods]
        if all(held[path] <= mods for path in chosen):
            paths.extend(p for p in chosen if p not in paths)
    if not paths:
        raise _fused_refusal([f"{', '.join(lo.name for lo in layouts)}: {'+'.join(sorted(mods))}"])
    return paths


def _named_layers(layers: LayerSpec) -> tuple[int, ...]:
    """The indices of a layer spec that does not depend on the model's depth."""
    found = parse_layers(layers, _DEEPEST)
    if found == parse_layers(layers, _DEEPEST + 1):
        return found
    raise SiteError(f"layers={layers!r} counts from the end of the model (a negative index, or a slice or "
                    f"range without an end): without a model, pass num_layers= (or model=)")


def generic_regex(modules: ModuleSpec = "all", layers: LayerSpec = None, num_layers: int | None = None,
                  layouts: Iterable[Layout] = LAYOUTS) -> str:
    """A model-free regex (``…layers.<i>.<path>``) whose paths come from the architecture table
    (:func:`layer_paths`). ``num_layers`` is needed only for layers counted from the end."""
    paths = layer_paths(modules, layouts)
    if layers is None:
        layer_re = r"\d+"
    else:
        found = parse_layers(layers, num_layers) if num_layers is not None else _named_layers(layers)
        layer_re = "|".join(str(i) for i in found)
    return rf"^(.*\.)?layers\.({layer_re})\.({'|'.join(re.escape(p) for p in paths)})$"


def lora_config(modules: ModuleSpec = "all", layers: LayerSpec = None, r: int = 16, alpha: float = 32,
                dropout: float = 0.05, rslora: bool = False, *, model: Any = None,
                num_layers: int | None = None, **kwargs: Any):
    """A ``peft.LoraConfig`` targeting exactly ``modules`` × ``layers``.

    With ``model`` — a model, or what :func:`~affectlocus.tuning.meta_model` takes (a shipped arch name
    such as ``"qwen2.5-7b"``, a config, a ``config.json`` path), built on the meta device — the regex
    lists the selected modules' full names. Without it, the pattern is made from the architecture
    table (:func:`generic_regex`; ``num_layers`` only for layers counted from the end). Extra keyword
    arguments go to ``LoraConfig``. Check the result on a wrapped model with :func:`verify_targets`.
    """
    import peft
    try:
        rank = int(r)
    except (TypeError, ValueError):
        rank = 0
    if rank < 1:
        raise ConfigError(f"LoRA rank r must be an integer ≥ 1, got {r!r}")
    if model is not None and not isinstance(model, nn.Module):
        from .params import meta_model
        model = meta_model(model)
    regex = target_regex(model, modules, layers)[0] if model is not None else \
        generic_regex(modules, layers, num_layers)
    return peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, use_rslora=rslora,
                           target_modules=regex, **kwargs)


def lora_module_names(peft_model: nn.Module) -> list[str]:
    """Names (relative to the wrapped model) of the modules that carry LoRA layers."""
    names = []
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and len(getattr(module, "lora_A")) > 0:
            names.append(re.sub(r"^base_model\.model\.", "", name))
    return sorted(names)


def verify_targets(peft_model: nn.Module, model: nn.Module, modules: ModuleSpec = "all",
                   layers: LayerSpec = None) -> list[str]:
    """Raise :class:`SiteError` unless the LoRA layers sit exactly on the selected sites."""
    want = target_regex(model, modules, layers)[1]
    got = lora_module_names(peft_model)
    if got != want:
        raise SiteError(f"LoRA matched {len(got)} modules, the selection has {len(want)}: extra "
                        f"{sorted(set(got) - set(want))[:4]}, missing {sorted(set(want) - set(got))[:4]}")
    return got
