"""Tiny random models of every supported architecture, built from configs (no weights, seeded).

Each has hidden 64, 2 layers, intermediate 128, vocab 128, 4 query / 2 key-value heads of 16 dims: small
enough for fast unit tests, with grouped-query attention so k/v projections differ in shape from q/o.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

_BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=256,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _classes(arch: str):
    import transformers as tf
    table = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
        "gemma": ("GemmaConfig", "GemmaForCausalLM"),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
        "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
        "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    }
    if arch not in table:
        raise ModelLoadError(f"unknown tiny architecture {arch!r}; available: {', '.join(table)}")
    cfg, model = table[arch]
    return getattr(tf, cfg), getattr(tf, model)


TINY_ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3")


def tiny_config(arch: str = "llama", **overrides) -> PretrainedConfig:
    """A small config of ``arch`` (hidden 64, 2 layers, intermediate 128, vocab 128, 4/2 heads)."""
    cfg_cls, _ = _classes(arch)
    args = {**_BASE, **overrides}
    if "head_dim" not in overrides and ("hidden_size" in overrides or "num_attention_heads" in overrides):
        args["head_dim"] = args["hidden_size"] // args["num_attention_heads"]
    return cfg_cls(**args)


def tiny_model(arch: str = "llama", seed: int = 0, **overrides) -> PreTrainedModel:
    """A randomly initialised tiny causal LM of ``arch`` in eval mode.

    The same ``seed`` gives bit-identical weights; the global RNG state is left untouched.
    ``overrides`` go to the config (e.g. ``num_hidden_layers=4``, ``tie_word_embeddings=True``).
    """
    _, model_cls = _classes(arch)
    config = tiny_config(arch, **overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def tiny_model_dir(folder: str | Path, arch: str = "llama", seed: int = 0, **overrides) -> Path:
    """Save a tiny model (config.json + model.safetensors, no tokenizer) to ``folder``; return the folder."""
    folder = Path(folder)
    tiny_model(arch, seed, **overrides).save_pretrained(str(folder))
    return folder
