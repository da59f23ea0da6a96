"""Export a peft LoRA adapter restricted to some modules/layers (inheritance experiments, serving)."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch.nn as nn

from ..errors import SourceError, _preview
from ..sites import LAYOUTS, parse_layers, parse_modules, select
from ..sites.selection import LayerSpec, ModuleSpec

_KEY = re.compile(r"^(?P<module>.*\.(?P<layers>[A-Za-z_]+)\.(?P<layer>\d+)\.(?P<rel>[\w.]+?))"
                  r"\.lora_[AB](?:\.[^.]+)?\.weight$")


def _canonical(rel: str) -> str | None:
    """Canonical name of a projection path inside a layer (None for fused or unknown paths)."""
    for layout in LAYOUTS:
        for name, proj in layout.projections.items():
            if proj.path == rel and proj.rows is None:
                return name
    return None


def check_adapter(adapter: str | Path, model: nn.Module) -> list[str]:
    """Raise :class:`SourceError` unless every LoRA factor pair in ``adapter`` fits a projection of
    ``model`` (catches adapters trained for a different base); return the covered site names."""
    from ..sources import open_source
    src = open_source(adapter)
    if not hasattr(src, "factors") or not hasattr(src, "site_names"):
        raise SourceError(f"{adapter} is not a LoRA adapter")
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
    return [s.name for s in sites]


def export_adapter(adapter: str | Path, modules: ModuleSpec = "all", layers: LayerSpec = None, *,
                   out: str | Path, model: nn.Module | None = None) -> Path:
    """Write a peft adapter folder at ``out`` holding only the selected modules' LoRA factors.

    The new ``adapter_config.json`` targets exactly the kept module names, so peft and
    :func:`affectlocus.open_source` load it; every kept tensor is byte-identical to the original.
    With ``model``, the adapter is first checked to fit it (:func:`check_adapter`).
    """
    from safetensors.torch import load_file, save_file
    if model is not None:
        check_adapter(adapter, model)
    adapter, out = Path(adapter), Path(out)
    cfg_path, weights = adapter / "adapter_config.json", adapter / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise SourceError(f"{adapter} is not a peft adapter folder (needs adapter_config.json and "
                          f"adapter_model.safetensors)")
    config = json.loads(cfg_path.read_text())
    state = load_file(str(weights))
    wanted = set(parse_modules(modules))
    n_layers = 1 + max((int(m["layer"]) for k in state if (m := _KEY.match(k))), default=-1)
    keep_layers = set(parse_layers(layers, n_layers)) if n_layers else set()
    kept, kept_modules, unknown = {}, set(), []
    for key, tensor in state.items():
        match = _KEY.match(key)
        name = _canonical(match["rel"]) if match else None
        if name is None:
            unknown.append(key)
            continue
        if name in wanted and int(match["layer"]) in keep_layers:
            kept[key] = tensor
            kept_modules.add(re.sub(r"^base_model\.model\.", "", match["module"]))
    if unknown:
        raise SourceError(f"{adapter}: cannot assign these tensors to a single projection (fused or "
                          f"non-projection modules): {_preview(unknown)}")
    if not kept:
        raise SourceError(f"{adapter} has no factors for modules={sorted(wanted)} layers={layers}; it holds "
                          f"{_preview(sorted({_canonical(_KEY.match(k)['rel']) for k in state}))}")
    config["target_modules"] = "^(" + "|".join(re.escape(m) for m in sorted(kept_modules)) + ")$"
    config["layers_to_transform"] = None
    config["layers_pattern"] = None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(kept, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
