"""Shared benchmark helpers: interleaved timing (ratios measured in one run), goals with verdicts, and
stamped, atomic JSON (git commit, exact arguments, threads, load average at start, peer versions).

Every benchmark builds its figures with :func:`goal` / :func:`figure` and saves them with
:func:`save_json`; ``benchmarks/report.py`` turns the JSONs into the README's performance table, so no
number in the README is typed by hand.
"""
from __future__ import annotations

import json
import operator
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
#: load average when the benchmark process started (a loaded machine explains odd ratios)
START_LOAD = list(os.getloadavg())


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each function, timed round-robin so machine noise hits all alike."""
    return {k: statistics.median(v) for k, v in interleaved_samples(fns, repeats, warmup).items()}


def interleaved_samples(fns: dict[str, Callable[[], object]], repeats: int = 7,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Every round's wall time of each function (round-robin; see :func:`interleaved`).

    The order of the arms rotates every round, so no arm always runs right after the same other arm
    (allocator and cache state left behind by one arm would otherwise bias the next one)."""
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(a: list[float], b: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of the per-round ratios a/b and a 95 % bootstrap interval of that median (rounds paired)."""
    import random
    ratios = [x / y for x, y in zip(a, b)]
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return statistics.median(ratios), meds[int(0.025 * draws)], meds[int(0.975 * draws) - 1]


def goal(name: str, value: float, op: str, target: float, what: str) -> dict:
    """One figure with a goal and its verdict: ``{"name", "value", "goal": "<= 0.8", "met", "what"}``."""
    return {"name": name, "value": float(value), "goal": f"{op} {target:g}", "met": bool(_OPS[op](value, target)),
            "what": what}


def figure(name: str, value: float, what: str, unit: str = "") -> dict:
    """A figure recorded without a goal (context for the goals)."""
    return {"name": name, "value": float(value), "goal": None, "met": None, "what": what, "unit": unit}


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it), or (None, None) outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
        return head, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def versions(*packages: str) -> dict[str, str | None]:
    out = {}
    for name in ("torch", "transformers", *packages):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def stamp(peers: tuple[str, ...] = ()) -> dict:
    """Where and how a benchmark ran: commit, argv, threads, CPUs, load average at start, versions."""
    import torch
    commit, dirty = git_commit()
    return {"git_commit": commit, "git_dirty": dirty, "argv": sys.argv[1:], "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average_at_start": START_LOAD, "versions": versions("peft", "safetensors", *peers),
            "unix_time": time.time()}


def save_json(name: str, payload: dict, figures: list[dict] | None = None, peers: tuple[str, ...] = ()) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically: stamp + ``figures`` (goals with verdicts) +
    ``payload`` (the raw measurements); ``all_met`` is whether every goal in ``figures`` was met."""
    figures = figures or []
    goals = [f for f in figures if f["goal"] is not None]
    out = {"benchmark": name, "stamp": stamp(peers), "figures": figures,
           "all_met": all(f["met"] for f in goals) if goals else None, **payload}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(out, fh, indent=2)
    os.replace(tmp, path)
    return path


def print_figures(figures: list[dict]) -> None:
    for f in figures:
        verdict = "" if f["goal"] is None else f"  goal {f['goal']:<8s} {'met' if f['met'] else 'NOT MET'}"
        print(f"{f['name']:48s} {f['value']:10.4g}{verdict}")
