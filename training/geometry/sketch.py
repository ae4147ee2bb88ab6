"""Sketched trajectory PCA: a seeded Gaussian (Johnson–Lindenstrauss) projection applied chunk by chunk.

The exact analysis (:mod:`training.geometry.trajectory`) accumulates the T×T Gram matrix G = X·Xᵀ of the drift
rows x_t = θ(t) − θ(anchor). Its cost is T²·D multiply-adds and every new checkpoint needs the inner
products with all the earlier ones (all files read again). The sketch replaces the D coordinates by k
random combinations: y_t = R·x_t with R a k×D matrix of independent N(0, 1/k) entries, and
G̃ = Y·Yᵀ. Each checkpoint is sketched on its own (Y is linear in θ, so y_t = Rθ_t − Rθ_anchor), at a
cost of k·D per checkpoint: it pays when T is large compared to k (dense checkpointing, long sweeps)
and when a checkpoint can be read only once (sketch it when written, then delete it).

R is never stored. Its rows are generated in blocks of :data:`GEN_BLOCK` coordinates of one tensor,
each block from a generator seeded by (seed, tensor name, block index): any chunking of the stream
(chunk size, trunk or one block, a sharded file layout) meets exactly the same projection, and the
trunk sketch is the sum of the per-block sketches.

Error bounds (reported with every sketched result), two independent guarantees, each failing with
probability at most δ:

* entrywise: for a fixed unit vector u, k·‖Ru‖² is χ²_k, and the Laurent–Massart inequalities give
  P(|‖Ru‖² − 1| > ε) ≤ 2·e^{−s} for ε = 2√(s/k) + 2s/k. A union over the n = T² vectors x_i/‖x_i‖ and
  x_i/‖x_i‖ ± x_j/‖x_j‖ (s = ln(2n/δ)) and polarisation give |G̃_ij − G_ij| ≤ ε·‖x_i‖·‖x_j‖ for all
  entries; Weyl's inequality and the Davis–Kahan theorem (Yu, Wang & Samworth 2015 form) turn it into
  absolute intervals for the explained fractions and a lower bound on |cos| between the exact and
  sketched PC1 score profiles;
* subspace: restricted to the (≤ T−1)-dimensional span of the drifts, R is a Gaussian matrix whose
  singular values lie within 1 ± (√(r/k) + √(2 ln(2/δ)/k)) (Davidson–Szarek), so every eigenvalue of
  the drift Gram is known within a factor 1 ± ε_sub: relative intervals, tight for small components and
  for 1 − PC1 when PC1 dominates.

:func:`pca_bounds` reports both and their intersection (raw and row-normalised PCA).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from training.core.errors import UserError
from training.geometry.trajectory import DEFAULT_CHUNK_BYTES, CheckpointSet, Gram, _elems, pca, stream_rows

GEN_BLOCK = 4096          # coordinates of one tensor per generated projection block
_COLS = 16384             # columns of a chunk projected at a time (bounds the R block in memory)


# ---------------------------------------------------------------------------- the projection
def _block_seed(seed: int, name: str, block: int) -> int:
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), int(block)])
    return int(state.generate_state(1, np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


def projection_rows(seed: int, name: str, start: int, stop: int, k: int,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Rows [start, stop) of Rᵀ for the flattened tensor ``name``: a (stop − start) × k float32 matrix of N(0, 1/k).

    Regenerated on demand from (seed, name, start // GEN_BLOCK, ...); the same rows whatever the chunking.
    The draws come from ``device``'s generator: the CPU's and CUDA's give different (each reproducible)
    projections, so a sketch is comparable only with sketches drawn on the same kind of device.
    """
    device = torch.device(device)
    if stop <= start:
        return torch.empty(0, k, device=device)
    out = torch.empty(stop - start, k, device=device)
    scale = 1.0 / math.sqrt(k)
    for blk in range(start // GEN_BLOCK, (stop - 1) // GEN_BLOCK + 1):
        g = torch.Generator(device=device).manual_seed(_block_seed(seed, name, blk))
        rows = torch.randn(GEN_BLOCK, k, generator=g, device=device).mul_(scale)
        a, b = max(start, blk * GEN_BLOCK), min(stop, (blk + 1) * GEN_BLOCK)
        out[a - start:b - start] = rows[a - blk * GEN_BLOCK:b - blk * GEN_BLOCK]
    return out


# ---------------------------------------------------------------------------- the bound
def jl_epsilon(k: int, n_vectors: int, failure_prob: float) -> float:
    """ε such that ‖Ru‖² ∈ [1 − ε, 1 + ε] for all of ``n_vectors`` fixed unit vectors with prob. ≥ 1 − failure_prob."""
    if not 0 < failure_prob < 1:
        raise UserError(f"the failure probability must be in (0, 1) (got {failure_prob})")
    s = math.log(2 * max(1, n_vectors) / failure_prob)
    return 2 * math.sqrt(s / k) + 2 * s / k


@dataclass
class SketchedGram(Gram):
    """A :class:`~training.geometry.trajectory.Gram` whose G is the sketch Y·Yᵀ (usable by every Gram-based function)."""

    sketch_dim: int = 0
    seed: int = 0
    failure_prob: float = 0.01
    Y: np.ndarray | None = None        # T × k sketches of the drift rows
    generator: str = "cpu"             # the device type whose random generator drew the projection

    @property
    def epsilon(self) -> float:
        """The entrywise relative bound |G̃_ij − G_ij| ≤ ε‖x_i‖‖x_j‖ (holds with prob. ≥ 1 − failure_prob)."""
        return jl_epsilon(self.sketch_dim, len(self.steps) ** 2, self.failure_prob)

    def describe(self) -> dict:
        """The sketch's settings, its guaranteed entrywise bound ε and its typical (one standard deviation) error.

        For a Gaussian sketch Var(G̃_ij) = (G_ii·G_jj + G_ij²)/k, so the error of an entry relative to
        ‖x_i‖‖x_j‖ has standard deviation at most √(2/k): the size of the error to expect, where ε is
        the size it exceeds with probability at most failure_prob (over all T² entries at once).
        """
        return {"method": "gaussian_jl", "sketch_dim": self.sketch_dim, "seed": self.seed,
                "failure_prob": self.failure_prob, "epsilon": self.epsilon,
                "typical_entry_error": math.sqrt(2 / self.sketch_dim), "generator": self.generator,
                "n_checkpoints": len(self.steps),
                "dim": self.dim}


def compute_sketch(ckpts: CheckpointSet, sketch_dim: int, seed: int = 0, steps: Sequence[int] | None = None,
                   block: int | None = None, anchor: int | None = None, failure_prob: float = 0.01,
                   max_bytes: int = DEFAULT_CHUNK_BYTES, device: str | torch.device = "cpu",
                   progress: bool = False) -> SketchedGram:
    """Stream the checkpoints once and accumulate Y = X·Rᵀ (T × k, float64); G̃ = Y·Yᵀ.

    Drift rows are formed in float64 and projected in float32 (on ``device``); each chunk's product is
    added to Y in float64. Memory: T × chunk plus a _COLS × k block of R.
    """
    if sketch_dim < 1:
        raise UserError(f"the sketch dimension must be a positive integer (got {sketch_dim})")
    steps = list(ckpts.steps if steps is None else steps)
    anchor = steps[0] if anchor is None else anchor
    if anchor not in steps:
        steps = [anchor] + steps
    T, ai = len(steps), steps.index(anchor)
    device = torch.device(device)
    Y = torch.zeros(T, sketch_dim, dtype=torch.float64, device=device)
    elems = _elems(max_bytes, T)
    pieces = ckpts.chunks(block, elems)
    shapes = ckpts.shapes(block)
    chunks = stream_rows(ckpts, steps, block, elems)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, total=len(pieces), desc="sketch", unit="chunk", disable=None)
    for (name, a, _), rows in zip(pieces, chunks):
        per_row = int(np.prod(shapes[name][1:])) if len(shapes[name]) > 1 else 1
        e0 = a * per_row
        x = torch.from_numpy(rows)
        for c0 in range(0, x.shape[1], _COLS):
            c1 = min(x.shape[1], c0 + _COLS)
            blk = x[:, c0:c1].double()
            blk.sub_(blk[ai].clone())
            R = projection_rows(seed, name, e0 + c0, e0 + c1, sketch_dim, device)
            Y += (blk.to(device=device, dtype=torch.float32) @ R).double()
    Yn = Y.cpu().numpy()
    return SketchedGram(steps, anchor, block, ckpts.dim(block), Yn @ Yn.T, sketch_dim=sketch_dim, seed=seed,
                        failure_prob=failure_prob, Y=Yn, generator=device.type)


# ---------------------------------------------------------------------------- bounds on the PCA
def subspace_epsilon(k: int, rank: int, failure_prob: float) -> float:
    """ε with (1 − ε)‖v‖² ≤ ‖Rv‖² ≤ (1 + ε)‖v‖² for *every* v in a fixed ``rank``-dimensional subspace.

    R restricted to the subspace is a k × rank Gaussian matrix (rotation invariance); its singular values
    lie within 1 ± s, s = √(rank/k) + √(2 ln(2/δ)/k), with probability ≥ 1 − δ (Davidson–Szarek), so
    ε = 2s + s². Infinite when s ≥ 1 (no bound).
    """
    s = math.sqrt(rank / k) + math.sqrt(2 * math.log(2 / failure_prob) / k)
    return 2 * s + s * s if s < 1 else math.inf


def _fraction_intervals(a: np.ndarray, b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on λ_j / Σλ when each λ_j ∈ [a_j, b_j]."""
    A, B = a.sum(), b.sum()
    lo = np.divide(a[:m], a[:m] + B - b[:m], out=np.zeros(m), where=(a[:m] + B - b[:m]) > 0)
    hi = np.divide(b[:m], b[:m] + A - a[:m], out=np.ones(m), where=(b[:m] + A - a[:m]) > 0)
    return np.clip(lo, 0, 1), np.clip(hi, 0, 1)


def pca_bounds(gram: SketchedGram, steps: Sequence[int] | None = None, ref: int | None = None,
               rownorm: bool = False, n_components: int = 10) -> dict:
    """Intervals that hold the exact PCA's numbers, from two independent guarantees of the sketch.

    * ``entrywise`` (probability ≥ 1 − failure_prob): |G̃_ij − G_ij| ≤ ε‖x_i‖‖x_j‖ bounds the operator
      norm of the perturbation; Weyl's inequality gives absolute intervals for the explained fractions and
      the Davis–Kahan theorem ``pc1_abs_cos_min``, a lower bound on |⟨u₁, ũ₁⟩| between the exact and
      sketched unit score profiles of PC1 (None when the sketched spectral gap is too small).
    * ``subspace`` (probability ≥ 1 − failure_prob): R distorts every vector of the span of the T drifts
      by at most 1 ± ε_sub, so every eigenvalue is known within that factor (row normalisation: its square);
      the intervals are relative, tight for small components and for 1 − PC1 when PC1 dominates.

    ``explained_variance_ratio_lo`` / ``_hi`` intersect the two (both hold with probability ≥ 1 − 2·failure_prob).
    """
    eps, delta = gram.epsilon, gram.failure_prob
    ref = gram.anchor if ref is None else ref
    steps = [s for s in (gram.steps if steps is None else steps) if s != ref]
    A = gram.drift_coeffs(steps, ref)
    K0 = A @ gram.G @ A.T
    nrm = np.sqrt(np.clip(np.diag(K0), 0, None))
    if rownorm and np.any(nrm == 0):
        return {"rownorm": rownorm, "valid": False, "reason": "a sketched drift row is zero"}
    K = K0 / np.outer(nrm, nrm) if rownorm else K0
    lam = np.clip(np.sort(np.linalg.eigvalsh((K + K.T) / 2))[::-1], 0, None)
    m = min(n_components, len(lam))
    out = {"rownorm": rownorm, "failure_prob_each": delta}
    los, his = [], []

    # --- entrywise (JL over the T² vectors)
    entry = {"epsilon": eps, "valid": False}
    if eps < 1:
        d_up = np.sqrt(np.clip(np.diag(gram.G), 0, None) / (1 - eps))        # ‖x_i‖ ≤ d_up_i
        w = np.abs(A) @ d_up                                                   # |K̃0 − K0|_st ≤ ε w_s w_t
        beta = tau = None
        if not rownorm:
            beta = tau = eps * float(w @ w)
        else:
            n_low2 = np.diag(K0) - eps * w ** 2
            if np.all(n_low2 > 0):
                r = w / np.sqrt(n_low2)
                eta = eps * r ** 2
                if np.all(eta < 1):
                    inv = 1 / np.sqrt(np.outer(1 - eta, 1 - eta))
                    M = (inv - 1) + eps * np.outer(r, r) * inv
                    np.fill_diagonal(M, 0.0)
                    beta, tau = float(np.linalg.norm(M, 2)), 0.0
        if beta is not None:
            tr = float(np.trace(K))
            lo = np.clip((lam[:m] - beta) / (tr + tau), 0, 1)
            hi = np.clip((lam[:m] + beta) / (tr - tau), 0, 1) if tr > tau else np.ones(m)
            gap = (lam[0] - lam[1] if len(lam) > 1 else lam[0]) - 2 * beta
            sin = 2 * beta / gap if gap > 0 else None
            entry.update(valid=True, perturbation_norm_bound=beta, trace_bound=tau,
                         explained_variance_ratio_lo=lo.tolist(), explained_variance_ratio_hi=hi.tolist(),
                         pc1_abs_cos_min=math.sqrt(1 - sin ** 2) if sin is not None and sin < 1 else None)
            los.append(lo)
            his.append(hi)

    # --- subspace embedding of the span of the drifts (rank ≤ T − 1: the anchor's row is zero)
    eps_sub = subspace_epsilon(gram.sketch_dim, max(1, len(gram.steps) - 1), delta)
    sub = {"epsilon": eps_sub if math.isfinite(eps_sub) else None, "valid": False}
    if eps_sub < 1:
        if rownorm:      # the sketched norms are off by √(1 ± ε) too: Ostrowski adds the same factor once more
            a, b = lam * (1 - eps_sub) / (1 + eps_sub), lam * (1 + eps_sub) / (1 - eps_sub)
        else:
            a, b = lam / (1 + eps_sub), lam / (1 - eps_sub)
        lo, hi = _fraction_intervals(a, b, m)
        sub.update(valid=True, explained_variance_ratio_lo=lo.tolist(), explained_variance_ratio_hi=hi.tolist())
        los.append(lo)
        his.append(hi)

    out.update(entrywise=entry, subspace=sub, valid=bool(los), epsilon=eps,
               pc1_abs_cos_min=entry.get("pc1_abs_cos_min"))
    if not los:
        return {**out, "reason": "the sketch dimension is too small for a bound (epsilon >= 1)"}
    out["failure_prob"] = min(1.0, delta * len(los))
    out["explained_variance_ratio_lo"] = np.max(los, axis=0).tolist()
    out["explained_variance_ratio_hi"] = np.min(his, axis=0).tolist()
    return out


def measured_error(sketched: SketchedGram, exact: Gram, steps: Sequence[int] | None = None, ref: int | None = None,
                   n_components: int = 10) -> dict:
    """The sketch's actual errors against the exact Gram of the same checkpoints (when that is available)."""
    if list(exact.steps) != list(sketched.steps) or exact.anchor != sketched.anchor:
        raise UserError("the exact and sketched Gram matrices are of different checkpoints")
    d = np.sqrt(np.clip(np.diag(exact.G), 0, None))
    dd = np.outer(d, d)
    rel = np.divide(np.abs(sketched.G - exact.G), dd, out=np.zeros_like(dd), where=dd > 0)
    out = {"max_entry_error_over_norms": float(rel.max())}
    for rn in (False, True):
        e, s = pca(exact, steps, ref, rownorm=rn, k=1), pca(sketched, steps, ref, rownorm=rn, k=1)
        m = min(n_components, len(e.explained_variance_ratio), len(s.explained_variance_ratio))
        u_e, u_s = e.scores[:, 0] / e.singular_values[0], s.scores[:, 0] / s.singular_values[0]
        out["rownorm" if rn else "raw"] = {
            "max_abs_explained_variance_ratio_error": float(np.max(np.abs(
                e.explained_variance_ratio[:m] - s.explained_variance_ratio[:m]))),
            "pc1_abs_cos": float(abs(u_e @ u_s)), "k95_exact": e.k95, "k95_sketch": s.k95}
    return out
