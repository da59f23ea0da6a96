"""``--device`` / ``--dtype`` / ``--device-map``: one definition shared by every CLI that loads a model.

``add_device_args(parser)`` adds the three options; ``device_kwargs(args)`` turns the parsed values
into :func:`~affectlocus.models.load_model` keyword arguments, checked at once (before any model is
read) with the same :class:`~affectlocus.errors.ModelLoadError` that ``load_model`` raises.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ModelLoadError

DEVICE_HELP = "cpu, cuda, cuda:1, mps (default: cpu; the model's device for adapters)"
DTYPE_HELP = "float32, bfloat16, float16 (default: the checkpoint's)"
DEVICE_MAP_HELP = ("accelerate device_map, e.g. auto (spreads a big model over GPUs/CPU; offloaded modules "
                   "refuse weight interventions)")
#: device_map strings accelerate understands besides a single device ("cpu", "cuda:0", …) or a JSON object.
DEVICE_MAP_NAMES = ("auto", "balanced", "balanced_low_0", "sequential")


def add_device_args(parser: argparse.ArgumentParser,
                    title: str = "where and how the model is loaded") -> argparse.ArgumentParser:
    """Add ``--device``, ``--dtype`` and ``--device-map`` (all default ``None``) to ``parser``, in an
    argument group named ``title``; returns ``parser``."""
    group = parser.add_argument_group(title)
    group.add_argument("--device", default=None, help=DEVICE_HELP)
    group.add_argument("--dtype", default=None, help=DTYPE_HELP)
    group.add_argument("--device-map", dest="device_map", default=None, metavar="MAP", help=DEVICE_MAP_HELP)
    return parser


def parse_device_map(value: Any) -> Any:
    """A ``--device-map`` value as ``from_pretrained`` takes it: a name (``auto``, ``balanced``,
    ``balanced_low_0``, ``sequential``), one device (``cpu``, ``cuda:1``) or a JSON object
    ``{"module.name": device, …}``. Anything else raises :class:`ModelLoadError`."""
    if value is None or isinstance(value, dict):
        return value
    text = str(value).strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            raise ModelLoadError(f"--device-map {text!r} is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise ModelLoadError(f"--device-map {text!r}: a JSON device map must be an object")
        return parsed
    if text.lower() in DEVICE_MAP_NAMES:
        return text.lower()
    import torch
    try:
        torch.device(text)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device_map {text!r}; use one of {', '.join(DEVICE_MAP_NAMES)}, a device "
                             f"('cpu', 'cuda:0') or a JSON object {{\"module\": device}}") from None
    return text


def device_kwargs(args: argparse.Namespace | Any = None, *, device: Any = None, dtype: Any = None,
                  device_map: Any = None) -> dict[str, Any]:
    """:func:`~affectlocus.models.load_model` keyword arguments from parsed ``args`` (or the keywords):
    only the options given, e.g. ``{"device": "cuda:1", "dtype": "bfloat16"}``; ``{}`` when none.

    Checked now, with load_model's own errors: an unknown dtype or device, a CUDA device on a machine
    without one, or ``--device`` together with ``--device-map`` raise :class:`ModelLoadError`.
    """
    from .loader import resolve_device, resolve_dtype
    if args is not None:
        device = getattr(args, "device", device)
        dtype = getattr(args, "dtype", dtype)
        device_map = getattr(args, "device_map", device_map)
    out: dict[str, Any] = {}
    if dtype is not None:
        resolve_dtype(dtype)
        out["dtype"] = dtype
    if device is not None:
        resolve_device(device)
        out["device"] = device
    if device_map is not None:
        if device is not None:
            raise ModelLoadError("give either --device or --device-map, not both (a device map places "
                                 "every module itself)")
        out["device_map"] = parse_device_map(device_map)
    return out


__all__ = ["DEVICE_HELP", "DEVICE_MAP_HELP", "DEVICE_MAP_NAMES", "DTYPE_HELP", "add_device_args",
           "device_kwargs", "parse_device_map"]
