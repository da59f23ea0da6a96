"""Weight-path attribution: integrated gradients of a loss along the straight path base → tuned.

Every selected site moves together along ``W(α) = W + α·ΔW``, α ∈ [0, 1]; a site's attribution is
``⟨∫₀¹ ∇_W L(W(α)) dα, ΔW⟩``, the integral taken by the midpoint rule over ``steps`` points
(α = (i + ½)/steps). By completeness the attributions sum to ``L(tuned) − L(base)`` up to the
quadrature error, which is reported as ``meta["error"]`` (and :attr:`AttributionTable.error`).

Weights change only through the registry (:class:`~affectlocus.interventions.weight.Interpolate`
rebinds fresh parameters per step), so the model is bit-identical afterwards with no hook of ours
left, even when the loss raises; ``requires_grad`` flags and train/eval modes are restored too.

Memory: no gradient is stored across steps. At each step the gradients of the selected weights
(model dtype) are contracted with ΔW at once and only one fp32 scalar per site is kept. LoRA sources
contract through their factors, ``s·⟨Bᵀ G, A⟩`` (dense ΔW is never built); dense sources recompute
ΔW = ``source.delta(site, W)`` in fp32 one site at a time at each step (cheap for in-memory donors,
a re-read for checkpoints) rather than keeping a fp32 copy of every selected weight.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..interventions.weight import Interpolate
from ..models.loader import model_device
from ..registry import intervene
from ..sites import Site, parse_modules, select
from ..sites.selection import LayerSpec, ModuleSpec
from ..sources import Source, open_source
from ..sources.base import slice_rows
from ._batch import check_batch
from .table import WitnessTable, site_rows

LossFn = Callable[[nn.Module, Mapping[str, Any]], torch.Tensor]


class AttributionTable(WitnessTable):
    """A :class:`WitnessTable` of kind ``"attribution"`` with the completeness check at hand."""

    @property
    def total(self) -> float:
        """``L(tuned) − L(base)``, measured directly (two forwards)."""
        return float(self.meta.get("total", float("nan")))

    @property
    def error(self) -> float:
        """``|Σ attribution − total| / max(|total|, Σ|attribution|)`` (0 when both are 0)."""
        return float(self.meta.get("error", float("nan")))


def causal_lm_loss(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """Mean next-token cross-entropy over non-pad tokens (``labels`` if given, else ``input_ids``
    with padded positions set to −100)."""
    labels = batch.get("labels")
    if labels is None:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int ≥ 1 (midpoint-rule points on the path), got {steps!r}")
    return steps


def _scalar(value: Any, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ConfigError(f"loss {name!r} must return a scalar tensor, got "
                          f"{getattr(value, 'shape', type(value).__name__)}")
    return value.reshape(())


def _inner(source: Source, site: Site, grad: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """⟨grad, ΔW⟩ at ``site`` in fp32 (through the LoRA factors where the source has them)."""
    g = grad.float()
    factors = source.factors(site)
    if factors is not None:
        m1, m2 = factors._operands(g.device)  # ΔW = scale · m1 @ m2
        return (m1.T @ g).mul_(m2).sum() * factors.scale
    return (g * source.delta(site, base)).sum()


def attribute(model: nn.Module, tuned, batch: Mapping[str, Any], *, modules: ModuleSpec = "all",
              layers: LayerSpec = None, steps: int = 8, loss: LossFn | None = None,
              progress: bool = False) -> AttributionTable:
    """Integrated-gradients attribution of ``loss`` to each selected site's update ΔW.

    ``model`` is the base; ``tuned`` any donor :func:`~affectlocus.sources.open_source` accepts
    (adapter folder, checkpoint, model, state dict, ``.pth``). ``batch`` is a tokenizer output
    (``input_ids``, ``attention_mask``, optional ``labels``); ``loss(model, batch) -> scalar``
    defaults to the causal LM loss. Returns an :class:`AttributionTable` (one row per site, column
    ``attribution``; uncovered sites of an adapter get 0) whose ``meta`` holds ``total``
    (L(tuned) − L(base), measured), ``error`` (completeness), ``steps``, ``loss``, ``n``, ``tokens``,
    ``modules``, ``layers``, ``source``, ``loss_base`` and ``loss_tuned``.
    """
    from tqdm.auto import tqdm

    check_batch(batch)
    steps = _check_steps(steps)
    if loss is not None and not callable(loss):
        raise ConfigError(f"loss must be a callable(model, batch) -> scalar tensor, got {type(loss).__name__}")
    loss_fn: LossFn = loss if loss is not None else causal_lm_loss
    loss_name = "causal_lm" if loss is None else getattr(loss, "__name__", type(loss).__name__)
    source = open_source(tuned)
    opened = source is not tuned
    sites = select(model, modules, layers)
    device = model_device(model)
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    paths = list(dict.fromkeys(s.path for s in sites))
    holders = {p: model.get_submodule(p) for p in paths}
    originals = {p: holders[p]._parameters["weight"] for p in paths}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    sums = {s.name: torch.zeros((), dtype=torch.float32, device=device) for s in sites}
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        with torch.no_grad():
            loss_base = float(_scalar(loss_fn(model, batch), loss_name))
            with intervene(model, Interpolate(source, 1.0, modules, layers)):
                loss_tuned = float(_scalar(loss_fn(model, batch), loss_name))
        for i in tqdm(range(steps), disable=not progress, desc="attribution", unit="step"):
            alpha = (i + 0.5) / steps
            with intervene(model, Interpolate(source, alpha, modules, layers)):
                moved = [p for p in paths if holders[p]._parameters["weight"] is not originals[p]]
                params = [holders[p]._parameters["weight"] for p in moved]
                for param in params:
                    param.requires_grad_(True)
                with torch.enable_grad():
                    value = _scalar(loss_fn(model, batch), loss_name)
                    grads = (torch.autograd.grad(value, params, allow_unused=True)
                             if params and value.requires_grad else [None] * len(params))
                del value
                by_path = dict(zip(moved, grads))
                del grads
                with torch.no_grad():
                    for site in sites:
                        grad = by_path.get(site.path)
                        if grad is None or not source.covers(site):
                            continue  # ΔW = 0 here (uncovered) or the loss does not depend on it
                        base = slice_rows(site, originals[site.path].detach())
                        sums[site.name] += _inner(source, site, slice_rows(site, grad), base)
                del by_path
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
        if opened:
            source.close()

    values = {name: {"attribution": float(total) / steps} for name, total in sums.items()}
    summed = sum(v["attribution"] for v in values.values())
    spread = sum(abs(v["attribution"]) for v in values.values())
    total = loss_tuned - loss_base
    scale = max(abs(total), spread)
    error = abs(summed - total) / scale if scale > 0 else 0.0
    uncovered = [s.name for s in sites if not source.covers(s)]
    notes = []
    if total == 0.0 and spread == 0.0:
        notes.append("tuned = base on the selected sites: no effect to explain")
    if uncovered:
        notes.append(f"{len(uncovered)} selected site(s) have no update in the source (attribution 0)")
    if error > 0.05:
        notes.append(f"completeness error {error:.1%} > 5%: raise steps (now {steps})")
    mask = batch["attention_mask"]
    meta = {"total": total, "error": error, "steps": steps, "loss": loss_name, "n": int(mask.shape[0]),
            "tokens": int(mask.sum()), "modules": list(parse_modules(modules)),
            "layers": sorted({s.layer for s in sites}), "source": source.description,
            "loss_base": loss_base, "loss_tuned": loss_tuned, "sum": summed}
    return AttributionTable("attribution", site_rows(sites, values), ("attribution",), meta, notes)
