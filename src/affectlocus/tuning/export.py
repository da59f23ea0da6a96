"""Export a peft LoRA adapter restricted to some modules/layers (inheritance experiments, serving).

Adapter keys are mapped to sites the way every source maps them: the adapter opens as a
:class:`~affectlocus.sources.LoraSource` (its module keys and :class:`~affectlocus.sources.KeyIndex`),
and with a model the sites come from :func:`affectlocus.sites.select`; without one, a key's
``<layer list>.<layer>.<path>`` suffix is read against the architecture table.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch.nn as nn

from ..errors import SiteError, SourceError, _preview
from ..sites import Site, find_decoder, parse_layers, parse_modules, select
from ..sites.selection import LayerSpec, ModuleSpec
from ..sources.lora import LORA_FACTOR_KEY
from .lora import projection_members

Placed = dict[str, tuple[int, frozenset[str]]]  # module key → (layer, canonical projections it holds)


def _open(adapter: str | Path):
    from ..sources import open_source
    src = open_source(adapter)
    if not hasattr(src, "factors") or not hasattr(src, "site_names"):
        raise SourceError(f"{adapter} is not a LoRA adapter")
    return src


def _fit(src, adapter: str | Path, model: nn.Module) -> list[Site]:
    """The sites of ``model`` that ``src`` covers; :class:`SourceError` unless every factor pair fits one."""
    sites = [s for s in select(model, "all") if src.covers(s)]
    if not sites:
        raise SourceError(f"{adapter} was made for a different base: none of its modules "
                          f"({_preview(src.site_names()[:3])}) is a projection of {type(model).__name__}")
    wrong = []
    for site in sites:
        f = src.factors(site)
        shape = (int(f.A.shape[1]), int(f.B.shape[0])) if f.transpose else (int(f.B.shape[0]), int(f.A.shape[1]))
        if shape != site.shape:
            wrong.append(f"{site.name}: adapter {shape} vs model {site.shape}")
    matched = {src.index.find(s) for s in sites}
    extra = [k for k in src.site_names() if f"{k}.weight" not in matched]
    if wrong or extra:
        raise SourceError(f"{adapter} does not fit {type(model).__name__} (made for a different base?): "
                          f"{_preview(wrong + [f'{k}: no such projection' for k in extra], 4)}")
    return sites


def check_adapter(adapter: str | Path, model: nn.Module) -> list[str]:
    """Raise :class:`SourceError` unless every LoRA factor pair in ``adapter`` fits a projection of
    ``model`` (catches adapters trained for a different base); return the covered site names."""
    return [s.name for s in _fit(_open(adapter), adapter, model)]


def _placed_by_sites(src, sites: list[Site]) -> Placed:
    """Module keys of ``src`` → their layer and projections, through its :class:`KeyIndex`."""
    held: dict[str, tuple[int, set[str]]] = {}
    for site in sites:
        key = src.index.find(site)
        if key is not None:
            held.setdefault(key[: -len(".weight")], (site.layer, set()))[1].add(site.module)
    return {key: (layer, frozenset(names)) for key, (layer, names) in held.items()}


def _placed_by_table(keys: list[str]) -> Placed:
    """Module keys → their layer and projections, by the ``<list>.<layer>.<path>`` suffix (as
    :class:`KeyIndex` matches it) read against the architecture table."""
    members, placed = projection_members(), {}
    for key in keys:
        parts = key.split(".")
        for i in range(1, len(parts) - 1):
            names = members.get(".".join(parts[i + 1:]))
            if parts[i].isdigit() and names:
                placed[key] = (int(parts[i]), names)
                break
    return placed


def export_adapter(adapter: str | Path, modules: ModuleSpec = "all", layers: LayerSpec = None, *,
                   out: str | Path, model: nn.Module | None = None) -> Path:
    """Write a peft adapter folder at ``out`` holding only the selected modules' LoRA factors.

    The new ``adapter_config.json`` targets exactly the kept module names, so peft and
    :func:`affectlocus.open_source` load it; every kept tensor is byte-identical to the original.
    With ``model``, the adapter is first checked to fit it (:func:`check_adapter`) and ``layers``
    count in the model's depth (else in the adapter's). A fused weight (Phi-3 ``qkv_proj``) is kept
    only with all of its projections.
    """
    from safetensors.torch import load_file, save_file
    adapter, out = Path(adapter), Path(out)
    cfg_path, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise SourceError(f"{adapter} is not a peft adapter folder (needs adapter_config.json and "
                          f"adapter_model.safetensors)")
    src = _open(adapter)
    if model is not None:
        sites = _fit(src, adapter, model)
        placed, n_layers = _placed_by_sites(src, sites), find_decoder(model).num_layers
    else:
        placed = _placed_by_table(src.site_names())
        n_layers = 1 + max((layer for layer, _ in placed.values()), default=-1)
    config = json.loads(cfg_path.read_text())
    state = load_file(str(weights))
    wanted = set(parse_modules(modules))
    keep_layers = set(parse_layers(layers, n_layers)) if n_layers else set()
    kept, partial = set(), []
    for key, (layer, names) in placed.items():
        chosen = names & wanted if layer in keep_layers else frozenset()
        if chosen and chosen != names:
            partial.append(f"{key} ({'+'.join(sorted(chosen))} of {'+'.join(sorted(names))})")
        elif chosen:
            kept.add(key)
    module_of = {k: m["module"] if (m := LORA_FACTOR_KEY.match(k)) else None for k in state}
    unknown = [k for k, m in module_of.items() if m not in placed]
    if unknown:
        raise SourceError(f"{adapter}: cannot assign these tensors to a projection of the architecture "
                          f"table: {_preview(unknown)}")
    if partial:
        raise SiteError(f"{adapter}: the LoRA on a fused weight cannot be split: {_preview(partial, 3)}; "
                        f"select all the projections it holds")
    if not kept:
        raise SourceError(f"{adapter} has no factors for modules={sorted(wanted)} layers={layers}; it holds "
                          f"{_preview(sorted({'+'.join(sorted(names)) for _, names in placed.values()}))}")
    kept_state = {k: t for k, t in state.items() if module_of[k] in kept}
    config["target_modules"] = "^(" + "|".join(
        re.escape(re.sub(r"^base_model\.model\.", "", m)) for m in sorted(kept)) + ")$"
    config["layers_to_transform"] = None
    config["layers_pattern"] = None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(kept_state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
