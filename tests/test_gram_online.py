"""The Gram cache written while training (gram_online): equal to the streamed Gram and to dense numpy, read by the
analyses without a computation, correct after a SIGKILL and resume, off for bf16 checkpoints."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, run_pilot
from training.core import gramcache, runio
from training.core.config import preset
from training.core.model import trunk_names
from training.geometry import trajectory
from training.geometry.trajectory import CheckpointSet, cached_gram, compute_gram

CFG = preset("test")


def no_compute(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the Gram was computed instead of read from the online cache")
    monkeypatch.setattr(trajectory, "compute_gram", refuse)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def assert_cache_is_the_gram(run, dense=None):
    """Every cache (trunk, blocks) equals compute_gram of the run's files (and the dense numpy Gram, if given)."""
    ck = CheckpointSet(run)
    for block in [None, *range(ck.cfg.n_layer)]:
        keys = [gramcache.run_key(run, s) for s in ck.steps]
        hit = gramcache.read_gram_cache(run / "analysis" / "gram" / f"{gramcache.cache_name(block)}.npz", keys)
        assert hit is not None, f"the online cache of block {block} does not cover the run's checkpoints"
        G, dim, origin, origin_sq = hit
        g = compute_gram(ck, block=block)
        assert dim == g.dim
        close(G, g.G)
        close(origin, g.origin)
        assert abs(origin_sq / g.origin_sq - 1) < 1e-12
        if dense is not None and block is None:
            X = dense - dense[0]
            close(G, X @ X.T)
            close(origin, X @ dense[0])


def trunk_states(T, seed=0, scale=0.05):
    """T random trunks (a drift plus noise), as state dicts of the trunk tensors, and their dense matrix."""
    g = torch.Generator().manual_seed(seed)
    from training.core.model import GPT
    base = GPT(CFG, 64).state_dict()
    names = trunk_names(CFG)
    d = {n: torch.randn(base[n].shape, generator=g) for n in names}
    out = []
    for i in range(T):
        out.append({n: (base[n] + scale * i * d[n] + 0.01 * torch.randn(base[n].shape, generator=g)).contiguous()
                    for n in names})
    dense = np.stack([np.concatenate([sd[n].numpy().astype(np.float64).ravel() for n in names]) for sd in out])
    return out, dense


def new_run(path, cfg=CFG):
    path.mkdir(parents=True)
    runio.atomic_write_json(path / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.hash()})
    return path


def write(run, step, sd, online, shards=False):
    runio.write_checkpoint(run, step, sd, "h", contents="trunk", shards=shards)
    online.update(step, sd)


@pytest.mark.parametrize("mem_bytes, shards", [(1 << 30, False), (0, False), (1 << 30, True)])
def test_online_cache_is_the_streamed_gram(tmp_path, mem_bytes, shards):
    """All rows in memory, none but the anchor (re-read from the files), sharded checkpoints: the same Gram."""
    run = new_run(tmp_path / "run")
    states, dense = trunk_states(6)
    online = gramcache.OnlineGram(run, CFG, mem_bytes, log=lambda m: None)
    for i, sd in enumerate(states):
        write(run, 5 * i, sd, online, shards)
    # memory holds at most the run's checkpoint count (5 for the test preset), the anchor always
    assert len(online.slot_of) == (1 if mem_bytes == 0 else 5) and online.slot_of[0] == 0
    assert_cache_is_the_gram(run, dense)


def test_redirected_analyses_read_the_runs_online_cache(tmp_path, monkeypatch):
    """An analysis sent elsewhere (--out-dir) still finds the cache that training wrote into the run."""
    run = new_run(tmp_path / "run")
    states, _ = trunk_states(3)
    online = gramcache.OnlineGram(run, CFG, 1 << 30, log=lambda m: None)
    for i, sd in enumerate(states):
        write(run, 5 * i, sd, online)
    monkeypatch.setattr(runio, "_ANALYSIS_DIRS", {})
    runio.redirect_analysis(run, tmp_path / "elsewhere")
    assert cached_gram(CheckpointSet(run), 1, compute=False) is not None
    no_compute(monkeypatch)
    assert cached_gram(CheckpointSet(run)).steps == [0, 5, 10]


def test_resume_drops_rows_of_rewritten_checkpoints(tmp_path):
    """A first life writes 0..15 (15 with other weights than the second life's), the run resumes at 10: the rows
    of 15 from the first life must not survive; the cache is that of the final files."""
    run = new_run(tmp_path / "run")
    states, _ = trunk_states(5, seed=1)
    other, _ = trunk_states(5, seed=2)
    first = gramcache.OnlineGram(run, CFG, 1 << 30, log=lambda m: None)
    for i in range(4):
        write(run, 5 * i, states[i] if i < 3 else other[i], first)
    logs = []
    second = gramcache.OnlineGram(run, CFG, 1 << 30, log=logs.append)
    second.resume(10)
    assert second.steps == [0, 5, 10] and any("resumed" in m for m in logs)
    time.sleep(0.01)                                  # a distinct mtime for the rewritten file
    write(run, 15, states[3], second)
    write(run, 20, states[4], second)
    assert_cache_is_the_gram(run, np.stack([np.concatenate([sd[n].numpy().astype(np.float64).ravel()
                                                            for n in trunk_names(CFG)]) for sd in states]))


def test_a_failed_update_leaves_no_cache_that_covers_the_run(tmp_path, monkeypatch):
    run = new_run(tmp_path / "run")
    states, _ = trunk_states(3)
    logs = []
    online = gramcache.OnlineGram(run, CFG, 0, log=logs.append)
    write(run, 0, states[0], online)
    write(run, 5, states[1], online)
    monkeypatch.setattr(gramcache, "read_trunk", lambda *a: (_ for _ in ()).throw(OSError("disk gone")))
    write(run, 10, states[2], online)                 # needs the row of step 5 from its file
    assert online.disabled and any("off from step 10" in m for m in logs)
    assert cached_gram(CheckpointSet(run), compute=False) is None     # the analyses compute instead


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_sigkill_then_resume_keeps_the_cache_exact(tmp_path, cache, monkeypatch):
    """Training with gram_online, killed after its third checkpoint and resumed: the cache is the Gram of the
    final files, and the analyses read it (trunk and blocks) without computing."""
    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--no-progress", "--preset", "test",
           "--out-dir", str(run), "--set", f"cache_dir={cache}", "--set", "gram_online=true"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(runio.list_checkpoints(run)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run / "status.json").read_text())["state"] == "running"
    p = run_pilot("--resume", "--out-dir", str(run), cache=cache)
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert runio.list_checkpoints(run) == [0, 5, 10, 15, 20]
    assert "gram_online: keeping up to 5 checkpoint(s)" in p.stdout
    assert_cache_is_the_gram(run)
    no_compute(monkeypatch)
    ck = CheckpointSet(run)
    for block in [None, 0, 1]:
        assert cached_gram(ck, block).steps == ck.steps


def test_bf16_checkpoints_skip_the_online_gram(tmp_path):
    run = new_run(tmp_path / "bf16")
    logs = []
    online = gramcache.OnlineGram(run, CFG.replace(ckpt_dtype="bf16"), 1 << 30, log=logs.append)
    assert logs == ["off: checkpoints are stored in bf16 (ckpt_dtype), which the drift analyses refuse; the analyses "
                    "compute the Gram from the checkpoints"]
    states, _ = trunk_states(2)
    assert not online.update(0, states[0])
    assert not (run / "analysis" / "gram").exists()


def test_memory_budget_must_not_be_negative():
    from training.core.errors import UserError
    with pytest.raises(UserError, match="gram_online_mem_mb must be >= 0"):
        CFG.replace(gram_online_mem_mb=-1).check_fields()
