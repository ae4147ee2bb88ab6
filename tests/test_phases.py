"""Phases of the backbone (training/geometry/phases.py) against dense numpy on planted trajectories."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.core.errors import UserError
from training.geometry.nulls import random_walk_gram
from training.geometry.phases import Window, default_windows, parse_window, phase_reading, phases_beside_nulls
from training.geometry.trajectory import Gram


def gram_of(X: np.ndarray, steps: list[int]) -> Gram:
    """The Gram of drift rows X (row 0 = the anchor, zero)."""
    return Gram(list(steps), steps[0], None, X.shape[1], X @ X.T)


def pc1(rows: np.ndarray) -> np.ndarray:
    return np.linalg.svd(rows, full_matrices=False)[2][0]


def planted(phi_deg: float, D: int = 40, n: int = 21, t0_index: int = 10, noise: float = 0.0, seed: int = 0):
    """x(t) moves along e1 until t0, then along cos φ e1 + sin φ e2, plus optional isotropic noise."""
    rng = np.random.default_rng(seed)
    steps = [20 * i for i in range(n)]
    phi = math.radians(phi_deg)
    u = np.zeros(D); u[0] = math.cos(phi); u[1] = math.sin(phi)
    e1 = np.zeros(D); e1[0] = 1.0
    t0 = steps[t0_index]
    X = np.array([(min(t, t0) * e1 + max(t - t0, 0) * u) for t in steps], dtype=float)
    X[1:] += noise * rng.standard_normal((n - 1, D)).cumsum(axis=0)
    return X, steps, t0


@pytest.mark.parametrize("phi", [0.0, 25.0, 60.0, 90.0])
def test_planted_rotation_gives_its_angle(phi):
    X, steps, t0 = planted(phi)
    r = phase_reading(gram_of(X, steps), [Window("before", 0, t0), Window("after", t0, steps[-1])])
    assert r["pairs"][0]["angle_deg"] == pytest.approx(phi, abs=1e-6)
    assert all(w["pc1"] == pytest.approx(1.0) for w in r["windows"])


def test_noisy_phases_equal_dense_numpy():
    X, steps, t0 = planted(40.0, noise=3.0, seed=3)
    mid = steps[15]
    wins = [Window("a", 0, t0), Window("b", t0, steps[-1]), Window("c", steps[5], mid)]
    r = phase_reading(gram_of(X, steps), wins)
    vecs = {}
    for w in wins:
        idx = [i for i, s in enumerate(steps) if w.start <= s <= w.end]
        rows = X[idx[1:]] - X[idx[0]]
        vecs[w.name] = pc1(rows)
        s = np.linalg.svd(rows, compute_uv=False) ** 2
        got = next(x for x in r["windows"] if x["name"] == w.name)
        assert got["pc1"] == pytest.approx(s[0] / s.sum(), rel=1e-9)
        assert got["abs_cos_global"] == pytest.approx(abs(vecs[w.name] @ pc1(X[1:])), abs=1e-9)
    for p in r["pairs"]:
        a, b = p["between"]
        assert p["abs_cos"] == pytest.approx(abs(vecs[a] @ vecs[b]), abs=1e-9)
    # rotation curve: the backbone of the trajectory up to t against the whole run's, by SVD
    g = pc1(X[1:])
    want = [abs(pc1(X[1:k + 1]) @ g) for k in range(2, len(steps))]
    assert r["rotation"]["steps"] == steps[2:]
    np.testing.assert_allclose(r["rotation"]["rho"], want, atol=1e-9)


def test_random_walk_null_has_orthogonal_disjoint_phases():
    steps = [10 * i for i in range(13)]
    null = random_walk_gram(steps, np.linspace(2.0, 0.5, 12), dim=10 ** 6)
    r = phase_reading(null, [Window("a", 0, 60), Window("b", 60, 120), Window("c", 30, 90)])
    ang = {tuple(p["between"]): p["angle_deg"] for p in r["pairs"]}
    assert ang[("a", "b")] == pytest.approx(90.0, abs=1e-6)        # disjoint increments are orthogonal
    assert ang[("a", "c")] < 90.0 and ang[("b", "c")] < 90.0       # overlapping windows share increments


def test_beside_nulls_reports_excess_over_the_walk():
    X, steps, t0 = planted(10.0, noise=0.5, seed=1)
    res = phases_beside_nulls(gram_of(X, steps), [Window("before", 0, t0), Window("after", t0, steps[-1])])
    p = res["observed"]["pairs"][0]
    assert p["random_walk_angle_deg"] == pytest.approx(90.0, abs=1e-6)
    assert p["angle_below_null_deg"] == pytest.approx(90.0 - p["angle_deg"])
    assert p["angle_below_null_deg"] > 45                          # a shared direction, far from the walk's
    assert res["weight_decayed_walk"] is None and res["weight_decayed_reason"] == "no run config given"


def test_bad_windows():
    X, steps, _ = planted(30.0)
    g = gram_of(X, steps)
    with pytest.raises(UserError, match="outside the run"):
        phase_reading(g, [Window("w", 0, steps[-1] + 20)])
    with pytest.raises(UserError, match="before end"):
        phase_reading(g, [Window("w", 100, 40)])
    r = phase_reading(g, [Window("short", 0, 20), Window("long", 0, 200)])
    assert r["windows"][0]["pc1"] is None and "needs 3" in r["windows"][0]["reason"]
    assert r["pairs"][0]["angle_deg"] is None
    assert parse_window("late=100:200") == Window("late", 100, 200)
    assert parse_window("100:200") == Window("100:200", 100, 200)
    with pytest.raises(UserError, match="START:END"):
        parse_window("100-200")


def test_default_windows_follow_the_schedule():
    class C:
        lambda_probe, lambda_probe2, lambda_step, steps, warmup = 2.0, 4.0, 240, 600, 90
    assert default_windows(C, 0, 600) == [Window("before the λ switch", 0, 240), Window("after the λ switch", 240, 600)]
    assert default_windows(C, 0, 600, "lr_peak")[0] == Window("before the LR peak", 0, 90)
    C.lambda_probe2 = 2.0
    assert default_windows(C, 0, 600) == []                       # no switch: no phases
