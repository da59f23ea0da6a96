"""Safetensors checkpoints (single file or sharded via the index json), read lazily.

Tensors are read one at a time (:class:`SafetensorsFile`: a private map of just that tensor's bytes), only the rows a
site needs, so memory stays at one tensor: grafting a whole checkpoint in place holds no copy of it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from ..errors import SourceError
from ..sites import Site
from .base import KeyIndex, Source
from .safetensors_file import SafetensorsFile

INDEX_NAME = "model.safetensors.index.json"


class SafetensorsSource(Source):
    """Donor weights from a ``.safetensors`` file, a sharded index json, or a folder holding either.

    One tensor (a fused weight: only the site's rows) is read per request, into fresh memory.
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
        self._handles: dict[Path, SafetensorsFile] = {}
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
            self._file_of = {k: path for k in self._handle(path).entries}
        self.index = KeyIndex(self._file_of, str(path))

    @property
    def description(self) -> str:
        return f"safetensors checkpoint {self.path}"

    def _handle(self, file: Path) -> SafetensorsFile:
        if file not in self._handles:
            self._handles[file] = SafetensorsFile(file)
        return self._handles[file]

    def key_of(self, site: Site) -> str | None:
        return self.index.find(site)

    def covers(self, site: Site) -> bool:
        return self.key_of(site) is not None

    def site_names(self) -> list[str]:
        return list(self._file_of)

    def read_key(self, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """One 2-D tensor by its checkpoint key (rows ``a:b`` of it), in its stored dtype."""
        file = self._handle(self._file_of[key])
        dtype, shape, _, _ = file.entry(key)
        if len(shape) != 2:
            raise SourceError(f"{file.path}: tensor {key!r} has shape {tuple(shape)}, not a 2-D weight")
        a, b = rows or (0, shape[0])
        if b > shape[0]:
            raise SourceError(f"{file.path}: tensor {key!r} has {shape[0]} rows; rows {a}:{b} were asked "
                              f"for — made for another architecture or size?")
        return file.read_rows(key, a, b)

    def _read(self, site: Site, base: torch.Tensor | None) -> torch.Tensor:
        key = self.key_of(site)
        if key is None:
            raise SourceError(f"{self.description} has no tensor for {site.name} "
                              f"(looked for a key ending in {site.weight_key!r})")
        return self.read_key(key, site.rows)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
