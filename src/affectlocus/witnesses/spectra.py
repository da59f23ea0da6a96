"""`spectrum(model, tuned)`: the singular spectrum of ΔW at every site, streamed one site at a time.

Per (layer, module) site: how many directions the fine-tune uses (top-k singular values, effective
and stable rank), whether they are W's own directions (principal angles between ΔW's and W's top-k
left singular subspaces) and whether the tuned weight grew *intruder dimensions* (Shuttleworth et
al. 2024, "LoRA vs full fine-tuning: an illusion of equivalence").

How ΔW's spectrum is obtained (each row's non-numeric ``method``):

* ``factors``: a LoRA site, exact from the factors. ΔW = s·m1@m2 (m1 = B, m2 = A, or Aᵀ, Bᵀ when
  ``transpose``); with m1 = Q1R1 and m2ᵀ = Q2R2, ΔW = Q1 (s·R1R2ᵀ) Q2ᵀ, so the SVD of the r×r core
  gives every non-zero singular value and its vectors (computed in fp64; no dense SVD of ΔW).
* ``dense-exact``: ΔW = W_tuned − W in fp32, ``torch.linalg.svd`` when min(shape) ≤ ``exact_max``.
* ``randomized``: larger dense ΔW, a seeded randomized SVD (Halko et al. 2011: q = k + oversample
  Gaussian probes, ``niter`` power iterations, re-orthonormalised; Ritz values σ̂ᵢ ≤ σᵢ). The SVDs of
  W and W + ΔW behind angles and intruders follow ``exact_max`` the same way, with q = k_ref +
  oversample; W + ΔW's probes start from W's top right singular vectors, so a direction it shares
  with W is not read as an intruder because it was resolved loosely. On flat spectra (random
  initialisations) loose vectors can still read as intruders: see ``ref_svd_rel_error``, and raise
  ``niter`` / ``oversample`` or ``exact_max`` (on SmolLM2-135M's real weights both paths agreed).
* ``untouched``: ΔW ≡ 0 and nothing was computed (an adapter without an update at the site, or
  tuned weights equal to the base's). Every column is 0 there, never NaN; the angles mean nothing
  at such rows (nor at any row with rank 0): filter on ``method`` / ``rank``.

Streaming: sites are read and processed one at a time (base W, tuned W + ΔW and ΔW of one site at
most, fp32); nothing is prefetched, so no second site's matrices are ever held.
"""
from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..sites import Site
from ..sites.selection import LayerSpec, ModuleSpec
from .table import WitnessTable, site_rows

#: dense matrices whose smaller side is at most this get an exact SVD; larger ones a randomized one
EXACT_MAX = 1024
_EPS32 = float(torch.finfo(torch.float32).eps)
_BLOCK = 1 << 24  # elements per row block of a norm
#: stochastic Lanczos quadrature of a randomized row's tail: Rademacher probes × Lanczos steps
SLQ_PROBES, SLQ_STEPS = 16, 40


@dataclass
class _Spec:
    """Singular triplets of one matrix (columns of U, S descending) and what is known beyond them."""

    U: torch.Tensor                # (m, q) left singular vectors, fp32
    S: torch.Tensor                # (q,) singular values, fp64 on the host
    shape: tuple[int, int]
    V: torch.Tensor | None = None  # (n, q) right singular vectors, when asked for (a warm start)
    error: float = 0.0             # max relative triplet residual of the wanted triplets (0: exact)
    exact: bool = True             # S holds every singular value
    tail_sum: float = 0.0          # Σσ over the uncaptured values above the rank cut (estimated)
    tail_xlogx: float = 0.0        # Σσ·ln σ over the same
    tail_rank: int = 0             # uncaptured values counted in the rank


def _seeded(seed: int, site: Site, which: str, device: torch.device) -> torch.Generator:
    """A generator per (seed, site, matrix): results do not depend on which other sites run."""
    return torch.Generator(device=device).manual_seed(zlib.crc32(f"{seed}:{site.name}:{which}".encode()))


def _randomized(M: torch.Tensor, want: int, q: int, niter: int, gen: torch.Generator,
                start: torch.Tensor | None = None) -> _Spec:
    """Top singular triplets of ``M`` by subspace iteration from q probes (``start``'s columns first,
    then Gaussian ones). With Q the range basis, QᵀM = Ũ S Vᵀ and U = QŨ: Mᵀuᵢ = σᵢvᵢ exactly and
    Mvᵢ − σᵢuᵢ = (I − UUᵀ)Mvᵢ, so ``error`` = maxᵢ≤want of its norm / σ̂₁ (a true singular value lies
    within that of σ̂ᵢ, by Weyl on [[0, M], [Mᵀ, 0]]; σ̂ᵢ ≤ σᵢ as QᵀM compresses M)."""
    m, n = M.shape
    q = min(q, m, n)
    omega = torch.randn(n, q, generator=gen, device=M.device, dtype=M.dtype)
    if start is not None:
        omega[:, :min(start.shape[1], q)] = start[:, :q]
    Q = torch.linalg.qr(M @ omega).Q
    for _ in range(niter):
        Q = torch.linalg.qr(M @ torch.linalg.qr(M.T @ Q).Q).Q
    Ub, S, Vh = torch.linalg.svd(Q.T @ M, full_matrices=False)
    U, MV = Q @ Ub, M @ Vh[:want].T
    res = torch.linalg.vector_norm(MV - U @ (U.T @ MV), dim=0)
    s1 = float(S[0]) if S.numel() else 0.0
    error = float(res.max()) / s1 if s1 > 0 and res.numel() else 0.0
    return _Spec(U, S.double().cpu(), (m, n), Vh.T, error, exact=False)


def _spec(M: torch.Tensor, want: int, q: int, opts: "_Options", gen: torch.Generator,
          start: torch.Tensor | None = None) -> _Spec:
    """Exact SVD when min(shape) ≤ ``exact_max``, else randomized (``want`` triplets, q probes)."""
    if min(M.shape) <= opts.exact_max:
        U, S, _ = torch.linalg.svd(M, full_matrices=False)
        return _Spec(U, S.double().cpu(), tuple(M.shape))
    return _randomized(M, want, q, opts.niter, gen, start)


def _tail_sums(M: torch.Tensor, U: torch.Tensor, tol: float, gen: torch.Generator) -> tuple[float, float, bool]:
    """Σσ and Σσ·ln σ over the singular values above ``tol`` of R = (I − UUᵀ)M, by stochastic
    Lanczos quadrature (Rademacher probes; block Lanczos on RRᵀ or RᵀR, fully re-orthogonalised),
    and whether R has a singular value above ``tol`` at all (its largest Ritz value)."""
    m, n = M.shape
    dim, steps, p = min(m, n), min(SLQ_STEPS, min(m, n)), SLQ_PROBES

    def proj(u: torch.Tensor) -> torch.Tensor:  # twice: Mᵀ would re-amplify a leftover along U by σ₁
        u = u - U @ (U.T @ u)
        return u - U @ (U.T @ u)

    def op(v: torch.Tensor) -> torch.Tensor:
        return proj(M @ (M.T @ proj(v))) if m <= n else M.T @ proj(M @ v)

    V = (torch.randint(0, 2, (dim, p), generator=gen, device=M.device).to(M.dtype) * 2 - 1) / math.sqrt(dim)
    basis, alphas, betas, length = [], [], [], [steps] * p
    v_prev, b_prev, scale = torch.zeros_like(V), torch.zeros(p, device=M.device, dtype=M.dtype), 0.0
    for j in range(steps):
        basis.append(V)
        W = op(V)
        a = (V * W).sum(0)
        W = W - a * V - b_prev * v_prev
        B = torch.stack(basis)
        for _ in range(2):
            W = W - torch.einsum("snp,sp->np", B, torch.einsum("snp,np->sp", B, W))
        b = torch.linalg.vector_norm(W, dim=0)
        alphas.append(a)
        betas.append(b)
        scale = max(scale, float(a.abs().max()))
        alive = b > 1e-6 * scale
        for c in torch.nonzero(~alive).flatten().tolist():
            length[c] = min(length[c], j + 1)
        v_prev, b_prev = V, torch.where(alive, b, torch.zeros_like(b))
        V = torch.where(alive, W / b.clamp_min(1e-30), torch.zeros_like(W))
    al, be = torch.stack(alphas).double().cpu(), torch.stack(betas).double().cpu()
    sums, xlogx, top = 0.0, 0.0, 0.0
    for c in range(p):
        L = length[c]
        T = torch.diag(al[:L, c]) + torch.diag(be[:L - 1, c], 1) + torch.diag(be[:L - 1, c], -1)
        theta, Y = torch.linalg.eigh(T)
        w, s = dim * Y[0].square(), theta.clamp_min(0).sqrt()
        s = torch.where(s > tol, s, torch.zeros_like(s))
        top = max(top, float(s.max()))
        sums += float((w * s).sum()) / p
        xlogx += float((w * s * s.clamp_min(1e-300).log()).sum()) / p
    return sums, xlogx, top > 0


def _fro2(M: torch.Tensor) -> float:
    """‖M‖_F² accumulated in fp64, a bounded row block at a time (no full fp64 copy)."""
    step = max(1, _BLOCK // max(1, M.shape[1]))
    return sum(float(torch.linalg.vector_norm(M[r0:r0 + step], dtype=torch.float64)) ** 2
               for r0 in range(0, M.shape[0], step))


def factor_spectrum(m1: torch.Tensor, m2: torch.Tensor, scale: float) -> _Spec:
    """Exact SVD of ``scale · m1 @ m2`` (m1: m×r, m2: r×n) through QR of both factors (fp64 core)."""
    dtype = torch.float64 if m1.device.type in ("cpu", "cuda") else torch.float32
    Q1, R1 = torch.linalg.qr(m1.to(dtype))
    Q2, R2 = torch.linalg.qr(m2.to(dtype).T)
    Uc, S, _ = torch.linalg.svd(float(scale) * (R1 @ R2.T), full_matrices=False)
    return _Spec((Q1 @ Uc).float(), S.double().cpu(), (int(m1.shape[0]), int(m2.shape[1])))


def _tol(spec: _Spec) -> float:
    """Numerical-rank cut: σ₁ · max(m, n) · ε_fp32 (values at or below it count as zero)."""
    s1 = float(spec.S[0]) if spec.S.numel() else 0.0
    return s1 * max(spec.shape) * _EPS32


def _delta_columns(spec: _Spec, k: int, fro2: float) -> dict[str, float]:
    """sigma_1..k, rank, effective_rank, stable_rank, topk_energy of ΔW from its spectrum."""
    S = spec.S[spec.S > _tol(spec)]
    values = [float(s) for s in S[:k]] + [0.0] * max(0, k - S.numel())
    total = float(S.sum()) + spec.tail_sum  # exp(H) = exp(ln Σσ − Σσ·ln σ / Σσ)
    erank = math.exp(math.log(total) - (float((S * S.log()).sum()) + spec.tail_xlogx) / total) if total > 0 else 0.0
    s1 = values[0]
    return {**{f"sigma_{i + 1}": v for i, v in enumerate(values)}, "rank": float(S.numel() + spec.tail_rank),
            "effective_rank": erank, "stable_rank": fro2 / s1 ** 2 if s1 > 0 else 0.0,
            "topk_energy": min(1.0, sum(v * v for v in values) / fro2) if fro2 > 0 else 0.0}


def principal_angles(Ua: torch.Tensor, Ub: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the spans of orthonormal columns ``Ua``, ``Ub``."""
    cos = torch.linalg.svdvals(Ua.T.double() @ Ub.double()).clamp(0.0, 1.0)
    return torch.rad2deg(torch.arccos(cos)).sort().values


def count_intruders(U_tuned: torch.Tensor, U_ref: torch.Tensor, eps: float) -> int:
    """Columns of ``U_tuned`` whose largest |cosine| with every column of ``U_ref`` is below ``eps``."""
    best = (U_ref.T.double() @ U_tuned.double()).abs().amax(dim=0)
    return int((best < eps).sum())


@dataclass(frozen=True)
class _Options:
    k: int
    eps: float
    k_ref: int | None
    oversample: int
    niter: int
    exact_max: int
    seed: int


def _int_option(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _options(k: Any, eps: Any, k_ref: Any, oversample: Any, niter: Any, exact_max: Any, seed: Any) -> _Options:
    k = _int_option("k", k, 1)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < float(eps) < 1.0:
        raise ConfigError(f"eps (the intruder cosine threshold) must be a number in (0, 1), got {eps!r}")
    return _Options(k, float(eps), None if k_ref is None else _int_option("k_ref", k_ref, 1),
                    _int_option("oversample", oversample, 0), _int_option("niter", niter, 0),
                    _int_option("exact_max", exact_max, 0), _int_option("seed", seed, 0))


def _zero_row(k: int, method: str) -> dict[str, Any]:
    return {**{f"sigma_{i + 1}": 0.0 for i in range(k)}, "rank": 0.0, "effective_rank": 0.0,
            "stable_rank": 0.0, "topk_energy": 0.0, "angle_min_deg": 0.0, "angle_mean_deg": 0.0,
            "intruders": 0, "svd_rel_error": 0.0, "ref_svd_rel_error": 0.0, "method": method}


def _site_row(site: Site, method: str, opts: _Options, tuned_src, read_base, read_tuned) -> dict[str, Any]:
    """One site's row; every dense tensor made here is dropped when it returns."""
    k = opts.k
    if method == "untouched":
        return _zero_row(k, method)
    W = read_base(site)
    dev = W.device
    if method == "factors":
        f = tuned_src.factors(site)
        A, B = f.A.to(dev, torch.float32), f.B.to(dev, torch.float32)
        m1, m2 = (A.T, B.T) if f.transpose else (B, A)
        d_spec = factor_spectrum(m1, m2, f.scale)
        fro2 = float(d_spec.S.square().sum())
        tuned = torch.addmm(W, m1, m2, alpha=float(f.scale))
    else:
        tuned = read_tuned(site, W)
        M = tuned - W
        if not bool(M.any()):
            return _zero_row(k, "untouched")
        fro2, gen = _fro2(M), _seeded(opts.seed, site, "delta", dev)
        d_spec = _spec(M, k, k + opts.oversample, opts, gen)
        if not d_spec.exact and d_spec.S.numel() < min(M.shape):
            d_spec.tail_sum, d_spec.tail_xlogx, present = _tail_sums(M, d_spec.U, _tol(d_spec), gen)
            d_spec.tail_rank = min(M.shape) - int(d_spec.S.numel()) if present else 0
        method = "dense-exact" if d_spec.exact else "randomized"
        del M
    row = _delta_columns(d_spec, k, fro2)
    row.update(method=method, svd_rel_error=d_spec.error)
    rank = min(int(row["rank"]), int(d_spec.S.numel()), k)
    if rank == 0:  # ΔW ≡ 0 from its factors: the tuned weight is the base's
        return {**_zero_row(k, method), "svd_rel_error": d_spec.error}
    d = min(W.shape)
    k_ref = min(d, opts.k_ref if opts.k_ref is not None else 8 * k)
    q = max(k_ref, k) + opts.oversample
    w_spec = _spec(W, max(k_ref, k), q, opts, _seeded(opts.seed, site, "base", dev))
    angles = principal_angles(d_spec.U[:, :rank].to(dev), w_spec.U[:, :min(k, d)])
    # W + ΔW from W's own top right vectors plus Gaussian probes: a direction W + ΔW shares with W
    # is then not mistaken for an intruder because the randomized SVD resolved it loosely
    start = None if w_spec.V is None else w_spec.V[:, :k_ref]
    t_spec = _spec(tuned, k, q, opts, _seeded(opts.seed, site, "tuned", dev), start)
    row.update(angle_min_deg=float(angles[0]), angle_mean_deg=float(angles.mean()),
               intruders=count_intruders(t_spec.U[:, :min(k, d)], w_spec.U[:, :k_ref], opts.eps),
               ref_svd_rel_error=max(w_spec.error, t_spec.error))
    return row


def spectrum(model: Any, tuned: Any, *, modules: ModuleSpec = "all", layers: LayerSpec = None, k: int = 8,
             eps: float = 0.5, k_ref: int | None = None, oversample: int = 10, niter: int = 4,
             exact_max: int = EXACT_MAX, seed: int = 0, progress: bool = False,
             device: str | torch.device | None = None, layers_path: str | None = None) -> WitnessTable:
    """The singular spectrum of ΔW = tuned − base at every selected site (a ``"spectrum"`` table).

    ``model``: the base, anything :func:`affectlocus.diff` takes as base (a model, a checkpoint
    folder / file / index, a state dict, an alias); ``tuned``: any source (a model, a checkpoint, a
    peft adapter folder, a ``.pth``). Columns per site (fp32 work, fp64 where noted):

    * ``sigma_1``..``sigma_k``: ΔW's top-k singular values; 0 beyond its numerical rank (values
      ≤ σ₁·max(m, n)·ε_fp32 count as zero). ``rank``: that numerical rank (``randomized``: the
      captured values above the cut, plus every uncaptured one when the residual has any above it —
      an upper bound).
    * ``effective_rank``: exp(H(p)), pᵢ = σᵢ/Σσ over the non-zero values (Roy & Vetterli 2007); exact
      on exact paths. ``randomized``: the q captured values are exact Ritz values; the rest enters
      through Σσ and Σσ·ln σ of the residual (I − UUᵀ)ΔW, estimated by stochastic Lanczos quadrature
      (:data:`SLQ_PROBES` Rademacher probes, :data:`SLQ_STEPS` steps; exp(H) = exp(ln Σσ − Σσ ln σ / Σσ)).
      On synthetic spectra (Gaussian, power-law, exponential, low rank + noise) it came within ~10%
      of the exact value, where the captured values alone give at most q.
    * ``stable_rank``: ‖ΔW‖_F² / σ₁² (‖ΔW‖_F² exact, accumulated in fp64; on ``randomized`` rows
      σ̂₁ ≤ σ₁, so it may read slightly high). ``topk_energy``: Σᵢ≤k σᵢ² / ‖ΔW‖_F².
    * ``angle_min_deg`` / ``angle_mean_deg``: principal angles between the span of ΔW's top
      min(k, rank) left singular vectors and W's top-k left singular subspace (0° = W's own directions).
    * ``intruders``: how many of the top-k left singular vectors of W + ΔW have |cosine| < ``eps``
      with every one of W's top ``k_ref`` left singular vectors (default min(d, 8·k), d = min(shape);
      ``k_ref ≥ d`` compares with all of them, as Shuttleworth et al. 2024 do).
    * ``svd_rel_error``: for ``randomized`` rows maxᵢ≤k ‖ΔW vᵢ − σ̂ᵢ uᵢ‖₂ / σ̂₁ — each reported σ̂ᵢ lies
      within svd_rel_error·σ̂₁ of a true singular value of ΔW (and σ̂ᵢ ≤ σᵢ); 0 on exact paths.
      ``ref_svd_rel_error``: the same for the SVDs of W and W + ΔW behind the angles and intruders.

    Rows also carry ``method`` (``factors`` | ``dense-exact`` | ``randomized`` | ``untouched``, see
    the module docstring); untouched rows are all 0. ``exact_max``: largest min(shape) that gets an
    exact dense SVD; ``oversample`` / ``niter``: randomized-SVD probes beyond the wanted ones and
    power iterations, seeded per (``seed``, site). ``device``: where the arithmetic runs (default:
    where the base's weights are). Neither model is modified.
    """
    from ..diff.compare import _check_factors, open_pair
    from ..models.loader import resolve_device
    opts = _options(k, eps, k_ref, oversample, niter, exact_max, seed)
    target = resolve_device(device)  # typed errors for unknown / unavailable devices

    def fp32(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=target if target is not None else t.device, dtype=torch.float32)

    def read_base(site: Site) -> torch.Tensor:
        return fp32(readers[0].open(site).read(0, site.shape[0]))

    def read_tuned(site: Site, W: torch.Tensor) -> torch.Tensor:
        if tuned_src.is_delta:
            return W + tuned_src.delta(site, W).to(W.device, torch.float32)
        return readers[1].open(site).read(0, site.shape[0]).to(W.device, torch.float32)

    with open_pair(model, tuned, modules, layers, layers_path) as pair:
        base_src, tuned_src, readers = pair.base_src, pair.tuned_src, pair.readers
        stack, sites, notes = pair.stack, pair.sites, pair.notes
        methods = []
        for site in sites:
            f = tuned_src.factors(site) if tuned_src.is_delta else None
            if f is not None:
                _check_factors(site, f, tuned_src)
            methods.append("factors" if f is not None else
                           "untouched" if tuned_src.is_delta and not tuned_src.covers(site) else "dense")
        from tqdm.auto import tqdm
        values: dict[str, dict[str, Any]] = {}
        with torch.no_grad():
            for site, method in tqdm(list(zip(sites, methods)), desc="spectrum", unit="site",
                                     disable=not progress, leave=False):
                values[site.name] = _site_row(site, method, opts, tuned_src, read_base, read_tuned)
    rows = site_rows(sites, values)
    if rows and all(r["rank"] == 0 for r in rows):
        notes.append("ΔW is zero at every selected site (tuned = base?): nothing to decompose")
    columns = (*(f"sigma_{i + 1}" for i in range(opts.k)), "rank", "effective_rank", "stable_rank",
               "topk_energy", "angle_min_deg", "angle_mean_deg", "intruders", "svd_rel_error",
               "ref_svd_rel_error")
    meta = {"base": base_src.description, "tuned": tuned_src.description, "num_layers": stack.num_layers,
            "k": opts.k, "eps": opts.eps, "k_ref": opts.k_ref, "oversample": opts.oversample,
            "niter": opts.niter, "exact_max": opts.exact_max, "seed": opts.seed,
            "methods": dict(Counter(r["method"] for r in rows)),
            "device": None if device is None else str(device)}
    return WitnessTable("spectrum", rows, columns, meta, list(notes))


__all__ = ["EXACT_MAX", "count_intruders", "factor_spectrum", "principal_angles", "spectrum"]
