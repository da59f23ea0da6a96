"""Safetensors checkpoints (single file or sharded via the index json), read lazily."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import SourceError
from ..sites import Site
from .base import KeyIndex, Source, slice_rows

INDEX_NAME = "model.safetensors.index.json"


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except FileNotFoundError as exc:
        raise SourceError(f"safetensors file not found: {path}") from exc
    except Exception as exc:  # safetensors raises SafetensorError / OSError for corrupt headers
        raise SourceError(f"cannot read safetensors file {path}: {exc} (corrupt or truncated?)") from exc


class SafetensorsSource(Source):
    """Donor weights from a ``.safetensors`` file, a sharded index json, or a folder holding either.

    Files are memory-mapped; one tensor is read per request, so memory stays at one tensor.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            if (path / INDEX_NAME).exists():
                path = path / INDEX_NAME
            else:
                files = sorted(path.glob("*.safetensors"))
                files = [f for f in files if not f.name.startswith("adapter_")]
                if len(files) != 1:
                    raise SourceError(f"{path}: expected {INDEX_NAME} or exactly one *.safetensors "
                                      f"file, found {[f.name for f in files] or 'none'}")
                path = files[0]
        if not path.exists():
            raise SourceError(f"checkpoint not found: {path}")
        self.path = path
        self._handles: dict[Path, object] = {}
        if path.name.endswith(".json"):
            try:
                weight_map = json.loads(path.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise SourceError(f"{path} is not a safetensors index (needs 'weight_map')") from exc
            self._file_of = {k: path.parent / v for k, v in weight_map.items()}
            for shard in sorted(set(self._file_of.values())):
                if not shard.exists():
                    raise SourceError(f"{path} names shard {shard.name}, which is missing")
        else:
            handle = self._handle(path)
            self._file_of = {k: path for k in handle.keys()}
        self.index = KeyIndex(self._file_of, str(path))

    @property
    def description(self) -> str:
        return f"safetensors checkpoint {self.path}"

    def _handle(self, file: Path):
        if file not in self._handles:
            self._handles[file] = _open(file)
        return self._handles[file]

    def key_of(self, site: Site) -> str | None:
        return self.index.find(site)

    def covers(self, site: Site) -> bool:
        return self.key_of(site) is not None

    def site_names(self) -> list[str]:
        return list(self._file_of)

    def read_key(self, key: str) -> torch.Tensor:
        """One tensor by its checkpoint key."""
        file = self._file_of[key]
        try:
            return self._handle(file).get_tensor(key)
        except Exception as exc:
            raise SourceError(f"cannot read tensor {key!r} from {file}: {exc} "
                              f"(corrupt or truncated file?)") from exc

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        key = self.key_of(site)
        if key is None:
            raise SourceError(f"{self.description} has no tensor for {site.name} "
                              f"(looked for a key ending in {site.weight_key!r})")
        return slice_rows(site, self.read_key(key))

    def close(self) -> None:
        self._handles.clear()
