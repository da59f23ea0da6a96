"""The batch every witness takes: a tokenizer output, checked once, the same way."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..errors import ConfigError

REQUIRED = ("input_ids", "attention_mask")


def check_batch(batch: Any) -> None:
    """Raise :class:`ConfigError` unless ``batch`` is a tokenizer output: 2-D ``input_ids`` and
    ``attention_mask`` of one non-empty shape, no row all padding."""
    if not isinstance(batch, Mapping):
        raise ConfigError(f"batch must be a tokenizer output (a mapping with {', '.join(REQUIRED)}), "
                          f"got {type(batch).__name__}")
    missing = [k for k in REQUIRED if k not in batch]
    if missing:
        raise ConfigError(f"batch lacks {', '.join(missing)}; it has {', '.join(map(str, batch)) or 'no keys'} "
                          f"(pass a tokenizer output with return_tensors='pt', padding=True)")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for name, value in (("input_ids", ids), ("attention_mask", mask)):
        if not isinstance(value, torch.Tensor) or value.dim() != 2:
            raise ConfigError(f"batch[{name!r}] must be a 2-D tensor (batch, tokens), got "
                              f"{getattr(value, 'shape', type(value).__name__)}")
    if ids.shape != mask.shape or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ConfigError(f"input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} must have "
                          f"the same, non-empty shape")
    empty = (mask == 0).all(-1).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(f"rows {empty[:6]} of the batch are all padding (attention_mask 0 everywhere)")
