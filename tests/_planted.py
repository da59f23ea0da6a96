"""A synthetic task a LoRA on one module of a tiny model learns in a few steps, and planted adapters."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from affectlocus.tasks import Example, Task
from affectlocus.sites import CANONICAL

POS, NEG = "aeiou", "bcdfg"


def letters_task(n_train: int = 96, n_test: int = 48, seed: int = 0, noise: float = 0.1) -> Task:
    """"pos" when the text repeats a vowel, "neg" when it repeats a consonant: a skill the tiny
    random model lacks (base ≈ chance) and a LoRA on one MLP module learns quickly. A ``noise``
    share of the test labels is flipped, so no model scores perfectly (every CI has width)."""
    rng = random.Random(seed)

    def make(i: int, split: str) -> Example:
        label = ("pos", "neg")[i % 2]
        ch = rng.choice(POS if label == "pos" else NEG)
        if split == "test" and rng.random() < noise:
            label = "neg" if label == "pos" else "pos"
        return Example(ch * rng.randint(10, 14), label, f"{split}-{i}")
    return Task("letters", ("neg", "pos"), "en", [make(i, "train") for i in range(n_train)],
                [make(i, "test") for i in range(n_test)], "synthetic vowel/consonant task", "tests", seed)


def widen(adapter: Path, out: Path, kind: str = "plant", seed: int = 0) -> Path:
    """An all-module peft adapter from a one-module adapter: the other modules get zero ΔW (B = 0).

    ``kind="noise"`` instead replaces every factor pair by random ones whose ΔW has the planted
    module's Frobenius norm (a change of the same size that carries no skill)."""
    state = load_file(str(adapter / "adapter_model.safetensors"))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    planted = sorted({k.split(".lora_")[0] for k in state})
    layers = sorted({int(k.split(".layers.")[1].split(".")[0]) for k in planted})
    prefix = planted[0].split(".layers.")[0]
    shapes = {"q": (64, 64), "k": (32, 64), "v": (32, 64), "o": (64, 64), "gate": (128, 64), "up": (128, 64),
              "down": (64, 128)}
    paths = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
             "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    r = int(cfg["r"])
    gen = torch.Generator().manual_seed(seed)
    new = {}
    for layer in layers:
        for m in CANONICAL:
            name = f"{prefix}.layers.{layer}.{paths[m]}"
            out_f, in_f = shapes[m]
            if kind == "plant" and f"{name}.lora_A.weight" in state:
                new[f"{name}.lora_A.weight"] = state[f"{name}.lora_A.weight"]
                new[f"{name}.lora_B.weight"] = state[f"{name}.lora_B.weight"]
            elif kind == "plant":
                new[f"{name}.lora_A.weight"] = torch.randn(r, in_f, generator=gen) / in_f ** 0.5
                new[f"{name}.lora_B.weight"] = torch.zeros(out_f, r)
            else:
                ref = next(k for k in planted if k.startswith(f"{prefix}.layers.{layer}."))
                target = (state[f"{ref}.lora_B.weight"] @ state[f"{ref}.lora_A.weight"]).norm()
                a, b = torch.randn(r, in_f, generator=gen), torch.randn(out_f, r, generator=gen)
                new[f"{name}.lora_A.weight"] = a
                new[f"{name}.lora_B.weight"] = b * (target / (b @ a).norm())
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in new.items()}, str(out / "adapter_model.safetensors"))
    cfg["target_modules"] = [p.split(".")[-1] for p in paths.values()]
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    shutil.copy(adapter / "info.json", out / "info.json")
    return out
