"""Shared fixtures: offline mode, the shared data folder, tiny random models of every architecture."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"



@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder (tests needing it skip with a reason when it is absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: shared data tests need it beside the repo")
    return SHARED


@pytest.fixture
def tiny():
    """Factory: ``tiny("llama", seed=0)`` → a tiny random model in eval mode."""
    from affectlocus.models import tiny_model

    def make(arch: str = "llama", seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return tiny_model(arch, seed=seed, **overrides).eval()
    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and oversubscribed CPUs make OpenMP threads crawl
    (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
