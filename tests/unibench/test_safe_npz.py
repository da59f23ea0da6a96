"""The restricted npz loader: plain data loads, anything that would run code is refused."""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from affectlocus.unibench.safe_npz import load_npz, load_npz_item
from affectlocus.errors import DataError, UnsafeFileError


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_pickled_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.npz"
    arr = np.empty((), dtype=object)
    arr[()] = {"x": _Evil(marker)}
    np.savez(bad, corpus=arr)
    with pytest.raises(UnsafeFileError) as info:
        load_npz(bad)
    msg = str(info.value)
    assert str(bad) in msg and "corpus.npy" in msg
    assert f"{os.system.__module__}.system" in msg  # posix.system on Linux
    assert not marker.exists()


def test_refuses_other_classes(tmp_path: Path) -> None:
    path = tmp_path / "od.npz"
    arr = np.empty((), dtype=object)
    arr[()] = collections.OrderedDict(a=1)
    np.savez(path, d=arr)
    with pytest.raises(UnsafeFileError, match="collections.OrderedDict"):
        load_npz_item(path, "d")


def test_plain_containers_and_arrays_round_trip(tmp_path: Path) -> None:
    value = {"a": [1, 2.5, None, True], "b": ("x", b"\x00y"), "c": {1, 2}, "d": np.float32(1.5),
             "e": np.arange(6).reshape(2, 3), "f": frozenset({"z"}), "g": 3 + 4j}
    obj = np.empty((), dtype=object)
    obj[()] = value
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, obj=obj, num=np.arange(10, dtype=np.int16).reshape(2, 5),
                        txt=np.array(["a", "bc"]), fort=np.asfortranarray(np.ones((3, 2))))
    out = load_npz(path)
    assert set(out) == {"obj", "num", "txt", "fort"}
    got = out["obj"].item()
    assert got.keys() == value.keys()
    assert got["a"] == value["a"] and got["b"] == value["b"] and got["c"] == value["c"]
    assert got["d"] == np.float32(1.5) and got["d"].dtype == np.float32
    assert np.array_equal(got["e"], value["e"]) and got["f"] == value["f"] and got["g"] == value["g"]
    assert np.array_equal(out["num"], np.arange(10, dtype=np.int16).reshape(2, 5))
    assert out["txt"].tolist() == ["a", "bc"] and np.array_equal(out["fort"], np.ones((3, 2)))
    assert load_npz_item(path, "obj")["a"] == value["a"]


def test_single_npy_and_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.arange(3))
    assert load_npz(tmp_path / "a.npy")["a"].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not an .npz"):
        load_npz(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "trunc.npz", "w") as zf:
        raw = pickle.dumps({"a": 1})
        zf.writestr("x.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (), }"
                    .ljust(128 - 1, b" ") + b"\n" + raw[:5])
    with pytest.raises(DataError, match="cannot read"):
        load_npz(tmp_path / "trunc.npz")
    np.savez(tmp_path / "k.npz", a=np.arange(2))
    with pytest.raises(DataError, match="no array 'b'"):
        load_npz_item(tmp_path / "k.npz", "b")


def test_real_label_file_matches_numpy(shared_dir: Path, require_data) -> None:
    path = require_data(shared_dir / "conformance" / "labels" / "mer2023-dataset-process" / "label-6way.npz",
                        "MER2023 label file")
    ours = load_npz(path)
    ref = np.load(path, allow_pickle=True)  # trusted benchmark file, for comparison only
    assert set(ours) == set(ref.files) == {"train_corpus", "test1_corpus", "test2_corpus", "test3_corpus"}
    for key in ref.files:
        assert ours[key].item() == ref[key].item()
    test1 = ours["test1_corpus"].item()
    assert len(test1) == 411 and test1["sample_00001998"]["emo"] == "worried"
