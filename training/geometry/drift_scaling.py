"""How the drift grows: power laws of the backbone and transverse displacements, per regime.

arXiv 2602.23696 §4.2 (eqs. 20–21) explains the backbone by a mechanism that predicts, over T steps of a
regime, a backbone displacement growing like T (a coherent bias integrated: exponent 1) and a transverse one
growing like √T (incoherent fluctuations: exponent 1/2), so that the backbone fraction tends to 1. Measured
here for each regime [t0, t1] (the whole run, either side of the λ switch, either side of the LR peak), on
the run's global backbone v_b, for τ = t − t0 over the regime's checkpoints:

* backbone displacement  Δa(τ) = ⟨x(t) − x(t0), v_b⟩,
* transverse displacement ‖Δr(τ)‖ = (‖x(t) − x(t0)‖² − Δa²)^½,

each fitted as y = c·τ^α by least squares on log y against log τ. The exponent comes with two 95 %
intervals: the ordinary one (independent residuals) and a Newey–West one (Bartlett kernel, lag
⌊4(n/100)^(2/9)⌋), since residuals along a trajectory are autocorrelated and the ordinary interval is then
too narrow. The same fit on the run's random-walk null (its own increment norms) and weight-decayed walk
gives the exponents a structureless trajectory with the same step sizes has: an exponent is evidence for the
mechanism only where it differs from theirs. That matters more than it seems: v_b is fitted on the same
trajectory, and an in-sample PC1 absorbs a walk's mean direction, so for an isotropic random walk Δa grows
almost linearly (exponent ≈ 0.9 over 40 equal steps) and ‖Δr‖ is flattened far below √τ (≈ 0.1; tested in
tests/test_drift_scaling.py). A shrinking learning rate bends both curves further.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from training.core.errors import UserError
from training.geometry.nulls import null_grams
from training.geometry.phases import Window, default_windows, window_steps
from training.geometry.trajectory import Gram, pca

MIN_FIT_POINTS = 4
PREDICTED = {"backbone": 1.0, "transverse": 0.5}     # eq. 20 of arXiv 2602.23696


def newey_west_lag(n: int) -> int:
    return max(1, int(math.floor(4 * (n / 100) ** (2 / 9))))


def power_law_fit(tau: Sequence[float], y: Sequence[float], level: float = 0.95) -> dict:
    """y = c·τ^α fitted on logs over the points with τ > 0 and y > 0: α, c, R², both intervals of α.

    Returns the numbers as None with ``reason`` when fewer than :data:`MIN_FIT_POINTS` points are usable."""
    tau, y = np.asarray(tau, dtype=float), np.asarray(y, dtype=float)
    ok = (tau > 0) & (y > 0) & np.isfinite(tau) & np.isfinite(y)
    n = int(ok.sum())
    out = {"n": n, "n_dropped": int(len(tau) - n), "exponent": None, "prefactor": None, "r2": None,
           "ci95_ols": None, "ci95_hac": None, "hac_lag": None, "reason": None}
    if n < MIN_FIT_POINTS:
        out["reason"] = f"{n} usable point(s) (τ > 0, y > 0); a fit needs {MIN_FIT_POINTS}"
        return out
    lx, ly = np.log(tau[ok]), np.log(y[ok])
    xc = lx - lx.mean()
    sxx = float(xc @ xc)
    if sxx == 0:
        out["reason"] = "every usable point has the same τ"
        return out
    slope = float(xc @ (ly - ly.mean()) / sxx)
    icpt = float(ly.mean() - slope * lx.mean())
    e = ly - (icpt + slope * lx)
    sst = float(((ly - ly.mean()) ** 2).sum())
    q = stats.t.ppf(0.5 + level / 2, n - 2)
    se_ols = math.sqrt(float(e @ e) / (n - 2) / sxx)
    u = xc * e
    L = newey_west_lag(n)
    s = float(u @ u) + 2 * sum((1 - l / (L + 1)) * float(u[l:] @ u[:-l]) for l in range(1, min(L, n - 1) + 1))
    se_hac = math.sqrt(max(s, 0.0)) / sxx
    out.update(exponent=slope, prefactor=math.exp(icpt), r2=1 - float(e @ e) / sst if sst > 0 else 1.0,
               ci95_ols=[slope - q * se_ols, slope + q * se_ols], ci95_hac=[slope - q * se_hac, slope + q * se_hac],
               hac_lag=L)
    return out


def regime_displacements(gram: Gram, v: np.ndarray, steps: Sequence[int]) -> dict:
    """τ, Δa(τ) and ‖Δr(τ)‖ from the first of ``steps`` along the unit span vector ``v``."""
    steps = list(steps)
    A = gram.drift_coeffs(steps[1:], steps[0])
    da = gram.inner(A, v)
    sq = np.einsum("it,tu,iu->i", A, gram.G, A)
    dr = np.sqrt(np.maximum(sq - da ** 2, 0.0))
    return {"tau": [s - steps[0] for s in steps[1:]], "backbone": da.tolist(), "transverse": dr.tolist()}


def scaling_reading(gram: Gram, regimes: Sequence[Window]) -> list[dict]:
    """Per regime the two displacement curves and their power-law fits, from one Gram (a run's or a null's)."""
    v = pca(gram, k=1).coeffs[0]
    rows = []
    for w in regimes:
        ws = window_steps(gram.steps, w)
        row = {"name": w.name, "start": w.start, "end": w.end, "n_checkpoints": len(ws)}
        if len(ws) < 2:
            row.update(curves=None, backbone=None, transverse=None, reason="fewer than two checkpoints")
        else:
            cur = regime_displacements(gram, v, ws)
            row.update(curves=cur, reason=None,
                       backbone=power_law_fit(cur["tau"], cur["backbone"]),
                       transverse=power_law_fit(cur["tau"], cur["transverse"]))
        rows.append(row)
    return rows


def regimes_of(cfg, steps: Sequence[int], extra: Sequence[Window] = ()) -> list[Window]:
    """The whole run, the phases either side of the λ switch and of the LR peak (where inside the run), then
    ``extra``."""
    first, last = min(steps), max(steps)
    return ([Window("whole run", first, last)] + default_windows(cfg, first, last, "lambda")
            + default_windows(cfg, first, last, "lr_peak") + list(extra))


def scaling_beside_nulls(gram: Gram, regimes: Sequence[Window], cfg=None) -> dict:
    """:func:`scaling_reading` of the run, its random-walk null and (with ``cfg`` and an origin row) its
    weight-decayed walk, with the predicted exponents of eq. 20 beside them."""
    if not regimes:
        raise UserError("no regime to fit")
    gram, walk, decayed, why = null_grams(gram, cfg)
    out = {"predicted": PREDICTED, "observed": scaling_reading(gram, regimes),
           "random_walk": scaling_reading(walk, regimes),
           "weight_decayed_walk": scaling_reading(decayed, regimes) if decayed is not None else None,
           "weight_decayed_reason": why}
    return out


def exponent_table(res: dict) -> list[dict]:
    """One row per regime and curve: the run's exponent with its HAC interval beside the nulls' and eq. 20's."""
    rows = []
    for i, reg in enumerate(res["observed"]):
        for kind in ("backbone", "transverse"):
            fit = reg.get(kind) or {}
            null = (res["random_walk"][i].get(kind) or {}).get("exponent")
            wd = (res["weight_decayed_walk"][i].get(kind) or {}).get("exponent") if res["weight_decayed_walk"] else None
            rows.append({"regime": reg["name"], "curve": kind, "exponent": fit.get("exponent"),
                         "ci95_hac": fit.get("ci95_hac"), "r2": fit.get("r2"), "n": fit.get("n"),
                         "random_walk": null, "weight_decayed_walk": wd, "predicted": PREDICTED[kind],
                         "reason": fit.get("reason") or reg.get("reason")})
    return rows
