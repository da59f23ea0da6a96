"""DiffTable persistence, figures, compare_diffs, and the ``diff`` command line."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import affectlocus as al
from affectlocus.diff import DiffTable, compare_diffs, diff
from affectlocus.cli import main as cli_main



def main(argv):
    return cli_main(["diff", *argv])


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def table(pair):
    base, tuned = pair
    return diff(base, tuned, metrics="all", progress=False, sample=2000)


def _png(path):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, path
    return data


def test_frame_is_tidy(table):
    frame = table.to_frame()
    assert list(frame.columns) == ["layer", "module", "metric", "value"]
    assert set(frame.metric) == {"l2", "rms", "relative", "base_l2", "unchanged", "relchg_q50", "relchg_q90",
                                 "relchg_q99"}
    assert len(frame) == 21 * 8
    wide = table.wide()
    assert len(wide) == 21 and {"numel", "method", "l2"} <= set(wide.columns)


def test_save_and_load_round_trip(table, tmp_path):
    out = table.save(tmp_path / "run")
    assert sorted(p.name for p in out.iterdir()) == ["diff.csv", "diff.json", "rows.safetensors"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "diff.csv"), table.to_frame(), check_dtype=False)
    back = DiffTable.load(out)
    pd.testing.assert_frame_equal(back.to_frame(), table.to_frame())
    assert back.meta == json.loads(json.dumps(table.meta))
    assert np.array_equal(back.edges, table.edges)
    for a, b in zip(table.results, back.results):
        assert a.shape == b.shape and a.method == b.method and np.array_equal(a.hist, b.hist)
        assert (a.lines is None and b.lines is None) or np.array_equal(a.lines, b.lines)
    table.save(out)  # overwriting is fine and leaves no temp files behind
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_load_errors(tmp_path):
    with pytest.raises(al.DataError, match="not a saved diff table"):
        DiffTable.load(tmp_path)
    (tmp_path / "diff.json").write_text('{"format": "other"}')
    with pytest.raises(al.DataError, match="not an affectlocus diff table"):
        DiffTable.load(tmp_path)


def test_nan_survives_save(llama, tmp_path):
    base = llama(0)
    g = torch.Generator().manual_seed(0)
    state = {"model.layers.0.mlp.up_proj.lora_A.weight": torch.randn(2, 64, generator=g),
             "model.layers.0.mlp.up_proj.lora_B.weight": torch.randn(128, 2, generator=g)}
    with pytest.warns(UserWarning):
        table = diff(base, al.sources.LoraSource(state, alpha=2, rank=2), modules="up", progress=False)
    back = DiffTable.load(table.save(tmp_path))
    assert np.isnan(back.matrix("base_l2")[2][0, 1]) and back.results[0].method == "factors"


def test_heatmap_histograms_and_compare_figures(table, pair, tmp_path):
    fig = table.heatmap("relative", path=tmp_path / "h.png")
    _png(tmp_path / "h.png")
    assert fig.axes[0].get_yticklabels()[4].get_text() == "gate"
    table.heatmap("l2", path=tmp_path / "h_log.png", log=True)
    _png(tmp_path / "h_log.png")
    table.histograms(path=tmp_path / "hist.png")
    _png(tmp_path / "hist.png")
    base, tuned = pair
    other = diff(base, tuned, modules="mlp", progress=False, metrics="relative")
    for shared, norm in [(False, None), (True, "max"), (False, "zscore")]:
        path = tmp_path / f"cmp_{shared}_{norm}.png"
        fig = compare_diffs({"all modules": table, "mlp only": other}, "relative", normalise=norm,
                            shared_scale=shared, path=path)
        _png(path)
        assert len(fig.axes) >= 3
    with pytest.raises(al.DataError, match="normalise"):
        compare_diffs({"a": table}, normalise="softmax")
    with pytest.raises(al.DataError, match="metric 'rows' not in this table"):
        table.heatmap("rows")
    no_hist = diff(base, tuned, metrics="l2", progress=False)
    with pytest.raises(al.DataError, match="no histograms"):
        no_hist.histograms()


def test_cli_writes_everything_and_prints_summary(pair, tmp_path, capsys):
    base, tuned = pair
    base.save_pretrained(tmp_path / "base")
    tuned.save_pretrained(tmp_path / "tuned", max_shard_size="30KB")
    out = tmp_path / "out"
    rc = main([str(tmp_path / "base"), str(tmp_path / "tuned"), "--modules", "attn,gate", "--layers", "0-1",
               "--metric", "rms", "--rows", "--sample", "500", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "compared 10 sites: modules q,k,v,o,gate × layers 0–1 of 3" in text
    assert "ranked by rms" in text and "top 5 sites by rms" in text
    assert len(text.splitlines()) < 30
    header = next(line for line in text.splitlines() if "rank" in line)
    assert all(c in header for c in ("l2", "rms", "relative"))
    names = {p.name for p in out.iterdir()}
    assert {"diff.csv", "diff.json", "rows.safetensors", "heatmap_l2.png", "heatmap_rms.png",
            "heatmap_relative.png", "histograms.png"} <= names
    log = [json.loads(line)["event"] for line in (out / "run.jsonl").read_text().splitlines()]
    assert log == ["start", "summary", "end"]  # the run's machine-readable log
    for name in names - {"diff.csv", "diff.json", "rows.safetensors", "run.jsonl"}:
        _png(out / name)
    assert len(DiffTable.load(out)) == 10


def test_cli_errors_are_one_line(tmp_path, capsys):
    rc = main([str(tmp_path / "missing"), str(tmp_path / "missing2"), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("affectlocus: error: SourceError: source path not found")


def test_register_adds_the_subcommand():
    import argparse
    from affectlocus.diff.cli import register
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diff", "a", "b", "--out", "o", "--layers", "10:20"])
    assert args.func.__name__ == "run" and args.layers == "10:20" and args.modules == "all"


def test_package_is_callable_so_al_diff_works_either_way(pair):
    import affectlocus.diff as package
    import affectlocus.diff.cli  # noqa: F401 - submodules stay importable
    base, tuned = pair
    table = package(base, tuned, modules="gate", metrics="l2", progress=False)
    assert isinstance(table, DiffTable) and len(table) == 3
