"""``affectlocus study --config study.toml`` and ``affectlocus demo`` (the study on the embedded model)."""
from __future__ import annotations

import argparse
import dataclasses
import time

from .._runlog import RunLog, add_quiet_arg, model_placement, show_progress
from ..models.cli_args import add_device_args, device_kwargs
from .claims import Label, Verdict
from .config import StudyConfig, full, quick
from .results import fmt_ci


def summary(results: dict) -> str:
    """The one-screen table printed at the end of a run: health first, then the verdicts."""
    lines = ["", "=" * 78, "affectlocus study — summary", "=" * 78]
    h = results.get("health")
    if h:
        base = h["base"]
        lines.append(f"health ({h.get('metric', 'score')}; paired 95% CI of tuned − base):")
        lines.append(f"  {'base':14s}      {base['mean']:.3f} {fmt_ci(base['ci'])}"
                     if base.get("ci") else f"  base {base['mean']:.3f}")
        for name, entries in h["tuned"].items():
            for e in entries:
                flags = ("FAILED " if e["failed"] else "") + ("collapsed " if e["collapsed"] else "") + \
                    ("beats base" if e["beats_base"] else "does NOT beat base")
                lines.append(f"  {name:10s} s{e['seed']:<3d} {e['mean']:.3f}  Δ {e['diff']:+.3f} "
                             f"{fmt_ci(e.get('diff_ci'), '+.3f')}  loss {e['first_loss']:.2f}→{e['final_loss']:.2f}  "
                             f"{flags}")
        if h.get("failures"):
            lines.append(f"warning: training failures: {', '.join(h['failures'])}")
        if h.get("not_beating"):
            lines.append(f"warning: not beating the base: {', '.join(h['not_beating'])}")
    lines.append("claims:")
    width = max(map(len, Label))
    for v in map(Verdict.from_dict, results.get("verdicts", [])):
        lines.append(f"  [{v.verdict.upper():{width}s}] {v.claim}")
        lines.append(f"      {v.evidence[:400]}")
    t = results.get("timings", {})
    lines.append("wall time per step: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
    return "\n".join(lines)


def _run(cfg: StudyConfig, args: argparse.Namespace) -> int:
    """Run the study of ``cfg`` (placement already checked) for ``study`` / ``demo`` (``args.command``),
    logging to ``<out>/run.jsonl``; ``--quiet`` drops the bars and the per-step messages,
    ``--no-progress`` only the bars."""
    from .pipeline import Study
    t0 = time.perf_counter()
    with RunLog(cfg.out, getattr(args, "command", None) or "study", args, config=cfg.to_dict()) as log:
        study = Study(cfg, progress=show_progress(args), log=(lambda _: None) if args.quiet else print,
                      runlog=log)
        log.event("model", name=cfg.model, bf16=study.cfg.bf16, **model_placement(study.model))
        results = study.run_all()
    print(summary(results))
    print(f"total {time.perf_counter() - t0:.0f} s; report: {cfg.out}/report/index.html "
          f"(and index.md)")
    return 0


def with_placement(cfg: StudyConfig, args: argparse.Namespace) -> StudyConfig:
    """``cfg`` with ``--device`` / ``--dtype`` / ``--device-map`` (when given) overriding its ``device``,
    ``dtype`` and ``device_map`` fields; ``--device`` clears the config's ``device_map`` and
    ``--device-map`` its ``device`` (the two exclude each other). Bad values raise ``ModelLoadError``."""
    given = device_kwargs(args)
    if not given:
        return cfg
    changes = dict(given)
    if "device" in given:
        changes["device_map"] = None
    if "device_map" in given:
        changes["device"] = None
    return dataclasses.replace(cfg, **changes)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``study`` and ``demo`` subcommands."""
    p = sub.add_parser("study", help="the whole study (tune, health, locate, attribute, inherit, targeted, ablate, "
                                     "interpolate, cost, neurons) from a TOML config; resumable")
    p.add_argument("--config", required=True, help="TOML file ([study] table or top-level keys)")
    p.add_argument("--out", help="run folder (overrides the config's 'out')")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_quiet_arg(p)
    add_device_args(p, "where and how the model is loaded (each overrides the config's field)")
    p.set_defaults(func=lambda a: _run(with_placement(StudyConfig.from_toml(a.config, out=a.out), a), a))

    d = sub.add_parser("demo", help="the study on the embedded model and suite (≤ 10 min on 2 CPU cores)")
    d.add_argument("--full", action="store_true", help="the larger configuration (hours on CPU)")
    d.add_argument("--out", help="run folder (default runs/demo, or runs/demo-full with --full)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_quiet_arg(d)
    add_device_args(d)

    def demo(a) -> int:
        cfg = full() if a.full else quick()
        if a.out:
            cfg.out = a.out
        return _run(with_placement(cfg, a), a)
    d.set_defaults(func=demo)
