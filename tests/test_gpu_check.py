"""benchmarks/gpu_check.sh: the GPU check's parts at the test shape on the CPU (its --dry-run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("OUT", None)
    return subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp)


def test_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "gc.json"
    p = run("--dry-run", "--out", str(out), tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["dry_run"] is True
    # step: both variants timed, MFU against a measured CPU peak
    assert [r["compiled"] for r in res["step"]] == [False, True]
    assert all(r["ms_per_step_median"] > 0 and 0 < r["mfu"] < 1.5 for r in res["step"])
    # run: steps 0, 2, 4, 6 checkpointed; the projection is the measured per-step time times 10,000
    run_ = res["run"]
    assert run_["ok"] and run_["checkpoints"] == 4
    assert abs(run_["projected_10k_minutes"] - run_["s_per_step_incl_eval_ckpt"] * 10_000 / 60) < 1e-9
    # pca: the scale benchmark's row, its ratio consistent with its two times
    pca = res["pca"]
    assert pca["ok"] and pca["checkpoints"] == 5 and 0 < pca["pc1_raw"] <= 1
    assert abs(pca["ratio_pca_over_read"] - pca["pca_s"] / pca["read_s"]) < 1e-9
    # precision: on the CPU autocast is off, so fp32 and "bf16" agree closely, and both curves are finite
    prec = res["precision"]
    assert len(prec["loss_fp32"]) == len(prec["loss_bf16"]) == prec["steps"] == 10
    assert prec["max_rel_diff"] < 1e-2
    v = res["verdicts"]
    assert v["pca_over_read"] == pca["ratio_pca_over_read"] and v["pca_met"] == (pca["ratio_pca_over_read"] <= 2)
    assert v["run_10k_minutes"] == run_["projected_10k_minutes"]
    assert "targets:" in p.stdout and "wrote" in p.stdout


def test_without_a_gpu_it_says_so(tmp_path):
    p = run("--device", "cpu", "--out", str(tmp_path / "x.json"), tmp=tmp_path)
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith("error: gpu_check needs a CUDA GPU")
    assert not (tmp_path / "x.json").exists()
