"""Make exactly the selected sites trainable: LoRA layers on them, or their own weights (full FT).

Full fine-tuning freezes every parameter except the selected weights. A Phi-3 sub-selection of a fused
weight (``gate`` alone inside ``gate_up_proj``) is supported here by masking the gradient to the
selected rows (and exempting that weight from weight decay), so other rows stay bit-identical.
LoRA cannot target a row slice with stock peft; :func:`affectlocus.tuning.target_regex` refuses it.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..models.fingerprint import model_fingerprint
from ..sites import Site, select
from ..errors import TuningError
from .lora import target_regex, verify_targets


@dataclass
class Prepared:
    """A model made trainable on a selection, and how to undo it."""

    net: nn.Module                      # the model to train (a PeftModel for LoRA)
    method: str
    sites: list[Site]
    trainable: int                      # exact count (selected rows only for fused sub-selections)
    params: list[tuple[str, nn.Parameter]]
    no_decay: set[int] = field(default_factory=set)   # id()s of params exempt from weight decay
    _hooks: list[Any] = field(default_factory=list, repr=False)
    _requires_grad: dict[int, bool] = field(default_factory=dict, repr=False)
    _originals: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def release(self) -> None:
        """Full fine-tuning: remove gradient masks and give back the original ``requires_grad`` flags
        (the weights stay trained). LoRA: nothing (the wrapped model keeps its base frozen)."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self.method == "full":
            self._restore_flags(self.net)

    def _restore_flags(self, model: nn.Module) -> None:
        for p in model.parameters():
            if id(p) in self._requires_grad:
                p.requires_grad_(self._requires_grad[id(p)])

    def restore_base(self) -> nn.Module:
        """Undo the training on the base model: remove LoRA layers, or copy back the kept originals."""
        self.release()
        if self.method == "lora":
            base = self.net.unload() if hasattr(self.net, "unload") else self.net
            self._restore_flags(base)
            return base
        if self._originals is None:
            raise TuningError("full fine-tuning changed the weights in place and no originals were kept "
                              "(train(..., keep_base=True) keeps them)")
        named = dict(self.net.named_parameters())
        with torch.no_grad():
            for name, value in self._originals.items():
                named[name].copy_(value)
        return self.net


def prepare_lora(model: nn.Module, modules, layers, *, r: int, alpha: float, dropout: float,
                 rslora: bool, seed: int) -> Prepared:
    """Wrap ``model`` with peft LoRA on exactly the selected sites (verified)."""
    import peft
    sites = select(model, modules, layers)
    regex, _ = target_regex(model, modules, layers)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    cfg = peft.LoraConfig(r=int(r), lora_alpha=alpha, lora_dropout=dropout, use_rslora=rslora,
                          target_modules=regex, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft reads transformers 5's deprecated `is_gradient_checkpointing`; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        torch.manual_seed(seed)  # LoRA A initialisation depends only on the seed
        net = peft.get_peft_model(model, cfg)
    prep = Prepared(net, "lora", sites, 0, [], _requires_grad=flags)
    try:
        verify_targets(net, model, modules, layers)
    except Exception:
        prep.restore_base()
        raise
    prep.params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    prep.trainable = sum(p.numel() for _, p in prep.params)
    return prep


def prepare_full(model: nn.Module, modules, layers, *, keep_base: bool = False) -> Prepared:
    """Freeze everything except the selected weights (row-masked for fused sub-selections)."""
    sites = select(model, modules, layers)
    flags = {id(p): p.requires_grad for p in model.parameters()}
    rows: dict[str, list[tuple[int, int] | None]] = {}
    for s in sites:
        rows.setdefault(s.path, []).append(s.rows)
    for p in model.parameters():
        p.requires_grad_(False)
    names = {id(p): n for n, p in model.named_parameters()}
    prep = Prepared(model, "full", sites, sum(s.numel for s in sites), [], _requires_grad=flags)
    for path, spans in rows.items():
        weight = model.get_submodule(path).weight
        weight.requires_grad_(True)
        prep.params.append((names[id(weight)], weight))
        if None not in spans and sum(b - a for a, b in spans) < weight.shape[0]:
            mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
            for a, b in spans:
                mask[a:b] = 1
            prep._hooks.append(weight.register_hook(lambda g, m=mask: g * m.to(g.device, g.dtype)))
            prep.no_decay.add(id(weight))
    if keep_base:
        prep._originals = {n: p.detach().to("cpu", copy=True) for n, p in prep.params}
    return prep


def model_signature(model: nn.Module) -> dict:
    """Identity of a base model for resume checks: class, size, dimensions and a hash of a few weights
    (:func:`~affectlocus.models.fingerprint.model_fingerprint`'s ``"ends"`` scheme, which existing run
    folders were written with)."""
    cfg = getattr(model, "config", None)
    dims = {k: getattr(cfg, k, None) for k in ("model_type", "hidden_size", "intermediate_size",
                                                "num_hidden_layers", "vocab_size")}
    named = [(n, p) for n, p in model.named_parameters() if "lora_" not in n]
    return {"class": type(model).__name__, "params": sum(p.numel() for _, p in named), **dims,
            "weights": model_fingerprint(model, scheme="ends", skip="lora_")}
