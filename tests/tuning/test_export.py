"""Exported partial adapters load in peft and equal the full adapter on the kept modules."""
from __future__ import annotations

import peft
import pytest
import torch

import affectlocus as al


@pytest.fixture
def adapter(tiny, tmp_path):
    model = tiny("qwen2")
    torch.manual_seed(0)
    wrapped = peft.get_peft_model(model, al.lora_config("all", r=2, model=model, init_lora_weights=False))
    wrapped.save_pretrained(tmp_path / "full")
    return tmp_path / "full"


def test_export_keeps_only_selected_and_equals_full(tiny, adapter, tmp_path):
    out = al.export_adapter(adapter, modules=["gate", "o"], layers=[1], out=tmp_path / "part")
    base = tiny("qwen2")
    loaded = peft.PeftModel.from_pretrained(tiny("qwen2"), out)
    assert sorted(n.replace("base_model.model.", "") for n, m in loaded.named_modules()
                  if hasattr(m, "lora_A") and len(m.lora_A)) == ["model.layers.1.mlp.gate_proj",
                                                                  "model.layers.1.self_attn.o_proj"]
    full, part = al.open_source(adapter), al.open_source(out)
    for site in al.select(base, "all"):
        if site.module in ("gate", "o") and site.layer == 1:
            assert torch.equal(part.factors(site).dense(), full.factors(site).dense())
        else:
            assert part.factors(site) is None
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), al.intervene(base, al.graft(adapter, modules=["gate", "o"], layers=[1])):
        want = base(ids).logits
    assert torch.allclose(loaded(ids).logits, want, atol=1e-5)


def test_export_errors(adapter, tmp_path):
    with pytest.raises(al.SourceError, match="not a peft adapter"):
        al.export_adapter(tmp_path, modules="gate", out=tmp_path / "x")
    with pytest.raises(al.SiteError):
        al.export_adapter(adapter, modules="gates", out=tmp_path / "x")


def test_adapter_for_a_different_base_is_refused(tiny, adapter, tmp_path):
    from affectlocus.tuning import check_adapter
    assert len(check_adapter(adapter, tiny("qwen2"))) == 14
    with pytest.raises(al.SourceError, match="different base"):
        check_adapter(adapter, tiny("qwen2", intermediate_size=96))
    with pytest.raises(al.SourceError, match="no such projection"):
        check_adapter(adapter, tiny("qwen2", num_hidden_layers=1))
    with pytest.raises(al.SourceError, match="different base"):
        al.export_adapter(adapter, modules="gate", out=tmp_path / "x", model=tiny("qwen2", hidden_size=32))
    assert not (tmp_path / "x").exists()


def test_export_of_a_trained_get_adapter(make, tok, pairs, tmp_path):
    from affectlocus.tuning import train
    res = train(make(), tok, pairs, tmp_path / "all", modules="all", r=2, steps=2, batch_size=4, lr=1e-2,
                progress=False)
    part = al.export_adapter(res.out, modules="gate", out=tmp_path / "gate", model=make())
    loaded = peft.PeftModel.from_pretrained(make(), part)
    assert sorted(n for n, _ in loaded.named_parameters() if "lora_" in n) == sorted(
        n for n, _ in res.model.named_parameters() if "lora_" in n and "gate_proj" in n)


def test_export_of_a_fused_adapter_keeps_whole_fused_weights(tiny, tmp_path):
    model = tiny("phi3")
    torch.manual_seed(0)
    peft.get_peft_model(model, al.lora_config("all", r=2, model=model, init_lora_weights=False)
                        ).save_pretrained(tmp_path / "full")
    for kwargs in ({}, {"model": tiny("phi3")}):
        out = al.export_adapter(tmp_path / "full", modules="attn", layers=-1, out=tmp_path / "attn", **kwargs)
        part = al.open_source(out)
        assert sorted(k.replace("base_model.model.", "") for k in part.site_names()) == [
            "model.layers.1.self_attn.o_proj", "model.layers.1.self_attn.qkv_proj"]
        with pytest.raises(al.SiteError, match="fused weight cannot be split"):
            al.export_adapter(tmp_path / "full", modules="q", out=tmp_path / "q", **kwargs)
    assert not (tmp_path / "q").exists()
