"""Weight-space interventions: what each one does to the model, and that exit restores it."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al

from _util import assert_bit_identical, state_snapshot


@pytest.fixture
def pair(tiny):
    return tiny("llama", seed=0), tiny("llama", seed=1)


def _ids(model, n=6):
    return torch.randint(0, model.config.vocab_size, (2, n), generator=torch.Generator().manual_seed(0))


def test_graft_makes_module_output_equal_donors(pair):
    base, donor = pair
    x = torch.randn(3, 5, base.config.hidden_size)
    with al.intervene(base, al.graft(donor, modules="gate", layers=1)):
        got = base.model.layers[1].mlp.gate_proj(x)
    assert torch.equal(got, donor.model.layers[1].mlp.gate_proj(x))
    al.assert_clean(base)


def test_interpolate_endpoints_are_exact(pair):
    base, donor = pair
    ids = _ids(base)
    with torch.no_grad():
        plain = base(ids).logits
        with al.intervene(base, al.interpolate(donor, 0.0, modules="mlp")):
            assert torch.equal(base(ids).logits, plain)
        with al.intervene(base, al.interpolate(donor, 1.0, modules="mlp")):
            one = base(ids).logits
        with al.intervene(base, al.graft(donor, modules="mlp")):
            grafted = base(ids).logits
        up0 = base.model.layers[0].mlp.up_proj.weight.detach().clone()
        with al.intervene(base, al.interpolate(donor, 0.25, modules="mlp", layers=0)):
            expect = up0 + 0.25 * (donor.model.layers[0].mlp.up_proj.weight - up0)
            assert torch.allclose(base.model.layers[0].mlp.up_proj.weight, expect, atol=1e-6)
    assert torch.equal(one, grafted)
    assert not torch.equal(one, plain)


def test_zero_gate_zeroes_that_mlp_output(pair):
    base, _ = pair
    rec = al.record(modules="down", layers=[0, 1])
    with al.intervene(base, al.zero(modules="gate", layers=0), rec):
        base(_ids(base))
    assert rec.outputs["layers.0.down"][0].abs().max() == 0
    assert rec.outputs["layers.1.down"][0].abs().max() > 0


def test_scale_and_neuron_mask(pair):
    base, _ = pair
    gate = base.model.layers[0].mlp.gate_proj.weight.detach().clone()
    down = base.model.layers[0].mlp.down_proj.weight.detach().clone()
    with al.intervene(base, al.scale(2.0, modules="gate", layers=0)):
        assert torch.equal(base.model.layers[0].mlp.gate_proj.weight, gate * 2)
    with al.intervene(base, al.neuron_mask([1, 5], modules="mlp", layers=0)):
        g = base.model.layers[0].mlp.gate_proj.weight
        d = base.model.layers[0].mlp.down_proj.weight
        assert g[[1, 5]].abs().sum() == 0 and torch.equal(g[0], gate[0])
        assert d[:, [1, 5]].abs().sum() == 0 and torch.equal(d[:, 0], down[:, 0])
    with pytest.raises(al.InterventionError, match="MLP channels"):
        al.neuron_mask([0], modules="q")
    with pytest.raises(al.InterventionError, match="out of range"):
        with al.intervene(base, al.neuron_mask({0: [10_000]}, modules="gate")):
            pass
    al.assert_clean(base)


def test_noise_is_seeded_and_norm_matched(pair):
    base, donor = pair
    site = al.select(base, "up", 1)[0]
    w0 = base.model.layers[1].mlp.up_proj.weight.detach().clone()
    wd = donor.model.layers[1].mlp.up_proj.weight.detach()
    with al.intervene(base, al.noise(match=donor, seed=3, modules="up", layers=1)):
        a = base.model.layers[1].mlp.up_proj.weight.detach().clone()
    with al.intervene(base, al.noise(match=donor, seed=3, modules="up", layers=1)):
        b = base.model.layers[1].mlp.up_proj.weight.detach().clone()
    assert torch.equal(a, b)
    assert torch.allclose((a - wd).norm(), (w0 - wd).norm(), rtol=1e-4)
    with al.intervene(base, al.noise(relative=0.1, seed=1, modules="up", layers=1)):
        c = base.model.layers[1].mlp.up_proj.weight.detach()
        assert torch.allclose((c - w0).norm(), 0.1 * w0.norm(), rtol=1e-4)
    with pytest.raises(al.InterventionError, match="exactly one"):
        al.noise(std=1.0, relative=0.1)
    assert site.name == "layers.1.up"


def test_dtype_device_requires_grad_preserved_and_donor_cast(tiny):
    base = tiny("llama").to(torch.bfloat16)
    donor = tiny("llama", seed=5)  # fp32 donor
    base.model.layers[0].mlp.gate_proj.weight.requires_grad_(False)
    snap = state_snapshot(base)
    with al.intervene(base, al.graft(donor, modules="gate")):
        w0 = base.model.layers[0].mlp.gate_proj.weight
        w1 = base.model.layers[1].mlp.gate_proj.weight
        assert w0.dtype == torch.bfloat16 and not w0.requires_grad and w1.requires_grad
        assert torch.equal(w0, donor.model.layers[0].mlp.gate_proj.weight.to(torch.bfloat16))
    assert_bit_identical(base, snap)
    assert base.model.layers[0].mlp.gate_proj.weight.requires_grad is False


def test_restored_parameters_are_the_original_objects(pair):
    base, donor = pair
    before = {n: p for n, p in base.named_parameters()}
    with al.intervene(base, al.graft(donor), al.zero(modules="attn")):
        assert base.model.layers[0].self_attn.q_proj.weight is not before["model.layers.0.self_attn.q_proj.weight"]
    assert all(p is before[n] for n, p in base.named_parameters())


def test_phi3_fused_graft_changes_only_its_rows(tiny):
    base, donor = tiny("phi3", seed=0), tiny("phi3", seed=1)
    snap = state_snapshot(base)
    site = {s.module: s for s in al.select(base, "all", 0)}
    with al.intervene(base, al.graft(donor, modules=["k", "up"], layers=0)):
        qkv = base.model.layers[0].self_attn.qkv_proj.weight
        dq = donor.model.layers[0].self_attn.qkv_proj.weight
        a, b = site["k"].rows
        assert torch.equal(qkv[a:b], dq[a:b])
        assert torch.equal(qkv[:a], snap["model.layers.0.self_attn.qkv_proj.weight"][:a])
        gu = base.model.layers[0].mlp.gate_up_proj.weight
        a, b = site["up"].rows
        assert torch.equal(gu[a:b], donor.model.layers[0].mlp.gate_up_proj.weight[a:b])
        assert torch.equal(gu[:a], snap["model.layers.0.mlp.gate_up_proj.weight"][:a])
    assert_bit_identical(base, snap)


def test_llama_donor_grafts_into_phi3_by_canonical_site(tiny):
    base = tiny("phi3")
    donor = tiny("llama", seed=2, hidden_size=base.config.hidden_size,
                 intermediate_size=base.config.intermediate_size,
                 num_attention_heads=base.config.num_attention_heads,
                 num_key_value_heads=base.config.num_key_value_heads,
                 num_hidden_layers=base.config.num_hidden_layers)
    with al.intervene(base, al.graft(donor, modules="gate", layers=0)):
        a, b = al.select(base, "gate", 0)[0].rows
        assert torch.equal(base.model.layers[0].mlp.gate_up_proj.weight[a:b],
                           donor.model.layers[0].mlp.gate_proj.weight)


def test_random_revert_is_seeded_and_parameter_matched(pair):
    base, donor = pair
    w0 = base.model.layers[0].mlp.gate_proj.weight.detach().clone()
    wd = donor.model.layers[0].mlp.gate_proj.weight.detach()
    with al.intervene(base, al.random_revert(donor, 0.25, seed=4, modules="gate", layers=0)):
        w = base.model.layers[0].mlp.gate_proj.weight.detach().clone()
    took = (w == wd) & (w != w0)
    assert torch.equal(w[~took], w0[~took])
    assert abs(took.float().mean().item() - 0.25) < 0.03
    with al.intervene(base, al.random_revert(donor, 0.25, seed=4, modules="gate", layers=0)):
        assert torch.equal(base.model.layers[0].mlp.gate_proj.weight, w)
    with pytest.raises(al.InterventionError, match="fraction"):
        al.random_revert(donor, 1.5)
