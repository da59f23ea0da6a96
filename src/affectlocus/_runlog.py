"""``run.jsonl``: the machine-readable log every long command (``study``, ``demo``, ``train``, ``sweep``,
``bench --model``, ``diff``) appends to its output folder, and the shared ``--quiet`` option.

One JSON object a line, each with ``event``, ``time`` (UTC, ISO 8601) and ``elapsed`` (seconds since
the run's start): a ``start`` event (``command``, ``argv``, ``options``, ``versions``, the requested
``device`` / ``dtype`` / ``device_map`` when given), the events the command emits (``model``: where the
loaded model sits; ``step``, ``adapter``, ``train``, ``cell``, ``task``, ``summary`` …), then an ``end``
event: ``status`` (``ok``, ``error`` or ``interrupted``), ``seconds`` and, for an error, ``error``
(``type`` and ``message``). Every line is appended and flushed on its own, so a killed run leaves valid
lines (and no ``end``); running the command again appends a new ``start``.

The bottom layer: imports nothing of the package but :mod:`._version`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from ._version import __version__

LOG_NAME = "run.jsonl"
QUIET_HELP = "no progress bars and no progress messages: only errors and the final summary"
#: ``start`` fields copied from the parsed options when given (the requested placement).
PLACEMENT = ("device", "dtype", "device_map")


def add_quiet_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``-q`` / ``--quiet`` (see :data:`QUIET_HELP`) to ``parser``; returns ``parser``."""
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)
    return parser


def show_progress(args: Any) -> bool:
    """Whether progress bars are wanted: neither ``--quiet`` nor ``--no-progress`` was given."""
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))


@contextmanager
def library_bars_off() -> Iterator[None]:
    """Inside: the progress bars transformers and huggingface_hub draw themselves (loading weights,
    downloads) are off; after: back as they were."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def versions() -> dict[str, str | None]:
    """Versions of affectlocus, Python, torch and transformers (``None``: not installed); imports nothing."""
    from importlib import metadata
    out: dict[str, str | None] = {"affectlocus": __version__, "python": platform.python_version()}
    for dist in ("torch", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def model_placement(model: Any) -> dict[str, Any]:
    """``{"device": …, "dtype": …}`` of a loaded model's first parameter (plus the devices of its
    ``hf_device_map``); ``{}`` for anything without parameters."""
    try:
        first = next(iter(model.parameters()))
    except (AttributeError, StopIteration, TypeError):
        return {}
    out: dict[str, Any] = {"device": str(first.device), "dtype": str(first.dtype).removeprefix("torch.")}
    device_map = getattr(model, "hf_device_map", None)
    if isinstance(device_map, dict) and device_map:
        out["device_map"] = sorted({str(v) for v in device_map.values()})
    return out


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON: containers recursed, NaN/inf → ``None``, numpy/torch scalars unwrapped,
    anything else (paths, dtypes, devices) as its string."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        try:
            return jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def options(args: Any) -> dict[str, Any]:
    """The parsed command-line options of ``args`` (a namespace), without handlers and private entries."""
    if args is None:
        return {}
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "func" and not callable(v)}


def _main_process() -> bool:
    """False in the non-main processes of ``accelerate launch`` / ``torchrun`` (only one process logs)."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")).strip() in ("", "0")


class RunLog:
    """Context manager appending the run's events to ``<out>/run.jsonl`` (see the module's docstring).

    ``with RunLog(out, "train", args) as log: … log.event("train", steps=3)``. On leaving, the ``end``
    event records the status; an exception is recorded (type and message) and propagates unchanged.
    ``args`` (a parsed namespace) gives ``options`` and the requested placement; ``fields`` go into
    ``start`` as well. Only the main process of a distributed launch writes (``enabled`` overrides). A
    log that cannot be written warns once on stderr and is then skipped: it never fails the command.
    ``quiet`` (default: the ``--quiet`` of ``args``) also turns the libraries' own bars off inside."""

    def __init__(self, out: str | Path, command: str, args: Any = None, *, argv: list[str] | None = None,
                 enabled: bool | None = None, quiet: bool | None = None, **fields: Any):
        self.path = Path(out) / LOG_NAME
        self.command = command
        self.enabled = _main_process() if enabled is None else bool(enabled)
        given = options(args)
        self.quiet = bool(given.get("quiet")) if quiet is None else bool(quiet)
        self._stack = ExitStack()
        placement = {k: given[k] for k in PLACEMENT if given.get(k) is not None}
        self._start = {"command": command, "argv": list(sys.argv if argv is None else argv),
                       "options": given, **placement, **fields}
        self._t0 = time.perf_counter()

    def __enter__(self) -> "RunLog":
        start = {**self._start, "versions": versions(), "pid": os.getpid()}
        self._t0 = time.perf_counter()
        self._repair()
        self.event("start", **start)
        if self.quiet:
            self._stack.enter_context(library_bars_off())
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        status, fields = "ok", {}
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            status = "interrupted"
        elif exc_type is not None and not (issubclass(exc_type, SystemExit) and exc.code in (0, None)):
            status = "error"
            fields["error"] = {"type": exc_type.__name__, "message": str(exc)}
        self.event("end", status=status, seconds=round(time.perf_counter() - self._t0, 3), **fields)
        self._stack.close()
        return False

    def event(self, event: str, **fields: Any) -> None:
        """Append one line ``{"event": event, "time": …, "elapsed": …, **fields}`` and flush it."""
        if not self.enabled:
            return
        record = {"event": event, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                  "elapsed": round(time.perf_counter() - self._t0, 3), **fields}
        line = json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
        except OSError as exc:
            print(f"affectlocus: warning: cannot write {self.path} ({exc}); the run goes on without it",
                  file=sys.stderr)
            self.enabled = False

    def _repair(self) -> None:
        """End a line a killed run left unfinished, so the next event starts on a line of its own."""
        if not self.enabled:
            return
        try:
            with open(self.path, "rb+") as fh:
                if fh.seek(0, os.SEEK_END) == 0:
                    return
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        except OSError:  # no log yet (or unreadable: event() warns)
            pass


def read_runlog(out: str | Path) -> list[dict[str, Any]]:
    """The events of ``<out>/run.jsonl`` in order (a torn last line of a killed run is skipped)."""
    path = Path(out) / LOG_NAME
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


__all__ = ["LOG_NAME", "QUIET_HELP", "RunLog", "add_quiet_arg", "jsonable", "library_bars_off", "model_placement",
           "options", "read_runlog", "show_progress", "versions"]
