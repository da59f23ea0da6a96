"""The one error handler every ``affectlocus`` command line runs its handler under."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from .errors import AffectLocusError

INTERRUPTED = "affectlocus: interrupted (finished work is kept; run the same command to resume)"


def run_guarded(func: Callable[[Any], int | None], args: Any) -> int:
    """``func(args)`` as an exit code: its own (``None`` → 0); 2 after printing
    ``affectlocus: error: <Type>: <message>`` to stderr for an error this library raises on purpose;
    130 after a Ctrl-C. Anything else propagates (a bug deserves its traceback)."""
    try:
        return int(func(args) or 0)
    except AffectLocusError as exc:
        print(f"affectlocus: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130


def run_standalone(prog: str, description: str,
                   configure: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
                   handler: Callable[[Any], int | None], argv: Sequence[str] | None = None) -> int:
    """One sub-command run on its own (``prog``): parse ``argv`` with the options ``configure`` adds,
    then :func:`run_guarded` the handler."""
    parser = configure(argparse.ArgumentParser(prog=prog, description=description))
    return run_guarded(handler, parser.parse_args(list(argv) if argv is not None else None))


__all__ = ["INTERRUPTED", "run_guarded", "run_standalone"]
