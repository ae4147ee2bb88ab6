"""The random-walk null against closed forms and against explicit finite-D simulation with dense numpy."""
import numpy as np
import pytest

from training.core.config import preset
from training.core.optim import lr_at
from training.geometry.nulls import beside_null, null_of, phase_bounds, profile, random_walk_gram
from training.geometry.trajectory import Gram, random_walk_null


def equal_walk(T: int) -> Gram:
    return random_walk_gram(list(range(T + 1)), np.ones(T), dim=10 ** 9)


def paper_walk() -> tuple[Gram, int]:
    """The null of the paper's run: per-interval step ∝ the summed learning rate of 200 steps (checkpoint every 200)."""
    cfg = preset("paper")
    lrs = np.array([lr_at(cfg, s) for s in range(cfg.steps)])
    steps = list(range(0, cfg.steps + 1, cfg.ckpt_every))
    norms = [lrs[a:b].sum() for a, b in zip(steps[:-1], steps[1:])]
    return random_walk_gram(steps, norms, dim=25_165_824), cfg.steps


def explicit_walk(norms, D: int, rng) -> np.ndarray:
    """Drift rows (T+1 × D, the first zero) of a walk with the given increment norms in random directions."""
    U = rng.standard_normal((len(norms), D))
    U *= (np.asarray(norms) / np.linalg.norm(U, axis=1))[:, None]
    return np.vstack([np.zeros(D), np.cumsum(U, axis=0)])


def test_gram_is_that_of_orthonormal_increments():
    rng = np.random.default_rng(0)
    norms = rng.uniform(0.1, 2.0, size=7)
    E = np.linalg.qr(rng.standard_normal((40, 7)))[0].T             # 7 orthonormal rows in R^40
    X = np.vstack([np.zeros(40), np.cumsum(norms[:, None] * E, axis=0)])
    g = random_walk_gram(list(range(0, 80, 10)), norms, dim=40)
    np.testing.assert_allclose(g.G, X @ X.T, rtol=0, atol=1e-12)


def test_update_alignment_is_the_first_eigenvector():
    """cos(u_i, v_1) = w_1[i], w_1 the top eigenvector of diag(n) LᵀL diag(n) (dense numpy, independent)."""
    rng = np.random.default_rng(1)
    norms = rng.uniform(0.5, 1.5, size=12)
    L = np.tril(np.ones((12, 12)))
    M = np.diag(norms) @ L.T @ L @ np.diag(norms)
    lam, W = np.linalg.eigh(M)
    w1 = W[:, -1] * np.sign(norms @ W[:, -1])                     # a(T) = Σ n_i w_i > 0
    p = profile(random_walk_gram(list(range(13)), norms, dim=10 ** 6), total_steps=12)
    np.testing.assert_allclose(p["C"]["signed"], w1, atol=1e-10)
    assert p["pc1"] == pytest.approx(lam[-1] / lam.sum(), abs=1e-12)


@pytest.mark.parametrize("T", [30, 50, 400])
def test_equal_steps_closed_forms(T):
    p = profile(equal_walk(T), total_steps=T)
    c = np.abs(p["C"]["signed"])
    assert p["C"]["rms"] == pytest.approx(1 / np.sqrt(T), abs=1e-12)          # Σ C² = 1 exactly
    assert c.mean() == pytest.approx(2 * np.sqrt(2) / np.pi / np.sqrt(T), rel=0.03)
    assert p["C"]["sign_flip_step"] is None                                    # no flip in a random walk
    if T == 400:
        assert p["pc1"] == pytest.approx(8 / np.pi ** 2, abs=2e-3)


def test_the_papers_schedule():
    g, T = paper_walk()
    p = profile(g, total_steps=T)
    assert p["pc1"] == pytest.approx(0.90, abs=0.005) and p["k95"] == 3
    assert p["backbone_fraction"][-1] == pytest.approx(0.97, abs=0.005)
    assert p["C"]["abs_by_phase"]["early"] == pytest.approx(0.16, abs=0.01)
    assert p["C"]["abs_max"] == pytest.approx(0.26, abs=0.01)
    assert p["rolling"]["from_init"] == pytest.approx(0.997, abs=0.001)
    assert p["rolling"]["from_start_rownorm"] == pytest.approx(0.80, abs=0.01)
    assert phase_bounds(T) == (2000, 6000)


def test_finite_dimension_monte_carlo_agrees():
    """Explicit random walks at D = 2·10⁴, measured with dense numpy SVD, agree with the D → ∞ profile."""
    g, T = paper_walk()
    norms = np.sqrt(np.diff(np.diag(g.G)))
    rng = np.random.default_rng(7)
    pc1, c_early, rolling = [], [], []
    for _ in range(4):
        X = explicit_walk(norms, 20_000, rng)
        _, S, Vt = np.linalg.svd(X[1:], full_matrices=False)
        v = Vt[0] * np.sign(X[-1] @ Vt[0])
        U = np.diff(X, axis=0)
        C = U @ v / np.linalg.norm(U, axis=1)
        pc1.append(S[0] ** 2 / np.sum(S ** 2))
        c_early.append(np.abs(C[np.array(g.steps[1:]) < 2000]).mean())
        vs = [np.linalg.svd(X[i + 1:i + 11], full_matrices=False)[2][0] for i in range(0, len(X) - 10)]
        rolling.append(np.mean([abs(a @ b) for a, b in zip(vs[:-1], vs[1:])]))
    p = profile(g, total_steps=T)
    assert np.mean(pc1) == pytest.approx(p["pc1"], abs=0.005)
    assert np.mean(c_early) == pytest.approx(p["C"]["abs_by_phase"]["early"], abs=0.01)
    assert np.mean(rolling) == pytest.approx(p["rolling"]["from_init"], abs=0.002)


def test_agrees_with_the_wishart_null_at_large_dimension():
    norms = np.linspace(1.0, 0.2, 25)
    g = random_walk_gram(list(range(26)), norms, dim=10 ** 8)
    mc = random_walk_null(norms, 10 ** 8, n_samples=10, seed=0)
    p = profile(g, total_steps=25)
    assert mc["pc1"] == pytest.approx(p["pc1"], abs=1e-3) and mc["k95"] == p["k95"]


def test_null_of_a_run_uses_its_increments_and_a_structured_run_beats_it():
    """A planted dominant direction on top of a random walk: observed PC1 above the null of its own increments."""
    rng = np.random.default_rng(3)
    D, T = 3000, 30
    walk = explicit_walk(np.full(T, 1.0), D, rng)
    drift = np.outer(np.arange(T + 1), rng.standard_normal(D) / np.sqrt(D) * 0.8)
    X = walk + drift
    g = Gram(list(range(0, 10 * (T + 1), 10)), 0, None, D, X @ X.T)
    null = null_of(g)
    np.testing.assert_allclose(np.sqrt(np.diff(np.diag(null.G))), np.linalg.norm(np.diff(X, axis=0), axis=1), rtol=1e-10)
    both = beside_null(g, total_steps=10 * T)
    assert both["observed"]["pc1"] > both["random_walk"]["pc1"] + 0.05
    plain = Gram(g.steps, 0, None, D, walk @ walk.T)
    plain_both = beside_null(plain, total_steps=10 * T)
    assert abs(plain_both["observed"]["pc1"] - plain_both["random_walk"]["pc1"]) < 0.03


def test_window_pc1_null_of_a_walk_is_itself_and_a_line_beats_it():
    """The excess of a random walk over its null is 0 (to rounding); a straight-line drift has PC1 1 and its null is the
    row-normalised PCA of orthonormal increments with the line's step sizes (dense numpy)."""
    from training.geometry.nulls import window_pc1_null
    steps = list(range(0, 13))
    norms = np.linspace(1.0, 0.2, 12)
    walk = window_pc1_null(random_walk_gram(steps, norms, 10_000), steps[3:])
    assert walk["reason"] is None
    assert abs(walk["pc1_minus_null"]) < 1e-12 and abs(walk["pc1_raw_minus_null"]) < 1e-12
    cum = np.concatenate([[0.0], np.cumsum(norms)])
    line = Gram(steps, 0, None, 10_000, np.outer(cum, cum))
    got = window_pc1_null(line, steps[3:])
    assert got["pc1"] == pytest.approx(1.0, abs=1e-12)
    X = np.cumsum(np.diag(norms[3:]), axis=0)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    s2 = np.linalg.svd(X, compute_uv=False) ** 2
    assert got["null_pc1"] == pytest.approx(s2[0] / s2.sum(), rel=1e-12)
    assert got["pc1_minus_null"] == pytest.approx(1.0 - s2[0] / s2.sum(), rel=1e-12)
    still = Gram(steps, 0, None, 10, np.zeros((13, 13)))
    assert window_pc1_null(still, steps)["pc1_minus_null"] is None and window_pc1_null(still, steps)["reason"]


def test_shrink_reading_of_pure_decay_and_of_a_sideways_drift():
    from training.geometry.trajectory import shrink_reading
    rng = np.random.default_rng(0)
    theta0 = rng.standard_normal(500)
    side = rng.standard_normal(500)
    side -= side @ theta0 / (theta0 @ theta0) * theta0

    class Fake:
        def __init__(self, vecs):
            self.vecs = vecs

        def vector(self, step):
            return self.vecs[step]
    decay = shrink_reading(Fake({0: theta0, 1: 0.3 * theta0}), 0, 1)
    assert decay["shrink_cos"] == pytest.approx(1.0) and decay["decay_dominated"] is True
    assert decay["norm_ratio"] == pytest.approx(0.3)
    drift = shrink_reading(Fake({0: theta0, 1: theta0 + side}), 0, 1)
    assert abs(drift["shrink_cos"]) < 1e-12 and drift["decay_dominated"] is False
    mixed = shrink_reading(Fake({0: theta0, 1: 0.5 * theta0 + side}), 0, 1)
    d = -0.5 * theta0 + side
    cos = 0.5 * theta0 @ theta0 / (np.linalg.norm(theta0) * np.linalg.norm(d))
    assert mixed["shrink_cos"] == pytest.approx(cos) and mixed["decay_share"] == pytest.approx(cos ** 2)
    assert mixed["decay_dominated"] == bool(cos ** 2 >= 0.9)      # norm ratio ≈ 1.1: only the share can decide
    grow = shrink_reading(Fake({0: theta0, 1: 3.0 * theta0}), 0, 1)
    assert grow["shrink_cos"] == pytest.approx(-1.0) and grow["decay_share"] == 0.0 and not grow["decay_dominated"]
    near_zero = shrink_reading(Fake({0: theta0, 1: 0.05 * theta0}), 0, 1)
    assert near_zero["norm_ratio"] == pytest.approx(0.05) and near_zero["decay_dominated"] is True
    assert shrink_reading(Fake({0: theta0, 1: theta0}), 0, 1)["reason"]


def test_expected_max_normal_closed_forms_and_monte_carlo():
    from training.geometry.nulls import expected_max_normal, reentry_noise_bias
    assert expected_max_normal(1) == pytest.approx(0.0, abs=1e-9)
    assert expected_max_normal(2) == pytest.approx(1 / np.sqrt(np.pi), rel=1e-7)
    assert expected_max_normal(3) == pytest.approx(1.5 / np.sqrt(np.pi), rel=1e-7)
    z = np.random.default_rng(0).standard_normal((200_000, 11))
    assert expected_max_normal(11) == pytest.approx(z.max(axis=1).mean(), abs=0.01)
    # G = max_t p(t) − p(0) of a flat curve with binomial evaluation noise, simulated
    rng = np.random.default_rng(1)
    p = rng.binomial(1200, 0.3, size=(40_000, 11)) / 1200
    g = (p.max(axis=1) - p[:, 0]).mean()
    assert reentry_noise_bias(np.sqrt(0.3 * 0.7 / 1200), 11) == pytest.approx(g, rel=0.03)
    from training.core.errors import UserError
    with pytest.raises(UserError):
        reentry_noise_bias(0.01, 0)


def test_increment_coherence_against_dense_cosines_and_closed_forms():
    """ρ(ℓ) from the Gram equals the mean of explicitly computed increment cosines; the random-walk null has
    ρ = 0 exactly (D → ∞) and ≈ 0 at finite D; a persistent drift μ·e plus isotropic noise of variance σ² per
    coordinate gives ρ ≈ μ² / (μ² + σ²D) at every lag (large D)."""
    from training.geometry.trajectory import increment_coherence
    rng = np.random.default_rng(5)
    D, T = 3000, 12
    steps = list(range(0, 10 * (T + 1), 10))
    mu, sigma = 1.0, 1.0 / np.sqrt(D)                    # signal and noise energies equal: ρ ≈ 1/2
    U = sigma * rng.standard_normal((T, D))
    U[:, 0] += mu
    X = np.vstack([np.zeros(D), np.cumsum(U, axis=0)])
    g = Gram(steps, 0, None, D, X @ X.T)
    got = increment_coherence(g, max_lag=4)
    cos = (U @ U.T) / np.outer(np.linalg.norm(U, axis=1), np.linalg.norm(U, axis=1))
    dense = [np.mean(np.diagonal(cos, offset=lag)) for lag in range(1, 5)]
    assert got["lags"] == [1, 2, 3, 4] and got["n_increments"] == T
    np.testing.assert_allclose(got["rho"], dense, rtol=1e-9)
    assert got["rho"] == pytest.approx([0.5] * 4, abs=0.05)
    # a subset of the steps: increments between the chosen checkpoints
    sub = increment_coherence(g, steps[::2], max_lag=2)
    V = np.diff(X[::2], axis=0)
    cv = (V @ V.T) / np.outer(np.linalg.norm(V, axis=1), np.linalg.norm(V, axis=1))
    np.testing.assert_allclose(sub["rho"], [np.mean(np.diagonal(cv, offset=lag)) for lag in (1, 2)], rtol=1e-9)
    # the closed-form walk is exactly incoherent; a finite-D walk is within a few 1/√D
    walk = random_walk_gram(steps, rng.uniform(0.5, 2.0, T), dim=10 ** 9)
    assert np.max(np.abs(increment_coherence(walk)["rho"])) < 1e-12
    Xw = explicit_walk(rng.uniform(0.5, 2.0, T), D, rng)
    finite = increment_coherence(Gram(steps, 0, None, D, Xw @ Xw.T))
    assert np.max(np.abs(finite["rho"])) < 4 / np.sqrt(D)
    assert profile(walk, steps[-1])["coherence"]["rho"] == increment_coherence(walk)["rho"]
    short = increment_coherence(Gram([0, 10], 0, None, D, np.zeros((2, 2))))
    assert short["lags"] == [] and short["rho_mean"] is None
