"""The backbone scripts on a real (tiny) run, as a user runs them."""
import json
import shutil

import numpy as np
import pytest

from conftest import run_script
from training.geometry.nulls import profile, random_walk_gram
from training.geometry.trajectory import CheckpointSet, compute_gram, pca

FIELDS = {"explained_variance_ratio", "singular_values", "k95", "k99", "steps", "reference_step"}


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("bb") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


def test_trajectory_pca_script(run):
    p = run_script("analysis/backbone/trajectory_pca.py", "--run-dir", str(run), "--window", "3", "--null-samples", "3")
    assert p.returncode == 0, p.stderr
    out = json.loads((run / "analysis" / "trajectory_pca.json").read_text())
    for variant in ("raw", "rownorm"):
        assert FIELDS <= set(out["trunk"][variant])
        evr = out["trunk"][variant]["explained_variance_ratio"]
        assert sum(evr) == pytest.approx(1.0) and len(evr) == 4          # 5 checkpoints, the reference excluded
    assert [b["block"] for b in out["blocks"]] == [0, 1]
    assert all(FIELDS <= set(b["raw"]) for b in out["blocks"])
    assert {"pc1", "k95"} <= set(out["random_walk_null"])
    assert (run / "analysis" / "trajectory_pca.png").stat().st_size > 1000
    # the numbers are those of the library on the same checkpoints
    g = compute_gram(CheckpointSet(run))
    assert out["trunk"]["raw"]["pc1"] == pytest.approx(pca(g).explained_variance_ratio[0], rel=1e-12)
    # beside them, the D → ∞ random walk with the increment norms of the checkpoints themselves (dense numpy)
    ck = CheckpointSet(run)
    thetas = np.stack([ck.vector(s) for s in ck.steps])
    norms = np.linalg.norm(np.diff(thetas, axis=0), axis=1)
    null = profile(random_walk_gram(ck.steps, norms, thetas.shape[1]), total_steps=20, width=3)
    got = out["trunk"]["null_profile"]
    assert got["random_walk"]["pc1"] == pytest.approx(null["pc1"], rel=1e-9)
    assert got["random_walk"]["C"]["signed"] == pytest.approx(null["C"]["signed"], abs=1e-9)
    assert got["observed"]["pc1"] == pytest.approx(out["trunk"]["raw"]["pc1"], rel=1e-12)
    assert got["random_walk"]["C"]["rms"] == pytest.approx(1 / np.sqrt(4), rel=1e-9)


def test_update_alignment_script(run):
    p = run_script("analysis/backbone/update_alignment.py", "--run-dir", str(run))
    assert p.returncode == 0, p.stderr
    out = json.loads((run / "analysis" / "update_alignment.json").read_text())
    assert out["steps"] == [5, 10, 15, 20]
    for entry in [out["trunk"], *out["blocks"]]:
        assert len(entry["signed_cos"]) == len(entry["abs_cos"]) == 4
        assert np.allclose(np.abs(entry["signed_cos"]), entry["abs_cos"])
        assert all(-1 <= c <= 1 for c in entry["signed_cos"])
        rw = entry["random_walk"]["signed"]
        assert len(rw) == 4 and np.sum(np.square(rw)) == pytest.approx(1.0, abs=1e-9)   # Σ C² = 1 for the null


@pytest.mark.parametrize("script", ["analysis/backbone/trajectory_pca.py", "analysis/backbone/update_alignment.py"])
def test_bad_run_dirs_give_one_line(script, tmp_path, run):
    p = run_script(script, "--run-dir", str(tmp_path / "missing"))
    assert p.returncode == 2 and "does not exist" in p.stderr and p.stderr.count("\n") == 1
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / "analysis", ignore_errors=True)
    ck = broken / "checkpoints" / "step_000010.safetensors"
    ck.write_bytes(ck.read_bytes()[:64])
    p = run_script(script, "--run-dir", str(broken))
    assert p.returncode == 2 and "corrupt" in p.stderr and "Traceback" not in p.stderr


def test_help_works():
    for script in ("analysis/backbone/trajectory_pca.py", "analysis/backbone/update_alignment.py"):
        p = run_script(script, "--help")
        assert p.returncode == 0 and "--run-dir" in p.stdout


def _pc1(rows: np.ndarray) -> np.ndarray:
    return np.linalg.svd(rows, full_matrices=False)[2][0]


def test_backbone_phases_script(run):
    p = run_script("analysis/backbone/backbone_phases.py", "--run-dir", str(run), "--window", "early=0:10",
                   "--window", "late=10:20")
    assert p.returncode == 0, p.stderr
    out = json.loads((run / "analysis" / "backbone_phases.json").read_text())
    ck = CheckpointSet(run)
    X = np.stack([ck.vector(s) for s in ck.steps])
    X = X - X[0]
    early, late = _pc1(X[1:3] - X[0]), _pc1(X[3:5] - X[2])            # steps 5, 10 from 0; 15, 20 from 10
    pair = next(q for q in out["trunk"]["observed"]["pairs"] if q["between"] == ["early", "late"])
    assert pair["abs_cos"] == pytest.approx(abs(early @ late), abs=1e-9)
    assert pair["random_walk_angle_deg"] == pytest.approx(90.0, abs=1e-6)
    rot = out["trunk"]["observed"]["rotation"]
    assert rot["steps"] == [10, 15, 20]
    assert rot["rho"][0] == pytest.approx(abs(_pc1(X[1:3]) @ _pc1(X[1:])), abs=1e-9)
    assert [b["block"] for b in out["blocks"]] == [0, 1]
    assert (run / "analysis" / "backbone_phases.png").stat().st_size > 1000


def test_backbone_phases_bad_window_and_no_phases(run, tmp_path):
    p = run_script("analysis/backbone/backbone_phases.py", "--run-dir", str(run), "--window", "0:999",
                   "--out-dir", str(tmp_path))
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("error: window 0:999")
    assert "outside the run" in p.stderr


def test_drift_scaling_script(run):
    p = run_script("analysis/backbone/drift_scaling.py", "--run-dir", str(run))
    assert p.returncode == 0, p.stderr
    out = json.loads((run / "analysis" / "drift_scaling.json").read_text())
    ck = CheckpointSet(run)
    X = np.stack([ck.vector(s) for s in ck.steps])
    X = X - X[0]
    v = _pc1(X[1:])
    v *= np.sign(X[-1] @ v)
    a = X[1:] @ v
    whole = out["trunk"]["observed"][0]
    assert whole["name"] == "whole run"
    np.testing.assert_allclose(whole["curves"]["backbone"], a, rtol=1e-8)
    slope = np.polyfit(np.log(ck.steps[1:]), np.log(a), 1)[0]
    assert whole["backbone"]["exponent"] == pytest.approx(slope, rel=1e-8)
    row = out["trunk_table"][0]
    assert row["exponent"] == whole["backbone"]["exponent"] and row["predicted"] == 1.0
    assert (run / "analysis" / "drift_scaling.png").stat().st_size > 1000
