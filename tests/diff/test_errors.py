"""Errors are typed and name the tensor and the file; nothing is skipped silently."""
from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

import affectlocus as al
from affectlocus.diff import diff


@pytest.fixture
def ckpts(llama, tmp_path):
    llama(0).save_pretrained(tmp_path / "base")
    llama(1).save_pretrained(tmp_path / "tuned")
    return tmp_path / "base", tmp_path / "tuned"


def test_different_architectures(llama, ckpts, tmp_path):
    base, _ = ckpts
    llama(0, hidden_size=32).save_pretrained(tmp_path / "narrow")
    with pytest.raises(al.ArchitectureError, match=r"hidden_size 64 vs 32") as err:
        diff(base, tmp_path / "narrow", progress=False)
    assert "config.json" in str(err.value) and "narrow" in str(err.value)
    llama(0, num_hidden_layers=4).save_pretrained(tmp_path / "deeper")
    with pytest.raises(al.ArchitectureError, match="num_hidden_layers 3 vs 4"):
        diff(base, tmp_path / "deeper", progress=False)
    deeper = load_file(str(tmp_path / "deeper" / "model.safetensors"))
    save_file(deeper, tmp_path / "deeper.safetensors")  # no config.json: caught from the keys
    with pytest.raises(al.ArchitectureError, match="layers up to 3, the base has 3"):
        diff(base, tmp_path / "deeper.safetensors", progress=False)


def test_missing_tensors_are_all_named(ckpts, tmp_path):
    base, tuned = ckpts
    state = load_file(str(tuned / "model.safetensors"))
    del state["model.layers.1.mlp.up_proj.weight"], state["model.layers.2.self_attn.k_proj.weight"]
    save_file(state, tmp_path / "partial.safetensors")
    with pytest.raises(al.SourceError, match=r"lacks tensors for layers\.1\.up, layers\.2\.k") as err:
        diff(base, tmp_path / "partial.safetensors", progress=False)
    assert "partial.safetensors" in str(err.value)
    # asking only for what exists works, and says so
    table = diff(base, tmp_path / "partial.safetensors", modules="gate", progress=False)
    assert table.describe() == "3 sites: modules gate × layers 0–2 of 3"


def test_shape_mismatch_names_tensor_and_file(ckpts, tmp_path):
    base, tuned = ckpts
    state = load_file(str(tuned / "model.safetensors"))
    state["model.layers.2.mlp.down_proj.weight"] = torch.zeros(64, 100)
    save_file(state, tmp_path / "odd.safetensors")
    with pytest.raises(al.ShapeMismatchError,
                       match=r"odd\.safetensors: tensor 'model\.layers\.2\.mlp\.down_proj\.weight' has shape "
                             r"\(64, 100\), the model's site layers\.2\.down is \(64, 128\)"):
        diff(base, tmp_path / "odd.safetensors", progress=False)


def test_adapter_for_another_base(llama, trained_adapter, tmp_path):
    narrow = llama(0, hidden_size=32, intermediate_size=128)
    with pytest.raises(al.ShapeMismatchError, match=r"adapter .*layers\.0\.q.*another base"):
        diff(narrow, trained_adapter / "adapter", progress=False)
    shallow = llama(0, num_hidden_layers=2)
    with pytest.raises(al.SourceError, match=r"updates layers the base lacks .*layers\.2\."):
        diff(shallow, trained_adapter / "adapter", progress=False)
    with pytest.raises(al.SourceError, match="base must hold weights"):
        diff(trained_adapter / "adapter", trained_adapter / "base", progress=False)


def test_corrupt_and_truncated_files(ckpts, tmp_path):
    base, tuned = ckpts
    data = (tuned / "model.safetensors").read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((tuned / "config.json").read_text())
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(al.SourceError, match=r"cut/model\.safetensors") as err:
        diff(base, cut, progress=False)
    assert re.search(r"corrupt|truncated", str(err.value))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(al.SourceError, match="junk.safetensors"):
        diff(base, junk, progress=False)


def test_truncated_tensor_data_is_named(ckpts, tmp_path):
    """A header that is intact but promises more bytes than the file holds fails on that tensor."""
    base, tuned = ckpts
    from affectlocus.diff.readers import SafetensorsFile
    data = bytearray((tuned / "model.safetensors").read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    key = "model.layers.0.mlp.gate_proj.weight"
    start, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [start, end + 10 ** 9]
    raw = json.dumps(header).encode()
    path = tmp_path / "lying.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(data[8 + n:]))
    with pytest.raises(al.SourceError, match=rf"lying\.safetensors: tensor '{re.escape(key)}'.*corrupt"):
        SafetensorsFile(path).entry(key)


def test_base_checkpoint_missing_a_layer_its_config_declares(ckpts, tmp_path):
    base, tuned = ckpts
    state = {k: v for k, v in load_file(str(base / "model.safetensors")).items() if ".layers.2." not in k}
    (tmp_path / "b").mkdir()
    save_file(state, tmp_path / "b" / "model.safetensors")
    (tmp_path / "b" / "config.json").write_text((base / "config.json").read_text())
    with pytest.raises(al.SourceError, match=r"b/model\.safetensors lacks tensors for layers\.2\.q"):
        diff(tmp_path / "b", tuned, progress=False)


def test_non_finite_weights(llama, twin, tmp_path):
    base = llama(0)
    tuned = twin(base)
    with torch.no_grad():
        tuned.model.layers[1].self_attn.o_proj.weight[0, 0] = float("nan")
    with pytest.raises(al.NonFiniteError, match=r"layers\.1\.o"):
        diff(base, tuned, progress=False)
    tuned.save_pretrained(tmp_path / "nan")  # found while streaming; the reader thread is stopped
    with pytest.raises(al.NonFiniteError, match=r"'model\.layers\.1\.self_attn\.o_proj\.weight' in .*nan"):
        diff(base, tmp_path / "nan", progress=False, chunk_elements=64)


def test_bad_arguments(llama):
    base = llama(0)
    with pytest.raises(al.ConfigError, match="unknown metric"):
        diff(base, base, metrics="cosine", progress=False)
    with pytest.raises(al.SiteError, match="out of range"):
        diff(base, base, layers=7, progress=False)
    with pytest.raises(al.SourceError, match="not found"):
        diff(base, "/nonexistent/ckpt", progress=False)
