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
    with pytest.raises(al.SiteError, match="num_layers"):
        al.lora_config("gate", [1])


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
