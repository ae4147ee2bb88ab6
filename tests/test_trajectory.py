"""The geometry library against dense numpy on small synthetic trajectories with known structure."""
import numpy as np
import pytest

from trajfix import synthetic_trajectory
from training.core.config import preset
from training.core.model import trunk_size
from training.geometry.trajectory import (CheckpointSet, compute_gram, cached_gram, decomposition, increment_norms, k_at,
                                 pca, random_walk_null, rolling_pc1, select_steps, sign_flip_step, update_alignment)


@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    run, steps, Theta = synthetic_trajectory(tmp_path_factory.mktemp("traj") / "run")
    return CheckpointSet(run), steps, Theta


def dense_pca(X):
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    return S, (S ** 2) / np.sum(S ** 2), Vt


def assert_same_directions(V_lib, Vt_dense, k):
    for j in range(k):
        a, b = V_lib[:, j], Vt_dense[j]
        s = np.sign(a @ b)
        np.testing.assert_allclose(s * a, b, rtol=0, atol=1e-8 * np.abs(b).max())


def test_trunk_pca_matches_dense_svd(traj):
    ck, steps, Theta = traj
    X = Theta[1:] - Theta[0]
    g = compute_gram(ck)
    p = pca(g, k=5)
    S, evr, Vt = dense_pca(X)
    np.testing.assert_allclose(p.singular_values[:len(S)], S, rtol=1e-8)
    np.testing.assert_allclose(p.explained_variance_ratio[:len(S)], evr, rtol=1e-8, atol=1e-15)
    assert p.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    assert p.k95 == k_at(evr, 0.95) and p.k99 == k_at(evr, 0.99)
    V = ck.materialise(g, p.coeffs.T)
    assert V.shape == (trunk_size(preset("test")), 5)
    assert_same_directions(V, Vt, 5)
    # the sign convention: a(t_last) > 0
    assert X[-1] @ V[:, 0] > 0
    # the strong common direction dominates, as built
    assert p.explained_variance_ratio[0] > 0.5


def test_rownorm_reference_window_and_stride(traj):
    ck, steps, Theta = traj
    g = compute_gram(ck)
    window = select_steps(steps, stride=20, start=20, end=100)
    assert window == [20, 40, 60, 80, 100]
    p = pca(g, window, ref=20, rownorm=True, k=3)
    X = Theta[[steps.index(s) for s in window[1:]]] - Theta[steps.index(20)]
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S, evr, Vt = dense_pca(Xn)
    np.testing.assert_allclose(p.singular_values[:len(S)], S, rtol=1e-8)
    np.testing.assert_allclose(p.explained_variance_ratio[:len(S)], evr, rtol=1e-8, atol=1e-15)
    assert_same_directions(ck.materialise(g, p.coeffs.T), Vt, 3)
    assert p.steps == [40, 60, 80, 100] and p.reference_step == 20


def test_result_is_independent_of_chunk_size(traj):
    ck, _, _ = traj
    big = compute_gram(ck, max_bytes=1 << 30)
    small = compute_gram(ck, max_bytes=4096)        # many tiny row chunks
    np.testing.assert_allclose(small.G, big.G, rtol=1e-12, atol=1e-12 * np.abs(big.G).max())
    assert len(ck.chunks(None, 1024)) > len(ck.chunks(None, 1 << 20))


def test_per_block_gram_is_the_block_columns(traj):
    ck, _, Theta = traj
    per = trunk_size(preset("test"), 0)
    for b in range(2):
        g = compute_gram(ck, block=b)
        X = Theta[:, b * per:(b + 1) * per] - Theta[0, b * per:(b + 1) * per]
        np.testing.assert_allclose(g.G, X @ X.T, rtol=1e-10, atol=1e-12)
        assert g.dim == per


def test_decomposition_and_update_alignment_match_dense(traj):
    ck, steps, Theta = traj
    g = compute_gram(ck)
    p = pca(g, k=1)
    v = ck.materialise(g, p.coeffs[0])
    d = decomposition(g, p.coeffs[0])
    X = Theta - Theta[0]
    a = X @ v
    np.testing.assert_allclose(d["a"], a, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(d["residual_norm"], np.linalg.norm(X - np.outer(a, v), axis=1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d["backbone_fraction"][1:], a[1:] ** 2 / np.sum(X[1:] ** 2, axis=1), rtol=1e-8)
    u = update_alignment(g, p.coeffs[0])
    D = np.diff(Theta, axis=0)
    cos = D @ v / np.linalg.norm(D, axis=1)
    np.testing.assert_allclose(u["signed_cos"], cos, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(u["abs_cos"], np.abs(cos), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(increment_norms(g), np.linalg.norm(D, axis=1), rtol=1e-8)


def test_rolling_window_pc1_matches_dense(traj):
    ck, steps, Theta = traj
    g = compute_gram(ck)
    glob = pca(g, k=1)
    vg = ck.materialise(g, glob.coeffs[0])
    r = rolling_pc1(g, width=4, global_coeffs=glob.coeffs[0])
    dense_v = []
    for i in range(len(steps) - 3):
        X = Theta[i + 1:i + 4] - Theta[i]
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        dense_v.append(np.linalg.svd(X, full_matrices=False)[2][0])
    np.testing.assert_allclose(r["global_abs_cos"], [abs(v @ vg) for v in dense_v], rtol=1e-7)
    np.testing.assert_allclose(r["adjacent_abs_cos"], [abs(dense_v[i] @ dense_v[i + 1]) for i in range(len(dense_v) - 1)],
                               rtol=1e-7)


def test_sign_flip_step():
    assert sign_flip_step([1, 2, 3, 4, 5], [0.3, 0.1, -0.1, 0.2, -0.3]) == 5
    assert sign_flip_step([1, 2, 3], [0.3, -0.1, -0.2]) == 2
    assert sign_flip_step([1, 2, 3], [0.3, 0.1, 0.2]) is None


def test_random_walk_null_matches_explicit_simulation():
    rng = np.random.default_rng(1)
    norms = rng.uniform(0.5, 2.0, size=8)
    D = 40
    pc1 = []
    for _ in range(400):
        U = rng.standard_normal((8, D))
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        X = np.cumsum(norms[:, None] * U, axis=0)
        S = np.linalg.svd(X, compute_uv=False)
        pc1.append(S[0] ** 2 / np.sum(S ** 2))
    null = random_walk_null(norms, D, n_samples=400, seed=3)
    assert null["pc1"] == pytest.approx(np.mean(pc1), abs=0.02)
    # known answer: an equal-step random walk in very high dimension tends to Brownian motion, whose
    # uncentered Karhunen-Loeve spectrum is proportional to 1/(k - 1/2)^2: PC1 = 8/pi^2 = 0.81
    high = random_walk_null(np.ones(50), 25_000_000, n_samples=40, seed=0)
    assert high["pc1"] == pytest.approx(8 / np.pi ** 2, abs=0.03)
    assert high["k95"] >= 3


def test_gram_cache_is_reused_and_invalidated(traj, tmp_path):
    ck, steps, _ = traj
    g1 = cached_gram(ck)
    path = ck.run_dir / "analysis" / "gram" / "trunk.npz"
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    g2 = cached_gram(ck)
    assert path.stat().st_mtime_ns == mtime and np.array_equal(g1.G, g2.G)


def test_gram_cache_of_more_checkpoints_serves_a_subset_exactly(traj, tmp_path):
    import os
    import shutil
    ck, steps, Theta = traj
    cached_gram(ck)                                    # cache over every checkpoint
    sub = tmp_path / "sub"
    shutil.copytree(ck.run_dir, sub)                   # copy2: same mtimes, same contents, the cache with them
    for s in steps[-3:]:
        (sub / "checkpoints" / f"step_{s:06d}.safetensors").unlink()
    g = cached_gram(CheckpointSet(sub), compute=False)
    assert g is not None and g.steps == steps[:-3]
    X = Theta[:-3] - Theta[0]
    np.testing.assert_allclose(g.G, X @ X.T, rtol=1e-10, atol=1e-12 * np.abs(X @ X.T).max())
    # a checkpoint replaced by other weights of the same size and mtime is not served from the cache
    p = sub / "checkpoints" / f"step_{steps[2]:06d}.safetensors"
    other = sub / "checkpoints" / f"step_{steps[1]:06d}.safetensors"
    st = p.stat()
    p.write_bytes(other.read_bytes())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size
    assert cached_gram(CheckpointSet(sub), compute=False) is None


def test_missing_or_corrupt_checkpoints_are_reported(traj, tmp_path):
    from training.core.errors import UserError
    with pytest.raises(UserError, match="does not exist"):
        CheckpointSet(tmp_path / "nope")
    ck, steps, _ = traj
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(ck.run_dir, bad)
    p = bad / "checkpoints" / f"step_{steps[3]:06d}.safetensors"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(UserError, match="corrupt or truncated"):
        compute_gram(CheckpointSet(bad))


def test_gram_of_many_checkpoints_matches_dense_and_is_symmetric(tmp_path):
    # T >= 16: the Gram is accumulated strip by strip over its upper triangle and mirrored
    run, steps, Theta = synthetic_trajectory(tmp_path / "run", T=21, seed=1)
    ck = CheckpointSet(run)
    for anchor in (steps[0], steps[13]):
        g = compute_gram(ck, anchor=anchor, max_bytes=1 << 16)
        X = Theta - Theta[steps.index(anchor)]
        np.testing.assert_allclose(g.G, X @ X.T, rtol=1e-10, atol=1e-12 * np.abs(X @ X.T).max())
        assert np.array_equal(g.G, g.G.T)


def test_checkpoint_cut_inside_its_data_is_reported(traj, tmp_path):
    from training.core.errors import UserError
    import shutil
    ck, steps, _ = traj
    bad = tmp_path / "cut"
    shutil.copytree(ck.run_dir, bad)
    p = bad / "checkpoints" / f"step_{steps[5]:06d}.safetensors"
    p.write_bytes(p.read_bytes()[:-4096])          # header intact, the last tensor's data missing
    with pytest.raises(UserError, match="corrupt or truncated") as e:
        compute_gram(CheckpointSet(bad))
    assert str(steps[5]) in str(e.value)


def test_streamed_gram_carries_the_origin_row_exactly(traj, tmp_path):
    # the anchor row kept raw in the product gives <θ(anchor), x(s)> and ‖θ(anchor)‖², and leaves G as before
    run, steps, Theta = synthetic_trajectory(tmp_path / "run", T=21, seed=2)
    ck = CheckpointSet(run)
    for anchor in (steps[0], steps[13]):
        a = steps.index(anchor)
        g = compute_gram(ck, anchor=anchor, max_bytes=1 << 16)
        X = Theta - Theta[a]
        np.testing.assert_allclose(g.G, X @ X.T, rtol=1e-10, atol=1e-12 * np.abs(X @ X.T).max())
        assert np.all(g.G[a] == 0) and np.all(g.G[:, a] == 0)
        assert g.has_origin() and g.origin[a] == 0
        np.testing.assert_allclose(g.origin, X @ Theta[a], rtol=1e-9, atol=1e-9 * np.abs(X @ Theta[a]).max())
        assert g.origin_sq == pytest.approx(float(Theta[a] @ Theta[a]), rel=1e-10)
    # re-anchored at another checkpoint: the drifts' inner products with θ(ref), and ‖θ(ref)‖²
    g = compute_gram(ck)
    ref, window = steps[5], steps[5:12]
    A = g.drift_coeffs(window, ref)
    o, sq = g.reanchored_origin(A, ref)
    Xr = Theta[5:12] - Theta[5]
    np.testing.assert_allclose(o, Xr @ Theta[5], rtol=1e-9, atol=1e-9 * np.abs(Xr @ Theta[5]).max())
    assert sq == pytest.approx(float(Theta[5] @ Theta[5]), rel=1e-10)
    # the restricted Gram keeps its origin entries; the cache stores and serves them
    r = g.restrict(steps[:8])
    np.testing.assert_array_equal(r.origin, g.origin[:8])
    c1 = cached_gram(ck)
    c2 = cached_gram(ck, compute=False)
    np.testing.assert_array_equal(c1.origin, c2.origin)
    assert c1.origin_sq == c2.origin_sq
