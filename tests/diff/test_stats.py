"""Statistics kernels: factor-space norms equal dense ones, chunking and sampling do not change results."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import affectlocus as al
from affectlocus.diff.stats import (StatsConfig, factor_entries, factor_line_norms, factor_norm2, factor_rows,
                                    parse_metrics, quantile_name, sample_indices, tensor_stats)
from affectlocus.sources import LoraFactors


def _factors(out: int, inp: int, r: int, seed: int, transpose: bool = False, scale: float = 2.0):
    g = torch.Generator().manual_seed(seed)
    if transpose:
        out, inp = inp, out
    return LoraFactors(torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g), scale, transpose)


@settings(max_examples=25, deadline=None)
@given(out=st.integers(1, 300), inp=st.integers(1, 300), r=st.integers(1, 16), seed=st.integers(0, 99),
       transpose=st.booleans())
def test_factor_space_norms_equal_dense(out, inp, r, seed, transpose):
    f = _factors(out, inp, r, seed, transpose)
    dense = f.dense().double()
    want = float(dense.square().sum())
    assert abs(factor_norm2(f) - want) <= 1e-5 * want + 1e-12
    rows, cols = dense.shape
    assert torch.allclose(factor_line_norms(f, 1).double(), dense.norm(dim=1), rtol=1e-5, atol=1e-6)
    assert torch.allclose(factor_line_norms(f, 0).double(), dense.norm(dim=0), rtol=1e-5, atol=1e-6)
    idx = torch.randint(0, rows * cols, (50,), generator=torch.Generator().manual_seed(seed))
    assert torch.allclose(factor_entries(f, idx, cols).double(), dense.reshape(-1)[idx], rtol=1e-4, atol=1e-5)
    assert torch.allclose(factor_rows(f, 0, rows).double(), dense, rtol=1e-4, atol=1e-5)


def test_factor_norm_matches_dense_at_realistic_size():
    f = _factors(1536, 576, 16, 0, scale=0.5)
    dense = f.dense()
    want = float(torch.linalg.vector_norm(dense.double())) ** 2
    assert abs(factor_norm2(f) - want) / want <= 1e-5


def test_chunking_does_not_change_results():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 70, generator=g)
    tuned = base + 0.01 * torch.randn(300, 70, generator=g)
    cfg = StatsConfig(parse_metrics("all"), sample=5000)
    one = tensor_stats(base, tuned, 2, "gate", cfg)
    many = tensor_stats(base, tuned, 2, "gate", cfg, chunk_elements=100)
    for k, v in one[0].items():
        assert many[0][k] == pytest.approx(v, rel=1e-6), k
    assert np.array_equal(one[1], many[1]) and one[3] == many[3] == 5000
    assert np.allclose(one[2], many[2], rtol=1e-6)


def test_exact_when_small_sampled_when_large_and_seeded():
    cfg = StatsConfig(sample=100, seed=3)
    assert sample_indices(100, cfg, 0, "q") is None
    a, b = sample_indices(10_000, cfg, 4, "gate"), sample_indices(10_000, cfg, 4, "gate")
    assert torch.equal(a, b) and a.numel() == 100 and bool((a[1:] >= a[:-1]).all())
    assert not torch.equal(a, sample_indices(10_000, cfg, 4, "up"))
    assert sample_indices(10 ** 12, StatsConfig(sample=None), 0, "q") is None


def test_elementwise_relative_change_values():
    base = torch.full((4, 5), 2.0)
    tuned = base.clone()
    tuned[0, :] += 0.5  # relative change 0.25 on 5 of 20 elements
    values, hist, _, used = tensor_stats(base, tuned, 0, "q", StatsConfig(parse_metrics("all"), eps=0.0))
    assert used == 20 and values["unchanged"] == pytest.approx(0.75)
    assert values["relchg_q50"] == 0.0 and values["relchg_q90"] == pytest.approx(0.25)
    assert hist.sum() == 5 and values["l2"] == pytest.approx(0.5 * 5 ** 0.5)
    assert values["relative"] == pytest.approx(0.5 * 5 ** 0.5 / 2.0 / 20 ** 0.5)


def test_metric_names_and_parsing():
    assert quantile_name(0.5) == "relchg_q50" and quantile_name(0.999) == "relchg_q99_9"
    assert parse_metrics("l2,rms") == {"l2", "rms"} and "rows" in parse_metrics("all")
    assert "rows" not in parse_metrics(None)
    with pytest.raises(al.ConfigError, match="unknown metric"):
        parse_metrics("frobenius")
