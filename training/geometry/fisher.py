"""Empirical Fisher geometry from M mini-batch gradients (arXiv 2602.23696 §4.5, Definitions 3–4; docs/definitions.md).

With G (M × D) the stacked mini-batch gradients of :func:`training.geometry.gradients.minibatch_gradients`:

- empirical Fisher      F̂ = (1/M) Gᵀ G = (1/M) Σ_i g_i g_iᵀ  (D × D, never formed)
- spectrum              the non-zero eigenvalues of F̂ are those of the M × M matrix K = (1/M) G Gᵀ
                        (accumulated in float64); trace F̂ = Σ λ_k = (1/M) Σ_i ‖g_i‖²
- eigenvectors          K w_k = λ_k w_k  ⇒  u_k = Gᵀ w_k / ‖Gᵀ w_k‖ is the unit eigenvector of F̂ for λ_k
- effective rank        exp(−Σ p_k ln p_k) with p_k = λ_k / Σ λ (entropy rank); participation ratio
                        (Σ λ)² / Σ λ²
- Rayleigh quotient     q(v) = v̂ᵀ F̂ v̂ = (1/M) ‖G v̂‖² = (1/M) Σ_i ⟨g_i, v̂⟩², v̂ = v / ‖v‖
- anisotropy            α = q(v_b) / ((1/K) Σ_k q(w_k)), w_1..w_K orthonormal, each ⊥ v_b, drawn from a
                        seeded Gaussian and orthonormalised against v_b and each other (QR = Gram–Schmidt)
- overlap               |⟨u_1, v̂_b⟩|
- comparison directions (claims 10, 11 of docs/claims.md): random directions with v_b's energy in every trunk
                        tensor (:func:`energy_matched_directions`), uniform in the trajectory's span
                        (:func:`span_random_coeffs`), the radial θ̂(t), PC2–PC5; q / trace F̂ and the centred q
                        (:func:`centred_rayleigh`); the verdict inputs :func:`claim10_summary`, :func:`claim11_summary`

The forward-mode path :func:`rayleigh_jvp` computes the same q(v) without any gradient matrix: for each
analysis batch the directional derivative dL_i(θ + εv̂)/dε at ε = 0 equals ⟨g_i, v̂⟩, obtained with
``torch.func.jvp`` through ``torch.func.functional_call`` on the model in explicit-math attention.
Memory: M × D for the gradient path (plus M × chunk float64 work space), a few D-vectors for JVP.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from training.core.config import Config
from training.core.data import LMProbeTask
from training.core.errors import UserError
from training.core.model import GPT, trunk_parameters
from training.core.optim import lambda_at
from training.geometry.gradients import analysis_batches, as_direction, chunk_width, part_loss, project


# ---------------------------------------------------------------------------- spectrum
@dataclass
class FisherSpectrum:
    """Eigen-decomposition of K = (1/M) G Gᵀ: the non-zero spectrum of the empirical Fisher."""

    eigenvalues: np.ndarray     # (M,) λ_1 ≥ … ≥ λ_M ≥ 0
    weights: np.ndarray         # (M × M) column k = unit eigenvector w_k of K
    dim: int                    # D, the parameter dimension of the gradients

    @property
    def n_batches(self) -> int:
        return len(self.eigenvalues)

    @property
    def trace(self) -> float:
        return float(self.eigenvalues.sum())

    @property
    def effective_rank(self) -> float:
        """exp of the Shannon entropy of λ / Σλ (1 for a rank-one Fisher, M for a flat spectrum)."""
        p = self.eigenvalues / self.trace
        p = p[p > 0]
        return float(np.exp(-(p * np.log(p)).sum()))

    @property
    def participation_ratio(self) -> float:
        return float(self.trace ** 2 / (self.eigenvalues ** 2).sum())

    def summary(self, top_k: int) -> dict:
        lam = self.eigenvalues
        return {"eigenvalues": lam[:top_k].tolist(), "lambda_1": float(lam[0]), "trace": self.trace,
                "lambda_1_over_trace": float(lam[0] / self.trace), "effective_rank": self.effective_rank,
                "participation_ratio": self.participation_ratio, "n_batches": self.n_batches, "dim": self.dim}


def gradient_gram(G: torch.Tensor) -> np.ndarray:
    """G Gᵀ (M × M) accumulated in float64 over column chunks."""
    K = torch.zeros(G.shape[0], G.shape[0], dtype=torch.float64, device=G.device)
    width = chunk_width(G)
    for a in range(0, G.shape[1], width):
        c = G[:, a:a + width].to(torch.float64)
        K += c @ c.T
    return K.cpu().numpy()


def fisher_spectrum(G: torch.Tensor) -> FisherSpectrum:
    """Eigenvalues (descending) and eigenvectors of (1/M) G Gᵀ."""
    M = G.shape[0]
    K = gradient_gram(G) / M
    lam, W = np.linalg.eigh((K + K.T) / 2)
    order = np.argsort(lam)[::-1]
    lam = lam[order]
    if lam[0] <= 0:
        raise UserError("every mini-batch gradient is zero; the Fisher spectrum is undefined")
    return FisherSpectrum(np.clip(lam, 0.0, None), W[:, order], G.shape[1])


def spectrum_bootstrap(K: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    """Resampling noise of λ_1 and trace F̂: ``K`` = (1/M) G Gᵀ; each of ``n_boot`` draws resamples the M mini-batch
    gradients with replacement (rows and columns idx of K: the Fisher of the resampled gradients) and takes its
    top eigenvalue and trace. Returns the draws and the standard deviations (ddof 1) of their logarithms."""
    K = np.asarray(K, dtype=np.float64)
    M = K.shape[0]
    if K.ndim != 2 or K.shape[1] != M or M < 2 or n_boot < 2:
        raise UserError("the Fisher bootstrap needs a square gradient Gram of M >= 2 batches and n_boot >= 2")
    lam1, tr = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, M, size=M)
        Kb = K[np.ix_(idx, idx)]
        lam1[b] = np.linalg.eigvalsh((Kb + Kb.T) / 2)[-1]
        tr[b] = np.trace(Kb)
    with np.errstate(divide="ignore"):
        return {"lambda_1": lam1.tolist(), "trace": tr.tolist(), "sd_log_lambda_1": float(np.log(lam1).std(ddof=1)),
                "sd_log_trace": float(np.log(tr).std(ddof=1))}


def peak_trough_fisher(records: dict[int, dict], pairs) -> dict:
    """The Fisher spectrum at the peaks against the troughs of switch pairs, paired: per pair and for
    ``key`` in (λ_1, trace), d = ln key(peak) − ln key(trough), its noise se = sqrt(sd_p² + sd_t²) from the
    resampling sds of each checkpoint (:func:`spectrum_bootstrap`) and z = d / se; over pairs the mean d,
    its standard error over pairs (sd/√n, n ≥ 2) and the mean bootstrap se. The null is d = 0: a peak
    and a trough with the same Fisher differ by the resampling noise only. ``records``: step ->
    {"lambda_1", "trace", "sd_log_lambda_1", "sd_log_trace"}."""
    rows = []
    for q in pairs:
        p, t = records[q.peak_step], records[q.trough_step]
        row = {"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind, "amplitude": q.amplitude}
        for key in ("lambda_1", "trace"):
            d = float(np.log(p[key]) - np.log(t[key]))
            se = float(np.hypot(p[f"sd_log_{key}"], t[f"sd_log_{key}"]))
            row[key] = {"peak": p[key], "trough": t[key], "log_ratio": d, "se": se,
                        "z": d / se if se > 0 else None}
        rows.append(row)
    summary = {}
    for key in ("lambda_1", "trace"):
        d = np.array([r[key]["log_ratio"] for r in rows])
        n = len(d)
        summary[key] = {"n_pairs": n, "mean_log_ratio": float(d.mean()) if n else None,
                        "sem_over_pairs": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
                        "mean_bootstrap_se": float(np.mean([r[key]["se"] for r in rows])) if n else None,
                        "n_peak_higher": int(np.sum(d > 0))}
    return {"pairs": rows, "summary": summary,
            "null": "log ratio 0: the same Fisher at peak and trough, up to the mini-batch resampling noise (se)"}


def top_eigenvectors(G: torch.Tensor, spectrum: FisherSpectrum, k: int = 1) -> torch.Tensor:
    """U (D × k, float64): u_j = Gᵀ w_j / ‖Gᵀ w_j‖, the unit eigenvectors of F̂ for λ_1..λ_k."""
    W = torch.as_tensor(spectrum.weights[:, :k], dtype=torch.float64, device=G.device)
    U = torch.empty(G.shape[1], k, dtype=torch.float64, device=G.device)
    width = chunk_width(G)
    for a in range(0, G.shape[1], width):
        U[a:a + width] = G[:, a:a + width].to(torch.float64).T @ W
    return U / torch.linalg.vector_norm(U, dim=0)


# ---------------------------------------------------------------------------- Rayleigh quotients
def unit_columns(V: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """V (D or D × m) as float64 D × m with unit columns, on the device of ``like``."""
    V = as_direction(V, like)
    V = V[:, None] if V.ndim == 1 else V
    n = torch.linalg.vector_norm(V, dim=0)
    if torch.any(n == 0):
        raise UserError("a direction of the analysis is the zero vector")
    return V / n


def rayleigh(G: torch.Tensor, V: np.ndarray | torch.Tensor) -> np.ndarray:
    """q(v) = (1/M) Σ_i ⟨g_i, v̂⟩² for each column v of V (D or D × m); returns an (m,) array."""
    P = project(G, unit_columns(V, G))
    return (P.square().mean(dim=0)).cpu().numpy()


def orthogonal_random_directions(v: np.ndarray | torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """W (D × K, float64, CPU): K orthonormal directions, all orthogonal to v, from a seeded Gaussian.

    Z ~ N(0, I) (torch.Generator seeded with ``seed``), then the QR factorisation of [v̂, Z] -- Householder
    Gram–Schmidt -- whose columns 2..K+1 are orthonormal and orthogonal to v̂.
    """
    v = as_direction(v, torch.empty(0)).reshape(-1)
    D = v.shape[0]
    if not 1 <= K < D:
        raise UserError(f"the number of random directions K={K} must be between 1 and D-1={D - 1}")
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(D, K, generator=g, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.cat([(v / torch.linalg.vector_norm(v))[:, None], Z], dim=1))
    return Q[:, 1:]


def energy_matched_directions(v: np.ndarray | torch.Tensor, sizes: list[int], K: int, seed: int) -> torch.Tensor:
    """W (D × K, float64, CPU): K random unit directions with v's energy in every tensor.

    ``sizes`` are the lengths of the consecutive tensors that make up a trunk vector (e.g.
    :func:`training.core.model.trunk_tensor_sizes`). On tensor τ, w|τ = ‖v̂|τ‖ · z_τ / ‖z_τ‖ with z Gaussian
    (seeded), so ‖w|τ‖ = ‖v̂|τ‖ for every τ and ‖w‖ = 1. A random direction orthogonal to v_b spreads its
    energy over the tensors in proportion to their sizes; v_b need not, and a tensor with larger gradients makes
    q larger along any direction that lives there. This null keeps that placement and randomises the rest.
    """
    v = as_direction(v, torch.empty(0)).reshape(-1)
    v = v / torch.linalg.vector_norm(v)
    if sum(sizes) != v.shape[0]:
        raise ValueError(f"tensor sizes add up to {sum(sizes)}, the direction has {v.shape[0]} entries")
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(v.shape[0], K, generator=g, dtype=torch.float64)
    a = 0
    for n in sizes:
        block = W[a:a + n]
        block *= torch.linalg.vector_norm(v[a:a + n]) / torch.linalg.vector_norm(block, dim=0).clamp(min=1e-300)
        a += n
    return W / torch.linalg.vector_norm(W, dim=0)


def span_random_coeffs(principal_coeffs: np.ndarray, K: int, seed: int) -> np.ndarray:
    """Span coefficients (T × K) of K directions uniform on the unit sphere of the trajectory's span: Gaussian
    weights on its orthonormal principal directions (``principal_coeffs``, k × T, from a full-rank
    :func:`training.geometry.trajectory.pca`). Weights on the raw drift rows would not do: the rows are nearly
    parallel, so such directions would sit close to PC1."""
    z = np.random.default_rng([seed, 11]).standard_normal((principal_coeffs.shape[0], K))
    z /= np.linalg.norm(z, axis=0)
    return principal_coeffs.T @ z


def centred_rayleigh(G: torch.Tensor, V: np.ndarray | torch.Tensor) -> np.ndarray:
    """The variance-only quotient (1/M) Σ_i (⟨g_i, v̂⟩ − mean_i ⟨g_i, v̂⟩)² for each column of V: q(v) minus the
    squared mean projection, the curvature the mini-batches' spread shows without the mean gradient's share."""
    P = project(G, unit_columns(V, G))
    return (P - P.mean(dim=0)).square().mean(dim=0).cpu().numpy()


def anisotropy_ratio(q_backbone: float, q_random: np.ndarray) -> float:
    """α = q(v_b) / mean_k q(w_k)."""
    return float(q_backbone / np.mean(q_random))


def overlap(u: torch.Tensor, v: np.ndarray | torch.Tensor) -> float:
    """|⟨u, v̂⟩| for a unit vector u (e.g. the top Fisher eigenvector) and any direction v."""
    return float(abs(unit_columns(v, u)[:, 0] @ u.reshape(-1).to(torch.float64)))


# ---------------------------------------------------------------------------- forward mode
def rayleigh_jvp(model: GPT, task: LMProbeTask, cfg: Config, step: int, V: np.ndarray | torch.Tensor,
                 n_batches: int, seed: int, batch_size: int | None = None, part: str = "total",
                 block: int | None = None, chunk: int = 4, progress: bool = False) -> np.ndarray:
    """q(v) for each column of V via forward-mode autodiff, on the batches of ``minibatch_gradients``.

    For batch i and unit direction v̂, t_i = ⟨∇L_i, v̂⟩ is the JVP of θ_trunk ↦ L_i along v̂ (same loss,
    same λ = lambda_at(cfg, step), same seeded batches); q(v) = (1/M) Σ_i t_i². Tangents are pushed
    ``chunk`` at a time through ``torch.func.vmap`` (one primal pass per chunk). The model runs with the
    explicit math attention (restored afterwards), in its own dtype.
    """
    from torch.func import functional_call, jvp, vmap
    if chunk < 1:
        raise UserError(f"the number of directions per forward-mode pass must be at least 1 (got {chunk})")
    params = {n: p.detach() for n, p in trunk_parameters(model, block)}
    first = next(iter(params.values()))
    U = unit_columns(V, first)
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]
    if U.shape[0] != sum(s[2] for s in shapes):
        raise ValueError(f"directions have {U.shape[0]} coordinates, the trunk {sum(s[2] for s in shapes)}")
    lam = lambda_at(cfg, step)
    backend = model.blocks[0].attn.backend
    model.set_attention("math").eval()
    sums = torch.zeros(U.shape[1], dtype=torch.float64)
    batches = analysis_batches(task, n_batches, seed, batch_size, part)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"jvp {part} @{step}", unit="batch", leave=False, disable=None)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # torch's forward-mode decompositions are scripted on first use, which warns about torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=DeprecationWarning)
            for b in batches:
                b = b.to(first.device)

                def loss(trunk: dict[str, torch.Tensor]) -> torch.Tensor:
                    return part_loss(functional_call(model, trunk, (b.x,)), b, lam, part)

                def directional(tangent: dict[str, torch.Tensor]) -> torch.Tensor:
                    return jvp(loss, (params,), (tangent,))[1]

                for a in range(0, U.shape[1], chunk):
                    cols = U[:, a:a + chunk].T.to(first.dtype)          # (c × D) in canonical order
                    tangents, pos = {}, 0
                    for n, shape, numel in shapes:
                        tangents[n] = cols[:, pos:pos + numel].reshape(cols.shape[0], *shape)
                        pos += numel
                    sums[a:a + chunk] += vmap(directional)(tangents).to(torch.float64).square().cpu()
    finally:
        model.set_attention(backend)
    return (sums / n_batches).numpy()



def hessian_quadratic(model: GPT, task: LMProbeTask, cfg: Config, step: int, V: np.ndarray | torch.Tensor,
                      n_batches: int, seed: int, batch_size: int | None = None, part: str = "total",
                      chunk: int = 4, progress: bool = False) -> np.ndarray:
    """v̂ᵀ H v̂ for each column of V: the curvature of the mini-batch loss itself along v, averaged over the
    batches of ``minibatch_gradients`` (same loss, λ and seeded batches as q(v)).

    The empirical Fisher q(v) measures how much the per-batch gradients spread along v, a proxy for curvature
    that can disagree with it; this is the second derivative, H_i v̂ by forward-over-reverse differentiation
    (``torch.func.jvp`` of ``torch.func.grad``) with ``chunk`` directions per pass, the model in explicit math
    attention (fused attention kernels have no second derivative), restored afterwards.
    """
    from torch.func import functional_call, grad, jvp, vmap
    params = {n: p.detach() for n, p in trunk_parameters(model)}
    first = next(iter(params.values()))
    U = unit_columns(V, first)
    shapes = [(n, p.shape, p.numel()) for n, p in params.items()]
    if U.shape[0] != sum(s[2] for s in shapes):
        raise ValueError(f"directions have {U.shape[0]} coordinates, the trunk {sum(s[2] for s in shapes)}")
    lam = lambda_at(cfg, step)
    backend = model.blocks[0].attn.backend
    model.set_attention("math").eval()
    sums = torch.zeros(U.shape[1], dtype=torch.float64)
    batches = analysis_batches(task, n_batches, seed, batch_size, part)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"hvp {part} @{step}", unit="batch", leave=False, disable=None)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*is deprecated", category=DeprecationWarning)
            for b in batches:
                b = b.to(first.device)

                def loss(trunk: dict[str, torch.Tensor]) -> torch.Tensor:
                    return part_loss(functional_call(model, trunk, (b.x,)), b, lam, part)

                def curvature(tangent: dict[str, torch.Tensor]) -> torch.Tensor:
                    hv = jvp(grad(loss), (params,), (tangent,))[1]
                    return sum((hv[n] * tangent[n]).sum() for n in tangent)

                for a in range(0, U.shape[1], chunk):
                    cols = U[:, a:a + chunk].T.to(first.dtype)
                    tangents, pos = {}, 0
                    for n, shape, numel in shapes:
                        tangents[n] = cols[:, pos:pos + numel].reshape(cols.shape[0], *shape)
                        pos += numel
                    sums[a:a + chunk] += vmap(curvature)(tangents).detach().to(torch.float64).cpu()
    finally:
        model.set_attention(backend)
    return (sums / n_batches).numpy()

# ---------------------------------------------------------------------------- claims 10 and 11
ALPHA_LIMIT = 3.0        # α against the energy-matched null at its peak (claims.md, claim 10)
ALPHA_GROWTH_LIMIT = 5.0  # α_max / α_first
OVERLAP_RATIO_LIMIT = 3.0  # |⟨u_1, v_b⟩| at most 3 × the larger comparison overlap: "orthogonal" (claim 11)


def claim10_summary(records: list[dict], key: str = "anisotropy_energy_matched") -> dict:
    """Claim 10 ("the backbone stiffens; α spikes at the λ switch") from the checkpoints' α against the
    energy-matched null: α_max, α at the first analysed checkpoint, their ratio, and excess =
    min(α_max / 3, (α_max / α_first) / 5) − 1, > 0 iff both of the rule's conditions hold."""
    alpha = [r.get(key) for r in records]
    good = [(r["step"], a) for r, a in zip(records, alpha) if a is not None and np.isfinite(a)]
    if not good:
        return {"alpha": alpha, "excess": None, "holds": None}
    a_max_step, a_max = max(good, key=lambda x: x[1])
    first = good[0][1]
    growth = a_max / first if first > 0 else None
    excess = None if growth is None else float(min(a_max / ALPHA_LIMIT, growth / ALPHA_GROWTH_LIMIT) - 1.0)
    return {"alpha": alpha, "alpha_max": float(a_max), "alpha_max_step": a_max_step, "alpha_first": float(first),
            "growth": growth, "limit": ALPHA_LIMIT, "growth_limit": ALPHA_GROWTH_LIMIT, "excess": excess,
            "holds": None if excess is None else excess > 0}


def claim11_summary(records: list[dict]) -> dict:
    """Claim 11 ("the backbone is orthogonal to the top Fisher eigenvector"): per checkpoint |⟨u_1, v_b⟩| over the
    larger of |⟨u_1, v_PC2⟩| and the mean overlap with directions random in the trajectory's span; the median of
    that ratio must be ≤ 3 for "orthogonal" (a tiny overlap is no evidence when u_1 overlaps every trajectory
    direction as little). Null (None) where the top eigenvector was not computed (forward-mode quotients)."""
    ratios = []
    for r in records:
        ob, o2, osp = (r.get(k) for k in ("overlap_top_eigvec_backbone", "overlap_top_eigvec_pc2",
                                          "overlap_top_eigvec_span_random_mean"))
        ref = max([x for x in (o2, osp) if x is not None], default=None)
        ratios.append(ob / ref if ob is not None and ref else None)
    good = [x for x in ratios if x is not None]
    med = float(np.median(good)) if good else None
    return {"ratios": ratios, "median_ratio": med, "limit": OVERLAP_RATIO_LIMIT,
            "holds": None if med is None else med <= OVERLAP_RATIO_LIMIT}
