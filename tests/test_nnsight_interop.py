"""nnsight interop: our interventions stay active inside an nnsight trace of the same model."""
from __future__ import annotations

import nnsight
import torch

import affectlocus as al


def test_weight_and_activation_interventions_visible_in_trace(tiny):
    model = tiny("llama")
    traced = nnsight.NNsight(model)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        plain = model(ids).logits
        with al.intervene(model, al.zero(modules="gate", layers=0)):
            expected = model(ids).logits
            with traced.trace(ids):
                gate = traced.model.layers[0].mlp.gate_proj.output.save()
                down = traced.model.layers[0].mlp.down_proj.output.save()
                logits = traced.output.logits.save()
        assert gate.abs().max() == 0 and down.abs().max() == 0
        assert torch.equal(logits, expected) and not torch.equal(logits, plain)

        # Activation hooks run in nn.Module.__call__, after nnsight captured the module's own
        # output, so the value saved *downstream* (the next module's input, the logits) reflects it.
        with al.intervene(model, al.zero_output(modules="gate", layers=0)):
            with traced.trace(ids):
                down_in = traced.model.layers[0].mlp.down_proj.input.save()
                logits = traced.output.logits.save()
        assert down_in.abs().max() == 0
        assert torch.equal(logits, expected)

        # And an nnsight edit composes with a weight intervention of ours.
        with al.intervene(model, al.scale(0.0, modules="up", layers=1)):
            with traced.trace(ids):
                traced.model.layers[1].mlp.up_proj.output[:] = 0
                up = traced.model.layers[1].mlp.up_proj.output.save()
        assert up.abs().max() == 0
    al.assert_clean(model)
    assert torch.equal(model(ids).logits, plain)
