"""LoRA adapters as sources: peft adapter folders and AffectGPT-style ``.pth`` checkpoints.

ΔW = s · B @ A with s = α / r (or α / √r for rsLoRA); ``rank_pattern`` / ``alpha_pattern`` are
honoured per module, and ``fan_in_fan_out`` transposes ΔW where the stored orientation needs it.
"""
from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch

from ..errors import SourceError, UnsafeFileError, _preview
from ..sites import Site
from .base import KeyIndex, LoraFactors, Source, _check_finite

LORA_FACTOR_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_UNSUPPORTED = ("lora_magnitude_vector", "lora_embedding_A", "lora_bias")


def _pattern_value(patterns: Mapping[str, float], module_key: str, default: float) -> float:
    """peft's rule: a pattern matches a module name by regex on its suffix."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module_key):
            return value
    return default


class LoraSource(Source):
    """LoRA factors from a state dict; the donor at a site is the current weight plus s·B@A."""

    is_delta = True

    def __init__(self, state: Mapping[str, torch.Tensor], *, alpha: float | None, rank: int | None,
                 rslora: bool = False, fan_in_fan_out: bool = False,
                 rank_pattern: Mapping[str, int] | None = None,
                 alpha_pattern: Mapping[str, float] | None = None, origin: str = "LoRA state dict",
                 adapter_name: str | None = None):
        self.origin = origin
        unsupported = [k for k in state if any(u in k for u in _UNSUPPORTED)]
        if unsupported:
            raise SourceError(f"{origin}: DoRA / embedding / bias LoRA tensors are not supported "
                              f"({_preview(unsupported)})")
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        adapters = set()
        for key, tensor in state.items():
            match = LORA_FACTOR_KEY.match(key)
            if match:
                adapters.add(match["adapter"])
                if adapter_name is None or match["adapter"] in (None, adapter_name):
                    pairs.setdefault(match["module"], {})[match["which"]] = tensor
        if len(adapters) > 1 and adapter_name is None:
            raise SourceError(f"{origin} holds several adapters {sorted(map(str, adapters))}: "
                              f"pass adapter_name=")
        incomplete = [m for m, p in pairs.items() if len(p) != 2]
        if incomplete:
            raise SourceError(f"{origin}: modules with only one of lora_A/lora_B: {_preview(incomplete)}")
        if not pairs:
            raise SourceError(f"{origin} holds no LoRA factors (keys like '*.lora_A.weight'); "
                              f"found {_preview(state)}")
        self._pairs = {m: _checked_pair(m, p["A"], p["B"], origin) for m, p in pairs.items()}
        self.alpha, self.rslora, self.fan_in_fan_out = alpha, rslora, fan_in_fan_out
        self.alpha_pattern = dict(alpha_pattern or {})
        if rank is not None:  # the configured rank (patterns applied) must be the factors' rank
            bad = [f"{m} (r={int(A.shape[0])}, config {_pattern_value(rank_pattern or {}, m, rank)})"
                   for m, (A, _) in self._pairs.items()
                   if int(A.shape[0]) != int(_pattern_value(rank_pattern or {}, m, rank))]
            if bad:
                raise SourceError(f"{origin}: LoRA factors whose rank differs from the adapter config: "
                                  f"{_preview(bad)}")
        self._scales = {m: self._scale(m) for m in self._pairs}
        self.index = KeyIndex((f"{m}.weight" for m in pairs), origin)

    @property
    def description(self) -> str:
        return self.origin

    def site_names(self) -> list[str]:
        return list(self._pairs)

    def _module_key(self, site: Site) -> str | None:
        key = self.index.find(site)
        return key[: -len(".weight")] if key else None

    def covers(self, site: Site) -> bool:
        return self._module_key(site) is not None

    def _scale(self, module_key: str) -> float:
        r = int(self._pairs[module_key][0].shape[0])
        alpha = _pattern_value(self.alpha_pattern, module_key, self.alpha if self.alpha is not None else r)
        scale = float(alpha) / (math.sqrt(r) if self.rslora else r)
        if not math.isfinite(scale):
            raise SourceError(f"{self.origin}: {module_key} has a non-finite LoRA scale ({alpha}/{r})")
        return scale

    def scale_of(self, module_key: str) -> float:
        """s = α / r (α / √r for rsLoRA) for one module, patterns applied."""
        return self._scales[module_key]

    def factors(self, site: Site) -> LoraFactors | None:
        key = self._module_key(site)
        if key is None:
            return None
        A, B = self._pairs[key]
        # peft resets fan_in_fan_out for nn.Linear; transpose only where the stored orientation is (in, out)
        out_in = (int(B.shape[0]), int(A.shape[1]))
        transpose = (self.fan_in_fan_out and site.rows is None and out_in != site.shape
                     and out_in[::-1] == site.shape)
        if site.rows is not None:
            B = B.narrow(0, site.rows[0], site.rows[1] - site.rows[0])
        return LoraFactors(A, B, self.scale_of(key), transpose)

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        factors = self.factors(site)
        if factors is None:
            raise SourceError(f"{self.origin} has no factors for {site.name}")
        return factors.dense(None if base is None else base.device)


def _checked_pair(module: str, A: torch.Tensor, B: torch.Tensor,
                  origin: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors as fp32 contiguous host tensors, checked once (ranks, finite) as the adapter opens."""
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
        raise SourceError(f"{origin}: {module} has lora_A {tuple(A.shape)} and lora_B "
                          f"{tuple(B.shape)}, whose ranks differ")
    A, B = (t.detach().to("cpu", torch.float32).contiguous() for t in (A, B))
    for name, t in (("lora_A", A), ("lora_B", B)):
        _check_finite(t, f"{origin}: {module}.{name}")
    return A, B


def _load_torch(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFileError(f"{path} holds objects that need arbitrary code to unpickle; refused "
                              f"(weights_only=True): {str(exc).splitlines()[0]}") from exc
    except FileNotFoundError as exc:
        raise SourceError(f"file not found: {path}") from exc
    except Exception as exc:
        raise SourceError(f"cannot read {path}: {exc} (corrupt or truncated?)") from exc


def open_peft_adapter(folder: str | Path) -> LoraSource:
    """A peft LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``)."""
    folder = Path(folder)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.exists():
        raise SourceError(f"{folder} is not a peft adapter folder (no adapter_config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise SourceError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if cfg.get("peft_type", "LORA").upper() != "LORA":
        raise SourceError(f"{folder}: peft_type {cfg.get('peft_type')!r} is not LORA")
    if cfg.get("use_dora"):
        raise SourceError(f"{folder}: DoRA adapters are not supported")
    st, binf = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if st.exists():
        from safetensors.torch import load_file
        try:
            state = load_file(str(st))
        except Exception as exc:
            raise SourceError(f"cannot read {st}: {exc} (corrupt or truncated?)") from exc
    elif binf.exists():
        state = _load_torch(binf)
    else:
        raise SourceError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")
    return LoraSource(state, alpha=cfg.get("lora_alpha"), rank=cfg.get("r"),
                      rslora=bool(cfg.get("use_rslora")), fan_in_fan_out=bool(cfg.get("fan_in_fan_out")),
                      rank_pattern=cfg.get("rank_pattern"), alpha_pattern=cfg.get("alpha_pattern"),
                      origin=f"peft adapter {folder}")


def open_pth(path: str | Path, *, alpha: float | None = None, rslora: bool = False,
             adapter_name: str | None = None) -> Source:
    """An AffectGPT-style ``.pth`` of trainable tensors (``torch.load(weights_only=True)``).

    A ``{"model": state_dict, ...}`` wrapper is unwrapped. Key prefixes such as
    ``llama_model.base_model.model.`` need no mapping: sites match keys by suffix. LoRA factors
    become a :class:`LoraSource`; ``alpha`` defaults to AffectGPT's α = 32 (so s = 32 / r).
    Plain weights become a state-dict source.
    """
    path = Path(path)
    obj = _load_torch(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SourceError(f"{path} does not hold a state dict of tensors")
    if any(LORA_FACTOR_KEY.match(k) for k in obj):
        return LoraSource(obj, alpha=32.0 if alpha is None else alpha, rank=None, rslora=rslora,
                          origin=f".pth adapter {path}", adapter_name=adapter_name)
    from .model import StateDictSource
    return StateDictSource(obj, origin=f".pth checkpoint {path}")
