"""The built wheel ships the MER-UniBench emotion-wheel tables (and their NOTICE), so an installed
``affectlocus`` scores emotion tasks with nothing beside it. Built offline from a copy of the sources."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from affectlocus.unibench.wheels import PACKAGED_WHEELS, WHEEL_NAMES

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["NOTICE", "format.csv", "synonym.xlsx", *(f"{n}.xlsx" for n in WHEEL_NAMES)]


def test_wheel_contains_the_emotion_wheels(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy: the checkout gets no build/ or egg-info
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("affectlocus-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        folder = "affectlocus/unibench/emotion_wheel/"
        assert {n[len(folder):] for n in names if n.startswith(folder)} == set(SHIPPED)
        for name in SHIPPED:
            assert zf.read(folder + name) == (PACKAGED_WHEELS / name).read_bytes(), name
