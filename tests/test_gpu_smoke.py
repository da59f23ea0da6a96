"""benchmarks/gpu_smoke.py: its logic passes on CPU (``--cpu-tiny``) with nnsight, gguf and openpyxl
made unimportable (a GPU machine may lack them), and without CUDA it says so and exits 0."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_smoke.py"
BLOCKED = ("nnsight", "gguf", "openpyxl")
RUN_BLOCKED = ("import sys, runpy; [sys.modules.__setitem__(m, None) for m in {blocked!r}]; "
               "sys.argv = [{script!r}, *sys.argv[1:]]; runpy.run_path({script!r}, run_name='__main__')")


def _run(*args: str, blocked: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    code = RUN_BLOCKED.format(blocked=BLOCKED, script=str(SCRIPT))
    cmd = [sys.executable, "-c", code, *args] if blocked else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_cpu_tiny_passes_every_check_without_optional_packages(tmp_path):
    out = tmp_path / "smoke.json"
    proc = _run("--cpu-tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, proc.stdout[-2000:]
    result = json.loads(lines[0])
    assert result == json.loads(out.read_text())
    assert result["gpu_smoke"] == "pass" and result["failed"] == [] and result["errors"] == {}
    assert result["checks"] and all(result["checks"].values())
    for name in ("train_gate_lora", "graft.adapter.inplace", "noise.safetensors.rebind",
                 "neuron_mask.adapter.inplace_equals_rebind", "stack_lifo_restore", "diff_adapter",
                 "diff_safetensors", "evaluate_grafted_adapter", "graft_all_measure", "no_optional_imports"):
        assert result["checks"].get(name) is True, name
    assert result["device"] == "cpu" and result["peak_memory"] == "n/a"
    assert result["graft_all"]["inplace"]["peak_gpu_extra_mib"] == "n/a"
    assert result["versions"]["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the script would run for real")
def test_without_cuda_it_says_so_and_exits_0():
    proc = _run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines() == [
        f"gpu_smoke: no CUDA device (torch {torch.__version__}, cuda available: False) — nothing to do"]
