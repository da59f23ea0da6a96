"""The GGUF → safetensors cache: atomic build, verification, rebuild of corrupt or partial caches."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

import affectlocus as al
from affectlocus.models import embedded_gguf, gguf_cache

from _util import assert_bit_identical, state_snapshot


def _leftovers(folder):
    return [p.name for p in folder.parent.iterdir() if p.is_dir() and p.name.startswith(f".{folder.name}.")]


def test_built_once_then_reused(fake_gguf, private_home):
    gguf, calls = fake_gguf
    first = gguf_cache.ensure_cache(gguf)
    second = gguf_cache.ensure_cache(gguf)
    assert first == second and len(calls) == 1
    assert first.parent == private_home / "models" and first.name.startswith("toy-")
    assert gguf_cache.verify(first, full=True) is None
    assert not _leftovers(first), "no temporary build folder may remain"
    manifest = json.loads((first / gguf_cache.MANIFEST).read_text())
    weights = manifest["files"]["model.safetensors"]
    assert weights["bytes"] == (first / "model.safetensors").stat().st_size > 4 << 20
    assert weights["sha256"] == gguf_cache.full_hash(first / "model.safetensors")
    assert manifest["source"] == str(gguf.resolve()) and manifest["format"] == gguf_cache.FORMAT_VERSION
    assert {"transformers", "torch", "gguf", "safetensors"} <= set(manifest["versions"])
    assert "not installed" not in manifest["versions"].values()


def _damage(folder, how):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if how == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "truncate_tail":
        weights.write_bytes(data[:-100])
    elif how == "delete_manifest":  # a build that died before its manifest was written
        (folder / gguf_cache.MANIFEST).unlink()
    elif how == "garbage_manifest":
        (folder / gguf_cache.MANIFEST).write_text("{not json")
    elif how == "flip_tail":
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "garbage_header":
        data[8:16] = b"\xff" * 8
        weights.write_bytes(bytes(data))
    elif how == "delete_weights":
        weights.unlink()
    elif how == "delete_tokenizer_like_file":
        (folder / "config.json").unlink()


DAMAGES = ["truncate", "truncate_tail", "delete_manifest", "garbage_manifest", "flip_tail", "garbage_header",
           "delete_weights", "delete_tokenizer_like_file"]


@pytest.mark.parametrize("how", DAMAGES)
def test_corrupt_or_partial_cache_is_detected_and_rebuilt(fake_gguf, how):
    gguf, calls = fake_gguf
    folder = gguf_cache.ensure_cache(gguf)
    _damage(folder, how)
    assert gguf_cache.verify(folder) is not None
    with pytest.warns(UserWarning, match="unusable .* rebuilding"):
        again = gguf_cache.ensure_cache(gguf)
    assert again == folder and len(calls) == 2 and gguf_cache.verify(folder, full=True) is None
    assert not _leftovers(folder)


def test_a_flip_in_the_middle_needs_the_full_check(fake_gguf):
    gguf, calls = fake_gguf
    folder = gguf_cache.ensure_cache(gguf)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    assert gguf_cache.verify(folder) is None  # the cheap check reads the edges only (documented)
    assert "sha256 differs" in gguf_cache.verify(folder, full=True)
    with pytest.warns(UserWarning, match="rebuilding"):
        gguf_cache.ensure_cache(gguf, full=True)
    assert len(calls) == 2 and gguf_cache.verify(folder, full=True) is None


def test_failed_conversion_leaves_nothing_behind(fake_gguf, monkeypatch):
    gguf, _ = fake_gguf

    def fail(src, out):
        (out / "model.safetensors").write_bytes(b"half written")
        raise RuntimeError("unsupported architecture")
    monkeypatch.setattr(gguf_cache, "_convert", fail)
    with pytest.raises(al.ModelLoadError, match="cannot convert GGUF .*unsupported architecture"):
        gguf_cache.ensure_cache(gguf)
    target = gguf_cache.cache_path(gguf)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_dead_builder_are_cleaned(fake_gguf):
    gguf, calls = fake_gguf
    target = gguf_cache.cache_path(gguf)
    stale = target.parent / f".{target.name}.build.dead"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    gguf_cache.ensure_cache(gguf)
    assert not stale.exists() and len(calls) == 1


def test_concurrent_builders_convert_once(fake_gguf, monkeypatch):
    gguf, calls = fake_gguf
    convert = gguf_cache._convert

    def slow(src, out):
        time.sleep(0.3)
        convert(src, out)
    monkeypatch.setattr(gguf_cache, "_convert", slow)
    results, errors = [], []

    def build():
        try:
            results.append(gguf_cache.ensure_cache(gguf))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(calls) == 1
    assert gguf_cache.verify(results[0], full=True) is None


def test_content_changes_change_the_key(fake_gguf):
    gguf, _ = fake_gguf
    before = gguf_cache.cache_path(gguf)
    gguf.write_bytes(gguf.read_bytes() + b"more")
    assert gguf_cache.cache_path(gguf) != before
    assert gguf_cache.cache_path(gguf).name.startswith("toy-")


def test_missing_gguf(private_home, tmp_path):
    with pytest.raises(al.ModelLoadError, match="GGUF file not found"):
        gguf_cache.ensure_cache(tmp_path / "nope.gguf")


def test_safetensors_header_check(tmp_path):
    from safetensors.torch import save_file
    file = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(1000)}, str(file))
    assert gguf_cache.safetensors_problem(file) is None
    file.write_bytes(file.read_bytes()[:-10])
    assert "the file has" in gguf_cache.safetensors_problem(file)
    file.write_bytes(b"\x00" * 3)
    assert "unreadable" in gguf_cache.safetensors_problem(file)


def test_truncated_embedded_cache_is_rebuilt_on_load(embedded, private_home, monkeypatch):
    """The real cache, truncated in a private home: load_model warns, rebuilds, and loads the same model."""
    good = Path(embedded[0].name_or_path)  # the default cache folder, built by the `embedded` fixture
    broken = gguf_cache.cache_path(embedded_gguf())
    assert broken.parent == private_home / "models" and broken.name == good.name
    shutil.copytree(good, broken, ignore=shutil.ignore_patterns("model.safetensors"))
    with open(good / "model.safetensors", "rb") as src:
        (broken / "model.safetensors").write_bytes(src.read(64 << 20))  # a copy that stopped part-way

    def rebuild(src, out):  # what a conversion gives, without spending ~20 s on it
        for p in good.iterdir():
            if p.name != gguf_cache.MANIFEST:
                try:
                    (out / p.name).hardlink_to(p)  # read-only use: nothing writes these files
                except OSError:
                    shutil.copy2(p, out / p.name)
    monkeypatch.setattr(gguf_cache, "_convert", rebuild)
    with pytest.warns(UserWarning, match="model.safetensors has .* bytes, expected"):
        model, tok = al.load_model("smollm2-135m")
    assert gguf_cache.verify(broken) is None and Path(model.name_or_path) == broken
    assert_bit_identical(model, state_snapshot(embedded[0]))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert tok("hello").input_ids == embedded[1]("hello").input_ids


@pytest.mark.slow
def test_real_conversion_matches_the_cache_and_the_dequantised_gguf(embedded, private_home, monkeypatch):
    """Convert the embedded GGUF for real (~20–30 s on 2 idle cores) in a private home."""
    from transformers import AutoModelForCausalLM
    original, seen = AutoModelForCausalLM.from_pretrained, []

    def spy(*args, **kwargs):  # keep what transformers' GGUF load gave, to compare after the round trip
        seen.append(original(*args, **kwargs))
        return seen[-1]
    gguf = embedded_gguf()
    with monkeypatch.context() as patch:
        patch.setattr(AutoModelForCausalLM, "from_pretrained", staticmethod(spy))
        folder = gguf_cache.ensure_cache(gguf)
    assert len(seen) == 1 and folder.parent.parent == private_home
    assert Path(al.models.resolve(gguf)) == folder
    assert gguf_cache.verify(folder, full=True) is None
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & set(tok_config)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    model, tok = al.load_model(gguf)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert_bit_identical(model, state_snapshot(seen[0]))  # the cache is exactly the dequantised GGUF
    assert_bit_identical(model, state_snapshot(embedded[0]))
    assert tok.chat_template == embedded[1].chat_template
