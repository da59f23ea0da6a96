"""The training loss: cross-entropy on answer tokens only, with the LM head only where it is needed."""
from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import Callable, ContextManager

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import IGNORE


def answer_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor],
                    autocast: Callable[[], ContextManager] = nullcontext) -> torch.Tensor:
    """Summed cross-entropy over answer tokens; the LM head runs only at positions that predict one.

    The head (a vocabulary-sized matmul) is ~20 % of a small model's forward; with the loss on a few
    answer tokens per example, computing it everywhere is waste. Positions are the union over the
    batch of (answer position - 1), passed as ``logits_to_keep``; the loss is identical.
    ``autocast`` wraps the forward only (e.g. bf16); the cross-entropy runs in fp32.
    """
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE).any(dim=0).nonzero().flatten()
    if keep.numel() == 0 or not _takes_logits_to_keep(model):
        with autocast():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logits, gold = out.logits[:, :-1].float(), targets
    else:
        with autocast():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                        logits_to_keep=keep)
        logits, gold = out.logits.float(), targets[:, keep]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), gold.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")


def _takes_logits_to_keep(model: nn.Module) -> bool:
    inner = getattr(model, "module", model)            # DDP wrapper
    get_base = getattr(inner, "get_base_model", None)  # PeftModel → the causal LM it wraps
    inner = get_base() if callable(get_base) else inner
    return "logits_to_keep" in inspect.signature(type(inner).forward).parameters
