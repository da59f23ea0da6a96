"""Write the README's performance table from ``benchmarks/results/*.json`` (``make bench`` runs it last).

Every row is a figure a benchmark measured, with its goal and verdict as saved in the JSON, and the
commit and load average it ran under — no number in the table is typed by hand. The table replaces
whatever stands between the README's ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers.

Run: ``.venv/bin/python benchmarks/report.py [--check]`` (``--check``: exit 1 if the README differs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ("adapter", "intervene", "bench_inplace", "diff", "bench_eval", "train")


def _value(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) < 1e-3:
        return f"{x:.1e}"
    return f"{x:.3g}"


def table(results: Path = HERE / "results") -> str:
    """The markdown table of every stamped benchmark JSON in ``results``."""
    files = sorted(results.glob("*.json"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    lines = ["| benchmark | figure | measured | goal | met | what |", "|---|---|---|---|---|---|"]
    runs = []
    for path in files:
        data = json.loads(path.read_text())
        if "figures" not in data:
            lines.append(f"| `{path.stem}` | — | — | — | — | unstamped (written by older code): rerun `make bench` |")
            continue
        st = data["stamp"]
        runs.append(f"`{path.stem}`: commit {str(st.get('git_commit'))[:8]}{' (dirty)' if st.get('git_dirty') else ''}, "
                    f"{st.get('threads')} threads, load {st.get('load_average_at_start', [0])[0]:.2f} at start")
        for f in data["figures"]:
            met = "" if f["goal"] is None else ("yes" if f["met"] else "**no**")
            unit = f" {f['unit']}" if f.get("unit") else ""
            goal = "" if f["goal"] is None else f"{f['goal']}"
            lines.append(f"| `{path.stem}` | {f['name']} | {_value(f['value'])}{unit} | {goal} | {met} | {f['what']} |")
    return "\n".join(lines + ["", "Runs: " + "; ".join(runs) + "." if runs else ""])


def rewrite(readme: Path = README, results: Path = HERE / "results") -> bool:
    """Replace the README's table; True if the README changed."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} lacks the {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{table(results)}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the README's table is current")
    args = ap.parse_args()
    if args.check:
        text = README.read_text()
        current = text.split(BEGIN, 1)[1].split(END, 1)[0].strip() if BEGIN in text else None
        sys.exit(0 if current == table().strip() else 1)
    print("README table", "rewritten" if rewrite() else "unchanged")
