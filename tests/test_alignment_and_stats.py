"""The one update-alignment computation (consecutive and lagged, both index conventions) against dense numpy,
and the shared statistics helpers against scipy."""
import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from training.geometry.stats import finite, pearson
from training.geometry.trajectory import Gram, lagged_update_alignment, pair_alignment, update_alignment
from training.studies.sgd_controls import update_alignment_at

STEPS = [0, 10, 20, 30, 40, 60]


@pytest.fixture(scope="module")
def traj():
    rng = np.random.default_rng(3)
    theta = np.cumsum(rng.standard_normal((len(STEPS), 50)), axis=0)        # θ(t), D = 50
    x = theta - theta[0]
    gram = Gram(list(STEPS), 0, None, 50, x @ x.T)
    coeffs = rng.standard_normal(len(STEPS))                                 # a span vector v = Xᵀc
    return theta, gram, coeffs, x.T @ coeffs


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_pair_alignment_matches_dense(traj):
    theta, gram, c, v = traj
    prev, ends = [0, 20, 10], [30, 60, 40]
    got = pair_alignment(gram, c, prev, ends)
    for i, (a, b) in enumerate(zip(prev, ends)):
        u = theta[STEPS.index(b)] - theta[STEPS.index(a)]
        assert got["signed_cos"][i] == pytest.approx(_cos(u, v), abs=1e-12)
        assert got["update_norm"][i] == pytest.approx(np.linalg.norm(u), rel=1e-12)
    assert got["abs_cos"] == [abs(x) for x in got["signed_cos"]]


def test_consecutive_is_the_lag_of_neighbours(traj):
    _, gram, c, _ = traj
    ua = update_alignment(gram, c)
    assert ua["steps"] == STEPS[1:] and ua["prev_steps"] == STEPS[:-1]
    lag = lagged_update_alignment(gram, c, 10)              # lag 10: every pair but (40, 60)
    assert lag["steps"] == [10, 20, 30, 40] and lag["prev_steps"] == [0, 10, 20, 30]
    assert lag["signed_cos"] == pytest.approx(ua["signed_cos"][:4], abs=1e-14)
    assert lag["missing_steps"] == [0, 60]


def test_start_indexed_view_relabels_the_same_numbers(traj):
    """sgd_controls indexes an update by its start t, beta_sweep by its end: same pairs, same cosines."""
    _, gram, c, _ = traj
    by_start = update_alignment_at(gram, c, [0, 10, 40, 50], 20)
    assert [(p["t"], p["t_plus_delta"]) for p in by_start["points"]] == [(0, 20), (10, 30), (40, 60)]
    assert by_start["missing_t"] == [50]
    by_end = lagged_update_alignment(gram, c, 20, [20, 30, 60])
    assert [p["signed_cos"] for p in by_start["points"]] == by_end["signed_cos"]


def test_finite_rejects_booleans_and_non_numbers():
    assert finite(1) and finite(-2.5) and finite(0)
    assert not any(finite(x) for x in (True, False, None, "1", math.nan, math.inf, -math.inf, [1]))


def test_pearson_against_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20)
    y = 0.5 * x + rng.standard_normal(20)
    assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    assert pearson([1, 2], [3, 4]) is None and pearson([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])
