"""The early-diagnostics study (training/studies/modadd_early.py): its statistics against scipy, closed forms and
Monte Carlo, the grokking rule and the verdict rule on planted cases, and the command end to end at the test size."""
import json
import math

import numpy as np
import pytest
from scipy.stats import norm, spearmanr

from conftest import run_inprocess
from training.studies import modadd_early as me


def test_spearman_and_fisher_ci_match_scipy_and_the_closed_form():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 20).astype(float)             # ties
    y = x + rng.standard_normal(20)
    assert me.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert me.spearman(np.ones(5), np.arange(5)) is None
    rho, n = 0.6, 16
    h = norm.ppf(0.975) * math.sqrt(1.06 / 13)
    assert me.fisher_ci(rho, n) == pytest.approx([math.tanh(math.atanh(rho) - h), math.tanh(math.atanh(rho) + h)])
    assert me.fisher_ci(0.5, 3) is None


def test_bootstrap_and_permutation_nulls():
    x = np.arange(10.0)
    c = me.rank_correlation(x, x ** 3, n_boot=300, n_perm=2000)
    assert c["rho"] == pytest.approx(1.0) and c["bootstrap_ci"] == pytest.approx([1.0, 1.0])
    assert c["perm_p"] == pytest.approx(1 / 2001)         # no permutation reaches |ρ| = 1 (p = 2/10! otherwise)
    # pure noise: the permutation p-value is (about) uniform -- its false-positive rate at 0.05 is ≈ 0.05
    rng = np.random.default_rng(1)
    ps = [me.rank_correlation(rng.standard_normal(10), rng.standard_normal(10), n_boot=0, n_perm=99,
                              seed=i)["perm_p"] for i in range(300)]
    assert 0.02 < np.mean(np.array(ps) <= 0.05) < 0.09
    # a knob that sets both variables: strong overall ρ, nothing within the groups (stratified p large) ...
    g = np.repeat([0, 1, 2, 3], 6)
    x = g + 0.01 * rng.standard_normal(24)
    y = g + 0.01 * rng.standard_normal(24)
    c = me.rank_correlation(x, y, g, n_boot=200, n_perm=1000)
    assert c["rho"] > 0.9 and c["perm_p"] < 0.01 and c["stratified_perm_p"] > 0.05
    assert "not beyond the knob" in me.verdict(c)
    # ... and an association inside every group
    y2 = g + 0.01 * (x - g) * 100 + 0.001 * rng.standard_normal(24)
    c2 = me.rank_correlation(x, y2, g, n_boot=200, n_perm=1000)
    assert c2["within_group_rho_mean"] > 0.9 and c2["stratified_perm_p"] < 0.05
    assert me.verdict(c2) == "predictive; beyond the knob"


def test_verdict_rule():
    assert me.verdict({"rho": 0.6, "bootstrap_ci": [0.1, 0.9]}) == "predictive"
    assert me.verdict({"rho": 0.45, "bootstrap_ci": [0.1, 0.9]}) == "inconclusive"       # |ρ| < 0.5
    assert me.verdict({"rho": -0.7, "bootstrap_ci": [-0.9, -0.2]}) == "predictive"
    assert me.verdict({"rho": 0.05, "bootstrap_ci": [-0.2, 0.25]}) == "not predictive"
    assert me.verdict({"rho": 0.05, "bootstrap_ci": [-0.5, 0.5]}) == "inconclusive"
    assert me.verdict({"rho": None, "reason": "constant"}).startswith("not applicable")


def test_grokking_rule_on_planted_curves():
    steps = list(range(0, 101, 5))
    train = [min(1.0, s / 20) for s in steps]                   # fitted (≥ 0.9) at step 20
    late = [0.1 if s < 60 else 0.9 for s in steps]              # held-out jumps 0.8 between 55 and 60
    g = me.grokking([{"step": s, "acc": a, "train_acc": t} for s, a, t in zip(steps, late, train)], 100)
    assert g["fit_step"] == 20 and g["grokked"] and g["jump"] == pytest.approx(0.8)
    assert 50 <= g["jump_start"] <= 55 and g["jump_end"] == 60     # the first window of at most 10 steps holding it
    slow = [0.1 + 0.8 * s / 100 for s in steps]                 # gradual: ≤ 0.08 per 10 % of training
    assert not me.grokking([{"step": s, "acc": a, "train_acc": t} for s, a, t in zip(steps, slow, train)], 100)["grokked"]
    together = [min(1.0, s / 20) for s in steps]                # generalises while it fits: no gap
    assert not me.grokking([{"step": s, "acc": a, "train_acc": t} for s, a, t in zip(steps, together, train)],
                           100)["grokked"]
    never = me.grokking([{"step": s, "acc": 0.1, "train_acc": 0.5} for s in steps], 100)
    assert never["fit_step"] is None and not never["grokked"]
    assert me.nearest([0, 10, 20, 30, 40], 0.15) == 1 and me.nearest([0, 10, 20, 30, 40], 0.2) == 1


def test_command_end_to_end(tmp_path, capsys):
    study = tmp_path / "early"
    code, out, err = run_inprocess(capsys, "experiments/modadd/early_diagnostics.py", "--preset", "test", "--jobs", "1",
                                   "--out-dir", str(study))
    assert code == 0, err
    res = json.loads((study / "analysis" / "modadd_early.json").read_text())
    assert len(res["runs"]) == 6 and (study / "report.md").exists()
    for name, r in res["runs"].items():
        rows = [json.loads(line) for line in (study / name / "metrics.jsonl").read_text().splitlines()]
        assert r["final_heldout_acc"] == rows[-1]["acc"] and "train_acc" in rows[-1]
        e = r["early"]["0.15"]
        assert e["step"] == 4 and e["checkpoints"] == 3
    c = res["correlations"]["0.15"]["final_heldout_acc"]["heldout_acc_early"]
    names = sorted(res["runs"])
    x = [res["runs"][n]["early"]["0.15"]["heldout_acc_early"] for n in names]
    y = [res["runs"][n]["final_heldout_acc"] for n in names]
    if c["rho"] is not None:
        assert c["rho"] == pytest.approx(spearmanr(x, y).statistic)
    assert set(res["verdicts"]) >= {f"0.15|{d}" for d in me.DIAGNOSTICS}
    assert "| diagnostic | ρ (Spearman) |" in (study / "report.md").read_text()
    # a second invocation trains nothing and gives the same numbers
    code, out, err = run_inprocess(capsys, "experiments/modadd/early_diagnostics.py", "--preset", "test", "--jobs", "1",
                                   "--out-dir", str(study))
    assert code == 0 and "skip" in out
    assert json.loads((study / "analysis" / "modadd_early.json").read_text())["correlations"] == res["correlations"]
    code, out, err = run_inprocess(capsys, "experiments/modadd/early_diagnostics.py", "--preset", "test",
                                   "--set", "wd=0.1", "--out-dir", str(study))
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
    code, out, err = run_inprocess(capsys, "experiments/modadd/early_diagnostics.py", "--preset", "huge")
    assert code == 2 and "preset" in err
