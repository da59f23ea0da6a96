"""LoRA: a peft adapter trained a few steps, diffed from its folder (factor space) and from peft's
merged model (dense), gives the same table."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from affectlocus.diff import diff
from affectlocus.sources import open_source


def _by_site(table):
    return {(r.layer, r.module): r for r in table.results}


@pytest.mark.parametrize("base_kind", ["folder", "model"])
def test_adapter_folder_equals_merged_model(trained_adapter, base_kind, llama):
    root = trained_adapter
    base = root / "base" if base_kind == "folder" else llama(0)
    kw = dict(metrics="all", progress=False, sample=3000, seed=1)
    lora = diff(base, root / "adapter", **kw)
    dense = diff(base, root / "merged", **kw)
    assert {r.method for r in lora.results} == {"factors"} and {r.method for r in dense.results} == {"dense"}
    a, b = _by_site(lora), _by_site(dense)
    assert a.keys() == b.keys() and len(a) == 21
    for key in a:
        ra, rb = a[key], b[key]
        assert ra.values["l2"] > 0, f"{key}: training left B at zero"
        for metric in ("l2", "rms", "relative", "base_l2"):
            assert ra.values[metric] == pytest.approx(rb.values[metric], rel=1e-5), (key, metric)
        for metric in ("relchg_q50", "relchg_q90", "relchg_q99"):
            assert ra.values[metric] == pytest.approx(rb.values[metric], rel=1e-4), (key, metric)
        assert ra.n_sampled == rb.n_sampled
        # elements that sit on a bin edge may flip bins through fp32 rounding of W + ΔW
        assert np.abs(ra.hist - rb.hist).sum() <= 0.002 * ra.n_sampled + 2, key
        if ra.lines is not None:
            assert np.allclose(ra.lines, rb.lines, rtol=1e-4, atol=1e-7), key


def test_factor_norms_never_need_the_base(trained_adapter, llama):
    """l2/rms of an adapter come from its factors alone: a weightless (meta) base suffices."""
    with torch.device("meta"):
        skeleton = llama(0)
    table = diff(skeleton, trained_adapter / "adapter", metrics="l2,rms", progress=False)
    ref = diff(trained_adapter / "base", trained_adapter / "merged", metrics="l2,rms", progress=False)
    for (key, r), rr in zip(_by_site(table).items(), ref.results):
        assert r.values["l2"] == pytest.approx(rr.values["l2"], rel=1e-5), key


def test_factor_norm_matches_peft_delta_weight(trained_adapter, llama):
    import peft
    model = peft.PeftModel.from_pretrained(llama(0), str(trained_adapter / "adapter"))
    table = diff(trained_adapter / "base", trained_adapter / "adapter", metrics="l2", progress=False)
    layer = model.base_model.model.model.layers[2]
    for name, lin in [("q", layer.self_attn.q_proj), ("down", layer.mlp.down_proj)]:
        want = lin.get_delta_weight("default").double().norm()
        got = next(r for r in table.results if (r.layer, r.module) == (2, name)).values["l2"]
        assert got == pytest.approx(float(want), rel=1e-5)


def test_partial_adapter_reports_untouched_sites(trained_adapter, tmp_path):
    from safetensors.torch import load_file, save_file
    src = trained_adapter / "adapter"
    state = {k: v for k, v in load_file(str(src / "adapter_model.safetensors")).items() if "gate_proj" in k}
    out = tmp_path / "gate_only"
    out.mkdir()
    save_file(state, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    with pytest.warns(UserWarning, match="18 of 21 selected sites are untouched"):
        table = diff(trained_adapter / "base", out, progress=False)
    assert sum(r.method == "factors" for r in table.results) == 3
    assert table.summary("relative").index[0] == "gate"
    assert any("untouched" in n for n in table.meta["notes"])
    with pytest.warns(UserWarning, match="outside the selection"):
        diff(trained_adapter / "base", src, modules="gate", progress=False, metrics="l2")


def test_rslora_scale_is_honoured(trained_adapter, tmp_path):
    import shutil
    folder = tmp_path / "rs"
    shutil.copytree(trained_adapter / "adapter", folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["use_rslora"] = True
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    plain = diff(trained_adapter / "base", trained_adapter / "adapter", metrics="l2", progress=False)
    rs = diff(trained_adapter / "base", folder, metrics="l2", progress=False)
    ratio = (8 / 4 ** 0.5) / (8 / 4)
    for a, b in zip(plain.results, rs.results):
        assert b.values["l2"] == pytest.approx(ratio * a.values["l2"], rel=1e-6)
    assert open_source(folder).rslora
