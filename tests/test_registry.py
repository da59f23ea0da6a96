"""The registry: bit-exact restore, LIFO stacks, owner-tracked hooks — property-based."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import affectlocus as al

from _util import assert_bit_identical, state_snapshot

MODULES = ["q", "k", "v", "o", "gate", "up", "down", "attn", "mlp", "all"]


@pytest.fixture(scope="module")
def models():
    from affectlocus.models import tiny_model
    out = {}
    for arch in ("llama", "phi3"):
        torch.manual_seed(0)
        base = tiny_model(arch, seed=0).eval()
        donor = tiny_model(arch, seed=1).eval()
        out[arch] = (base, donor, state_snapshot(base))
    return out


class Boom(RuntimeError):
    pass


def _intervention(draw, donor):
    kind = draw(st.sampled_from(["graft", "zero", "interp", "scale", "noise", "mask", "zero_out",
                                 "scale_out", "record", "patch"]))
    modules = draw(st.lists(st.sampled_from(MODULES), min_size=1, max_size=3))
    layers = draw(st.one_of(st.none(), st.lists(st.integers(-2, 1), min_size=1, max_size=2)))
    if kind == "graft":
        return al.graft(donor, modules=modules, layers=layers)
    if kind == "zero":
        return al.zero(modules=modules, layers=layers)
    if kind == "interp":
        return al.interpolate(donor, draw(st.floats(-1, 2)), modules=modules, layers=layers)
    if kind == "scale":
        return al.scale(draw(st.floats(-2, 2)), modules=modules, layers=layers)
    if kind == "noise":
        return al.noise(std=0.1, seed=draw(st.integers(0, 5)), modules=modules, layers=layers)
    if kind == "mask":
        return al.neuron_mask([0, 3], modules=draw(st.sampled_from(["gate", "up", "down", "mlp"])),
                              layers=layers)
    if kind == "zero_out":
        return al.zero_output(modules=modules, layers=layers)
    if kind == "scale_out":
        return al.scale_output(0.5, modules=modules, layers=layers)
    if kind == "record":
        return al.record(modules=modules, layers=layers)
    return al.patch_output(lambda out, site: out * 2, modules=modules, layers=layers)


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(arch=st.sampled_from(["llama", "phi3"]), data=st.data(), depth=st.integers(1, 3),
       raise_at=st.integers(0, 4), use_handles=st.booleans())
def test_random_stacks_restore_bit_exactly(models, arch, data, depth, raise_at, use_handles):
    """Stacks mixing rebinds and in-place swaps (host copy / temp file), exceptions mid-context."""
    base, donor, snapshot = models[arch]
    ids = torch.tensor([[1, 2, 3, 4]])

    def level(i):
        items = [_intervention(data.draw, donor) for _ in range(data.draw(st.integers(1, 3)))]
        inplace = data.draw(st.sampled_from([False, True, "host"]))
        if use_handles:
            handle = al.attach(base, *items, inplace=inplace)
            try:
                body(i)
            finally:
                handle.detach()
                handle.detach()  # safe to call twice
        else:
            with al.intervene(base, *items, inplace=inplace):
                body(i)

    def body(i):
        base(ids)
        if i == raise_at:
            raise Boom
        if i + 1 < depth:
            level(i + 1)

    try:
        level(0)
    except Boom:
        pass
    assert_bit_identical(base, snapshot)
    al.assert_clean(base)


def test_failed_apply_undoes_partial_work(tiny):
    base = tiny("llama")
    snap = state_snapshot(base)
    with pytest.raises(al.SiteError):
        al.attach(base, al.zero(modules="gate"), al.zero(modules="up", layers=[99]))
    assert_bit_identical(base, snap)
    al.assert_clean(base)


def test_out_of_order_detach_unwinds_lifo(tiny):
    base = tiny("llama")
    snap = state_snapshot(base)
    first = al.attach(base, al.zero(modules="gate"))
    second = al.attach(base, al.scale(2.0, modules="gate"), al.record(modules="q"))
    assert al.active(base) == [first, second]
    with pytest.warns(UserWarning, match="LIFO"):
        first.detach()
    assert al.active(base) == [] and not second.attached
    assert_bit_identical(base, snap)
    al.assert_clean(base)


def test_not_an_intervention_is_a_typed_error(tiny):
    with pytest.raises(al.InterventionError, match="not an intervention"):
        al.attach(tiny("llama"), "zero")


def test_offloaded_modules_are_refused(tiny):
    base = tiny("llama")
    proj = base.model.layers[0].mlp.gate_proj
    proj._parameters["weight"] = torch.nn.Parameter(torch.empty_like(proj.weight, device="meta"))
    with pytest.raises(al.InterventionError, match="offloaded"):
        al.attach(base, al.zero(modules="gate", layers=0))
    al.assert_clean(base)


@pytest.mark.parametrize("inplace", [True, "host", "disk"])
def test_inplace_swaps_match_rebinds_and_keep_the_parameters(tiny, inplace):
    base, donor = tiny("phi3"), tiny("phi3", seed=1)
    snap = state_snapshot(base)
    params = {k: v for k, v in base.named_parameters()}
    ids = torch.tensor([[1, 2, 3, 4]])
    stack = (al.graft(donor, modules="all"), al.noise(relative=0.1, modules="gate", layers=0),
             al.interpolate(donor, 0.3, modules="q"))
    with al.intervene(base, *stack):
        expected = base(ids).logits
    with al.intervene(base, *stack, inplace=inplace) as handle:
        assert torch.equal(base(ids).logits, expected)
        assert dict(base.named_parameters()) == params  # same objects: storage reused, not rebound
        assert any("in-place swap" in x for x in al.registry.our_leftovers(base))
        reverted = al.sources.OriginalSource(base).weight(al.select(base, "gate", 0)[0])
        assert torch.equal(reverted, snap["model.layers.0.mlp.gate_up_proj.weight"][:128])
        assert "inplace" in repr(handle)
    assert_bit_identical(base, snap)
    al.assert_clean(base)


def test_inplace_policy_errors(tiny):
    base = tiny("llama")
    with pytest.raises(al.InterventionError, match="inplace must be one of"):
        al.attach(base, al.zero(modules="gate"), inplace="gpu")
    al.assert_clean(base)
