"""Predictors: exact label scoring with a reused prefix KV cache, and batched greedy generation.

**Label scoring.** For each example the log-likelihood of every verbalised label continuation is
``sum_t log p(label_t | prefix, query, label_<t)`` (exact for multi-token labels; the mean per token
is reported too). One forward per batch scores all K labels at once: each row is
``[left-padded query | label_1 | … | label_K]`` with a custom 4-D attention mask (label k sees the
prefix, its own query and its own earlier tokens, never another label) and explicit position ids
(every label continues at ``len(prefix) + len(query)``). The shared prefix (instruction + few-shot
turns) is run **once** per scorer; its KV cache is expanded (a view, no copy) to each batch. Logits
are computed only at the positions that predict label tokens (``logits_to_keep`` as an index tensor).
:func:`reference_logprobs` is the slow, obviously-correct version (one unpadded sequence per example
and label, no cache) the tests compare against.

Models with sliding-window attention shorter than the scored sequence fall back to an exact plain
batched path (one right-padded row per label, the model's own masks).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import DataError
from ..models.loader import model_device
from ..tasks.prompts import encode


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _cache_kwarg(model: torch.nn.Module) -> str:
    """``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (older)."""
    params = inspect.signature(type(_unwrap(model)).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _new_cache(model: torch.nn.Module):
    from transformers import DynamicCache
    try:
        return DynamicCache(config=_unwrap(model).config)
    except Exception:  # configs this transformers version cannot type: plain full-attention layers
        return DynamicCache()


@dataclass
class LabelScores:
    """Per-example label log-likelihoods: ``logprobs[i, k]`` (sum over the label's tokens)."""

    logprobs: np.ndarray
    lengths: np.ndarray

    @property
    def normalised(self) -> np.ndarray:
        """Mean log-probability per label token."""
        return self.logprobs / self.lengths[None, :]

    @property
    def probs(self) -> np.ndarray:
        """Softmax of the summed log-likelihoods over the labels."""
        z = self.logprobs - self.logprobs.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    @property
    def pred(self) -> np.ndarray:
        return self.logprobs.argmax(axis=1)


class LabelScorer:
    """Scores K fixed label continuations after many queries that share one prefix.

    ``reuse_prefix=False`` runs the prefix inside every batch instead (same numbers, slower): the
    benchmark's "no prefix caching" arm. ``forward_calls`` counts model forwards. The prefix cache
    is computed on first use and kept: build a new scorer after changing the model.
    """

    def __init__(self, model: torch.nn.Module, prefix_ids: Sequence[int], label_ids: Sequence[Sequence[int]],
                 *, reuse_prefix: bool = True, pad_id: int = 0):
        self.model = model
        self.prefix = list(prefix_ids)
        self.labels = [list(x) for x in label_ids]
        if not self.labels or any(not x for x in self.labels):
            empty = [k for k, x in enumerate(self.labels) if not x]
            raise DataError(f"label scoring needs at least one label and at least one token id per label; "
                            f"got {len(self.labels)} labels" + (f", empty: {empty}" if empty else ""))
        self.reuse_prefix = reuse_prefix and len(self.prefix) > 0
        self.pad_id = pad_id
        self.device = model_device(model)
        self.dtype = next(model.parameters()).dtype
        self.forward_calls = 0
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._kw = _cache_kwarg(model)
        # layout of the label block: label k occupies [start_k, start_k + len_k) after the query
        lens = [len(x) for x in self.labels]
        self._starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(int)
        self._A = int(sum(lens))
        # positions whose logits are needed (relative to the label block; -1 = last query token) and
        # the (keep index, label, target token) triples they score
        keep, self._targets = [-1], []
        for k, ids in enumerate(self.labels):
            self._targets.append((0, k, ids[0]))
            for t in range(len(ids) - 1):
                keep.append(int(self._starts[k]) + t)
                self._targets.append((len(keep) - 1, k, ids[t + 1]))
        self._keep = np.array(keep)

    # -- prefix -------------------------------------------------------------------------------
    @torch.no_grad()
    def _prefix_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._prefix_kv is None:
            cache = _new_cache(self.model)
            ids = torch.tensor([self.prefix], device=self.device)
            self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self._kw: cache})
            self.forward_calls += 1
            self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefix_kv

    def _expanded_cache(self, batch: int):
        cache = _new_cache(self.model)
        for layer, (k, v) in zip(cache.layers, self._prefix_cache()):
            layer.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
        return cache

    def _fits_window(self, query_len: int) -> bool:
        """Whether the custom-mask path is exact: eager/SDPA attention and no sliding window cut."""
        cfg = getattr(_unwrap(self.model).config, "get_text_config", lambda: None)() or self.model.config
        if getattr(cfg, "_attn_implementation", None) not in (None, "eager", "sdpa"):
            return False  # flash / flex kernels take no arbitrary 4-D float mask
        window = getattr(cfg, "sliding_window", None)
        types = getattr(cfg, "layer_types", None) or []
        sliding = window is not None and (not types or "sliding_attention" in types) and \
            getattr(cfg, "use_sliding_window", True) is not False
        return not sliding or len(self.prefix) + query_len + self._A < int(window) - 1

    # -- scoring ------------------------------------------------------------------------------
    def score(self, query_ids: Sequence[Sequence[int]], batch_size: int = 16) -> LabelScores:
        """Label log-likelihoods for every query (batches in the given order)."""
        out = [self.score_batch(query_ids[i:i + batch_size]) for i in range(0, len(query_ids), batch_size)]
        logprobs = np.concatenate(out) if out else np.zeros((0, len(self.labels)))
        return LabelScores(logprobs, np.array([len(x) for x in self.labels], dtype=float))

    @torch.no_grad()
    def score_batch(self, query_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """``[B, K]`` summed label log-likelihoods for one batch of queries (one forward)."""
        queries = [list(q) for q in query_ids]
        if any(not q for q in queries):
            empty = [i for i, q in enumerate(queries) if not q]
            raise DataError(f"every query needs at least one token id; queries {empty} of this batch are empty")
        Q = max(len(q) for q in queries)
        if not self._fits_window(Q):
            return np.stack([self._score_plain(q) for q in queries])
        ids, pos, allowed = self._layout(queries, Q)
        Lp = len(self.prefix)
        kwargs = {}
        if self.reuse_prefix:
            kwargs[self._kw] = self._expanded_cache(len(queries))
            kwargs["use_cache"] = True
            mask = torch.cat([torch.ones(len(queries), Q + self._A, Lp, dtype=torch.bool), allowed], dim=2)
            keep = torch.from_numpy(self._keep + Q)
        else:
            B, T = len(queries), Q + self._A
            pre = torch.tensor(self.prefix).expand(B, Lp)
            ids = torch.cat([pre, ids], dim=1)
            pos = torch.cat([torch.arange(Lp).expand(B, Lp), pos], dim=1)
            top = torch.cat([torch.ones(Lp, Lp, dtype=torch.bool).tril(), torch.zeros(Lp, T, dtype=torch.bool)], 1)
            bottom = torch.cat([torch.ones(B, T, Lp, dtype=torch.bool), allowed], dim=2)
            mask = torch.cat([top.expand(B, Lp, Lp + T), bottom], dim=1)
            keep = torch.from_numpy(self._keep + Q + Lp)
            kwargs["use_cache"] = False
        minus = torch.finfo(self.dtype).min
        additive = torch.zeros(mask.shape, dtype=self.dtype).masked_fill_(~mask, minus)[:, None]
        logits = self.model(input_ids=ids.to(self.device), attention_mask=additive.to(self.device),
                            position_ids=pos.to(self.device), logits_to_keep=keep.to(self.device),
                            **kwargs).logits
        self.forward_calls += 1
        logp = torch.log_softmax(logits.float(), dim=-1)
        out = torch.zeros(len(queries), len(self.labels), dtype=torch.float64)
        for idx, k, tok in self._targets:
            out[:, k] += logp[:, idx, tok].double().cpu()
        return out.numpy()

    def _layout(self, queries: list[list[int]], Q: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, position ids and the boolean attention pattern over the non-prefix block."""
        B, A, Lp = len(queries), self._A, len(self.prefix)
        T = Q + A
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        pos = torch.full((B, T), Lp, dtype=torch.long)
        lens = torch.tensor([len(q) for q in queries])
        for i, q in enumerate(queries):
            ids[i, Q - len(q):Q] = torch.tensor(q)
            pos[i, Q - len(q):Q] = Lp + torch.arange(len(q))
        for k, lab in enumerate(self.labels):
            s = Q + int(self._starts[k])
            ids[:, s:s + len(lab)] = torch.tensor(lab)
            pos[:, s:s + len(lab)] = Lp + lens[:, None] + torch.arange(len(lab))[None, :]
        real = torch.arange(Q)[None, :] >= (Q - lens)[:, None]  # [B, Q] query key is not padding
        allowed = torch.zeros(B, T, T, dtype=torch.bool)
        allowed[:, :Q, :Q] = torch.ones(Q, Q, dtype=torch.bool).tril()[None] & real[:, None, :]
        allowed[:, torch.arange(Q), torch.arange(Q)] = True  # padding rows see themselves (no empty rows)
        allowed[:, Q:, :Q] = real[:, None, :]
        block = torch.zeros(A, A, dtype=torch.bool)
        for k, lab in enumerate(self.labels):
            s = int(self._starts[k])
            block[s:s + len(lab), s:s + len(lab)] = torch.ones(len(lab), len(lab), dtype=torch.bool).tril()
        allowed[:, Q:, Q:] = block[None]
        return ids, pos, allowed

    @torch.no_grad()
    def _score_plain(self, query: list[int]) -> np.ndarray:
        """Exact fallback: K right-padded full rows with a 2-D mask (the model builds its own masks)."""
        rows = [self.prefix + query + lab for lab in self.labels]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(rows), T), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            att[r, :len(row)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device)).logits
        self.forward_calls += 1
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()
        start = len(self.prefix) + len(query)
        return np.array([sum(float(logp[k, start - 1 + t, tok]) for t, tok in enumerate(lab))
                         for k, lab in enumerate(self.labels)])


@torch.no_grad()
def reference_logprobs(model: torch.nn.Module, prefix_ids: Sequence[int], query_ids: Sequence[Sequence[int]],
                       label_ids: Sequence[Sequence[int]]) -> np.ndarray:
    """Slow reference: one unpadded, uncached forward per (example, label); full logits."""
    device = model_device(model)
    out = np.zeros((len(query_ids), len(label_ids)))
    for i, q in enumerate(query_ids):
        for k, lab in enumerate(label_ids):
            seq = list(prefix_ids) + list(q) + list(lab)
            logp = torch.log_softmax(model(input_ids=torch.tensor([seq], device=device)).logits[0].float(), -1)
            start = len(prefix_ids) + len(q)
            out[i, k] = sum(float(logp[start - 1 + t, tok]) for t, tok in enumerate(lab))
    return out


@torch.no_grad()
def generate_answers(model: torch.nn.Module, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 32,
                     seed: int = 0) -> list[str]:
    """Greedy answers for one batch of full prompt strings (left-padded; decoded without specials)."""
    device = model_device(model)
    encoded = [encode(tokenizer, p, bos=not getattr(tokenizer, "chat_template", None)) for p in prompts]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    att = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        att[i, width - len(e):] = 1
    torch.manual_seed(seed)
    from transformers import GenerationConfig
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                              eos_token_id=_stop_ids(tokenizer))
    out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=config)
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out.cpu()]


def _stop_ids(tokenizer) -> list[int]:
    """EOS plus the chat template's end-of-turn token when it is a single token."""
    from ..tasks.prompts import has_chat_template, turn_end
    stops = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if has_chat_template(tokenizer):
        end = encode(tokenizer, turn_end(tokenizer))
        if len(end) == 1 and end[0] not in stops:
            stops.append(end[0])
    return stops


__all__ = ["LabelScorer", "LabelScores", "generate_answers", "reference_logprobs"]
