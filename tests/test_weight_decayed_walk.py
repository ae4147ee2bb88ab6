"""The weight-decayed walk null and the decay diagnostics against explicit finite-D simulation with dense numpy."""
import dataclasses
import math

import numpy as np
import pytest

from training.core.config import preset
from training.core.optim import lr_at
from training.core.regime import decay_factors, effective_integrated_wd
from training.geometry.nulls import (beside_null, decay_diagnostics, decayed_walk_weights, fitted_decayed_walk_gram,
                                     random_walk_gram, weight_decayed_walk_gram)
from training.geometry.trajectory import Gram, increment_norms, pca, sign_flip_step


def simulate(D=20_000, n_updates=120, every=15, lam=4.0, rho=0.02, seed=0):
    """θ(s) = (1 − η_s λ) θ(s−1) + η_s ρ ξ_s with a warm-up/decay schedule; rows at every ``every`` updates."""
    rng = np.random.default_rng(seed)
    eta = 0.01 * np.minimum(1.0, np.arange(1, n_updates + 1) / 20) * np.linspace(1.0, 0.3, n_updates)
    theta = rng.standard_normal(D)
    rows, c, cs = [theta.copy()], [1.0], 1.0
    for s in range(n_updates):
        theta = (1 - eta[s] * lam) * theta + eta[s] * rho * rng.standard_normal(D)
        cs *= 1 - eta[s] * lam
        if (s + 1) % every == 0:
            rows.append(theta.copy())
            c.append(cs)
    return np.array(rows), np.array(c)


def observed_gram(Theta):
    X = Theta - Theta[0]
    steps = list(range(len(Theta)))
    return Gram(steps, 0, None, Theta.shape[1], X @ X.T, X @ Theta[0], float(Theta[0] @ Theta[0]))


def test_closed_form_matches_the_explicit_process():
    Theta, c = simulate(lam=1.5, rho=10.0)        # decay and noise of comparable size: PC1 ≈ 0.9, c(T) ≈ 0.35
    g = observed_gram(Theta)
    walk, info = weight_decayed_walk_gram(g.steps, increment_norms(g, g.steps), c, g.origin_sq, g.dim)
    scale = np.sqrt(np.outer(np.diag(g.G), np.diag(g.G)))[1:, 1:]
    err = np.abs(walk.G - g.G)[1:, 1:] / scale
    assert err.max() < 0.03                      # entries agree to O(1/√D) of ‖x_j‖‖x_k‖
    o_scale = np.sqrt(g.origin_sq * np.diag(g.G))[1:]
    assert np.max(np.abs(walk.origin - g.origin)[1:] / o_scale) < 0.03
    assert info["clamped_intervals"] == 0
    # the fitted increments are the run's own (exactly, where no interval is clamped)
    np.testing.assert_allclose(increment_norms(walk, walk.steps), increment_norms(g, g.steps), rtol=1e-10)
    # and its PCA is that of the process
    assert pca(walk).explained_variance_ratio[0] == pytest.approx(pca(g).explained_variance_ratio[0], abs=0.02)


def test_one_parameter_fit_recovers_the_noise_scale():
    D, rho = 20_000, 10.0
    Theta, c = simulate(D=D, lam=1.5, rho=rho)
    eta = 0.01 * np.minimum(1.0, np.arange(1, 121) / 20) * np.linspace(1.0, 0.3, 120)   # simulate()'s schedule
    cs = np.cumprod(1 - 1.5 * eta)
    S = np.concatenate([[0.0], np.cumsum(eta ** 2 / cs ** 2)])[::15]
    g = observed_gram(Theta)
    walk, fit = fitted_decayed_walk_gram(g.steps, np.sqrt(np.diag(g.G)), c, S, g.origin_sq, g.dim)
    assert fit["rho_sq"] == pytest.approx(D * rho ** 2, rel=0.03)
    scale = np.sqrt(np.outer(np.diag(g.G), np.diag(g.G)))[1:, 1:]
    assert np.max(np.abs(walk.G - g.G)[1:, 1:] / scale) < 0.03


def test_schedule_weights_of_a_config():
    cfg = dataclasses.replace(preset("test"), wd=0.5, steps=60, warmup=10)
    steps = [10, 20, 45, 60]
    c, S = decayed_walk_weights(cfg, steps)
    lr = np.array([lr_at(cfg, s) for s in range(1, 61)])
    cum = np.cumprod(1 - lr * cfg.wd)                   # c after update s (index s - 1)
    np.testing.assert_allclose(c, cum[np.array(steps) - 1] / cum[9], rtol=1e-12)
    want = [sum(lr[s - 1] ** 2 / (cum[s - 1] / cum[9]) ** 2 for s in range(11, t + 1)) for t in steps]
    np.testing.assert_allclose(S, want, rtol=1e-12)


def test_is_the_random_walk_without_decay():
    norms = np.random.default_rng(1).uniform(0.5, 2.0, size=9)
    steps = list(range(0, 100, 10))
    walk, _ = weight_decayed_walk_gram(steps, norms, np.ones(10), 3.7, 1000)
    np.testing.assert_allclose(walk.G, random_walk_gram(steps, norms, 1000).G, rtol=1e-12, atol=1e-12)
    assert np.all(walk.origin == 0)


def test_pure_decay_is_one_line_along_minus_theta0():
    c = np.exp(-np.linspace(0, 2.0, 11))
    r2 = 4.0
    norms = np.abs(np.diff(c)) * math.sqrt(r2)                       # exactly what decay alone moves
    walk, info = weight_decayed_walk_gram(list(range(11)), norms, c, r2, 10 ** 6)
    assert pca(walk).explained_variance_ratio[0] == pytest.approx(1.0, abs=1e-9)
    d = decay_diagnostics(walk, pca(walk).coeffs[0], c)
    assert d["decay_share_end"] == pytest.approx(1.0, abs=1e-9)
    assert d["cos_backbone_decay"] == pytest.approx(1.0, abs=1e-9)
    assert d["decay_excess"] == pytest.approx(0.5, abs=1e-9)
    np.testing.assert_allclose(d["theta_norm"], c * math.sqrt(r2), rtol=1e-9)
    assert d["pure_decay_over_observed_end"] == pytest.approx(1.0, rel=1e-9)
    # a run whose increments are shorter than the decay alone: clamped and counted
    _, info = weight_decayed_walk_gram(list(range(11)), 0.5 * norms, c, r2, 10 ** 6)
    assert info["clamped_intervals"] == 10


def test_decay_diagnostics_match_dense():
    Theta, c = simulate(D=3000, lam=8.0, seed=3)
    g = observed_gram(Theta)
    v = pca(g).coeffs[0]
    d = decay_diagnostics(g, v, c)
    X = Theta - Theta[0]
    np.testing.assert_allclose(d["theta_norm"], np.linalg.norm(Theta, axis=1), rtol=1e-10)
    u0 = -Theta[0] / np.linalg.norm(Theta[0])
    vb = X.T @ v
    assert d["cos_backbone_decay"] == pytest.approx(vb @ u0 / np.linalg.norm(vb), rel=1e-9)
    proj = X[-1] @ u0
    assert d["decay_share_end"] == pytest.approx(max(proj, 0) ** 2 / (X[-1] @ X[-1]), rel=1e-9)
    # a strongly decayed run is the decay of its start: share and cos high, the excess positive
    assert d["decay_excess"] > 0


def test_decay_factors_follow_the_schedule():
    cfg = dataclasses.replace(preset("test"), wd=0.5, steps=60, warmup=10)
    steps = [0, 7, 30, 60]
    want = [math.prod(1 - lr_at(cfg, s) * cfg.wd for s in range(1, t + 1)) for t in steps]
    np.testing.assert_allclose(decay_factors(cfg, steps), want, rtol=1e-12)
    # −log c(T) ≈ Λ_eff for small steps
    assert -math.log(decay_factors(cfg, [60])[0]) == pytest.approx(effective_integrated_wd(cfg), rel=0.01)
    sgdm = dataclasses.replace(cfg, optimizer="sgd_momentum", momentum=0.9, wd=0.01)
    assert -math.log(decay_factors(sgdm, [60])[0]) == pytest.approx(effective_integrated_wd(sgdm), rel=0.01)


def test_beside_null_reports_the_decayed_walk_and_claim_4():
    Theta, c = simulate(seed=5)
    g = observed_gram(Theta)
    out = beside_null(g, 120, cfg=None)
    assert out["weight_decayed_walk"] is None and "config" in out["weight_decayed_reason"]
    sketch_like = Gram(g.steps, 0, None, g.dim, g.G)
    cfg = dataclasses.replace(preset("test"), wd=0.0)
    out = beside_null(sketch_like, 120, cfg=cfg)
    assert out["weight_decayed_walk"] is None and "origin" in out["weight_decayed_reason"]
    out = beside_null(g, 120, cfg=cfg)            # zero decay: the decayed walk is the random walk
    assert out["weight_decayed_walk"]["pc1"] == pytest.approx(out["random_walk"]["pc1"], rel=1e-9)
    assert out["weight_decayed_walk_fitted"]["fit"]["rho_sq"] > 0 and 0 < out["weight_decayed_walk_fitted"]["pc1"] <= 1
    sf = out["sign_flip"]
    assert set(sf) >= {"t_star", "t_star_random_walk", "t_star_weight_decayed_walk", "separation"}
    assert 0 <= sf["separation"] <= 1


def test_sign_flip_with_a_minimum_run():
    steps = list(range(8))
    c = [0.3, 0.2, -0.1, 0.1, -0.2, -0.3, -0.1, 0.05]
    assert sign_flip_step(steps, c) is None                  # never stays negative to the end
    assert sign_flip_step(steps, c, min_run=3) == 4
    assert sign_flip_step(steps, [0.1, 0.2, -0.1], min_run=3) is None
    assert sign_flip_step(steps, [0.1, 0.2, -0.1]) == 2
