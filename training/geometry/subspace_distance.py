"""Distance of the trajectory to its final low-dimensional subspace, over training.

The question of skydancerosel/bubble-modadd's README (its commented-out "distance to final low-dimensional
subspace" tool, and its open question whether early low-dimensional diagnostics predict success): when
does the trajectory settle into the subspace it ends in? ``cos(x(t), x(T))`` (the reference's "alignment to
final") compares two single vectors; here whole subspaces are compared.

With drifts x(s) = θ(s) − θ(anchor) at the checkpoints s_0 < s_1 < ... < s_T (s_0 the anchor):

* the final subspace F = span of the top-k right singular vectors of the T × D drift matrix X (the
  uncentred PCA of :func:`training.geometry.trajectory.pca`; k_F = min(k, rank));
* the subspace known at t, S(t) = span of the top-k right singular vectors of the drifts x(s), s ≤ t
  (the same PCA on the rows up to t; k_t = min(k, rows, rank));
* principal-angle cosines between S(t) and F: the singular values of V_tᵀ V_F. Both bases lie in the span
  of the checkpoints, V = Xᵀ·c with coefficient rows c, so V_tᵀ V_F = c_t G c_Fᵀ with G the Gram matrix:
  no D-sized vector is formed. The *overlap* is Σ cos² / k_F in [0, 1] (1: S(t) ⊇ F; a subspace with
  fewer than k_F directions cannot reach 1), the *largest angle* is arccos of the smallest cosine over
  k_F directions (90° when S(t) has fewer directions than F);
* the share of the current point in F: ‖P_F x(t)‖² / ‖x(t)‖² (the distance of x(t) to F is
  ‖x(t)‖·sqrt(1 − share)).

By construction the overlap is 1 at t = T, so the numbers only mean something beside the null: the same
computation on the isotropic random walk with the run's own increment norms (:func:`training.geometry.nulls.null_of`,
its Gram analytic). A random k-dimensional subspace of R^D has an overlap k_F/D with F in expectation
(≈ 0 here), which is stated too. ``settle_fraction``: the first checkpoint (as a fraction of the run's
steps) from which the overlap stays ≥ ``level`` (default 0.9) to the end.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from training.core.errors import UserError
from training.geometry.nulls import null_of
from training.geometry.trajectory import Gram, pca

SETTLE_LEVEL = 0.9


def _basis(gram: Gram, steps: Sequence[int], k: int) -> np.ndarray:
    """Span coefficients (k' × T) of the top-k uncentred principal directions of the drifts at ``steps``."""
    return pca(gram, steps=steps, k=k).coeffs


def subspace_cosines(gram: Gram, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """Principal-angle cosines between span(c1) and span(c2) (orthonormal span vectors given by coefficient
    rows, k1 × T and k2 × T), largest first, min(k1, k2) of them."""
    if len(c1) == 0 or len(c2) == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(gram.inner(c1, c2), compute_uv=False), 0.0, 1.0)


def distance_to_final(gram: Gram, k: int = 3, steps: Sequence[int] | None = None, level: float = SETTLE_LEVEL) -> dict:
    """Overlap, principal-angle cosines and point share of every checkpoint's subspace with the final top-k one."""
    steps = list(gram.steps if steps is None else steps)
    if steps[0] != gram.anchor:
        raise UserError("distance_to_final: the steps must start at the Gram's anchor")
    if len(steps) < 3:
        raise UserError("distance_to_final needs at least two checkpoints besides the anchor")
    if k < 1:
        raise UserError(f"distance_to_final: k must be at least 1 (got {k})")
    cF = _basis(gram, steps, k)
    kF = len(cF)
    rows = []
    for i in range(1, len(steps)):
        upto = steps[:i + 1]
        x = gram.drift_coeffs([steps[i]], gram.anchor)[0]
        nx = float(gram.inner(x, x))
        share = float(np.sum(gram.inner(cF, x) ** 2) / nx) if nx > 0 else None
        if gram.norms(gram.drift_coeffs(upto[1:], gram.anchor)).max() == 0:
            cos = np.zeros(0)
        else:
            cos = subspace_cosines(gram, _basis(gram, upto, k), cF)
        c = np.zeros(kF)
        c[:len(cos)] = cos[:kF]
        rows.append({"step": steps[i], "cosines": c.tolist(), "overlap": float(np.sum(c ** 2) / kF),
                     "max_angle_deg": float(np.degrees(np.arccos(min(1.0, c[-1])))),
                     "point_share": share})
    ov = np.array([r["overlap"] for r in rows])
    return {"k": kF, "anchor": steps[0], "steps": steps[1:], "rows": rows, "overlap": ov.tolist(),
            "point_share": [r["point_share"] for r in rows], "level": level,
            "settle_fraction": settle_fraction(steps, ov, level),
            "random_subspace_overlap": kF / gram.dim if gram.dim else None}


def settle_fraction(steps: Sequence[int], overlap: Sequence[float], level: float = SETTLE_LEVEL) -> float | None:
    """(s − s_0) / (s_T − s_0) for the first checkpoint s from which ``overlap`` (one value per step after the
    first) stays ≥ ``level`` to the end; None when it never does (it does at the last step by construction)."""
    ov = np.asarray(overlap, dtype=np.float64)
    below = np.nonzero(ov < level - 1e-12)[0]
    first = 0 if len(below) == 0 else below[-1] + 1
    if first >= len(ov):
        return None
    span = steps[-1] - steps[0]
    return float((steps[first + 1] - steps[0]) / span) if span else None


def value_at(result: dict, fraction: float, key: str = "overlap") -> tuple[int, float]:
    """(step, value) of a :func:`distance_to_final` series at the checkpoint nearest ``fraction`` of the run."""
    steps, s0 = result["steps"], result["anchor"]
    target = s0 + fraction * (steps[-1] - s0)
    i = int(np.argmin([abs(s - target) for s in steps]))
    return steps[i], result[key][i]


def distance_beside_null(gram: Gram, k: int = 3, steps: Sequence[int] | None = None,
                         fractions: Sequence[float] = (0.1, 0.2, 0.5)) -> dict:
    """:func:`distance_to_final` of the run and of its random-walk null (same increment norms), with the
    overlaps at a few fractions of training side by side."""
    steps = list(gram.steps if steps is None else steps)
    run = distance_to_final(gram, k, steps)
    null = distance_to_final(null_of(gram, steps), k, steps)
    at = {}
    for f in fractions:
        s, v = value_at(run, f)
        _, vn = value_at(null, f)
        _, sh = value_at(run, f, "point_share")
        _, shn = value_at(null, f, "point_share")
        at[f"{f:g}"] = {"step": s, "overlap": v, "null_overlap": vn, "excess": v - vn, "point_share": sh,
                        "null_point_share": shn}
    return {"run": run, "null": null, "at_fraction": at,
            "settle_fraction": run["settle_fraction"], "null_settle_fraction": null["settle_fraction"],
            "null_kind": "isotropic random walk with the run's increment norms (D → ∞, analytic Gram)"}


def dense_gram(X: np.ndarray, steps: Sequence[int]) -> Gram:
    """The Gram of the drifts of a small dense trajectory (rows = snapshots at ``steps``, first = anchor)."""
    X = np.asarray(X, dtype=np.float64)
    Y = X - X[0]
    return Gram(list(steps), int(steps[0]), None, int(X.shape[1]), Y @ Y.T)
