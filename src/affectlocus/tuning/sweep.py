"""Sweeps: train and evaluate a grid of module sets × seeds, one results row per finished cell.

Each cell trains in its own run folder (``cells/<name>``; resumable from its checkpoint) and, once
evaluated, adds one row to ``results.jsonl`` by an atomic rewrite. Starting the same sweep again skips
every cell with a row and resumes an interrupted one, so nothing finished is recomputed or lost. The
base model is restored exactly after every cell.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn as nn

from ..errors import DataError, ResumeError, TuningError
from ..models.loader import model_device
from .._io import atomic_path
from ..sites import parse_modules
from .checkpoint import add_row, describe_difference, read_json, read_jsonl, write_json
from .data import SFTDataset, build_dataset, load_pairs
from .params import count_trainable
from .prepare import model_signature
from .loss import answer_loss_sum
from .placement import launched, place
from .trainer import TrainConfig, train

Evaluate = Callable[[nn.Module, Any], dict]

#: The study's grid: the seven single modules; attention; attention + each of gate/up/down and pairs;
#: all seven (the reference for parameter ratios). Gate only is the GET cell.
DEFAULT_SETS: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down", "attn", "attn+gate", "attn+up",
                                 "attn+down", "attn+gate+up", "attn+gate+down", "attn+up+down", "all")


@torch.no_grad()
def heldout_loss(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]] | SFTDataset, *,
                 max_length: int = 256, batch_size: int = 8, template: bool | None = None) -> dict[str, float]:
    """Mean loss per answer token on held-out pairs (the sweep's default evaluation), and its exp."""
    data = pairs if isinstance(pairs, SFTDataset) else build_dataset(pairs, tokenizer, max_length, template)
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, tokens = 0.0, 0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        batch = {k: v.to(device) for k, v in data.collate(idx).items()}
        total += float(answer_loss_sum(model, batch))
        tokens += sum(data.answer_tokens(i) for i in idx)
    model.train(was_training)
    loss = total / max(1, tokens)
    return {"eval_loss": loss, "eval_ppl": math.exp(min(loss, 50.0)), "eval_tokens": float(tokens)}


def cell_name(modules: str, seed: int) -> str:
    return f"{'+'.join(parse_modules(modules))}-seed{seed}"


def _split(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, int(round(fraction * len(pairs))))
    if len(pairs) - n_eval < 1:
        raise DataError(f"{len(pairs)} pairs are too few to hold out {n_eval} for evaluation; pass eval_data=")
    held = set(order[:n_eval])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def sweep(model: nn.Module | str, tokenizer=None, data: Sequence[tuple[str, str]] | str | Path = (),
          out: str | Path = "runs/sweep", *, module_sets: Iterable[str] = DEFAULT_SETS,
          seeds: Iterable[int] = (0,), eval_data: Sequence[tuple[str, str]] | str | Path | None = None,
          evaluate: Evaluate | None = None, config: TrainConfig | None = None, progress: bool = True,
          holdout: float = 0.1, **overrides: Any):
    """Train every module set × seed (settings from ``config`` / :class:`TrainConfig` overrides) and
    evaluate each with ``evaluate(model, tokenizer) -> dict[str, float]`` (default: held-out answer loss
    on ``eval_data``, or on a seeded ``holdout`` fraction of ``data``). Returns the results as a
    pandas DataFrame (also in ``out/results.jsonl`` and ``out/results.csv``). ``device=`` (a
    :class:`TrainConfig` field) moves the model there once, before the first cell; ``None`` keeps it
    where it is."""
    import pandas as pd
    cfg = (config or TrainConfig()).updated(**overrides)
    cfg.validate()
    if isinstance(model, (str, Path)):
        from ..models import load_model
        model, loaded_tok = load_model(model, device=None if launched() else cfg.device)
        tokenizer = tokenizer or loaded_tok
    device = place(model, cfg.device)  # once, before any cell: every cell then trains and evaluates there
    pairs = load_pairs(data) if isinstance(data, (str, Path)) else list(data)
    if eval_data is None and evaluate is None:
        pairs, eval_data = _split(pairs, holdout, 12345)
    elif isinstance(eval_data, (str, Path)):
        eval_data = load_pairs(eval_data)
    dataset = build_dataset(pairs, tokenizer, cfg.max_length, cfg.template)
    if evaluate is None:
        held = build_dataset(eval_data, tokenizer, cfg.max_length, cfg.template)
        evaluate = lambda m, t: heldout_loss(m, t, held, batch_size=cfg.batch_size)  # noqa: E731
        eval_id = f"heldout_loss:{held.fingerprint()}"
    else:
        eval_id = f"{getattr(evaluate, '__module__', '')}.{getattr(evaluate, '__qualname__', type(evaluate).__name__)}"
    sets, seeds = list(dict.fromkeys(module_sets)), [int(s) for s in seeds]
    if not sets or not seeds:
        raise TuningError("a sweep needs at least one module set and one seed")
    if cfg.method == "lora":
        from .lora import target_regex
        for mods in sets:  # fail before training anything (e.g. a fused sub-selection on Phi-3)
            target_regex(model, mods, cfg.layers)
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available() if launched() else device.type == "cpu")
    out = Path(out)
    _check_identity(out, cfg, dataset, eval_id, model, state.is_main_process)
    state.wait_for_everyone()
    results = out / "results.jsonl"
    reference = count_trainable(model, "all", r=cfg.r if cfg.method == "lora" else None, layers=cfg.layers,
                                method=cfg.method).total
    for seed in seeds:
        for mods in sets:
            name = cell_name(mods, seed)
            if any(row.get("cell") == name for row in read_jsonl(results)):
                continue
            res = train(model, tokenizer, dataset, out / "cells" / name, cfg, modules=mods, seed=seed,
                        keep_base=True, progress=progress)
            try:
                res.model.eval()
                metrics = evaluate(res.model, tokenizer)
            finally:
                res.restore()
            if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) for v in metrics.values()):
                raise TuningError(f"evaluate() must return a dict of numbers, got {metrics!r}")
            if state.is_main_process:  # under accelerate launch only the main process writes
                add_row(results, {"cell": name, "modules": "+".join(parse_modules(mods)), "set": mods,
                                  "seed": seed, "method": cfg.method, "r": cfg.r if cfg.method == "lora" else None,
                                  "trainable": res.trainable, "trainable_ratio": res.trainable / reference,
                                  "final_loss": res.losses[-1] if res.losses else None,
                                  "train_seconds": res.seconds, "steps": cfg.steps,
                                  **{k: float(v) for k, v in metrics.items()}, "finished_at": time.time()})
            state.wait_for_everyone()
    frame = pd.DataFrame(read_jsonl(results))
    if state.is_main_process:
        with atomic_path(out / "results.csv") as tmp:
            frame.to_csv(tmp, index=False)
    return frame


def _check_identity(out: Path, cfg: TrainConfig, dataset: SFTDataset, eval_id: str, model: nn.Module,
                    write: bool = True) -> None:
    """A sweep folder belongs to one configuration, data set, evaluation and base model (the grid may grow)."""
    ident = {k: v for k, v in dataclasses.asdict(cfg).items()
             if k not in ("modules", "seed", "save_every", "device")}
    ident.update(data=dataset.fingerprint(), eval=eval_id, base=model_signature(model))
    ident = json.loads(json.dumps(ident, default=str))
    path = out / "sweep.json"
    if path.exists():
        old = read_json(path).get("identity", {})
        if old != ident:
            raise ResumeError(f"{out} holds a sweep with a different setup ({describe_difference(old, ident)}); "
                              f"use a new folder")
    elif write:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, {"identity": ident})
