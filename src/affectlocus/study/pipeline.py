"""The study, end to end: each step is a method you can call alone; results are cached per step.

Run folder layout (everything inside ``cfg.out``)::

    adapters/<train-fingerprint>/<name>-s<seed>/   peft adapters (+ info.json once complete)
    scores/<task>/<key>/part-*.jsonl                per-example records of the one evaluator, keyed by
                                                    weights fingerprint + interventions + task + examples
    steps/<step>.json                               a finished step's results (skipped when present)
    locate/<run>/                                   diff tables, heatmaps, histograms
    witnesses/<run>/                                size / mediation / attribution / spectrum tables (CSV + JSON)
    report/index.md, report/index.html, report/figures/*.png
    run.jsonl                                       the command line's log (affectlocus._runlog): one JSON
                                                    event a line per run (start, steps, adapters, end)

Interrupt it at any point and run it again: finished adapters, scores and steps are reused.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, TypeVar

from tqdm.auto import tqdm

from ..tasks import Task, load_task
from ..tasks.prompts import PromptStyle
from ..models import load_model
from ..models.loader import fast_bf16, model_device
from .._io import atomic_write_text as atomic_write
from . import claims, stats
from .config import STEPS, StudyConfig, set_key
from .data import affective_dataset, control_dataset
from .evaluation import StudyEvaluator
from .report import write_report
from .training import train_lora

if TYPE_CHECKING:
    from .._runlog import RunLog

T = TypeVar("T")
TRAIN_FIELDS = ("model", "dtype", "device_map", "train_tasks", "n_train", "balance_train", "max_train_chars",
                "shots", "instruction", "n_control", "steps", "batch_size", "lr", "warmup", "rank", "alpha", "max_length",
                "bf16", "meld_dir")


class Study:
    """One study run. ``model``/``tokenizer`` may be passed in (e.g. a tiny model in tests), and
    ``tasks`` maps task names of the configuration to your own :class:`~affectlocus.tasks.Task`.
    ``log`` receives the progress messages; ``runlog`` (a :class:`~affectlocus._runlog.RunLog`), when
    given, the steps and trained adapters as ``run.jsonl`` events."""

    def __init__(self, cfg: StudyConfig, model=None, tokenizer=None, progress: bool = True,
                 log: Callable[[str], None] = print, tasks: Mapping[str, Task] | None = None,
                 runlog: "RunLog | None" = None):
        self.progress, self.log, self.runlog = progress, log, runlog
        self.run = Path(cfg.out)
        self.run.mkdir(parents=True, exist_ok=True)
        if model is None:
            extra = {"device_map": cfg.device_map} if cfg.device_map else {}
            model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, **extra)
        self.model, self.tok = model, tokenizer
        if cfg.bf16 is None:  # resolved once: fingerprints, caches and config.json name the precision used
            cfg = dataclasses.replace(cfg, bf16=fast_bf16(model_device(model)))
        self.cfg = cfg
        given = dict(tasks or {})  # your own Task objects, by the names the config uses

        def task(name: str, max_test: int | None = None) -> Task:
            if name in given:
                t = given[name]
                return t if max_test is None else dataclasses.replace(t, test=list(t.test[:max_test]))
            return load_task(name, meld_dir=cfg.meld_dir, seed=0, max_test=max_test)
        self.train_tasks = [task(t) for t in cfg.train_tasks]
        self.eval_tasks = [task(t, cfg.n_eval) for t in cfg.eval_tasks]
        self.style = PromptStyle(shots_per_label=cfg.shots, instruction=cfg.instruction)
        self.adapter_root = self.run / "adapters" / cfg.fingerprint(*TRAIN_FIELDS)
        self.evaluator = StudyEvaluator(model, tokenizer, self.eval_tasks, metric=cfg.metric, style=self.style,
                                        batch_size=cfg.eval_batch_size, bootstrap=cfg.bootstrap,
                                        cache_dir=self.run / "scores", bf16=cfg.bf16)
        self.seeds = list(cfg.seeds)
        self.aux_seeds = list(cfg.seeds[:cfg.aux_seeds])
        self.step_fp = {s: cfg.fingerprint() for s in STEPS}
        self.timings: dict[str, float] = {}
        atomic_write(self.run / "config.json", json.dumps(cfg.to_dict(), indent=2))

    # ---- caching ---------------------------------------------------------------------------------
    def _step_file(self, step: str) -> Path:
        return self.run / "steps" / f"{step}.json"

    def cached(self, step: str) -> dict | None:
        """A finished step's data, when saved under this configuration's fingerprint."""
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

    def event(self, event: str, **fields) -> None:
        """One ``run.jsonl`` event (when a ``runlog`` was given)."""
        if self.runlog is not None:
            self.runlog.event(event, **fields)

    def step(self, name: str, fn: Callable[[], dict]) -> dict:
        """Run ``fn`` unless its result is cached; record wall time."""
        hit = self.cached(name)
        if hit is not None:
            self.log(f"[{name}] cached — skipped")
            self.timings[name] = json.loads(self._step_file(name).read_text()).get("seconds", 0.0)
            self.event("step", step=name, status="cached", seconds=self.timings[name])
            return hit
        self.log(f"[{name}] running")
        self.event("step", step=name, status="started")
        t0 = time.perf_counter()
        try:
            data = fn()
        except BaseException as exc:
            self.event("step", step=name, status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                       seconds=time.perf_counter() - t0)
            raise
        self.timings[name] = time.perf_counter() - t0
        self.event("step", step=name, status="finished", seconds=self.timings[name])
        return self._save(name, data, self.timings[name])

    # ---- building blocks -------------------------------------------------------------------------
    def adapter(self, name: str, modules: str, seed: int, control: bool = False) -> Path:
        """Train (or reuse) a LoRA adapter on the affective data (or the arithmetic control)."""
        out = self.adapter_root / f"{name}-s{seed}"
        if (out / "info.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        data = (control_dataset(self.tok, cfg.n_control, seed, cfg.max_length) if control else
                affective_dataset(self.tok, self.train_tasks, cfg.n_train, balance=cfg.balance_train,
                                  max_chars=cfg.max_train_chars, style=self.style, max_length=cfg.max_length))
        bar = tqdm(total=cfg.steps, desc=f"train {name} s{seed}", disable=not self.progress, leave=False)
        info = train_lora(self.model, self.tok, data, out, modules=modules, r=cfg.rank, alpha=cfg.alpha,
                          steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length,
                          seed=seed, warmup=cfg.warmup, bf16=cfg.bf16,
                          progress=lambda s, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        bar.close()
        info.update(name=name, selection=modules, seed=seed, control=control,
                    tokens_per_example=sum(len(x) for x in data.input_ids) / len(data))
        atomic_write(out / "info.json", json.dumps(info))
        self.event("adapter", name=name, seed=seed, path=str(out), seconds=info.get("seconds"),
                   final_loss=(info.get("losses") or [None])[-1])
        return out

    def affect(self, modules: str, seed: int) -> Path:
        """The affective adapter trained on ``modules`` (``"all"`` or a module-set key) at ``seed``."""
        return self.adapter(f"affect-{modules}", modules, seed)

    def control(self, seed: int) -> Path:
        """The non-affective control adapter (all modules, arithmetic data) at ``seed``."""
        return self.adapter("control-all", "all", seed, control=True)

    def single_sets(self) -> list[str]:
        """Module-set keys of the targeted runs besides gate and all."""
        return [set_key(m) for m in self.cfg.targeted if set_key(m) not in ("gate", "all")]

    def affective_runs(self) -> list[tuple[str, int]]:
        """``(module-set key, seed)`` of every affective adapter: all and gate at the main seeds, the
        other single sets at the auxiliary seeds."""
        return [("all", s) for s in self.seeds] + [("gate", s) for s in self.seeds] + \
            [(m, s) for m in self.single_sets() for s in self.aux_seeds]

    def info(self, adapter: Path) -> dict:
        """The ``info.json`` of a trained adapter (losses, trainable parameters, seconds, ...)."""
        return json.loads((adapter / "info.json").read_text())

    def score(self, name: str, *interventions) -> dict:
        """A score row of the model under ``interventions`` (cached by weights + interventions, not name)."""
        from ..registry import intervene
        if not interventions:
            return self.evaluator.score(name)
        with intervene(self.model, *interventions):
            return self.evaluator.score(name)

    def over_seeds(self, name: str, make: Callable[[int], dict], seeds: list[int] | None = None) -> dict:
        """One row over ``seeds`` (default: the main seeds): per-seed rows kept, hierarchical CI."""
        rows = [{**make(seed), "seed": seed} for seed in (seeds or self.seeds)]
        return stats.over_seeds(name, rows, stats.Bootstrap.for_rows(rows, self.cfg.bootstrap or 1)
                                if self.cfg.bootstrap else None)

    def bar(self, items: Iterable[T], desc: str) -> Iterable[T]:
        """``items`` with a progress bar (when ``progress``)."""
        return tqdm(items, desc=desc, disable=not self.progress, leave=False)

    # ---- the whole study -------------------------------------------------------------------------
    def run_all(self) -> dict:
        """Every step (cached ones reused), the verdicts, figures, ``results.json`` and the report."""
        from . import experiments
        results: dict = {"config": self.cfg.to_dict()}
        for name in STEPS:
            if name in self.cfg.skip:
                self.log(f"[{name}] skipped by configuration")
                self.event("step", step=name, status="skipped")
                continue
            if name == "unibench" and not self.cfg.unibench:
                continue  # optional: needs the user's MER-UniBench subtitles and labels
            fn = getattr(experiments, name)
            results[name] = self.step(name, lambda fn=fn: fn(self, results))
        results["verdicts"] = [v.to_dict() for v in judge(results)]
        results["rules"] = list(claims.RULES)
        results["timings"] = self.timings
        results["figures"] = experiments.figures(self, results)
        atomic_write(self.run / "results.json", json.dumps(results, indent=1, default=str))
        write_report(results, self.run)
        self.event("report", report=str(self.run / "report" / "index.html"), results=str(self.run / "results.json"),
                   verdicts={v["claim"]: v["verdict"] for v in results["verdicts"]})
        return results


def judge(results: dict) -> list[claims.Verdict]:
    """The claims' verdicts from whatever steps ran."""
    out, health = [], results.get("health")
    loc = results.get("locate") or {}
    if loc.get("per_layer", {}).get("affective"):
        out.append(claims.gate_dominates(loc["per_layer"], health, loc.get("summaries", {}).get("affective")))
    inh = results.get("inherit")
    if inh:
        out.append(claims.gate_transfers(inh["rows"], inh.get("control"), health))
    tgt = results.get("targeted")
    if tgt:
        base = (inh or {}).get("rows", {}).get("none") or tgt.get("base")
        out.append(claims.gate_most_efficient(tgt["rows"], tgt["params"], base, health))
        out.append(claims.get_headline(tgt["rows"], tgt["params"], base, health))
    abl = results.get("ablate")
    if abl:
        out.append(claims.gate_necessary(abl["tuned"], abl["reverted"], abl.get("random"), abl.get("swap"), health))
    if results.get("attribute"):
        from .witnesses import witnesses_agree
        out.append(witnesses_agree(results["attribute"], health))
    return out
