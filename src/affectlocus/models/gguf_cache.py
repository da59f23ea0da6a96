"""Convert a GGUF file once into a safetensors cache; verify it on every load; rebuild if broken.

The cache lives under ``$AFFECTLOCUS_HOME/models/<stem>-<fingerprint>`` (default home
``~/.cache/affectlocus``). It is built in a temporary folder beside its final place and moved in with
``os.replace``, under a file lock, so a crash or a concurrent builder never leaves a half-written cache.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import ModelLoadError

MANIFEST = "affectlocus-manifest.json"
FORMAT_VERSION = 1
_MIB = 1 << 20


def home() -> Path:
    """``$AFFECTLOCUS_HOME`` or ``~/.cache/affectlocus``."""
    return Path(os.environ.get("AFFECTLOCUS_HOME", "~/.cache/affectlocus")).expanduser()


def _edge_hash(path: Path) -> str:
    """sha256 of the size plus the first and last MiB: cheap, and changes with any truncation."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_MIB))
        if size > 2 * _MIB:
            fh.seek(-_MIB, os.SEEK_END)
            h.update(fh.read(_MIB))
    return h.hexdigest()


def _full_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(16 * _MIB), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(gguf: Path) -> Path:
    """Where the cache of ``gguf`` lives (keyed by content fingerprint and transformers major)."""
    import transformers
    major = transformers.__version__.split(".")[0]
    key = hashlib.sha256(f"{_edge_hash(gguf)}|tf{major}|v{FORMAT_VERSION}".encode()).hexdigest()[:12]
    return home() / "models" / f"{gguf.stem}-{key}"


def verify(folder: Path, full: bool = False) -> str | None:
    """``None`` if the cache at ``folder`` is complete and intact, else the reason it is not."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return "no manifest"
    try:
        info = json.loads(manifest.read_text())
        files = info["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest ({exc})"
    for name, meta in files.items():
        path = folder / name
        if not path.exists():
            return f"{name} missing"
        if path.stat().st_size != meta["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, expected {meta['bytes']}"
        if _edge_hash(path) != meta["edge_sha256"]:
            return f"{name} content differs from its manifest"
        if full and _full_hash(path) != meta["sha256"]:
            return f"{name} sha256 differs from its manifest"
    return None


@contextmanager
def _lock(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise with transformers, rebuild a plain model from config, save safetensors + tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(gguf_file=gguf.name, local_files_only=True)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config = AutoConfig.for_model(**config.to_dict())
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def ensure_cache(gguf: str | Path, rebuild: bool = False) -> Path:
    """The verified cache folder for ``gguf``, converting (once) when missing or broken."""
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    target = cache_path(gguf)
    if not rebuild and verify(target) is None:
        return target
    with _lock(target):
        problem = "rebuild requested" if rebuild else verify(target)
        if problem is None:
            return target  # another process built it while we waited
        if target.exists():
            warnings.warn(f"affectlocus cache {target} is unusable ({problem}); rebuilding", stacklevel=3)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            try:
                _convert(gguf, tmp)
            except Exception as exc:
                raise ModelLoadError(f"cannot convert GGUF {gguf}: {exc}") from exc
            files = {p.name: {"bytes": p.stat().st_size, "edge_sha256": _edge_hash(p),
                              "sha256": _full_hash(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
            import torch
            import transformers
            manifest = {"source": str(gguf), "source_bytes": gguf.stat().st_size, "files": files,
                        "format": FORMAT_VERSION, "transformers": transformers.__version__,
                        "torch": torch.__version__, "note": "weights are Q4_1-dequantised from GGUF"}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target
