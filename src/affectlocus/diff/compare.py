"""`diff(base, tuned)`: stream two weight sources site by site and tabulate how ΔW is distributed."""
from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

from ..errors import ArchitectureError, NonFiniteError, ShapeMismatchError, SourceError, _preview
from ..sites import Site, find_decoder, select
from ..sites.selection import LayerSpec, ModuleSpec
from ..sources import LoraSource, SafetensorsSource, Source, StateDictSource, open_source
from ..sources.base import KeyIndex, layer_of_key
from .readers import Prefetch, WeightReader
from .stats import (CHUNK_ELEMENTS, DEFAULT_QUANTILES, DEFAULT_SAMPLE, HIST_EDGES, SiteAccumulator,
                    StatsConfig, factor_rows, parse_metrics)
from .table import DiffTable, SiteResult

_ARCH_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim")


def diff(base: Any, tuned: Any, modules: ModuleSpec = "all", layers: LayerSpec = None,
         metrics: str | Iterable[str] | None = None, *, progress: bool = True,
         sample: int | None = DEFAULT_SAMPLE, seed: int = 0, eps: float = 1e-8,
         quantiles: Iterable[float] = DEFAULT_QUANTILES, layers_path: str | None = None,
         chunk_elements: int = CHUNK_ELEMENTS, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None) -> DiffTable:
    """Compare ``tuned`` with ``base`` at every selected (layer, module) site.

    ``base``: weights (a model, a checkpoint folder / file / index, a state dict). ``tuned``: anything
    :func:`~affectlocus.open_source` accepts, including a peft adapter folder or an AffectGPT ``.pth``.
    ``metrics``: groups from ``l2`` (‖ΔW‖_F), ``relative`` (‖ΔW‖_F / (‖W_base‖_F + ε), with
    ``base_l2``), ``rms`` (‖ΔW‖_F / √numel), ``quantiles`` and ``hist`` (of the elementwise
    |ΔW| / (|W_base| + ε), with ``unchanged`` = fraction of ΔW == 0), ``rows`` (per-row ‖ΔW‖ of
    gate/up, per-column of down); ``"all"``; default: all but ``rows``.
    Distributions use every element of tensors with ≤ ``sample`` elements and a seeded uniform sample
    of ``sample`` elements otherwise (``sample=None``: always every element).
    One site at a time is read, in row chunks of ≈ ``chunk_elements``; LoRA norms come from the
    factors. Sites an adapter leaves untouched have ΔW = 0 (method ``untouched``, base not read).
    ``device``: where the arithmetic runs (chunks are moved there as they are read; default: where
    the base's weights are, the CPU for checkpoints). ``dtype``: cast both weights to it before
    differencing (e.g. ``bfloat16`` to see ΔW as a bf16 model holds it); statistics are fp32/fp64.
    """
    move = _mover(device, dtype)
    cfg = StatsConfig(parse_metrics(metrics), float(eps), None if sample is None else int(sample),
                      int(seed), tuple(float(q) for q in quantiles), HIST_EDGES.copy())
    with open_pair(base, tuned, modules, layers, layers_path) as pair:
        base_src, tuned_src, readers, configs = pair.base_src, pair.tuned_src, pair.readers, pair.configs
        stack, sites, notes = pair.stack, pair.sites, pair.notes
        plans = [_plan(site, tuned_src, cfg, chunk_elements) for site in sites]
        chunks = Prefetch(_read_chunks(plans, readers, move))
        try:
            from tqdm.auto import tqdm
            bar = tqdm(plans, desc="diff", unit="tensor", disable=not progress, leave=False)
            results = [_site(plan, chunks, tuned_src, cfg) for plan in bar]
        finally:
            chunks.close()
    from .._version import __version__
    meta = {"base": base_src.description, "tuned": tuned_src.description,
            "model_type": _field(configs[0][1], "model_type") if configs else None,
            "num_layers": stack.num_layers,
            "modules": sorted({s.module for s in sites}, key=[s.module for s in sites].index),
            "layers": sorted({s.layer for s in sites}), "metrics": sorted(cfg.metrics), "eps": cfg.eps,
            "sample": cfg.sample, "seed": cfg.seed, "quantiles": list(cfg.quantiles),
            "notes": notes, "version": __version__,
            "device": None if device is None else str(device), "dtype": None if dtype is None else str(dtype).removeprefix("torch.")}
    table = DiffTable(results, meta, cfg.edges if "hist" in cfg.metrics else None)
    table.meta["compared"] = table.describe()
    return table


@dataclass
class WeightPair:
    """A base and a tuned source opened side by side for streaming (see :func:`open_pair`)."""

    base_src: Source
    tuned_src: Source
    readers: list[WeightReader]  # base's; then tuned's unless it holds updates (ΔW)
    configs: list
    stack: Any                   # the skeleton's DecoderStack
    sites: list[Site]
    notes: list[str]


@contextmanager
def open_pair(base: Any, tuned: Any, modules: ModuleSpec = "all", layers: LayerSpec = None,
              layers_path: str | None = None) -> Iterator[WeightPair]:
    """Open ``base`` (weights) and ``tuned`` (any source) for site-by-site streaming: architectures
    checked, sites selected on a skeleton (no weights loaded), coverage checked; readers closed on exit."""
    base, tuned = _resolve_model_name(base), _resolve_model_name(tuned)
    base_src, tuned_src = open_source(base), open_source(tuned)
    if base_src.is_delta:
        raise SourceError(f"the base must hold weights, but {base_src.description} holds updates (ΔW); "
                          f"pass the base model or checkpoint first and the adapter second")
    readers = [WeightReader(base_src)] + ([] if tuned_src.is_delta else [WeightReader(tuned_src)])
    try:
        skeleton, configs = _skeleton(base, tuned, base_src, tuned_src, readers)
        _check_architectures(configs)
        stack = find_decoder(skeleton, layers_path)
        sites = select(skeleton, modules, layers, layers_path=layers_path)
        notes = _check_coverage(stack, skeleton, sites, base_src, tuned_src, readers, layers_path)
        for reader in readers:
            reader.validate(sites)
        yield WeightPair(base_src, tuned_src, readers, configs, stack, sites, notes)
    finally:
        for reader in readers:
            reader.close()


def _resolve_model_name(x: Any) -> Any:
    """The embedded alias (``"smollm2-135m"``) or a ``.gguf`` file → its safetensors cache folder."""
    if not isinstance(x, (str, Path)):
        return x
    from ..models import ALIASES, embedded_gguf, ensure_cache
    if str(x).lower() in ALIASES and not Path(x).exists():
        return ensure_cache(embedded_gguf())
    if Path(x).suffix == ".gguf" and Path(x).is_file():
        return ensure_cache(Path(x))
    return x


@dataclass
class _Plan:
    """What to read for one site, decided before streaming starts."""

    site: Site
    method: str                  # dense | factors | untouched | delta (a delta source without factors)
    read_base: bool
    read_tuned: bool
    step: int                    # rows per chunk


def _plan(site: Site, tuned_src: Source, cfg: StatsConfig, chunk_elements: int) -> _Plan:
    step = max(1, chunk_elements // max(1, site.shape[1]))
    if not tuned_src.is_delta:
        return _Plan(site, "dense", True, True, step)
    factors = tuned_src.factors(site)  # checked now, fetched again when its turn comes
    if factors is not None:
        _check_factors(site, factors, tuned_src)
        return _Plan(site, "factors", cfg.needs_base, False, step)
    if not tuned_src.covers(site):
        return _Plan(site, "untouched", False, False, step)
    return _Plan(site, "delta", True, False, step)


def _mover(device, dtype):
    """The chunk conversion for ``diff(device=, dtype=)`` (validated before anything is read)."""
    from ..models.loader import resolve_device, resolve_dtype
    device = None if device is None else resolve_device(device)
    dtype = None if dtype in (None, "auto") else resolve_dtype(dtype)
    if device is None and dtype is None:
        return lambda t: t
    return lambda t: None if t is None else t.to(device=device, dtype=dtype)


def _read_chunks(plans: list[_Plan], readers: list[WeightReader], move=lambda t: t) -> Iterator[tuple]:
    """(row0, row1, base rows, tuned rows) for every chunk of every site, then (None, where)."""
    for plan in plans:
        site = plan.site
        base_t = readers[0].open(site) if plan.read_base else None
        tuned_t = readers[1].open(site) if plan.read_tuned else None
        if base_t is not None or tuned_t is not None:
            for r0 in range(0, site.shape[0], plan.step):
                r1 = min(r0 + plan.step, site.shape[0])
                yield (r0, r1, move(base_t.read(r0, r1) if base_t else None),
                       move(tuned_t.read(r0, r1) if tuned_t else None))
        where = " and ".join(t.where for t in (base_t, tuned_t) if t is not None)
        yield None, where or f"{site.name} of {readers[0].source.description}"


def _site(plan: _Plan, chunks: Iterator[tuple], tuned_src: Source, cfg: StatsConfig) -> SiteResult:
    site = plan.site
    factors = tuned_src.factors(site) if plan.method == "factors" else None
    acc = SiteAccumulator(site.shape, site.layer, site.module, cfg)
    if plan.method == "factors":
        acc.set_factors(factors)
    elif plan.method == "untouched":
        acc.set_zero()
        acc.b2 = None
        if cfg.elementwise:
            acc.rel = [torch.zeros(site.numel if acc.idx is None else acc.idx.numel())]
    parts, where = [], site.name
    for item in chunks:
        if item[0] is None:
            where = item[1]
            break
        r0, r1, b, t = item
        if plan.method == "dense":
            acc.add_pair(r0, b, t)
        elif plan.method == "factors":
            exact = cfg.elementwise and acc.idx is None
            acc.add_base(r0, b, factor_rows(factors, r0, r1, b.device) if exact else None)
        else:
            parts.append(b)
    if plan.method == "delta":  # a delta source without factors: its dense ΔW, one tensor at a time
        full = torch.cat(parts)
        donor = (full.float() + tuned_src.delta(site, full).float())
        acc.add_pair(0, full, donor)
    values, hist, lines, used = acc.result()
    bad = [k for k in ("l2", "base_l2") if k in values and not math.isfinite(values[k])]
    if bad and not (bad == ["base_l2"] and plan.method == "untouched"):
        raise NonFiniteError(f"NaN/Inf in {where} ({site.name}): ‖·‖ of {', '.join(bad)} is not finite")
    method = "dense" if plan.method == "delta" else plan.method
    return SiteResult(site.layer, site.module, site.shape, method, values, used, hist, lines)


def _check_factors(site: Site, f, src: Source) -> None:
    if f.shape != tuple(site.shape):
        raise ShapeMismatchError(f"{src.description}: LoRA factors for {site.name} ({site.weight_key}) "
                                 f"give ΔW of shape {f.shape}, the base's weight is {site.shape} — "
                                 f"an adapter for another base model?")


def _config_folder(src: Source) -> Path | None:
    if isinstance(src, SafetensorsSource):
        folder = src.path if src.path.is_dir() else src.path.parent
        return folder if (folder / "config.json").exists() else None
    return None


def _skeleton(base: Any, tuned: Any, base_src: Source, tuned_src: Source,
              readers: list[WeightReader]) -> tuple[nn.Module, list[tuple[str, object]]]:
    """A model to resolve sites on (the given one, or a weightless one) and the configs to compare.

    Checkpoints get a skeleton mirroring the base's keys (cheap: no modeling code is imported); the
    model class is built on ``meta`` from config.json only where keys are not enough (fused Phi-3
    weights, or fewer layers in the keys than the config declares — then missing tensors get named).
    """
    configs: list[tuple[str, object]] = []
    for obj, src in ((base, base_src), (tuned, tuned_src)):
        if isinstance(obj, nn.Module) and getattr(obj, "config", None) is not None:
            configs.append((src.description, obj.config))
        elif (folder := _config_folder(src)) is not None:
            path = folder / "config.json"
            try:
                configs.append((str(path), json.loads(path.read_text())))
            except ValueError as exc:
                raise ArchitectureError(f"{path} is not valid JSON: {exc}") from exc
    for obj in (base, tuned):
        if isinstance(obj, nn.Module):
            return obj, configs
    if not configs:
        return _skeleton_from_keys(base_src, readers[0]), configs
    where, config = configs[0]
    try:
        skeleton = _skeleton_from_keys(base_src, readers[0])
        stack = find_decoder(skeleton)
        if not stack.layout.fused and stack.num_layers == _field(config, "num_hidden_layers"):
            return skeleton, configs
    except ArchitectureError:
        pass
    from transformers import AutoConfig, AutoModelForCausalLM
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(Path(where).parent)), configs
    except Exception as exc:  # noqa: BLE001 - surfaced with the file named
        raise ArchitectureError(f"cannot build a {_field(config, 'model_type')} skeleton from {where}: "
                                f"{exc}") from exc


def _field(config: object, name: str):
    """A field of a config object or config.json dict (its text config for multimodal models)."""
    if isinstance(config, dict):
        text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
        return text.get(name, config.get(name))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, name, getattr(config, name, None))


def _skeleton_from_keys(src: Source, reader: WeightReader) -> nn.Module:
    """A weightless module tree mirroring a checkpoint's 2-D weight keys (no config.json needed)."""
    if isinstance(src, SafetensorsSource):
        shapes = reader.shapes()
    elif isinstance(src, StateDictSource):
        shapes = {k: tuple(v.shape) for k, v in src.state.items()}
    else:
        raise ArchitectureError(f"cannot tell the architecture of {src.description}: no config.json "
                                f"beside it; pass the base as a model or a folder with config.json")
    root = nn.Module()
    for key, shape in shapes.items():
        if not key.endswith(".weight") or len(shape) != 2 or ".layers." not in f".{key}":
            continue
        parent = root
        *path, leaf, _ = key.split(".")
        for part in path:
            child = parent._modules.get(part)
            if child is None:
                child = nn.ModuleList() if part == "layers" else nn.Module()
                if isinstance(parent, nn.ModuleList):
                    while len(parent) <= int(part):
                        parent.append(nn.Module())
                    child = parent[int(part)]
                else:
                    parent.add_module(part, child)
            parent = child
        parent.add_module(leaf, nn.Linear(shape[1], shape[0], bias=False, device="meta"))
    return root


def _check_architectures(configs: list[tuple[str, object]]) -> None:
    if len(configs) < 2:
        return
    (wa, a), (wb, b) = configs
    fa, fb = ({f: _field(c, f) for f in _ARCH_FIELDS} for c in (a, b))
    diffs = [f"{k} {fa[k]!r} vs {fb[k]!r}" for k in _ARCH_FIELDS
             if fa[k] is not None and fb[k] is not None and fa[k] != fb[k]]
    if diffs:
        raise ArchitectureError(f"base ({wa}) and tuned ({wb}) are different architectures: "
                                f"{'; '.join(diffs)}")


def _check_coverage(stack, skeleton: nn.Module, sites: list[Site], base_src: Source, tuned_src: Source,
                    readers: list[WeightReader], layers_path: str | None) -> list[str]:
    """Fail on tensors the other side lacks or has extra; return notes on what was not compared."""
    notes: list[str] = []
    n, layers_name = stack.num_layers, stack.path.rsplit(".", 1)[-1]
    for reader in readers[1:]:
        top = KeyIndex(reader.source.site_names(), reader.source.description).max_layer(layers_name)
        if top >= n:
            raise ArchitectureError(f"{reader.source.description} has layers up to {top}, the base has "
                                    f"{n} (0..{n - 1}): different architectures")
    if isinstance(tuned_src, LoraSource):
        every = select(skeleton, "all", None, layers_path=layers_path)
        known = {tuned_src.index.find(s) for s in every} - {None}
        extra = [k for k in tuned_src.site_names() if f"{k}.weight" not in known]
        beyond = [k for k in extra if (i := layer_of_key(k, layers_name)) is not None and i >= n]
        if beyond:
            raise SourceError(f"{tuned_src.description} updates layers the base lacks "
                              f"({_preview(beyond)}; base has {n} layers): an adapter for another base?")
        if extra:
            notes.append(f"adapter modules that are not projection sites, not compared: {_preview(extra)}")
        chosen = {tuned_src.index.find(s) for s in sites} - {None}
        outside = len(known - chosen)
        if outside:
            notes.append(f"the adapter also updates {outside} sites outside the selection")
        untouched = sum(1 for s in sites if not tuned_src.covers(s))
        if untouched:
            notes.append(f"{untouched} of {len(sites)} selected sites are untouched by the adapter (ΔW = 0)")
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return notes
