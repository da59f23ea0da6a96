"""Model loading: the embedded model, HF folders, single safetensors files, and bad inputs."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al
from affectlocus.models import gguf_cache, tiny_model, tiny_model_dir
from affectlocus.models.loader import embedded_gguf

from _util import assert_bit_identical, state_snapshot


@pytest.fixture(scope="module")
def embedded():
    return al.load_model("smollm2-135m")


def test_embedded_model_loads_offline(embedded):
    model, tok = embedded
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert len(al.select(model, "gate")) == 30
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the original
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        top = model(**enc).logits[0, -1].topk(5).indices
    assert " Paris" in [tok.decode(int(i)) for i in top]
    assert tok.pad_token is not None and tok.chat_template


def test_second_load_uses_the_cache(embedded, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("GGUF was converted again")
    monkeypatch.setattr(gguf_cache, "_convert", boom)
    model, _ = al.load_model("smollm2-135m")
    assert_bit_identical(model, state_snapshot(embedded[0]))
    assert gguf_cache.verify(gguf_cache.cache_path(embedded_gguf())) is None


def test_hf_folder_and_single_safetensors_round_trip(tmp_path):
    folder = tiny_model_dir(tmp_path / "m", "qwen2", seed=3)
    want = state_snapshot(tiny_model("qwen2", seed=3))
    with pytest.warns(UserWarning, match="no tokenizer files"):
        model, tok = al.load_model(folder)  # never an empty stand-in tokenizer
    assert tok is None
    assert_bit_identical(model, want)
    with pytest.warns(UserWarning, match="no tokenizer files"):
        model, tok = al.load_model(folder / "model.safetensors")
    assert_bit_identical(model, want)
    with pytest.warns(UserWarning):
        bf16, _ = al.load_model(folder / "model.safetensors", dtype="bfloat16")
    assert bf16.model.layers[0].mlp.gate_proj.weight.dtype == torch.bfloat16


def test_safetensors_that_does_not_fit_its_config(tmp_path):
    folder = tiny_model_dir(tmp_path / "m", "llama")
    tiny_model("llama", num_hidden_layers=3).save_pretrained(tmp_path / "other")
    (folder / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(al.ModelLoadError, match="unexpected"):
        al.load_model(folder / "model.safetensors")


@pytest.mark.parametrize("bad,match", [("no/such/model", "Known aliases: smollm2-135m"),
                                       ("smollm2-1b", "expected the alias")])
def test_bad_names(bad, match):
    with pytest.raises(al.ModelLoadError, match=match):
        al.load_model(bad)


def test_bad_dtype_and_folder_without_config(tmp_path):
    with pytest.raises(al.ModelLoadError, match="unknown dtype"):
        al.load_model("smollm2-135m", dtype="int3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(al.ModelLoadError, match="no config.json"):
        al.load_model(tmp_path / "empty")


def test_tiny_models_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    first = tiny_model("gemma3", seed=7)
    b = torch.rand(1)
    assert torch.equal(a, b)
    assert_bit_identical(tiny_model("gemma3", seed=7), state_snapshot(first))
    with pytest.raises(al.ModelLoadError, match="available: llama"):
        tiny_model("gpt2")
