"""The regime calibration's judgement of a run (training/studies/calibration.py) on made-up metric series."""
import math

import numpy as np

from training.core.config import preset
from training.studies.calibration import outcome, probe_geometry


def _records(cfg, val, p_in, p_ood):
    steps = list(range(0, cfg.steps + 1, cfg.eval_every))
    return [{"step": s, "val_loss": v, "p_in": a, "p_ood": b, "elapsed_s": float(s)}
            for s, v, a, b in zip(steps, val, p_in, p_ood)]


def _cfg():
    return preset("quick")             # 1,200 probe-eval examples: σ_eval = 0.0144, h = 0.029; λ switch at 240


def test_a_run_that_trains_and_switches():
    cfg = _cfg()
    n = cfg.steps // cfg.eval_every + 1
    steps = np.arange(n) * cfg.eval_every
    val = list(np.linspace(7.6, 3.0, n))
    p_in = list(np.linspace(0.0, 0.9, n))
    # p_ood oscillates by ±0.2 around 0.5 after the switch: far beyond 2 σ_eval
    p_ood = [0.0 if s < cfg.lambda_step else 0.5 + 0.2 * math.sin(s / 40.0) for s in steps]
    o = outcome(cfg, _records(cfg, val, p_in, p_ood))
    assert o["loss_falls"] and o["probe_learned"] and o["probe_contested"]
    assert o["oscillation_pairs"] >= 2
    assert math.isclose(o["oscillation_threshold"], 2 * 0.5 / math.sqrt(1200))
    assert math.isclose(o["val_loss_fall"], 1 - 3.0 / 7.6)


def test_noise_below_the_threshold_is_no_oscillation_and_a_solved_probe_is_not_contested():
    cfg = _cfg()
    n = cfg.steps // cfg.eval_every + 1
    rng = np.random.default_rng(0)
    h = 2 * 0.5 / math.sqrt(cfg.n_probe_eval)
    p_ood = list(0.97 + rng.uniform(-0.45 * h, 0.45 * h, n))      # peak-to-peak < h: no prominence reaches h
    o = outcome(cfg, _records(cfg, list(np.linspace(7.6, 3.0, n)), [0.99] * n, p_ood))
    assert o["oscillation_pairs"] == 0
    assert o["probe_learned"] and not o["probe_contested"]


def test_a_run_that_does_not_learn():
    cfg = _cfg()
    n = cfg.steps // cfg.eval_every + 1
    o = outcome(cfg, _records(cfg, list(np.linspace(7.6, 5.0, n)), [0.02] * n, [0.01] * n))
    assert not o["loss_falls"] and not o["probe_learned"] and not o["probe_contested"]


def test_probe_geometry_of_the_paper():
    g = probe_geometry(preset("paper"))
    assert g["train_gap_frac"] == [5 / 256, 30 / 256]
    assert g["ood_gap_frac"] == [80 / 256, 200 / 256]
    assert math.isclose(g["probes_per_1k_tokens"], 1000 * 0.10 / 256)
