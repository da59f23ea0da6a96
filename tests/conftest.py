"""Shared fixtures: offline mode, the shared data folder (skip or, under AFFECTLOCUS_REQUIRE_DATA=1, fail
when absent), tiny random models of every architecture."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Data that cannot ship with the package (MELD, the authors' outputs and labels): ``../shared`` beside
#: the repository, or ``$AFFECTLOCUS_SHARED_DIR`` (``/nonexistent`` shows what a fresh clone sees).
SHARED = Path(os.environ.get("AFFECTLOCUS_SHARED_DIR") or REPO.parent / "shared")
#: ``AFFECTLOCUS_REQUIRE_DATA=1`` (set by ``.ci/run``): missing data fails the test instead of skipping it.
REQUIRE_DATA = os.environ.get("AFFECTLOCUS_REQUIRE_DATA", "").strip() not in ("", "0")


def require_data(path: Path | None, what: str, hint: str = "") -> Path:
    """``path`` if it exists; else skip with a one-line reason (a failure under AFFECTLOCUS_REQUIRE_DATA=1).

    The one place a test gives up for missing data or a missing embedded-data package (``path`` None).
    """
    if path is not None and path.exists():
        return path
    reason = f"{what} not found" + (f" at {path}" if path is not None else "") + (f" ({hint})" if hint else "")
    if REQUIRE_DATA:
        pytest.fail(f"{reason}; AFFECTLOCUS_REQUIRE_DATA=1 requires it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(name="require_data", scope="session")
def require_data_fixture():
    """:func:`require_data` for tests and fixtures: ``require_data(path, what, hint="")`` → path."""
    return require_data


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared data folder (:data:`SHARED`), or a skip/failure through :func:`require_data`."""
    return require_data(SHARED, "shared data folder", "beside the repo, or set AFFECTLOCUS_SHARED_DIR")


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
