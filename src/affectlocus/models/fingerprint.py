"""Fingerprints of a model's current weights: the one function evaluation (cache keys, judge
descriptions) and tuning (resume checks of a base model) use to tell weights apart.

Two schemes, both fast and copy-free:

* ``"sampled"`` (default; evaluation caches): every parameter and buffer — its name, shape, dtype,
  float64 sum and ``samples`` values at fixed pseudo-random positions. Any weight-space
  intervention changes it.
* ``"ends"`` (tuning's base-model identity, kept bit-for-bit so existing run folders resume): the
  first 4096 values (as float32) of the first two and the last two parameters.

``skip`` leaves out parameters (and buffers) whose name contains it, e.g. ``"lora_"`` to fingerprint
the base model under a peft wrapper.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..errors import ConfigError

SCHEMES = ("sampled", "ends")


def _sampled(tensors: list[tuple[str, torch.Tensor]], h, samples: int) -> None:
    for name, t in tensors:
        flat = t.detach().reshape(-1)
        n = flat.numel()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        if n == 0:
            continue
        idx = (torch.arange(samples, dtype=torch.int64) * 2654435761 + 7) % n
        h.update(np.float64(flat.sum(dtype=torch.float64).item()).tobytes())
        h.update(flat[idx.to(flat.device)].double().cpu().numpy().tobytes())


def _ends(params: list[tuple[str, torch.Tensor]], h) -> None:
    for _, p in (params[:2] + params[-2:]):
        flat = p.detach().reshape(-1)[:4096].to("cpu", torch.float32)
        h.update(flat.numpy().tobytes())


def model_fingerprint(model: torch.nn.Module, samples: int = 64, *, scheme: str = "sampled",
                      skip: str | None = None) -> str:
    """A hex checksum of ``model``'s current weights (see the module docstring for the schemes).

    ``"sampled"`` gives 20 hex digits and starts from the model's class name; ``"ends"`` gives 16
    and ignores ``samples``, buffers and the class name (tuning keeps those in its own signature).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown fingerprint scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    keep = (lambda name: skip not in name) if skip else (lambda name: True)  # noqa: E731
    params = [(n, p) for n, p in model.named_parameters() if keep(n)]
    with torch.no_grad():
        if scheme == "ends":
            h = hashlib.sha256()
            _ends(params, h)
            return h.hexdigest()[:16]
        h = hashlib.sha256(type(model).__name__.encode())
        _sampled(params + [(n, b) for n, b in model.named_buffers() if keep(n)], h, samples)
    return h.hexdigest()[:20]


__all__ = ["SCHEMES", "model_fingerprint"]
