"""Sources: where donor weights come from — models, checkpoints, adapters, ``.pth`` files."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..errors import SourceError
from .base import KeyIndex, LoraFactors, Source
from .checkpoint import SafetensorsSource
from .lora import LoraSource, open_peft_adapter, open_pth
from .model import ModelSource, OriginalSource, StateDictSource


def open_source(x, **kwargs) -> Source:
    """Open a donor: an ``nn.Module``, a state dict, a safetensors file/folder/index, a peft adapter
    folder, or a ``.pth`` file. An existing :class:`Source` is returned unchanged.

    ``kwargs`` go to the specific opener (e.g. ``alpha=`` for a ``.pth`` adapter).
    """
    if isinstance(x, Source):
        return x
    if isinstance(x, nn.Module):
        base = getattr(x, "base_model", None)
        if hasattr(x, "peft_config") and base is not None:
            raise SourceError("a PeftModel as a source is ambiguous; merge it "
                              "(merge_and_unload()) or pass its saved adapter folder")
        return ModelSource(x, **kwargs)
    if isinstance(x, dict):
        return StateDictSource(x, **kwargs)
    if not isinstance(x, (str, Path)):
        raise SourceError(f"cannot open a source from {type(x).__name__}; expected a model, a state "
                          f"dict, or a path to a checkpoint, adapter folder or .pth file")
    path = Path(x).expanduser()
    if not path.exists():
        raise SourceError(f"source path not found: {path}")
    if path.is_dir() and (path / "adapter_config.json").exists():
        return open_peft_adapter(path)
    if path.suffix in (".pth", ".pt", ".bin"):
        return open_pth(path, **kwargs)
    if path.is_dir() or path.suffix in (".safetensors", ".json"):
        return SafetensorsSource(path)
    raise SourceError(f"unrecognised source {path}: expected a folder (HF checkpoint or peft "
                      f"adapter), a .safetensors / index .json file, or a .pth file")


__all__ = ["KeyIndex", "LoraFactors", "LoraSource", "ModelSource", "OriginalSource", "SafetensorsSource",
           "Source", "StateDictSource", "open_peft_adapter", "open_pth", "open_source"]
