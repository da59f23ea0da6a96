"""Test helpers shared across the suite (importable because pytest puts tests/ on sys.path)."""
from __future__ import annotations

import torch

ARCHS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3")


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Clones of every parameter and buffer (for bit-exact restore checks)."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_bit_identical(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    now = model.state_dict(keep_vars=True)
    assert now.keys() == snapshot.keys()
    for key, value in now.items():
        assert value.dtype == snapshot[key].dtype, key
        assert torch.equal(value.detach(), snapshot[key]), f"{key} changed"
