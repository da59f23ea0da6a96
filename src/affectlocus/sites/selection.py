"""Selections: which projections in which layers. One selector feeds diff, interventions and peft."""
from __future__ import annotations

import operator

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence, Union

import torch.nn as nn

from ..errors import SiteError
from .architectures import CANONICAL, DecoderStack, find_decoder

ModuleSpec = Union[str, Iterable[str], None]
LayerSpec = Union[int, Iterable[int], range, slice, str, None]

GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("q", "k", "v", "o"),
    "attention": ("q", "k", "v", "o"),
    "mlp": ("gate", "up", "down"),
    "ffn": ("gate", "up", "down"),
    "all": CANONICAL,
}


def parse_modules(spec: ModuleSpec) -> tuple[str, ...]:
    """Canonical module names, in canonical order, from names, ``*_proj`` names or groups.

    ``None`` means all seven. A comma/plus-separated string ("q,k", "attn+gate") is accepted.
    """
    if spec is None:
        return CANONICAL
    items = [spec] if isinstance(spec, str) else list(spec)
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise SiteError(f"module names must be strings, got {item!r} ({type(item).__name__}); "
                            f"available: {', '.join(CANONICAL)}")
        for raw in item.replace("+", ",").split(","):
            word = raw.strip().lower()
            if not word:
                continue
            if word in GROUPS:
                names.update(GROUPS[word])
                continue
            base = word[:-5] if word.endswith("_proj") else word
            if base not in CANONICAL:
                raise SiteError(
                    f"unknown module {raw.strip()!r}; available: {', '.join(CANONICAL)} "
                    f"(also with _proj), groups: {', '.join(GROUPS)}")
            names.add(base)
    if not names:
        raise SiteError(f"module selection {spec!r} is empty; available: {', '.join(CANONICAL)}")
    return tuple(m for m in CANONICAL if m in names)


def _parse_layer_string(spec: str, n: int) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            bits = [int(b) if b.strip() else None for b in part.split(":")]
            out.extend(range(n)[slice(*bits)])
        elif "-" in part[1:]:
            lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def _layer_index(item) -> int:
    """An int or integer scalar (numpy, torch) as an int; bools and floats are refused."""
    try:
        if not isinstance(item, bool):
            return operator.index(item)
    except TypeError:
        pass
    raise SiteError(f"layer indices must be ints, got {item!r}")


def parse_layers(spec: LayerSpec, num_layers: int) -> tuple[int, ...]:
    """Layer indices (sorted, unique, non-negative) from an int, iterable, range, slice or string.

    Strings: ``"3"``, ``"0,5,7"``, ``"10:20"`` (a slice), ``"10-19"`` (inclusive). Negative indices
    count from the end. ``None`` means every layer.
    """
    if spec is None:
        return tuple(range(num_layers))
    if isinstance(spec, slice):
        raw: list[int] = list(range(num_layers)[spec])
    elif isinstance(spec, str):
        try:
            raw = _parse_layer_string(spec, num_layers)
        except ValueError as exc:
            raise SiteError(f"cannot parse layers {spec!r}: use '3', '0,5', '10:20' or '10-19'") from exc
    elif isinstance(spec, bool):
        raise SiteError(f"layers must be ints, got {spec!r}")
    elif isinstance(spec, int):
        raw = [spec]
    else:
        try:
            raw = list(spec)
        except TypeError:
            raise SiteError(f"layers must be ints, a list, range, slice or string; got {spec!r}") from None
    out = set()
    for item in raw:
        idx = _layer_index(item)
        if not -num_layers <= idx < num_layers:
            raise SiteError(f"layer {idx} out of range: the model has {num_layers} layers "
                            f"(0..{num_layers - 1}, or -{num_layers}..-1)")
        out.add(idx % num_layers)
    if not out:
        raise SiteError(f"layer selection {spec!r} is empty (the model has {num_layers} layers)")
    return tuple(sorted(out))


@dataclass(frozen=True)
class Site:
    """One projection in one layer: the unit every operation of this library works on.

    ``path`` is the dotted path (from the root model given to :func:`select`) of the module that
    holds the weight (for a peft-wrapped projection, its ``base_layer``); ``hook_path`` is the module
    whose output is the projection's output. ``rows`` is the row span inside a fused weight.
    """

    layer: int
    module: str
    path: str
    hook_path: str
    rel_path: str            # path inside the layer, e.g. "mlp.gate_proj"
    layers_path: str         # path of the decoder ModuleList, e.g. "model.layers"
    rows: tuple[int, int] | None
    shape: tuple[int, int]   # (out_features, in_features) of this site's (sliced) weight

    @property
    def name(self) -> str:
        """Short stable name, e.g. ``"layers.3.gate"``."""
        return f"layers.{self.layer}.{self.module}"

    @property
    def weight_key(self) -> str:
        """Checkpoint-style key suffix of the weight, e.g. ``"layers.3.mlp.gate_proj.weight"``."""
        return f"{self.layers_path.rsplit('.', 1)[-1]}.{self.layer}.{self.rel_path}.weight"

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass(frozen=True)
class Selection:
    """A model-independent choice of modules and layers; :meth:`resolve` turns it into sites."""

    modules: ModuleSpec = "all"
    layers: LayerSpec = None

    def __post_init__(self) -> None:
        parse_modules(self.modules)  # fail early on unknown names
        if isinstance(self.layers, Iterable) and not isinstance(self.layers, (str, range)):
            object.__setattr__(self, "layers", tuple(self.layers))

    def resolve(self, model: nn.Module, layers_path: str | None = None) -> list[Site]:
        return select(model, self.modules, self.layers, layers_path=layers_path)

    def describe(self) -> str:
        mods = ",".join(parse_modules(self.modules))
        return f"modules={mods} layers={'all' if self.layers is None else self.layers}"


def _linear_of(module: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The module holding the weight (peft wrappers keep it in ``base_layer``)."""
    while hasattr(module, "base_layer") and isinstance(getattr(module, "base_layer"), nn.Module):
        module = module.base_layer
        path = f"{path}.base_layer"
    if not isinstance(getattr(module, "weight", None), nn.Parameter) or module.weight.dim() != 2:
        raise SiteError(f"{path} ({type(module).__name__}) has no 2-D weight parameter")
    return module, path


def select(model: nn.Module, modules: ModuleSpec = "all", layers: LayerSpec = None, *,
           layers_path: str | None = None) -> list[Site]:
    """Resolve ``modules`` × ``layers`` to :class:`Site` objects on ``model`` (layer-major order)."""
    return [r.site for r in resolve(model, modules, layers, layers_path=layers_path)]


class Resolved(NamedTuple):
    """A site with the modules it names, found while selecting (no second path walk)."""

    site: Site
    hook_module: nn.Module    # whose output is the projection's output (``site.hook_path``)
    weight_module: nn.Module  # that holds the weight (``site.path``)


def resolve(model: nn.Module, modules: ModuleSpec = "all", layers: LayerSpec = None, *,
            layers_path: str | None = None) -> list[Resolved]:
    """:func:`select`, keeping the modules each site names (what interventions act on)."""
    stack = find_decoder(model, layers_path)
    return resolve_sites(stack, parse_modules(modules), parse_layers(layers, stack.num_layers))


def sites_of(stack: DecoderStack, modules: Sequence[str], layers: Sequence[int]) -> list[Site]:
    return [r.site for r in resolve_sites(stack, modules, layers)]


def resolve_sites(stack: DecoderStack, modules: Sequence[str], layers: Sequence[int]) -> list[Resolved]:
    out = []
    projections = [(name, stack.layout.projections[name]) for name in modules]
    for layer in layers:
        for name, proj in projections:
            hook_path = f"{stack.path}.{layer}.{proj.path}"
            holder = stack.layers[layer]
            for part in proj.path.split("."):
                holder = getattr(holder, part)
            linear, weight_path = _linear_of(holder, hook_path)
            weight = linear.weight
            rows = proj.rows(stack.config) if proj.rows is not None else None
            n_out = rows[1] - rows[0] if rows else weight.shape[0]
            if rows and rows[1] > weight.shape[0]:
                raise SiteError(f"fused rows {rows} exceed {hook_path}'s weight rows {weight.shape[0]}")
            out.append(Resolved(Site(layer, name, weight_path, hook_path, proj.path, stack.path, rows,
                                     (int(n_out), int(weight.shape[1]))), holder, linear))
    return out


def resolve_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at a dotted path (``model.get_submodule`` with a clear error)."""
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise SiteError(f"no module at {path!r} in {type(model).__name__}") from exc
