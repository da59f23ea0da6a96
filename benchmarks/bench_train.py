"""Benchmark training steps on the embedded model: gate-only LoRA (GET) vs all-seven LoRA vs full
fine-tuning of gate_proj, on the same 16×64 batch (ratios measured in one run).

Per configuration: median step time (forward + backward + clip + AdamW step, timed round-robin so
machine noise hits all alike), tokens/s, trainable parameters, optimizer-state bytes (exact, from the
AdamW state tensors) and peak memory (CUDA: max allocated; CPU: peak RSS of a fresh subprocess during
one training step — the first, which also allocates the optimizer state — and its rise over the RSS
after loading). With a GPU, one bf16
step is recorded too.

Run: ``.venv/bin/python benchmarks/bench_train.py`` → prints a table, saves results/train.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import affectlocus as al  # noqa: E402
from affectlocus.tuning.data import arithmetic_control, build_dataset  # noqa: E402
from affectlocus.tuning.prepare import prepare_full, prepare_lora  # noqa: E402
from affectlocus.tuning.loss import answer_loss_sum  # noqa: E402

CONFIGS = {"gate_lora": ("lora", "gate"), "all7_lora": ("lora", "all"), "gate_full": ("full", "gate"),
           "gate_lora_full_head": ("lora", "gate")}  # the same GET step, LM head over every position
BATCH, LENGTH, RANK = 16, 64, 16


def make_batch(tok) -> dict[str, torch.Tensor]:
    """16 arithmetic-control examples with the chat template, left-truncated to exactly 64 tokens."""
    lead = "Read the following word problem carefully, work it out, and reply with only the result. "
    pairs = [(lead + p, a) for p, a in arithmetic_control(BATCH, seed=0)]
    data = build_dataset(pairs, tok, max_length=LENGTH)
    batch = data.collate(list(range(BATCH)))
    assert batch["input_ids"].shape == (BATCH, LENGTH), batch["input_ids"].shape
    return batch


def full_head_loss_sum(net, batch) -> torch.Tensor:
    """The answer-only loss computed the usual way: logits over every position, then masked."""
    logits = net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                             batch["labels"][:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


def setup(name: str, device: str = "cpu"):
    method, modules = CONFIGS[name]
    loss_sum = full_head_loss_sum if name.endswith("_full_head") else answer_loss_sum
    model, tok = al.load_model("smollm2-135m", device=device)
    prep = (prepare_lora(model, modules, None, r=RANK, alpha=2 * RANK, dropout=0.05, rslora=False, seed=0)
            if method == "lora" else prepare_full(model, modules, None))
    params = [p for _, p in prep.params]
    opt = torch.optim.AdamW(params, lr=1e-4)
    prep.net.train()
    batch = {k: v.to(device) for k, v in make_batch(tok).items()}
    n_answer = int((batch["labels"][:, 1:] != -100).sum())

    def step(autocast: bool = False) -> float:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
        with ctx:
            loss = loss_sum(prep.net, batch) / n_answer
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())
    return prep, opt, step


def optimizer_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
               if isinstance(t, torch.Tensor))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(name: str) -> None:
    """Run in a fresh process: RSS after loading, then peak RSS over one training step (the peak-RSS
    mark is reset after loading through /proc/self/clear_refs, so loading's own peak does not count)."""
    import gc
    torch.manual_seed(0)
    prep, opt, step = setup(name)
    gc.collect()
    loaded = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM (peak RSS) to the current RSS
    step()
    peak = _status_mb("VmHWM")
    print(json.dumps({"rss_after_load_mb": loaded, "peak_rss_mb": peak, "train_rise_mb": peak - loaded}))


def main(repeats: int) -> dict:
    from _common import figure, goal, interleaved, print_figures, save_json
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runs = {name: setup(name, device) for name in CONFIGS}
    for _, _, step in runs.values():  # warm-up: allocate optimizer state
        step()
    times = interleaved({n: r[2] for n, r in runs.items()}, repeats=repeats, warmup=0)
    rows = {}
    for name, (prep, opt, _) in runs.items():
        rows[name] = {"step_seconds": times[name], "tokens_per_second": BATCH * LENGTH / times[name],
                      "trainable": prep.trainable, "optimizer_state_bytes": optimizer_bytes(opt)}
    for name in CONFIGS:
        if device == "cuda":
            prep, opt, step = runs[name]
            torch.cuda.reset_peak_memory_stats()
            step()
            rows[name]["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        else:
            env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
            out = subprocess.run([sys.executable, __file__, "--memory-child", name], capture_output=True,
                                 text=True, check=True, env=env)
            mem = json.loads(out.stdout.strip().splitlines()[-1])
            rows[name].update(peak_memory_mb=mem["peak_rss_mb"], train_memory_rise_mb=mem["train_rise_mb"])
    ref = rows["all7_lora"]
    ratios = {f"{name}_over_all7_lora": {k: row[k] / ref[k] for k in row if ref[k]}
              for name, row in rows.items() if name != "all7_lora"}
    payload = {"device": device, "batch": [BATCH, LENGTH], "lora_rank": RANK, "repeats": repeats,
               "configs": rows, "ratios": ratios,
               "notes": "gate_full = full fine-tuning of every layer's gate_proj; LoRA on all 30 layers; "
                        "CPU peak memory = peak RSS of a fresh process during its first training step (after loading)"}
    if device == "cuda":
        prep, opt, step = runs["gate_lora"]
        import time
        t0 = time.perf_counter()
        loss = step(autocast=True)
        payload["bf16_gate_lora_step"] = {"seconds": time.perf_counter() - t0, "loss": loss}
    g, a7, fh = rows["gate_lora"], rows["all7_lora"], rows["gate_lora_full_head"]
    figures = [
        figure("get_over_all7_step_time", g["step_seconds"] / a7["step_seconds"],
               "gate-only LoRA step / all-seven LoRA step (answer-only head), same 16×64 batch"),
        figure("get_over_all7_peak_memory", g["peak_memory_mb"] / a7["peak_memory_mb"], "peak memory, same ratio"),
        figure("get_over_all7_trainable", g["trainable"] / a7["trainable"], "trainable parameters, same ratio"),
        goal("answer_head_over_full_head_step_time", g["step_seconds"] / fh["step_seconds"], "<=", 1.0,
             "GET step with the LM head only at answer positions / with the head over every position"),
        figure("answer_head_over_full_head_peak_memory", g["peak_memory_mb"] / fh["peak_memory_mb"],
               "peak memory, same ratio"),
        figure("get_step_seconds", g["step_seconds"], "GET step (forward + backward + AdamW), 16×64", "s"),
    ]
    print_figures(figures)
    path = save_json("train" if device == "cpu" else "train_gpu", {"args": {"repeats": repeats}, **payload},
                     figures)
    print(f"{'config':10s} {'step s':>8s} {'tok/s':>8s} {'trainable':>12s} {'optim MB':>9s} {'peak MB':>8s}")
    for name, row in rows.items():
        print(f"{name:10s} {row['step_seconds']:8.2f} {row['tokens_per_second']:8.0f} {row['trainable']:12,d} "
              f"{row['optimizer_state_bytes'] / 2**20:9.1f} {row['peak_memory_mb']:8.0f}")
    for name, r in ratios.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()))
    print(f"saved {path}")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", choices=list(CONFIGS))
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
    else:
        main(args.repeats)
