"""The README's performance table is generated from stamped benchmark JSONs (no hand-typed numbers)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def test_figures_carry_goals_and_verdicts():
    common = _load("_common")
    met = common.goal("x_over_y", 0.7, "<=", 0.8, "x / y")
    missed = common.goal("speedup", 4.2, ">=", 5.0, "a / b")
    assert (met["met"], missed["met"], met["goal"], missed["goal"]) == (True, False, "<= 0.8", ">= 5")
    assert common.figure("seconds", 1.5, "t", "s")["met"] is None


def test_saved_json_is_stamped_and_the_table_reports_verdicts(tmp_path, monkeypatch):
    common = _load("_common")
    report = _load("report")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    figures = [common.goal("graft_over_peft", 0.5, "<=", 0.8, "ours / peft"),
               common.goal("label_over_generation", 3.1, ">=", 5.0, "label / batched generation"),
               common.figure("forward_s", 1.25, "plain forward", "s")]
    path = common.save_json("demo_bench", {"args": {"repeats": 3}}, figures, peers=("nnsight",))
    data = json.loads(path.read_text())
    stamp = data["stamp"]
    for key in ("git_commit", "argv", "threads", "load_average_at_start", "versions", "cpus"):
        assert key in stamp
    assert "nnsight" in stamp["versions"] and data["all_met"] is False
    (tmp_path / "old.json").write_text(json.dumps({"ratio": 1.0}))
    table = report.table(tmp_path)
    assert "| `demo_bench` | graft_over_peft | 0.5 | <= 0.8 | yes |" in table
    assert "| `demo_bench` | label_over_generation | 3.1 | >= 5 | **no** |" in table
    assert "unstamped" in table and "forward_s | 1.25 s" in table
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nrest\n")
    assert report.rewrite(readme, tmp_path) and not report.rewrite(readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "graft_over_peft" in text


def test_readme_has_the_generated_table():
    report = _load("report")
    text = (REPO / "README.md").read_text()
    assert report.BEGIN in text and report.END in text
