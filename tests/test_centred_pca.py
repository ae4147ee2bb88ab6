"""Remark 1's centred PCA (training/geometry/trajectory.centred_pca) against dense numpy."""
from __future__ import annotations

import numpy as np
import pytest

from training.core.errors import UserError
from training.geometry.trajectory import Gram, centred_pca


def test_centred_spectrum_equals_numpy():
    rng = np.random.default_rng(0)
    T, D = 12, 300
    inc = 0.3 * rng.standard_normal((T - 1, D))
    inc[:, 0] += 1.0                                     # a monotonic drift that centring mostly removes
    X = np.vstack([np.zeros(D), inc.cumsum(0)])
    steps = list(range(0, 10 * T, 10))
    g = Gram(steps, 0, None, D, X @ X.T)
    got = centred_pca(g)
    rows = X[1:]
    c = rows - rows.mean(0)
    s = np.linalg.svd(c, compute_uv=False) ** 2
    np.testing.assert_allclose(got["explained_variance_ratio"][:len(s)], s / s.sum(), atol=1e-12)
    assert got["mean_drift_share"] == pytest.approx(len(rows) * (rows.mean(0) ** 2).sum() / (rows ** 2).sum(), rel=1e-10)
    v_c = np.linalg.svd(c, full_matrices=False)[2][0]
    v_u = np.linalg.svd(rows, full_matrices=False)[2][0]
    assert got["abs_cos_pc1_uncentred"] == pytest.approx(abs(v_c @ v_u), abs=1e-9)
    assert got["mean_drift_share"] > 0.5                # most of a drifting trajectory is its mean


def test_a_single_row_is_refused():
    g = Gram([0, 10], 0, None, 3, np.array([[0.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(UserError, match="at least two"):
        centred_pca(g)
