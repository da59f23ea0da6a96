"""Atomic files for training runs: checkpoints, run records, JSONL logs and result tables.

Every write goes through :func:`affectlocus._io.atomic_write` (temporary file beside the target,
fsync'ed, renamed over it) — so a crash or a full disk leaves the previous file intact. Checkpoints are read back with ``torch.load(weights_only=True)`` (no pickled code runs).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable

import torch

from .._io import atomic_write
from ..errors import CheckpointError


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode()
    return atomic_write(path, lambda fh: fh.write(data))


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); it was not written by this library "
                              f"or was edited by hand") from exc


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write (or rewrite) a whole JSONL table atomically: every reader sees all rows or the old file."""
    data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()
    return atomic_write(path, lambda fh: fh.write(data))


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file (``[]`` if absent); an unterminated last line (a killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    rows = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise CheckpointError(f"{path}:{i} is not valid JSON: {exc}") from exc
    return rows


def append_jsonl(path: str | Path, row: dict) -> None:
    """Append one line (for long logs); a partial last line left by a killed writer is dropped first."""
    path = Path(path)
    line = (json.dumps(row, sort_keys=True, default=str) + "\n").encode()
    with open(path, "ab+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                fh.seek(0)
                data = fh.read()
                fh.truncate(data.rfind(b"\n") + 1)
        fh.write(line)
        fh.flush()


def add_row(path: str | Path, row: dict) -> None:
    """Add one row to a small table by rewriting it atomically (all rows or the old file, never half)."""
    write_jsonl(path, read_jsonl(path) + [row])


def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Save a checkpoint (tensors and plain containers) atomically; raise :class:`CheckpointError`
    (naming the kept previous checkpoint) when the write fails, e.g. on a full disk."""
    path = Path(path)
    try:
        return atomic_write(path, lambda fh: torch.save(payload, fh))
    except OSError as exc:
        kept = f"the previous checkpoint {path} is intact" if path.exists() else "no earlier checkpoint existed"
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; {kept}. "
                              f"Free some space and run the same command again to resume.") from exc


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]} "
                              f"(corrupt, truncated, or not written by affectlocus)") from exc


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_difference(old: dict, new: dict) -> str:
    """``key: old → new`` for the keys whose values differ (for resume errors)."""
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return "; ".join(diffs[:8]) + (f"; … ({len(diffs) - 8} more)" if len(diffs) > 8 else "")


def rng_state() -> dict:
    """This process's random-number states (torch CPU, CUDA, Python) for exact resume."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
