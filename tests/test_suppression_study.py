"""The suppression study end to end at the `test` preset (experiments/suppression/run_study.py), its numbers against
dense numpy, resumption (a rerun skips finished runs), the backbone and switching bases taken from a baseline
(the latter recorded as not applicable when the baseline has no switch pair above noise), and bad input."""
import json
import math
import shutil

import numpy as np
import pytest

from conftest import run_inprocess, run_script
from training.core import runio
from training.core.model import trunk_names

SCRIPT = "experiments/suppression/run_study.py"
SHORT = ("--set", "steps=10", "--set", "lambda_step=5")   # half the test preset; evaluations at 5 and 10 after the λ switch


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("suppression")
    root = base / "study"
    p = run_script(SCRIPT, "all", "--preset", "test", "--seeds", "1,2", "--out-dir", str(root),
                   *SHORT, "--set", f"cache_dir={base / 'cache'}", timeout=600)
    assert p.returncode == 0, p.stderr
    return base, root, p


def _drift(run):
    cfg = runio.read_run_config(run)
    names = trunk_names(cfg)
    rows = []
    for s in runio.list_checkpoints(run):
        t, _ = runio.load_checkpoint(runio.checkpoint_path(run, s))
        rows.append(np.concatenate([t[n].double().reshape(-1).numpy() for n in names]))
    X = np.stack(rows)
    return X[1:] - X[0], X


def test_summary_numbers_against_dense_numpy(study):
    _, root, p = study
    summary = json.loads((root / "analysis" / "suppression_summary.json").read_text())
    assert (root / "analysis" / "table_suppression.md").read_text().startswith("# Subspace suppression")
    pcs = {arm: [] for arm in ("baseline", "suppressed")}
    vb = {}
    for row in summary["per_seed"]:
        for arm in pcs:
            run = root / f"s{row['seed']}" / arm
            drift, X = _drift(run)
            sv = np.linalg.svd(drift, compute_uv=False)
            assert row[arm]["pc1"] == pytest.approx(sv[0] ** 2 / np.sum(sv ** 2), rel=1e-6)
            # the random-walk null: increments of the run's own norms, mutually orthogonal -> G_jk = Σ_{i<=min} n_i²
            n2 = np.sum(np.diff(X, axis=0) ** 2, axis=1)
            G = np.array([[n2[:min(j, k) + 1].sum() for k in range(len(n2))] for j in range(len(n2))])
            lam = np.linalg.eigvalsh(G)
            assert row[arm]["null_pc1"] == pytest.approx(lam[-1] / lam.sum(), rel=1e-6)
            pcs[arm].append(row[arm]["pc1"])
            vb[arm] = np.linalg.svd(drift, full_matrices=False)[2][0]
            recs = runio.read_metrics(run)
            assert row[arm]["final_val_loss"] == recs[-1]["val_loss"]
        assert row["backbone_abs_cos"] == pytest.approx(abs(vb["baseline"] @ vb["suppressed"]), abs=1e-6)
        assert row["backbone_cos_noise_floor"] == pytest.approx(math.sqrt(2 / (math.pi * len(vb["baseline"]))))
        assert 0 < row["suppressed"]["removed_share"] < 1 and row["baseline"]["removed_share"] is None
    agg = summary["across_seeds"]["pc1"]
    for arm in pcs:
        assert agg[arm]["mean"] == pytest.approx(np.mean(pcs[arm])) and agg[arm]["n"] == 2
        assert agg[arm]["sd"] == pytest.approx(np.std(pcs[arm], ddof=1))
    assert agg["difference"]["mean"] == pytest.approx(np.mean(np.subtract(pcs["suppressed"], pcs["baseline"])))
    # the oscillation block: the noise null of the mean |Δp_ood| recomputed from the binomial formula
    row = summary["per_seed"][0]["baseline"]
    cfg = runio.read_run_config(root / "s1" / "baseline")
    ps = np.array([r["p_ood"] for r in runio.read_metrics(root / "s1" / "baseline") if r["step"] >= cfg.lambda_step])
    sig = np.sqrt(ps * (1 - ps) / cfg.n_probe_eval)
    null = np.mean(np.sqrt(sig[1:] ** 2 + sig[:-1] ** 2)) * math.sqrt(2 / math.pi)
    assert row["oscillation"]["null_mean_abs_change_after_switch"] == pytest.approx(null)
    assert row["oscillation"]["mean_abs_change_after_switch"] == pytest.approx(np.mean(np.abs(np.diff(ps))))
    assert row["oscillation"]["expected_false_peaks"] is not None


def test_rerun_skips_finished_runs(study):
    base, root, _ = study
    before = runio.checkpoint_path(root / "s1" / "suppressed", 10).read_bytes()
    p = run_script(SCRIPT, "all", "--preset", "test", "--seeds", "1,2", "--out-dir", str(root), *SHORT,
                   "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("skip s") == 4 and "train s" not in p.stdout
    assert runio.checkpoint_path(root / "s1" / "suppressed", 10).read_bytes() == before


def test_bases_from_the_baseline(study, tmp_path):
    base, root, _ = study
    for mode in ("backbone", "switching"):           # reuse the finished baseline of seed 1 (same config hash)
        shutil.copytree(root / "s1" / "baseline", tmp_path / mode / "s1" / "baseline")
    p = run_script(SCRIPT, "all", "--preset", "test", "--seeds", "1", "--basis", "switching",
                   "--out-dir", str(tmp_path / "switching"), *SHORT, "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stderr
    s = json.loads((tmp_path / "switching" / "analysis" / "suppression_summary.json").read_text())
    arm = s["per_seed"][0]["suppressed"]
    assert arm["state"] == "not applicable" and "no switch pair above the noise level" in arm["reason"]
    assert not (tmp_path / "switching" / "s1" / "suppressed").exists()
    p = run_script(SCRIPT, "train", "--preset", "test", "--seeds", "1", "--basis", "backbone", "--k", "1",
                   "--out-dir", str(tmp_path / "backbone"), *SHORT, "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stderr
    run = tmp_path / "backbone" / "s1" / "suppressed"
    cfg = runio.read_run_config(run)
    assert cfg.suppress_basis.endswith("backbone_basis.safetensors") and cfg.suppress_strength == 1.0
    assert runio.read_metrics(run)[-1]["suppress_rank"] == 1
    # the basis is the baseline's PC1 (dense numpy)
    from safetensors.numpy import load_file
    b = load_file(cfg.suppress_basis)["basis"][0].astype(np.float64)
    drift, _ = _drift(tmp_path / "backbone" / "s1" / "baseline")
    v = np.linalg.svd(drift, full_matrices=False)[2][0]
    assert abs(b @ v) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--k", "0"], "--k must be at least 1"),
    (["--basis", "missing.npy"], "no such file"),
    (["--basis", "BAD"], "expected k ×"),
    (["--set", "suppress_k=2"], "the suppression protocol sets this itself"),
    (["--seeds", "1,1"], "each once"),
])
def test_bad_study_input(tmp_path, capsys, args, message):
    np.save(tmp_path / "bad.npy", np.ones((2, 5)))
    args = [str(tmp_path / "bad.npy") if a == "BAD" else a for a in args]
    code, _, err = run_inprocess(capsys, SCRIPT, "train", "--preset", "test", "--out-dir", str(tmp_path / "s"), *args)
    assert code == 2 and err.startswith("error:") and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "s").exists()
