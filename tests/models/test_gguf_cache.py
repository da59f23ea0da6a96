"""The GGUF → safetensors cache: atomic build, verification, rebuild of corrupt or partial caches."""
from __future__ import annotations

import pytest

from affectlocus.models import gguf_cache, tiny_model


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """A stand-in GGUF file and a fast converter (a tiny model), in a private AFFECTLOCUS_HOME."""
    monkeypatch.setenv("AFFECTLOCUS_HOME", str(tmp_path / "home"))
    gguf = tmp_path / "toy.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    calls = []

    def convert(src, out):
        calls.append(src)
        tiny_model("llama").save_pretrained(str(out))
    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return gguf, calls


def test_built_once_then_reused(fake_gguf):
    gguf, calls = fake_gguf
    first = gguf_cache.ensure_cache(gguf)
    second = gguf_cache.ensure_cache(gguf)
    assert first == second and len(calls) == 1
    assert gguf_cache.verify(first, full=True) is None
    assert not [p for p in first.parent.iterdir() if p.name.startswith(f".{first.name}.")
                and p.is_dir()], "no temporary build folder may remain"


@pytest.mark.parametrize("damage", ["truncate", "delete_manifest", "flip_tail", "delete_weights"])
def test_corrupt_or_partial_cache_is_rebuilt(fake_gguf, damage):
    gguf, calls = fake_gguf
    folder = gguf_cache.ensure_cache(gguf)
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "delete_manifest":
        (folder / gguf_cache.MANIFEST).unlink()
    elif damage == "flip_tail":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        weights.unlink()
    assert gguf_cache.verify(folder) is not None
    with pytest.warns(UserWarning, match="rebuilding"):
        again = gguf_cache.ensure_cache(gguf)
    assert again == folder and len(calls) == 2 and gguf_cache.verify(folder, full=True) is None


def test_failed_conversion_leaves_nothing_behind(fake_gguf, monkeypatch):
    gguf, _ = fake_gguf
    monkeypatch.setattr(gguf_cache, "_convert", lambda src, out: (_ for _ in ()).throw(RuntimeError("x")))
    from affectlocus.errors import ModelLoadError
    with pytest.raises(ModelLoadError, match="cannot convert"):
        gguf_cache.ensure_cache(gguf)
    target = gguf_cache.cache_path(gguf)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_content_changes_change_the_key(fake_gguf):
    gguf, _ = fake_gguf
    before = gguf_cache.cache_path(gguf)
    gguf.write_bytes(gguf.read_bytes() + b"more")
    assert gguf_cache.cache_path(gguf) != before
