"""Where training runs: the model stays where it is unless ``TrainConfig.device`` moves it, and the
Accelerator follows it (a CPU model is never moved to a GPU behind the caller's back). Under a
multi-process ``accelerate launch`` accelerate places each process's copy itself, as before."""
from __future__ import annotations

import os

import torch
import torch.nn as nn

from ..errors import TuningError
from ..models.loader import model_device, resolve_device


def launched() -> bool:
    """True under a multi-process launch (``accelerate launch``/``torchrun``: LOCAL_RANK or WORLD_SIZE > 1)."""
    return int(os.environ.get("LOCAL_RANK", -1)) != -1 or int(os.environ.get("WORLD_SIZE", 1)) > 1


def place(model: nn.Module, device: str | None) -> torch.device:
    """Move ``model`` to ``device`` (checked like :func:`~affectlocus.load_model` checks it) unless it
    is ``None``; return the device training runs on."""
    if device is None or launched():
        return model_device(model)
    target = resolve_device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if len({str(d) for d in (getattr(model, "hf_device_map", None) or {}).values()}) > 1:
        raise TuningError(f"the model was loaded with a device_map spreading it over "
                          f"{sorted({str(d) for d in model.hf_device_map.values()})}; leave device=None to "
                          f"train it where it is, or load it without device_map to move it to {device}")
    if model_device(model) != target:
        model.to(target)
    return target


def accelerator(device: torch.device | None = None):
    """The process's Accelerator, following the model's ``device`` (CPU model → ``cpu=True``: nothing is
    moved to a GPU behind the caller's back). Under a multi-process launch, or without a device, the
    Accelerator is made as before (``cpu`` only when no GPU exists) and places the model itself.

    accelerate's state is process-wide: its ``cpu`` flag counts only for the first Accelerator of a
    process (and refuses ``cpu=True`` once a GPU state exists), so single-process training does its
    own placement (see :func:`~affectlocus.tuning.trainer.train`) and ``cpu=True`` is only asked for while no state exists.
    Mixed precision is *not* set here either: accelerate keeps it in the same process-wide state,
    which refuses a second value, so a process that trained in fp32 could never train in bf16; the
    trainer applies bf16 autocast around the forward itself (no grad scaler is needed for bf16, so
    this is what accelerate would do)."""
    from accelerate import Accelerator
    from accelerate.state import PartialState
    if device is None or launched():
        return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    fresh = not PartialState._shared_state
    return Accelerator(cpu=device.type == "cpu" and fresh, mixed_precision="no")
