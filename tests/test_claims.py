"""The claims ledger: the verdict rule, and the ledger end to end on synthetic trajectories of known structure."""
import json

import pytest
import torch

from conftest import run_inprocess
from trajfix import make_run
from training.core.config import preset
from training.core.regime import decay_factors, wd_for
from training.core.model import GPT, trunk_names
from training.studies.claims import CLAIMS, dig, ledger, markdown, verdict

T = 30                                    # checkpoint intervals


@pytest.mark.parametrize("effects,margin,expected,leaning", [
    ([0.10, 0.12, 0.11], 0.05, "confirmed", "confirmed"),
    ([0.10, 0.30, -0.01], 0.05, "inconclusive", "inconclusive"),          # not every seed in the direction
    ([0.06, 0.20, 0.01], 0.05, "inconclusive", "inconclusive"),           # mean < 2 sd
    ([0.01, 0.02, 0.0], 0.05, "not confirmed", "not confirmed"),          # below m/2 in every run
    ([-0.2, 0.1, 0.05], 0.05, "not confirmed", "not confirmed"),          # mean ≤ 0
    ([0.3], 0.05, "inconclusive (single seed)", "confirmed"),
])
def test_verdict_rule(effects, margin, expected, leaning):
    assert verdict(effects, margin) == (expected, leaning)


def test_dig():
    assert dig({"a": {"b": [1, {"c": 2}]}}, "a.b.1.c") == 2
    assert dig({"a": {}}, "a.b.c") is None and dig({"a": [1]}, "a.5") is None


def synthetic_run(path, seed: int, planted: float, decayed: bool = False):
    """A run whose trunk walks with unit increments in random directions, plus ``planted`` × a fixed direction
    per interval (0: a pure random walk, no structure). Its config has no weight decay, as its trajectory; with
    ``decayed`` the config's decay is the paper's Λ ≈ 2.56 and the trunk's start shrinks by the schedule's
    factors c(t) (the walk added on top): a trajectory whose one strong direction is the decay."""
    cfg = preset("test").replace(steps=10 * T, ckpt_every=10, lambda_step=4 * T, seed=seed, wd=0.0)
    if decayed:
        cfg = cfg.replace(wd=wd_for(cfg, 2.56))
    c = decay_factors(cfg, [10 * i for i in range(T + 1)])
    torch.manual_seed(seed)
    base = GPT(cfg, 64).state_dict()
    names = trunk_names(cfg)
    g = torch.Generator().manual_seed(1000 + seed)
    sizes = [base[n].numel() for n in names]
    D = sum(sizes)
    direction = torch.randn(D, generator=g)
    direction /= direction.norm()
    x = torch.zeros(D)
    thetas = []
    for i in range(T + 1):
        if i:
            u = torch.randn(D, generator=g)
            x = x + 0.05 * u / u.norm() + 0.05 * planted * direction
        sd = {k: v.clone() for k, v in base.items()}
        for n, piece in zip(names, torch.split(x, sizes)):
            sd[n] = c[i] * sd[n] + piece.reshape(sd[n].shape)
        thetas.append(sd)
    make_run(path, thetas, [10 * i for i in range(T + 1)], cfg)
    (path / "status.json").write_text(json.dumps({"state": "completed", "step": 10 * T}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    out = {}
    for kind, planted in (("planted", 0.6), ("walk", 0.0)):
        out[kind] = [synthetic_run(root / f"{kind}{s}", s, planted) for s in range(3)]
    out["decayed"] = [synthetic_run(root / f"decayed{s}", s, 0.0, decayed=True) for s in range(3)]
    return out


def analysed(capsys, run):
    if not (run / "analysis" / "trajectory_pca.json").exists():
        code, _, err = run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(run),
                                     "--null-samples", "5", "--no-blocks")
        assert code == 0, err
    return run


def claim_row(led, number):
    return next(c for c in led["claims"] if c["claim"] == number)


def test_planted_drift_is_confirmed_and_a_random_walk_is_not(capsys, runs):
    planted = ledger([analysed(capsys, r) for r in runs["planted"]])
    walk = ledger([analysed(capsys, r) for r in runs["walk"]])
    c1 = claim_row(planted, 1)
    assert c1["verdict"] == "confirmed", c1
    assert all(o > n + 0.05 for o, n in zip(c1["observed"], c1["null"]))
    w1 = claim_row(walk, 1)
    assert w1["verdict"] == "not confirmed", w1
    assert max(abs(e) for e in w1["effect"]) < 0.025          # a random walk sits at its own null
    # the other claims are judged or say why not, never silently missing
    assert {c["claim"] for c in planted["claims"]} == {c.number for c in CLAIMS}
    assert all(c["verdict"] in ("confirmed", "not confirmed", "inconclusive", "not measured")
               for c in planted["claims"])
    for number in (2, 5, 6):             # k95, rolling stability and early |C| separate planted structure from noise
        assert claim_row(planted, number)["verdict"] == "confirmed", claim_row(planted, number)
        assert claim_row(walk, number)["verdict"] == "not confirmed", claim_row(walk, number)
    # every number traces to its file and key
    data = json.loads((runs["planted"][0] / "analysis" / "trajectory_pca.json").read_text())
    assert c1["observed"][0] == dig(data, c1["source"]["observed"])
    assert planted["out_of_regime"] and any("Λ" in f for f in c1["regime_flags"])   # the test preset is not the paper's
    # no weight decay in these runs: the decay of the initialisation is not the backbone
    assert claim_row(planted, 3)["effect_mean"] > 0.1 and claim_row(walk, 3)["effect_mean"] > 0.1


def test_a_decaying_walk_beats_the_random_walk_but_not_the_weight_decayed_walk(capsys, runs):
    """Pure decay of the start plus isotropic noise: one strong direction (−θ̂0), which the plain random walk
    cannot explain and the weight-decayed walk does; claim 3 says the backbone is the decay."""
    led = ledger([analysed(capsys, r) for r in runs["decayed"]])
    c1 = claim_row(led, 1)
    data = [json.loads((r / "analysis" / "trajectory_pca.json").read_text()) for r in runs["decayed"]]
    rw = [dig(d, "trunk.null_profile.random_walk.pc1") for d in data]
    wd = [dig(d, "trunk.null_profile.weight_decayed_walk.pc1") for d in data]
    assert all(o > r + 0.05 for o, r in zip(c1["observed"], rw))          # the random walk alone would confirm it
    assert c1["null"] == pytest.approx(wd) and c1["verdict"] == "not confirmed", c1
    assert max(abs(e) for e in c1["effect"]) < 0.025
    c3 = claim_row(led, 3)
    assert c3["verdict"] == "not confirmed" and all(e < 0 for e in c3["effect"]), c3
    dec = [dig(d, "trunk.null_profile.decay.observed") for d in data]
    assert all(x["decay_share_end"] > 0.5 and x["theta_norm_ratio_end"] < 0.5 for x in dec)
    assert all(0.9 < x["pure_decay_over_observed_end"] < 1.1 for x in dec)


def test_one_seed_is_inconclusive(capsys, runs):
    led = ledger([analysed(capsys, runs["planted"][0])])
    c1 = claim_row(led, 1)
    assert c1["verdict"] == "inconclusive (single seed)" and c1["leaning"] == "confirmed"
    assert "Single seed" in markdown(led)


def test_the_command(capsys, runs, tmp_path):
    dirs = [str(analysed(capsys, r)) for r in runs["planted"]]
    args = [a for d in dirs for a in ("--run-dir", d)]
    code, out, err = run_inprocess(capsys, "analysis/claims/claims.py", *args)
    assert code == 2 and "--out-dir" in err.splitlines()[-1]
    code, out, err = run_inprocess(capsys, "analysis/claims/claims.py", *args, "--out-dir", str(tmp_path / "seeds"))
    assert code == 0, err
    led = json.loads((tmp_path / "seeds" / "claims.json").read_text())
    assert claim_row(led, 1)["verdict"] == "confirmed"
    md = (tmp_path / "seeds" / "claims.md").read_text()
    assert "| 1 | PC1" in md and "confirmed" in md
    code, out, err = run_inprocess(capsys, "analysis/claims/claims.py", "--run-dir", str(tmp_path / "nothing"))
    assert code == 2 and "does not exist" in err


def test_switching_claims_are_not_observed_without_switch_pairs(capsys, runs, tmp_path):
    """No run with a switch pair: claims 12, 13, 14, 21 say "not observed at this scale" with each run's evidence;
    one pair in one run: 12, 13, 14 and 21 are judged from their analyses (switching_alignment, manifold_dim,
    basin_depth), not measured where a run has none."""
    import shutil
    dirs = []
    for i, r in enumerate(runs["walk"]):
        d = tmp_path / r.name
        shutil.copytree(analysed(capsys, r), d)
        (d / "oscillation_manifest.json").write_text(json.dumps({"pairs": [], "prominence": 0.03}))
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "p_ood": 0.1 + 0.01 * s}) + "\n"
                                                 for s in (0, 10, 20)))
        dirs.append(d)
    led = ledger(dirs)
    for number in (12, 13, 14, 21):
        row = claim_row(led, number)
        assert row["verdict"] == "not observed at this scale"
        assert "0 pairs at prominence 0.03" in row["why"] and "p_ood 0.10–0.30" in row["why"]
    assert {x["claim"] for x in led["not_yet"]}.isdisjoint({12, 13, 14, 21})
    assert "not observed at this scale" in markdown(led)
    (dirs[1] / "oscillation_manifest.json").write_text(json.dumps({"pairs": [{"peak_step": 10}], "prominence": 0.03}))
    led = ledger(dirs)
    assert {x["claim"] for x in led["not_yet"]} == {16, 17, 18}
    assert claim_row(led, 14)["verdict"] == claim_row(led, 21)["verdict"] == "not measured"
    assert all(c["verdict"] != "not observed at this scale" for c in led["claims"])
    assert claim_row(led, 12)["verdict"] == "not measured"
    for i, d in enumerate(dirs):          # transverse pairs in every seed: below the same-lag null's 5th percentile
        (d / "analysis" / "switching_alignment.json").write_text(json.dumps({"trunk": {"nulls": {
            "claim12": {"median_abs_cos_percentile": 0.01 * i}, "claim13": {"median_capture_percentile": 0.5}}}}))
    led = ledger(dirs)
    assert claim_row(led, 12)["verdict"] == "confirmed" and claim_row(led, 13)["verdict"] == "not confirmed"
    for d in dirs:
        (d / "analysis" / "switching_alignment.json").unlink()
    # with a noise calibration only pairs above the noise level count: two detected pairs, none above it
    (dirs[1] / "oscillation_manifest.json").write_text(json.dumps(
        {"pairs": [{"peak_step": 10}, {"peak_step": 20}], "prominence": 0.02, "noise_multiplier": 4.0,
         "n_pairs_above_noise": 0}))
    led = ledger(dirs)
    row = claim_row(led, 12)
    assert row["verdict"] == "not observed at this scale"
    assert "0 of 2 pairs above the noise level (h = 4.00σ)" in row["why"]


def _study(root, name, claim, rows):
    d = root / name
    (d / "analysis").mkdir(parents=True)
    if claim == 16:
        (d / "analysis" / "sgd_control_results.json").write_text(json.dumps({"table9": rows}))
    else:
        (d / "analysis" / "beta_sweep_summary.json").write_text(json.dumps({"table": rows}))
    return d


def _t9(a, b, dominated=False):
    return [{"run": "A", "pc1_minus_null": a, "decay_dominated": False},
            {"run": "B", "pc1_minus_null": b, "decay_dominated": dominated, "norm_ratio": 0.02 if dominated else 0.8,
             "decay_share": 0.97 if dominated else 0.2, "lambda_eff": 10.2}]


def _b2(values):
    return [{"beta2": b, "pc1_minus_null": v} for b, v in zip((0.99, 0.95, 0.9, 0.8), values)]


def test_study_claims_16_and_18_by_the_rule(capsys, runs, tmp_path):
    """Claims 16 and 18 from study directories: decay-dominated SGD is said so, not confirmed; otherwise the rule
    applies to (PC1 − null) differences; a β2 trend that is not monotone cannot be confirmed."""
    run = [analysed(capsys, runs["walk"][0])]
    colinear = [_study(tmp_path, f"sgd{s}", 16, _t9(0.02, 0.10 + 0.01 * s)) for s in range(3)]
    row = claim_row(ledger(run, colinear), 16)
    assert row["verdict"] == "confirmed" and row["effect"] == pytest.approx([0.08, 0.09, 0.10])
    dominated = colinear[:2] + [_study(tmp_path, "sgd_dom", 16, _t9(0.02, 0.3, dominated=True))]
    row = claim_row(ledger(run, dominated), 16)
    assert row["verdict"] == "decay-dominated" and "1 of 3" in row["why"] and "0.02" in row["why"]
    same = [_study(tmp_path, f"sgd_same{s}", 16, _t9(0.05, 0.05 + 0.003 * s)) for s in range(3)]
    assert claim_row(ledger(run, same), 16)["verdict"] == "not confirmed"
    falling = [_study(tmp_path, f"b2_{s}", 18, _b2([0.10, 0.08, 0.05, 0.02 - 0.01 * s])) for s in range(3)]
    led = ledger(run, falling)
    row = claim_row(led, 18)
    assert row["verdict"] == "confirmed" and row["effect"] == pytest.approx([0.08, 0.09, 0.10])
    assert 18 not in {x["claim"] for x in led["not_yet"]} and 16 in {x["claim"] for x in led["not_yet"]}
    bumpy = falling[:2] + [_study(tmp_path, "b2_bumpy", 18, _b2([0.10, 0.12, 0.05, 0.0]))]
    row = claim_row(ledger(run, bumpy), 18)
    assert row["verdict"] == "inconclusive" and "b2_bumpy" in row["why"]
    assert "decay-dominated" in markdown(ledger(run, dominated + falling))
    with pytest.raises(Exception, match="holds no study result"):
        ledger(run, [tmp_path])
    code, _, err = run_inprocess(capsys, "analysis/claims/claims.py", "--run-dir", str(run[0]), "--study",
                                 str(tmp_path / "missing"), "--out-dir", str(tmp_path / "led"))
    assert code == 2 and err.startswith("error:") and "missing does not exist" in err


def test_results_page_is_written_from_the_ledger(capsys, runs, tmp_path):
    from training.studies.claims import _f
    led = ledger([analysed(capsys, r) for r in runs["planted"]])
    path = tmp_path / "claims.json"
    path.write_text(json.dumps(led))
    table = tmp_path / "t.md"
    table.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    out = tmp_path / "results.md"
    code, _, err = run_inprocess(capsys, "figures/make_results.py", "--ledger", f"planted seeds={path}",
                                 "--table", f"a table={table}", "--out", str(out))
    assert code == 0, err
    text = out.read_text()
    c1 = claim_row(led, 1)
    assert "## planted seeds" in text and "## a table" in text and "| 1 | 2 |" in text
    confirmed = sorted(c["claim"] for c in led["claims"] if c["verdict"] == "confirmed")
    assert f"- confirmed: claims {', '.join(map(str, confirmed))}" in text
    assert f"observed {_f(c1['observed_mean'])} against a null of {_f(sum(c1['null']) / 3)} over 3 seeds" in text
    assert "outside the paper's" in text                     # the test preset's regime is said
    for bad in (["--ledger", str(path)], ["--ledger", f"x={tmp_path / 'none.json'}"],
                ["--ledger", f"x={table}"]):
        code, _, err = run_inprocess(capsys, "figures/make_results.py", *bad, "--out", str(tmp_path / "r2.md"))
        assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1, err


def test_results_page_finds_the_cpu_study_tables_by_default(capsys, runs, tmp_path, monkeypatch):
    """With no flag, the page takes the ledgers of make demo-seeds / make demo and every cpu study table that
    exists, in seed order, with the tables' headings nested under the page's."""
    led = ledger([analysed(capsys, r) for r in runs["planted"]])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "cpu_seeds").mkdir(parents=True)
    (tmp_path / "runs" / "cpu_seeds" / "claims.json").write_text(json.dumps(led))
    for name, file, seed in (("sgd_controls_cpu_s271", "table9.md", 271), ("sgd_controls_cpu_s42", "table9.md", 42),
                             ("sgd_controls_matched_cpu_s42", "table9.md", 42),
                             ("sgd_controls_trainable_cpu_s42", "table9.md", 42),
                             ("beta_sweep_cpu_s42", "table_beta2.md", 42), ("beta_sweep_quick_s42", "table_beta2.md", 42)):
        d = tmp_path / "runs" / name / "analysis"
        d.mkdir(parents=True)
        (d / file).write_text(f"# study {name}\n\n| x |\n|---|\n| {seed} |\n")
    code, out, err = run_inprocess(capsys, "figures/make_results.py")
    assert code == 0, err
    text = (tmp_path / "docs" / "results.md").read_text()
    heads = [line for line in text.splitlines() if line.startswith("## ")]
    assert heads[1:] == ["## SGD-family controls (Table 9's decays), seed 42",
                         "## SGD-family controls (Table 9's decays), seed 271",
                         "## SGD-family controls (decays matched to AdamW's Λ_eff), seed 42",
                         "## SGD-family controls (learning rates at which SGD trains, decays matched), seed 42",
                         "## AdamW β2 sweep, seed 42"]                       # the quick study is not a cpu table
    assert "### study sgd_controls_cpu_s271" in text and "\n# study" not in text
    assert "beta_sweep_quick" not in text


def test_claim_15_by_surrogates_of_first_differences(capsys, runs, tmp_path):
    """p_ood that moves with ‖r(t)‖ interval by interval is confirmed; a smooth hump of p_ood with its own
    fluctuations, beside the hump-shaped ‖r(t)‖ of a random walk, is not (the calibration of the surrogate test
    itself is in tests/test_surrogates.py)."""
    import shutil

    import numpy as np
    coupled, trend = [], []
    for s, r in enumerate(runs["walk"]):
        res = json.loads((analysed(capsys, r) / "analysis" / "trajectory_pca.json").read_text())
        dec = res["trunk"]["decomposition"]
        rn = np.asarray(dec["residual_norm"])
        rng = np.random.default_rng(s)
        for kind, p in (("coupled", 0.2 + 0.5 * rn / rn.max() + 0.002 * rng.standard_normal(len(rn))),
                        ("trend", 0.2 + 0.5 * np.sin(np.linspace(0, np.pi, len(rn)))
                         + 0.02 * np.cumsum(rng.standard_normal(len(rn))))):
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis" / "trajectory_pca.json").unlink()
            (d / "metrics.jsonl").write_text("".join(json.dumps({"step": st, "p_ood": float(v)}) + "\n"
                                                     for st, v in zip(dec["steps"], p)))
            (coupled if kind == "coupled" else trend).append(analysed(capsys, d))
    row = claim_row(ledger(coupled), 15)
    assert row["verdict"] == "confirmed" and all(p < 0.01 for p in row["observed"]), row
    led = ledger(trend)
    row = claim_row(led, 15)
    assert row["verdict"] != "confirmed", row
    assert all(e < 0 for e in row["effect"]) and row["verdict"] == "not confirmed", row
    assert 15 not in {x["claim"] for x in led["not_yet"]}
    # a run without a probe has no coupling: not measured, with the reason
    assert claim_row(ledger(runs["walk"]), 15)["verdict"] == "not measured"


def test_claim_7_from_the_replay_summary(runs, tmp_path):
    """Updates twice as aligned as the gradients they integrate at ≥ 3 checkpoints in every seed: confirmed;
    ratios at the averaging level (≈ 1): not confirmed; a run with only two replayable checkpoints: not measured."""
    import shutil

    from training.geometry.replay import claim7_summary
    dirs = {"integrating": [], "averaging": [], "short": []}
    for s, r in enumerate(runs["walk"]):
        for kind, ratios in (("integrating", [4.0, 2.6 + 0.1 * s, 3.1, 0.9]), ("averaging", [1.2, 0.9, 1.05 + 0.02 * s]),
                             ("short", [5.0, 4.0])):
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            summary = claim7_summary([{"held_out": {"ratio_gradient": x}} for x in ratios])
            if summary["third_largest_ratio"] is None:
                summary["why_not"] = "2 replayable checkpoint(s); train the run with --set optimizer_state_every=120"
            (d / "analysis" / "integration_test.json").write_text(json.dumps({"claim7": summary}))
            dirs[kind].append(d)
    good = claim_row(ledger(dirs["integrating"]), 7)
    assert good["verdict"] == "confirmed" and good["observed"] == pytest.approx([2.6, 2.7, 2.8]), good
    assert claim_row(ledger(dirs["averaging"]), 7)["verdict"] == "not confirmed"
    short = claim_row(ledger(dirs["short"]), 7)
    assert short["verdict"] == "not measured" and "optimizer_state_every" in short["why"], short
    assert claim_row(ledger(runs["walk"]), 7)["verdict"] == "not measured"


def test_claim_9_from_the_block_dominance_summary(runs, tmp_path):
    """The ledger reads claim9.excess: positive in every seed is confirmed, negative (the PC2 or random ratio as
    large as the backbone's) not confirmed."""
    import shutil
    rows = {}
    for kind, excess in (("localised", (4.0, 5.0, 6.0)), ("everywhere", (-20.0, -3.0, -8.0))):
        dirs = []
        for s, r in enumerate(runs["walk"]):
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            (d / "analysis" / "residual_decomposition.json").write_text(json.dumps({"claim9": {"excess": excess[s]}}))
            dirs.append(d)
        rows[kind] = claim_row(ledger(dirs), 9)
    assert rows["localised"]["verdict"] == "confirmed" and rows["localised"]["observed"] == [4.0, 5.0, 6.0]
    assert rows["everywhere"]["verdict"] == "not confirmed"
    assert claim_row(ledger(runs["walk"]), 9)["verdict"] == "not measured"


@pytest.mark.parametrize("number, key, good, bad", [
    (10, ("claim10", "excess"), (0.5, 0.7, 0.9), (-0.6, -0.4, -0.5)),
    (11, ("claim11", "median_ratio"), (0.8, 1.0, 1.2), (9.0, 12.0, 20.0)),
])
def test_claims_10_and_11_from_the_fisher_summaries(runs, tmp_path, number, key, good, bad):
    """Claim 10 reads claim10.excess (> 0: α ≥ 3 against the energy-matched null and grows 5×), claim 11
    claim11.median_ratio (≤ 3: the top eigenvector overlaps v_b no more than PC2 and in-span directions)."""
    import shutil
    rows = {}
    for kind, values in (("good", good), ("bad", bad)):
        dirs = []
        for s, r in enumerate(runs["walk"]):
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            (d / "analysis" / "rayleigh_quotients.json").write_text(json.dumps({key[0]: {key[1]: values[s]}}))
            dirs.append(d)
        rows[kind] = claim_row(ledger(dirs), number)
    assert rows["good"]["verdict"] == "confirmed", rows["good"]
    assert rows["bad"]["verdict"] == "not confirmed", rows["bad"]


def test_claim_20_from_the_reheating_summary(runs, tmp_path):
    """Reheating displacements with a tenth of the run's own share along v_b in every seed: confirmed; with as
    much as the run's own motion: not confirmed; no reheating analysis: not measured."""
    import shutil
    dirs = {"transverse": [], "along": []}
    for s, r in enumerate(runs["walk"]):
        for kind, ratio in (("transverse", 0.1 + 0.02 * s), ("along", 0.9 + 0.05 * s)):
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            (d / "analysis" / "reheating.json").write_text(json.dumps({"claim20": {"largest_ratio": ratio}}))
            dirs[kind].append(d)
    ok = claim_row(ledger(dirs["transverse"]), 20)
    assert ok["verdict"] == "confirmed" and ok["null"] == [0.5] * 3, ok
    assert claim_row(ledger(dirs["along"]), 20)["verdict"] == "not confirmed"
    assert claim_row(ledger(runs["walk"]), 20)["verdict"] == "not measured"


def test_claim_8_from_the_gradient_floor_summary(capsys, runs, tmp_path):
    """Isotropic per-batch gradients are at the noise floor in every seed (confirmed); gradients that share a
    component along v_b are not, although each |cos| is at the floor (the t-statistic sees the common sign)."""
    import shutil

    import numpy as np
    import torch

    from training.geometry.gradients import alignment_stats, floor_summary
    D, M = 5000, 32
    v = np.zeros(D)
    v[0] = 1.0
    dirs = {"iso": [], "shared": []}
    for s, r in enumerate(runs["walk"]):
        rng = np.random.default_rng(100 + s)
        for kind, shift in (("iso", 0.0), ("shared", 0.6)):
            stats = []
            for _ in range(3):                                    # three checkpoints
                G = rng.standard_normal((M, D))
                G[:, 0] += shift
                stats.append(alignment_stats(torch.from_numpy(G), v))
            d = tmp_path / f"{kind}{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            (d / "analysis" / "residual_decomposition.json").write_text(
                json.dumps({"claim8": {"part": "total", **floor_summary(stats)}}))
            dirs[kind].append(d)
    iso, shared = claim_row(ledger(dirs["iso"]), 8), claim_row(ledger(dirs["shared"]), 8)
    assert iso["verdict"] == "confirmed" and all(e > 0 for e in iso["effect"]), iso
    assert shared["verdict"] == "not confirmed" and all(e < 0 for e in shared["effect"]), shared
    assert claim_row(ledger(runs["walk"]), 8)["verdict"] == "not measured"


@pytest.mark.parametrize("number,source,key,good,bad", [
    (14, "manifold_dim", ("manifold", "trajectory_null", "participation_ratio", "observed_percentile"),
     (97.0, 99.0, 98.0), (40.0, 96.0, 55.0)),
    (21, "basin_depth", ("claim21", "second_z"), (3.0, 4.5, 3.5), (0.2, -1.0, 0.5)),
])
def test_claims_14_and_21_from_their_analyses(runs, tmp_path, number, source, key, good, bad):
    """Claim 14 reads B7's percentile of the switching directions' participation ratio among same-lag
    displacements (> 95: more independent than ordinary motion), claim 21 the second largest peak-minus-trough
    z over σ > 0 (> 2 at ≥ 2 σ values); an analysis that could not compute them says why."""
    import shutil

    def nest(keys, value):
        return {keys[0]: nest(keys[1:], value)} if keys else value
    rows = {}
    for kind, values in (("good", good), ("bad", bad), ("why", (None,) * 3)):
        dirs = []
        for s, r in enumerate(runs["walk"]):
            d = tmp_path / f"{kind}{number}_{s}"
            shutil.copytree(r, d)
            (d / "analysis").mkdir(exist_ok=True)
            data = nest(key, values[s]) if values[s] is not None else (
                {"manifold": None, "note": "only 1 switch pair"} if number == 14 else
                {"claim21": {"second_z": None, "why_not": "0 peak and 1 trough checkpoint(s)"}})
            (d / "analysis" / f"{source}.json").write_text(json.dumps(data))
            dirs.append(d)
        rows[kind] = claim_row(ledger(dirs), number)
    assert rows["good"]["verdict"] == "confirmed", rows["good"]
    assert rows["bad"]["verdict"] == "not confirmed", rows["bad"]
    assert rows["why"]["verdict"] == "not measured"
    assert ("only 1 switch pair" if number == 14 else "0 peak and 1 trough") in rows["why"]["why"]


def _result(root, name, rel, data):
    d = root / name
    (d / "analysis").mkdir(parents=True)
    (d / rel).write_text(json.dumps(data))
    return d


def _matched(a, c, drifts=(6, 6), dominated=False):
    rows = [{"run": "A", "window": list(range(drifts[0] + 1)), "n_drifts": drifts[0], "never_reached": False,
             "pc1_minus_null": a, "window_decay_dominated": False},
            {"run": "C", "window": list(range(drifts[1] + 1)), "n_drifts": drifts[1], "never_reached": False,
             "pc1_minus_null": c, "window_decay_dominated": dominated, "window_decay_share": 0.95 if dominated else 0.1,
             "norm_ratio": 0.4}]
    return {"table9": [], "matched": {"claim17": {"target": 3.0, "min_drifts": 6, "rows": rows}}}


def test_claim_17_from_matched_windows(tmp_path):
    """Claim 17 (SGD + momentum more colinear than AdamW at matched loss, beyond each window's random walk):
    confirmed when C − A clears the margin in every seed; inconclusive whatever the numbers when a window has
    fewer than 6 drifts; decay-dominated when C's window is the decay of its start; not measured on an analysis
    that predates the matched windows."""
    from training.studies.claims import SGD_RESULT
    ok = [_result(tmp_path, f"ok{s}", SGD_RESULT, _matched(0.01, 0.12 + 0.01 * s)) for s in range(3)]
    row = claim_row(ledger([], ok), 17)
    assert row["verdict"] == "confirmed" and row["effect"] == pytest.approx([0.11, 0.12, 0.13])
    assert claim_row(ledger([], ok), 16)["verdict"] == "not measured"       # same directory, no Table 9 rows
    short = ok[:2] + [_result(tmp_path, "short", SGD_RESULT, _matched(0.01, 0.2, drifts=(6, 2)))]
    row = claim_row(ledger([], short), 17)
    assert row["verdict"] == "inconclusive" and "2 drifts" in row["why"] and "row count" in row["why"]
    dom = [_result(tmp_path, "dom", SGD_RESULT, _matched(0.01, 0.2, dominated=True))]
    assert claim_row(ledger([], dom), 17)["verdict"] == "decay-dominated"
    old = [_result(tmp_path, "old", SGD_RESULT, {"table9": [], "matched": {"rows": []}})]
    row = claim_row(ledger([], old), 17)
    assert row["verdict"] == "not measured" and "--analyse-only" in row["why"]


def _modadd(r90s, null, learned=True, ratios=(0.3, 0.4), seed=None):
    runs = {role: {"spectra": {"summary": {"attention": {"r90_median": r, "null_r90_median": null}}}}
            for role, r in zip(("attn", "attn_seed2"), r90s)}
    if seed is not None:
        runs["attn"]["config"], runs["attn_seed2"]["config"] = {"seed": seed}, {"seed": seed + 1}
    runs["attn"]["commutators"] = {"summary": {"ratio_exec_early": ratios[0], "ratio_exec_late": ratios[1]}}
    return {"runs": runs, "headline": {"learned": {"attn": learned, "attn_seed2": learned}}}


def test_modadd_and_symmetry_claims_join_the_ledger(capsys, tmp_path):
    """The modular-addition study's collapse (r90 below its random-walk null by a component, per seed) and
    commutator claims (ρ_exec/ρ_rand below 1 by the margin), and the symmetry study's "bQ helps ECD" (the final
    loss change across seeds), by the same rule; a model that did not learn the task cannot decide; the ledger
    runs on study directories alone and names them."""
    from training.studies.claims import MODADD_RESULT, SYMMETRY_RESULT
    low = [_result(tmp_path, f"m{s}", MODADD_RESULT, _modadd((2.0, 2.5 + 0.1 * s), 6.0)) for s in range(2)]
    led = ledger([], low)
    m1, m2 = claim_row(led, "M1"), claim_row(led, "M2")
    assert m1["verdict"] == "confirmed" and len(m1["effect"]) == 4 and m1["effect"][0] == pytest.approx(4.0)
    assert m2["verdict"] == "confirmed" and m2["effect"] == pytest.approx([0.6, 0.6])      # 1 − max(0.3, 0.4)
    assert led["runs"] == [] and led["not_yet"] == [] and all(c["regime_flags"] == [] for c in led["claims"])
    enriched = [_result(tmp_path, f"e{s}", MODADD_RESULT, _modadd((3.0, 3.0), 3.3, ratios=(9.7, 2.1 + s)))
                for s in range(3)]
    led = ledger([], enriched)
    assert claim_row(led, "M1")["verdict"] == "not confirmed"       # 0.3 of a component below the null
    assert claim_row(led, "M2")["verdict"] == "not confirmed"       # the seed's own 9.7× early
    unlearned = [_result(tmp_path, f"u{s}", MODADD_RESULT, _modadd((2.0, 2.0), 6.0, learned=False)) for s in range(2)]
    row = claim_row(ledger([], unlearned), "M1")
    assert row["verdict"] == "inconclusive" and "did not learn" in row["why"]
    overlapping = [_result(tmp_path, f"o{s}", MODADD_RESULT, _modadd((2.0, 2.5), 6.0, seed=s)) for s in range(2)]
    row = claim_row(ledger([], overlapping), "M1")         # study seeds 0 and 1 share the run of seed 1
    assert [x["run"] for x in row["inputs"]] == ["attn (seed 0)", "attn_seed2 (seed 1)", "attn_seed2 (seed 2)"]
    helps = [_result(tmp_path, f"s{s}", SYMMETRY_RESULT, {"deltas": {"ecd": {"final": -0.08 - 0.01 * s,
                                                                              "best": -0.05}}}) for s in range(3)]
    noise = [_result(tmp_path, f"n{s}", SYMMETRY_RESULT, {"deltas": {"ecd": {"final": f}}})
             for s, f in enumerate((-0.05, 0.04, 0.003))]
    assert claim_row(ledger([], helps), "S1")["verdict"] == "confirmed"
    assert claim_row(ledger([], noise), "S1")["verdict"] == "inconclusive"    # one seed helps, two do not
    hurts = [_result(tmp_path, f"h{s}", SYMMETRY_RESULT, {"deltas": {"ecd": {"final": f}}})
             for s, f in enumerate((0.02, 0.03, -0.01))]
    assert claim_row(ledger([], hurts), "S1")["verdict"] == "not confirmed"
    assert claim_row(ledger([], helps[:1]), "S1")["verdict"] == "inconclusive (single seed)"
    code, out, err = run_inprocess(capsys, "analysis/claims/claims.py", "--study", str(low[0]), "--study",
                                   str(helps[0]), "--study", str(helps[1]), "--out-dir", str(tmp_path / "led"))
    assert code == 0, err
    md = (tmp_path / "led" / "claims.md").read_text()
    assert "| M1 |" in md and "| S1 |" in md and "Studies:" in md and "Regime:" not in md
    assert [c["claim"] for c in json.loads((tmp_path / "led" / "claims.json").read_text())["claims"]] == \
        ["M1", "M2", "S1"]
