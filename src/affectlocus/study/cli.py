"""``affectlocus study --config study.toml`` and ``affectlocus demo`` (the study on the embedded model)."""
from __future__ import annotations

import argparse
import time

from .claims import collapse_note
from .config import StudyConfig, full, quick


def summary(results: dict) -> str:
    """The one-screen table printed at the end of a run."""
    lines = ["", "=" * 78, "affectlocus study — summary", "=" * 78]
    inherit = (results.get("inherit") or {}).get("rows", {})
    if inherit:
        lines.append("inheritance (graft affective modules into the base; mean balanced accuracy [95% CI]):")
        for name, row in inherit.items():
            lines.append(f"  {name:16s} {row['mean']:.3f} [{row['ci'][0]:.3f}, {row['ci'][1]:.3f}]")
    rows = {f"{step}:{name}": row for step in ("inherit", "targeted")
            for name, row in ((results.get(step) or {}).get("rows") or {}).items()}
    note = collapse_note(rows)
    if note:
        lines.append(f"warning: {note}")
    cost = results.get("cost") or {}
    if cost.get("notes"):
        lines += [f"cost–performance: {cost['notes'][0]}"]
    lines.append("claims:")
    for v in results.get("verdicts", []):
        lines.append(f"  [{v['verdict'].upper():13s}] {v['claim']}")
        lines.append(f"      {v['evidence'][:300]}")
    t = results.get("timings", {})
    lines.append("wall time per step: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
    return "\n".join(lines)


def _run(cfg: StudyConfig, progress: bool = True) -> int:
    from .pipeline import Study
    t0 = time.perf_counter()
    results = Study(cfg, progress=progress).run_all()
    print(summary(results))
    print(f"total {time.perf_counter() - t0:.0f} s; report: {cfg.out}/report/index.html "
          f"(and index.md)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="the whole study (tune, locate, inherit, targeted, ablate, "
                                     "interpolate, cost, neurons) from a TOML config; resumable")
    p.add_argument("--config", required=True, help="TOML file ([study] table or top-level keys)")
    p.add_argument("--out", help="run folder (overrides the config's 'out')")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=lambda a: _run(StudyConfig.from_toml(a.config, out=a.out), not a.no_progress))

    d = sub.add_parser("demo", help="the study on the embedded model and suite (≤ 10 min on 2 CPU cores)")
    d.add_argument("--full", action="store_true", help="the larger configuration (hours on CPU)")
    d.add_argument("--out", help="run folder (default runs/demo, or runs/demo-full with --full)")
    d.add_argument("--no-progress", action="store_true")

    def demo(a) -> int:
        cfg = full() if a.full else quick()
        if a.out:
            cfg.out = a.out
        return _run(cfg, not a.no_progress)
    d.set_defaults(func=demo)
