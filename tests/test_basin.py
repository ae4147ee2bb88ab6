"""Basin tests B1-B3, B6, B7: the library (relaxation, perturbation, σ½, drift table, manifold nulls)
against definitions and dense numpy, and the three scripts end to end on a tiny real run."""
import json
import math
import runpy
import shutil
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_inprocess, run_script
from training.core import runio
from training.geometry.analysis_io import open_run
from training.geometry.basin import (RELAX_TAG, depth_summary, disjoint_pairs, drift_table, isotropic_cos_gram, parse_pairs,
                            percentile_of, perturb_trunk, perturbation_seed, probe_eval, relax, relax_batch, relax_defaults,
                            peak_trough_depth, sigma_half, spectrum_stats)
from training.core.config import preset
from training.core.errors import UserError
from training.core.model import trunk_names
from training.geometry.switching import Oscillations, SwitchPair, manifest_dict
from training.geometry.trajectory import CheckpointSet, compute_gram, k_at

TESTS = "analysis/basin/basin_tests.py"
DEPTH = "analysis/basin/basin_depth.py"
MANIFOLD = "analysis/basin/manifold_dim.py"
PAIRS = [(10, 5), (10, 15), (20, 15)]          # (peak, trough): a rise, a fall, a rise


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread while these tests run: the tiny models gain nothing from more, and on a shared
    2-core machine oversubscribed threads make each relaxation ~20x slower. Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def write_manifest(run, pairs):
    """RUN/oscillation_manifest.json in detect_oscillations.py's format, for hand-chosen pairs."""
    p = {r["step"]: r["p_ood"] for r in runio.read_metrics(run)}
    qs = [SwitchPair(pk, tr, p[pk], p[tr], p[pk] - p[tr], "fall" if tr > pk else "rise") for pk, tr in pairs]
    peaks, troughs = sorted({pk for pk, _ in pairs}), sorted({tr for _, tr in pairs})
    osc = Oscillations(peaks, troughs, [0.1] * len(peaks), [0.1] * len(troughs), qs, 0.03)
    runio.atomic_write_json(run / "oscillation_manifest.json", manifest_dict(osc, {"metric": "p_ood", "hand": True}))


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("basin_run") / "run"
    shutil.copytree(tiny_run, dst)
    write_manifest(dst, PAIRS)
    return dst


@pytest.fixture(scope="module")
def dense(run):
    ck = CheckpointSet(run)
    return {s: ck.vector(s) for s in ck.steps}


def unit(v):
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------- σ½ and small pieces
def test_sigma_half_on_hand_made_numbers():
    s = [0, 0.01, 0.03, 0.1, 0.3]
    # D_0/2 = 0.4; first below it at σ = 0.1 (0.3), interpolated between (0.03, 0.5) and (0.1, 0.3)
    assert sigma_half(s, [0.8, 0.7, 0.5, 0.3, 0.1]) == pytest.approx(0.03 + 0.1 * 0.07 / 0.2)
    assert sigma_half(s, [0.8, 0.75, 0.7, 0.6, 0.5]) == math.inf               # never below half
    assert sigma_half(s, [0.0, 0.0, 0.0, 0.0, 0.0]) == 0.0                     # no probe basin to start with
    assert sigma_half(s, [0.8, 0.5, 0.1, 0.0, 0.0]) == pytest.approx(0.01 + 0.1 * 0.02 / 0.4)
    assert sigma_half(s, [0.8, 0.4, 0.1, 0.0, 0.0]) == pytest.approx(0.01)   # exactly half: D = D_0/2 at 0.01
    assert sigma_half(s, [0.6, 0.2, 0.5, 0.1, 0.0]) == pytest.approx(0.01 * 0.3 / 0.4)  # the first crossing counts
    assert sigma_half([0.1, 0, 0.3], [0.7, 1.0, 0.2]) == pytest.approx(0.1 + 0.2 * 0.2 / 0.5)  # any grid order
    with pytest.raises(UserError, match="contain 0"):
        sigma_half([0.01, 0.1], [0.5, 0.2])


def test_peak_trough_depth_against_a_direct_computation():
    """Claim 21's z_σ: the trials' retained fraction p/D_0 pooled per role, Welch's standard error, checked against
    a computation written out with numpy; a checkpoint that is both peak and trough, or has no basin at σ = 0, is
    left out; one trial per checkpoint and one checkpoint per role cannot give a standard error."""
    rng = np.random.default_rng(3)
    sigmas = [0.0, 0.01, 0.03, 0.1]

    def ckpt(step, role, d0, keep, n=4):
        trials = {0.0: [{"p_ood": d0 + 0.01 * rng.standard_normal(), "nll_ood": 1.0, "lm_ood": 4.0, "regime": "probe"}
                        for _ in range(n)]}
        for s in sigmas[1:]:
            trials[s] = [{"p_ood": d0 * keep(s) + 0.02 * rng.standard_normal(), "nll_ood": 1.0, "lm_ood": 4.0,
                          "regime": "probe"} for _ in range(n)]
        per = depth_summary(sigmas, trials)
        return {"step": step, "role": role, "per_sigma": per,
                "sigma_half": sigma_half(sigmas, [d["mean_p_ood"] for d in per])}
    cks = [ckpt(10, "peak", 0.9, lambda s: 1 - s), ckpt(30, "peak", 0.8, lambda s: 1 - 2 * s),
           ckpt(20, "trough", 0.5, lambda s: 1 - 8 * s), ckpt(40, "trough", 0.6, lambda s: 1 - 6 * s),
           ckpt(50, "peak/trough", 0.7, lambda s: 1.0), ckpt(60, "trough", 0.01, lambda s: 1.0),
           ckpt(70, "late", 0.9, lambda s: 1.0)]
    out = peak_trough_depth(cks)
    assert out["n_checkpoints"] == {"peak": 2, "trough": 2} and out["dropped"][0]["step"] == 60
    zs = []
    for row, s in zip(out["per_sigma"], sigmas[1:]):
        ret = {}
        for role, steps in (("peak", (10, 30)), ("trough", (20, 40))):
            vals = []
            for c in cks:
                if c["step"] in steps:
                    d0 = np.mean([d["p_ood_trials"] for d in c["per_sigma"] if d["sigma"] == 0.0][0])
                    vals += [p / d0 for d in c["per_sigma"] if d["sigma"] == s for p in d["p_ood_trials"]]
            ret[role] = np.array(vals)
        se = np.sqrt(ret["peak"].var(ddof=1) / 8 + ret["trough"].var(ddof=1) / 8)
        z = (ret["peak"].mean() - ret["trough"].mean()) / se
        assert row["z"] == pytest.approx(z, rel=1e-10)
        zs.append(z)
    assert out["second_z"] == pytest.approx(sorted(zs)[-2]) and out["second_z"] > 2        # deeper peaks planted
    assert out["n_sigma_separated"] == sum(z >= 2 for z in zs)
    one = peak_trough_depth([ckpt(10, "peak", 0.9, lambda s: 1.0, n=1), ckpt(20, "trough", 0.5, lambda s: 1.0, n=1)])
    assert one["second_z"] is None and "σ value(s)" in one["why_not"]
    none = peak_trough_depth([c for c in cks if "trough" not in c["role"] or c["step"] == 60])
    assert none["second_z"] is None and "0 trough" in none["why_not"]


def test_percentile_spectrum_and_disjoint_pairs():
    assert percentile_of(3, [1, 2, 3, 4]) == pytest.approx(62.5)
    assert percentile_of(0, [1, 2]) == 0.0 and percentile_of(5, [1, 2]) == 100.0
    M = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 1.0]])
    s = spectrum_stats(M)
    lam = np.array([1.6, 1.0, 0.4])
    assert np.allclose(s["eigenvalues"], lam) and np.allclose(s["explained"], lam / 3)
    assert s["k95"] == 3 and s["participation_ratio"] == pytest.approx(9 / np.sum(lam ** 2))
    p = lam / 3
    assert s["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))))
    assert s["mean_abs_cos"] == pytest.approx(0.2) and s["max_abs_cos"] == pytest.approx(0.6)
    qs = [SwitchPair(10, 5, 0, 0, 0.2, "rise"), SwitchPair(10, 15, 0, 0, 0.5, "fall"),
          SwitchPair(20, 15, 0, 0, 0.1, "rise")]
    assert disjoint_pairs(qs) == [1]
    assert disjoint_pairs([qs[0], qs[2]]) == [0, 1]


def test_parse_pairs_errors():
    steps, p = [0, 5, 10], {0: 0.0, 5: 0.5, 10: 0.1}
    q = parse_pairs("5:10, 5:0", steps, p)
    assert [(x.peak_step, x.trough_step, x.kind) for x in q] == [(5, 10, "fall"), (5, 0, "rise")]
    assert q[0].amplitude == pytest.approx(0.4)
    for bad, msg in (("5-10", "PEAK:TROUGH"), ("5:7", "no checkpoint at step 7"), ("5:5", "same peak"), ("", "comma")):
        with pytest.raises(UserError, match=msg):
            parse_pairs(bad, steps, p)


# ---------------------------------------------------------------------------- isotropic null
@pytest.mark.parametrize("n,dim", [(6, 8), (6, 4), (5, 40)])
def test_isotropic_gram_matches_direct_gaussian_simulation(n, dim):
    rng = np.random.default_rng(0)
    N = 2000
    bart = [isotropic_cos_gram(n, dim, rng) for _ in range(N)]
    direct = []
    for _ in range(N):
        X = rng.standard_normal((dim, n))
        X /= np.linalg.norm(X, axis=0)
        direct.append(X.T @ X)

    def stats(Ms):
        Ms = np.stack(Ms)
        lam = np.clip(np.linalg.eigvalsh(Ms)[:, ::-1], 0, None)
        k = [k_at(x / x.sum(), 0.95) for x in lam]
        pr = lam.sum(1) ** 2 / (lam ** 2).sum(1)
        c = np.abs(Ms[:, *np.triu_indices(n, 1)])
        return np.mean(k), np.mean(pr), np.mean(c), np.mean(c ** 2)

    b, d = stats(bart), stats(direct)
    assert b[0] == pytest.approx(d[0], abs=0.08)        # mean k95 (std over draws <= ~0.7)
    assert b[1] == pytest.approx(d[1], abs=0.05)        # participation ratio
    assert b[2] == pytest.approx(d[2], abs=0.01)        # mean |cos|
    assert b[3] == pytest.approx(1 / dim, rel=0.05)      # E cos² = 1/D for uniform directions
    assert all(np.allclose(np.diag(M), 1) for M in bart[:10])
    if dim < n:
        assert all(np.linalg.matrix_rank(M, tol=1e-9) == dim for M in bart[:20])


def test_isotropic_k95_in_high_dimension_is_about_n():
    rng = np.random.default_rng(1)
    for n in (5, 20):
        k = [k_at(np.array(spectrum_stats(isotropic_cos_gram(n, 25_000_000, rng))["explained"]), 0.95)
             for _ in range(50)]
        assert min(k) >= math.floor(0.95 * n) and max(k) <= n


# ---------------------------------------------------------------------------- Gram algebra vs dense numpy
def test_drift_table_matches_dense_numpy(run, dense):
    g = compute_gram(CheckpointSet(run))
    t = drift_table(g, [10, 20], [5, 15], 20)
    d = lambda a, b: np.linalg.norm(dense[a] - dense[b])  # noqa: E731
    assert t["within_peak"] == pytest.approx([d(20, 10)], rel=1e-9)
    assert t["within_trough"] == pytest.approx([d(15, 5)], rel=1e-9)
    near = [min((d(p, q), q) for q in (5, 15)) for p in (10, 20)]
    assert t["between"] == pytest.approx([x for x, _ in near], rel=1e-9)
    assert t["between_nearest_trough"] == [q for _, q in near]
    cp, ct = (dense[10] + dense[20]) / 2, (dense[5] + dense[15]) / 2
    assert t["centre_distance"] == pytest.approx(np.linalg.norm(cp - ct), rel=1e-9)
    assert t["ratio_between_within"] == pytest.approx(np.mean(t["between"]) / np.mean([d(20, 10), d(15, 5)]))
    assert t["late_to_peak_centre"] == pytest.approx(np.linalg.norm(dense[20] - cp), rel=1e-9)
    assert t["late_to_trough_centre"] == pytest.approx(np.linalg.norm(dense[20] - ct), rel=1e-9)


def test_basin_tests_script_b1_b3_against_dense_numpy(run, dense, capsys):
    code, out, err = run_inprocess(capsys, TESTS, "--run-dir", str(run))
    assert code == 0, err
    r = json.loads((run / "analysis" / "basin_tests.json").read_text())
    metrics = {m["step"]: m for m in runio.read_metrics(run)}
    steps = sorted(metrics)
    assert r["B1"]["steps"] == steps and r["B1"]["p_ood"] == [metrics[s]["p_ood"] for s in steps]
    assert r["B1"]["peaks"] == [10, 20] and r["B1"]["troughs"] == [5, 15]
    later = [s for s in steps if s > 0]
    lm, nll = [metrics[s]["lm_ood"] for s in later], [metrics[s]["nll_ood"] for s in later]
    assert r["B2"]["pearson_r"] == pytest.approx(np.corrcoef(lm, nll)[0, 1], abs=1e-9)
    b3 = r["B3"]
    assert b3["steps"] == [0, 5, 10, 15, 20] and len(b3["directions"]) == 3
    dirs = [unit(dense[pk] - dense[tr]) for pk, tr in PAIRS]
    for d, (pk, tr), v in zip(b3["directions"], PAIRS, dirs):
        assert (d["peak_step"], d["trough_step"]) == (pk, tr)
        a = [unit(dense[b] - dense[a]) @ v for a, b in zip(steps[:-1], steps[1:])]
        assert d["alignments"] == pytest.approx(a, abs=1e-9)
        assert d["mid_steps"] == [2.5, 7.5, 12.5, 17.5]
        dp = [metrics[b]["p_ood"] - metrics[a]["p_ood"] for a, b in zip(steps[:-1], steps[1:])]
        own = [min(pk, tr) <= a and b <= max(pk, tr) for a, b in zip(steps[:-1], steps[1:])]
        assert d["own_interval"] == own and sum(own) == 1
        assert abs(a[own.index(True)]) == pytest.approx(1.0)           # the pair's own update is ±Δ
        ref = np.corrcoef(a, dp)[0, 1] if np.std(dp) > 0 else None
        assert d["corr_alignment_dp_ood"] == (pytest.approx(ref, abs=1e-9) if ref is not None else None)
    cos = np.array([[x @ y for y in dirs] for x in dirs])
    assert np.allclose(b3["pairwise_cosines"], cos, atol=1e-9)
    for name in ("basin_B1_timeseries", "basin_B2_scatter", "basin_B3_switching_alignment"):
        assert (run / "analysis" / f"{name}.png").stat().st_size > 1000


def test_manifold_dim_script_against_dense_numpy(run, dense, capsys):
    code, out, err = run_inprocess(capsys, MANIFOLD, "--run-dir", str(run), "--n-null", "50", "--seed", "3")
    assert code == 0, err
    r = json.loads((run / "analysis" / "manifold_dim.json").read_text())["manifold"]
    V = np.stack([unit(dense[pk] - dense[tr]) for pk, tr in PAIRS])
    M = V @ V.T
    assert np.allclose(r["cos_gram"], M, atol=1e-9)
    lam = np.sort(np.linalg.eigvalsh(M))[::-1].clip(0)
    assert r["switch"]["eigenvalues"] == pytest.approx(lam, abs=1e-9)
    assert r["switch"]["k95"] == int(np.searchsorted(np.cumsum(lam) / lam.sum(), 0.95 - 1e-12) + 1)
    assert r["switch"]["participation_ratio"] == pytest.approx(lam.sum() ** 2 / np.sum(lam ** 2), rel=1e-9)
    off = np.abs(M[np.triu_indices(3, 1)])
    assert r["switch"]["mean_abs_cos"] == pytest.approx(off.mean())
    assert r["switch"]["max_abs_cos"] == pytest.approx(off.max())
    assert r["delta_norms"] == pytest.approx([np.linalg.norm(dense[pk] - dense[tr]) for pk, tr in PAIRS], rel=1e-9)
    assert r["reference_gram_schmidt_count"] == 3 and r["dim"] == V.shape[1]
    iso = r["isotropic_null"]
    assert iso["n_samples"] == 50 and 0 <= iso["k95"]["observed_percentile"] <= 100
    # the trajectory null: every checkpoint but 0 is a switch event, so the fallback rule gives (0, 5) only
    tr = r["trajectory_null"]
    assert tr["available"] and tr["candidates_per_lag"] == {"5": 1} and "not a switch pair" in tr["rule_per_lag"]["5"]
    assert tr["mean_abs_cos"]["mean"] == pytest.approx(1.0)        # three copies of the same interval
    assert r["shifted_null"]["offsets"] == [-5]                     # events 5..20 fit one step earlier only
    assert "k95" in r["verdict"] and (run / "analysis" / "manifold_dim.png").exists()


# ---------------------------------------------------------------------------- relaxation and perturbation
@pytest.fixture(scope="module")
def opened(run):
    r = open_run(run)
    return r, r.task()


def test_probe_eval_is_trainings_evaluation(opened):
    r, task = opened
    model = r.model(20)
    m, e = probe_eval(model, task, "cpu"), task.evaluate(model, torch.device("cpu"))
    assert (m["p"], m["nll"], m["lm"]) == pytest.approx((e["p_ood"], e["nll_ood"], e["lm_ood"]), abs=1e-9)


def test_relaxation_is_deterministic_and_uses_its_own_batches(opened, monkeypatch):
    r, task = opened
    s = relax_defaults(r.cfg, steps=2)
    assert (s.lr, s.lam, s.batch_size, s.grad_clip) == (pytest.approx(1.8e-3), 2.0, 8, 1.0)
    d = relax_defaults(preset("paper"))
    assert (d.steps, d.lr, d.lam, d.batch_size) == (300, pytest.approx(6e-4), 4.0, 64)
    q = relax_defaults(preset("quick"))
    assert (q.steps, q.lr, q.lam, q.batch_size) == (18, pytest.approx(1.8e-3), 2.0, 24)

    monkeypatch.setattr(task, "train_batch", lambda *a: (_ for _ in ()).throw(AssertionError("training batch used")))
    runs = []
    for seed in (0, 0, 1):
        model = r.model(20)
        before = [p.detach().clone() for p in model.parameters()]
        runs.append(relax(model, r.cfg, task, s, seed, [20, 0], "cpu"))
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))   # it did train
    assert runs[0]["steps_done"] == 2 and not runs[0]["diverged"]
    keys = ("p_ood", "nll_ood", "lm_ood", "last_train_loss")
    assert [runs[0][k] for k in keys] == [runs[1][k] for k in keys]
    assert runs[0]["nll_ood"] != runs[2]["nll_ood"]
    assert runs[0]["regime"] == ("probe" if runs[0]["p_ood"] >= 0.6 and runs[0]["nll_ood"] <= 2.0 else "lm")
    monkeypatch.undo()
    # its batches are none of the run's training batches, and a pure function of the key
    b = relax_batch(task, 0, [20, 0], 0, 8)
    assert torch.equal(b.x, relax_batch(task, 0, [20, 0], 0, 8).x)
    assert RELAX_TAG > r.cfg.steps
    for step in range(1, r.cfg.steps + 1):
        for micro in range(r.cfg.grad_accum):
            assert not torch.equal(task.train_batch(step, micro).x, b.x)


def test_perturbation_has_relative_size_sigma(opened):
    r, _ = opened
    base = r.model(20)
    ref = {k: v.clone() for k, v in base.state_dict().items()}
    g = torch.Generator().manual_seed(perturbation_seed(0, 20, 0.0, 0))
    perturb_trunk(base, 0.0, g)
    assert all(torch.equal(ref[k], v) for k, v in base.state_dict().items())          # σ = 0: untouched
    trunk = set(trunk_names(r.cfg))
    for sigma in (0.03, 0.3):
        m = r.model(20)
        perturb_trunk(m, sigma, torch.Generator().manual_seed(perturbation_seed(0, 20, sigma, 0)))
        for k, v in m.state_dict().items():
            if k not in trunk:
                assert torch.equal(v, ref[k])                                      # only the trunk moves
                continue
            w = ref[k].double()
            rms = w.pow(2).mean().sqrt()
            rel = (v.double() - w).norm() / (rms * math.sqrt(w.numel()))
            assert float(rel) == pytest.approx(sigma, rel=0.06)
    # seeded: the same (seed, step, σ, trial) gives the same weights, another trial other ones
    a, b, c = r.model(20), r.model(20), r.model(20)
    for m, trial in ((a, 0), (b, 0), (c, 1)):
        perturb_trunk(m, 0.1, torch.Generator().manual_seed(perturbation_seed(0, 20, 0.1, trial)))
    name = sorted(trunk)[0]
    assert torch.equal(a.state_dict()[name], b.state_dict()[name])
    assert not torch.equal(a.state_dict()[name], c.state_dict()[name])


# ---------------------------------------------------------------------------- basin depth end to end
def test_basin_depth_runs_resumes_and_checks_settings(run, capsys):
    args = ("--run-dir", str(run), "--sigmas", "0,0.3", "--max-pairs", "1")
    code, out, err = run_inprocess(capsys, DEPTH, *args)
    assert code == 0, err
    first = json.loads((run / "analysis" / "basin_depth.json").read_text())
    # the largest pair's peak and trough, and the last checkpoint
    top = max(PAIRS, key=lambda q: first["pairs"][PAIRS.index(q)]["amplitude"])
    assert {c["step"] for c in first["checkpoints"]} == set(top) | {20}
    assert first["settings"]["relax"]["steps"] == 1 and first["drift_table"]["peaks"] == [10, 20]
    assert first["claim21"] == peak_trough_depth(first["checkpoints"])      # the ledger's claim-21 input
    for c in first["checkpoints"]:
        d = c["per_sigma"]
        assert [x["sigma"] for x in d] == [0.0, 0.3] and all(x["n_trials"] == 1 for x in d)
        assert c["sigma_half"] == (sigma_half([0, 0.3], [x["mean_p_ood"] for x in d]) if
                                   not c["sigma_half_is_inf"] else None)
    prog_path = run / "analysis" / "basin_depth_progress.json"
    prog = json.loads(prog_path.read_text())
    n = len(prog["records"])
    assert n == 2 * len(first["checkpoints"])
    # an interrupted run: drop the last record, mark another so that reuse is visible, run again
    dropped = prog["records"].pop()
    prog["records"][0]["p_ood"] = 0.123456
    prog_path.write_text(json.dumps(prog))
    code, out, err = run_inprocess(capsys, DEPTH, *args)
    assert code == 0, err
    assert f"{n - 1} relaxation(s) already done, 1 to go" in out
    again = json.loads((run / "analysis" / "basin_depth.json").read_text())
    trials = [t for c in again["checkpoints"] for x in c["per_sigma"] for t in x["p_ood_trials"]]
    assert 0.123456 in trials                                   # a finished record is reused, not recomputed
    redone = json.loads(prog_path.read_text())["records"][-1]
    keys = ("step", "sigma", "trial", "perturbation_seed", "p_ood", "nll_ood", "lm_ood", "regime")
    assert [redone[k] for k in keys] == [dropped[k] for k in keys]      # the same numbers as before the cut
    # other settings: the progress is not reused
    code, out, err = run_inprocess(capsys, DEPTH, "--run-dir", str(run), "--steps", "20", "--sigmas", "0",
                                   "--relax-steps", "2")
    assert code == 0, err
    assert "other settings; starting over" in out
    d = json.loads((run / "analysis" / "basin_depth.json").read_text())
    assert d["settings"]["relax"]["steps"] == 2 and [c["step"] for c in d["checkpoints"]] == [20]
    assert d["checkpoints"][0]["role"] == "chosen"


# ---------------------------------------------------------------------------- no pairs, errors
def test_no_pairs_exits_0_with_an_explanation(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    write_manifest(run, [])
    code, out, err = run_inprocess(capsys, TESTS, "--run-dir", str(run))
    assert code == 0, err
    r = json.loads((run / "analysis" / "basin_tests.json").read_text())
    assert r["n_pairs"] == 0 and r["B3"]["directions"] == [] and "no switch pairs" in r["note"]
    assert r["B2"]["n"] == 4 and (run / "analysis" / "basin_B3_switching_alignment.png").exists()
    code, out, err = run_inprocess(capsys, MANIFOLD, "--run-dir", str(run))
    assert code == 0, err
    m = json.loads((run / "analysis" / "manifold_dim.json").read_text())
    assert m["manifold"] is None and "no switch pairs" in m["note"] and (run / "analysis" / "manifold_dim.png").exists()
    code, out, err = run_inprocess(capsys, MANIFOLD, "--run-dir", str(run), "--pairs", "10:5")
    assert code == 0 and "at least 2" in json.loads((run / "analysis" / "manifold_dim.json").read_text())["note"]
    code, out, err = run_inprocess(capsys, DEPTH, "--run-dir", str(run), "--sigmas", "0")
    assert code == 0, err
    d = json.loads((run / "analysis" / "basin_depth.json").read_text())
    p = {m["step"]: m["p_ood"] for m in runio.read_metrics(run)}
    best = max(sorted(p), key=lambda s: (p[s], -s))
    assert d["drift_table"] is None and "no switch pairs" in d["note"]
    assert [c["step"] for c in d["checkpoints"]] == sorted({best, 20})
    assert d["checkpoints"][-1]["role"].endswith("late")
    # no manifest at all: still exit 0, with the hint to run the detector
    (run / "oscillation_manifest.json").unlink()
    code, out, err = run_inprocess(capsys, TESTS, "--run-dir", str(run))
    note = json.loads((run / "analysis" / "basin_tests.json").read_text())["note"]
    assert code == 0 and "detect_oscillations.py" in note


def test_errors_are_one_line(run, tmp_path, capsys):
    p = run_script(DEPTH, "--run-dir", str(tmp_path / "nope"))          # once as a real command
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "does not exist" in p.stderr
    for script in (TESTS, DEPTH, MANIFOLD):
        code, _, err = run_inprocess(capsys, script, "--run-dir", str(tmp_path / "nope"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
        for bad in ("10-5", "10:7", "10:10"):
            code, _, err = run_inprocess(capsys, script, "--run-dir", str(run), "--pairs", bad)
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: --pairs")
    code, _, err = run_inprocess(capsys, DEPTH, "--run-dir", str(run), "--sigmas", "0.1,0.3")
    assert code == 2 and "include 0" in err
    code, _, err = run_inprocess(capsys, MANIFOLD, "--run-dir", str(run), "--null-window", "9:3")
    assert code == 2 and "--null-window" in err
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / "analysis", ignore_errors=True)
    (broken / "oscillation_manifest.json").write_text("{not json")
    code, _, err = run_inprocess(capsys, TESTS, "--run-dir", str(broken))
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_help_works(capsys):
    for script in (TESTS, DEPTH, MANIFOLD):
        argv = sys.argv
        sys.argv = [script, "--help"]
        try:
            with pytest.raises(SystemExit) as e:
                runpy.run_path(str(ROOT / script), run_name="__main__")
        finally:
            sys.argv = argv
        assert e.value.code == 0 and "--run-dir" in capsys.readouterr().out
