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

import math
from typing import Sequence

import numpy as np

from training.core.errors import UserError
from training.core.regime import decay_path
from training.geometry.trajectory import (
    Gram,
    decomposition,
    increment_coherence,
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
    """The Gram of the drifts from ``ref`` over ``ref`` and ``steps`` (exact: a congruence of the run's Gram), with
    the origin row re-anchored at θ(ref) where the run's Gram has one."""
    steps = [ref] + [s for s in steps if s != ref]
    A = gram.drift_coeffs(steps, ref)
    origin = gram.reanchored_origin(A, ref)
    return Gram(steps, ref, gram.block, gram.dim, A @ gram.G @ A.T, *(origin or (None, None)))


# ---------------------------------------------------------------------------- the weight-decayed walk
def weight_decayed_walk_gram(steps: Sequence[int], norms: Sequence[float], decay: Sequence[float], origin_sq: float,
                             dim: int, block: int | None = None) -> tuple[Gram, dict]:
    """The Gram (with its origin row) of the D → ∞ isotropic walk under weight decay through ``steps``.

    The process: θ(s) = (1 − lr_s·wd) θ(s − 1) + u_s with isotropic increments u_s, started at θ(steps[0]) of
    squared norm ``origin_sq``; ``decay[j]`` = c_j, the decay factor from steps[0] to steps[j] (c_0 = 1,
    :func:`training.core.regime.decay_factors` relative to the anchor). Writing W(t) = Σ_{s≤t} u_s / c_s,

        x(t_j) = θ(t_j) − θ(t_0) = −(1 − c_j) θ(t_0) + c_j W(t_j),

    and in D ≫ T dimensions W has orthogonal increments, orthogonal to θ(t_0), so that
    G_jk = (1 − c_j)(1 − c_k)‖θ(t_0)‖² + c_j c_k N_min(j,k) with N_j = E‖W(t_j)‖², and the origin row is
    ⟨θ(t_0), x(t_j)⟩ = −(1 − c_j)‖θ(t_0)‖². The energy q_j = N_j − N_(j−1) of each checkpoint interval is chosen
    so that the walk's increment norms are the run's ``norms`` (as for :func:`random_walk_gram`, which this is at
    zero decay): ‖Δ_j‖² = (c_(j−1) − c_j)²(‖θ(t_0)‖² + N_(j−1)) + c_j² q_j. Where the decay alone already exceeds
    the run's increment, q_j = 0 and that interval of the walk is longer than the run's (counted in the info).

    Returns (gram, info) with info = {"clamped_intervals", "noise_energy" (N_j), "decay" (c_j)}.
    """
    steps = list(steps)
    n, c = np.asarray(norms, dtype=np.float64), np.asarray(decay, dtype=np.float64)
    if len(steps) != len(n) + 1 or len(c) != len(steps):
        raise ValueError(f"{len(steps)} steps need {len(steps) - 1} increment norms and {len(steps)} decay factors")
    if len(n) == 0 or not np.all(np.isfinite(n)) or np.any(n < 0):
        raise UserError("the weight-decayed walk needs at least one finite, non-negative increment norm")
    if not (np.all(c > 0) and np.all(c <= 1) and c[0] == 1.0 and np.all(np.diff(c) <= 0)):
        raise ValueError("decay factors must start at 1 and not increase, in (0, 1]")
    if not (np.isfinite(origin_sq) and origin_sq >= 0):
        raise UserError(f"the weight-decayed walk needs a finite ‖θ‖² at its anchor (got {origin_sq})")
    N = np.zeros(len(steps))
    clamped = 0
    for j in range(1, len(steps)):
        drop = (c[j - 1] - c[j]) ** 2 * (origin_sq + N[j - 1])
        q = (n[j - 1] ** 2 - drop) / c[j] ** 2
        if q < 0:
            clamped, q = clamped + 1, 0.0
        N[j] = N[j - 1] + q
    gram = _decayed_gram(steps, c, N, origin_sq, dim, block)
    return gram, {"clamped_intervals": clamped, "noise_energy": N.tolist(), "decay": c.tolist()}


def _decayed_gram(steps, c: np.ndarray, N: np.ndarray, origin_sq: float, dim: int, block: int | None) -> Gram:
    """G_jk = (1 − c_j)(1 − c_k)‖θ0‖² + c_j c_k N_min(j,k) and its origin row −(1 − c_j)‖θ0‖²."""
    k = np.arange(len(steps))
    G = np.outer(1 - c, 1 - c) * origin_sq + np.outer(c, c) * N[np.minimum.outer(k, k)]
    return Gram(list(steps), steps[0], block, int(dim), G, -(1 - c) * origin_sq, float(origin_sq))


def fitted_decayed_walk_gram(steps: Sequence[int], drift_norms: Sequence[float], decay: Sequence[float],
                             weights: Sequence[float], origin_sq: float, dim: int,
                             block: int | None = None) -> tuple[Gram, dict]:
    """The weight-decayed walk with one noise scale: u_s of per-update energy ρ²·lr_s², so that
    N_j = ρ² S_j with ``weights`` S_j = Σ_{s ≤ t_j} lr_s² / c_s² (:func:`decayed_walk_weights`), and ρ² ≥ 0 the
    least-squares fit of the walk's ‖x(t_j)‖² = (1 − c_j)²‖θ0‖² + ρ² c_j² S_j to the run's ``drift_norms``².
    The one-parameter form of :func:`weight_decayed_walk_gram`: it keeps the schedule's shape of the step sizes
    instead of the run's own. Returns (gram, {"rho_sq", "decay", "noise_energy"})."""
    c, S = np.asarray(decay, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    x2 = np.asarray(drift_norms, dtype=np.float64) ** 2
    if not (len(c) == len(S) == len(x2) == len(steps)) or len(steps) < 2:
        raise ValueError("steps, drift norms, decay factors and weights must have one entry per step (at least 2)")
    a, b = (1 - c) ** 2 * origin_sq, c ** 2 * S
    rho_sq = max(float(b @ (x2 - a) / (b @ b)), 0.0) if b @ b > 0 else 0.0
    N = rho_sq * S
    return _decayed_gram(steps, c, N, origin_sq, dim, block), {"rho_sq": rho_sq, "decay": c.tolist(),
                                                                "noise_energy": N.tolist()}


def decayed_walk_weights(cfg, steps: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(c_j, S_j) from ``cfg``'s schedule over increasing ``steps``, relative to steps[0]: c_j = c(t_j)/c(t_0) and
    S_j = Σ_{s ∈ (t_0, t_j]} lr_s² / (c(s)/c(t_0))² (:func:`training.core.regime.decay_path`)."""
    steps = [int(s) for s in steps]
    lrs, cs = (np.asarray(a) for a in decay_path(cfg, steps[-1]))
    rel = cs / cs[steps[0]]
    acc = np.concatenate([[0.0], np.cumsum(lrs[1:] ** 2 / rel[1:] ** 2)])
    return rel[steps], acc[steps] - acc[steps[0]]


def weight_decayed_null_of(gram: Gram, cfg) -> tuple[Gram, dict]:
    """The weight-decayed walk of a run's Gram (anchored at its first step, with an origin row): the run's own
    increment norms between consecutive steps, its own ‖θ(anchor)‖², decay factors from its config's schedule."""
    if not gram.has_origin():
        raise UserError("the weight-decayed walk needs ‖θ(anchor)‖², which only a Gram streamed from the checkpoints "
                        "carries (not a sketch)")
    c, _ = decayed_walk_weights(cfg, gram.steps)
    return weight_decayed_walk_gram(gram.steps, increment_norms(gram, gram.steps), c, gram.origin_sq,
                                    gram.dim, gram.block)


def fitted_decayed_null_of(gram: Gram, cfg) -> tuple[Gram, dict]:
    """The one-parameter weight-decayed walk of a run's Gram (anchored at its first step, with an origin row)."""
    if not gram.has_origin():
        raise UserError("the weight-decayed walk needs ‖θ(anchor)‖², which only a Gram streamed from the checkpoints "
                        "carries (not a sketch)")
    c, S = decayed_walk_weights(cfg, gram.steps)
    return fitted_decayed_walk_gram(gram.steps, np.sqrt(np.maximum(np.diag(gram.G), 0.0)), c, S, gram.origin_sq,
                                    gram.dim, gram.block)


def decay_diagnostics(gram: Gram, v: np.ndarray, decay: Sequence[float] | None = None) -> dict:
    """How much of the drift is the weight decay of the starting point, from the origin row of ``gram``.

    With θ0 = θ(anchor) and x(t) its drifts: ‖θ(t)‖ = √(‖θ0‖² + 2⟨θ0, x⟩ + ‖x‖²); the *decay share* of ‖x(t)‖²
    along −θ̂0, (⟨x, −θ̂0⟩₊)² / ‖x‖² (1 when the drift is pure shrinkage of θ0); cos(v_b, −θ̂0) for the backbone
    ``v`` (coefficients over the Gram's steps, oriented so that a(T) > 0); and, given the decay factors c(t), the
    pure-decay prediction ‖x(t)‖ = (1 − c(t))‖θ0‖ beside the observed ‖x(t)‖. ``decay_excess`` =
    max(share(T) − 0.5, cos − 0.7): positive when the backbone is (mostly) the decay of the initialisation.
    """
    if not gram.has_origin():
        raise UserError("decay diagnostics need the Gram's origin row (a Gram streamed from the checkpoints)")
    o, sq = np.asarray(gram.origin), float(gram.origin_sq)
    xx = np.maximum(np.diag(gram.G), 0.0)
    theta = np.sqrt(np.maximum(sq + 2 * o + xx, 0.0))
    r0 = math.sqrt(sq)
    along = np.where(o < 0, o ** 2, 0.0) / np.where(xx > 0, xx * sq, np.inf)
    vnorm = math.sqrt(max(float(v @ gram.G @ v), 0.0))
    cos = float(-(v @ o) / (vnorm * r0)) if vnorm > 0 and r0 > 0 else None
    share = float(along[-1])
    out = {"steps": list(gram.steps), "theta_norm": theta.tolist(), "theta_norm_ratio_end": float(theta[-1] / r0)
           if r0 > 0 else None, "decay_share": along.tolist(), "decay_share_end": share, "cos_backbone_decay": cos,
           "decay_excess": max(share - 0.5, (cos if cos is not None else -np.inf) - 0.7)}
    if decay is not None:
        c = np.asarray(decay, dtype=np.float64)
        pure = (1 - c) * r0
        out["pure_decay_drift_norm"] = pure.tolist()
        out["pure_decay_over_observed_end"] = float(pure[-1] / math.sqrt(xx[-1])) if xx[-1] > 0 else None
    return out


def null_of(gram: Gram, steps: Sequence[int] | None = None) -> Gram:
    """The random-walk null of a run's Gram: its own increment norms between consecutive ``steps``."""
    steps = list(gram.steps if steps is None else steps)
    if steps[0] != gram.anchor:
        raise ValueError("the null's steps must start at the Gram's anchor")
    return random_walk_gram(steps, increment_norms(gram, steps), gram.dim, gram.block)


def null_grams(gram: Gram, cfg=None) -> tuple[Gram, Gram, Gram | None, str | None]:
    """(the run's Gram anchored at its first step, its random-walk null, its weight-decayed walk or None, the reason
    when None): the walks a reading is measured on beside the run's (weight-decayed: needs ``cfg`` and an origin row)."""
    if gram.anchor != gram.steps[0]:
        gram = anchored(gram, gram.steps, gram.steps[0])
    if cfg is None or not gram.has_origin():
        why = ("no run config given" if cfg is None else
               "the Gram has no origin row (a sketch): ‖θ(anchor)‖² is unknown")
        return gram, null_of(gram), None, why
    return gram, null_of(gram), weight_decayed_null_of(gram, cfg)[0], None


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
    alignment C(t) (signed, |C| by phase of ``total_steps``, max |C|, rms) and its sign-flip step; the
    increment coherence ρ(ℓ) (:func:`~training.geometry.trajectory.increment_coherence`); and the
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
           "coherence": increment_coherence(gram, steps),
           "rolling": None}
    if len(steps) >= width + 1:
        start = rolling_pc1(gram, width, steps, rownorm=True)
        init = rolling_pc1(gram, width, steps, rownorm=False, from_init=True)
        out["rolling"] = {"width": width,
                          "from_start_rownorm": float(np.mean(start["adjacent_abs_cos"])),
                          "from_init": float(np.mean(init["adjacent_abs_cos"]))}
    return out


def beside_null(gram: Gram, total_steps: int, steps: Sequence[int] | None = None, ref: int | None = None,
                width: int = ROLLING_WIDTH, cfg=None) -> dict:
    """``{"observed": profile(run), "random_walk": profile(its D → ∞ random-walk null)}`` over the same steps,
    drifts taken from ``ref`` (default the Gram's anchor), which must be the first of them in time.

    Given the run's config ``cfg`` and a Gram with its origin row, also ``"weight_decayed_walk"`` (the profile of
    :func:`weight_decayed_null_of`: the run's own increments) and ``"weight_decayed_walk_fitted"`` (of
    :func:`fitted_decayed_null_of`: one noise scale fitted to ‖x(t)‖²), each with its fit, ``"decay"`` (:func:`decay_diagnostics` of the run and of that
    walk) and ``"sign_flip"`` (claim 4: the run's t* beside both walks'); otherwise ``"weight_decayed_walk"`` is
    None and ``"weight_decayed_reason"`` says why.
    """
    steps = sorted(gram.steps if steps is None else steps)
    ref = gram.anchor if ref is None else ref
    if ref != min([ref, *steps]):
        raise UserError(f"the random-walk null needs the drifts' reference step ({ref}) to be the first step")
    gram = anchored(gram, steps, ref)
    steps = gram.steps
    out = {"observed": profile(gram, total_steps, steps, width),
           "random_walk": profile(null_of(gram, steps), total_steps, steps, width),
           "null": "isotropic random walk with the run's increment norms, D → ∞ (closed form)",
           "weight_decayed_walk": None, "weight_decayed_reason": None}
    if cfg is None or not gram.has_origin():
        out["weight_decayed_reason"] = ("no run config given" if cfg is None else
                                        "the Gram has no origin row (a sketch): ‖θ(anchor)‖² is unknown")
        return out
    wd_gram, fit = weight_decayed_null_of(gram, cfg)
    c = fit["decay"]
    out["weight_decayed_walk"] = {**profile(wd_gram, total_steps, steps, width),
                                  "fit": {"clamped_intervals": fit["clamped_intervals"], "decay_end": c[-1],
                                          "noise_energy_end": fit["noise_energy"][-1],
                                          "origin_sq": gram.origin_sq}}
    fit_gram, fit1 = fitted_decayed_null_of(gram, cfg)
    out["weight_decayed_walk_fitted"] = {**profile(fit_gram, total_steps, steps, width),
                                         "fit": {"rho_sq": fit1["rho_sq"], "decay_end": c[-1],
                                                 "noise_energy_end": fit1["noise_energy"][-1],
                                                 "origin_sq": gram.origin_sq}}
    out["decay"] = {name: decay_diagnostics(g, pca(g, steps).coeffs[0], c)
                    for name, g in (("observed", gram), ("weight_decayed_walk", wd_gram),
                                    ("weight_decayed_walk_fitted", fit_gram))}
    out["sign_flip"] = sign_flip_summary(out, steps)
    return out


SIGN_FLIP_RUN = 3           # t*: the first of at least 3 consecutive negative C(t) (docs/claims.md, claim 4)
SIGN_FLIP_SEPARATION = 0.1  # a flip is structure only if |t* − t*_walk| ≥ 0.1 of the span


def sign_flip_summary(side_by_side: dict, steps: Sequence[int]) -> dict:
    """Claim 4's numbers from :func:`beside_null`'s profiles: t* of the run, of the random walk and of the
    weight-decayed walk (None: no flip), and ``separation`` = |t* − t*_wd| / span with span = last − first step; a
    walk without a flip counts as flipping at the last step, and a run without a flip has separation 0 (nothing to
    set apart); the one-parameter walk's t* is reported beside. ``a_increasing`` is the fraction of checkpoint intervals over which the run's a(t) grows."""
    def t_star(prof):
        return sign_flip_step(prof["C"]["steps"], prof["C"]["signed"], min_run=SIGN_FLIP_RUN)

    span = float(steps[-1] - steps[0])
    obs, rw, wd, fit = (t_star(side_by_side[k]) for k in ("observed", "random_walk", "weight_decayed_walk",
                                                           "weight_decayed_walk_fitted"))
    sep = 0.0 if obs is None or span <= 0 else abs(obs - (steps[-1] if wd is None else wd)) / span
    a = np.asarray(side_by_side["observed"]["a"])
    grows = float(np.mean(np.diff(a) > 0)) if len(a) > 1 else None
    return {"t_star": obs, "t_star_random_walk": rw, "t_star_weight_decayed_walk": wd,
            "t_star_weight_decayed_walk_fitted": fit, "span": span,
            "separation": sep, "min_run": SIGN_FLIP_RUN, "a_increasing": grows,
            "t_star_fraction": None if obs is None or span <= 0 else (obs - steps[0]) / span}


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
