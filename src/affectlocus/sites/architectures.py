"""One architecture table: canonical projection names → module paths inside a decoder layer.

Every family we support stores its decoder layers in an ``nn.ModuleList``. A *layout* says where each
canonical projection (``q k v o gate up down``) lives inside one layer, and for fused projections
(Phi-3's ``qkv_proj`` / ``gate_up_proj``) which rows of the fused weight belong to it. The layer list is
found by structure (not by attribute name), so wrappers — a peft ``PeftModel``, a multimodal model that
holds its LLM in an attribute — work without configuration.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..errors import ArchitectureError, _preview

CANONICAL = ("q", "k", "v", "o", "gate", "up", "down")

RowSpan = Callable[[object], tuple[int, int]]  # config → (start, stop) rows of a fused weight


def _head_dim(cfg) -> int:
    hd = getattr(cfg, "head_dim", None)
    return int(hd) if hd else cfg.hidden_size // cfg.num_attention_heads


def _kv_heads(cfg) -> int:
    return int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def _q_rows(cfg) -> tuple[int, int]:
    return 0, cfg.num_attention_heads * _head_dim(cfg)


def _k_rows(cfg) -> tuple[int, int]:
    start = _q_rows(cfg)[1]
    return start, start + _kv_heads(cfg) * _head_dim(cfg)


def _v_rows(cfg) -> tuple[int, int]:
    start = _k_rows(cfg)[1]
    return start, start + _kv_heads(cfg) * _head_dim(cfg)


def _gate_rows(cfg) -> tuple[int, int]:
    return 0, cfg.intermediate_size


def _up_rows(cfg) -> tuple[int, int]:
    return cfg.intermediate_size, 2 * cfg.intermediate_size


@dataclass(frozen=True)
class ProjectionPath:
    """Where one canonical projection lives inside a decoder layer."""

    path: str                     # dotted path relative to the layer, e.g. "mlp.gate_proj"
    rows: RowSpan | None = None   # for fused weights: config → (start, stop) rows


@dataclass(frozen=True)
class Layout:
    """A family of decoder layers sharing one projection layout."""

    name: str
    projections: dict[str, ProjectionPath]

    @property
    def fused(self) -> bool:
        return any(p.rows is not None for p in self.projections.values())


_SEPARATE = {
    "q": ProjectionPath("self_attn.q_proj"),
    "k": ProjectionPath("self_attn.k_proj"),
    "v": ProjectionPath("self_attn.v_proj"),
    "o": ProjectionPath("self_attn.o_proj"),
    "gate": ProjectionPath("mlp.gate_proj"),
    "up": ProjectionPath("mlp.up_proj"),
    "down": ProjectionPath("mlp.down_proj"),
}

_FUSED = {
    "q": ProjectionPath("self_attn.qkv_proj", _q_rows),
    "k": ProjectionPath("self_attn.qkv_proj", _k_rows),
    "v": ProjectionPath("self_attn.qkv_proj", _v_rows),
    "o": ProjectionPath("self_attn.o_proj"),
    "gate": ProjectionPath("mlp.gate_up_proj", _gate_rows),
    "up": ProjectionPath("mlp.gate_up_proj", _up_rows),
    "down": ProjectionPath("mlp.down_proj"),
}

#: The architecture table. Order matters: the first layout whose paths all resolve wins.
LAYOUTS: tuple[Layout, ...] = (
    # llama, mistral, mixtral, qwen2/2.5/3, gemma 1-3, olmo, granite, smollm3, cohere, internlm2, …
    Layout("llama-style", _SEPARATE),
    Layout("phi3-fused", _FUSED),  # phi3, phimoe
)


def _resolve(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def layout_of_layer(layer: nn.Module) -> Layout | None:
    """The first layout whose every projection path resolves inside ``layer``."""
    for layout in LAYOUTS:
        if all(_resolve(layer, p.path) is not None for p in layout.projections.values()):
            return layout
    return None


@dataclass(frozen=True)
class DecoderStack:
    """The decoder layer list of a model, where it is, and the layout of its layers."""

    path: str                 # dotted path from the root model to the ModuleList
    layers: nn.ModuleList
    layout: Layout
    config: object

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _find_config(root: nn.Module, path: str):
    """The config nearest to the layer list: text configs of multimodal models live deeper."""
    parts = path.split(".")
    best = getattr(root, "config", None)
    module = root
    for part in parts:
        module = getattr(module, part)
        cfg = getattr(module, "config", None)
        if cfg is not None:
            best = cfg
    if best is not None and hasattr(best, "get_text_config"):
        best = best.get_text_config()
    return best


_FOUND: "weakref.WeakKeyDictionary[nn.Module, DecoderStack]" = weakref.WeakKeyDictionary()


def find_decoder(root: nn.Module, layers_path: str | None = None) -> DecoderStack:
    """Find the decoder layer list by structure (or at ``layers_path`` when given).

    Raises :class:`ArchitectureError` naming the candidates when none or several ModuleLists fit.
    The structural search walks every module once per model; later calls reuse its answer while
    the same layer list still sits at the same path with the same layout (checked each call).
    """
    if layers_path is None:
        found = _FOUND.get(root)
        if found is not None and _resolve(root, found.path) is found.layers and len(found.layers) \
                and layout_of_layer(found.layers[0]) is found.layout:
            return found
        stack = _search(root, None)
        _FOUND[root] = stack
        return stack
    return _search(root, layers_path)


def _search(root: nn.Module, layers_path: str | None) -> DecoderStack:
    if layers_path is not None:
        layers = _resolve(root, layers_path)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise ArchitectureError(f"layers_path={layers_path!r} is not a non-empty nn.ModuleList in "
                                    f"{type(root).__name__}")
        candidates = [(layers_path, layers)]
    else:
        candidates = [(n, m) for n, m in root.named_modules()
                      if isinstance(m, nn.ModuleList) and len(m) > 0]
    fits = []
    for name, layers in candidates:
        layout = layout_of_layer(layers[0])
        if layout is not None:
            fits.append((name, layers, layout))
    if not fits:
        lists = [f"{n} ({len(m)} × {type(m[0]).__name__})" for n, m in candidates]
        known = "; ".join(f"{lo.name}: {', '.join(p.path for p in lo.projections.values())}"
                          for lo in LAYOUTS)
        raise ArchitectureError(
            f"no decoder layer list with known projections in {type(root).__name__}. "
            f"ModuleLists found: {_preview(lists) or 'none'}. Known layouts: {known}")
    longest = max(len(f[1]) for f in fits)
    fits = [f for f in fits if len(f[1]) == longest]
    if len(fits) > 1:
        raise ArchitectureError(
            f"several decoder layer lists fit in {type(root).__name__}: "
            f"{_preview(f[0] for f in fits)}; pass layers_path= to choose one")
    name, layers, layout = fits[0]
    config = _find_config(root, name)
    if layout.fused and config is None:
        raise ArchitectureError(f"{layout.name} layers at {name} need a config to split fused weights")
    return DecoderStack(name, layers, layout, config)
