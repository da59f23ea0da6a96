"""One ``.safetensors`` file, read one tensor (or one span of rows) at a time.

Each read maps only that tensor's byte range, privately (copy-on-write), and the returned tensor
owns the mapping: the bytes come straight from the page cache — no copy into fresh memory, no
page zeroing — and the mapping is gone when the tensor is freed (an in-place graft copies and drops
it; a rebound graft keeps it exactly as long as the grafted parameter lives). A file-wide map would
instead keep every page it ever touched resident until the file is closed. Writes to the tensor
stay private to the process. Where a span cannot be mapped (misaligned offset, a dtype
``torch.frombuffer`` lacks), a positioned read into fresh memory is the fallback.
"""
from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import torch

from ..errors import SourceError

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_MAX_HEADER = 200 * 1024 * 1024


class SafetensorsFile:
    """The header of one ``.safetensors`` file, and positioned reads of rows of its tensors."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")
        except OSError as exc:
            raise SourceError(f"cannot open safetensors file {self.path}: {exc}") from exc
        size = os.fstat(self._fh.fileno()).st_size
        raw = self._fh.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        if n < 2 or n > min(size - 8, _MAX_HEADER):
            self.close()
            raise SourceError(f"{self.path} is not a valid safetensors file (header length {n}, file "
                              f"size {size}): corrupt or truncated")
        try:
            header = json.loads(self._fh.read(n))
        except ValueError as exc:
            self.close()
            raise SourceError(f"{self.path}: unreadable safetensors header ({exc}); corrupt file?") from exc
        header.pop("__metadata__", None)
        self.data_start, self.data_size = 8 + n, size - 8 - n
        self.entries: dict[str, tuple[torch.dtype | None, tuple[int, ...], int, int]] = {}
        for key, info in header.items():
            start, end = info["data_offsets"]
            dtype = _DTYPES.get(info["dtype"])
            self.entries[key] = (dtype, tuple(info["shape"]), start, end)

    def entry(self, key: str, wanted_cols: int | None = None):
        """(dtype, shape, start, end) of ``key``, checked against the file's size and dtype table."""
        if key not in self.entries:
            raise SourceError(f"{self.path} has no tensor {key!r}")
        dtype, shape, start, end = self.entries[key]
        if dtype is None:
            raise SourceError(f"{self.path}: tensor {key!r} is not a floating-point tensor")
        expect = math.prod(shape) * dtype.itemsize
        if end - start != expect or end > self.data_size:
            raise SourceError(f"{self.path}: tensor {key!r} ({'×'.join(map(str, shape))}) lies outside the "
                              f"file's data ({end} > {self.data_size} bytes or size ≠ {expect}): "
                              f"corrupt or truncated file")
        return dtype, shape, start, end

    def read_rows(self, key: str, r0: int, r1: int) -> torch.Tensor:
        """Rows ``r0:r1`` of the 2-D tensor ``key``, in its stored dtype (see the module docstring)."""
        dtype, shape, start, _ = self.entry(key)
        cols = shape[1]
        offset = self.data_start + start + r0 * cols * dtype.itemsize
        nbytes = (r1 - r0) * cols * dtype.itemsize
        if os.fstat(self._fh.fileno()).st_size < offset + nbytes:  # shrunk since it was opened
            raise SourceError(f"{self.path}: tensor {key!r} is truncated (the file ends before byte "
                              f"{offset + nbytes})")
        if nbytes and offset % dtype.itemsize == 0:
            mapped = self._mapped(offset, nbytes, dtype)
            if mapped is not None:
                return mapped.view(r1 - r0, cols)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        self._fh.seek(offset)
        got = self._fh.readinto(memoryview(buf.numpy()))
        if got != nbytes:
            raise SourceError(f"{self.path}: tensor {key!r} is truncated (read {got} of {nbytes} bytes)")
        return buf.view(dtype).view(r1 - r0, cols)

    def _mapped(self, offset: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor | None:
        """A private (copy-on-write) map of ``nbytes`` at ``offset`` as a 1-D tensor that owns it."""
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            view = mmap.mmap(self._fh.fileno(), offset - base + nbytes, offset=base, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            return None
        try:
            return torch.frombuffer(view, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset - base)
        except (TypeError, ValueError, RuntimeError):
            view.close()
            return None

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
