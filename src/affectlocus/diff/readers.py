"""Row-chunk readers: one site's weight, a few rows at a time, from any source.

Safetensors checkpoints are read one chunk of rows at a time (a private map of just those bytes,
:class:`~affectlocus.sources.safetensors_file.SafetensorsFile`, released with the chunk), so the
resident set stays at one chunk per tensor however large the checkpoint; other sources hand over their (already in-memory)
tensor and we slice it.
"""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Iterator

import torch

from ..errors import ShapeMismatchError, SourceError, _preview
from ..sites import Site
from ..sources import SafetensorsSource, Source
from ..sources.safetensors_file import SafetensorsFile

class SiteTensor:
    """One site's weight: ``rows`` rows, read by :meth:`read`; ``where`` names tensor and file."""

    def __init__(self, rows: int, read, where: str):
        self.rows, self.read, self.where = rows, read, where


class WeightReader:
    """Opens sites of one (weight, not delta) source as chunk-readable tensors."""

    def __init__(self, source: Source):
        self.source = source
        self._files: dict[Path, SafetensorsFile] = {}
        self.lazy = isinstance(source, SafetensorsSource)

    def _file(self, path: Path) -> SafetensorsFile:
        if path not in self._files:
            self._files[path] = SafetensorsFile(path)
        return self._files[path]

    def locate(self, site: Site) -> tuple[str, Path]:
        """(checkpoint key, file) of a site in a safetensors source."""
        key = self.source.key_of(site)
        if key is None:
            raise SourceError(f"{self.source.description} has no tensor for {site.name} "
                              f"(looked for a key ending in {site.weight_key!r})")
        return key, self.source._file_of[key]

    def validate(self, sites: list[Site]) -> None:
        """Fail before streaming: missing tensors (all listed), wrong shapes, corrupt headers."""
        if not self.lazy:
            self.source.check_covers(sites)
            return
        missing = [s for s in sites if self.source.key_of(s) is None]
        if missing:
            raise SourceError(f"{self.source.description} lacks tensors for "
                              f"{_preview(s.name for s in missing)} (looked for keys ending in "
                              f"{_preview(s.weight_key for s in missing[:3])})")
        for site in sites:
            key, path = self.locate(site)
            _, shape, _, _ = self._file(path).entry(key)
            lo, hi = site.rows or (0, site.shape[0])
            ok = len(shape) == 2 and shape[1] == site.shape[1] and (
                shape[0] >= hi if site.rows else shape[0] == site.shape[0])
            if not ok:
                raise ShapeMismatchError(f"{path}: tensor {key!r} has shape {tuple(shape)}, the model's "
                                         f"site {site.name} is {site.shape} — made for another "
                                         f"architecture or size?")

    def open(self, site: Site) -> SiteTensor:
        if self.lazy:
            key, path = self.locate(site)
            file = self._file(path)
            file.entry(key)
            off = site.rows[0] if site.rows else 0
            return SiteTensor(site.shape[0], lambda r0, r1: file.read_rows(key, off + r0, off + r1),
                              f"tensor {key!r} in {path}")
        tensor = self.source.weight(site)
        if tensor.is_meta:
            raise SourceError(f"{self.source.description}: the weight of {site.name} is on the meta "
                              f"device (no values to compare)")
        return SiteTensor(site.shape[0], lambda r0, r1: tensor[r0:r1],
                          f"{site.name} ({site.path}) of {self.source.description}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key → shape of every tensor, without reading data (safetensors sources only)."""
        out = {}
        for key, path in self.source._file_of.items():
            out[key] = self._file(path).entries[key][1]
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


class Prefetch:
    """Runs a generator in a background thread, ``depth`` items ahead (reads overlap compute).

    Errors raised by the generator are re-raised by ``next``; :meth:`close` stops the thread (the
    generator is abandoned, so close files only after it).
    """

    def __init__(self, items: Iterator, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True,
                                        name="affectlocus-diff-reader")
        self._thread.start()

    def _put(self, entry: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(("item", item)):
                    return
            self._put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", exc))

    def __iter__(self) -> "Prefetch":
        return self

    def __next__(self):
        kind, value = self._queue.get()
        if kind == "item":
            return value
        if kind == "error":
            raise value
        self._queue.put((kind, value))  # stay exhausted
        raise StopIteration

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
