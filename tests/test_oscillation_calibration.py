"""Noise calibration of the oscillation detector: the white-noise false-peak count, the calibrated multiplier,
the detector on noise and on a planted oscillation, and the manifest keys written by the CLI."""
import json
import math
import time

import numpy as np
import pytest
from scipy.signal import find_peaks

from conftest import run_inprocess
from training.geometry import switching
from training.geometry.switching import (FALSE_PEAK_TARGET, MULTIPLIER_GRID, calibrated_multiplier, detect_oscillations,
                                         expected_false_peaks)

DETECT = "analysis/switching/detect_oscillations.py"


# ---------------------------------------------------------------------------- the white-noise false-peak count
@pytest.mark.parametrize("n, k", [(30, 2.0), (30, 3.0), (50, 4.0), (12, 2.5)])
def test_expected_false_peaks_matches_a_brute_force_loop_on_fresh_noise(n, k):
    rng = np.random.default_rng(987_654)                      # noise independent of the function's own seed
    counts = np.array([len(find_peaks(rng.standard_normal(n), prominence=k)[0]) for _ in range(3000)])
    got = expected_false_peaks(n, k)
    se = math.sqrt(counts.var() / len(counts) + counts.var() / switching.NULL_SIMULATIONS)
    assert abs(got - counts.mean()) <= 4 * se + 1e-9, (got, counts.mean(), se)


def test_expected_false_peaks_reproduces_the_known_rates():
    # find_peaks on white noise at prominence k·σ (the numbers that motivated the calibration)
    for n, k, rate in ((30, 2, 2.9), (50, 2, 5.2), (30, 3, 0.95), (50, 3, 1.96), (30, 4, 0.15), (50, 4, 0.40)):
        assert expected_false_peaks(n, k) == pytest.approx(rate, rel=0.08, abs=0.02)


def test_expected_false_peaks_is_monotone_deterministic_and_fast():
    e = [expected_false_peaks(30, k) for k in MULTIPLIER_GRID]
    assert all(a >= b for a, b in zip(e, e[1:]))               # the same noise at every k: exactly non-increasing
    assert e[0] > e[4] > e[8] > e[12]                          # k = 2, 3, 4, 5: strictly falling where it is > 0
    by_n = [expected_false_peaks(n, 3.0) for n in (10, 20, 50, 100, 200)]
    assert all(a < b for a, b in zip(by_n, by_n[1:]))          # longer series, more chances for a noise bump
    assert by_n[-1] / by_n[2] > 3.5                            # at least about proportional to the length (4× here)
    assert expected_false_peaks(2, 0.1) == 0.0                 # no interior point, no peak
    first = expected_false_peaks(77, 3.0, seed=5)
    switching._null_prominences.cache_clear()
    t0 = time.perf_counter()
    again = expected_false_peaks(77, 3.0, seed=5)
    expected_false_peaks(200, 3.0, seed=5)
    assert first == again
    assert time.perf_counter() - t0 < 1.0                      # two uncached simulations (measured ≈ 0.2 s)
    assert expected_false_peaks(77, 3.0, seed=6) != first      # the seed matters (MC estimate, not a formula)


def test_calibrated_multiplier_holds_the_target_and_grows_with_length():
    ks = {n: calibrated_multiplier(n) for n in (5, 20, 30, 50, 100)}
    assert ks == {5: 2.0, 20: 3.5, 30: 4.0, 50: 4.5, 100: 5.0}
    for n, k in ks.items():
        assert expected_false_peaks(n, k) <= FALSE_PEAK_TARGET
        if k > MULTIPLIER_GRID[0]:
            assert expected_false_peaks(n, k - 0.25) > FALSE_PEAK_TARGET    # the smallest grid value that does
    assert calibrated_multiplier(30, target=0.05) > calibrated_multiplier(30, target=0.5)
    assert calibrated_multiplier(30, grid=(2.0, 2.5)) == 2.5      # target unreachable on the grid: its largest value


# ---------------------------------------------------------------------------- the detector
def test_calibrated_detector_on_white_noise_holds_the_target_and_two_sigma_does_not():
    rng = np.random.default_rng(2024)
    sigma, n, steps = 0.02, 30, np.arange(30) * 10
    calibrated, above, two_sigma, peaks = [], [], [], []
    for _ in range(200):
        p = 0.5 + sigma * rng.standard_normal(n)
        osc = detect_oscillations(steps, p, noise_std=sigma)
        assert osc.threshold.rule == "calibrated" and osc.prominence == pytest.approx(4.0 * sigma)
        calibrated.append(len(osc.pairs))
        above.append(osc.n_pairs_above_noise)
        peaks.append(len(osc.peaks))
        two_sigma.append(len(detect_oscillations(steps, p, prominence=2 * sigma).pairs))
    assert np.mean(calibrated) <= 0.3 and np.mean(above) <= 0.3
    assert np.mean(peaks) <= FALSE_PEAK_TARGET + 0.1          # 0.2 expected; 200 series, SE ≈ 0.03
    assert np.mean(two_sigma) > 3.0                            # the old fixed rule: several "switch pairs" per series
    assert np.mean(two_sigma) > 20 * max(np.mean(calibrated), 0.05)


def test_a_planted_oscillation_is_found_with_its_extrema_above_noise():
    rng = np.random.default_rng(11)
    sigma, n = 0.01, 60
    t = np.arange(n)
    p = 0.5 + 10 * sigma * np.sin(2 * np.pi * t / 20) + sigma * rng.standard_normal(n)
    osc = detect_oscillations(t * 10, p, noise_std=sigma)
    assert osc.threshold.rule == "calibrated" and osc.threshold.noise_multiplier == calibrated_multiplier(n)
    assert len(osc.peaks) == 3 and len(osc.troughs) == 3
    assert np.max(np.abs(np.asarray(osc.peaks) - 10 * np.array([5, 25, 45]))) <= 20
    assert np.max(np.abs(np.asarray(osc.troughs) - 10 * np.array([15, 35, 55]))) <= 20
    assert len(osc.pairs) == 5 and osc.n_pairs_above_noise == 5
    assert not any(q.at_noise_level for q in osc.pairs)


def test_at_noise_level_is_the_amplitude_against_the_calibrated_amplitude():
    rng = np.random.default_rng(3)
    sigma, n = 0.02, 40
    p = 0.5 + sigma * rng.standard_normal(n)
    p[20] += 12 * sigma                                        # one real spike among noise
    osc = detect_oscillations(np.arange(n), p, noise_std=sigma, noise_multiplier=1.5)   # deliberately permissive
    thr = osc.threshold
    assert thr.rule == "explicit multiplier" and thr.prominence == pytest.approx(1.5 * sigma)
    assert thr.noise_level_amplitude == pytest.approx(calibrated_multiplier(n) * sigma)
    assert thr.expected_false_peaks == expected_false_peaks(n, 1.5) > 3
    assert len(osc.pairs) > 2
    for q in osc.pairs:
        assert q.at_noise_level == (q.amplitude < thr.noise_level_amplitude)
    assert osc.n_pairs_above_noise == sum(not q.at_noise_level for q in osc.pairs) >= 1
    assert any(q.at_noise_level for q in osc.pairs)
    assert any(q.peak_step == 20 and not q.at_noise_level for q in osc.pairs)
    # without a noise estimate: the fixed, uncalibrated default and no noise judgement
    bare = detect_oscillations(np.arange(n), p)
    assert bare.prominence == switching.DEFAULT_PROMINENCE and "not calibrated" in bare.threshold.rule
    assert bare.n_pairs_above_noise is None and all(q.at_noise_level is None for q in bare.pairs)
    # an explicit prominence wins over the noise estimate, which is still reported
    fixed = detect_oscillations(np.arange(n), p, 0.05, noise_std=sigma)
    assert fixed.prominence == 0.05 and fixed.threshold.noise_multiplier == pytest.approx(2.5)


# ---------------------------------------------------------------------------- the CLI
NEW_KEYS = {"noise_multiplier", "expected_false_peaks", "n_pairs_above_noise", "noise_std", "noise_level_amplitude",
            "calibrated_multiplier", "false_peak_target", "threshold_rule", "n_points"}


@pytest.fixture
def small_run(tmp_path):
    """A run directory with checkpoints at steps 0, 5, 10, 15, 20 (the steps of conftest's tiny_run) without
    training one: the detector reads only the checkpoint steps, metrics.jsonl and analysis/eval_noise.json."""
    import torch
    from trajfix import make_run
    from training.core.config import preset
    from training.core.model import GPT
    cfg = preset("test")
    torch.manual_seed(0)
    sd = GPT(cfg, 64).state_dict()
    return make_run(tmp_path / "run", [sd] * 5, [0, 5, 10, 15, 20], cfg)


def test_cli_writes_the_calibration_keys(small_run, capsys):
    run = small_run
    (run / "analysis").mkdir(exist_ok=True)
    (run / "analysis" / "eval_noise.json").write_text(json.dumps(
        {"mean_std": 0.05, "checkpoints": [{"step": 20, "p_ood": 0.4, "bootstrap_std": 0.05}]}))
    # checkpoints at 0, 5, 10, 15, 20: a small bump (0.08) then a large swing (0.4, 0.7)
    series = {0: 0.5, 5: 0.58, 10: 0.5, 15: 0.9, 20: 0.2}
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "p_ood": v}) + "\n" for s, v in series.items()))

    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run))          # calibrated default
    assert code == 0, err
    m = json.loads((run / "oscillation_manifest.json").read_text())
    assert set(m) >= NEW_KEYS | {"pairs", "peaks", "troughs", "prominence", "settings"}
    k = calibrated_multiplier(5)
    assert m["threshold_rule"] == "calibrated" and m["n_points"] == 5
    assert m["noise_multiplier"] == pytest.approx(k) and m["prominence"] == pytest.approx(k * 0.05)
    assert m["expected_false_peaks"] == pytest.approx(expected_false_peaks(5, k))
    assert m["expected_false_peaks"] <= m["false_peak_target"] == FALSE_PEAK_TARGET
    assert m["peaks"] == [15] and m["troughs"] == []           # the 0.08 bump is below h = 0.1; no interior trough
    assert m["pairs"] == [] and m["n_pairs_above_noise"] == 0
    assert "calibrated" in m["settings"]["prominence_source"]

    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run), "--noise-k", "1")   # explicit multiplier
    assert code == 0, err
    m = json.loads((run / "oscillation_manifest.json").read_text())
    assert m["threshold_rule"] == "explicit multiplier" and m["noise_multiplier"] == pytest.approx(1.0)
    assert m["expected_false_peaks"] == pytest.approx(expected_false_peaks(5, 1.0))
    assert m["expected_false_peaks"] > FALSE_PEAK_TARGET
    assert m["noise_level_amplitude"] == pytest.approx(k * 0.05)
    got = {(q["peak_step"], q["trough_step"]): q["at_noise_level"] for q in m["pairs"]}
    assert got == {(5, 10): True, (15, 10): False}             # amplitudes 0.08 < 0.1 and 0.4
    assert m["n_pairs_above_noise"] == 1 and "at noise level" in out

    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run), "--prominence", "0.06")   # explicit h
    assert code == 0, err
    m = json.loads((run / "oscillation_manifest.json").read_text())
    assert m["threshold_rule"] == "explicit prominence" and m["prominence"] == 0.06
    assert m["noise_multiplier"] == pytest.approx(1.2) and m["n_pairs_above_noise"] == 1

    (run / "analysis" / "eval_noise.json").unlink()                                   # no noise estimate
    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run))
    assert code == 0, err
    m = json.loads((run / "oscillation_manifest.json").read_text())
    assert m["prominence"] == switching.DEFAULT_PROMINENCE and "not calibrated" in m["threshold_rule"]
    assert m["noise_multiplier"] is None and m["expected_false_peaks"] is None and m["n_pairs_above_noise"] is None
    assert all(q["at_noise_level"] is None for q in m["pairs"]) and len(m["pairs"]) == 2
    code, _, err = run_inprocess(capsys, DETECT, "--run-dir", str(run), "--noise-k", "3")
    assert code == 2 and "noise estimate" in err and len(err.strip().splitlines()) == 1
