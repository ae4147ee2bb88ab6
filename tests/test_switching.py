"""Switching analyses: oscillation detection, switching-direction geometry vs dense numpy, the
bootstrap noise estimate, the logit lens, and the three scripts end to end on a tiny real run."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from conftest import run_inprocess, run_script
from trajfix import synthetic_trajectory
from training.core.config import preset
from training.core.batch import Batch
from training.core.errors import UserError
from training.core.losses import probe_stats
from training.core.model import GPT, trunk_size
from training.geometry.switching import (SwitchPair, bootstrap_std, detect_oscillations, lens_logits, probe_readout,
                                residual_stream, switch_coeffs, switching_geometry)
from training.geometry.trajectory import CheckpointSet, compute_gram, pca

DETECT = "analysis/switching/detect_oscillations.py"
ALIGN = "analysis/switching/switching_alignment.py"
NOISE = "analysis/basin/eval_noise.py"


# ---------------------------------------------------------------------------- peak detection
def test_peaks_troughs_pairs_and_prominences_of_a_hand_made_series():
    steps = list(range(0, 110, 10))
    p = [0.0, 0.2, 0.5, 0.3, 0.1, 0.4, 0.7, 0.6, 0.2, 0.3, 0.8]
    osc = detect_oscillations(steps, p, prominence=0.1)
    assert osc.peaks == [20, 60] and osc.troughs == [40, 80]
    # prominences by hand: 0.5 − max(0, 0.1); 0.7 − max(0, 0.2); min(0.5, 0.8) − 0.1; min(0.7, 0.8) − 0.2
    np.testing.assert_allclose(osc.peak_prominences, [0.4, 0.5])
    np.testing.assert_allclose(osc.trough_prominences, [0.4, 0.5])
    got = [(q.peak_step, q.trough_step, q.kind) for q in osc.pairs]
    assert got == [(20, 40, "fall"), (60, 40, "rise"), (60, 80, "fall")]
    np.testing.assert_allclose([q.amplitude for q in osc.pairs], [0.4, 0.6, 0.5])
    assert osc.pairs[1].peak_p_ood == 0.7 and osc.pairs[1].trough_p_ood == 0.1
    # a higher threshold keeps only the more prominent extrema
    hi = detect_oscillations(steps, p, prominence=0.45)
    assert hi.peaks == [60] and hi.troughs == [80]
    assert [(q.peak_step, q.trough_step) for q in hi.pairs] == [(60, 80)]


def test_prominence_threshold_rejects_noise_bumps():
    t = np.arange(200)
    rng = np.random.default_rng(0)
    p = 0.5 + 0.3 * np.sin(2 * np.pi * t / 50) + rng.uniform(-0.01, 0.01, len(t))
    steps = 10 * t
    osc = detect_oscillations(steps, p, prominence=0.1)
    true_peaks, true_troughs = 10 * (12.5 + 50 * np.arange(4)), 10 * (37.5 + 50 * np.arange(4))
    assert len(osc.peaks) == 4 and len(osc.troughs) == 4
    assert np.max(np.abs(np.asarray(osc.peaks) - true_peaks)) <= 40       # within 4 evaluations
    assert np.max(np.abs(np.asarray(osc.troughs) - true_troughs)) <= 40
    assert [q.kind for q in osc.pairs].count("fall") == 4 and [q.kind for q in osc.pairs].count("rise") == 3
    assert all(q.amplitude > 0.5 for q in osc.pairs)
    # without a meaningful threshold the noise bumps become peaks
    assert len(detect_oscillations(steps, p, prominence=1e-4).peaks) > 10


def test_monotone_and_flat_series_have_no_pairs():
    for p in (np.linspace(0, 1, 30), 1 / (1 + np.exp(-np.linspace(-6, 6, 30))), np.full(30, 0.4)):
        osc = detect_oscillations(np.arange(30) * 24, p)
        assert osc.peaks == [] and osc.troughs == [] and osc.pairs == []


def test_detection_input_errors():
    with pytest.raises(UserError):
        detect_oscillations([0, 10, 10], [0.1, 0.2, 0.1])
    with pytest.raises(UserError):
        detect_oscillations([0, 10, 20], [0.1, 0.2, 0.1], prominence=0.0)
    with pytest.raises(UserError):
        detect_oscillations([0, 10, 20], [0.1, float("nan"), 0.1])


# ---------------------------------------------------------------------------- switching geometry
@pytest.fixture(scope="module")
def traj(tmp_path_factory):
    run, steps, Theta = synthetic_trajectory(tmp_path_factory.mktemp("switch_traj") / "run")
    return CheckpointSet(run), steps, Theta


def pair(peak, trough, kind):
    return SwitchPair(peak, trough, 0.0, 0.0, 0.0, kind)


PAIRS = [pair(30, 50, "fall"), pair(80, 60, "rise"), pair(80, 100, "fall")]


def dense_switching(Theta, steps, cols, pairs, k_max):
    """The paper's formulas with explicit D-dimensional vectors and np.linalg.svd."""
    Th = Theta[:, cols]
    X = Th[1:] - Th[0]
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    Vt = Vt * np.sign(Vt @ X[-1])[:, None]                 # a(t_last) > 0
    vb = Vt[0]
    out = []
    for q in pairs:
        v = Th[steps.index(q.peak_step)] - Th[steps.index(q.trough_step)]
        v /= np.linalg.norm(v)
        c = v @ vb
        perp = v - c * vb
        perp /= np.linalg.norm(perp)
        out.append({"cos": c, "E": [np.sum((Vt[1:k] @ v) ** 2) for k in range(2, k_max + 1)],
                    "E_perp": [np.sum((Vt[1:k] @ perp) ** 2) for k in range(2, k_max + 1)], "v": v})
    V = np.stack([o["v"] for o in out])
    return out, np.abs(V @ V.T)


@pytest.mark.parametrize("block", [None, 1])
def test_switching_geometry_matches_dense_numpy(traj, block):
    ck, steps, Theta = traj
    per = trunk_size(preset("test"), 0)
    cols = slice(None) if block is None else slice(block * per, (block + 1) * per)
    gram = compute_gram(ck, block=block)
    geo = switching_geometry(gram, PAIRS, pca(gram, k=6), k_max=6)
    dense, cos = dense_switching(Theta, steps, cols, PAIRS, 6)
    for got, want in zip(geo["pairs"], dense):
        assert got["cos_backbone"] == pytest.approx(want["cos"], abs=1e-9)
        assert got["abs_cos_backbone"] == pytest.approx(abs(want["cos"]), abs=1e-9)
        assert got["backbone_share"] + got["transverse_share"] == pytest.approx(1.0)
        np.testing.assert_allclose(list(got["capture"].values()), want["E"], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(list(got["capture_transverse"].values()), want["E_perp"], rtol=1e-8, atol=1e-12)
        assert list(got["capture"]) == [f"pc2_to_pc{k}" for k in range(2, 7)]
    np.testing.assert_allclose(geo["pairwise_abs_cos"], cos, rtol=1e-8, atol=1e-12)
    # pairs (80,60) and (80,100) share the peak: only the two other combinations are independent events
    s = geo["summary"]
    assert s["n_disjoint_event_pairs"] == 2
    assert s["mean_abs_cos_between_events"] == pytest.approx((cos[0, 1] + cos[0, 2]) / 2, rel=1e-8)
    assert s["mean_abs_cos_backbone"] == pytest.approx(np.mean([abs(d["cos"]) for d in dense]), rel=1e-8)


def test_switch_coefficients_are_unit_vectors_in_the_span(traj):
    ck, steps, Theta = traj
    gram = compute_gram(ck)
    C, norms = switch_coeffs(gram, PAIRS)
    V = ck.materialise(gram, C.T)
    for i, q in enumerate(PAIRS):
        d = Theta[steps.index(q.peak_step)] - Theta[steps.index(q.trough_step)]
        assert norms[i] == pytest.approx(np.linalg.norm(d), rel=1e-10)
        np.testing.assert_allclose(V[:, i], d / np.linalg.norm(d), atol=1e-10)
    # v_sw lies in the span of the drifts, so all principal directions together capture all of it
    full = switching_geometry(gram, PAIRS, pca(gram, k=20), k_max=11)
    for pp in full["pairs"]:
        assert pp["backbone_share"] + pp["capture"]["pc2_to_pc11"] == pytest.approx(1.0, abs=1e-9)
    assert switching_geometry(gram, [], pca(gram, k=6))["pairs"] == []


# ---------------------------------------------------------------------------- evaluation noise
def test_bootstrap_std_matches_the_binomial_standard_error():
    rng = np.random.default_rng(3)
    for p_true, n in ((0.3, 3000), (0.05, 2000), (0.5, 400)):
        correct = rng.random(n) < p_true
        p = correct.mean()
        std = bootstrap_std(correct, 2000, np.random.default_rng(1))
        assert std == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.08)
    correct = rng.random(500) < 0.4
    assert bootstrap_std(correct, 50, np.random.default_rng(7)) == bootstrap_std(correct, 50, np.random.default_rng(7))
    assert bootstrap_std(np.ones(100, dtype=bool), 50, np.random.default_rng(0)) == 0.0


# ---------------------------------------------------------------------------- logit lens
def test_logit_lens_last_layer_is_the_model_output():
    cfg = preset("test")
    torch.manual_seed(0)
    model = GPT(cfg, 64).eval()
    g = torch.Generator().manual_seed(1)
    B, T = 7, 16
    x = torch.randint(0, 64, (B, T), generator=g)
    y = torch.randint(0, 64, (B, T), generator=g)
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[torch.arange(B), torch.randint(2, T, (B,), generator=g)] = True
    mask[0, 1] = True                       # two probe positions in one example
    mask[6] = False                         # an example without any: not scored
    y[2, 3] = -100
    mask[2, 3] = True                       # an ignored target is not a probe position
    with torch.no_grad():
        hidden, logits = residual_stream(model, x)
        assert len(hidden) == cfg.n_layer + 1
        torch.testing.assert_close(hidden[0], model.tok_emb(x) + model.pos_emb(torch.arange(T)), rtol=0, atol=0)
        assert torch.equal(lens_logits(model, hidden[-1]), logits)             # exactly the final logits
        pred = logits.argmax(-1)
        y = torch.where(mask & (torch.arange(B)[:, None] % 2 == 0), pred, y)   # make some examples right
        stats = probe_stats(logits, y, mask)
    r = probe_readout(model, Batch(x, y, mask), batch_size=3)
    assert r.layers == ["embed", "block_0", "block_1"]
    assert r.correct.shape == (cfg.n_layer + 1, int(stats["scored"]))
    assert r.accuracy[-1] == pytest.approx(float(stats["correct"]) / float(stats["scored"]), abs=0)
    probs = torch.softmax(logits.double(), -1)
    want = []
    for i in range(B):
        pos = torch.nonzero(mask[i] & (y[i] != -100))[:, 0]
        if len(pos):
            want.append(probs[i, pos, y[i, pos]].mean().item())
    np.testing.assert_allclose(r.p_codeword[-1], want, rtol=1e-5)
    assert 0 < r.accuracy[-1] < 1


# ---------------------------------------------------------------------------- the scripts on a real run
@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("switching_run") / "run"
    shutil.copytree(tiny_run, dst)
    return dst


def finite_numbers(obj):
    if isinstance(obj, dict):
        return all(finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(finite_numbers(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


def test_scripts_end_to_end(run_copy, capsys):
    run = run_copy
    logged = {r["step"]: r["p_ood"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    code, out, err = run_inprocess(capsys, NOISE, "--run-dir", str(run), "--n-boot", "200", "--seed", "5")
    assert code == 0, err
    noise = json.loads((run / "analysis" / "eval_noise.json").read_text())
    assert set(noise) >= {"checkpoints", "mean_std", "n_boot", "seed"} and noise["seed"] == 5
    assert [c["step"] for c in noise["checkpoints"]] == [10, 15, 20]
    for c in noise["checkpoints"]:
        assert set(c) >= {"step", "p_ood", "bootstrap_std", "n_examples"}
        assert c["p_ood"] == pytest.approx(logged[c["step"]], abs=1e-12)      # the same eval set and definition
    assert finite_numbers(noise) and (run / "analysis" / "eval_noise.png").exists()

    # hand-made oscillating p_ood; step 7 has no checkpoint and must be skipped
    series = {0: 0.0, 5: 0.6, 7: 0.9, 10: 0.1, 15: 0.7, 20: 0.2}
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "p_ood": v}) + "\n" for s, v in series.items()))
    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run))
    assert code == 0, err
    assert "skipped 1 eval step" in out
    m = json.loads((run / "oscillation_manifest.json").read_text())
    assert set(m) >= {"pairs", "peaks", "troughs", "prominence", "settings"}
    # the tiny run's p_ood is 0 or 1 at the measured checkpoints, so its bootstrap std is 0: no usable noise
    # estimate, and the manifest says that the fixed default was used without a noise calibration
    assert noise["mean_std"] == 0
    assert "not calibrated" in m["threshold_rule"] and m["prominence"] == 0.03
    assert m["noise_multiplier"] is None and m["n_pairs_above_noise"] is None
    assert m["peaks"] == [5, 15] and m["troughs"] == [10]
    assert [(q["peak_step"], q["trough_step"]) for q in m["pairs"]] == [(5, 10), (15, 10)]
    assert set(m["pairs"][0]) >= {"peak_step", "trough_step", "peak_p_ood", "trough_p_ood", "amplitude"}
    assert m["settings"]["skipped_eval_steps_without_checkpoint"] == [7]
    assert (run / "analysis" / "detect_oscillations.png").exists()

    code, out, err = run_inprocess(capsys, ALIGN, "--run-dir", str(run))
    assert code == 0, err
    a = json.loads((run / "analysis" / "switching_alignment.json").read_text())
    assert a["n_pairs"] == 2 and len(a["blocks"]) == 2 and finite_numbers(a)
    for scope in [a["trunk"]] + a["blocks"]:
        for pp in scope["pairs"]:
            assert 0 <= pp["abs_cos_backbone"] <= 1
            assert list(pp["capture_transverse"]) == [f"pc2_to_pc{k}" for k in range(2, 7)]
    lens = a["logit_lens"]
    assert lens["layers"] == ["embed", "block_0", "block_1"]
    assert [c["step"] for c in lens["checkpoints"]] == [5, 10, 15]
    assert all(len(c["accuracy"]) == 3 for c in lens["checkpoints"])
    assert (run / "analysis" / "switching_alignment.png").exists()
    nl = a["trunk"]["nulls"]                # no noise estimate here: every pair is used
    assert nl["n_pairs"] == 2 and [p["lag"] for p in nl["pairs"]] == [1, 1]
    assert all(0 <= p["abs_cos_percentile"] <= 1 and p["n_null"] == 3 for p in nl["pairs"])

    # a run without oscillations: an empty manifest, and the alignment says so
    rising = "".join(json.dumps({"step": s, "p_ood": s / 20}) + "\n" for s in (0, 5, 10, 15, 20))
    (run / "metrics.jsonl").write_text(rising)
    code, out, err = run_inprocess(capsys, DETECT, "--run-dir", str(run))
    assert code == 0 and "no switch pairs" in out
    assert json.loads((run / "oscillation_manifest.json").read_text())["pairs"] == []


def test_missing_run_dir_is_one_line_and_exit_2(tmp_path, capsys):
    p = run_script(DETECT, "--run-dir", str(tmp_path / "nope"))          # once as a real command
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "does not exist" in p.stderr
    for script in (DETECT, ALIGN, NOISE):
        code, _, err = run_inprocess(capsys, script, "--run-dir", str(tmp_path / "nope"))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err


def test_incomplete_and_corrupt_runs_are_one_line_errors(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "oscillation_manifest.json").unlink(missing_ok=True)
    code, _, err = run_inprocess(capsys, ALIGN, "--run-dir", str(run))
    assert code == 2 and "detect_oscillations.py" in err and len(err.strip().splitlines()) == 1
    (run / "oscillation_manifest.json").write_text("{not json")
    code, _, err = run_inprocess(capsys, ALIGN, "--run-dir", str(run))
    assert code == 2 and "corrupt" in err
    (run / "metrics.jsonl").write_text("")
    code, _, err = run_inprocess(capsys, DETECT, "--run-dir", str(run))
    assert code == 2 and "no evaluation" in err
    ck = run / "checkpoints" / "step_000020.safetensors"
    ck.write_bytes(ck.read_bytes()[:100])
    code, _, err = run_inprocess(capsys, NOISE, "--run-dir", str(run))
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_same_lag_null_ranks_a_transverse_excursion_and_a_random_walk():
    """A drift along e_0 with a short excursion into a fresh direction between two checkpoints: the pair's
    |cos(v_sw, v_b)| is below every same-lag displacement (percentile 0). On an isotropic random walk the
    percentile ranks of its pairs spread over (0, 1). The random-walk statistics at the pair's position come
    from the null Gram passed in."""
    from training.geometry.nulls import null_of
    from training.geometry.switching import same_lag_null, switching_nulls
    from training.geometry.trajectory import Gram
    rng = np.random.default_rng(7)
    T, D = 25, 600
    steps = list(range(0, 10 * T, 10))
    inc = np.outer(np.ones(T), np.eye(D)[0]) + 0.05 * rng.standard_normal((T, D))
    inc[12] += 3.0 * np.eye(D)[5]            # out along e_5 at checkpoint 12 ...
    inc[13] -= 3.0 * np.eye(D)[5]            # ... and back at 13
    X = np.cumsum(inc, axis=0)
    X -= X[0]
    gram = Gram(steps, 0, None, D, X @ X.T)
    traj = pca(gram, k=6)
    pair = SwitchPair(120, 110, 0.6, 0.2, 0.4, "rise", False)
    r = same_lag_null(gram, pair, traj)
    assert r["lag"] == 1 and r["n_null"] == T - 2 and r["abs_cos_percentile"] == 0.0
    rw = null_of(gram)
    out = switching_nulls(gram, rw, [pair, SwitchPair(200, 190, 0.5, 0.1, 0.4, "fall", True)], traj, pca(rw, k=6))
    assert out["n_pairs"] == 1 and out["n_pairs_at_noise_level"] == 1
    assert out["claim12"]["median_abs_cos_percentile"] == 0.0 and out["claim12"]["why_not"] is None
    assert 0 <= out["pairs"][0]["random_walk_abs_cos"] <= 1
    walk = np.cumsum(rng.standard_normal((T, D)), axis=0)
    walk -= walk[0]
    wg = Gram(steps, 0, None, D, walk @ walk.T)
    ranks = [same_lag_null(wg, SwitchPair(steps[a + 2], steps[a], 0.5, 0.1, 0.4, "fall"), pca(wg, k=6))["abs_cos_percentile"]
             for a in range(1, T - 2, 3)]
    assert 0.1 < float(np.median(ranks)) < 0.9 and max(ranks) - min(ranks) > 0.3
    none = switching_nulls(gram, rw, [], traj, pca(rw, k=6))
    assert none["claim12"]["median_abs_cos_percentile"] is None and none["claim12"]["why_not"] == "no switch pairs"
