"""al.patch: replay recorded projection outputs into another run (activation patching)."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al

from _util import assert_bit_identical, state_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")


def _ids(n: int = 5, seed: int = 1, rows: int = 2) -> torch.Tensor:
    return torch.randint(3, 128, (rows, n), generator=torch.Generator().manual_seed(seed))


def _planted(model, scale: float = 0.5):
    """A copy of ``model`` whose layer-1 gate weight differs (a tuned model in miniature)."""
    import copy
    tuned = copy.deepcopy(model)
    gate = tuned.model.layers[1].mlp.gate_proj.weight
    with torch.no_grad():
        gate.add_(torch.randn(gate.shape, generator=torch.Generator().manual_seed(3)) * scale)
    return tuned


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_patch_same_input_reproduces_the_recorded_run(tiny, arch):
    model = tiny(arch)
    ids = _ids()
    rec = al.record()
    with torch.no_grad(), al.intervene(model, rec):
        want = model(ids).logits
    snap = state_snapshot(model)
    check = al.record()
    with torch.no_grad(), al.intervene(model, al.patch(rec), check):
        got = model(ids).logits
    assert torch.equal(got, want)
    assert set(check.outputs) == set(rec.outputs)
    assert all(torch.equal(check.outputs[k][0], v[0]) for k, v in rec.outputs.items())
    assert_bit_identical(model, snap)
    al.assert_clean(model)


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_patch_from_model_a_into_model_b_reproduces_a_downstream(tiny, arch):
    a = tiny(arch)
    b = _planted(a) if arch == "llama" else tiny(arch, seed=1)
    ids = _ids()
    rec = al.record(modules=["gate", "v"], layers=1)
    with torch.no_grad(), al.intervene(a, rec):
        want = a(ids).logits
    seen = al.record(modules=["k", "v", "gate"], layers=1)
    with torch.no_grad(), al.intervene(b, al.patch(rec), seen):
        got = b(ids).logits
    for name in ("layers.1.gate", "layers.1.v"):  # the patched spans (fused in phi3) are A's
        assert torch.equal(seen.outputs[name][0], rec.outputs[name][0])
    if arch == "llama":  # B differs from A only at layer-1 gate: patching it gives A's logits
        assert torch.equal(got, want)
    else:  # phi3: the fused neighbour (k, beside v in qkv_proj) keeps B's own values
        with torch.no_grad():
            plain = al.record(modules="k", layers=1)
            with al.intervene(b, plain):
                b(ids)
        assert torch.equal(seen.outputs["layers.1.k"][0], plain.outputs["layers.1.k"][0])
    al.assert_clean(a)
    al.assert_clean(b)


def test_mapping_recording_is_cast_to_the_live_dtype(tiny):
    model = tiny("llama")
    ids = _ids()
    rec = al.record(modules="down", layers=0)
    with torch.no_grad(), al.intervene(model, rec):
        want = model(ids).logits
    value = {"layers.0.down": rec.outputs["layers.0.down"][0].double() * 0 + 1.0}
    seen = al.record(modules="down", layers=0)
    with torch.no_grad(), al.intervene(model, al.patch(value), seen):
        model(ids)
        model(ids)  # a mapping of tensors is a fixed value: every call gets it
    assert all(v.dtype == torch.float32 and torch.equal(v, torch.ones_like(v)) for v in seen.outputs["layers.0.down"])
    with torch.no_grad(), al.intervene(model, al.patch({"layers.0.down": rec.outputs["layers.0.down"]})):
        assert torch.equal(model(ids).logits, want)


def test_shape_mismatch_names_site_shapes_and_positions(tiny):
    model = tiny("llama")
    rec = al.record(modules="k", layers=0)
    with torch.no_grad(), al.intervene(model, rec):
        model(_ids(5))
    with pytest.raises(al.ShapeMismatchError, match=r"layers\.0\.k.*\(2, 5, 32\).*\(2, 7, 32\).*positions="):
        with torch.no_grad(), al.intervene(model, al.patch(rec)):
            model(_ids(7))
    with pytest.raises(al.ShapeMismatchError, match="batch sizes"):
        with torch.no_grad(), al.intervene(model, al.patch(rec, positions="last")):
            model(_ids(7, rows=3))
    al.assert_clean(model)


@pytest.mark.parametrize("positions, src, dst", [("last", [4], [6]), ("first", [0], [0]), (3, [2, 3, 4], [4, 5, 6]),
                                                  (([0, -1], [2, 3]), [0, 4], [2, 3])])
def test_positions_align_different_lengths(tiny, positions, src, dst):
    model = tiny("llama")
    short, long = _ids(5, seed=1), _ids(7, seed=2)
    rec, plain = al.record(modules="up", layers=1), al.record(modules="up", layers=1)
    with torch.no_grad():
        with al.intervene(model, rec):
            model(short)
        with al.intervene(model, plain):
            model(long)
        seen = al.record(modules="up", layers=1)
        with al.intervene(model, al.patch(rec, positions=positions), seen):
            model(long)
    got, old, want = seen.outputs["layers.1.up"][0], plain.outputs["layers.1.up"][0], rec.outputs["layers.1.up"][0]
    assert torch.equal(got[:, dst], want[:, src])
    keep = [i for i in range(7) if i not in dst]
    assert torch.equal(got[:, keep], old[:, keep])
    al.assert_clean(model)


def test_more_calls_than_recorded_is_an_error(tiny):
    model = tiny("llama")
    rec = al.record(modules="o", layers=0)
    with torch.no_grad(), al.intervene(model, rec):
        model(_ids(seed=1))
        model(_ids(seed=2))
    seen = al.record(modules="o", layers=0)
    with torch.no_grad(), al.intervene(model, al.patch(rec), seen):
        model(_ids(seed=5))
        model(_ids(seed=6))
        with pytest.raises(al.InterventionError, match=r"call 3 .*only 2 call\(s\) were recorded"):
            model(_ids(seed=7))
    assert [torch.equal(a, b) for a, b in zip(seen.outputs["layers.0.o"], rec.outputs["layers.0.o"])] == [True] * 2
    al.assert_clean(model)


def test_selection_defaults_to_the_recording_and_explicit_gaps_are_errors(tiny):
    model = tiny("llama")
    rec = al.record(modules="gate", layers=1)
    with torch.no_grad(), al.intervene(model, rec):
        model(_ids())
    assert [s.name for s in al.patch(rec).sites(model)] == ["layers.1.gate"]
    assert [s.name for s in al.patch(rec, modules="gate").sites(model)] == ["layers.1.gate"]  # layers: recorded
    with pytest.raises(al.InterventionError, match=r"layers\.1\.up.*it has layers\.1\.gate"):
        with al.intervene(model, al.patch(rec, modules="mlp")):
            pass
    with pytest.raises(al.InterventionError, match="empty"):
        al.patch(al.record()).sites(model)
    for bad in ("middle", 0, ([0], [1, 2])):
        with pytest.raises(al.InterventionError, match="positions"):
            al.patch(rec, positions=bad)
    with pytest.raises(al.InterventionError, match="Record"):
        al.patch([1, 2])
    al.assert_clean(model)


def test_exact_restore_after_an_exception(tiny):
    model = tiny("phi3")
    rec = al.record(modules=["q", "up"])
    with torch.no_grad(), al.intervene(model, rec):
        model(_ids())
    snap = state_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with torch.no_grad(), al.intervene(model, al.graft(tiny("phi3", seed=1)), al.patch(rec)):
            model(_ids())
            raise RuntimeError("boom")
    assert_bit_identical(model, snap)
    al.assert_clean(model)
    text = repr(al.patch(rec, positions="last"))
    assert text.startswith("patch(") and "positions='last'" in text
