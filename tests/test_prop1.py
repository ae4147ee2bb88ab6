"""Prop. 1 / eq. 18 statistics of mini-batch gradients (training/geometry/gradients.py) on planted gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from training.geometry.gradients import coordinate_snr, effective_dimension, energy_split


def test_energy_split_equals_dense_numpy():
    rng = np.random.default_rng(0)
    G = rng.standard_normal((6, 50))
    v = rng.standard_normal(50)
    u = v / np.linalg.norm(v)
    e = energy_split(torch.tensor(G), v)
    cos2 = (G @ u) ** 2 / (G ** 2).sum(1)
    assert e["parallel"] == pytest.approx(cos2.mean(), rel=1e-12)
    assert e["parallel"] + e["perpendicular"] == pytest.approx(1.0)
    assert e["parallel_of_total"] == pytest.approx(((G @ u) ** 2).sum() / (G ** 2).sum(), rel=1e-12)


def test_effective_dimension_closed_forms():
    D = 40
    same = torch.tensor(np.tile(np.arange(1.0, D + 1), (5, 1)))        # five copies of one gradient
    d = effective_dimension(same, np.arange(1.0, D + 1))
    assert d["participation_ratio"] == pytest.approx(1.0) and d["from_alignment"] == pytest.approx(1.0)
    eye = torch.eye(D)[:8] * 3.0                                       # eight orthogonal gradients of equal norm
    d = effective_dimension(eye, np.ones(D))
    assert d["participation_ratio"] == pytest.approx(8.0) and d["bound"] == 8
    assert d["from_alignment"] == pytest.approx(D)                     # cos² = 1/D for each
    # isotropic gradients in D dimensions: E cos² = 1/D, so 1/mean cos² ≈ D
    rng = np.random.default_rng(1)
    G = torch.tensor(rng.standard_normal((4000, D)))
    assert effective_dimension(G, rng.standard_normal(D))["from_alignment"] == pytest.approx(D, rel=0.05)


def test_snr_recovers_a_planted_mean_and_the_noise_null():
    rng = np.random.default_rng(2)
    M, D = 400, 1000
    mu = np.zeros(D)
    mu[:100] = 2.0                                                     # SNR 2 on the first 100 coordinates
    G = torch.tensor(mu + rng.standard_normal((M, D)))
    v = np.zeros(D)
    v[:100] = 1.0                                                      # the direction that carries the signal
    s = coordinate_snr(G, v, beta1=0.9)
    assert s["momentum_factor"] == pytest.approx(math.sqrt(19))
    assert s["share_above_1"] == pytest.approx(0.1, abs=0.01)
    mean_snr = 0.1 * 2.0 + 0.9 * np.sqrt(2 / np.pi / M)                # |mean| of noise ≈ sqrt(2/(πM))
    assert s["backbone_weighted"] == pytest.approx(2.0 / mean_snr, rel=0.05)
    # pure noise: the median SNR is that of |t_{M-1}|/√M
    M = 8
    noise = coordinate_snr(torch.tensor(rng.standard_normal((M, 200_000))), np.ones(200_000), beta1=0.9)
    assert noise["null_median"] == pytest.approx(stats.t.ppf(0.75, M - 1) / math.sqrt(M))
    assert noise["median"] == pytest.approx(noise["null_median"], rel=0.02)
    assert noise["backbone_weighted"] == pytest.approx(1.0, abs=1e-9)  # uniform weights: the mean itself
    assert coordinate_snr(torch.ones(1, 5), np.ones(5), 0.9)["median"] is None
