"""Exact trainable-parameter counts on the meta device, against hand computation."""
from __future__ import annotations

import pytest

import affectlocus as al
from affectlocus.tuning import count_trainable, known_archs, ratio_table


def test_tiny_counts_by_hand(tiny):
    model = tiny("llama")  # hidden 64, intermediate 128, 4 heads × 16, 2 kv heads → k/v out 32
    per_layer = {"q": 2 * (64 + 64), "k": 2 * (64 + 32), "v": 2 * (64 + 32), "o": 2 * (64 + 64),
                 "gate": 2 * (64 + 128), "up": 2 * (64 + 128), "down": 2 * (128 + 64)}
    c = count_trainable(model, "all", r=2)
    assert c.per_module == {m: 2 * n for m, n in per_layer.items()} and c.total == 2 * sum(per_layer.values())
    full = count_trainable(model, "gate", layers=[0], method="full")
    assert full.total == 128 * 64
    import peft
    wrapped = peft.get_peft_model(tiny("llama"), al.lora_config("attn+gate", r=2, model=model))
    real = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert count_trainable(model, al.lora_config("attn+gate", r=2, model=model)).total == real


def test_qwen25_7b_gate_is_exactly_a_quarter():
    gate = count_trainable("qwen2.5-7b", "gate", r=16)
    allp = count_trainable("qwen2.5-7b", "all", r=16)
    assert gate.total == 28 * 16 * (3584 + 18944)
    assert allp.total == 28 * 16 * 90112
    assert gate.total / allp.total == 0.25
    assert 7.6e9 < allp.model_params < 7.7e9


def test_every_shipped_config_builds_on_meta():
    assert {"qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-32b", "llama-3-8b", "mistral-7b"} <= set(known_archs())
    rows = dict((name, ratio) for name, _, ratio in ratio_table("llama-3-8b"))
    assert rows["all"] == 1.0 and 0 < rows["gate"] < 1 and "q+k" in rows


def test_unknown_arch_lists_known_ones():
    with pytest.raises(al.ArchitectureError, match="qwen2.5-7b"):
        count_trainable("gpt-5", "gate", r=16)


def test_params_cli(capsys):
    from affectlocus.cli import main
    assert main(["params", "--arch", "qwen2.5-7b"]) == 0
    assert "gate-only / all-seven = 10092544/40370176 = 0.2500" in capsys.readouterr().out
