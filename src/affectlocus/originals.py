"""Where a parameter's original values wait during an in-place swap: host RAM or an unlinked file.

An in-place swap copies the donor into the parameter's own storage, so the device holds one copy
of each weight (a 7B bf16 ``graft(all)`` needs no extra ≈ 13 GB); the original leaves the device:

- ``"host"``: a host-RAM copy (the policy for parameters on an accelerator);
- ``"disk"``: one unlinked temporary file per handle (``tempfile.TemporaryFile``, honours
  ``TMPDIR``) written straight from the parameters' storage and read back into it — the policy for
  CPU parameters, whose RAM is the device; the file vanishes when the handle detaches or the
  process ends. (Pages a writer leaves in the OS page cache are not the process's memory.)

Restoring copies the saved bytes back, so the result is bit-exact.
"""
from __future__ import annotations

import tempfile
from typing import Literal, Union

import torch

from .errors import InterventionError

InplacePolicy = Union[bool, Literal["host", "disk"]]
POLICIES = (False, True, "host", "disk")


def resolve_policy(inplace: InplacePolicy, tensor: torch.Tensor) -> str | None:
    """``None`` (rebind), ``"host"`` or ``"disk"`` for ``tensor``; ``True`` picks by device."""
    if inplace is False or inplace is None:
        return None
    if inplace is True:
        return "disk" if tensor.device.type == "cpu" and _real(tensor) else "host"
    if inplace == "disk" and not (tensor.device.type == "cpu" and _real(tensor)):
        raise InterventionError(f"inplace='disk' keeps originals of CPU weights; this weight is on "
                                f"{tensor.device}: use inplace='host' (or True)")
    if inplace in ("host", "disk"):
        return inplace
    raise InterventionError(f"inplace must be one of {POLICIES}, got {inplace!r}")


def _real(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor
    return not isinstance(tensor, FakeTensor) and not tensor.is_meta


def _bytes(tensor: torch.Tensor):
    """A writable byte view of a contiguous CPU tensor's storage (no copy)."""
    return memoryview(tensor.view(-1).view(torch.uint8).numpy())


class SwapFile:
    """One unlinked temporary file per handle; originals are appended and read back by offset."""

    def __init__(self):
        self._fh = tempfile.TemporaryFile(prefix="affectlocus-originals-")
        self._end = 0

    def write(self, tensor: torch.Tensor) -> int:
        """Append ``tensor``'s bytes (written straight from its storage); return their offset."""
        view = _bytes(tensor.detach().contiguous())
        offset = self._end
        self._fh.seek(offset)
        self._fh.write(view)
        self._end += len(view)
        return offset

    def read_into(self, offset: int, out: torch.Tensor) -> None:
        """Fill the contiguous CPU tensor ``out`` from ``offset``."""
        self._fh.seek(offset)
        view, done = _bytes(out), 0
        while done < len(view):
            n = self._fh.readinto(view[done:])
            if not n:
                raise InterventionError(f"in-place swap file ended after {done} of {len(view)} bytes")
            done += n

    def close(self) -> None:
        """Delete the file (safe to call twice)."""
        self._fh.close()


class SavedOriginal:
    """The values a parameter held before an in-place swap; :meth:`restore` copies them back."""

    def __init__(self, tensor: torch.Tensor, policy: str, file: SwapFile | None = None):
        self.policy = policy
        self.shape, self.dtype = tensor.shape, tensor.dtype
        self._host: torch.Tensor | None = None
        self._file, self._offset = file, 0
        if policy == "host":
            self._host = tensor.detach().to("cpu", copy=True)
        else:
            if file is None:
                raise InterventionError("inplace='disk' needs a swap file")
            self._offset = file.write(tensor)

    def load(self) -> torch.Tensor:
        """A fresh host tensor holding the original values."""
        if self._host is not None:
            return self._host.clone()
        out = torch.empty(self.shape, dtype=self.dtype)
        self._file.read_into(self._offset, out)
        return out

    def restore(self, param: torch.Tensor) -> None:
        """Copy the original values back into ``param``'s storage."""
        with torch.no_grad():
            if self._host is not None:
                param.copy_(self._host)
            elif param.is_contiguous() and param.device.type == "cpu":
                self._file.read_into(self._offset, param.detach())
            else:
                param.copy_(self.load())

    def close(self) -> None:
        """Drop the host copy (the swap file belongs to the handle)."""
        self._host = None
