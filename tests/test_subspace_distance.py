"""Distance to the final subspace (training/geometry/subspace_distance.py) against dense numpy / scipy."""
import numpy as np
import pytest
from scipy.linalg import subspace_angles

from training.core.errors import UserError
from training.geometry.nulls import null_of
from training.geometry.subspace_distance import (
    dense_gram,
    distance_beside_null,
    distance_to_final,
    settle_fraction,
    subspace_cosines,
)
from training.geometry.trajectory import Gram


def _dense_reference(X, k):
    """Top-k right singular vectors of the drifts up to each t (numpy SVD), scipy principal angles to the final ones."""
    Y = (X - X[0])[1:]

    def top(M):
        _, s, vt = np.linalg.svd(M, full_matrices=False)
        r = int(np.sum(s > s[0] * 1e-12))
        return vt[:min(k, r)].T
    VF = top(Y)
    ov, share, cos = [], [], []
    for t in range(1, len(Y) + 1):
        Vt = top(Y[:t])
        c = np.sort(np.cos(subspace_angles(Vt, VF)))[::-1]
        cc = np.zeros(VF.shape[1])
        cc[:len(c)] = c
        cos.append(cc)
        ov.append(np.sum(cc ** 2) / VF.shape[1])
        x = Y[t - 1]
        share.append(np.sum((VF.T @ x) ** 2) / (x @ x))
    return np.array(ov), np.array(share), np.array(cos)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_matches_scipy_subspace_angles(k):
    rng = np.random.default_rng(k)
    T, D = 12, 60
    # a drifting trajectory: a strong direction plus a rotating second one plus noise
    e = np.linalg.qr(rng.standard_normal((D, 4)))[0].T
    t = np.arange(T)[:, None]
    X = 5.0 * t * e[0] + 2.0 * np.sin(t / 3.0) * e[1] + t * (t > 6) * e[2] + 0.3 * rng.standard_normal((T, D)).cumsum(0)
    g = dense_gram(X, list(range(0, 10 * T, 10)))
    res = distance_to_final(g, k=k)
    ov, share, cos = _dense_reference(X, k)
    np.testing.assert_allclose(res["overlap"], ov, atol=1e-9)
    np.testing.assert_allclose(res["point_share"], share, atol=1e-9)
    np.testing.assert_allclose([r["cosines"] for r in res["rows"]], cos, atol=1e-7)
    assert res["overlap"][-1] == pytest.approx(1.0)
    assert res["k"] == k


def test_known_answers_planes():
    """Loops in plane A back to the start (4 checkpoints), then moves far in plane B ⊥ A: the drift matrix is
    block-diagonal with B's block dominant, so the final top-2 subspace is B, the early overlap 0 and the largest
    angle 90°; a trajectory inside one plane has overlap 1 from 2 rows on."""
    D = 20
    I = np.eye(D)
    rows = [np.zeros(D), I[0], I[0] + I[1], I[1], np.zeros(D)]
    for i in range(10):
        rows.append(rows[-1] + 10 * (I[2] if i % 2 else I[3]))
    X = np.array(rows)
    res = distance_to_final(dense_gram(X, list(range(len(X)))), k=2)
    assert res["overlap"][0] == pytest.approx(0.0, abs=1e-12)
    assert res["overlap"][3] == pytest.approx(0.0, abs=1e-12)
    assert res["overlap"][5] > 0.4
    assert res["rows"][0]["max_angle_deg"] == pytest.approx(90.0)
    X2 = np.cumsum(np.random.default_rng(0).standard_normal((10, 2)) @ I[:2], axis=0)
    X2 = np.vstack([np.zeros(D), X2])
    res2 = distance_to_final(dense_gram(X2, list(range(11))), k=2)
    assert np.allclose(res2["overlap"][1:], 1.0)
    assert res2["overlap"][0] == pytest.approx(0.5)          # one direction of two known after one row
    assert res2["settle_fraction"] == pytest.approx(2 / 10)


def test_null_matches_finite_D_monte_carlo():
    """The analytic random-walk null equals the mean over finite-D isotropic walks with the same step norms."""
    T = 10
    norms = np.linspace(2.0, 0.5, T)
    steps = list(range(T + 1))
    g = Gram(steps, 0, None, 10 ** 6, np.zeros((T + 1, T + 1)))
    g.G[1:, 1:] = np.cumsum(norms ** 2)[np.minimum.outer(np.arange(T), np.arange(T))]
    analytic = distance_to_final(null_of(g), k=2)["overlap"]
    rng = np.random.default_rng(0)
    mc = []
    for _ in range(40):
        inc = rng.standard_normal((T, 20000))
        inc *= (norms / np.linalg.norm(inc, axis=1))[:, None]
        X = np.vstack([np.zeros(20000), np.cumsum(inc, axis=0)])
        mc.append(distance_to_final(dense_gram(X, steps), k=2)["overlap"])
    np.testing.assert_allclose(np.mean(mc, axis=0), analytic, atol=0.03)


def test_beside_null_and_settle():
    X = np.cumsum(np.random.default_rng(3).standard_normal((15, 40)), axis=0)
    X = np.vstack([np.zeros(40), X])
    out = distance_beside_null(dense_gram(X, list(range(0, 160, 10))), k=3)
    at = out["at_fraction"]["0.5"]
    assert at["excess"] == pytest.approx(at["overlap"] - at["null_overlap"])
    assert out["null"]["overlap"][-1] == pytest.approx(1.0)
    assert settle_fraction([0, 1, 2, 3, 4], [0.95, 0.5, 0.92, 0.97]) == pytest.approx(3 / 4)
    assert settle_fraction([0, 1, 2], [0.2, 0.5]) is None


def test_cosines_of_empty_and_bad_input():
    g = dense_gram(np.vstack([np.zeros(5), np.eye(5)[:3]]), [0, 1, 2, 3])
    assert subspace_cosines(g, np.zeros((0, 4)), np.eye(4)[:1]).size == 0
    with pytest.raises(UserError):
        distance_to_final(g, k=0)
    with pytest.raises(UserError):
        distance_to_final(g, steps=[0, 1])
