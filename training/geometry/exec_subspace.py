"""Per-block trajectory spectra and subspace comparisons ("execution subspace"; as
skydancerosel/bubble-modadd's ``analysis_subspace.py`` and ``analysis_alignment.py``; arXiv 2602.10496).

A *block* is one attention matrix of one layer -- W_Q, W_K, W_V (row slices of the fused qkv weight) or
W_O -- or, in a standard model, one MLP matrix. Its trajectory is the T × D matrix of its flattened
snapshots at the run's checkpoints. Models of this study are small, so the matrices are formed densely.

Spectrum of a trajectory (``centered``: rows minus their mean, the reference's PCA; uncentered: the drift
from the first snapshot, θ(t) − θ(0), the toolkit's backbone convention, first row dropped):

* explained-variance ratio λ_i / Σλ (λ = squared singular values, full spectrum);
* r90 = the smallest k with cumulative ratio >= 0.90 (:func:`training.geometry.trajectory.k_at`);
* erank = exp(entropy of σ_i / Σσ) -- singular values, not variances, as the reference;
* participation ratio (Σλ)² / Σλ² -- the variance-based alternative;
* alignment to final: cos(θ(t) − θ(0), θ(T) − θ(0)).

The null is :func:`training.geometry.trajectory.random_walk_null` with the block's own increment norms. Row
permutations leave every spectral number unchanged (the reference's "shuffled" null is therefore vacuous);
a test pins this. Subspaces are compared by principal angles: the cosines are the singular values of
U1ᵀU2 for orthonormal bases, their mean square is the overlap in [0, 1], k/n for random subspaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.core import runio
from training.geometry.trajectory import k_at, random_walk_null


@dataclass(frozen=True)
class BlockSlice:
    label: str          # e.g. "L0.WQ"
    layer: int
    kind: str           # WQ | WK | WV | WO | Wup | Wdown
    name: str           # state-dict tensor
    rows: tuple[int, int]


def block_slices(cfg) -> list[BlockSlice]:
    d = cfg.d_model
    out = []
    for l in range(cfg.n_layer):
        qkv = f"blocks.{l}.attn.qkv.weight"
        for i, kind in enumerate(("WQ", "WK", "WV")):
            out.append(BlockSlice(f"L{l}.{kind}", l, kind, qkv, (i * d, (i + 1) * d)))
        out.append(BlockSlice(f"L{l}.WO", l, "WO", f"blocks.{l}.attn.out_proj.weight", (0, d)))
        if not cfg.attn_only:
            out.append(BlockSlice(f"L{l}.Wup", l, "Wup", f"blocks.{l}.mlp.w_up.weight", (0, cfg.d_ff)))
            out.append(BlockSlice(f"L{l}.Wdown", l, "Wdown", f"blocks.{l}.mlp.w_down.weight", (0, d)))
    return out


def read_block_snapshots(run_dir: str | Path, steps: Sequence[int], blocks: Sequence[BlockSlice]) -> dict[str, np.ndarray]:
    """label -> (len(steps) × D) float64 matrix of the block's flattened weights at each step."""
    out = {b.label: [] for b in blocks}
    for s in steps:
        tensors, _ = runio.load_checkpoint(runio.checkpoint_path(Path(run_dir), s))
        for b in blocks:
            out[b.label].append(tensors[b.name][b.rows[0]:b.rows[1]].reshape(-1).double().numpy())
    return {k: np.stack(v) for k, v in out.items()}


def _rows(X: np.ndarray, centered: bool) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X - X.mean(axis=0, keepdims=True) if centered else (X - X[0])[1:]


def spectrum(X: np.ndarray, centered: bool = True) -> dict:
    """Spectral summaries of a trajectory matrix (rows = snapshots in time order)."""
    Y = _rows(X, centered)
    s = np.linalg.svd(Y, compute_uv=False)
    lam = s ** 2
    total = lam.sum()
    if total <= 0:
        return {"centered": centered, "evr": [], "r90": None, "erank": None, "participation_ratio": None,
                "reason": "the block never moved"}
    evr = lam / total
    p = s / s.sum()
    p = p[p > 0]
    return {"centered": centered, "evr": evr[:16].tolist(), "pc1": float(evr[0]), "r90": k_at(evr, 0.90),
            "r95": k_at(evr, 0.95), "erank": float(np.exp(-(p * np.log(p)).sum())),
            "participation_ratio": float(total ** 2 / (lam ** 2).sum())}


def alignment_to_final(X: np.ndarray) -> list[float]:
    """cos(x(t) − x(0), x(T) − x(0)) for every snapshot after the first."""
    D = np.asarray(X, dtype=np.float64) - X[0]
    final = D[-1]
    n = np.linalg.norm(D[1:], axis=1) * np.linalg.norm(final)
    return np.divide(D[1:] @ final, n, out=np.zeros(len(n)), where=n > 0).tolist()


def increment_norms(X: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(np.asarray(X, dtype=np.float64), axis=0), axis=1)


def block_report(X: np.ndarray, null_samples: int = 20, seed: int = 0) -> dict:
    """Centered and uncentered spectra, alignment to final, and the random-walk nulls of one block."""
    inc = increment_norms(X)
    out = {"dim": int(X.shape[1]), "snapshots": int(X.shape[0]),
           "centered": spectrum(X, True), "uncentered": spectrum(X, False),
           "alignment_to_final": alignment_to_final(X)}
    if null_samples and np.all(inc > 0):
        out["null_centered"] = random_walk_null(inc, X.shape[1], n_samples=null_samples, seed=seed, centered=True)
        out["null_uncentered"] = random_walk_null(inc, X.shape[1], n_samples=null_samples, seed=seed)
    return out


def top_directions(X: np.ndarray, k: int, centered: bool = True) -> np.ndarray:
    """D × k orthonormal leading principal directions of a trajectory (fewer if its rank is lower)."""
    Y = _rows(X, centered)
    _, s, vt = np.linalg.svd(Y, full_matrices=False)
    keep = [i for i in range(min(k, len(s))) if s[i] > 1e-10 * max(s[0], 1e-300)]
    return vt[keep].T


def principal_angles(U1: np.ndarray, U2: np.ndarray) -> dict:
    """Cosines of the principal angles between span(U1) and span(U2) (orthonormal columns, same ambient n),
    the overlap (mean squared cosine, in [0, 1]) and its expectation k2/n for a random subspace."""
    c = np.clip(np.linalg.svd(U1.T @ U2, compute_uv=False), 0.0, 1.0)
    k = min(U1.shape[1], U2.shape[1])
    n = U1.shape[0]
    return {"cosines": c[:k].tolist(), "overlap": float(np.mean(c[:k] ** 2)) if k else None,
            "random_overlap": max(U1.shape[1], U2.shape[1]) / n, "k": k, "n": n}
