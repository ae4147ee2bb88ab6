"""Power laws of the drift (training/geometry/drift_scaling.py): closed forms, scipy, Monte Carlo."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from training.geometry.drift_scaling import power_law_fit, regime_displacements, scaling_beside_nulls
from training.geometry.phases import Window
from training.geometry.trajectory import Gram, pca


def test_exact_power_law_is_recovered():
    tau = np.arange(1, 30) * 20.0
    f = power_law_fit(tau, 3.0 * tau ** 0.7)
    assert f["exponent"] == pytest.approx(0.7, abs=1e-12)
    assert f["prefactor"] == pytest.approx(3.0, rel=1e-10)
    assert f["r2"] == pytest.approx(1.0)


def test_fit_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    tau = np.arange(1, 40, dtype=float)
    y = 2.0 * tau ** 0.5 * np.exp(0.2 * rng.standard_normal(len(tau)))
    f = power_law_fit(tau, y)
    lr = stats.linregress(np.log(tau), np.log(y))
    assert f["exponent"] == pytest.approx(lr.slope, rel=1e-12)
    half = stats.t.ppf(0.975, len(tau) - 2) * lr.stderr
    assert f["ci95_ols"] == pytest.approx([lr.slope - half, lr.slope + half], rel=1e-10)


def test_interval_coverage_monte_carlo():
    rng = np.random.default_rng(1)
    tau = np.arange(1, 26, dtype=float)
    hits_ols = hits_hac = 0
    reps = 600
    for _ in range(reps):
        y = 1.5 * tau ** 0.6 * np.exp(0.1 * rng.standard_normal(len(tau)))
        f = power_law_fit(tau, y)
        hits_ols += f["ci95_ols"][0] <= 0.6 <= f["ci95_ols"][1]
        hits_hac += f["ci95_hac"][0] <= 0.6 <= f["ci95_hac"][1]
    assert 0.92 <= hits_ols / reps <= 0.975          # exact t interval: 95 % ± Monte Carlo error
    assert hits_hac / reps >= 0.8                    # Newey–West: asymptotic, somewhat liberal at n = 25


def test_newey_west_equals_the_dense_sandwich_and_helps_under_autocorrelation():
    rng = np.random.default_rng(5)
    tau = np.arange(1, 31, dtype=float)
    y = tau ** 0.8 * np.exp(0.1 * rng.standard_normal(30))
    f = power_law_fit(tau, y)
    Xd = np.column_stack([np.ones(30), np.log(tau)])
    beta, *_ = np.linalg.lstsq(Xd, np.log(y), rcond=None)
    e = np.log(y) - Xd @ beta
    L = f["hac_lag"]
    lag = np.abs(np.subtract.outer(np.arange(30), np.arange(30)))
    W = np.where(lag <= L, 1 - lag / (L + 1), 0.0)
    bread = np.linalg.inv(Xd.T @ Xd)
    V = bread @ Xd.T @ (W * np.outer(e, e)) @ Xd @ bread
    half = stats.t.ppf(0.975, 28) * np.sqrt(V[1, 1])
    assert f["ci95_hac"] == pytest.approx([beta[1] - half, beta[1] + half], rel=1e-9)
    # AR(1) residuals (ρ = 0.8): the ordinary interval under-covers badly; Newey–West covers more often
    hits_ols = hits_hac = 0
    for _ in range(400):
        eps = np.zeros(30)
        for i in range(1, 30):
            eps[i] = 0.8 * eps[i - 1] + 0.05 * rng.standard_normal()
        g = power_law_fit(tau, tau ** 0.8 * np.exp(eps))
        hits_ols += g["ci95_ols"][0] <= 0.8 <= g["ci95_ols"][1]
        hits_hac += g["ci95_hac"][0] <= 0.8 <= g["ci95_hac"][1]
    assert hits_ols / 400 < 0.85 and hits_hac > hits_ols


def test_too_few_points_is_a_reason():
    f = power_law_fit([0, 1, 2, 3], [1.0, -1.0, 2.0, 3.0])
    assert f["exponent"] is None and f["n"] == 2 and "needs 4" in f["reason"]


def test_planted_mechanism_backbone_linear_transverse_sqrt():
    """x(t) = δ·t·e1 + a D-dimensional random walk: Δa ∝ τ as eq. 20 predicts. The transverse part of a walk
    grows like √τ about the true direction, but about the in-sample PC1 it is flattened (the PC absorbs the
    walk's mean direction), and the random-walk null, measured the same way, is flattened alike."""
    rng = np.random.default_rng(2)
    D, n = 4000, 41
    steps = list(range(0, 10 * n, 10))
    inc = 0.02 * rng.standard_normal((n - 1, D))
    inc[:, 0] += 1.0
    X = np.vstack([np.zeros(D), inc.cumsum(axis=0)])
    g = Gram(steps, 0, None, D, X @ X.T)
    res = scaling_beside_nulls(g, [Window("whole run", 0, steps[-1])])
    obs = res["observed"][0]
    assert obs["backbone"]["exponent"] == pytest.approx(1.0, abs=0.03)
    assert obs["transverse"]["exponent"] < 0.3
    # the curves are the dense decomposition on the run's PC1
    v = pca(g, k=1).coeffs[0] @ X
    da = (X[1:] - X[0]) @ v
    np.testing.assert_allclose(obs["curves"]["backbone"], da, rtol=1e-9)
    np.testing.assert_allclose(obs["curves"]["transverse"],
                               np.sqrt(np.maximum(((X[1:] - X[0]) ** 2).sum(1) - da ** 2, 0)), rtol=1e-7)
    null = res["random_walk"][0]
    # ... and its in-sample backbone coordinate grows almost linearly too (≈ 0.88 here): the exponent alone is weak
    # evidence, its distance from the null's is what the reading uses
    assert null["backbone"]["exponent"] < obs["backbone"]["exponent"] - 0.05
    assert null["transverse"]["exponent"] < 0.3


def test_regime_from_a_later_start():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((8, 30)).cumsum(axis=0)
    X -= X[0]
    steps = list(range(0, 80, 10))
    g = Gram(steps, 0, None, 30, X @ X.T)
    v = rng.standard_normal(8)
    vd = v @ X
    vd /= np.linalg.norm(vd)
    c = v / np.linalg.norm(v @ X)
    r = regime_displacements(g, c, steps[3:])
    assert r["tau"] == [10, 20, 30, 40]
    np.testing.assert_allclose(r["backbone"], (X[4:] - X[3]) @ vd, rtol=1e-9)
