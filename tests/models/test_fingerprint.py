"""Weight fingerprints: same weights → same fingerprint, any changed weight → another one; tuning's
base-model signature keeps the value existing run folders hold; evaluation and tuning share the function."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from affectlocus.errors import ConfigError
from affectlocus.models import fingerprint, tiny_model
from affectlocus.models.fingerprint import model_fingerprint


class Toy(nn.Module):
    """Weights set from ``arange`` (no RNG): the fingerprints below depend on the algorithms only."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(4, 5, bias=False), nn.Linear(5, 2)
        self.register_buffer("scale", torch.arange(3, dtype=torch.float64))
        with torch.no_grad():
            for i, p in enumerate(self.parameters()):
                p.copy_(torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) / (i + 2) - 1)


@pytest.mark.parametrize("scheme", ["sampled", "ends"])
def test_same_weights_same_fingerprint_and_a_changed_weight_changes_it(scheme):
    a, b = tiny_model("llama", seed=3), tiny_model("llama", seed=3)
    assert model_fingerprint(a, scheme=scheme) == model_fingerprint(b, scheme=scheme)
    assert model_fingerprint(a, scheme=scheme) != model_fingerprint(tiny_model("llama", seed=4), scheme=scheme)
    before = model_fingerprint(a, scheme=scheme)
    with torch.no_grad():  # "ends" sees the first 4096 values of the first two and last two tensors
        next(iter(a.parameters())).view(-1)[7] += 1e-3
    assert model_fingerprint(a, scheme=scheme) != before


def test_sampled_sees_a_change_anywhere():
    model = tiny_model("llama", seed=0)
    fp = model_fingerprint(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    assert model_fingerprint(model) != fp


def test_values_are_the_ones_caches_and_run_folders_were_written_with():
    """Golden values of the algorithms as they were in evaluation/runner.py (cache keys) and in
    tuning/prepare.py's ``model_signature()["weights"]`` (run.json of existing runs): must not move."""
    model = Toy()
    assert model_fingerprint(model) == "0bbd5769250706ce7f88"
    assert model_fingerprint(model, 16) == "d1752ab64643b8b23826"
    assert model_fingerprint(model, scheme="ends", skip="lora_") == "c88b2accae84cb66"


def test_skip_leaves_out_adapter_weights():
    from peft import LoraConfig, get_peft_model
    base = model_fingerprint(Toy(), scheme="ends")
    wrapped = get_peft_model(Toy(), LoraConfig(r=2, target_modules=["c"], init_lora_weights=False))
    assert model_fingerprint(wrapped, scheme="ends") != base  # its last two parameters are LoRA factors
    assert model_fingerprint(wrapped, scheme="ends", skip="lora_") == base
    assert model_fingerprint(Toy(), skip="scale") != model_fingerprint(Toy())  # buffers too


def test_unknown_scheme_names_the_schemes():
    with pytest.raises(ConfigError, match="sampled, ends"):
        model_fingerprint(tiny_model("llama"), scheme="full")


def test_evaluation_and_tuning_use_the_one_function(monkeypatch):
    from affectlocus.evaluation import judges, runner
    from affectlocus.tasks.prompts import char_tokenizer
    from affectlocus.tuning import prepare
    assert runner.model_fingerprint is model_fingerprint and prepare.model_fingerprint is model_fingerprint
    calls = []

    def spy(model, *args, **kwargs):
        calls.append(kwargs.get("scheme", "sampled"))
        return "x" * 16
    monkeypatch.setattr(runner, "model_fingerprint", spy)
    monkeypatch.setattr(prepare, "model_fingerprint", spy)
    monkeypatch.setattr(fingerprint, "model_fingerprint", spy)  # judges import it when describing
    model = tiny_model("llama")
    assert runner.model_env(model, char_tokenizer())["model"] == "x" * 16
    assert prepare.model_signature(model)["weights"] == "x" * 16
    assert "weights=xxxx" in judges.LLMJudge(model, None, name="m").describe()
    assert calls == ["sampled", "ends", "sampled"]
