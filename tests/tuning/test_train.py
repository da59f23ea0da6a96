"""Training only the selected sites: LoRA (GET = gate only) and full fine-tuning of selected weights."""
from __future__ import annotations

import peft
import pytest
import torch
from safetensors.torch import load_file

import affectlocus as al
from affectlocus.tuning import TuningError, count_trainable, train

from _util import ARCHS, state_snapshot

FAST = dict(r=2, steps=3, batch_size=4, lr=1e-2, dropout=0.0, progress=False)
GATES = {f"model.layers.{i}.mlp.gate_proj.weight" for i in range(2)}


def _changed(state, before):
    return {k for k, v in state.items() if not torch.equal(v, before[k])}


def test_gate_only_lora_changes_only_gate_proj(make, tok, pairs, tmp_path):
    model = make("llama")
    before = state_snapshot(model)
    res = train(model, tok, pairs, tmp_path / "get", modules="gate", **FAST)
    assert res.trainable == count_trainable(make("llama"), "gate", r=2).total == 2 * 2 * (64 + 128)
    assert res.sites == ["layers.0.gate", "layers.1.gate"] and len(res.losses) == 3
    ids = torch.tensor([[4, 9, 10, 5]])
    with torch.no_grad():
        want = res.model(ids).logits
        loaded = peft.PeftModel.from_pretrained(make("llama"), tmp_path / "get")
        assert torch.allclose(loaded(ids).logits, want, atol=1e-6)
    src = al.open_source(tmp_path / "get")
    assert sorted(s.name for s in al.select(model, "all") if src.covers(s)) == res.sites
    merged = res.model.merge_and_unload()
    assert _changed(merged.state_dict(), before) == GATES  # every other tensor bit-identical
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want, atol=1e-5)


def test_full_finetuning_trains_only_the_selected_weights(make, tok, pairs, tmp_path):
    model = make("qwen2")
    before = state_snapshot(model)
    res = train(model, tok, pairs, tmp_path / "full", method="full", modules="gate", layers=[1],
                weight_decay=0.1, **FAST)
    key = "model.layers.1.mlp.gate_proj.weight"
    assert res.model is model and res.trainable == 128 * 64
    assert _changed(model.state_dict(), before) == {key}
    assert all(p.requires_grad for p in model.parameters())  # flags given back
    saved = load_file(str(res.artifact))
    assert list(saved) == [key] and torch.equal(saved[key], model.state_dict()[key])
    base = make("qwen2")
    with al.intervene(base, al.graft(tmp_path / "full", modules="gate", layers=[1])):
        assert _changed(base.state_dict(), model.state_dict()) == set()
    with pytest.raises(TuningError, match="keep_base"):
        res.restore()  # no originals kept unless asked
    res2 = train(make("qwen2"), tok, pairs, tmp_path / "full2", method="full", modules="gate", layers=[1],
                 keep_base=True, **FAST)
    res2.restore()
    assert _changed(res2.model.state_dict(), before) == set()


def test_phi3_fused_sub_selection(make, tok, pairs, tmp_path):
    with pytest.raises(al.SiteError, match="part of a fused weight"):
        train(make("phi3"), tok, pairs, tmp_path / "lora", modules="gate", **FAST)
    model = make("phi3")
    before = state_snapshot(model)
    res = train(model, tok, pairs, tmp_path / "rows", method="full", modules="gate", weight_decay=0.1, **FAST)
    assert res.trainable == 2 * 128 * 64
    keys = {f"model.layers.{i}.mlp.gate_up_proj.weight" for i in range(2)}
    assert _changed(model.state_dict(), before) == keys
    for k in keys:  # gate rows moved, up rows bit-identical (masked gradient, no weight decay)
        assert not torch.equal(model.state_dict()[k][:128], before[k][:128])
        assert torch.equal(model.state_dict()[k][128:], before[k][128:])
    res = train(make("phi3"), tok, pairs, tmp_path / "gate_up", modules="gate+up", **FAST)
    assert res.trainable == count_trainable(make("phi3"), al.lora_config("gate+up", r=2, model=make("phi3"))).total


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains_all_seven(make, tok, pairs, arch, tmp_path):
    res = train(make(arch), tok, pairs, tmp_path / arch, modules="all", **{**FAST, "steps": 1})
    real = sum(p.numel() for p in res.model.parameters() if p.requires_grad)
    assert res.trainable == real
    if arch != "phi3":
        assert res.trainable == count_trainable(make(arch), "all", r=2).total
    assert torch.isfinite(torch.tensor(res.losses)).all()


def test_grad_accumulation_equals_the_bigger_batch(make, tok, pairs, tmp_path):
    a = train(make(), tok, pairs, tmp_path / "a", modules="gate+o", **{**FAST, "batch_size": 4})
    b = train(make(), tok, pairs, tmp_path / "b", modules="gate+o", **{**FAST, "batch_size": 2}, grad_accum=2)
    assert torch.allclose(torch.tensor(a.losses), torch.tensor(b.losses), atol=1e-5)
    fa, fb = load_file(str(a.artifact)), load_file(str(b.artifact))
    assert all(torch.allclose(fa[k], fb[k], atol=1e-5) for k in fa)


def test_errors_are_clear(make, tok, pairs, tmp_path):
    model = make()
    before = state_snapshot(model)
    with pytest.raises(al.SiteError, match="unknown module"):
        train(model, tok, pairs, tmp_path / "x", modules="gates", **FAST)
    with pytest.raises(al.SiteError, match="out of range"):
        train(model, tok, pairs, tmp_path / "x", modules="gate", layers=[5], **FAST)
    with pytest.raises(TuningError, match="method"):
        train(model, tok, pairs, tmp_path / "x", method="prefix", **FAST)
    with pytest.raises(TuningError, match="steps"):
        train(model, tok, pairs, tmp_path / "x", **{**FAST, "steps": 0})
    with pytest.raises(TuningError, match="TrainConfig fields"):
        train(model, tok, pairs, tmp_path / "x", learning_rate=1.0)
    with pytest.raises(al.DataError):
        train(model, None, pairs, tmp_path / "x", **FAST)
    assert _changed(model.state_dict(), before) == set()
    assert all(p.requires_grad for p in model.parameters())
    al.assert_clean(model)


def test_a_diverging_run_stops_with_a_clear_error(make, tok, pairs, tmp_path):
    model = make()
    with pytest.raises(TuningError, match="lower lr"):
        train(model, tok, pairs, tmp_path / "nan", **{**FAST, "lr": float("inf")})
    al.assert_clean(model)


def test_fp32_then_bf16_training_in_one_process(make, tok, pairs, tmp_path):
    """accelerate keeps mixed precision process-wide; the trainer must not depend on it (a study or
    notebook trains fp32 and bf16 runs in one process)."""
    model = make("llama")
    before = state_snapshot(model)
    fp32 = train(model, tok, pairs, tmp_path / "fp32", modules="gate", **FAST)
    fp32.restore()
    bf16 = train(model, tok, pairs, tmp_path / "bf16", modules="gate", bf16=True, **FAST)
    bf16.restore()
    assert all(torch.isfinite(torch.tensor(x)) for x in fp32.losses + bf16.losses)
    assert fp32.losses[0] != bf16.losses[0]  # the bf16 forward really ran in bf16
    assert _changed(model.state_dict(), before) == set()


def test_answer_only_head_gives_the_full_head_loss(make, tok, pairs):
    from affectlocus.tuning.data import build_dataset
    from affectlocus.tuning.loss import answer_loss_sum
    model = make("llama")
    batch = build_dataset(pairs, tok, 64).collate(list(range(4)))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1),
                                             ignore_index=-100, reduction="sum")
    assert torch.allclose(answer_loss_sum(model, batch), full, rtol=1e-5)
