"""Activation mediation: how much of a fine-tune's effect passes through each site.

For each selected site, on the same inputs, both directions of activation patching:

- **sufficiency** — the base run with the site's *tuned* output patched in: how much of the
  tuned behaviour does that one output restore? ``1`` = all of it, ``0`` = none;
- **necessity** — the tuned run with the site's *base* output patched in: how much of the
  tuned behaviour does losing it undo?

The tuned run is the base model under :class:`~affectlocus.interventions.weight.Graft` of the
tuned source (no second model is loaded; only projection weights differ — norms, embeddings and
the LM head are the base's). Base and tuned outputs are recorded once each (one forward apiece),
then there is one patched forward per site and direction; everything goes through registry
contexts, so the model is bit-identical afterwards with no hook of ours left, even on errors.

Logits are read at each row's last non-pad token (from ``attention_mask``; left or right padding).
To avoid the full ``(batch, tokens, vocab)`` logits, a forward pre-hook on the output embeddings
gathers the hidden states at those positions before the LM head runs, so the model's own head
(and any post-processing, e.g. Gemma-2's logit soft-capping) still applies; if a model has no
output embeddings module, or hands it something other than ``(batch, tokens, hidden)``, the full
logits are computed and gathered instead. ``position_ids`` are derived from the mask (as
``generate`` does) unless the batch has them, so a left-padded row sees an unpadded row's positions.

Memory: both recordings stay on the model's device — one ``(batch, tokens, width)`` tensor per
selected site and run; on big models select fewer ``modules``/``layers`` or pass a smaller batch.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Union

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import ConfigError, SourceError
from ..interventions.activation import Record
from ..interventions.replay import Patch
from ..interventions.weight import Graft
from ..models.loader import model_device
from ..registry import intervene
from ..sites import Site, select
from ..sites.selection import LayerSpec, ModuleSpec
from ._batch import check_batch
from .table import WitnessTable, site_rows

#: ``"kl"``, ``{"right": ids[, "wrong": ids]}``, or ``callable(last_logits[B, V]) -> scores[B]``
Metric = Union[str, Mapping[str, Any], Callable[[torch.Tensor], torch.Tensor], None]
_TINY = 1e-12  # |total| at or below this: no effect to explain
_NO_EFFECT = "no effect to explain: the tuned model's outputs equal the base's (all values set to 0)"


class _TunedGraft(Graft):
    """Graft of every site the source covers (a weight source may hold only the changed ones)."""

    def resolved(self, model: nn.Module) -> list:
        return [r for r in super().resolved(model) if self.source.covers(r.site)]

    def prepare(self, model: nn.Module, sites: list[Site]) -> None:
        if not any(self.source.covers(s) for s in sites):
            raise SourceError(f"{self.source.description} holds nothing for any projection of the model; "
                              f"it has {', '.join(map(str, self.source.site_names()[:6])) or 'no keys'}")


def _check_batch(batch: Any) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` (and ``position_ids`` if given), validated."""
    check_batch(batch)
    out = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if batch.get("position_ids") is not None:
        out["position_ids"] = batch["position_ids"]
    return out


def _last_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-pad token (right or left padding)."""
    flipped = (mask != 0).long().flip(-1).argmax(-1)
    return mask.shape[-1] - 1 - flipped


def _last_logits(model: nn.Module, inputs: dict[str, torch.Tensor], last: torch.Tensor) -> torch.Tensor:
    """Logits ``(batch, vocab)`` at ``last`` (see the module docstring for how)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    rows = torch.arange(last.shape[0], device=last.device)
    gathered = []

    def pre_hook(module, args):
        hidden = args[0] if args else None
        if isinstance(hidden, torch.Tensor) and hidden.dim() == 3 and \
                tuple(hidden.shape[:2]) == tuple(inputs["input_ids"].shape):
            gathered.append(True)
            return (hidden[rows, last].unsqueeze(1), *args[1:])
        return None

    handle = head.register_forward_pre_hook(pre_hook) if isinstance(head, nn.Module) else None
    try:
        logits = model(**inputs, use_cache=False).logits
    finally:
        if handle is not None:
            handle.remove()
    return logits[:, -1] if gathered else logits[rows, last]


def _ids(value: Any, n: int, vocab: int, name: str, device: torch.device) -> torch.Tensor:
    """Label token ids, one per row: an int or ``n`` ints."""
    ids = torch.as_tensor(value, device=device).long().flatten()
    if ids.numel() == 1:
        ids = ids.expand(n)
    if ids.numel() != n:
        raise ConfigError(f"metric[{name!r}] needs one token id (or one per row, {n}); got {ids.numel()}")
    if bool(((ids < 0) | (ids >= vocab)).any()):
        raise ConfigError(f"metric[{name!r}] holds token ids outside the vocabulary (0..{vocab - 1})")
    return ids


def _metric(metric: Metric, n: int) -> tuple[str, Callable[[torch.Tensor], torch.Tensor] | None]:
    """(name, score function); ``None`` means KL."""
    if metric is None or metric == "kl":
        return "kl", None
    if isinstance(metric, str):
        raise ConfigError(f"unknown metric {metric!r}; use 'kl', a dict {{'right': ids, 'wrong': ids}} or a "
                          f"callable(last_logits[batch, vocab]) -> scores[batch]")
    if isinstance(metric, Mapping):
        unknown = set(metric) - {"right", "wrong"}
        if "right" not in metric or unknown:
            raise ConfigError(f"a label metric is {{'right': ids, 'wrong': ids (optional)}}; got keys "
                              f"{sorted(map(str, metric))}")

        def label_score(logits: torch.Tensor) -> torch.Tensor:
            logp = torch.log_softmax(logits.double(), -1)
            rows = torch.arange(logits.shape[0], device=logits.device)
            score = logp[rows, _ids(metric["right"], n, logits.shape[-1], "right", logits.device)]
            if metric.get("wrong") is not None:
                score = score - logp[rows, _ids(metric["wrong"], n, logits.shape[-1], "wrong", logits.device)]
            return score
        return ("logit_diff" if metric.get("wrong") is not None else "logprob"), label_score
    if callable(metric):
        return getattr(metric, "__name__", type(metric).__name__), metric
    raise ConfigError(f"metric must be 'kl', a label dict or a callable, got {type(metric).__name__}")


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    """Batch mean of KL(p ‖ q) in fp64."""
    logp, logq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return float((logp.exp() * (logp - logq)).sum(-1).mean())


def _score(fn: Callable[[torch.Tensor], torch.Tensor], logits: torch.Tensor, n: int, name: str) -> float:
    """Batch mean of ``fn(logits)`` (one score per row, or a scalar)."""
    value = fn(logits)
    if not isinstance(value, torch.Tensor) or value.numel() not in (1, n) or (value.dim() > 1 and value.numel() > 1):
        raise ConfigError(f"metric {name} must return a tensor of {n} per-row scores (or a scalar), got "
                          f"{getattr(value, 'shape', type(value).__name__)}")
    mean = float(value.double().mean())
    if not math.isfinite(mean):
        raise ConfigError(f"metric {name} returned a non-finite score ({mean})")
    return mean


def mediate(model: nn.Module, tuned, batch: Mapping[str, Any], *, modules: ModuleSpec = "all",
            layers: LayerSpec = None, metric: Metric = None, progress: bool = False) -> WitnessTable:
    """Per-site sufficiency and necessity of the fine-tune ``tuned`` on ``batch`` (kind ``"mediation"``).

    ``tuned`` is any source :func:`~affectlocus.sources.open_source` accepts (adapter folder,
    checkpoint, model, state dict, ``.pth``), applied to ``model`` (the base) as a graft.
    ``batch`` is a tokenizer output (``input_ids``, ``attention_mask``; padded either side).

    ``metric`` compares the next-token distributions at each row's last non-pad token:

    - ``None``/``"kl"``: with KL(a) = mean over rows of KL(p_tuned ‖ p_a),
      sufficiency = 1 − KL(base+site) / KL(base), necessity = KL(tuned−site) / KL(base);
    - a score — ``{"right": ids, "wrong": ids}`` (log p(right) − log p(wrong); without ``"wrong"``
      log p(right); ids an int or one per row) or ``callable(last_logits[B, V]) -> scores[B]`` —
      with S(a) = mean score: sufficiency = (S(base+site) − S(base)) / (S(tuned) − S(base)),
      necessity = (S(tuned) − S(tuned−site)) / (S(tuned) − S(base)).

    ``base+site`` is the base run with the site's tuned output patched in, ``tuned−site`` the tuned
    run with its base output. When tuned and base agree (|total| ≤ 1e-12) every value is 0 and
    :attr:`~WitnessTable.notes` says so. ``meta``: metric, total, n, modules, layers, tuned.
    """
    inputs = _check_batch(batch)
    sites = select(model, modules, layers)
    graft = _TunedGraft(tuned)
    device = model_device(model)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs.setdefault("position_ids", (inputs["attention_mask"].long().cumsum(-1) - 1).clamp_min(0))
    last, n = _last_positions(inputs["attention_mask"]), int(inputs["input_ids"].shape[0])
    name, score_fn = _metric(metric, n)
    training = [m for m in model.modules() if m.training]
    model.eval()
    try:
        with torch.no_grad():
            values, total = _run(model, graft, sites, inputs, last, name, score_fn, progress)
    finally:
        for m in training:
            m.training = True
    notes = [] if values else [_NO_EFFECT]
    if not values:
        values = {s.name: {"sufficiency": 0.0, "necessity": 0.0} for s in sites}
    meta = {"metric": name, "total": total, "n": n, "modules": list(dict.fromkeys(s.module for s in sites)),
            "layers": sorted({s.layer for s in sites}),
            "tuned": graft.source.description, "position": "last non-pad token"}
    return WitnessTable("mediation", site_rows(sites, values), ("sufficiency", "necessity"), meta, notes)


def _run(model: nn.Module, graft: Graft, sites: list[Site], inputs: dict[str, torch.Tensor], last: torch.Tensor,
         name: str, score_fn, progress: bool) -> tuple[dict[str, dict[str, float]], float]:
    """(values per site — empty when there is no effect to explain, total)."""
    names = [s.name for s in sites]
    spec = ([s.module for s in sites], sorted({s.layer for s in sites}))  # the same product as ``sites``
    base_rec, tuned_rec = Record(*spec, to_cpu=False), Record(*spec, to_cpu=False)
    n = int(last.shape[0])

    def measure(logits: torch.Tensor) -> float:
        """KL(p_tuned ‖ p) (KL metric) or the mean score."""
        return _kl(tuned_logits, logits) if score_fn is None else _score(score_fn, logits, n, name)

    def patched(site: Site, rec: Record) -> float:
        with intervene(model, Patch({site.name: rec.outputs[site.name][0]}, site.module, site.layer)):
            value = measure(_last_logits(model, inputs, last))
        bar.update()
        return value

    with intervene(model, base_rec):
        base_logits = _last_logits(model, inputs, last)
    with tqdm(total=2 * len(sites), desc="mediate", disable=not progress) as bar:
        with intervene(model, graft):
            with intervene(model, tuned_rec):
                tuned_logits = _last_logits(model, inputs, last)
            base_value, tuned_value = measure(base_logits), (0.0 if score_fn is None else measure(tuned_logits))
            total = base_value if score_fn is None else tuned_value - base_value
            if abs(total) <= _TINY:
                return {}, total
            # necessity: the tuned run with the site's base output
            lost = {k: patched(site, base_rec) for k, site in zip(names, sites)}
        # sufficiency: the base run with the site's tuned output
        gained = {k: patched(site, tuned_rec) for k, site in zip(names, sites)}
    if score_fn is None:
        return {k: {"sufficiency": 1.0 - gained[k] / total, "necessity": lost[k] / total} for k in names}, total
    return {k: {"sufficiency": (gained[k] - base_value) / total,
                "necessity": (tuned_value - lost[k]) / total} for k in names}, total
