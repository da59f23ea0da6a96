"""Selections → peft ``LoraConfig`` that target exactly the selected sites, verified after wrapping."""
from __future__ import annotations

import re
from typing import Any

import torch.nn as nn

from ..errors import SiteError
from ..sites import LAYOUTS, parse_layers, parse_modules, select
from ..sites.selection import LayerSpec, ModuleSpec


def target_regex(model: nn.Module, modules: ModuleSpec = "all", layers: LayerSpec = None
                 ) -> tuple[str, list[str]]:
    """A full-name regex (peft ``re.fullmatch``) matching exactly the selected projections of ``model``,
    and the module names it must match. Fused sub-selections (Phi-3 ``q`` alone) are refused: a LoRA
    on a fused weight always adapts all of its rows."""
    sites = select(model, modules, layers)
    fused = {}
    for s in sites:
        if s.rows is not None:
            fused.setdefault(s.hook_path, set()).add(s.module)
    partial = [f"{path} ({'+'.join(sorted(m))})" for path, m in fused.items() if m != _fused_members(path)]
    if partial:
        raise SiteError(f"LoRA cannot target part of a fused weight: {partial[:3]}; select all of "
                        f"q,k,v (qkv_proj) or gate,up (gate_up_proj), or use full fine-tuning of rows")
    names = sorted({s.hook_path for s in sites})
    return "^(" + "|".join(re.escape(n) for n in names) + ")$", names


def _fused_members(path: str) -> set[str]:
    for layout in LAYOUTS:
        members = {m for m, p in layout.projections.items() if p.rows is not None and path.endswith(p.path)}
        if members:
            return members
    return set()


def generic_regex(modules: ModuleSpec = "all", layers: LayerSpec = None, num_layers: int | None = None) -> str:
    """A model-free regex for Llama-style layouts (``…layers.<i>.self_attn.q_proj`` etc.)."""
    mods = parse_modules(modules)
    paths = [LAYOUTS[0].projections[m].path for m in mods]
    if layers is None:
        layer_re = r"\d+"
    else:
        if num_layers is None:
            raise SiteError("a layer subset without a model needs num_layers=")
        layer_re = "|".join(str(i) for i in parse_layers(layers, num_layers))
    return rf"^(.*\.)?layers\.({layer_re})\.({'|'.join(re.escape(p) for p in paths)})$"


def lora_config(modules: ModuleSpec = "all", layers: LayerSpec = None, r: int = 16, alpha: float = 32,
                dropout: float = 0.05, rslora: bool = False, *, model: nn.Module | None = None,
                num_layers: int | None = None, **kwargs: Any):
    """A ``peft.LoraConfig`` targeting exactly ``modules`` × ``layers``.

    With ``model`` the regex lists the selected modules' full names (any architecture of the table);
    without it, a Llama-style pattern is used (``num_layers`` needed for layer subsets). Extra keyword
    arguments go to ``LoraConfig``. Check the result on a wrapped model with :func:`verify_targets`.
    """
    import peft
    if int(r) < 1:
        raise SiteError(f"LoRA rank must be ≥ 1, got {r}")
    regex = target_regex(model, modules, layers)[0] if model is not None else \
        generic_regex(modules, layers, num_layers)
    return peft.LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=dropout, use_rslora=rslora,
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
