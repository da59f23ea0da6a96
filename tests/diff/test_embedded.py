"""The embedded SmolLM2-135M: the alias works as a base, and a gate-only change is located."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al
from affectlocus.diff import diff

pytestmark = pytest.mark.slow


def test_gate_change_is_located_on_the_embedded_model():
    model, _ = al.load_model("smollm2-135m")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for site in al.select(model, "gate", "10:20"):
            w = model.get_submodule(site.path).weight
            w.add_(0.05 * w.abs().mean() * torch.randn(w.shape, generator=gen))
    table = diff("smollm2-135m", model, progress=False)
    assert table.describe() == "210 sites: modules q,k,v,o,gate,up,down × layers 0–29 of 30"
    assert table.meta["model_type"] == "llama"
    for metric in ("l2", "rms", "relative"):
        assert table.summary(metric).index[0] == "gate"
    top = table.top(10, "relative")
    assert set(top["module"]) == {"gate"} and set(top["layer"]) == set(range(10, 20))
