"""Surrogate tests for correlations of short smooth series: calibration, power, invariants, input checks."""
import json
import time

import numpy as np
import pytest
from scipy import stats as sps

from training.core.errors import UserError
from training.geometry.stats import pearson
from training.geometry.surrogates import (
    circular_shift_surrogates,
    coupling,
    detrend,
    first_differences,
    phase_randomised_surrogates,
    rolling_median,
    spike_coupling,
    spike_index,
    surrogate_correlation,
)


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) series of length n (started from its stationary distribution)."""
    e = rng.standard_normal(n)
    out = np.empty(n)
    out[0] = e[0] / np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + e[t]
    return out


# --- 1. calibration under independence ---------------------------------------------------------------------

def test_differences_phase_test_is_calibrated_and_naive_pearson_is_not():
    rng = np.random.default_rng(2024)
    reps, p_surr, p_naive = 200, [], []
    for i in range(reps):
        x, y = ar1(30, 0.9, rng), ar1(30, 0.9, rng)
        res = surrogate_correlation(first_differences(x), first_differences(y), n_surrogates=200, seed=i)
        p_surr.append(res["p_value"])
        p_naive.append(sps.pearsonr(x, y)[1])
    p_surr, p_naive = np.array(p_surr), np.array(p_naive)
    assert 0.0 <= np.mean(p_surr < 0.05) <= 0.12
    assert sps.kstest(p_surr, "uniform").pvalue > 0.001
    assert np.mean(p_naive < 0.05) > 0.15            # why this module exists: levels of smooth series fool Pearson


# --- 2. power -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sign", [+1, -1])
@pytest.mark.parametrize("method", ["phase", "shift"])
def test_planted_coupling_is_detected(sign, method):
    rng = np.random.default_rng(7)
    x = ar1(30, 0.9, rng)
    y = sign * x + 0.1 * rng.standard_normal(30)
    res = surrogate_correlation(x, y, n_surrogates=1000, seed=3, method=method)
    assert res["p_value"] < 0.01 and np.sign(res["r"]) == sign
    c = coupling(np.arange(30) * 200, x, y, n_surrogates=1000, seed=3)
    for variant in ("levels", "first_differences", "detrended"):
        assert c[variant]["p_phase"] < 0.01 and c[variant]["p_shift"] < 0.01
    assert c["verdict_input"] == c["first_differences"]["p_phase"]


# --- 3. surrogate invariants ----------------------------------------------------------------------------------

@pytest.mark.parametrize("L", [7, 8, 29, 30])
def test_phase_surrogates_keep_mean_and_amplitude_spectrum(L):
    rng = np.random.default_rng(L)
    y = np.cumsum(rng.standard_normal(L)) + 5.0
    S = phase_randomised_surrogates(y, 50, np.random.default_rng(0))
    assert S.shape == (50, L) and np.isrealobj(S)
    assert np.allclose(S.mean(axis=1), y.mean())
    assert np.allclose(np.abs(np.fft.fft(S, axis=1)), np.abs(np.fft.fft(y))[None, :])
    assert not np.allclose(S, y[None, :])                       # the phases did change


def test_shift_surrogates_are_nonzero_rotations():
    y = np.arange(11.0) ** 2                                     # all values distinct, so a rotation is identifiable
    S = circular_shift_surrogates(y, 300, np.random.default_rng(1))
    assert S.shape == (300, 11)
    offsets = set()
    for row in S:
        assert sorted(row) == sorted(y)                          # a permutation of y ...
        k = int(np.flatnonzero(y == row[0])[0])
        assert np.array_equal(row, np.roll(y, -k))               # ... that is a rotation
        offsets.add(k)
    assert 0 not in offsets and offsets == set(range(1, 11))     # every nonzero offset, never the identity
    with pytest.raises(UserError):
        circular_shift_surrogates([1.0, 2.0], 5, np.random.default_rng(0))


def test_detrend_and_differences():
    t = np.array([0.0, 1.0, 3.0, 4.0, 7.0])
    line = 2.0 - 0.5 * t
    assert np.array_equal(detrend(line, t), np.zeros(5))
    bump = np.array([0.0, 1.0, 0.0, -1.0, 0.0])
    r = detrend(line + bump, t)
    assert abs(r.sum()) < 1e-12 and abs(r @ (t - t.mean())) < 1e-12    # orthogonal to 1 and t
    np.testing.assert_allclose(first_differences([1.0, 4.0, 9.0, 16.0]), [3.0, 5.0, 7.0])


def test_one_pearson_and_fast():
    rng = np.random.default_rng(5)
    x, y = np.cumsum(rng.standard_normal(50)), np.cumsum(rng.standard_normal(50))
    assert surrogate_correlation(x, y, n_surrogates=10)["r"] == pearson(x, y)
    best = min(_timed(lambda: surrogate_correlation(x, y, n_surrogates=1000, method=m)) for m in ("phase", "shift")
               for _ in range(5))
    assert best < 0.05


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


# --- 4. determinism -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["phase", "shift"])
def test_same_seed_same_result_other_seed_differs(method):
    rng = np.random.default_rng(11)
    x, y = ar1(25, 0.9, rng), ar1(25, 0.9, rng)
    a = surrogate_correlation(x, y, n_surrogates=500, seed=4, method=method)
    assert a == surrogate_correlation(x, y, n_surrogates=500, seed=4, method=method)
    assert a["p_value"] != surrogate_correlation(x, y, n_surrogates=500, seed=5, method=method)["p_value"]
    assert coupling(range(25), x, y, 300, seed=1) == coupling(range(25), x, y, 300, seed=1)
    make = phase_randomised_surrogates if method == "phase" else circular_shift_surrogates
    assert np.array_equal(make(y, 20, np.random.default_rng(9)), make(y, 20, np.random.default_rng(9)))
    assert not np.array_equal(make(y, 20, np.random.default_rng(9)), make(y, 20, np.random.default_rng(10)))


# --- 5. bad input -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, y", [
    ([1.0, 2.0, np.nan, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0, 4.0]),
    ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, np.inf, 2.0, 5.0, 4.0]),
    ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0]),          # constant
    ([0.3, 0.3, 0.3, 0.3, 0.3], [1.0, 3.0, 2.0, 5.0, 4.0]),          # constant (0.3 is inexact in binary)
    ([1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 3.0, 2.0, 5.0]),               # length mismatch
    ([1.0, 2.0], [2.0, 1.0]),                                        # too short
])
def test_bad_input_raises_one_line_user_error(x, y):
    with pytest.raises(UserError) as e:
        surrogate_correlation(x, y, n_surrogates=20)
    assert "\n" not in str(e.value) and str(e.value)


def test_bad_method_and_count():
    with pytest.raises(UserError, match="method"):
        surrogate_correlation([1, 2, 3, 4], [2, 1, 4, 3], method="bootstrap")
    with pytest.raises(UserError, match="surrogates"):
        surrogate_correlation([1, 2, 3, 4], [2, 1, 4, 3], n_surrogates=0)


def test_coupling_with_few_points_gives_a_reason():
    c = coupling([0, 100, 200, 300], [1.0, 2.0, 1.5, 3.0], [0.2, 0.1, 0.4, 0.3])
    assert isinstance(c["reason"], str) and c["reason"]
    assert c["verdict_input"] is None and c["n"] == 4
    assert all(c[v][k] is None for v in ("levels", "first_differences", "detrended")
               for k in ("r", "p_phase", "p_shift"))
    json.dumps(c)


def test_coupling_shape_and_missing_points():
    rng = np.random.default_rng(3)
    steps = np.arange(0, 6000, 200)
    x, y = list(ar1(30, 0.9, rng)), list(ar1(30, 0.9, rng))
    y[4] = None                                              # an unevaluated checkpoint is left out
    c = coupling(steps[::-1], x[::-1], y[::-1], n_surrogates=200)   # order of the input does not matter
    assert set(c) == {"n", "steps", "n_surrogates", "seed", "levels", "first_differences", "detrended",
                      "verdict_input", "note", "reason"}
    assert c["n"] == 29 and c["steps"] == [0, 5800] and c["reason"] is None and isinstance(c["note"], str)
    assert c == coupling(steps, x, y, n_surrogates=200)
    for v in ("levels", "first_differences", "detrended"):
        assert set(c[v]) == {"r", "p_phase", "p_shift"}
        assert -1 <= c[v]["r"] <= 1 and 0 < c[v]["p_phase"] <= 1 and 0 < c[v]["p_shift"] <= 1
    assert json.loads(json.dumps(c)) == c
    with pytest.raises(UserError):
        coupling(steps, x, y[:-1])


# --- 6. the p-value formula ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["phase", "shift"])
def test_p_value_is_one_over_n_plus_one_when_nothing_reaches_r_obs(method):
    y = np.arange(12.0) ** 2                                  # not periodic: no rotation or surrogate is affine in y
    res = surrogate_correlation(y, y, n_surrogates=9, seed=0, method=method)
    assert res["r"] == pytest.approx(1.0) and res["p_value"] == pytest.approx(1 / 10)


@pytest.mark.parametrize("method", ["phase", "shift"])
def test_p_value_counts_surrogates_by_hand(method):
    rng = np.random.default_rng(8)
    x, y = ar1(20, 0.9, rng), ar1(20, 0.9, rng)
    make = phase_randomised_surrogates if method == "phase" else circular_shift_surrogates
    S = make(y, 9, np.random.default_rng(2))                  # the documented draw: default_rng(seed)
    r_obs = pearson(x, y)
    hits = sum(abs(pearson(x, s)) >= abs(r_obs) for s in S)
    res = surrogate_correlation(x, y, n_surrogates=9, seed=2, method=method)
    assert res["p_value"] == pytest.approx((1 + hits) / 10)
    assert res["n_surrogates"] == 9 and res["method"] == method and res["n"] == 20


# --- 6. spike indices -----------------------------------------------------------------------------------------

def test_rolling_median_and_spike_index_by_hand():
    y = np.array([1.0, 5.0, 2.0, 8.0, 3.0, 4.0])
    # centred window of 3, truncated at the ends
    np.testing.assert_allclose(rolling_median(y, 3), [3.0, 2.0, 5.0, 3.0, 4.0, 3.5])
    flat = np.full(9, 2.0)
    flat[4] = 6.0                                                    # one spike, 3x its neighbours
    s = spike_index(flat, 5)
    assert s[4] == pytest.approx(np.log(3.0)) and np.allclose(np.delete(s, 4), 0.0)
    trend = np.exp(0.3 * np.arange(12))                              # a pure exponential trend has no spikes:
    s = spike_index(trend, 5)                                        # 0 inside, one step's log-ratio at the ends
    assert np.allclose(s[2:-2], 0.0) and s[0] == pytest.approx(-0.3) and s[-1] == pytest.approx(0.3)
    res = spike_coupling(flat, np.exp(np.sin(np.arange(9.0))), factor=2.0, n_surrogates=50)
    assert res["spikes_x"] == 1
    for bad in ([1.0, -1.0, 2.0], [1.0, np.nan, 2.0]):
        with pytest.raises(UserError):
            spike_index(bad)
    with pytest.raises(UserError):
        rolling_median(y, 4)


def test_spike_coupling_detects_shared_spikes_through_opposite_trends():
    """D grows while the loss falls (opposite trends), but both jump at the same checkpoints: the spike
    indices see the shared jumps, the phase and shift surrogates call them significant."""
    rng = np.random.default_rng(8)
    n = 30
    shocks = rng.standard_normal(n)
    x = np.exp(0.1 * np.arange(n) + shocks + 0.2 * rng.standard_normal(n))
    y = np.exp(-0.1 * np.arange(n) + shocks + 0.2 * rng.standard_normal(n))
    res = spike_coupling(x, y, n_surrogates=999, seed=2)
    assert res["r"] > 0.6 and res["p_phase"] < 0.01 and res["p_shift"] < 0.01
    assert res["r"] == pytest.approx(pearson(spike_index(x), spike_index(y)))


def test_spike_coupling_of_independent_ar1_pairs_is_calibrated():
    rng = np.random.default_rng(9)
    p = []
    for i in range(150):
        x = np.exp(ar1(30, 0.7, rng) + 0.05 * np.arange(30))
        y = np.exp(ar1(30, 0.7, rng) - 0.05 * np.arange(30))
        p.append(spike_coupling(x, y, n_surrogates=199, seed=i)["p_phase"])
    p = np.array(p)
    assert np.mean(p < 0.05) <= 0.11
    assert sps.kstest(p, "uniform").pvalue > 0.001
