"""The η-concentration mini-study (training/studies/ecd_eta.py): its statistics against scipy, exhaustive
permutation enumeration and closed forms, and experiments/symmetry/eta_study.py end to end at the test size
(resume skips finished runs; the verdict is computed; bad input is one error line)."""
import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from conftest import run_inprocess
from training.core import runio
from training.studies import ecd_eta as es


def spread(center, sd, n):
    """n values (n odd) with mean ``center`` and sample SD exactly ``sd`` (ddof 1)."""
    base = np.linspace(-1.0, 1.0, n)
    return center + sd * base / np.std(base, ddof=1)


def test_deviations_and_rho_match_scipy():
    groups = [[1.0, 4.0, 2.5, 9.0], [3.0, 3.5, 2.0, 3.1], [0.5, 0.7, 0.6, 0.65]]
    etas = [10.0, 100.0, 1000.0]
    dev = es.brown_forsythe_deviations(groups)
    np.testing.assert_allclose(dev[0], [2.25, 0.75, 0.75, 5.75])             # median 3.25
    t = es.concentration_test(etas, groups, n_perm=200, n_boot=50)
    x = np.repeat(np.log(etas), 4)
    assert t["rho"] == pytest.approx(stats.spearmanr(x, np.concatenate(dev)).statistic, rel=1e-12)
    # Brown–Forsythe = one-way ANOVA on the deviations from the group medians
    assert t["bf_p"] == pytest.approx(stats.f_oneway(*dev).pvalue, rel=1e-10)
    assert [d["sd"] for d in t["per_eta"]] == pytest.approx([np.std(g, ddof=1) for g in groups])


def test_permutation_p_matches_the_exact_enumeration():
    groups = [[0.0, 1.9, 4.1], [1.0, 1.5, 2.2]]       # larger spread at the smaller η
    etas = [10.0, 1000.0]
    t = es.concentration_test(etas, groups, n_perm=20000, n_boot=0, seed=1)
    x = np.repeat(np.log(etas), 3)
    z = np.concatenate(es.brown_forsythe_deviations(groups))
    rho = stats.spearmanr(x, z).statistic
    exact = [stats.spearmanr(x, z[list(p)]).statistic for p in itertools.permutations(range(6))]
    exact = np.nan_to_num(np.array(exact))
    p_less = float(np.mean(exact <= rho + 1e-12))
    p_greater = float(np.mean(exact >= rho - 1e-12))
    se = math.sqrt(p_less * (1 - p_less) / 20000)
    assert t["p_less"] == pytest.approx(p_less, abs=4 * se + 1e-4)
    assert t["p_greater"] == pytest.approx(p_greater, abs=4 * math.sqrt(p_greater * (1 - p_greater) / 20000) + 1e-4)


def test_slope_closed_form_and_verdicts():
    etas = [10.0, 100.0, 1000.0]
    # SD 2 -> 0.2 over two decades: slope of log SD on log η is log(0.1)/log(100) = -1/2
    groups = [spread(5.0, 2.0, 5), spread(4.0, 2.0 * 10 ** -0.5, 5), spread(3.0, 0.2, 5)]
    assert es.sd_slope(etas, groups) == pytest.approx(-0.5, rel=1e-12)
    t = es.concentration_test(etas, groups, n_perm=4000, n_boot=400)
    assert t["verdict"] == "supported" and t["rho"] < 0 and t["p_less"] < 0.05
    assert t["slope"] == pytest.approx(-0.5) and t["slope_ci"][0] <= -0.5 <= t["slope_ci"][1]
    rev = es.concentration_test(etas, groups[::-1], n_perm=4000, n_boot=0)
    assert rev["verdict"] == "contradicted" and rev["rho"] > 0 and rev["p_greater"] < 0.05
    same = [spread(5.0, 1.0, 5)] * 3                     # equal spreads: identical deviations in every group
    flat = es.concentration_test(etas, same, n_perm=4000, n_boot=0)
    assert flat["verdict"] == "not supported" and flat["rho"] == pytest.approx(0, abs=1e-12)
    assert min(flat["p_less"], flat["p_greater"]) > 0.3 and flat["bf_p"] > 0.99
    one = es.concentration_test([10.0], [[1.0, 2.0]])
    assert one["verdict"] == "untestable"
    assert es.concentration_test(etas, [[1.0, None, math.nan], [2.0, 3.0], [1.0, 1.5]])["verdict"] == "untestable"


def test_configs_change_only_eta_and_seed():
    runs = es.run_configs("cpu")
    assert len(runs) == 12 and sorted({e for e, _, _ in runs.values()}) == [30.0, 100.0, 300.0]
    eta, seed, cfg = runs["eta300_s2"]
    from training.studies.symmetry_study import run_configs
    want = run_configs("cpu", 2, ["ecd"], ["sym"])["ecd_sym"]
    assert (eta, seed, cfg.ecd_eta, cfg.seed) == (300.0, 2, 300.0, 2)
    assert cfg.replace(ecd_eta=want.ecd_eta, keep_optimizer_states=True).hash() == want.hash()


def test_study_end_to_end_at_test_size(tmp_path, cache_dir, capsys):
    out = tmp_path / "eta"
    args = ["--size", "test", "--out-dir", str(out), "--jobs", "1", "--set", f"cache_dir={cache_dir}"]
    code, stdout, err = run_inprocess(capsys, "experiments/symmetry/eta_study.py", *args)
    assert code == 0, err
    res = json.loads((out / "analysis" / "ecd_eta.json").read_text())
    assert len(res["runs"]) == 6 and res["etas"] == [30.0, 300.0] and res["seeds"] == [0, 1, 2]
    assert all(r["state"] == "completed" for r in res["runs"].values()) and not res["failed_runs"]
    assert res["claim"]["verdict"] in ("supported", "contradicted", "not supported") and res["claim"]["seeds"] == 3
    assert f"verdict: {res['claim']['verdict']}" in stdout
    r = res["runs"]["eta300_s1"]
    vals = [m["val_loss"] for m in runio.read_metrics(out / "eta300_s1")]
    w = 0.9 ** np.arange(len(vals))[::-1]                        # EWM α 0.1 (adjust=True) at the last record
    assert r["smoothed_final_val_loss"] == pytest.approx(float(w @ vals / w.sum()), rel=1e-12)
    assert r["final_val_loss"] == vals[-1] and r["drift"] > 0 and 0 < r["pc1"] <= 1
    per = res["tests"]["final_val_loss"]["per_eta"]
    finals = [res["runs"][f"eta30_s{s}"]["final_val_loss"] for s in range(3)]
    assert per[0]["sd"] == pytest.approx(np.std(finals, ddof=1), rel=1e-12)
    report = (out / "report.md").read_text()
    assert "| final validation loss (primary) |" in report and "Seeds per η: 3" in report
    # a second invocation skips every finished run and gives the same numbers
    code, stdout, err = run_inprocess(capsys, "experiments/symmetry/eta_study.py", *args)
    assert code == 0, err
    assert stdout.count("skip eta") == 6 and "train eta" not in stdout
    again = json.loads((out / "analysis" / "ecd_eta.json").read_text())
    assert again["tests"] == res["tests"]


@pytest.mark.parametrize("bad,msg", [(["--etas", "30,0"], "positive"), (["--etas", "a"], "numbers"),
                                     (["--seeds", "1,1"], "distinct"), (["--set", "ecd_eta=5"], "--etas"),
                                     (["--size", "huge"], "unknown study size")])
def test_bad_input_is_one_error_line(bad, msg, tmp_path, capsys):
    code, _, err = run_inprocess(capsys, "experiments/symmetry/eta_study.py", "--out-dir", str(tmp_path / "x"), *bad)
    assert code != 0 and err.startswith("error:") and msg in err and len(err.strip().splitlines()) == 1, err
