"""Neurons: pooled activations, channel rankings and linear probes on canonical sites.

- :func:`pooled_activations` — each selected site's output, averaged over a prompt's tokens;
- :func:`rank_neurons` — MLP channels per site ordered by activation difference between two prompt
  sets, by ΔW row norm from a :class:`~affectlocus.diff.DiffTable`, or at random;
  ``ranking.top(k)`` is the ``{layer: [channels]}`` mapping :func:`~affectlocus.interventions.neuron_mask`
  takes;
- :func:`probe` — held-out accuracy of a logistic-regression probe on pooled activations, per layer.

Sites come from :func:`affectlocus.sites.select`, outputs from :func:`affectlocus.interventions.record`,
so fused weights (Phi-3's ``gate_up_proj``) give the canonical module's channels only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError, DataError, SiteError
from .interventions import record
from .models.loader import model_device
from .registry import intervene
from .sites import Site, select
from .sites.selection import LayerSpec, ModuleSpec

if TYPE_CHECKING:
    import pandas as pd

    from .diff import DiffTable

#: Prompts: token-id lists, a tokenizer output (``input_ids`` + ``attention_mask``), or texts (with a tokenizer).
Prompts = Union[Sequence[Sequence[int]], Sequence[str], Mapping[str, Any]]
RANK_BY = ("activation", "weight", "random")
MLP = ("gate", "up", "down")

__all__ = ["NeuronRanking", "ProbeResult", "RANK_BY", "pooled_activations", "probe", "rank_neurons"]


def _token_lists(prompts: Prompts, tokenizer=None) -> list[list[int]]:
    """Unpadded token-id lists from ids, a tokenizer output (pads dropped by its mask) or texts."""
    if isinstance(prompts, Mapping):
        if "input_ids" not in prompts:
            raise DataError(f"a prompt mapping needs 'input_ids' (and 'attention_mask'); got {sorted(prompts)}")
        ids, mask = prompts["input_ids"], prompts.get("attention_mask")
        ids = ids.tolist() if hasattr(ids, "tolist") else [list(r) for r in ids]
        mask = mask.tolist() if hasattr(mask, "tolist") else mask
        out = [list(r) for r in ids] if mask is None else \
            [[t for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]
    else:
        items = list(prompts)
        if items and isinstance(items[0], str):
            if tokenizer is None:
                raise DataError("prompts are texts: pass tokenizer=... (or token-id lists)")
            items = [tokenizer(t)["input_ids"] for t in items]
        out = [[int(t) for t in (p.tolist() if hasattr(p, "tolist") else p)] for p in items]
    if not out:
        raise DataError("no prompts given: pass at least one token-id list or text")
    empty = [i for i, p in enumerate(out) if not p]
    if empty:
        raise DataError(f"prompts {empty[:5]} have no tokens")
    return out


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> None:
    extra = {} if mask is None else {"attention_mask": mask}
    try:
        model(input_ids=ids, logits_to_keep=1, **extra)  # only the last position: the head is expensive
    except TypeError as exc:
        if "logits_to_keep" not in str(exc):
            raise
        model(input_ids=ids, **extra)


def pooled_activations(model: nn.Module, prompts: Prompts, *, modules: ModuleSpec = "gate",
                       layers: LayerSpec = None, batch_size: int = 8, tokenizer=None) -> dict[str, np.ndarray]:
    """Mean over each prompt's (non-pad) tokens of every selected site's output.

    Returns ``{site.name: array (n_prompts, channels)}`` (float32, prompt order kept), e.g.
    ``out["layers.3.gate"]``. Prompts run in length-sorted, right-padded batches of ``batch_size``
    (causal attention: pads never reach real tokens); ``batch_size=1`` runs them one at a time,
    unpadded, which is bit-for-bit reproducible. No gradients, on the model's device.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    ids = _token_lists(prompts, tokenizer)
    sites = select(model, modules, layers)
    device = model_device(model)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pooled: dict[str, list] = {s.name: [None] * len(ids) for s in sites}
    rec = record(modules=modules, layers=[s.layer for s in sites])
    with torch.no_grad(), intervene(model, rec):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            lengths = [len(ids[i]) for i in chunk]
            width = max(lengths)
            batch = torch.tensor([ids[i] + [0] * (width - len(ids[i])) for i in chunk], device=device)
            mask = None if min(lengths) == width else \
                (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long().to(device)
            rec.clear()
            _forward(model, batch, mask)
            for site in sites:  # per-prompt means on the device, one transfer per site and batch
                out = rec.outputs[site.name][0]
                means = torch.stack([out[row, :n].float().mean(0) for row, n in enumerate(lengths)]).cpu().numpy()
                for i, mean in zip(chunk, means):
                    pooled[site.name][i] = mean
    return {name: np.stack(rows) for name, rows in pooled.items()}


def _width(site: Site) -> int:
    """MLP channels of a site: rows of gate/up, columns (inputs) of down."""
    return site.shape[1] if site.module == "down" else site.shape[0]


@dataclass(frozen=True)
class NeuronRanking:
    """MLP channels per site, most important first (see :func:`rank_neurons`).

    ``order[site.name]`` holds channel indices; ``scores[site.name]`` the criterion per channel
    (|Δ mean activation| or ‖ΔW‖ row norm; ``None`` for a random ranking).
    """

    by: str
    sites: tuple[Site, ...]
    order: dict[str, np.ndarray]
    scores: dict[str, np.ndarray | None]

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.module for s in self.sites))

    def top(self, k: int, module: str | None = None) -> dict[int, list[int]]:
        """The ``k`` top channels per layer, ``{layer: [channels]}`` — what ``neuron_mask`` takes.

        ``module`` picks one module when the ranking covers several.
        """
        if module is None:
            if len(self.modules) > 1:
                raise ConfigError(f"this ranking covers {', '.join(self.modules)}: pass module=... to top()")
            module = self.modules[0]
        sites = [s for s in self.sites if s.module == module]
        if not sites:
            raise ConfigError(f"module {module!r} is not in this ranking; it has {', '.join(self.modules)}")
        width = min(_width(s) for s in sites)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= width:
            raise ConfigError(f"k must be an int within 0..{width} (the sites' channels), got {k!r}")
        return {s.layer: self.order[s.name][:int(k)].tolist() for s in sites}

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (layer, module, rank) with its channel and score."""
        import pandas as pd
        frames = [pd.DataFrame({"layer": s.layer, "module": s.module, "rank": np.arange(len(order)),
                                "channel": order,
                                "score": np.nan if self.scores[s.name] is None else self.scores[s.name][order]})
                  for s in self.sites for order in [self.order[s.name]]]
        return pd.concat(frames, ignore_index=True)


def rank_neurons(model: nn.Module, affective: Prompts | None = None, neutral: Prompts | None = None, *,
                 modules: ModuleSpec = "gate", layers: LayerSpec = None, by: str = "activation",
                 table: DiffTable | None = None, seed: int = 0, batch_size: int = 8,
                 tokenizer=None) -> NeuronRanking:
    """Rank each selected MLP site's channels.

    ``by="activation"``: by |mean pooled activation on ``affective`` − on ``neutral``| (gate/up);
    ``by="weight"``: by ``table.row_norms(layer, module)`` (a diff run with metrics including 'rows');
    ``by="random"``: a seeded permutation per site (one generator, sites in layer-major order).
    """
    if by not in RANK_BY:
        raise ConfigError(f"unknown ranking by={by!r}; available: {', '.join(RANK_BY)}")
    sites = select(model, modules, layers)
    allowed = ("gate", "up") if by == "activation" else MLP
    wrong = sorted({s.module for s in sites if s.module not in allowed})
    if wrong:
        why = " (down's neurons are its inputs: rank by gate or up)" if by == "activation" else ""
        raise SiteError(f"rank_neurons(by={by!r}) ranks MLP channels of {', '.join(allowed)}; got "
                        f"{', '.join(wrong)}{why}")
    scores: dict[str, np.ndarray | None]
    if by == "activation":
        if affective is None or neutral is None:
            raise DataError("rank_neurons(by='activation') needs both affective and neutral prompts")
        kw = dict(modules=modules, layers=[s.layer for s in sites], batch_size=batch_size, tokenizer=tokenizer)
        act_a, act_n = pooled_activations(model, affective, **kw), pooled_activations(model, neutral, **kw)
        scores = {s.name: np.abs(act_a[s.name].mean(0) - act_n[s.name].mean(0)) for s in sites}
    elif by == "weight":
        if table is None:
            raise ConfigError("rank_neurons(by='weight') needs table=<DiffTable with 'rows' metrics>")
        scores = {s.name: np.asarray(table.row_norms(s.layer, s.module)) for s in sites}
        bad = [s.name for s in sites if len(scores[s.name]) != _width(s)]
        if bad:
            raise DataError(f"the diff table's row norms do not fit the model at {bad[:4]}: "
                            f"was it computed on another architecture?")
    else:
        rng = np.random.default_rng(seed)
        order = {s.name: rng.permutation(_width(s)) for s in sites}
        return NeuronRanking(by, tuple(sites), order, dict.fromkeys(order))
    return NeuronRanking(by, tuple(sites), {n: np.argsort(-v) for n, v in scores.items()}, scores)


@dataclass(frozen=True)
class ProbeResult:
    """Held-out accuracy per layer of a logistic-regression probe, and the majority-class chance."""

    accuracy: dict[int, float]
    chance: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return {"accuracy": {str(k): v for k, v in self.accuracy.items()}, "chance": self.chance,
                "n_train": self.n_train, "n_test": self.n_test}


def probe(model: nn.Module, prompts: Prompts, labels: Sequence, *, modules: ModuleSpec = "gate",
          layers: LayerSpec = None, train: int | float = 0.5, C: float = 1.0, max_iter: int = 2000,
          batch_size: int = 8, tokenizer=None) -> ProbeResult:
    """Fit a logistic-regression probe (sklearn) on pooled activations, per layer.

    The first ``train`` prompts (an int, or a fraction of all) train it, the rest test it (no
    shuffling: order your data). With several modules a layer's features are their concatenation.
    """
    from sklearn.linear_model import LogisticRegression
    ids = _token_lists(prompts, tokenizer)
    y = np.asarray(list(labels))
    if len(y) != len(ids):
        raise DataError(f"{len(ids)} prompts but {len(y)} labels")
    if isinstance(train, (int, np.integer)) and not isinstance(train, bool):
        n = int(train)
    else:
        n = int(round(float(train) * len(y))) if isinstance(train, float) and 0 < train < 1 else 0
    if not 0 < n < len(y):
        raise ConfigError(f"train must be an int within 1..{len(y) - 1} or a fraction in (0, 1), got {train!r}")
    if len(np.unique(y[:n])) < 2:
        raise DataError(f"the {n} training labels hold one class only: a probe needs two or more")
    feats = pooled_activations(model, ids, modules=modules, layers=layers, batch_size=batch_size)
    by_layer: dict[int, list[np.ndarray]] = {}
    for s in select(model, modules, layers):
        by_layer.setdefault(s.layer, []).append(feats[s.name])
    accuracy = {}
    for layer, parts in by_layer.items():
        x = parts[0] if len(parts) == 1 else np.hstack(parts)
        clf = LogisticRegression(max_iter=max_iter, C=C).fit(x[:n], y[:n])
        accuracy[layer] = float(clf.score(x[n:], y[n:]))
    _, counts = np.unique(y[n:], return_counts=True)
    return ProbeResult(accuracy, float(counts.max() / len(y[n:])), int(n), int(len(y) - n))
