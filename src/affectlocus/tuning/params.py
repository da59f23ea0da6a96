"""Exact trainable-parameter accounting on the ``meta`` device (no weights: works for 32B configs).

LoRA adds r·(in + out) parameters per adapted projection (A: r×in, B: out×r); full fine-tuning of a
selection trains every entry of the selected weights. Shipped dimension-only configs: see
:func:`known_archs`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ArchitectureError, ConfigError, _preview
from ..sites import CANONICAL, Selection, select

CONFIG_DIR = Path(__file__).with_name("configs")
METHODS = ("lora", "full")  # LoRA on the sites, or full fine-tuning of only the selected weights


def known_archs() -> list[str]:
    """Names of the shipped dimension-only configs (e.g. ``qwen2.5-7b``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def meta_model(spec: Any) -> nn.Module:
    """A model skeleton on the ``meta`` device from an arch name, a config, a config path or a model."""
    if isinstance(spec, nn.Module):
        return spec
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig
    if isinstance(spec, PretrainedConfig):
        cfg = spec
    else:
        path = CONFIG_DIR / f"{str(spec).lower()}.json"
        if not path.exists():
            path = Path(spec)
            if path.is_dir():
                path = path / "config.json"
        if not path.exists():
            raise ArchitectureError(f"unknown architecture {spec!r}: give a model, a config, a config.json "
                                    f"path, or one of {', '.join(known_archs())}")
        data = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
        cfg = AutoConfig.for_model(**data)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


@dataclass
class ParamCount:
    """Trainable parameters per canonical module and in total (``method`` = "lora" or "full")."""

    method: str
    per_module: dict[str, int]
    total: int
    model_params: int
    rank: int | None = None
    sites: int = 0
    detail: dict[str, int] = field(default_factory=dict, repr=False)


def count_trainable(model_or_config: Any, selection: Any = "all", *, r: int | None = None,
                    layers=None, method: str | None = None) -> ParamCount:
    """Exact trainable-parameter counts for LoRA (or full fine-tuning) of a selection.

    ``selection``: a ``peft.LoraConfig`` built by :func:`lora_config` (its rank is used), a
    :class:`Selection`, or a module spec such as ``"gate"`` (with ``r`` for LoRA, or
    ``method="full"``). Works on meta-device skeletons, so no weights are read or allocated.
    """
    model = meta_model(model_or_config)
    if hasattr(selection, "target_modules") and hasattr(selection, "r"):
        return _count_peft(model, selection)
    sel = selection if isinstance(selection, Selection) else Selection(selection, layers)
    sites = sel.resolve(model)
    method = method or ("lora" if r is not None else "full")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "lora" and (r is None or int(r) < 1):
        raise ConfigError(f"counting LoRA parameters needs a rank r ≥ 1, got r={r!r}")
    per_module = {m: 0 for m in CANONICAL if any(s.module == m for s in sites)}
    detail = {}
    for s in sites:
        n = int(r) * (s.shape[0] + s.shape[1]) if method == "lora" else s.numel
        per_module[s.module] += n
        detail[s.name] = n
    return ParamCount(method, per_module, sum(per_module.values()), _numel(model),
                      int(r) if method == "lora" else None, len(sites), detail)


def _numel(model: nn.Module) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _count_peft(model: nn.Module, config) -> ParamCount:
    """Count by matching the config's targets against the skeleton's projections (as peft would)."""
    import re
    sites = select(model, "all")
    by_path: dict[str, list] = {}
    for s in sites:
        by_path.setdefault(s.hook_path, []).append(s)
    target = config.target_modules
    matched = [p for p in by_path if (re.fullmatch(target, p) if isinstance(target, str)
                                      else any(p == t or p.endswith("." + t) for t in target))]
    if not matched:
        raise ArchitectureError(f"LoraConfig targets {target!r} match no projection of "
                                f"{type(model).__name__}; projections look like {_preview(list(by_path)[:3])}")
    per_module: dict[str, int] = {}
    detail = {}
    for path in matched:
        group = by_path[path]
        out = sum(s.shape[0] for s in group) if group[0].rows else group[0].shape[0]
        n = config.r * (out + group[0].shape[1])
        key = "+".join(s.module for s in group)
        per_module[key] = per_module.get(key, 0) + n
        detail[path] = n
    return ParamCount("lora", per_module, sum(per_module.values()), _numel(model), config.r, len(matched), detail)


def ratio_table(arch: Any, r: int = 16) -> list[tuple[str, int, float]]:
    """(module set, LoRA params, ratio to all-seven) for gate-only, every single module and pair."""
    allp = count_trainable(arch, "all", r=r).total
    sets = [("gate",)] + [(m,) for m in CANONICAL if m != "gate"] + list(combinations(CANONICAL, 2))
    rows = []
    for mods in sets:
        n = count_trainable(arch, list(mods), r=r).total
        rows.append(("+".join(mods), n, n / allp))
    return [("all", allp, 1.0)] + rows
