"""LoRA supervised fine-tuning on (prompt, answer) pairs for the study's tuned models.

Loss on answer tokens only; AdamW with linear warm-up and cosine decay; seeded; the adapter is saved
as a standard peft folder (loadable by peft and by :func:`affectlocus.open_source`). The LoRA targets
exactly the selected sites (a full-name regex, verified after wrapping).
"""
from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..tuning.lora import target_regex, verify_targets


def train_lora(model, tokenizer, pairs: Sequence[tuple[str, str]], out: str | Path, *, modules="all",
               layers=None, r: int = 8, alpha: float = 16.0, dropout: float = 0.05, steps: int = 24,
               batch_size: int = 8, lr: float = 1e-3, max_length: int = 96, seed: int = 0,
               warmup: float = 0.1, progress: Callable[[int, float], None] | None = None) -> dict:
    """Train a LoRA on ``modules``/``layers`` of ``model`` (left unchanged) and save it to ``out``."""
    import peft
    regex, names = target_regex(model, modules, layers)
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=regex,
                          task_type="CAUSAL_LM")
    wrapped = peft.get_peft_model(model, cfg)
    try:
        verify_targets(wrapped, model, modules, layers)
        trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
        data = [_encode(tokenizer, p, a, max_length) for p, a in pairs]
        order = random.Random(seed)
        opt = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        warm = max(1, int(warmup * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 *
                                                  (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
        wrapped.train()
        losses, t0, queue = [], time.perf_counter(), []
        for step in range(steps):
            if len(queue) < batch_size:
                idx = list(range(len(data)))
                order.shuffle(idx)
                queue += idx
            batch = [data[i] for i in queue[:batch_size]]
            del queue[:batch_size]
            ids, labels, mask = _pad(batch, tokenizer.pad_token_id)
            loss = wrapped(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in wrapped.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if progress:
                progress(step, losses[-1])
        wrapped.eval()
        out = Path(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
        wrapped.save_pretrained(str(tmp))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(tmp), str(out))
        return {"losses": losses, "trainable": trainable, "seconds": time.perf_counter() - t0,
                "modules": names}
    finally:
        wrapped.unload()  # removes the LoRA layers: the base model is as it was


def _encode(tokenizer, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    a = tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    p = p[-(max_length - len(a)):] if len(p) + len(a) > max_length else p
    return p + a, [-100] * len(p) + a


def _pad(batch, pad_id: int):
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids, labels, mask
