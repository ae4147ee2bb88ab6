"""ECD's per-step diagnostics as a training run logs them (metrics.jsonl: ecd_drift_length, ecd_grad_part_length,
ecd_step_length, ecd_turn_angle as means over the updates since the previous evaluation, and the counters
ecd_steps, ecd_skipped_total, ecd_updates_total), recomputed independently from the run's files: a checkpoint
and ECD's saved velocity after every update.

The recomputation uses only what an update leaves behind: a skipped minibatch (loss ≤ F0) leaves θ bitwise
unchanged; an update moves θ by lr_s·p_kicked (lr_s = Δt̂/√η) with p_kicked the velocity it saves (ν = 0), and
started from the previous update's saved velocity rescaled to unit speed. F0 is set inside the range of the
run's training losses so that some minibatches are skipped."""
import math

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.core import runio
from training.core.model import GPT
from training.core.optim import param_groups

LR, ETA, STEPS, EVERY = 0.3, 25.0, 12, 4
ARGS = ("--preset", "test", "--optimizer", "ecd", "--lr", str(LR), "--steps", str(STEPS), "--eval-every", str(EVERY),
        "--ckpt-every", "1", "--set", "ecd_F0=12.5", "--set", f"ecd_eta={ETA:g}", "--set", "ecd_nu=0",
        "--set", "grad_clip=0", "--set", "warmup=0", "--set", "lr_floor=1", "--set", "keep_optimizer_states=true")


def flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().double().reshape(-1).numpy() for t in tensors])


def angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.acos(max(-1.0, min(1.0, float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))))


def train(tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    code, _, err = run_inprocess(capsys, "training/pilot.py", *ARGS, "--out-dir", str(run), "--set", f"cache_dir={cache_dir}")
    assert code == 0, err
    return run


def load_trajectory(run):
    """θ(s) and ECD's saved velocity at every step, flattened in the optimizer's parameter order."""
    cfg = runio.read_run_config(run)
    with torch.device("meta"):
        model = GPT(cfg, 8)
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in param_groups(model, cfg.wd) for p in g["params"]]
    theta, vel = [], []
    for s in range(STEPS + 1):
        ckpt = runio.load_checkpoint(runio.checkpoint_path(run, s))[0]
        assert sorted(ckpt) == sorted(order)
        theta.append(flat([ckpt[k] for k in order]))
        st = torch.load(runio.optimizer_state_path(run, s), map_location="cpu", weights_only=True)["optimizer"]["state"]
        vel.append(flat([st[i]["velocity"] for i in sorted(st)]) if st else None)
    return theta, vel


def test_logged_diagnostics_equal_a_recomputation_from_the_run_files(tmp_path, cache_dir, capsys):
    ecd_run = train(tmp_path, cache_dir, capsys)
    theta, vel = load_trajectory(ecd_run)
    lr_s = LR / math.sqrt(ETA)
    skipped = [s for s in range(1, STEPS + 1) if np.array_equal(theta[s], theta[s - 1])]
    assert 0 < len(skipped) < STEPS // 2, skipped         # the test exercises skipping (F0 inside the loss range)
    per_step, prev = {}, None        # step -> (drift, grad part, step length, turn); None where not recoverable
    for s in range(1, STEPS + 1):
        if s in skipped:
            assert np.array_equal(vel[s], vel[s - 1])     # a skipped step leaves the velocity alone too
            continue
        kicked = vel[s]
        # the update is lr_s times the saved (kicked) velocity: checkpoints and velocities agree
        np.testing.assert_allclose(theta[s] - theta[s - 1], lr_s * kicked, rtol=0, atol=2e-6)
        if prev is None:       # the first update starts from -g/|g|, which no file holds: its lengths only
            per_step[s] = (lr_s, None, lr_s * np.linalg.norm(kicked), None)
        else:
            old = prev / np.linalg.norm(prev)                 # energy conservation: unit speed at the step start
            per_step[s] = (lr_s, lr_s * np.linalg.norm(kicked - old), lr_s * np.linalg.norm(kicked),
                           angle(old, kicked))
        prev = kicked

    records = [r for r in runio.read_metrics(ecd_run) if r["step"] > 0]
    assert [r["step"] for r in records] == list(range(EVERY, STEPS + 1, EVERY))
    keys = ("ecd_drift_length", "ecd_grad_part_length", "ecd_step_length", "ecd_turn_angle")
    for r in records:
        window = [s for s in range(r["step"] - EVERY + 1, r["step"] + 1) if s in per_step]
        assert r["ecd_steps"] == len(window)
        assert r["ecd_skipped_total"] == sum(s <= r["step"] for s in skipped)
        assert r["ecd_updates_total"] == r["step"] - r["ecd_skipped_total"]
        for j, key in enumerate(keys):
            vals = [per_step[s][j] for s in window]
            if None in vals:
                continue
            assert r[key] == pytest.approx(float(np.mean(vals)), rel=1e-5), (r["step"], key)
    # every diagnostic was checked in at least one window
    assert any(all(per_step[s][3] is not None for s in range(r["step"] - EVERY + 1, r["step"] + 1) if s in per_step)
               for r in records)
    assert records[-1]["ecd_skipped_total"] == len(skipped)
