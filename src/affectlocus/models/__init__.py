"""Models: load a base model + tokenizer offline; tiny random models for tests."""
from .gguf_cache import cache_path, ensure_cache, home, verify
from .loader import ALIASES, embedded_gguf, load_model
from .tiny import TINY_ARCHS, tiny_config, tiny_model, tiny_model_dir

__all__ = ["ALIASES", "TINY_ARCHS", "cache_path", "embedded_gguf", "ensure_cache", "home", "load_model",
           "tiny_config", "tiny_model", "tiny_model_dir", "verify"]
