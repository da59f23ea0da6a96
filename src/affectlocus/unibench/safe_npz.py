"""Load ``.npz`` / ``.npy`` files whose object arrays hold pickled Python data, without running code.

MER-UniBench label files and AffectGPT outputs store dicts in 0-d object arrays, which
``numpy.load`` only reads with ``allow_pickle=True`` — and a pickle can run arbitrary code. Here
each member of the zip is parsed with ``numpy.lib.format`` header reading; plain arrays are read
with pickling disabled, and object arrays go through :class:`RestrictedUnpickler`, which resolves
only a fixed allow-list of globals (numpy's array/dtype/scalar reconstructors and a few builtins).
Anything else raises :class:`~affectlocus.errors.UnsafeFileError` naming the file and the global.
"""
from __future__ import annotations

import codecs
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npformat

from ..errors import DataError, UnsafeFileError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

#: (module, name) → object: the only globals a pickle may reference.
_ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _multiarray._reconstruct
    _ALLOWED[(_mod, "scalar")] = _multiarray.scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _numeric._frombuffer
for _mod in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "ndarray")] = np.ndarray
    _ALLOWED[(_mod, "dtype")] = np.dtype
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in (("set", set), ("frozenset", frozenset), ("complex", complex),
                        ("list", list), ("dict", dict), ("tuple", tuple), ("bytearray", bytearray)):
        _ALLOWED[(_mod, _name)] = _obj
_ALLOWED[("_codecs", "encode")] = codecs.encode  # protocol-2 pickles spell bytes this way
# numpy's DType classes (harmless constructors; allowed in case a writer names them)
for _name in dir(getattr(np, "dtypes", object())):
    if _name.endswith("DType"):
        _ALLOWED[("numpy.dtypes", _name)] = getattr(np.dtypes, _name)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals; ``source`` names the file in errors."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafeFileError(
                f"{self.source}: refuses to load the pickled global {module}.{name}; only plain "
                "containers, strings, numbers and numpy arrays/dtypes/scalars are allowed")
        return obj

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise UnsafeFileError(f"{self.source}: pickled persistent id {pid!r} is not allowed")


def _read_member(raw: bytes, source: str) -> np.ndarray:
    """Read one ``.npy`` payload: plain arrays without pickle, object arrays via the safe unpickler."""
    fh = io.BytesIO(raw)
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            _, _, dtype = npformat.read_array_header_1_0(fh)
        else:
            _, _, dtype = npformat.read_array_header_2_0(fh)
        if not dtype.hasobject:
            fh.seek(0)
            return npformat.read_array(fh, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{source}: not a valid .npy array ({exc})") from exc
    try:
        arr = RestrictedUnpickler(fh, source).load()
    except UnsafeFileError:
        raise
    except Exception as exc:  # corrupt or truncated pickle stream
        raise DataError(f"{source}: cannot read the pickled object array ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{source}: object member unpickled to {type(arr).__name__}, not an array")
    return arr


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (or a single ``.npy``, keyed by its stem), loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    if path.suffix == ".npy":
        return {path.stem: _read_member(path.read_bytes(), str(path))}
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not an .npz (zip) file ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    with zf:
        for member in zf.namelist():
            key = member[:-4] if member.endswith(".npy") else member
            out[key] = _read_member(zf.read(member), f"{path}[{member}]")
    return out


def load_npz_item(path: str | Path, key: str) -> Any:
    """One array of an ``.npz``, unwrapped: a 0-d object array gives its object (``.item()``)."""
    arrays = load_npz(path)
    if key not in arrays:
        raise DataError(f"{path}: has no array {key!r}; it holds: {', '.join(sorted(arrays))}")
    arr = arrays[key]
    return arr.item() if arr.dtype.hasobject and arr.shape == () else arr


__all__ = ["RestrictedUnpickler", "load_npz", "load_npz_item"]
