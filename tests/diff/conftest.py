"""Fixtures for the diff tests: tiny models built from configs (explicit sizes, so norms are exact)."""
from __future__ import annotations

import pytest
import torch

DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=128)


def make_llama(seed: int = 0, **overrides):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**DIMS, **overrides})).eval()


def make_phi3(seed: int = 0):
    from transformers import Phi3Config, Phi3ForCausalLM
    torch.manual_seed(seed)
    return Phi3ForCausalLM(Phi3Config(**DIMS, pad_token_id=0)).eval()


def copy_of(model):
    """A second model with the same weights (different object)."""
    twin = type(model)(model.config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.fixture
def llama():
    """Factory: ``llama(seed, **config_overrides)`` → a tiny Llama (hidden 64, inter 128, 3 layers)."""
    return make_llama


@pytest.fixture
def phi3():
    """Factory: ``phi3(seed)`` → a tiny Phi-3 (fused qkv / gate_up weights)."""
    return make_phi3


@pytest.fixture
def twin():
    """``twin(model)`` → another model object with the same weights."""
    return copy_of


@pytest.fixture
def pair():
    """(base, tuned): tuned = base + seeded noise of different scale per module."""
    base = make_llama(0)
    tuned = copy_of(base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, layer in enumerate(tuned.model.layers):
            for j, lin in enumerate([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.gate_proj,
                                     layer.mlp.down_proj]):
                lin.weight += 0.001 * (i + j + 1) * torch.randn(lin.weight.shape, generator=gen)
    return base, tuned


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory):
    """A LoRA adapter on all seven projections, trained a few AdamW steps by peft, saved; plus the
    base and peft's merged model saved as checkpoints."""
    import peft
    root = tmp_path_factory.mktemp("lora")
    base = make_llama(0)
    base.save_pretrained(root / "base")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=True,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"])
    torch.manual_seed(5)
    model = peft.get_peft_model(make_llama(0), cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, DIMS["vocab_size"], (4, 12), generator=torch.Generator().manual_seed(6))
    model.train()
    for _ in range(4):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(root / "adapter")
    merged = model.merge_and_unload().eval()
    merged.save_pretrained(root / "merged")
    return root
