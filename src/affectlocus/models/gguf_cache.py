"""Convert a GGUF file once into a safetensors cache; verify it on every load; rebuild it if broken.

The cache of ``foo.gguf`` lives in ``$AFFECTLOCUS_HOME/models/foo-<key>`` (default home
``~/.cache/affectlocus``); ``<key>`` hashes the file's size and first + last MiB, the transformers major
version and this cache's format version, so a changed file or a new transformers gets a fresh cache.
The weights are dequantised by transformers (for the embedded model: Q4_1 → float32), so the cache is
exactly what a GGUF load gives, only ~20× faster to load.

A cache is built in a temporary folder beside its final place and moved in with ``os.replace`` under a
file lock, so a crash or a concurrent builder never leaves a half-written cache behind. Every load checks
the manifest (each file's size and the sha256 of its first + last MiB, ~ms) and parses the safetensors
header; the full sha256 of the weights (~0.6 s for the embedded model) is checked only with ``full=True``.
A cache that fails the check is removed and rebuilt, with a warning.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import ModelLoadError

try:  # POSIX; elsewhere temp folder + os.replace still keep the cache whole
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "affectlocus-manifest.json"
FORMAT_VERSION = 1
_MIB = 1 << 20
# transformers 5 writes the loading kwargs into tokenizer_config.json; they do not belong in a cache.
_TOKENIZER_NOISE = ("is_local", "local_files_only", "gguf_file")


def home() -> Path:
    """``$AFFECTLOCUS_HOME`` or ``~/.cache/affectlocus``."""
    return Path(os.environ.get("AFFECTLOCUS_HOME") or "~/.cache/affectlocus").expanduser()


def edge_hash(path: Path) -> str:
    """sha256 of the size plus the first and last MiB: cheap, and changes with any truncation."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        if size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
            h.update(fh.read(_MIB))
    return h.hexdigest()


def full_hash(path: Path) -> str:
    """sha256 of the whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(16 * _MIB), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(gguf: str | Path) -> Path:
    """Where the cache of ``gguf`` lives (keyed by content fingerprint and transformers major version)."""
    import transformers
    gguf = Path(gguf)
    major = transformers.__version__.split(".")[0]
    key = hashlib.sha256(f"{edge_hash(gguf)}|tf{major}|v{FORMAT_VERSION}".encode()).hexdigest()[:12]
    return home() / "models" / f"{gguf.stem}-{key}"


def safetensors_problem(path: Path) -> str | None:
    """``None`` if ``path``'s safetensors header parses and its tensors exactly fill the file."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                return f"{path.name}: header length {n} exceeds the file ({size} bytes)"
            header = json.loads(fh.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (struct.error, ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as exc:
        return f"{path.name}: unreadable safetensors header ({type(exc).__name__}: {exc})"
    if 8 + n + max(ends, default=0) != size:
        return f"{path.name}: tensors need {8 + n + max(ends, default=0)} bytes, the file has {size}"
    return None


def verify(folder: str | Path, full: bool = False) -> str | None:
    """``None`` if the cache at ``folder`` is complete and intact, else the reason it is not.

    Checks every manifest file's size and first/last-MiB hash and each safetensors header;
    ``full=True`` also checks the whole-file sha256 of every file.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return "no manifest (missing or partial cache)"
    try:
        info = json.loads(manifest.read_text())
        files = info["files"]
        if info.get("format") != FORMAT_VERSION:
            return f"cache format {info.get('format')}, expected {FORMAT_VERSION}"
    except (ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest ({exc})"
    if not any(name.endswith(".safetensors") for name in files):
        return "the manifest lists no weights file"
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != meta["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['bytes']}"
        if name.endswith(".safetensors") and (problem := safetensors_problem(path)):
            return problem
        if edge_hash(path) != meta["edge_sha256"]:
            return f"{name} content differs from its manifest"
        if full and full_hash(path) != meta["sha256"]:
            return f"{name} sha256 differs from its manifest"
    return None


@contextmanager
def _lock(target: Path) -> Iterator[None]:
    """An exclusive lock on ``.<name>.lock`` beside ``target`` (held by one builder at a time)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise with transformers, rebuild a plain model from its config, save safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    settings = quantised.config.to_dict()
    settings.pop("quantization_config", None)  # the weights are plain (dequantised) tensors now
    config = type(quantised.config).from_dict(settings)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    # assign=True keeps the tensors (and the sharing of tied embeddings); strict catches any renaming
    plain.load_state_dict(quantised.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    del quantised
    plain.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    tok_config = out / "tokenizer_config.json"
    if tok_config.is_file():
        data = json.loads(tok_config.read_text())
        tok_config.write_text(json.dumps({k: v for k, v in data.items() if k not in _TOKENIZER_NOISE},
                                         indent=2, ensure_ascii=False) + "\n")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _manifest(gguf: Path, folder: Path) -> dict:
    files = {p.name: {"bytes": p.stat().st_size, "edge_sha256": edge_hash(p), "sha256": full_hash(p)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    return {"format": FORMAT_VERSION, "source": str(gguf.resolve()), "source_bytes": gguf.stat().st_size,
            "source_edge_sha256": edge_hash(gguf), "files": files,
            "versions": {p: _version(p) for p in ("transformers", "torch", "gguf", "safetensors")},
            "note": "weights dequantised from GGUF by transformers (Q4_1 for the embedded model)"}


def _remove(path: Path) -> None:
    """Move ``path`` aside (atomic) and delete it, so it never appears half-deleted at its own name."""
    if not path.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _clean_leftovers(target: Path) -> None:
    """Delete temporary folders of builders that died (only called while holding the lock)."""
    for p in target.parent.glob(f".{target.name}.*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def ensure_cache(gguf: str | Path, rebuild: bool = False, full: bool = False) -> Path:
    """The verified cache folder of ``gguf``, converting it (once) when missing or broken.

    ``full=True`` also checks the whole-file sha256 of the cached files; ``rebuild=True`` always converts.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = cache_path(gguf)
    if not rebuild and verify(target, full=full) is None:
        return target
    with _lock(target):
        problem = "rebuild requested" if rebuild else verify(target, full=full)
        if problem is None:
            return target  # another process built it while we waited for the lock
        if target.exists():
            warnings.warn(f"affectlocus cache {target} is unusable ({problem}); removing and rebuilding it",
                          stacklevel=3)
        _clean_leftovers(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build.", dir=target.parent))
        try:
            try:
                _convert(gguf, tmp)
            except Exception as exc:
                raise ModelLoadError(f"cannot convert GGUF {gguf} with transformers: "
                                     f"{type(exc).__name__}: {exc}") from exc
            (tmp / MANIFEST).write_text(json.dumps(_manifest(gguf, tmp), indent=2) + "\n")
            _remove(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


__all__ = ["FORMAT_VERSION", "MANIFEST", "cache_path", "edge_hash", "ensure_cache", "full_hash", "home",
           "safetensors_problem", "verify"]
