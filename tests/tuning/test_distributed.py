"""Data parallelism: the CLI under two CPU processes (gloo) equals one process with the same global batch."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

from affectlocus.models import load_model, tiny_model_dir
from affectlocus.tuning import save_pairs, train
from affectlocus.tuning.checkpoint import read_json, read_jsonl

ARGS = ["--modules", "gate+v", "--r", "2", "--steps", "4", "--lr", "1e-2", "--dropout", "0", "--save-every", "2",
        "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(folder, data, out, world: int = 2, timeout: float = 120.0) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
               "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, "-m", "affectlocus", "train", "--model", str(folder), "--data", str(data),
               "--out", str(out), "--batch-size", "2", *ARGS]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


def test_two_process_gloo_run_equals_one_process(tok, pairs, tmp_path):
    folder = tiny_model_dir(tmp_path / "model", "llama", vocab_size=len(tok))
    tok.save_pretrained(str(folder))
    data = save_pairs(pairs, tmp_path / "train.jsonl")
    runs = _launch(folder, data, tmp_path / "ddp")
    if any(r.returncode for r in runs) and "EADDRINUSE" in "".join(r.stdout for r in runs):
        runs = _launch(folder, data, tmp_path / "ddp2")  # the free port was taken in between
    for r in runs:
        assert r.returncode == 0, r.stdout[-3000:]
    out = tmp_path / ("ddp" if (tmp_path / "ddp" / "run.json").exists() else "ddp2")
    assert "trained 4 steps" in runs[0].stdout and runs[1].stdout.count("trained") == 0  # rank 0 reports
    run = read_json(out / "run.json")
    assert run["status"] == "finished" and run["identity"]["world_size"] == 2
    model, tok2 = load_model(folder)
    ref = train(model, tok2, pairs, tmp_path / "single", modules="gate+v", r=2, steps=4, lr=1e-2, dropout=0.0,
                batch_size=4, progress=False)
    losses = [r["loss"] for r in read_jsonl(out / "log.jsonl")]
    assert torch.allclose(torch.tensor(losses), torch.tensor(ref.losses), atol=1e-5)
    got, want = load_file(str(out / "adapter_model.safetensors")), load_file(str(ref.artifact))
    assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], atol=1e-5) for k in got)
