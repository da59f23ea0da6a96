"""The study's LoRA runs: a thin layer over :func:`affectlocus.tuning.train`.

The data is already tokenized in the evaluator's layout (:mod:`.data`), so no templating happens
here. The run folder is a normal tuning run (peft adapter + ``run.json`` + ``log.jsonl``): an
interrupted run resumes from its last checkpoint, and the caller's model is given back without LoRA
layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..tuning import train
from ..tuning.data import SFTDataset


def train_lora(model, tokenizer, data: SFTDataset, out: str | Path, *, modules="all", layers=None, r: int = 8,
               alpha: float = 16.0, dropout: float = 0.05, steps: int = 24, batch_size: int = 8,
               lr: float = 1e-3, max_length: int = 96, seed: int = 0, warmup: float = 0.1,
               bf16: bool | None = None, save_every: int = 10,
               progress: Callable[[int, float], None] | None = None) -> dict:
    """Train a LoRA on ``modules``/``layers`` of ``model`` (left unchanged) into the folder ``out``.

    Returns ``{"losses", "trainable", "seconds", "modules"}`` (``modules``: the trained site names).
    """
    res = train(model, tokenizer, data, out, method="lora", modules=modules, layers=layers, r=r,
                alpha=alpha, dropout=dropout, steps=steps, batch_size=batch_size, lr=lr, max_length=max_length,
                seed=seed, warmup=warmup, bf16=bf16, save_every=save_every, group_by_length=True, progress=False,
                callback=(lambda step, loss: progress(step - 1, loss)) if progress else None)
    res.restore()
    return {"losses": res.losses, "trainable": res.trainable, "seconds": res.seconds, "modules": res.sites}
