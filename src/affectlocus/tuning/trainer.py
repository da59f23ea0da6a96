"""Supervised fine-tuning on selected sites: LoRA, or full fine-tuning of only the selected weights.

AdamW with linear warm-up and cosine decay, gradient accumulation and clipping, seeded; the loss is the
mean over answer tokens of the whole (global) batch. bf16 autocast and gradient checkpointing switch on
by themselves on a GPU. Runs unchanged under ``accelerate launch`` (data parallel: every process takes
its slice of each global batch). A run folder holds ``run.json`` (identity and status), ``log.jsonl``
(one line per step), ``checkpoint.pt`` while running (atomic, every ``save_every`` steps) and, when
finished, a peft adapter (LoRA) or ``tuned_weights.safetensors`` (full: only the trained tensors). Running
the same call again resumes from the checkpoint (same loss curve) or, once finished, loads the result.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .._io import atomic_path
from ..errors import ResumeError, TuningError
from ..sites import find_decoder, parse_layers, parse_modules
from .checkpoint import (append_jsonl, describe_difference, fingerprint, load_checkpoint, read_json, read_jsonl,
                         rng_state, save_checkpoint, set_rng_state, write_json, write_jsonl)
from .data import DataOrder, SFTDataset, build_dataset, load_pairs
from .placement import accelerator, launched, place
from .loss import answer_loss_sum
from .params import METHODS
from .prepare import Prepared, model_signature, prepare_full, prepare_lora

WEIGHTS_FILE = "tuned_weights.safetensors"
RUN_FILES = ("run.json", "log.jsonl", "checkpoint.pt", "adapter_config.json", "adapter_model.safetensors", WEIGHTS_FILE)


@dataclass
class TrainConfig:
    """Everything that decides the result of a run (``save_every`` and ``progress`` aside).

    ``device``: ``None`` trains where the model already is (a CPU model stays on the CPU even when a
    GPU exists; a ``device_map`` model stays spread); a string (``"cpu"``, ``"cuda"``, ``"cuda:1"``)
    moves the model there first. It is not part of a run's identity: a run may resume elsewhere.
    Under a multi-process ``accelerate launch`` accelerate places the model on each process's device.
    """

    method: str = field(default="lora", metadata={"choices": METHODS, "help": (
        "LoRA on the sites, or full fine-tuning of only the selected weights")})
    modules: Any = field(default="all", metadata={"help": "e.g. gate (GET), attn+gate, all"})
    layers: Any = field(default=None, metadata={"help": "layers: '10:20', '0,5', '-1' (default: all)"})
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    rslora: bool = False
    steps: int = 100
    batch_size: int = field(default=8, metadata={"help": "per process and micro-batch"})
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: float = field(default=0.03, metadata={"help": "fraction of steps (<1) or steps (≥1)"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "0 disables clipping"})
    max_length: int = 256
    seed: int = 0
    template: bool | None = None        # chat template: None → when the tokenizer has one
    bf16: bool | None = None            # None → on a GPU that supports it; True: bf16 autocast on CPU too
    gradient_checkpointing: bool | None = None  # None → on a GPU
    save_every: int = field(default=50, metadata={"help": "checkpoint period in steps (0: none)"})
    group_by_length: bool = False       # batches of similar length (less padding); order still seeded
    device: str | None = None           # None → train where the model is; "cpu", "cuda:1", …: moved there first

    def updated(self, **overrides: Any) -> "TrainConfig":
        """A copy with ``overrides`` (:class:`TuningError` naming the fields on an unknown one)."""
        try:
            return dataclasses.replace(self, **overrides)
        except TypeError as exc:
            raise TuningError(f"{exc}; TrainConfig fields: {', '.join(f.name for f in dataclasses.fields(self))}") from None

    def validate(self) -> None:
        if self.method not in METHODS:
            raise TuningError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        for name in ("steps", "batch_size", "grad_accum", "r", "max_length"):
            if int(getattr(self, name)) < 1:
                raise TuningError(f"{name} must be ≥ 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.warmup < 0 or self.save_every < 0:
            raise TuningError(f"need lr > 0, warmup ≥ 0, save_every ≥ 0 (got {self.lr}, {self.warmup}, {self.save_every})")


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the trained model: a peft ``PeftModel`` for LoRA (its
    ``unload()`` gives back the untouched base), the base model itself for full fine-tuning."""

    out: Path
    model: nn.Module
    losses: list[float]
    trainable: int
    sites: list[str]
    method: str
    steps: int
    resumed_from: int = 0
    seconds: float = 0.0
    tokens: int = 0
    loaded: bool = False                # True: the run had finished before; nothing was trained
    prepared: Prepared | None = field(default=None, repr=False)

    @property
    def artifact(self) -> Path:
        return self.out / (WEIGHTS_FILE if self.method == "full" else "adapter_model.safetensors")

    def restore(self) -> nn.Module:
        """Give the base model back as it was before training (see :meth:`Prepared.restore_base`)."""
        return self.prepared.restore_base() if self.prepared else self.model


def _schedule(steps: int, warmup: float) -> Callable[[int], float]:
    warm = int(round(warmup * steps)) if warmup < 1 else int(warmup)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _all_ok(acc, ok: bool) -> bool:
    """True on every process iff ``ok`` on every process (so one rank's failure stops them all)."""
    if acc.num_processes == 1:
        return ok
    flag = torch.tensor([0.0 if ok else 1.0], device=acc.device)
    return float(acc.reduce(flag, reduction="sum")) == 0.0


def _identity(cfg: TrainConfig, model: nn.Module, data: SFTDataset, world: int) -> dict:
    n = find_decoder(model).num_layers
    ident = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("save_every", "device")}
    ident.update(modules=list(parse_modules(cfg.modules)), layers=list(parse_layers(cfg.layers, n)),
                 data=data.fingerprint(), examples=len(data), world_size=world, base=model_signature(model))
    if cfg.method == "full":
        for k in ("r", "alpha", "dropout", "rslora"):
            ident.pop(k)
    return json.loads(json.dumps(ident, default=str))  # as it reads back from run.json


def _clear(out: Path) -> None:
    for name in RUN_FILES + ("README.md",):
        (out / name).unlink(missing_ok=True)


def train(model: nn.Module | str, tokenizer=None, data: Sequence[tuple[str, str]] | SFTDataset | str | Path = (),
          out: str | Path = "runs/train", config: TrainConfig | None = None, *, overwrite: bool = False,
          keep_base: bool = False, progress: bool = True, callback: Callable[[int, float], None] | None = None,
          **overrides: Any) -> TrainResult:
    """Fine-tune ``model`` on (prompt, answer) pairs, training only the selected sites.

    ``model``: a causal LM or anything :func:`affectlocus.load_model` accepts (then its tokenizer is
    used). ``data``: pairs, an encoded :class:`SFTDataset`, or a JSONL path. Settings come from
    ``config`` and/or keyword overrides of :class:`TrainConfig` fields (``modules="gate", r=16, …``).
    ``out`` is the run folder; an unfinished run there is resumed, a finished one is loaded, and one
    with a different configuration, data or base raises :class:`ResumeError` (``overwrite=True``
    starts afresh). ``keep_base`` keeps a CPU copy of fully fine-tuned weights for
    :meth:`TrainResult.restore`. ``callback(step, loss)`` runs after every step.
    """
    cfg = (config or TrainConfig()).updated(**overrides)
    cfg.validate()
    if isinstance(model, (str, Path)):
        from ..models import load_model
        model, loaded_tok = load_model(model, device=None if launched() else cfg.device)
        tokenizer = tokenizer or loaded_tok
    if isinstance(data, (str, Path)):
        data = load_pairs(data)
    dataset = data if isinstance(data, SFTDataset) else build_dataset(data, tokenizer, cfg.max_length, cfg.template)
    device = place(model, cfg.device)
    acc = accelerator(device)
    if launched():
        device = acc.device  # accelerate places the model on this process's device, as before
    on_gpu = device.type == "cuda"
    bf16 = cfg.bf16 if cfg.bf16 is not None else on_gpu and torch.cuda.is_bf16_supported()
    world, rank = acc.num_processes, acc.process_index
    ident = _identity(cfg, model, dataset, world)
    out = Path(out)
    run = _check_run_folder(out, ident, overwrite, acc)
    if run is not None and run.get("status") == "finished":
        return _load_finished(out, model, cfg, run, keep_base)
    if cfg.method == "lora":
        prep = prepare_lora(model, cfg.modules, cfg.layers, r=cfg.r, alpha=cfg.alpha, dropout=cfg.dropout,
                            rslora=cfg.rslora, seed=cfg.seed)
    else:
        prep = prepare_full(model, cfg.modules, cfg.layers, keep_base=keep_base)
    try:
        return _run(prep, dataset, out, cfg, ident, acc, progress, callback, device, bf16, world, rank)
    except BaseException:
        if prep.method == "lora":
            prep.restore_base()  # the caller's model loses the LoRA layers; the checkpoint keeps them
        else:
            prep.release()
        raise


def _check_run_folder(out: Path, ident: dict, overwrite: bool, acc) -> dict | None:
    run_path = out / "run.json"
    run = read_json(run_path) if run_path.exists() else None
    if run is not None and overwrite:
        if acc.is_main_process:
            _clear(out)
        acc.wait_for_everyone()
        run = None
    if run is not None and run.get("identity") != ident:
        raise ResumeError(f"{out} holds a run with a different configuration ("
                          f"{describe_difference(run.get('identity') or {}, ident)}); use a new folder "
                          f"or overwrite=True / --overwrite")
    if run is None and acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint.pt").unlink(missing_ok=True)
        write_jsonl(out / "log.jsonl", [])
        write_json(run_path, {"identity": ident, "fingerprint": fingerprint(ident), "status": "running"})
    acc.wait_for_everyone()
    return run


def _load_finished(out: Path, model: nn.Module, cfg: TrainConfig, run: dict, keep_base: bool) -> TrainResult:
    losses = [row["loss"] for row in read_jsonl(out / "log.jsonl")]
    if cfg.method == "lora":
        import peft
        flags = {id(p): p.requires_grad for p in model.parameters()}
        prep = Prepared(peft.PeftModel.from_pretrained(model, str(out)), "lora", [], 0, [], _requires_grad=flags)
    else:
        from safetensors.torch import load_file
        prep = prepare_full(model, cfg.modules, cfg.layers, keep_base=keep_base)
        prep.release()
        state = load_file(str(out / WEIGHTS_FILE))
        with torch.no_grad():
            for name, p in prep.params:
                p.copy_(state[name])
    summary = run.get("result", {})
    prep.net.eval()
    return TrainResult(out, prep.net, losses, summary.get("trainable", prep.trainable), summary.get("sites", []),
                       cfg.method, cfg.steps, seconds=summary.get("seconds", 0.0),
                       tokens=summary.get("tokens", 0), loaded=True, prepared=prep)


def _run(prep: Prepared, data: SFTDataset, out: Path, cfg: TrainConfig, ident: dict, acc, progress: bool,
         callback, device: torch.device, bf16: bool, world: int, rank: int) -> TrainResult:
    from tqdm.auto import tqdm
    net = prep.net
    use_gc = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device.type == "cuda"
    if use_gc:
        net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decay = [p for _, p in prep.params if id(p) not in prep.no_decay]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if prep.no_decay:
        groups.append({"params": [p for _, p in prep.params if id(p) in prep.no_decay], "weight_decay": 0.0})
    # one process: the model is already where it trains (accelerate's process-wide device may differ)
    model = acc.prepare_model(net) if launched() else acc.prepare_model(net, device_placement=False)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg.steps, cfg.warmup))
    ckpt_path, log_path = out / "checkpoint.pt", out / "log.jsonl"
    start = 0
    torch.manual_seed(cfg.seed * 7919 + rank)  # dropout stream; per process
    random.seed(cfg.seed)
    if ckpt_path.exists():
        start = _restore(ckpt_path, prep, optimizer, scheduler, ident, rank)
    if acc.is_main_process:
        write_jsonl(log_path, [r for r in read_jsonl(log_path) if r["step"] <= start])
    acc.wait_for_everyone()
    losses = [r["loss"] for r in read_jsonl(log_path)][:start]
    group = cfg.batch_size * cfg.grad_accum * world
    order = DataOrder(len(data), cfg.seed, [len(x) for x in data.input_ids] if cfg.group_by_length else None,
                      group)
    params = [p for _, p in prep.params]
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and acc.is_main_process),
               desc=f"{cfg.method} {'+'.join(parse_modules(cfg.modules))}", dynamic_ncols=True)
    model.train()
    t0, tokens = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        first = step * group
        n_answer = max(1, sum(data.answer_tokens(i) for i in order.take(first, group)))
        local = torch.zeros((), device=device)
        for a in range(cfg.grad_accum):
            idx = order.take(first + (rank * cfg.grad_accum + a) * cfg.batch_size, cfg.batch_size)
            batch = {k: v.to(device) for k, v in data.collate(idx).items()}
            tokens += int(batch["attention_mask"].sum())
            sync = acc.no_sync(model) if a < cfg.grad_accum - 1 else nullcontext()
            with sync:
                loss_sum = answer_loss_sum(model, batch, autocast)
                acc.backward(loss_sum * (world / n_answer))
            local += loss_sum.detach().float()
        grad_norm = (float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                     if cfg.max_grad_norm else None)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = float(acc.reduce(local, reduction="sum")) / n_answer if world > 1 else float(local) / n_answer
        if not math.isfinite(loss):
            raise TuningError(f"the loss is {loss} at step {step + 1}: lower lr (now {cfg.lr}) or check the "
                              f"data; the last checkpoint is kept")
        losses.append(loss)
        if acc.is_main_process:
            append_jsonl(log_path, {"step": step + 1, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                                    "answer_tokens": n_answer, "seconds": round(time.perf_counter() - t0, 4)})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
            _save(ckpt_path, prep, optimizer, scheduler, ident, step + 1, acc)
        if callback is not None:
            callback(step + 1, loss)
    bar.close()
    seconds = time.perf_counter() - t0
    if world > 1:  # tokens processed by all processes
        tokens = int(acc.reduce(torch.tensor(tokens, device=acc.device), reduction="sum"))
    model.eval()
    if use_gc:
        net.gradient_checkpointing_disable()
    summary = {"trainable": prep.trainable, "sites": [s.name for s in prep.sites], "seconds": seconds,
               "tokens": tokens, "final_loss": losses[-1] if losses else None, "resumed_from": start}
    error: BaseException | None = None
    if acc.is_main_process:
        try:
            _save_final(out, prep)
            write_json(out / "run.json", {"identity": ident, "fingerprint": fingerprint(ident),
                                          "status": "finished", "result": summary})
            ckpt_path.unlink(missing_ok=True)
        except OSError as exc:
            error = TuningError(f"could not save the result in {out}: {exc}; the last checkpoint is kept, "
                                f"run the same command again to finish")
    if not _all_ok(acc, error is None):
        raise error or TuningError("the main process failed to save the result; the last checkpoint is kept")
    prep.release()
    return TrainResult(out, acc.unwrap_model(model), losses, prep.trainable, summary["sites"], cfg.method,
                       cfg.steps, start, seconds, tokens, prepared=prep)


def _trainable_state(prep: Prepared) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in prep.params}


def _save(path: Path, prep: Prepared, optimizer, scheduler, ident: dict, step: int, acc) -> None:
    states = [rng_state()]
    if acc.num_processes > 1:
        states = [None] * acc.num_processes
        torch.distributed.all_gather_object(states, rng_state())
    error = None
    if acc.is_main_process:
        payload = {"format": 1, "fingerprint": fingerprint(ident), "step": step, "model": _trainable_state(prep),
                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": states}
        try:
            save_checkpoint(path, payload)
        except TuningError as exc:
            error = exc
    if not _all_ok(acc, error is None):
        raise error or TuningError(f"the main process could not write {path}; the previous checkpoint is kept")


def _restore(path: Path, prep: Prepared, optimizer, scheduler, ident: dict, rank: int) -> int:
    ckpt = load_checkpoint(path)
    if ckpt.get("fingerprint") != fingerprint(ident):
        raise ResumeError(f"{path} was written by a different run configuration; delete it or use overwrite=True")
    state = ckpt["model"]
    if sorted(state) != sorted(n for n, _ in prep.params):
        raise ResumeError(f"{path} holds tensors {sorted(state)[:3]}…, the run trains "
                          f"{sorted(n for n, _ in prep.params)[:3]}…")
    with torch.no_grad():
        for name, p in prep.params:
            if state[name].shape != p.shape:
                raise ResumeError(f"{path}: {name} has shape {tuple(state[name].shape)}, the model {tuple(p.shape)}")
            p.copy_(state[name])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if rank >= len(ckpt["rng"]):
        raise ResumeError(f"{path} was written by {len(ckpt['rng'])} processes, this is process {rank}")
    set_rng_state(ckpt["rng"][rank])
    return int(ckpt["step"])


def _save_final(out: Path, prep: Prepared) -> None:
    """Write the peft adapter (LoRA) or the trained tensors only (full), file by file atomically."""
    if prep.method == "full":
        from safetensors.torch import save_file
        with atomic_path(out / WEIGHTS_FILE) as tmp:
            save_file(_trainable_state(prep), str(tmp), metadata={
                "format": "pt", "affectlocus": "full fine-tuning: only the trained tensors",
                "sites": ",".join(s.name for s in prep.sites)})
        return
    staging = out / f".adapter-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        prep.net.save_pretrained(str(staging))
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            with atomic_path(out / name) as tmp:
                shutil.copyfile(staging / name, tmp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
