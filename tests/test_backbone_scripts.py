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
