"""Subspace suppression (training/core/control.py): the projection against dense numpy on a planted direction,
the online estimate against a dense SVD and against separately back-propagated loss parts, end-to-end training
with a given basis (the trunk drift stays orthogonal to it), bitwise kill-and-resume, and bad input."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_pilot
from training.core import control, runio
from training.core.config import preset
from training.core.errors import UserError
from training.core.losses import composite_loss
from training.core.model import GPT, trunk_parameters, trunk_size
from training.core.trainer import forward_backward


def _tiny(**changes):
    cfg = preset("test").replace(**changes)
    torch.manual_seed(0)
    model = GPT(cfg, 50)
    return cfg, model


def _batch(cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (4, cfg.seq_len), generator=g)
    y = torch.randint(0, 50, (4, cfg.seq_len), generator=g)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[:, -3:] = True                      # a few probe targets per row
    from training.core.batch import Batch
    return Batch(x, y, mask)


def _flat(model, grad=False):
    return torch.cat([(p.grad if grad else p.detach()).reshape(-1) for _, p in trunk_parameters(model)]).double().numpy()


@pytest.mark.parametrize("lam_c", [1.0, 0.5])
def test_projection_of_a_planted_basis_matches_dense_numpy(lam_c):
    cfg, model = _tiny(suppress_strength=lam_c, optimizer="sgd", wd=0.0)
    D = trunk_size(cfg)
    rng = np.random.default_rng(3)
    B = rng.normal(size=(2, D))
    trunk = [p for _, p in trunk_parameters(model)]
    params = [p for p in model.parameters()]
    b = _batch(cfg)
    # the unsuppressed gradient (no clipping), then the suppressed one
    forward_backward(model, torch.optim.SGD(params, lr=0.1), lambda m: b, 1, 1.0, 0.0, params, _null)
    g = _flat(model, grad=True)
    sup = control.Suppressor(cfg, trunk)
    sup._set_basis(control.orthonormal_basis(B))
    before = _flat(model)
    opt = torch.optim.SGD(params, lr=0.1)
    forward_backward(model, opt, lambda m: b, 1, 1.0, 0.0, params, _null, sup.project)
    opt.step()
    delta = _flat(model) - before
    Q, _ = np.linalg.qr(B.T)                              # independent: numpy's own QR of the planted rows
    expected = -0.1 * (g - lam_c * Q @ (Q.T @ g))
    # float32 weights: θ + Δθ − θ is exact to the rounding of θ (≈ 6e-8 · |θ|)
    assert np.allclose(delta, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    cos = (B @ delta) / (np.linalg.norm(B, axis=1) * np.linalg.norm(delta))
    cos_g = (B @ g) / (np.linalg.norm(B, axis=1) * np.linalg.norm(g))
    if lam_c == 1.0:
        assert np.abs(cos).max() < 1e-5 < np.abs(cos_g).max() * 1e-2    # removed exactly, and it was there
    else:                                                 # half of the component along S is left
        assert np.allclose(Q.T @ delta, -0.1 * 0.5 * (Q.T @ g), rtol=1e-3)
    rec = sup.record()
    assert rec["suppress_rank"] == 2
    assert rec["suppress_removed"] == pytest.approx(lam_c ** 2 * np.sum((Q.T @ g) ** 2) / np.sum(g ** 2), rel=1e-4)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_top_directions_against_dense_svd():
    rng = np.random.default_rng(0)
    D, m, k = 300, 12, 3
    planted = np.linalg.qr(rng.normal(size=(D, 3)))[0]
    buf = (rng.normal(size=(m, 3)) * [10.0, 5.0, 2.0]) @ planted.T + 0.05 * rng.normal(size=(m, D))
    Q = control.top_directions(buf, k)
    Vt = np.linalg.svd(buf, full_matrices=False)[2][:k]
    assert np.allclose(Q.T @ Q, np.eye(k), atol=1e-12)
    assert np.allclose(Q @ Q.T, Vt.T @ Vt, atol=1e-9)                      # the same subspace
    assert np.allclose(np.abs(np.sum(Q * Vt.T, axis=0)), 1.0, atol=1e-9)  # and the same vectors, up to sign
    # fewer buffered directions than k: the basis has the buffer's rank
    assert control.top_directions(buf[:2], k).shape == (D, 2)


def test_refresh_direction_is_the_difference_of_the_parts_gradients():
    cfg, model = _tiny(suppress_strength=1.0, suppress_k=1, suppress_buffer=4)
    trunk = [p for _, p in trunk_parameters(model)]
    sup = control.Suppressor(cfg, trunk)
    b = _batch(cfg)
    sup.refresh(model, b, 2.0, _null)
    grads = []
    for part in ("lm", "probe"):          # independent: each part back-propagated on its own
        model.zero_grad()
        getattr(composite_loss(model(b.x), b.y, b.probe_mask, 2.0), part).backward()
        grads.append(_flat(model, grad=True))
    d = grads[1] - grads[0]
    d /= np.linalg.norm(d)
    assert np.allclose(sup.buffer.numpy()[0], d, atol=1e-6)
    assert np.allclose(np.abs(sup.basis.numpy()[:, 0] @ d), 1.0, atol=1e-5)
    # a batch without probe targets adds nothing (and is counted)
    sup.refresh(model, type(b)(b.x, b.y, torch.zeros_like(b.probe_mask)), 2.0, _null)
    assert sup.buffer.shape[0] == 1 and (sup.refreshes, sup.skipped) == (2, 1)


def test_basis_file_checks(tmp_path):
    D = 10
    np.save(tmp_path / "ok.npy", np.eye(D)[:2])
    assert control.read_basis_file(tmp_path / "ok.npy", D).shape == (D, 2)
    bad = {"empty": np.zeros((0, D)), "shape": np.ones((2, D + 1)), "dep": np.stack([np.ones(D), 2 * np.ones(D)]),
           "nan": np.full((1, D), np.nan), "zero": np.zeros((1, D))}
    msgs = {"empty": "is empty", "shape": "expected k × 10", "dep": "linearly dependent", "nan": "non-finite",
            "zero": "is zero"}
    for name, arr in bad.items():
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(UserError, match=msgs[name]):
            control.read_basis_file(tmp_path / f"{name}.npy", D)
    with pytest.raises(UserError, match="does not exist"):
        control.read_basis_file(tmp_path / "missing.npy", D)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_given_basis_keeps_the_sgd_trunk_drift_orthogonal(tmp_path, cache):
    """End to end: plain SGD without decay, λ_c = 1 on a planted 2-D basis -> θ(t) − θ(0) ⟂ the basis at every
    checkpoint, while the embeddings (outside the trunk) still move."""
    cfg = preset("test")
    D = trunk_size(cfg)
    B = np.random.default_rng(5).normal(size=(2, D)).astype(np.float32)
    np.save(tmp_path / "basis.npy", B)
    run = tmp_path / "run"
    run_pilot("--preset", "test", "--out-dir", str(run), "--optimizer", "sgd", "--wd", "0", "--lr", "0.3",
              "--suppress-strength", "1", "--suppress-basis", str(tmp_path / "basis.npy"), cache=cache)
    from training.core.model import trunk_names
    names = trunk_names(cfg)
    t0, _ = runio.load_checkpoint(runio.checkpoint_path(run, 0))
    tT, _ = runio.load_checkpoint(runio.checkpoint_path(run, 20))
    flat = lambda t: np.concatenate([t[n].double().reshape(-1).numpy() for n in names])  # noqa: E731
    drift = flat(tT) - flat(t0)
    cos = (B @ drift) / (np.linalg.norm(B, axis=1) * np.linalg.norm(drift))
    assert np.linalg.norm(drift) > 0 and np.abs(cos).max() < 1e-5
    assert not torch.equal(t0["tok_emb.weight"], tT["tok_emb.weight"])
    rec = runio.read_metrics(run)[-1]
    assert rec["suppress_rank"] == 2 and 0 < rec["suppress_removed"] < 1
    assert json.loads((run / "config.json").read_text())["config"]["suppress_strength"] == 1.0


def _ckpt_bytes(run):
    return {s: runio.checkpoint_path(run, s).read_bytes() for s in runio.list_checkpoints(run)}


def test_estimated_suppression_resumes_bitwise(tmp_path, cache):
    flags = ["--preset", "test", "--suppress-strength", "1", "--suppress-every", "3", "--suppress-k", "2",
             "--set", "suppress_buffer=4"]
    ref = tmp_path / "ref"
    run_pilot(*flags, "--out-dir", str(ref), cache=cache)
    st = runio.load_state(ref)["suppression"]
    assert st["buffer"].shape[0] == 4 and st["basis"].shape == (trunk_size(preset("test")), 2)
    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--no-progress", *flags, "--out-dir", str(run),
           "--set", f"cache_dir={cache}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(runio.list_checkpoints(run)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    run_pilot("--resume", "--out-dir", str(run), cache=cache)
    a, b = _ckpt_bytes(ref), _ckpt_bytes(run)
    assert sorted(a) == sorted(b) and all(a[s] == b[s] for s in a)
    for x, y in zip(runio.read_metrics(ref), runio.read_metrics(run)):
        x.pop("elapsed_s"), y.pop("elapsed_s")
        assert x == y


@pytest.mark.parametrize("args, message", [
    (["--suppress-strength", "1", "--suppress-k", "0"], "suppress_k must be at least 1 (an empty subspace"),
    (["--suppress-strength", "1.5"], "suppress_strength must be in [0, 1]"),
    (["--suppress-basis", "BASIS"], "suppress_strength is 0"),
    (["--suppress-strength", "1", "--suppress-basis", "BASIS"], "has shape (3, 7); expected k ×"),
    (["--suppress-strength", "1", "--suppress-basis", "EMPTY"], "is empty"),
])
def test_bad_suppression_input_is_one_error_line(tmp_path, cache, args, message):
    np.save(tmp_path / "b.npy", np.ones((3, 7)))
    np.save(tmp_path / "e.npy", np.zeros((0, trunk_size(preset("test")))))
    args = [str(tmp_path / "b.npy") if a == "BASIS" else str(tmp_path / "e.npy") if a == "EMPTY" else a for a in args]
    run = tmp_path / "run"
    p = run_pilot("--preset", "test", "--out-dir", str(run), *args, cache=cache, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error:") and message in p.stderr and p.stderr.count("\n") == 1
    assert not run.exists()                 # nothing left behind
