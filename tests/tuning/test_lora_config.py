"""Selections → peft LoRA configs that hit exactly the selected sites, in every architecture."""
from __future__ import annotations

import peft
import pytest
import torch

import affectlocus as al
from affectlocus.tuning import lora_module_names, verify_targets

from _util import ARCHS


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "phi3"])
@pytest.mark.parametrize("modules,layers", [("gate", None), ("attn+gate", [1]), ("all", -1)])
def test_config_targets_exactly_the_selection(tiny, arch, modules, layers):
    model = tiny(arch)
    cfg = al.lora_config(modules, layers, r=2, alpha=4, model=model)
    wrapped = peft.get_peft_model(model, cfg)
    names = verify_targets(wrapped, model, modules, layers)
    assert names == sorted(s.hook_path for s in al.select(model, modules, layers))


def test_generic_regex_without_a_model(tiny):
    model = tiny("llama")
    wrapped = peft.get_peft_model(model, al.lora_config("gate", [1], r=2, num_layers=2))
    assert lora_module_names(wrapped) == ["model.layers.1.mlp.gate_proj"]


@pytest.mark.parametrize("arch,modules", [("llama", "gate"), ("llama", "attn+down"), ("phi3", "attn"),
                                          ("phi3", "gate+up"), ("qwen2", "all")])
@pytest.mark.parametrize("layers", [[1, 2], "1:3", range(2, 4), None])
def test_named_layers_need_no_model_and_match_the_model_config(tiny, arch, modules, layers):
    """Explicit non-negative layers (closed slices and ranges too) need neither a model nor num_layers,
    and the model-free pattern, made from the architecture table, wraps what the model's own does."""
    free = al.lora_config(modules, layers, r=2)
    model = tiny(arch, num_hidden_layers=4)
    exact = lora_module_names(peft.get_peft_model(model, al.lora_config(modules, layers, r=2, model=model)))
    fresh = tiny(arch, num_hidden_layers=4)
    wrapped = peft.get_peft_model(fresh, free)
    assert lora_module_names(wrapped) == exact
    assert verify_targets(wrapped, tiny(arch, num_hidden_layers=4), modules, layers) == exact


def test_second_layout_without_a_model_targets_what_was_asked(tiny):
    model = tiny("phi3", num_hidden_layers=4)
    wrapped = peft.get_peft_model(model, al.lora_config("attn", [1, 2], r=2))
    assert lora_module_names(wrapped) == [f"model.layers.{i}.self_attn.{p}" for i in (1, 2)
                                          for p in ("o_proj", "qkv_proj")]
    # a fused weight selected only in part: no Phi-3 path, so peft finds nothing to adapt
    assert "gate_up_proj" not in al.lora_config("gate", r=2).target_modules


@pytest.mark.parametrize("layers", [[-1], -2, "10:", "-3:", slice(2, None), "0,-1"])
def test_layers_from_the_end_without_a_model_need_num_layers(layers):
    with pytest.raises(al.SiteError, match="num_layers"):
        al.lora_config("gate", layers)
    al.lora_config("gate", layers, num_layers=12)


def test_rank_and_meta_device_configs():
    with pytest.raises(al.ConfigError, match="rank"):
        al.lora_config("gate", r=0)
    cfg = al.lora_config("gate", [1], r=2, model="qwen2.5-0.5b")  # a shipped arch, built on the meta device
    assert cfg.target_modules == r"^(model\.layers\.1\.mlp\.gate_proj)$"


def test_phi3_fused_rules(tiny):
    model = tiny("phi3")
    cfg = al.lora_config(["gate", "up"], r=2, model=model)
    assert lora_module_names(peft.get_peft_model(model, cfg)) == [
        f"model.layers.{i}.mlp.gate_up_proj" for i in range(2)]
    with pytest.raises(al.SiteError, match="part of a fused weight"):
        al.lora_config("gate", r=2, model=tiny("phi3"))


def test_gate_only_lora_changes_only_gate_proj(tiny, tmp_path):
    from affectlocus.models import tiny_model
    from affectlocus.study.training import train_lora
    tok = al.load_model("smollm2-135m")[1]
    model = tiny_model("llama", vocab_size=len(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [("I loved it", "positive"), ("I hated it", "negative")] * 4
    info = train_lora(model, tok, pairs, tmp_path / "get", modules="gate", r=2, steps=3, batch_size=4, lr=1e-2)
    assert info["modules"] == [f"layers.{i}.gate" for i in range(2)]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # base untouched
    al.assert_clean(model)
    with al.intervene(model, al.graft(tmp_path / "get")):
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"model.layers.{i}.mlp.gate_proj.weight" for i in range(2)}
