"""Activation-space interventions: hooks on projection outputs, owned and removed by us only."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al


def _ids(model):
    return torch.randint(0, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_record_zero_scale_patch(tiny, arch):
    model = tiny(arch)
    ids = _ids(model)
    plain = al.record(modules=["k", "gate"], layers=0)
    with al.intervene(model, plain):
        model(ids)
    k = plain.outputs["layers.0.k"][0]
    gate = plain.outputs["layers.0.gate"][0]
    assert k.shape[-1] == al.select(model, "k", 0)[0].shape[0]

    after = al.record(modules=["k", "gate"], layers=0)
    with al.intervene(model, al.zero_output(modules="gate", layers=0, channels=[0, 2]), after):
        model(ids)
    g2 = after.outputs["layers.0.gate"][0]
    assert g2[..., [0, 2]].abs().max() == 0 and torch.equal(g2[..., 1], gate[..., 1])
    scaled = al.record(modules="k", layers=0)
    with al.intervene(model, al.scale_output(3.0, modules="k", layers=0), scaled):
        model(ids)
    assert torch.allclose(scaled.outputs["layers.0.k"][0], 3 * k, atol=1e-6)

    patched = al.record(modules="gate", layers=0)
    with al.intervene(model, al.patch_output(lambda out, site: out + 1.0, modules="gate", layers=0), patched):
        model(ids)
    assert torch.allclose(patched.outputs["layers.0.gate"][0], gate + 1.0)
    al.assert_clean(model)


def test_mean_ablate_uses_recorded_means(tiny):
    model = tiny("llama")
    rec = al.record(modules="up", layers=1)
    with al.intervene(model, rec):
        model(_ids(model))
    means = rec.means()["layers.1.up"]
    check = al.record(modules="up", layers=1)
    with al.intervene(model, al.mean_ablate(rec, modules="up", layers=1), check):
        model(_ids(model))
    out = check.outputs["layers.1.up"][0]
    assert torch.allclose(out, means.expand_as(out))
    with pytest.raises(al.InterventionError, match="no means"):
        with al.intervene(model, al.mean_ablate(rec, modules="up", layers=0)):
            pass
    al.assert_clean(model)


def test_patch_shape_error_and_foreign_hooks_survive(tiny):
    model = tiny("llama")
    calls = []
    foreign = model.model.layers[0].mlp.gate_proj.register_forward_hook(lambda m, a, o: calls.append(1))
    with pytest.raises(al.InterventionError, match="returned shape"):
        with al.intervene(model, al.patch_output(lambda out, site: out[..., :1], modules="gate", layers=0)):
            model(_ids(model))
    al.detach_all(model)
    al.assert_clean(model)
    model(_ids(model))
    assert calls, "a hook we did not add must never be removed"
    foreign.remove()
