"""`spectrum`: known answers on planted ΔW (ranks, angles, intruders), the exact LoRA-factor path
against dense SVDs, the randomized path within its stated error, fused layouts, files, options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectlocus.errors import ConfigError
from affectlocus.models.tiny import tiny_model, tiny_model_dir
from affectlocus.sites import select
from affectlocus.witnesses import WitnessTable
from affectlocus.witnesses.spectra import factor_spectrum, principal_angles, spectrum

pytestmark = pytest.mark.usefixtures("one_thread")
SIGMAS = [f"sigma_{i}" for i in range(1, 9)]


def _weight(model, module: str, layer: int) -> torch.Tensor:
    """The site's weight (its rows of a fused weight) as a view into the model's parameter."""
    site = select(model, module, layer)[0]
    w = model.get_submodule(site.path).weight
    return w if site.rows is None else w[site.rows[0]:site.rows[1]]


def _orthonormal(n: int, r: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, r, generator=torch.Generator().manual_seed(seed))).Q


def _plant(delta_of, module: str = "gate", layer: int = 0, arch: str = "llama"):
    """(base, tuned): tuned = base + ``delta_of(W)`` at one site."""
    base, tuned = tiny_model(arch), tiny_model(arch)
    with torch.no_grad():
        w = _weight(tuned, module, layer)
        w += delta_of(w.detach().clone())
    return base, tuned


def _row(table: WitnessTable, module: str, layer: int = 0) -> dict:
    return next(r for r in table.rows if r["module"] == module and r["layer"] == layer)


def _low_rank(sigmas, shape=(128, 64), seed: int = 0) -> torch.Tensor:
    r = len(sigmas)
    return _orthonormal(shape[0], r, seed) @ torch.diag(torch.tensor(sigmas)) @ _orthonormal(shape[1], r, seed + 1).T


def test_rank_two_with_equal_singular_values():
    base, tuned = _plant(lambda w: _low_rank([1.0, 1.0]))
    row = _row(spectrum(base, tuned), "gate")
    assert row["method"] == "dense-exact" and row["rank"] == 2
    assert row["effective_rank"] == pytest.approx(2.0, abs=0.05)
    assert [row[s] > 0 for s in SIGMAS] == [True, True] + [False] * 6
    assert row["sigma_1"] == pytest.approx(1.0, rel=1e-5) and row["sigma_2"] == pytest.approx(1.0, rel=1e-5)
    assert row["stable_rank"] == pytest.approx(2.0, rel=1e-5) and row["topk_energy"] == pytest.approx(1.0)


def test_effective_rank_of_three_and_one():
    base, tuned = _plant(lambda w: _low_rank([3.0, 1.0], shape=tuple(w.shape)), module="down", layer=1)
    row = _row(spectrum(base, tuned, modules="down", layers=1), "down", 1)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert row["effective_rank"] == pytest.approx(expected, abs=1e-4) and expected == pytest.approx(1.7548, abs=1e-4)
    assert row["stable_rank"] == pytest.approx(10 / 9, rel=1e-5)
    assert (row["sigma_1"], row["sigma_2"], row["sigma_3"]) == pytest.approx((3.0, 1.0, 0.0), abs=1e-5)


def test_stable_rank_and_sigmas_of_a_full_rank_delta():
    gen = torch.Generator().manual_seed(3)
    base, tuned = _plant(lambda w: 0.01 * torch.randn(w.shape, generator=gen), module="down")
    row = _row(spectrum(base, tuned, modules="down", layers=0), "down")
    delta = _weight(tuned, "down", 0).detach() - _weight(base, "down", 0).detach()
    s = torch.linalg.svdvals(delta.double())
    assert [row[c] for c in SIGMAS] == pytest.approx(s[:8].tolist(), rel=1e-4)
    assert row["stable_rank"] == pytest.approx(float(s.square().sum() / s[0] ** 2), rel=1e-4)
    p = s / s.sum()
    assert row["effective_rank"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-4)
    assert row["rank"] == 64 and 0 < row["topk_energy"] < 1


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A real peft LoRA adapter (q, v, gate, down; B randomised) saved to a folder, and peft's merge."""
    import peft
    folder = tmp_path_factory.mktemp("spectrum") / "adapter"
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                          target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"])
    model = peft.get_peft_model(tiny_model("llama"), cfg)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(str(folder))
    return folder, model.merge_and_unload().eval()


def test_lora_factors_equal_the_dense_svd(adapter):
    from affectlocus.sources import open_source
    folder, merged = adapter
    base = tiny_model("llama")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    with pytest.warns(UserWarning, match="6 of 14 selected sites are untouched"):
        table = spectrum(base, folder)
    src = open_source(folder)
    for site in select(base):
        row = _row(table, site.module, site.layer)
        if site.module not in ("q", "v", "gate", "down"):
            continue
        assert row["method"] == "factors" and row["rank"] == 4 and row["svd_rel_error"] == 0
        s = torch.linalg.svdvals(src.factors(site).dense().double())
        assert [row[c] for c in SIGMAS[:4]] == pytest.approx(s[:4].tolist(), rel=1e-5)
        assert [row[c] for c in SIGMAS[4:]] == [0.0] * 4
        p = s[:4] / s[:4].sum()
        assert row["effective_rank"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-6)
    dense = spectrum(base, merged)  # peft's merge: ΔW = W_merged − W, exact dense SVD
    for a, b in zip(table.rows, dense.rows):
        assert a["module"] == b["module"]
        if a["method"] == "factors":
            assert b["method"] == "dense-exact"
            assert [a[c] for c in SIGMAS[:4]] == pytest.approx([b[c] for c in SIGMAS[:4]], rel=1e-4)
            assert a["effective_rank"] == pytest.approx(b["effective_rank"], rel=1e-4)
            assert a["intruders"] == b["intruders"]
            assert a["angle_mean_deg"] == pytest.approx(b["angle_mean_deg"], abs=0.05)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())


def test_uncovered_sites_are_zero_rows_without_nan(adapter):
    with pytest.warns(UserWarning, match="untouched by the adapter"):
        table = spectrum(tiny_model("llama"), adapter[0])
    untouched = [r for r in table.rows if r["method"] == "untouched"]
    assert {r["module"] for r in untouched} == {"k", "o", "up"} and len(untouched) == 6
    assert all(r[c] == 0 for r in untouched for c in table.columns)
    assert np.isfinite(table.to_frame()[list(table.columns)].to_numpy(float)).all()
    assert table.meta["methods"] == {"factors": 8, "untouched": 6}


def test_transposed_factors_equal_the_dense_svd():
    from affectlocus.sources.base import LoraFactors
    gen = torch.Generator().manual_seed(2)
    f = LoraFactors(torch.randn(3, 40, generator=gen), torch.randn(24, 3, generator=gen), 0.7, transpose=True)
    dense = f.dense()
    spec = factor_spectrum(f.A.T, f.B.T, f.scale)
    assert tuple(dense.shape) == (40, 24) and spec.shape == (40, 24)
    assert spec.S.tolist() == pytest.approx(torch.linalg.svdvals(dense.double())[:3].tolist(), rel=1e-6)
    U = torch.linalg.svd(dense.double())[0][:, :3]
    assert float(principal_angles(spec.U, U.float()).max()) < 0.1


DELTAS = {
    "low rank + noise": lambda w, g: _low_rank([5.0, 3.0, 2.0]) + 1e-3 * torch.randn(w.shape, generator=g),
    "noise": lambda w, g: 1e-2 * torch.randn(w.shape, generator=g),
    "power law": lambda w, g: _low_rank((1 / torch.arange(1, 65).float()).tolist()),
}


@pytest.mark.parametrize("kind", DELTAS)
def test_randomized_agrees_with_exact_within_its_stated_error(kind):
    gen = torch.Generator().manual_seed(5)
    base, tuned = _plant(lambda w: DELTAS[kind](w, gen))
    exact = _row(spectrum(base, tuned, modules="gate", layers=0), "gate")
    fast_table = spectrum(base, tuned, modules="gate", layers=0, exact_max=0, oversample=6, niter=2)
    fast = _row(fast_table, "gate")
    assert exact["method"] == "dense-exact" and fast["method"] == "randomized"
    assert 0 < fast["svd_rel_error"] < 0.5 and fast["ref_svd_rel_error"] > 0
    bound = fast["svd_rel_error"] * fast["sigma_1"] + 1e-6
    for c in SIGMAS:
        assert abs(fast[c] - exact[c]) <= bound and fast[c] <= exact[c] + 1e-6
    # the tail beyond the captured values, by stochastic Lanczos quadrature
    assert fast["effective_rank"] == pytest.approx(exact["effective_rank"], rel=0.05)
    # σ̂₁ ≤ σ₁ ≤ σ̂₁(1 + svd_rel_error), so the stable rank reads high by at most that factor squared
    assert exact["stable_rank"] * (1 - 1e-6) <= fast["stable_rank"] <= \
        exact["stable_rank"] * (1 + fast["svd_rel_error"]) ** 2 * (1 + 1e-6)
    assert fast["rank"] == exact["rank"] == 64
    again = spectrum(base, tuned, modules="gate", layers=0, exact_max=0, oversample=6, niter=2)
    assert again.rows == fast_table.rows  # seeded


def test_randomized_low_rank_is_exact():
    base, tuned = _plant(lambda w: _low_rank([4.0, 2.0, 1.0]))
    fast = _row(spectrum(base, tuned, modules="gate", layers=0, exact_max=0), "gate")
    assert fast["rank"] == 3 and fast["svd_rel_error"] < 1e-4
    assert fast["effective_rank"] == pytest.approx(math.exp(-sum(p * math.log(p) for p in (4 / 7, 2 / 7, 1 / 7))),
                                                   rel=1e-4)


@pytest.mark.parametrize("exact_max", [1024, 0])
def test_intruders_and_principal_angles(exact_max):
    base, tuned = tiny_model("llama"), tiny_model("llama")
    with torch.no_grad():
        w = _weight(tuned, "q", 0)
        U, S, Vh = torch.linalg.svd(w.detach())
        u = U[:, 32:].sum(1) / math.sqrt(32)  # orthogonal to W's top 32, |cos| = 0.18 with the rest
        w += 10 * S[0] * torch.outer(u, Vh[40])
        _weight(tuned, "q", 1).mul_(1.01)  # W' = 1.01 W
        w = _weight(tuned, "gate", 1)
        U, S, Vh = torch.linalg.svd(w.detach(), full_matrices=False)
        w += 0.5 * U[:, :8] @ torch.diag(S[:8]) @ Vh[:8]  # ΔW = c·W on its top-8 subspace
    snapshot = [{k: v.clone() for k, v in m.state_dict().items()} for m in (base, tuned)]
    table = spectrum(base, tuned, modules="q,gate", exact_max=exact_max)
    intruded, scaled, top = _row(table, "q", 0), _row(table, "q", 1), _row(table, "gate", 1)
    assert intruded["intruders"] >= 1 and intruded["angle_min_deg"] > 89
    assert _row(spectrum(base, tuned, modules="q", layers=0, k_ref=8, exact_max=exact_max), "q")["intruders"] >= 1
    # ΔW = 0.01 W has W's flat random spectrum: its randomized top-8 vectors are looser (svd_rel_error)
    assert scaled["intruders"] == 0 and scaled["angle_mean_deg"] < (0.5 if exact_max else 5) and scaled["rank"] == 64
    assert top["intruders"] == 0 and top["angle_mean_deg"] < 0.5 and top["rank"] == 8
    assert _row(table, "gate", 0)["method"] == "untouched"
    for model, state in zip((base, tuned), snapshot):
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_fused_phi3_sites():
    base, tuned = _plant(lambda w: _low_rank([2.0], shape=tuple(w.shape)), module="q", arch="phi3")
    table = spectrum(base, tuned, layers=0)
    q = _row(table, "q")
    assert q["method"] == "dense-exact" and q["rank"] == 1 and q["sigma_1"] == pytest.approx(2.0, rel=1e-5)
    assert q["effective_rank"] == pytest.approx(1.0)
    assert all(r["method"] == "untouched" for r in table.rows if r["module"] != "q")


def test_bf16_models_on_a_named_device():
    base, tuned = _plant(lambda w: _low_rank([1.0, 0.25], shape=tuple(w.shape)), module="up")
    base, tuned = base.to(torch.bfloat16), tuned.to(torch.bfloat16)
    row = _row(spectrum(base, tuned, modules="up", layers=0, device="cpu"), "up")
    assert row["method"] == "dense-exact" and row["sigma_1"] == pytest.approx(1.0, rel=1e-2)
    assert row["sigma_2"] == pytest.approx(0.25, rel=5e-2)


def test_checkpoint_folders_stream_like_models(tmp_path):
    base, tuned = _plant(lambda w: _low_rank([1.0, 0.5], shape=tuple(w.shape)), module="v", layer=1)
    tiny_model_dir(tmp_path / "base")
    tuned.save_pretrained(str(tmp_path / "tuned"))
    files = spectrum(tmp_path / "base", tmp_path / "tuned", modules="v")
    models = spectrum(base, tuned, modules="v")
    assert [r["method"] for r in files.rows] == [r["method"] for r in models.rows]
    for a, b in zip(files.rows, models.rows):
        assert [a[c] for c in files.columns] == pytest.approx([b[c] for c in models.columns], rel=1e-6, abs=1e-6)
    assert _row(files, "v", 1)["rank"] == 2


def test_save_load_and_zero_note(tmp_path):
    base = tiny_model("llama")
    table = spectrum(base, tiny_model("llama"), modules="mlp", k=3)
    assert table.kind == "spectrum" and table.columns[:4] == ("sigma_1", "sigma_2", "sigma_3", "rank")
    assert any("zero at every selected site" in n for n in table.notes)
    table.save(tmp_path)
    back = WitnessTable.load(tmp_path / "spectrum.json")
    assert back.rows == table.rows and back.meta["k"] == 3
    assert table.by_module("effective_rank") == {"gate": 0.0, "up": 0.0, "down": 0.0}


@pytest.mark.parametrize("bad", [dict(k=0), dict(k=2.5), dict(k=True), dict(eps=0), dict(eps=1.0),
                                 dict(eps=-0.2), dict(eps=float("nan")), dict(oversample=-1), dict(k_ref=0),
                                 dict(exact_max=-1)])
def test_bad_options_raise_config_error(bad):
    with pytest.raises(ConfigError):
        spectrum(tiny_model("llama"), tiny_model("llama"), **bad)


def test_an_adapter_as_base_or_an_unknown_device_is_refused(adapter):
    from affectlocus.errors import ModelLoadError, SourceError
    with pytest.raises(SourceError, match="holds updates"):
        spectrum(adapter[0], tiny_model("llama"))
    with pytest.raises(ModelLoadError, match="unknown device"):
        spectrum(tiny_model("llama"), tiny_model("llama"), device="nope")


def test_public_name():
    import affectlocus as al
    assert al.spectrum is spectrum
