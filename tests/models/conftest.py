"""Fixtures for model loading: the embedded model (default cache, built once), fake GGUF files."""
from __future__ import annotations

from pathlib import Path

import pytest

from affectlocus.models import gguf_cache, tiny_model


@pytest.fixture(scope="session")
def embedded():
    """``load_model("smollm2-135m")`` from the default ``$AFFECTLOCUS_HOME`` (so CI converts only once)."""
    import affectlocus as al
    return al.load_model("smollm2-135m")


@pytest.fixture
def private_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty ``$AFFECTLOCUS_HOME`` for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("AFFECTLOCUS_HOME", str(home))
    return home


@pytest.fixture
def fake_gguf(tmp_path, private_home, monkeypatch):
    """A stand-in GGUF file and a fast converter (a tiny llama with ~4 MiB of weights) → (path, calls).

    The weights are larger than 2 MiB so that the cheap first/last-MiB check does not cover the middle.
    """
    gguf = tmp_path / "toy.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    calls: list[Path] = []

    def convert(src: Path, out: Path) -> None:
        calls.append(src)
        tiny_model("llama", vocab_size=8192).save_pretrained(str(out))
    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return gguf, calls
