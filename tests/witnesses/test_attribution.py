"""Weight-path attribution (integrated gradients along base → tuned) on tiny models: planted answers,
completeness, the LoRA-factor path against the dense one, exact restore and argument errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import affectlocus as al
from affectlocus.witnesses import AttributionTable, WitnessTable, attribute
from affectlocus.sources import LoraFactors
from affectlocus.witnesses.attribution import _inner, causal_lm_loss

from _util import assert_bit_identical, state_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(vocab: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three right-padded rows (pad id 0) of random tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 5:] = 0
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def _planted(base, sites: dict[tuple[int, str], float], seed: int = 1):
    """A deep copy of ``base`` with seeded noise of relative size ``sites[(layer, module)]`` added."""
    tuned = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for (layer, module), size in sites.items():
            for site in al.select(tuned, module, layer):
                weight = tuned.get_submodule(site.path).weight
                rows = weight if site.rows is None else weight[site.rows[0]:site.rows[1]]
                rows += size * rows.abs().mean() * torch.randn(rows.shape, generator=gen)
    return tuned


def _values(table: WitnessTable) -> dict[tuple[int, str], float]:
    return {(r["layer"], r["module"]): r["attribution"] for r in table.rows}


def _loss(model, batch) -> float:
    with torch.no_grad():
        return float(causal_lm_loss(model, batch))


@pytest.fixture
def adapter(tiny, tmp_path):
    """A real peft LoRA adapter (random, non-zero A and B) on q, v, gate, down; and its merged model."""
    import peft
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                          init_lora_weights=False)
    torch.manual_seed(3)
    wrapped = peft.get_peft_model(tiny("llama", seed=0), cfg)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.mul_(0.5)
    wrapped.save_pretrained(tmp_path / "adapter")
    merged = wrapped.merge_and_unload().eval()
    return tiny("llama", seed=0), merged, tmp_path / "adapter"


def test_planted_gate_is_the_only_nonzero_site(tiny):
    base = tiny("llama")
    tuned = _planted(base, {(1, "gate"): 0.3})
    batch = _batch()
    table = attribute(base, tuned, batch)
    assert isinstance(table, AttributionTable) and table.kind == "attribution"
    assert table.columns == ("attribution",) and len(table) == 14
    values = _values(table)
    assert values.pop((1, "gate")) != 0.0
    assert set(values.values()) == {0.0}
    assert table.total == pytest.approx(_loss(tuned, batch) - _loss(base, batch), rel=1e-6, abs=1e-9)
    # the total (~4e-5 here) is measured with HF's fp32 loss (±5e-7): a ~1 % floor, not the quadrature's
    assert table.error < 0.05
    meta = table.meta
    assert meta["steps"] == 8 and meta["loss"] == "causal_lm" and meta["n"] == 3 and meta["tokens"] == 22
    assert meta["layers"] == [0, 1] and meta["modules"] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert "in-memory model" in meta["source"]


def test_lora_completeness_shrinks_with_steps(adapter):
    base, merged, folder = adapter
    batch = _batch()
    errors = {steps: attribute(base, folder, batch, steps=steps) for steps in (1, 8, 32)}
    table = errors[8]
    assert table.total == pytest.approx(_loss(merged, batch) - _loss(base, batch), rel=1e-4)
    assert abs(table.total) > 1e-3  # a real effect to explain
    assert table.error < 0.05
    assert errors[32].error < errors[1].error
    assert errors[32].error < 0.01
    values = _values(table)
    for layer in (0, 1):  # the adapter has no k, o, up: exactly zero there
        assert values[(layer, "k")] == values[(layer, "o")] == values[(layer, "up")] == 0.0
        assert values[(layer, "gate")] != 0.0
    assert sum(values.values()) == pytest.approx(table.meta["sum"])


def test_lora_factor_path_equals_the_dense_path(adapter):
    base, merged, folder = adapter
    batch = _batch()
    lora = attribute(base, folder, batch, steps=4)
    dense = attribute(base, merged.state_dict(), batch, steps=4)
    a = torch.tensor([r["attribution"] for r in lora.rows], dtype=torch.float64)
    b = torch.tensor([r["attribution"] for r in dense.rows], dtype=torch.float64)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    assert lora.total == pytest.approx(dense.total, rel=1e-5)


@pytest.mark.parametrize("transpose", [False, True])
def test_factor_inner_product_equals_the_dense_one(transpose):
    gen = torch.Generator().manual_seed(0)
    factors = LoraFactors(torch.randn(3, 5, generator=gen), torch.randn(7, 3, generator=gen), 0.7, transpose)
    grad = torch.randn(factors.shape, generator=gen)

    class Stub:
        def factors(self, site):
            return factors
    got = _inner(Stub(), None, grad, torch.zeros(factors.shape))
    assert float(got) == pytest.approx(float((grad * factors.dense()).sum()), rel=1e-5)


def test_fused_phi3_lora_factors_equal_the_dense_path(tiny, tmp_path):
    import peft
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["qkv_proj", "gate_up_proj"], init_lora_weights=False)
    torch.manual_seed(5)
    wrapped = peft.get_peft_model(tiny("phi3"), cfg)
    wrapped.save_pretrained(tmp_path / "adapter")
    merged = wrapped.merge_and_unload()
    base, batch = tiny("phi3"), _batch()
    lora = attribute(base, tmp_path / "adapter", batch, modules="k,v,up,down", steps=4)
    dense = attribute(base, merged.state_dict(), batch, modules="k,v,up,down", steps=4)
    a = torch.tensor([r["attribution"] for r in lora.rows], dtype=torch.float64)
    b = torch.tensor([r["attribution"] for r in dense.rows], dtype=torch.float64)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    assert float(a.abs().min()) == 0.0 and float(a.abs().max()) > 0.0  # down is not in the adapter
    assert lora.error < 0.05
    al.assert_clean(base)


def test_one_step_is_the_midpoint_gradient_times_delta(tiny):
    base = tiny("llama")
    tuned = _planted(base, {(0, "q"): 0.5, (1, "up"): 0.5, (1, "down"): 0.2})
    batch = _batch()
    table = attribute(base, tuned, batch, steps=1, modules="q,up,down")
    mid = copy.deepcopy(base)
    sites = al.select(mid, "q,up,down")
    deltas = {}
    with torch.no_grad():
        for site in sites:
            w = mid.get_submodule(site.path).weight
            deltas[site.name] = tuned.get_submodule(site.path).weight.float() - w.float()
            w.add_(0.5 * deltas[site.name])
    for p in mid.parameters():
        p.requires_grad_(False)
    weights = [mid.get_submodule(s.path).weight.requires_grad_(True) for s in sites]
    grads = torch.autograd.grad(causal_lm_loss(mid, batch), weights)
    expected = {s.name: float((g * deltas[s.name]).sum()) for s, g in zip(sites, grads)}
    got = {f"layers.{r['layer']}.{r['module']}": r["attribution"] for r in table.rows}
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-7), name


def test_model_is_bit_identical_afterwards_even_when_the_loss_raises(tiny):
    base = tiny("llama")
    tuned = _planted(base, {(0, "v"): 0.3, (1, "gate"): 0.3})
    base.train()
    base.model.layers[0].requires_grad_(False)  # a mix of flags, restored as they were
    snap = state_snapshot(base)
    flags = {k: p.requires_grad for k, p in base.named_parameters()}
    ids = {k: id(p) for k, p in base.named_parameters()}
    attribute(base, tuned, _batch(), steps=2)
    assert_bit_identical(base, snap)
    assert {k: p.requires_grad for k, p in base.named_parameters()} == flags
    assert {k: id(p) for k, p in base.named_parameters()} == ids
    assert all(m.training for m in base.modules())
    al.assert_clean(base)

    calls = []

    def broken(model, batch):
        calls.append(model.training)
        if len(calls) == 3:  # the first gradient step
            raise RuntimeError("task metric failed")
        return causal_lm_loss(model, batch)
    with pytest.raises(RuntimeError, match="task metric failed"):
        attribute(base, tuned, _batch(), loss=broken)
    assert calls == [False, False, False]  # dropout off during the run
    assert_bit_identical(base, snap)
    assert {k: p.requires_grad for k, p in base.named_parameters()} == flags
    assert all(m.training for m in base.modules())
    al.assert_clean(base)


def test_custom_loss_callable(tiny):
    base = tiny("llama")
    tuned = _planted(base, {(0, "o"): 0.5, (1, "up"): 0.5})
    batch = _batch()

    def last_logit(model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, -1, 5].mean()

    table = attribute(base, tuned, batch, loss=last_logit, steps=16)
    assert table.meta["loss"] == "last_logit"
    with torch.no_grad():
        direct = float(last_logit(tuned, batch) - last_logit(base, batch))
    assert table.total == pytest.approx(direct, rel=1e-5, abs=1e-7)
    assert table.error < 0.02
    assert {k for k, v in _values(table).items() if v != 0.0} == {(0, "o"), (1, "up")}

    with pytest.raises(al.ConfigError, match="scalar"):
        attribute(base, tuned, batch, loss=lambda m, b: m(input_ids=b["input_ids"]).logits)
    al.assert_clean(base)


@pytest.mark.parametrize("steps", [0, -2, 1.5, True, "8", None])
def test_bad_steps(tiny, steps):
    base = tiny("llama")
    with pytest.raises(al.ConfigError, match="steps"):
        attribute(base, base, _batch(), steps=steps)


def test_bad_batch_names_missing_keys(tiny):
    base = tiny("llama")
    batch = _batch()
    with pytest.raises(al.ConfigError, match="attention_mask"):
        attribute(base, base, {"input_ids": batch["input_ids"]})
    with pytest.raises(al.ConfigError, match="input_ids, attention_mask"):
        attribute(base, base, {"labels": batch["input_ids"]})
    with pytest.raises(al.ConfigError, match="mapping"):
        attribute(base, base, batch["input_ids"])
    with pytest.raises(al.ConfigError, match="2-D"):
        attribute(base, base, {"input_ids": batch["input_ids"][0], "attention_mask": batch["attention_mask"][0]})
    with pytest.raises(al.ConfigError, match="loss"):
        attribute(base, base, batch, loss="ce")
    al.assert_clean(base)


def test_identical_models_give_zeros_and_a_note(tiny):
    base = tiny("llama")
    table = attribute(base, copy.deepcopy(base), _batch(), modules="mlp", layers=1, steps=2)
    assert [(r["layer"], r["module"]) for r in table.rows] == [(1, "gate"), (1, "up"), (1, "down")]
    assert table.total == 0.0 and table.error == 0.0
    assert set(_values(table).values()) == {0.0}
    assert any("no effect" in n for n in table.notes)


def test_fused_phi3_sums_to_total(tiny):
    base = tiny("phi3")
    tuned = _planted(base, {(0, "k"): 0.4, (1, "q"): 0.3, (1, "up"): 0.4, (0, "down"): 0.3})
    batch = _batch()
    table = attribute(base, tuned, batch, steps=16)
    assert table.total == pytest.approx(_loss(tuned, batch) - _loss(base, batch), rel=1e-6, abs=1e-9)
    assert table.error < 0.02
    nonzero = {k for k, v in _values(table).items() if v != 0.0}
    assert nonzero == {(0, "k"), (1, "q"), (1, "up"), (0, "down")}
    part = attribute(base, tuned, batch, modules="q,v,gate", steps=2)  # part of each fused weight
    assert {k for k, v in _values(part).items() if v != 0.0} == {(1, "q")}
    al.assert_clean(base)


def test_table_round_trip_and_top_level_name(tiny, tmp_path):
    base = tiny("llama")
    tuned = _planted(base, {(1, "gate"): 0.3})
    table = al.attribute(base, tuned, _batch(), modules="gate", steps=2, progress=True)
    again = AttributionTable.from_json(table.to_json())
    assert isinstance(again, AttributionTable) and again.rows == table.rows
    assert again.total == table.total and again.error == table.error
    table.save(tmp_path)
    loaded = AttributionTable.load(tmp_path / "attribution.json")
    assert loaded.total == table.total and loaded.meta["steps"] == 2
    assert math.isnan(AttributionTable("attribution", [], ("attribution",)).total)
