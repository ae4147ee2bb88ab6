"""Sketched (Johnson–Lindenstrauss) trajectory PCA against the exact one on a synthetic trajectory."""
import json

import numpy as np
import pytest

from conftest import run_inprocess
from trajfix import synthetic_trajectory
from training.core.errors import UserError
from training.geometry.sketch import (GEN_BLOCK, compute_sketch, jl_epsilon, measured_error, pca_bounds,
                             projection_rows)
from training.geometry.trajectory import CheckpointSet, compute_gram, pca

K = 4096


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    run, steps, Theta = synthetic_trajectory(tmp_path_factory.mktemp("sk") / "run", T=12, seed=3)
    ck = CheckpointSet(run)
    return run, ck, steps, Theta, compute_gram(ck), compute_sketch(ck, K, seed=7)


def test_sketched_gram_is_the_projection_of_the_dense_drifts(traj):
    run, ck, steps, Theta, exact, _ = traj
    X = Theta - Theta[0]
    np.testing.assert_allclose(exact.G, X @ X.T, rtol=1e-9, atol=1e-9)
    sk = compute_sketch(ck, 256, seed=7)
    # independent dense computation: the same projection rows, assembled tensor by tensor
    R = np.concatenate([projection_rows(7, n, 0, int(np.prod(ck.shapes()[n])), 256).numpy().astype(np.float64)
                        for n in ck.names()])
    np.testing.assert_allclose(sk.Y, X @ R, rtol=1e-4, atol=1e-4 * np.abs(X @ R).max())


def test_sketched_pca_within_the_reported_bound(traj):
    run, ck, steps, Theta, exact, sk = traj
    assert sk.epsilon == pytest.approx(jl_epsilon(K, 144, 0.01))
    assert 0.05 < sk.epsilon < 0.2
    d = np.sqrt(np.diag(exact.G))
    err = np.abs(sk.G - exact.G)
    assert np.all(err <= sk.epsilon * np.outer(d, d) + 1e-12)             # the entrywise JL guarantee
    for rownorm in (False, True):
        b = pca_bounds(sk, rownorm=rownorm)
        assert b["valid"]
        e = pca(exact, rownorm=rownorm)
        s = pca(sk, rownorm=rownorm)
        m = len(b["explained_variance_ratio_lo"])
        evr = e.explained_variance_ratio[:m]
        for part in (b, b["entrywise"], b["subspace"]):      # each guarantee alone, and their intersection
            assert part["valid"]
            assert np.all(np.asarray(part["explained_variance_ratio_lo"]) <= evr + 1e-12)
            assert np.all(evr <= np.asarray(part["explained_variance_ratio_hi"]) + 1e-12)
        # the bounds are informative: PC1 pinned within 1 % (row-normalised 7 %), PC2 within a small factor
        assert b["explained_variance_ratio_hi"][0] - b["explained_variance_ratio_lo"][0] < (0.07 if rownorm else 0.01)
        assert b["explained_variance_ratio_hi"][1] < (6 if rownorm else 3) * b["explained_variance_ratio_lo"][1]
        u_e = e.scores[:, 0] / e.singular_values[0]
        u_s = s.scores[:, 0] / s.singular_values[0]
        if not rownorm:      # (row-normalised: the worst-case gap condition needs a larger sketch here)
            assert b["pc1_abs_cos_min"] is not None
        if b["pc1_abs_cos_min"] is not None:
            assert abs(u_e @ u_s) >= b["pc1_abs_cos_min"]
        assert abs(s.explained_variance_ratio[0] - e.explained_variance_ratio[0]) < 0.05
    me = measured_error(sk, exact)
    assert me["max_entry_error_over_norms"] <= sk.epsilon
    assert me["max_entry_error_over_norms"] < 4 * sk.describe()["typical_entry_error"]     # the typical size
    assert me["raw"]["pc1_abs_cos"] > 0.99


def test_same_seed_same_sketch_whatever_the_chunking(traj):
    ck, k = traj[1], 256
    sk = compute_sketch(ck, k, seed=7)
    again = compute_sketch(ck, k, seed=7)
    assert np.array_equal(again.Y, sk.Y)
    small = compute_sketch(ck, k, seed=7, max_bytes=12 * 4 * 1500)      # many small row chunks
    np.testing.assert_allclose(small.Y, sk.Y, rtol=1e-6, atol=1e-6 * np.abs(sk.Y).max())
    other = compute_sketch(ck, k, seed=8)
    assert np.abs(other.Y - sk.Y).max() > 0.1 * np.abs(sk.Y).max()
    # the trunk sketch is the sum of the block sketches (the projection is keyed by tensor, not by layout)
    blocks = sum(compute_sketch(ck, k, seed=7, block=b).Y for b in range(ck.cfg.n_layer))
    np.testing.assert_allclose(blocks, sk.Y, rtol=1e-6, atol=1e-6 * np.abs(sk.Y).max())


def test_projection_rows_are_regenerable_slices():
    full = projection_rows(3, "w", 0, 3 * GEN_BLOCK, 16)
    assert np.array_equal(projection_rows(3, "w", 100, GEN_BLOCK + 50, 16).numpy(), full[100:GEN_BLOCK + 50].numpy())
    assert not np.array_equal(projection_rows(3, "v", 0, 64, 16).numpy(), full[:64].numpy())
    # N(0, 1/k) entries: E‖Rᵀu‖² = ‖u‖²
    assert full.double().pow(2).sum(1).mean().item() == pytest.approx(1.0, abs=0.02)


def test_bound_formula_and_refusals():
    # ε = 2√(s/k) + 2s/k with s = ln(2n/δ)
    s = np.log(2 * 100 / 0.05)
    assert jl_epsilon(1000, 100, 0.05) == pytest.approx(2 * np.sqrt(s / 1000) + 2 * s / 1000)
    assert jl_epsilon(4000, 100, 0.05) < jl_epsilon(1000, 100, 0.05) < jl_epsilon(1000, 10_000, 0.05)
    with pytest.raises(UserError):
        jl_epsilon(100, 10, 1.5)


def test_trajectory_pca_script_sketch_flag(traj, capsys):
    run = traj[0]
    code, out, err = run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(run),
                                   "--sketch", "1024", "--no-blocks", "--null-samples", "2")
    assert code == 0, err
    res = json.loads((run / "analysis" / "trajectory_pca_sketch.json").read_text())
    assert not (run / "analysis" / "trajectory_pca.json").exists()      # the default output is untouched
    t = res["trunk"]
    assert t["sketch"]["typical_entry_error"] == pytest.approx(np.sqrt(2 / 1024))
    assert t["sketch"]["sketch_dim"] == 1024 and t["sketch"]["epsilon"] == pytest.approx(jl_epsilon(1024, 144, 0.01))
    lo, hi = t["bounds"]["raw"]["explained_variance_ratio_lo"][0], t["bounds"]["raw"]["explained_variance_ratio_hi"][0]
    exact = pca(compute_gram(CheckpointSet(run)))
    assert lo <= exact.explained_variance_ratio[0] <= hi
    assert "measured_error" not in t                    # no exact Gram cached: nothing to compare with
    code, out, err = run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(run), "--sketch", "0")
    assert code == 2 and "sketch" in err


def test_gram_accumulation_off_the_cpu_path_matches(traj):
    """The accelerator path of compute_gram (float64 on the device, big column blocks), run here on the CPU."""
    from training.core.devices import resolve_device
    from training.geometry.trajectory import _elems, _gram_on_device, prefetch
    import torch
    run, ck, steps, Theta, exact, _ = traj
    T = len(ck.steps)
    from training.geometry.trajectory import Gram
    G = _gram_on_device(prefetch(ck.read_rows(ck.steps, None, _elems(1 << 16, T))), T, 0, torch.device("cpu"))
    g = Gram(list(ck.steps), ck.steps[0], None, exact.dim, G).split_origin(0)   # the raw anchor row: the origin
    np.testing.assert_allclose(g.G, exact.G, rtol=1e-12, atol=1e-12 * np.abs(exact.G).max())
    np.testing.assert_allclose(g.origin, exact.origin, rtol=1e-12, atol=1e-12 * np.abs(exact.origin).max())
    assert g.origin_sq == pytest.approx(exact.origin_sq, rel=1e-12)
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(UserError, match="no CUDA device"):
            compute_gram(ck, device="cuda")
    else:      # on a GPU machine: the real device path against the CPU result
        np.testing.assert_allclose(compute_gram(ck, device="cuda").G, exact.G, rtol=1e-10)
