"""Sources: checkpoints (single/sharded), peft adapters, AffectGPT .pth files, and their errors."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import affectlocus as al
from affectlocus.sources import LoraSource, SafetensorsSource

from _util import assert_bit_identical, state_snapshot


def _ids(model):
    return torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(2))


@pytest.fixture
def adapter(tiny, tmp_path):
    """A real peft LoRA adapter (random A and B) on q, v, gate, down of a tiny Llama."""
    import peft
    base = tiny("llama", seed=0)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                          init_lora_weights=False)
    torch.manual_seed(3)
    wrapped = peft.get_peft_model(tiny("llama", seed=0), cfg)
    wrapped.save_pretrained(tmp_path / "adapter")
    merged = wrapped.merge_and_unload().eval()
    return base, merged, tmp_path / "adapter"


@pytest.mark.parametrize("shard", [False, True])
def test_safetensors_checkpoint_single_and_sharded(tiny, tmp_path, shard):
    donor = tiny("llama", seed=4)
    donor.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB" if shard else "10GB")
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").exists() == shard
    base = tiny("llama", seed=0)
    snap = state_snapshot(base)
    with al.intervene(base, al.graft(tmp_path / "ckpt", modules="all")):
        for site in al.select(base, "all"):
            assert torch.equal(base.get_submodule(site.path).weight, donor.get_submodule(site.path).weight)
    assert_bit_identical(base, snap)


def test_lora_graft_matches_peft_merged_model(adapter):
    base, merged, folder = adapter
    src = al.open_source(folder)
    assert isinstance(src, LoraSource) and src.is_delta
    with torch.no_grad():
        want = merged(_ids(base)).logits
        with al.intervene(base, al.graft(folder, modules="all")):
            got = base(_ids(base)).logits
        assert torch.allclose(got, want, atol=1e-5)
        with al.intervene(base, al.graft(folder, modules="gate")):
            only_gate = base(_ids(base)).logits
        assert not torch.allclose(only_gate, want, atol=1e-4)
    site = al.select(base, "gate", 1)[0]
    dense = merged.model.layers[1].mlp.gate_proj.weight - base.model.layers[1].mlp.gate_proj.weight
    assert torch.allclose(src.factors(site).dense(), dense, atol=1e-6)
    assert src.factors(al.select(base, "up", 1)[0]) is None


def test_lora_scaling_rslora_and_alpha_pattern(adapter):
    _, _, folder = adapter
    cfg = json.loads((folder / "adapter_config.json").read_text())
    base_scale = al.open_source(folder).scale_of(al.open_source(folder).site_names()[0])
    assert base_scale == pytest.approx(8 / 4)
    cfg.update(use_rslora=True, alpha_pattern={"gate_proj": 16})
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    src = al.open_source(folder)
    keys = src.site_names()
    gate = next(k for k in keys if k.endswith("gate_proj"))
    q = next(k for k in keys if k.endswith("q_proj"))
    assert src.scale_of(gate) == pytest.approx(16 / 2) and src.scale_of(q) == pytest.approx(8 / 2)


def test_affectgpt_pth_with_prefixed_keys(adapter, tmp_path):
    base, merged, folder = adapter
    from safetensors.torch import load_file
    state = load_file(folder / "adapter_model.safetensors")
    renamed = {k.replace("base_model.model.", "llama_model.base_model.model.", 1)
               .replace(".lora_A.weight", ".lora_A.default.weight")
               .replace(".lora_B.weight", ".lora_B.default.weight"): v for k, v in state.items()}
    renamed["llama_proj.weight"] = torch.zeros(3, 3)  # projector tensors ride along, unused
    torch.save({"model": renamed, "epoch": 3}, tmp_path / "checkpoint.pth")
    with torch.no_grad(), al.intervene(base, al.graft(al.open_source(tmp_path / "checkpoint.pth", alpha=8))):
        got = base(_ids(base)).logits
    assert torch.allclose(got, merged(_ids(base)).logits, atol=1e-5)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pth_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh)
    with pytest.raises(al.UnsafeFileError, match="evil.pth"):
        al.open_source(path)


def test_truncated_and_missing_safetensors(tiny, tmp_path):
    donor = tiny("llama", seed=4)
    donor.save_pretrained(tmp_path / "ckpt")
    file = tmp_path / "ckpt" / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    base = tiny("llama")
    with pytest.raises(al.SourceError, match="corrupt or truncated"):
        with al.intervene(base, al.graft(file)):
            pass
    al.assert_clean(base)
    file.write_bytes(b"\x00\x01garbage")
    with pytest.raises(al.SourceError, match="model.safetensors"):
        al.open_source(file)
    with pytest.raises(al.SourceError, match="not found"):
        al.open_source(tmp_path / "nope.safetensors")


def test_missing_tensor_nan_and_shape_mismatch(tiny, tmp_path):
    base = tiny("llama")
    site = al.select(base, "gate", 0)[0]
    good = base.model.layers[0].mlp.gate_proj.weight.detach().clone()
    save_file({f"model.{site.weight_key}": good}, tmp_path / "one.safetensors")
    with pytest.raises(al.SourceError, match="lacks weights for layers.1.gate"):
        al.attach(base, al.graft(tmp_path / "one.safetensors", modules="gate"))
    save_file({f"model.{site.weight_key}": good * float("nan")}, tmp_path / "nan.safetensors")
    with pytest.raises(al.NonFiniteError, match="NaN"):
        al.attach(base, al.graft(tmp_path / "nan.safetensors", modules="gate", layers=0))
    wider = tiny("llama", seed=1, hidden_size=2 * base.config.hidden_size)
    with pytest.raises(al.ShapeMismatchError, match="another base model"):
        al.attach(base, al.graft(wider, modules="gate", layers=0))
    al.assert_clean(base)


def test_adapter_for_another_base(adapter, tiny):
    _, _, folder = adapter
    other = tiny("llama", seed=0, intermediate_size=96)
    with pytest.raises(al.ShapeMismatchError, match="gate"):
        al.attach(other, al.graft(folder, modules="gate"))
    al.assert_clean(other)


def test_sharded_index_missing_shard(tiny, tmp_path):
    tiny("llama").save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    shards = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(al.SourceError, match="missing"):
        SafetensorsSource(tmp_path / "ckpt")


def test_lora_rank_from_config_must_match_the_factors():
    key = "base_model.model.model.layers.{}.mlp.gate_proj.lora_{}.weight"
    state = {key.format(0, "A"): torch.zeros(4, 8), key.format(0, "B"): torch.zeros(8, 4),
             key.format(1, "A"): torch.zeros(2, 8), key.format(1, "B"): torch.zeros(8, 2)}
    with pytest.raises(al.SourceError, match=r"layers\.1\.mlp\.gate_proj \(r=2, config 4\)"):
        LoraSource(state, alpha=8, rank=4)
    src = LoraSource(state, alpha=8, rank=4, rank_pattern={"layers.1.mlp.gate_proj": 2})
    assert sorted(src.site_names())[1].endswith("layers.1.mlp.gate_proj")
    assert LoraSource(state, alpha=8, rank=None).scale_of(key.format(1, "A")[:-len(".lora_A.weight")]) == 4.0


def test_safetensors_reads_are_private_maps_released_with_the_tensor(tiny, tmp_path):
    """A read maps only its tensor's bytes copy-on-write: writing to it never reaches the file, and a
    file cut short after opening is a clear error, not a crash."""
    import gc
    from affectlocus.sources.safetensors_file import SafetensorsFile
    donor = tiny("llama", seed=4)
    donor.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "model.safetensors"
    before = path.read_bytes()
    fh = SafetensorsFile(path)
    key = next(k for k in fh.entries if k.endswith("layers.1.mlp.gate_proj.weight"))
    rows = fh.read_rows(key, 2, 5)
    assert torch.equal(rows, donor.model.layers[1].mlp.gate_proj.weight.detach()[2:5])
    rows.fill_(7.0)  # private: the file is unchanged
    del rows
    gc.collect()
    assert path.read_bytes() == before
    assert torch.equal(fh.read_rows(key, 0, 3), donor.model.layers[1].mlp.gate_proj.weight.detach()[:3])
    with open(path, "r+b") as out:
        out.truncate(fh.data_start + 16)
    with pytest.raises(al.SourceError, match="truncated"):
        fh.read_rows(key, 0, 3)
    fh.close()
