"""The replay test of optimizer integration (claim 7): exactness against the run, closed forms, the held-out
backbone against a dense PCA, the script end to end."""
import json

import numpy as np
import pytest
import torch

from conftest import run_inprocess, run_pilot

from training.core.config import keeps_optimizer_state, preset
from training.core.model import trunk_names
from training.core.optim import lr_at
from training.core.trainer import autocast_context
from training.geometry.analysis_io import open_run
from training.geometry.replay import Replay, claim7_summary, optimizer_state_at, replay, replay_starts, trunk_vector
from training.geometry.trajectory import Gram, held_out_backbone, pca


@pytest.fixture(scope="module")
def state_run(tmp_path_factory):
    """A `test`-preset run (20 steps, a checkpoint every 5) that keeps its optimizer state at every checkpoint."""
    base = tmp_path_factory.mktemp("replay")
    run = base / "run"
    run_pilot("--preset", "test", "--set", "optimizer_state_every=5", "--out-dir", str(run), cache=str(base / "cache"))
    return run


def _replay(run, start, delta, state=None, control=False):
    cfg, task = run.cfg, run.task()
    amp = lambda: autocast_context(cfg, torch.device("cpu"))  # noqa: E731
    return replay(run.model(start), cfg, task, start, delta, torch.device("cpu"), amp,
                  optimizer_state_at(run.dir, start, cfg) if state is None else state,
                  (lambda: run.model(start)) if control else None)


def test_the_setting_keeps_states_only_where_asked():
    cfg = preset("quick")
    kept = [s for s in range(0, cfg.steps + 1, cfg.ckpt_every) if keeps_optimizer_state(cfg, s)]
    assert kept == [120, 240, 360, 480, 600]
    assert not any(keeps_optimizer_state(cfg.replace(optimizer_state_every=0), s) for s in range(0, 601, 20))
    assert keeps_optimizer_state(cfg.replace(optimizer_state_every=0, keep_optimizer_states=True), 20)
    assert cfg.hash() == cfg.replace(optimizer_state_every=0).hash()      # where states are kept changes no numbers


def test_replay_is_the_runs_own_training_and_needs_its_moments(state_run):
    run = open_run(state_run)
    starts, lacking = replay_starts(run.dir, run.cfg, run.steps, 5)
    assert starts == [0, 5, 10, 15] and lacking == []
    names = trunk_names(run.cfg)
    target = trunk_vector(run.model(10), names)
    interval = float((target - trunk_vector(run.model(5), names)).norm())
    exact = _replay(run, 5, 5)
    assert float((exact.theta_end - target).norm()) / interval < 1e-6
    # the same replay with a fresh optimizer instead of the saved moments is a different trajectory
    fresh = _replay(run, 5, 5, state=(None, 5, run.cfg.hash()))
    assert float((fresh.theta_end - target).norm()) / interval > 0.05


def test_first_adamw_step_and_the_sgd_control_in_closed_form(state_run):
    run = open_run(state_run)
    cfg = run.cfg
    rep = _replay(run, 0, 1, control=True)
    g = rep.grads[0]
    lr = lr_at(cfg, 1)
    # step 1 of AdamW from a fresh state: m̂ = g, v̂ = g², so the adaptive part is −η·g/(|g| + ε)
    adaptive = rep.U - rep.U_decay
    expected = -lr * g / (g.abs() + cfg.eps)
    assert float((adaptive - expected).norm() / expected.norm()) < 1e-4
    # the decay part is −η·wd·θ0 on the decayed coordinates (every trunk matrix here) and nothing else
    assert torch.allclose(rep.U_decay, -lr * cfg.wd * rep.theta_start, rtol=1e-9, atol=0)
    # plain SGD from the same start on the same batch, scaled to the same step norm: −(‖u‖/‖g‖)·g
    assert float(rep.U_sgd.norm()) == pytest.approx(float(rep.U.norm()), rel=1e-5)
    assert float(torch.nn.functional.cosine_similarity(rep.U_sgd, -g, dim=0)) == pytest.approx(1.0, abs=1e-6)


def test_held_out_backbone_equals_the_dense_pca_of_the_modified_drifts():
    rng = np.random.default_rng(3)
    T, D = 9, 60
    steps = list(range(0, 10 * T, 10))
    X = np.cumsum(rng.standard_normal((T, D)) + np.linspace(0, 2, D), axis=0)
    X[0] = 0.0                                                   # drifts from the anchor
    gram = Gram(steps, 0, None, D, X @ X.T)
    for start, end in ((0, 10), (30, 40), (70, 80)):
        c = held_out_backbone(gram, start, end)
        v = X.T @ c
        d = X[steps.index(end)] - X[steps.index(start)]
        Xh = X - np.array([s >= end for s in steps], float)[:, None] * d[None, :]
        dense = np.linalg.svd(Xh[1:], full_matrices=False)[2][0]
        assert abs(v @ dense) / np.linalg.norm(v) == pytest.approx(1.0, abs=1e-10)
        full = X.T @ pca(gram, k=1).coeffs[0]
        assert abs(full @ dense) / np.linalg.norm(full) < 1.0    # removing the interval changes the backbone


def test_claim7_summary_reads_the_third_largest_ratio():
    def rec(r):
        return {"held_out": {"ratio_gradient": r, "ratio_sgd": r / 2}}
    s = claim7_summary([rec(3.0), rec(1.0), rec(2.5), rec(2.1)])
    assert s["third_largest_ratio"] == 2.1 and s["n_at_or_above_limit"] == 3 and s["holds"] is True
    assert claim7_summary([rec(5.0), rec(1.9), rec(1.5)])["holds"] is False
    two = claim7_summary([rec(5.0), rec(4.0)])
    assert two["third_largest_ratio"] is None and two["holds"] is None
    empty = Replay(0, 1, 1, torch.zeros(3), torch.zeros(3), torch.zeros(3), [torch.zeros(3)], [0.0])
    assert empty.report(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))["ratio_gradient"] is None


def test_the_script_end_to_end_and_on_a_run_without_states(capsys, state_run, tiny_run, tmp_path):
    code, out, err = run_inprocess(capsys, "analysis/backbone/integration_test.py", "--run-dir", str(state_run))
    assert code == 0, err
    res = json.loads((state_run / "analysis" / "integration_test.json").read_text())
    assert res["settings"]["starts"] == [0, 5, 10, 15]
    assert all(r["replay_error"] < 1e-6 for r in res["replays"])
    c7 = res["claim7"]
    assert c7["n_checkpoints"] == 4 and c7["third_largest_ratio"] == sorted(c7["ratios"])[-3]
    for r in res["replays"]:
        for key in ("full", "held_out"):
            assert -1.0 <= r[key]["cos_update"] <= 1.0 and r[key]["ratio_gradient"] > 0
    assert (state_run / "analysis" / "integration_test.png").exists()
    # a run that kept no optimizer states replays from step 0 only and says why the rule cannot be applied
    code, out, err = run_inprocess(capsys, "analysis/backbone/integration_test.py", "--run-dir", str(tiny_run),
                                   "--out-dir", str(tmp_path), "--no-sgd-control")
    assert code == 0, err
    res = json.loads((tmp_path / "integration_test.json").read_text())
    assert res["settings"]["starts"] == [0] and res["claim7"]["third_largest_ratio"] is None
    assert "optimizer_state_every" in res["claim7"]["why_not"] and "not measurable" in err
    code, out, err = run_inprocess(capsys, "analysis/backbone/integration_test.py", "--run-dir", str(tiny_run),
                                   "--out-dir", str(tmp_path), "--steps", "5")
    assert code != 0 and err.strip().startswith("error:") and "saved optimizer state" in err
