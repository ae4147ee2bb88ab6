"""What a trajectory without structure would show: nulls for the backbone statistics.

A statistic of a training run is evidence of structure only beside the value a structureless trajectory
with the same step sizes gives. The first such trajectory is the **isotropic random walk**: checkpoint
increments u_1..u_T with the run's own norms n_1..n_T in independent uniformly random directions. In
D ≫ T dimensions the increments are orthogonal (cross terms are O(1/√D)), so the drifts are
x(t_j) = Σ_{i≤j} n_i e_i with orthonormal e_i and every statistic is a deterministic function of n: the
Gram matrix is G_jk = Σ_{i ≤ min(j, k)} n_i² exactly. :func:`random_walk_gram` builds that Gram as a
:class:`~training.geometry.trajectory.Gram`, so the null's statistics come from the very functions that
compute the run's (PCA, decomposition, update alignment, rolling windows): one implementation of each
statistic, and null and observation side by side under the same keys (:func:`profile`).

Known limits (tested in tests/test_nulls.py): for equal steps raw PC1 → 8/π² ≈ 0.811 (the Karhunen–Loève
share of Brownian motion's first mode), E|C(t)| ≈ (2√2/π)/√T and rms C(t) = 1/√T exactly (the unit
backbone lies in the span of T orthonormal increments, so Σ_t C(t)² = 1). With the learning-rate schedule
of arXiv 2602.23696 (warm-up, cosine, 10 % floor; 50 checkpoint intervals) the null has PC1 0.90, k95 3,
f_b(T) 0.97, early |C| 0.16, adjacent rolling-window |cos| 0.997 for windows of drifts from the
initialisation and ≈ 0.80 for row-normalised windows of drifts from the window start: the paper's
reported 78–81 % PC1 and |cos| 0.997 sit at or below this null. The finite-D version with the same
increments is :func:`training.geometry.trajectory.random_walk_null` (Wishart-sampled increment Gram).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from training.core.errors import UserError
from training.geometry.trajectory import (
    Gram,
    decomposition,
    increment_norms,
    pca,
    rolling_pc1,
    sign_flip_step,
    update_alignment,
    window_pca,
)

# The paper's phases (arXiv 2602.23696, Table 3): early t < 2,000, middle 2,000 ≤ t ≤ 6,000, late t > 6,000 of
# 10,000 steps; as fractions, so that a run of T steps is cut at the same relative points.
PHASE_FRACTIONS = (0.2, 0.6)
ROLLING_WIDTH = 10          # checkpoints per rolling window (the paper's W = 10)


def phase_bounds(T: int) -> tuple[int, int]:
    """The paper's phase boundaries scaled to a run of T steps: (b1, b2), early t < b1 ≤ middle ≤ b2 < late."""
    return round(T * PHASE_FRACTIONS[0]), round(T * PHASE_FRACTIONS[1])


def phase_of(step: int, T: int) -> str:
    b1, b2 = phase_bounds(T)
    return "early" if step < b1 else ("middle" if step <= b2 else "late")


def random_walk_gram(steps: Sequence[int], norms: Sequence[float], dim: int, block: int | None = None) -> Gram:
    """The Gram of the D → ∞ isotropic random walk through ``steps`` (anchor steps[0]) whose increment from
    steps[i] to steps[i + 1] has norm ``norms[i]``. ``dim`` is recorded only (the run's D, for its floors)."""
    steps, n = list(steps), np.asarray(norms, dtype=np.float64)
    if len(steps) != len(n) + 1:
        raise ValueError(f"{len(steps)} steps need {len(steps) - 1} increment norms, got {len(n)}")
    if len(n) == 0 or not np.all(np.isfinite(n)) or np.any(n < 0):
        raise UserError("the random-walk null needs at least one finite, non-negative increment norm")
    cum = np.cumsum(n ** 2)
    i = np.arange(len(n))
    G = np.zeros((len(steps), len(steps)))
    G[1:, 1:] = cum[np.minimum.outer(i, i)]
    return Gram(steps, steps[0], block, int(dim), G)


def anchored(gram: Gram, steps: Sequence[int], ref: int) -> Gram:
    """The Gram of the drifts from ``ref`` over ``ref`` and ``steps`` (exact: a congruence of the run's Gram)."""
    steps = [ref] + [s for s in steps if s != ref]
    A = gram.drift_coeffs(steps, ref)
    return Gram(steps, ref, gram.block, gram.dim, A @ gram.G @ A.T)


def null_of(gram: Gram, steps: Sequence[int] | None = None) -> Gram:
    """The random-walk null of a run's Gram: its own increment norms between consecutive ``steps``."""
    steps = list(gram.steps if steps is None else steps)
    if steps[0] != gram.anchor:
        raise ValueError("the null's steps must start at the Gram's anchor")
    return random_walk_gram(steps, increment_norms(gram, steps), gram.dim, gram.block)


def window_pc1_null(gram: Gram, steps: Sequence[int]) -> dict:
    """PC1 of a study window (drifts from ``steps[0]``, both normalisations, as :func:`window_pca` computes them)
    beside the same window of its random-walk null, and the excess ``observed − null``.

    Returns ``{"pc1", "pc1_raw", "null_pc1", "null_pc1_raw", "pc1_minus_null", "pc1_raw_minus_null", "reason"}``;
    the numbers are None with the reason when the window has no PCA.
    """
    steps = list(steps)
    out = dict.fromkeys(("pc1", "pc1_raw", "null_pc1", "null_pc1_raw", "pc1_minus_null", "pc1_raw_minus_null"))
    obs = window_pca(gram, steps)
    if obs["reason"]:
        return {**out, "reason": obs["reason"]}
    null = window_pca(null_of(anchored(gram, steps, steps[0]), steps), steps)
    if null["reason"]:
        return {**out, "reason": f"the null has no PCA: {null['reason']}"}
    o, n = obs["rownorm"]["pc1"], null["rownorm"]["pc1"]
    o_raw, n_raw = obs["raw"]["pc1"], null["raw"]["pc1"]
    return {"pc1": o, "pc1_raw": o_raw, "null_pc1": n, "null_pc1_raw": n_raw, "pc1_minus_null": o - n,
            "pc1_raw_minus_null": o_raw - n_raw, "reason": None}


def _phase_means(steps: Sequence[int], values: Sequence[float], T: int) -> dict[str, float | None]:
    out: dict[str, list[float]] = {"early": [], "middle": [], "late": []}
    for s, v in zip(steps, values):
        out[phase_of(s, T)].append(v)
    return {k: (float(np.mean(v)) if v else None) for k, v in out.items()}


def profile(gram: Gram, total_steps: int, steps: Sequence[int] | None = None,
            width: int = ROLLING_WIDTH) -> dict:
    """The backbone statistics that claims are judged on, from one Gram (a run's, or a null's):

    raw and row-normalised PC1 / k95; the raw backbone's decomposition a(t), ‖r(t)‖, f_b(t); the update
    alignment C(t) (signed, |C| by phase of ``total_steps``, max |C|, rms) and its sign-flip step; and the
    mean adjacent |cos| of rolling PC1 for both window constructions (drifts from the initialisation, and
    row-normalised drifts from the window start). Windows are left out (None) when fewer than
    ``width`` + 1 checkpoints exist.
    """
    steps = list(gram.steps if steps is None else steps)
    raw, row = pca(gram, steps), pca(gram, steps, rownorm=True)
    v = raw.coeffs[0]
    dec = decomposition(gram, v, steps)
    C = update_alignment(gram, v, steps)
    c = np.asarray(C["signed_cos"])
    out = {"pc1": float(raw.explained_variance_ratio[0]), "k95": raw.k95,
           "pc1_rownorm": float(row.explained_variance_ratio[0]), "k95_rownorm": row.k95,
           "a": dec["a"], "residual_norm": dec["residual_norm"], "backbone_fraction": dec["backbone_fraction"],
           "steps": steps,
           "C": {"steps": C["steps"], "signed": c.tolist(),
                 "abs_by_phase": _phase_means(C["steps"], np.abs(c).tolist(), total_steps),
                 "abs_max": float(np.abs(c).max()) if len(c) else None,
                 "rms": float(np.sqrt(np.mean(c ** 2))) if len(c) else None,
                 "sign_flip_step": sign_flip_step(C["steps"], c.tolist())},
           "rolling": None}
    if len(steps) >= width + 1:
        start = rolling_pc1(gram, width, steps, rownorm=True)
        init = rolling_pc1(gram, width, steps, rownorm=False, from_init=True)
        out["rolling"] = {"width": width,
                          "from_start_rownorm": float(np.mean(start["adjacent_abs_cos"])),
                          "from_init": float(np.mean(init["adjacent_abs_cos"]))}
    return out


def beside_null(gram: Gram, total_steps: int, steps: Sequence[int] | None = None, ref: int | None = None,
                width: int = ROLLING_WIDTH) -> dict:
    """``{"observed": profile(run), "random_walk": profile(its D → ∞ random-walk null)}`` over the same steps,
    drifts taken from ``ref`` (default the Gram's anchor), which must be the first of them in time."""
    steps = sorted(gram.steps if steps is None else steps)
    ref = gram.anchor if ref is None else ref
    if ref != min([ref, *steps]):
        raise UserError(f"the random-walk null needs the drifts' reference step ({ref}) to be the first step")
    gram = anchored(gram, steps, ref)
    steps = gram.steps
    return {"observed": profile(gram, total_steps, steps, width),
            "random_walk": profile(null_of(gram, steps), total_steps, steps, width),
            "null": "isotropic random walk with the run's increment norms, D → ∞ (closed form)"}


# ---------------------------------------------------------------------------- re-entry gain under noise
def expected_max_normal(m: int) -> float:
    """E[max(Z_1, ..., Z_m)] for m independent standard normals: ∫ z · d/dz Φ(z)^m dz, by quadrature.

    E.g. 0 for m = 1, 1/√π ≈ 0.5642 for m = 2, 3/(2√π) ≈ 0.8463 for m = 3 (closed forms), ≈ 1.539 for m = 10.
    """
    if m < 1:
        raise UserError(f"the maximum of {m} values is undefined")
    from scipy import integrate, stats
    value, _ = integrate.quad(lambda z: z * m * stats.norm.pdf(z) * stats.norm.cdf(z) ** (m - 1), -12.0, 12.0,
                              limit=200)
    return float(value)


def reentry_noise_bias(sigma: float, n_evals: int) -> float:
    """The re-entry gain G = max_t p(t) − p(0) of a run whose p never moves, evaluated ``n_evals`` times (the start
    included) with independent noise of standard deviation ``sigma``: E[G] = σ · E[max of n_evals normals] (the
    start's own noise has mean 0). A measured G is evidence of re-entry only above this bias."""
    if not (sigma >= 0 and n_evals >= 1):
        raise UserError(f"need sigma >= 0 and at least one evaluation (got sigma {sigma}, {n_evals} evaluations)")
    return sigma * expected_max_normal(n_evals)
