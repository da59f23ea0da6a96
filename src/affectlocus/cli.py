"""Command line: a thin shell over the library. Each pipeline step registers its own subcommands."""
from __future__ import annotations

import argparse
import sys

from ._cli import run_guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="affectlocus", description=(
        "Find where a fine-tune lives inside a transformer LLM, and prove it by moving it."))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .evaluation.cli import register as register_bench_run
    from .evaluation.lm_eval_export import register as register_lm_eval_export
    from .unibench.cli import add_score_parser
    from .diff.cli import register as register_diff
    from .study.cli import register as register_study
    from .tour import register as register_tour
    from .tuning.cli import register as register_tuning
    from .witnesses.cli import register as register_witnesses
    register_study(sub)
    register_tour(sub)
    register_diff(sub)
    register_witnesses(sub)
    register_tuning(sub)
    register_lm_eval_export(sub)
    bench = sub.add_parser("bench", help="score a model on affective tasks (bench --model …) or "
                                         "benchmark outputs exactly (bench score …)")
    register_bench_run(bench)
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    add_score_parser(bench_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
