"""The study, end to end: each step is a method you can call alone; results are cached per step.

Run folder layout (everything inside ``cfg.out``)::

    adapters/<train-fingerprint>/<name>-s<seed>/   peft adapters (+ info.json once complete)
    scores/<eval-fingerprint>/<config>.json         one score row per evaluated configuration
    steps/<step>.json                               a finished step's results (skipped when present)
    locate/<run>/                                   diff tables, heatmaps, histograms
    report/index.md, report/index.html, report/figures/*.png

Interrupt it at any point and run it again: finished adapters, scores and steps are reused.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..bench import load_task
from ..models import load_model
from . import claims
from .config import STEPS, StudyConfig
from .data import affective_pairs, arithmetic_control
from ..bench.label_scoring import Evaluator
from .._io import atomic_write_text as atomic_write
from .report import write_report
from .training import train_lora

GRID_FIELDS = ("targeted", "inherit_sets", "ablate_kinds", "random_controls", "alphas", "neuron_k",
               "probe_layers", "skip")
TRAIN_FIELDS = ("model", "dtype", "device_map", "train_tasks", "n_train", "balance_train", "n_control", "steps", "batch_size", "lr", "rank",
                "alpha", "max_length", "meld_dir")


class Study:
    """One study run. ``model``/``tokenizer`` may be passed in (e.g. a tiny model in tests)."""

    def __init__(self, cfg: StudyConfig, model=None, tokenizer=None, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.cfg, self.progress, self.log = cfg, progress, log
        self.run = Path(cfg.out)
        self.run.mkdir(parents=True, exist_ok=True)
        if model is None:
            extra = {"device_map": cfg.device_map} if cfg.device_map else {}
            model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, **extra)
        self.model, self.tok = model, tokenizer
        self.train_tasks = [load_task(t, meld_dir=cfg.meld_dir, seed=0) for t in cfg.train_tasks]
        self.eval_tasks = [load_task(t, meld_dir=cfg.meld_dir, seed=0, max_test=cfg.n_eval)
                           for t in cfg.eval_tasks]
        fp_train = cfg.fingerprint(*TRAIN_FIELDS)
        fp_eval = cfg.fingerprint(*[f for f in cfg.to_dict() if f not in GRID_FIELDS])
        self.adapter_root = self.run / "adapters" / fp_train
        self.evaluator = Evaluator(model, tokenizer, self.eval_tasks, cfg.n_eval, cfg.eval_batch_size,
                                   cfg.bootstrap, cache_dir=self.run / "scores" / fp_eval)
        (self.run / "scores" / fp_eval).mkdir(parents=True, exist_ok=True)
        self.step_fp = {s: cfg.fingerprint() for s in STEPS}
        self.timings: dict[str, float] = {}
        atomic_write(self.run / "config.json", json.dumps(cfg.to_dict(), indent=2))

    # ---- caching ---------------------------------------------------------------------------------
    def _step_file(self, step: str) -> Path:
        return self.run / "steps" / f"{step}.json"

    def cached(self, step: str) -> dict | None:
        path = self._step_file(step)
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") == self.step_fp[step]:
                return saved["data"]
        return None

    def _save(self, step: str, data: dict, seconds: float) -> dict:
        payload = {"fingerprint": self.step_fp[step], "seconds": seconds, "data": data}
        atomic_write(self._step_file(step), json.dumps(payload, indent=1))
        return data

    def step(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run ``fn`` unless its result is cached; record wall time."""
        hit = self.cached(name)
        if hit is not None:
            self.log(f"[{name}] cached — skipped")
            self.timings[name] = json.loads(self._step_file(name).read_text()).get("seconds", 0.0)
            return hit
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        data = fn()
        self.timings[name] = time.perf_counter() - t0
        return self._save(name, data, self.timings[name])

    # ---- building blocks -------------------------------------------------------------------------
    def adapter(self, name: str, modules: str, seed: int, control: bool = False) -> Path:
        """Train (or reuse) a LoRA adapter on the affective data (or the arithmetic control)."""
        out = self.adapter_root / f"{name}-s{seed}"
        if (out / "info.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        pairs = (arithmetic_control(self.tok, cfg.n_control, seed) if control
                 else affective_pairs(self.tok, self.train_tasks, cfg.n_train, cfg.balance_train))
        bar = tqdm(total=cfg.steps, desc=f"train {name} s{seed}", disable=not self.progress, leave=False)
        info = train_lora(self.model, self.tok, pairs, out, modules=modules, r=cfg.rank, alpha=cfg.alpha,
                          steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length,
                          seed=seed, progress=lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        bar.close()
        info.update(name=name, selection=modules, seed=seed, control=control)
        atomic_write(out / "info.json", json.dumps(info))
        return out

    def info(self, adapter: Path) -> dict:
        return json.loads((adapter / "info.json").read_text())

    def score(self, name: str, *interventions) -> dict:
        """Score the model under ``interventions`` (cached by ``name``)."""
        from ..registry import intervene
        if not interventions:
            return self.evaluator.score(name)
        with intervene(self.model, *interventions):
            return self.evaluator.score(name)

    def over_seeds(self, name: str, make: Callable[[int], dict]) -> dict:
        """Mean over seeds (sd when > 1 seed); CI bounds averaged; per-seed rows kept."""
        rows = [make(seed) for seed in self.cfg.seeds]
        if len(rows) == 1:
            return rows[0]
        import numpy as np
        means = [r["mean"] for r in rows]
        tasks = rows[0]["per_task"]
        return {"name": name, "mean": float(np.mean(means)), "sd": float(np.std(means, ddof=1)),
                "ci": [float(np.mean([r["ci"][0] for r in rows])), float(np.mean([r["ci"][1] for r in rows]))],
                "per_task": {t: {"mean": float(np.mean([r["per_task"][t]["mean"] for r in rows]))} for t in tasks},
                "seeds": rows}

    def bar(self, items, desc: str):
        return tqdm(items, desc=desc, disable=not self.progress, leave=False)

    # ---- the whole study -------------------------------------------------------------------------
    def run_all(self) -> dict:
        from . import experiments
        results: dict = {"config": self.cfg.to_dict()}
        for name in STEPS:
            if name in self.cfg.skip:
                self.log(f"[{name}] skipped by configuration")
                continue
            if name == "unibench" and not self.cfg.unibench:
                continue  # optional: needs the user's MER-UniBench subtitles and labels
            fn = getattr(experiments, name)
            results[name] = self.step(name, lambda fn=fn: fn(self, results))
        results["verdicts"] = [v.to_dict() for v in judge(results)]
        results["timings"] = self.timings
        results["figures"] = experiments.figures(self, results)
        atomic_write(self.run / "results.json", json.dumps(results, indent=1, default=str))
        write_report(results, self.run)
        return results


def judge(results: dict) -> list[claims.Verdict]:
    """The four claims' verdicts from whatever steps ran."""
    out = []
    loc = results.get("locate") or {}
    if loc.get("summaries", {}).get("affective"):
        out.append(claims.gate_dominates(loc["summaries"]["affective"], loc["summaries"].get("control")))
    if results.get("inherit"):
        out.append(claims.gate_transfers(results["inherit"]["rows"]))
    tgt = results.get("targeted")
    if tgt:
        out.append(claims.gate_most_efficient(tgt["rows"], tgt["params"], (results.get("inherit") or {})
                                              .get("rows", {}).get("none")))
    abl = results.get("ablate")
    if abl:
        out.append(claims.gate_necessary(abl["tuned"], abl["reverted"], abl["controls"]))
    return out
