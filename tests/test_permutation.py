"""Permutation nulls (training/geometry/permutation.py): the correlations against numpy, a planted latent found,
family-wise calibration under shuffled labels, grouped units, and the group-difference test against exact
enumeration and a confounded trend."""
import itertools

import numpy as np
import pytest
from scipy import stats as sps

from training.core.errors import UserError
from training.geometry.permutation import correlations, group_difference_test, max_correlation_test


def _codes(rng, n, K):
    """Sparse nonnegative activations, like Top-K SAE codes."""
    return np.maximum(rng.standard_normal((n, K)), 0.0)


def test_correlations_match_numpy_and_constant_columns_are_undefined():
    rng = np.random.default_rng(0)
    Z = _codes(rng, 50, 6)
    Z[:, 3] = 0.0                                                   # a latent that never fires
    m = rng.integers(1, 5, size=50)
    r, live = correlations(Z, m)
    for j in range(6):
        if j == 3:
            assert not live[j] and np.isnan(r[j])
        else:
            assert r[j] == pytest.approx(np.corrcoef(Z[:, j], m)[0, 1], abs=1e-12)
    res = max_correlation_test(Z, m, n_perm=99)
    assert res["r"][3] is None and res["p_fwer"][3] is None and res["n_constant"] == 1 and res["n_live"] == 5
    with pytest.raises(UserError):
        correlations(Z, np.full(50, 2.0))


def test_planted_latent_is_recovered_with_a_small_family_wise_p():
    rng = np.random.default_rng(1)
    n, K = 300, 40
    m = rng.integers(1, 5, size=n).astype(float)
    Z = _codes(rng, n, K)
    Z[:, 17] = np.maximum(m + rng.standard_normal(n), 0.0)
    res = max_correlation_test(Z, m, n_perm=999, seed=3)
    assert res["top"][0]["index"] == 17 and res["top"][0]["r"] > 0.5
    assert res["p_fwer"][17] == pytest.approx(1 / 1000)
    assert res["n_significant"] == 1                                # the 39 noise latents stay below the null
    assert res["null_mean_count"] <= 0.1
    assert res["threshold"] < res["max_abs_r"]


def test_family_wise_p_is_uniform_under_shuffled_labels():
    rng = np.random.default_rng(2)
    p_min, any_sig = [], []
    for i in range(200):
        Z = _codes(rng, 30, 8)
        m = rng.integers(1, 5, size=30)
        res = max_correlation_test(Z, m, n_perm=199, seed=i)
        p_min.append(min(p for p in res["p_fwer"] if p is not None))
        any_sig.append(res["n_significant"] > 0)
    p_min = np.array(p_min)
    assert 0.0 <= np.mean(any_sig) <= 0.11                          # family-wise error at most α (0.05), MC slack
    assert sps.kstest(p_min, "uniform").pvalue > 0.001


def test_grouped_units_keep_the_test_calibrated_where_rows_are_not_exchangeable():
    """Rows of one unit share a label and a unit-level offset: permuting rows is anti-conservative, permuting
    units is not."""
    rng = np.random.default_rng(4)
    sig_rows, sig_units = [], []
    for i in range(100):
        units = np.repeat(np.arange(8), 10)
        m = np.repeat(rng.integers(1, 5, size=8), 10).astype(float)
        Z = rng.standard_normal((8, 3))[units] + 0.3 * rng.standard_normal((80, 3))
        sig_rows.append(max_correlation_test(Z, m, n_perm=99, seed=i)["n_significant"] > 0)
        sig_units.append(max_correlation_test(Z, m, groups=units, n_perm=99, seed=i)["n_significant"] > 0)
    assert np.mean(sig_units) <= 0.12
    assert np.mean(sig_rows) > 0.3
    with pytest.raises(UserError):
        max_correlation_test(np.ones((4, 2)) * np.arange(4)[:, None], [1, 2, 1, 2], groups=[0, 0, 1, 1])


def test_group_difference_matches_exact_enumeration():
    v = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    a = np.array([False, False, False, True, True, True])
    res = group_difference_test(v, a, n_perm=4000, seed=0)
    assert res["diff"] == 9.0 and res["a"] == 11.0 and res["b"] == 2.0
    exact = [np.median(v[list(s)]) - np.median(np.delete(v, list(s))) for s in itertools.combinations(range(6), 3)]
    p_exact = np.mean(np.abs(exact) >= 9.0)                         # 4 of the 20 labelings
    assert p_exact == pytest.approx(0.2) and res["p_value"] == pytest.approx(p_exact, abs=0.025)
    assert group_difference_test(v, np.zeros(6, bool))["p_value"] is None


def test_stratified_permutation_removes_a_trend_confound():
    """Values follow the stratum (a trend over checkpoints); group A is more common in late strata but has
    no effect within any stratum: the pooled test is fooled, the stratified one stays calibrated (Monte Carlo)."""
    strata = np.repeat(np.arange(10), 8)
    pooled, strat = [], []
    for i in range(40):
        rng = np.random.default_rng(i)
        a = np.concatenate([rng.permutation(np.arange(8) < (1 + s // 2)) for s in range(10)])
        v = 10.0 * strata + rng.standard_normal(80)
        pooled.append(group_difference_test(v, a, n_perm=99, seed=i)["p_value"] < 0.05)
        strat.append(group_difference_test(v, a, strata=strata, n_perm=99, seed=i)["p_value"] < 0.05)
    assert np.mean(pooled) > 0.9
    assert np.mean(strat) <= 0.15
    rng = np.random.default_rng(99)
    a = np.concatenate([rng.permutation(np.arange(8) < (1 + s // 2)) for s in range(10)])
    v = 10.0 * strata + rng.standard_normal(80) + 5.0 * a          # a genuine within-stratum effect
    res = group_difference_test(v, a, strata=strata, n_perm=999, seed=1)
    assert res["stratified"] and res["p_value"] < 0.01
