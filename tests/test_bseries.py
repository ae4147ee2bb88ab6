"""B-series completion and the directional probe: numbers against independent computations on small cases."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.core.errors import UserError
from training.geometry import basin, directional_probe as dp, fisher, switching
from training.geometry.switching import SwitchPair


# ---------------------------------------------------------------------------- B1 / B5 summaries
def test_recovery_summary_known_series():
    r = basin.recovery_summary([0, 3, 6, 9, 12], [0.1, 0.3, 0.65, 0.7, 0.5], 0.6, sigma=0.02)
    assert (r["start_p_ood"], r["max_p_ood"], r["max_step"], r["final_p_ood"]) == (0.1, 0.7, 9, 0.5)
    assert r["gain"] == pytest.approx(0.6) and r["reached"] and r["steps_to_threshold"] == 6
    # a flat series evaluated 5 times: E[max of 5 standard normals] = 1.16296 (tables of normal order statistics)
    assert r["noise_bias"] == pytest.approx(0.02 * 1.16296, rel=1e-4)
    assert r["gain_over_bias_sigma"] == pytest.approx((0.6 - 0.02 * 1.16296) / 0.02, rel=1e-4)
    never = basin.recovery_summary([10, 20], [0.2, 0.3], 0.6, sigma=0.05)
    assert not never["reached"] and never["steps_to_threshold"] is None
    assert never["noise_bias"] == pytest.approx(0.05 / math.sqrt(math.pi))       # E[max of 2] = 1/√π
    assert basin.recovery_summary([5, 6], [0.7, 0.1], 0.6)["steps_to_threshold"] == 0     # already there
    with pytest.raises(UserError):
        basin.recovery_summary([3, 3], [0.1, 0.2], 0.6)


def test_threshold_map_escape_is_strict_and_finds_the_lr_threshold():
    series = [{"lr": 1e-3, "steps": [0, 10, 20], "p_ood": [0.1, 0.5, 0.7]},
              {"lr": 1e-4, "steps": [0, 10, 20], "p_ood": [0.1, 0.4, 0.4]},       # exactly 0.4: no escape (> 0.4)
              {"lr": 3e-4, "steps": [0, 10, 20], "p_ood": [0.1, 0.2, 0.45]}]
    m = basin.threshold_map(series, 0.4, sigma=None)
    assert [r["lr"] for r in m["rows"]] == [1e-4, 3e-4, 1e-3]
    assert [r["first_escape_step"] for r in m["rows"]] == [None, 20, 10]
    assert [r["first_step_at_target"] for r in m["rows"]] == [None, None, 20]
    assert [r["max_p_ood"] for r in m["rows"]] == [0.4, 0.45, 0.7]
    assert m["lowest_escaping_lr"] == 3e-4 and m["highest_non_escaping_lr"] == 1e-4 and m["monotone"]
    series[0]["p_ood"] = [0.1, 0.1, 0.1]
    assert not basin.threshold_map(series, 0.4)["monotone"]


# ---------------------------------------------------------------------------- tiers
def test_oscillation_tiers_cutoffs_and_noise_null():
    sigma = 0.02
    pairs = [SwitchPair(10, 20, 0.5, 0.5 - a * sigma, a * sigma, "fall") for a in (1.0, 2.5, 3.0, 1.999)]
    t = switching.oscillation_tiers(pairs, sigma, 30)
    assert [r["tier"] for r in t["pairs"]] == ["C", "B", "A", "C"]
    assert [r["delta_sigma"] for r in t["pairs"]] == pytest.approx([1.0, 2.5, 3.0, 1.999])
    assert t["counts"] == {"A": 1, "B": 1, "C": 2}
    # claims.md: find_peaks on 30 points of white noise finds 2.9 peaks of prominence >= 2σ, 0.95 at 3σ
    assert t["null"]["expected_noise_peaks_2sigma"] == pytest.approx(2.9, abs=0.1)
    assert t["null"]["expected_noise_peaks_3sigma"] == pytest.approx(0.95, abs=0.06)
    assert t["null"]["noise_level_amplitude"] == pytest.approx(4.0 * sigma)        # k* = 4 at 30 points
    with pytest.raises(UserError):
        switching.oscillation_tiers(pairs, 0.0, 30)


# ---------------------------------------------------------------------------- Fisher at peaks vs troughs
def test_spectrum_bootstrap_matches_dense_resampling():
    rng = np.random.default_rng(3)
    G = rng.standard_normal((6, 40))
    K = G @ G.T / 6
    b = fisher.spectrum_bootstrap(K, 5, np.random.default_rng(11))
    idx = np.random.default_rng(11).integers(0, 6, size=6)           # the first draw, by hand
    Gb = G[idx]
    assert b["lambda_1"][0] == pytest.approx(np.linalg.eigvalsh(Gb.T @ Gb / 6)[-1], rel=1e-10)
    assert b["trace"][0] == pytest.approx(np.sum(Gb ** 2) / 6, rel=1e-12)
    same = np.tile(rng.standard_normal(40), (4, 1))                   # identical gradients: no resampling noise
    z = fisher.spectrum_bootstrap(same @ same.T / 4, 10, rng)
    assert z["sd_log_lambda_1"] == pytest.approx(0.0, abs=1e-12) and z["sd_log_trace"] == pytest.approx(0.0, abs=1e-12)


def test_peak_trough_fisher_paired_log_ratios():
    rec = {10: {"lambda_1": 4.0, "trace": 8.0, "sd_log_lambda_1": 0.3, "sd_log_trace": 0.1},
           20: {"lambda_1": 1.0, "trace": 8.0, "sd_log_lambda_1": 0.4, "sd_log_trace": 0.1},
           30: {"lambda_1": 2.0, "trace": 2.0, "sd_log_lambda_1": 0.0, "sd_log_trace": 0.2}}
    pairs = [SwitchPair(10, 20, 0.5, 0.1, 0.4, "fall"), SwitchPair(30, 20, 0.4, 0.1, 0.3, "rise")]
    r = fisher.peak_trough_fisher(rec, pairs)
    a, b = r["pairs"]
    assert a["lambda_1"]["log_ratio"] == pytest.approx(math.log(4)) and a["lambda_1"]["se"] == pytest.approx(0.5)
    assert a["lambda_1"]["z"] == pytest.approx(math.log(4) / 0.5) and a["trace"]["log_ratio"] == 0.0
    assert b["trace"]["log_ratio"] == pytest.approx(math.log(2 / 8))
    s = r["summary"]["lambda_1"]
    d = np.array([math.log(4), math.log(2)])
    assert s["mean_log_ratio"] == pytest.approx(d.mean()) and s["sem_over_pairs"] == pytest.approx(d.std(ddof=1) / 2 ** 0.5)
    assert s["n_peak_higher"] == 2


# ---------------------------------------------------------------------------- directional probe
def test_orthonormal_random_is_orthogonal_and_seeded():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((500, 2))
    R = dp.orthonormal_random(F, 3, seed=7, block=1)
    Q = np.linalg.qr(F)[0]
    assert np.abs(Q.T @ R).max() < 1e-12 and np.allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.array_equal(R, dp.orthonormal_random(F, 3, seed=7, block=1))
    assert not np.allclose(R, dp.orthonormal_random(F, 3, seed=7, block=2))


def test_shift_is_theta_plus_eps_v_and_eps_zero_is_bitwise(tiny_run):
    from training.geometry.analysis_io import open_run
    run = open_run(tiny_run)
    model = run.model(run.steps[-1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    theta = dp.trunk_vector(model, 1)
    v = dp.unit(np.random.default_rng(1).standard_normal(len(theta)))
    dp.shift(model, v, 0.0, 1)
    assert all(torch.equal(before[k], v2) for k, v2 in model.state_dict().items())
    dp.shift(model, v, 0.7, 1)
    expect = torch.from_numpy(theta + 0.7 * v).float().double().numpy()      # θ + εv rounded once to fp32
    assert np.array_equal(dp.trunk_vector(model, 1), expect)
    changed = {k for k, t in model.state_dict().items() if not torch.equal(before[k], t)}
    assert changed and all(k.startswith("blocks.1.") for k in changed)          # only block 1's trunk moved


def test_minus_one_switch_distance_from_the_peak_lands_on_the_trough(tiny_run):
    """The planted known answer: θ_peak − s·v_sw = θ_trough over the trunk, v_sw materialised from the span."""
    from training.geometry.analysis_io import open_run
    from training.geometry.trajectory import cached_gram
    run = open_run(tiny_run)
    ckpts = run.checkpoints()
    peak, trough = run.steps[1], run.steps[3]
    for block in (None, 0):
        gram = cached_gram(ckpts, block)
        C, n = switching.switch_coeffs(gram, [SwitchPair(peak, trough, 0.0, 0.0, 0.0, "fall")])
        v = dp.unit(ckpts.materialise(gram, C[0]))
        model = run.model(peak)
        dp.shift(model, v, -float(n[0]), block)
        assert np.allclose(dp.trunk_vector(model, block), ckpts.vector(trough, block), atol=2e-7, rtol=0)
        assert float(n[0]) == pytest.approx(np.linalg.norm(ckpts.vector(peak, block) - ckpts.vector(trough, block)))


def test_traced_relaxation_leaves_the_updates_unchanged(tiny_run):
    from training.geometry.analysis_io import open_run
    run = open_run(tiny_run)
    task = run.task()
    s = basin.relax_defaults(run.cfg, steps=3)
    a, b = run.model(run.steps[-1]), run.model(run.steps[-1])
    ra = basin.relax(a, run.cfg, task, s, 0, [5])
    rb = basin.relax(b, run.cfg, task, s, 0, [5], trace_every=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert ra["p_ood"] == rb["p_ood"] and [t["step"] for t in rb["trace"]] == [0, 2, 3]
    assert rb["trace"][-1]["p_ood"] == rb["p_ood"]
    logged = {m["step"]: m["p_ood"] for m in run.metrics()}
    assert rb["trace"][0]["p_ood"] == logged[run.steps[-1]]                    # the start: the logged evaluation


# ---------------------------------------------------------------------------- the commands end to end
@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bseries") / "run"
    shutil.copytree(tiny_run, d, ignore=shutil.ignore_patterns("analysis"))
    (d / "oscillation_manifest.json").write_text(json.dumps({"pairs": [], "peaks": [], "troughs": [],
                                                             "prominence": 0.03, "n_points": 5}))
    return d


@pytest.mark.parametrize("script", ["analysis/basin/basin_recovery.py", "analysis/basin/lr_threshold_map.py",
                                    "analysis/basin/directional_probe.py", "analysis/fisher/fisher_peaks.py",
                                    "analysis/switching/oscillation_tiers.py"])
def test_no_pairs_is_recorded_not_applicable(capsys, run_copy, script):
    code, out, err = run_inprocess(capsys, script, "--run-dir", str(run_copy))
    assert code == 0, err
    name = script.rsplit("/", 1)[1][:-3]
    r = json.loads((run_copy / "analysis" / f"{name}.json").read_text())
    assert r["applicable"] is False and r["reason"] and "not applicable" in out


def test_recovery_and_fisher_with_given_pairs(capsys, run_copy):
    code, out, err = run_inprocess(capsys, "analysis/basin/basin_recovery.py", "--run-dir", str(run_copy),
                                   "--pairs", "5:10", "--steps", "2", "--every", "1")
    assert code == 0, err
    r = json.loads((run_copy / "analysis" / "basin_recovery.json").read_text())
    (row,) = r["starts"]
    assert row["step"] == 10 and row["role"] == "trough"
    # the raised λ is four times the initial one, twice the λ after the switch (the control at step 10)
    for arm, lam in (("raised", 4.0 * run_copy_lambda(run_copy)), ("control", 2.0)):
        t = row[arm]["trace"]
        assert [x["step"] for x in t] == [0, 1, 2] and row[arm]["lam"] == lam
        assert row[arm]["max_p_ood"] == max(x["p_ood"] for x in t)
    assert (run_copy / "analysis" / "basin_recovery.png").exists()
    code, out, err = run_inprocess(capsys, "analysis/fisher/fisher_peaks.py", "--run-dir", str(run_copy), "--pairs",
                                   "5:10", "--n-batches", "3", "--n-boot", "20", "--device", "cpu")
    assert code == 0, err
    f = json.loads((run_copy / "analysis" / "fisher_peaks.json").read_text())
    c = {x["step"]: x for x in f["checkpoints"]}
    assert f["pairs"][0]["lambda_1"]["log_ratio"] == pytest.approx(math.log(c[5]["lambda_1"] / c[10]["lambda_1"]))


def run_copy_lambda(run_dir) -> float:
    from training.core.runio import read_run_config
    from training.core.config import preset
    return preset(read_run_config(run_dir).preset).lambda_probe


@pytest.mark.parametrize("args", [["--start", "middle"], ["--threshold", "2"], ["--max-pairs", "-1"]])
def test_recovery_bad_input_is_one_error_line(capsys, run_copy, args):
    code, out, err = run_inprocess(capsys, "analysis/basin/basin_recovery.py", "--run-dir", str(run_copy), *args)
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_directional_probe_bad_eps_is_one_error_line(capsys, run_copy):
    code, out, err = run_inprocess(capsys, "analysis/basin/directional_probe.py", "--run-dir", str(run_copy),
                                   "--eps", "0")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_delta_significance_figure_across_runs(capsys, run_copy, tmp_path):
    runs = []
    for i, (sigma, amps) in enumerate(((0.02, [0.07, 0.05]), (0.01, [0.015]))):
        d = tmp_path / f"s{i}"
        (d / "analysis").mkdir(parents=True)
        shutil.copy(run_copy / "config.json", d / "config.json")
        pairs = [{"peak_step": 5 + 5 * j, "trough_step": 10 + 5 * j, "peak_p_ood": 0.5, "trough_p_ood": 0.5 - a,
                  "amplitude": a, "kind": "fall"} for j, a in enumerate(amps)]
        (d / "oscillation_manifest.json").write_text(json.dumps({"pairs": pairs, "n_points": 30}))
        (d / "analysis" / "eval_noise.json").write_text(json.dumps({"mean_std": sigma}))
        runs += ["--run-dir", str(d)]
    out_png = tmp_path / "fig" / "delta.png"
    code, out, err = run_inprocess(capsys, "figures/plot_delta_significance.py", *runs, "--out", str(out_png))
    assert code == 0, err
    assert out_png.exists() and out_png.with_suffix(".pdf").exists()
    # 0.07/0.02 = 3.5 (A), 0.05/0.02 = 2.5 (B); 0.015/0.01 = 1.5 (C)
    assert "{'A': 1, 'B': 1, 'C': 0}" in out and "{'A': 0, 'B': 0, 'C': 1}" in out
    code, out, err = run_inprocess(capsys, "figures/plot_delta_significance.py", "--run-dir", str(run_copy),
                                   "--out", str(out_png))
    assert code == 2 and err.startswith("error:")           # no eval_noise.json in that run


# ---------------------------------------------------------------------------- report tables
def test_report_tables_show_the_json_values(run_copy):
    from figures.paperlib.inputs import Empty, Inputs
    from figures.paperlib import tables
    from training.core.runio import read_run_config
    d = json.loads((run_copy / "analysis" / "basin_recovery.json").read_text())
    if not d["applicable"]:
        pytest.skip("needs test_recovery_and_fisher_with_given_pairs first")
    inp = Inputs(run_copy, read_run_config(run_copy), {}, {}, [], [], data={"basin_recovery": d})
    t = tables.table_basin_recovery(inp)
    row = t.raw()["rows"][0]
    assert row[0] == 10 and row[3] == d["starts"][0]["raised"]["start_p_ood"]
    assert row[5] == d["starts"][0]["raised"]["max_p_ood"] and row[9] == d["starts"][0]["control"]["max_p_ood"]
    inp.data["lr_threshold_map"] = {"applicable": False, "reason": "no reheating runs"}
    with pytest.raises(Empty, match="no reheating runs"):
        tables.table_lr_threshold(inp)
    inp.data["oscillation_tiers"] = switching.oscillation_tiers(
        [SwitchPair(5, 10, 0.5, 0.44, 0.06, "fall")], 0.02, 5) | {"applicable": True}
    tt = tables.table_oscillation_tiers(inp)
    assert tt.raw()["rows"][0][4] == pytest.approx(3.0) and tt.raw()["rows"][0][5] == "A"
    assert "\\toprule" in tt.to_tex() and tt.to_md().count("\n|") >= 2


@pytest.mark.parametrize("name", ["paper", "cpu", "quick"])
def test_recovery_lambda_is_a_raise_after_the_switch(name):
    """B1's raised λ is the reference's 8.0 at the paper's scale (its B1_basin_test.py: lm + 8.0·probe, training
    λ 2 → 4), i.e. twice protocol R's λ, so it stays above the run's own λ after the λ switch (the control)."""
    from training.core.config import preset
    cfg = preset(name)
    settings, _ = basin.recovery_defaults(cfg)
    assert settings.lam == pytest.approx(4.0 * cfg.lambda_probe)
    assert settings.lam == pytest.approx(2.0 * basin.relax_defaults(cfg).lam)
    assert settings.lam > cfg.lambda_after
    if name == "paper":
        assert settings.lam == pytest.approx(8.0)
    assert basin.recovery_defaults(cfg, lam=1.5)[0].lam == 1.5
