"""End to end: the per-seed pipeline at the `test` preset, its resumption, its failure reporting."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "run_seed.sh"
AUTO = ROOT / "scripts" / "run_seed_auto.sh"
STAGES = ["01_env_snapshot", "02_training", "03_eval_noise", "04_oscillations", "04b_oscillation_tiers",
          "05_trajectory_pca", "06_update_alignment", "06b_backbone_phases", "06c_drift_scaling",
          "07_residual_decomposition", "07b_integration_test", "08_switching_alignment", "09_fisher_analysis",
          "09b_fisher_peaks", "10_rayleigh_quotients", "11_basin_tests", "12_basin_depth", "12b_basin_recovery",
          "13_manifold_dim", "14_reheating", "14c_lr_threshold_map", "15_reheat_geometry", "15b_claims",
          "16_figures", "17_report"]


def pipeline(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=env)


@pytest.fixture(scope="module")
def pipe_base(tmp_path_factory):
    return tmp_path_factory.mktemp("pipeline")


@pytest.fixture(scope="module")
def done_run(pipe_base):
    base = pipe_base
    run = base / "run"
    t0 = time.monotonic()
    p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return run, base, time.monotonic() - t0


def test_every_stage_runs_and_leaves_report_and_figures(done_run):
    run, _, _ = done_run
    assert sorted(f.stem for f in (run / ".stages").glob("*.done")) == STAGES
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    report = (run / "report.md").read_text()
    # every image the report embeds exists
    images = [line.split("](", 1)[1].split(")", 1)[0] for line in report.splitlines() if "![" in line]
    assert images, "the report embeds no figure"
    for rel in images:
        assert (run / rel).is_file(), rel
    for name in ("pip_freeze.txt", "system.txt", "git_commit.txt", "command.txt"):
        assert (run / "env" / name).stat().st_size > 0


def test_reheating_outputs_follow_the_definitions(done_run):
    run, _, _ = done_run
    res = json.loads((run / "analysis" / "reheating.json").read_text())
    assert len(res["runs"]) == 3                                  # the three learning rates
    for r in res["runs"]:
        rows = [json.loads(line) for line in (Path(r["dir"]) / "metrics.jsonl").read_text().splitlines()]
        p = [m["p_ood"] for m in rows]
        assert rows[0]["step"] == 0
        assert r["reentry"]["G"] == pytest.approx(max(p) - p[0])
        assert r["reentry"]["p0"] == pytest.approx(p[0])
        # the reheat starts from the original run's last weights, bit for bit
        first = load_file(str(Path(r["dir"]) / "checkpoints" / "step_000000.safetensors"))
        last = load_file(str(run / "checkpoints" / "step_000020.safetensors"))
        assert all((first[k] == last[k]).all() for k in last)


def test_rerun_skips_every_stage(done_run):
    run, base, _ = done_run
    before = (run / "report.md").stat().st_mtime_ns
    p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("[skip]") == len(STAGES) and "[run ]" not in p.stdout
    assert (run / "report.md").stat().st_mtime_ns == before


def test_failing_stage_stops_the_pipeline_and_is_named(done_run):
    run, base, _ = done_run
    target = run / "analysis" / "trajectory_pca.json"
    good = target.read_bytes()
    for name in ("16_figures", "17_report"):
        (run / ".stages" / f"{name}.done").unlink()
    try:
        target.write_text("{not json")
        p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--set", f"cache_dir={base / 'cache'}")
        assert p.returncode != 0
        assert "stage 16_figures failed" in p.stderr
        assert not (run / ".stages" / "16_figures.done").exists()
        assert not (run / ".stages" / "17_report.done").exists()
    finally:
        target.write_bytes(good)
    p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--set", f"cache_dir={base / 'cache'}")
    assert p.returncode == 0, p.stderr
    assert "[run ] 16_figures" in p.stdout and "[run ] 17_report" in p.stdout
    assert "[run ] 02_training" not in p.stdout


def test_killed_pipeline_resumes_training_exactly(done_run, tmp_path):
    """Kill the pipeline during training, run it again: the run ends with the same weights."""
    _, base, _ = done_run
    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONHASHSEED="0")
    args = ["bash", str(SCRIPT), "3", "--preset", "test", "--out-dir", str(run), "--until", "02_training",
            "--set", f"cache_dir={base / 'cache'}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ckpt = run / "checkpoints" / "step_000005.safetensors"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / ".stages" / "02_training.done").exists()
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "[skip] 01_env_snapshot" in p.stdout
    a = load_file(str(run / "checkpoints" / "step_000020.safetensors"))
    b = load_file(str(done_run[0] / "checkpoints" / "step_000020.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("args, message", [
    (["x"], "SEED must be a non-negative integer"),
    (["1", "--preset", "huge"], "unknown preset 'huge'"),
    (["1", "--until", "99_nothing"], "unknown stage '99_nothing'"),
    (["1", "--basin-trials", "0"], "--basin-trials must be a positive integer"),
    (["1", "--basin-trials"], "--basin-trials needs a value"),
])
def test_bad_arguments_give_one_line_errors(args, message):
    p = pipeline(*args)
    assert p.returncode == 2 and message in p.stderr
    assert "Traceback" not in p.stderr


def test_auto_seed_scouts_in_their_own_directories(pipe_base, tmp_path):
    base = pipe_base
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.run(["bash", str(AUTO), "--seeds", "1,2", "--preset", "test", "--fallback",
                        "--scout-root", str(tmp_path / "scouts"), "--out-dir", str(tmp_path / "run"),
                        "--until", "01_env_snapshot", "--set", f"cache_dir={base / 'cache'}"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "[auto] chosen seed:" in p.stdout
    scouts = sorted(d.name for d in (tmp_path / "scouts").iterdir())
    assert scouts[0] == "scout_test_s1"
    for d in (tmp_path / "scouts").iterdir():
        m = json.loads((d / "oscillation_manifest.json").read_text())
        assert "pairs" in m
        cfg = json.loads((d / "config.json").read_text())["config"]
        assert cfg["steps"] == 4 and cfg["lambda_probe2"] is None    # 2000/10000 of the test preset's 20 steps
    # the real run directory is not touched by the scouts
    assert not (tmp_path / "run" / "config.json").exists()
    assert (tmp_path / "run" / ".stages" / "01_env_snapshot.done").exists()


def test_controls_stage_completes_a_finished_pipeline(done_run, tmp_path):
    """--controls on a finished run: stage 14b trains the reheating controls, the stages after it are redone and the
    run's ledger judges claim 19 from them; a second call does nothing."""
    import shutil
    run3, base, _ = done_run
    run = tmp_path / "run"
    shutil.copytree(run3, run, symlinks=True)
    p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--controls")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "[skip] 14_reheating" in p.stdout and "[done] 14b_reheat_controls" in p.stdout
    for stage in ("15_reheat_geometry", "15b_claims", "16_figures", "17_report"):
        assert f"[done] {stage}" in p.stdout
    assert sorted(f.stem for f in (run / ".stages").glob("*.done")) == sorted(STAGES + ["14b_reheat_controls"])
    ledger = json.loads((run / "analysis" / "claims.json").read_text())
    row = next(c for c in ledger["claims"] if c["claim"] == 19)
    assert row["verdict"] == "inconclusive (single seed)" and row["source"]["file"] == "analysis/reheat_controls.json"
    again = pipeline("3", "--preset", "test", "--out-dir", str(run), "--controls")
    assert again.returncode == 0 and "[run ]" not in again.stdout


def test_basin_trials_complete_a_finished_pipeline(done_run, tmp_path):
    """--basin-trials 2 on a run finished with 1 trial: stage 12 adds the second trial (the first ones are reused,
    not recomputed), the ledger, figures and report are redone, nothing else runs; a second call does nothing."""
    import shutil
    run3, _, _ = done_run
    run = tmp_path / "run"
    shutil.copytree(run3, run, symlinks=True)
    before = json.loads((run / "analysis" / "basin_depth_progress.json").read_text())["records"]
    assert {r["trial"] for r in before} == {0}
    p = pipeline("3", "--preset", "test", "--out-dir", str(run), "--basin-trials", "2")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    redone = {line.split()[1] for line in p.stdout.splitlines() if line.startswith("[done]")}
    assert redone == {"12_basin_depth", "15b_claims", "16_figures", "17_report"}
    d = json.loads((run / "analysis" / "basin_depth.json").read_text())
    assert d["settings"]["n_trials"] == 2
    assert all(x["n_trials"] == 2 for c in d["checkpoints"] for x in c["per_sigma"])
    after = json.loads((run / "analysis" / "basin_depth_progress.json").read_text())["records"]
    assert after[:len(before)] == before and len(after) == 2 * len(before)
    assert sorted(f.stem for f in (run / ".stages").glob("*.done")) == sorted(STAGES)
    again = pipeline("3", "--preset", "test", "--out-dir", str(run), "--basin-trials", "2")
    assert again.returncode == 0 and "[run ]" not in again.stdout


SEEDS = ROOT / "scripts" / "run_seeds.sh"


def test_seeds_side_by_side_resume_after_a_kill_and_write_the_ledger(done_run, tmp_path):
    """run_seeds.sh over seeds 3 and 4: seed 3 is already finished (a copy of the pipeline run above) and is
    skipped; the command is killed while seed 4 trains and run again: seed 4 resumes, then the ledger covers both."""
    import shutil
    run3, base, _ = done_run
    out = tmp_path / "seeds"
    shutil.copytree(run3, out / "s3", symlinks=True)
    env = dict(os.environ, PYTHONHASHSEED="0")
    args = ["bash", str(SEEDS), "--preset", "test", "--seeds", "3,4", "--out-dir", str(out),
            "--set", f"cache_dir={base / 'cache'}"]
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ckpt = out / "s4" / "checkpoints" / "step_000005.safetensors"
    deadline = time.monotonic() + 240
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    first = proc.communicate()[0].decode()
    assert "skip seed 3: finished" in first
    assert not (out / "s4" / ".stages" / "17_report.done").exists() and not (out / "claims.md").exists()
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "skip seed 3: finished" in p.stdout and "seed 4 finished" in p.stdout
    assert "[skip] 01_env_snapshot" in (out / "s4" / "pipeline.log").read_text()     # seed 4 resumed, not restarted
    led = json.loads((out / "claims.json").read_text())
    assert led["n_runs"] == 2 and sorted(Path(r).name for r in led["runs"]) == ["s3", "s4"]
    assert {c["claim"] for c in led["claims"]} | {x["claim"] for x in led["not_yet"]} == set(range(1, 22))
    assert (out / "claims.md").exists() and (out / "figures" / "seed_overlay.png").exists()
    assert "Table 2 over seeds" in (out / "seed_tables.md").read_text()
    # finished: a third invocation trains nothing
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0 and "start seed" not in again.stdout


@pytest.mark.parametrize("args, message", [
    (["--seeds", "1,2"], "missing --preset"),
    (["--preset", "test"], "missing --seeds"),
    (["--preset", "test", "--seeds", "1,x"], "--seeds must be non-negative integers"),
    (["--preset", "test", "--seeds", "1,1"], "--seeds lists 1 twice"),
    (["--preset", "huge", "--seeds", "1"], "unknown preset 'huge'"),
    (["--preset", "test", "--seeds", "1", "--jobs", "0"], "--jobs must be a positive integer"),
    (["--preset", "test", "--seeds", "1", "--basin-trials", "x"], "--basin-trials must be a positive integer"),
])
def test_seeds_bad_arguments_give_one_line_errors(args, message):
    p = subprocess.run(["bash", str(SEEDS), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_seeds_dry_run_prints_the_plan_and_runs_nothing(tmp_path):
    out = tmp_path / "plan"
    p = subprocess.run(["bash", str(SEEDS), "--preset", "paper", "--seeds", "42,271,314", "--out-dir", str(out),
                        "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "regime" in p.stdout and "in the paper's regime" in p.stdout
    assert p.stdout.count("scripts/run_seed.sh") == 3 and not out.exists()


STUDIES = ROOT / "scripts" / "run_studies.sh"


def test_studies_of_the_seeds_enter_their_ledger(done_run, tmp_path):
    """run_studies.sh at the test preset for seed 3, whose pipeline is finished in ROOT/test_seeds/s3: the
    SGD-control study and the β2 sweep are run, then the seeds' ledger is rewritten with claims 16 and 18 judged from
    them; a second invocation retrains nothing."""
    import shutil
    run3, base, _ = done_run
    root = tmp_path / "runs"
    shutil.copytree(run3, root / "test_seeds" / "s3", symlinks=True)
    env = dict(os.environ, PYTHONHASHSEED="0")
    args = ["bash", str(STUDIES), "--preset", "test", "--seeds", "3", "--root", str(root), "--no-matched",
            "--no-trainable", "--no-reheat", "--set", f"cache_dir={base / 'cache'}"]
    p = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert (root / "sgd_controls_test_s3" / "analysis" / "table9.md").exists()
    assert (root / "beta_sweep_test_s3" / "analysis" / "table_beta2.md").exists()
    assert not (root / "sgd_controls_matched_test_s3").exists()            # --no-matched
    assert not (root / "sgd_controls_trainable_test_s3").exists()          # --no-trainable
    assert not list((root / "beta_sweep_test_s3").glob("*/reheat"))         # --no-reheat
    assert "skip seed 3: finished" in p.stdout and "ledger with the studies" in p.stdout
    led = json.loads((root / "test_seeds" / "claims.json").read_text())
    rows = {c["claim"]: c for c in led["claims"]}
    assert rows[16]["study_dirs"] == [str(root / "sgd_controls_test_s3")]
    assert rows[18]["study_dirs"] == [str(root / "beta_sweep_test_s3")]
    assert 16 not in {x["claim"] for x in led["not_yet"]} and 18 not in {x["claim"] for x in led["not_yet"]}
    summary = json.loads((root / "beta_sweep_test_s3" / "analysis" / "beta_sweep_summary.json").read_text())
    if rows[18]["verdict"] not in ("not measured",):
        xs = [r["pc1_minus_null"] for r in sorted(summary["table"], key=lambda r: -r["beta2"])
              if r.get("pc1_minus_null") is not None]
        assert rows[18]["effect"] == [pytest.approx(xs[0] - xs[-1])]
    weights = {q: q.stat().st_mtime_ns for q in root.rglob("*.safetensors")}
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert weights and {q: q.stat().st_mtime_ns for q in root.rglob("*.safetensors")} == weights   # nothing retrained
    assert "skip run A: already completed" in again.stdout


def test_studies_dry_run_and_bad_arguments(tmp_path):
    p = subprocess.run(["bash", str(STUDIES), "--preset", "cpu", "--seeds", "42,271", "--root", str(tmp_path / "r"),
                        "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = [line.strip() for line in p.stdout.splitlines() if line.startswith("  ")]
    assert sum("sgd_controls/run_study.py" in x and "--decay" not in x for x in lines) == 2
    assert sum("--decay matched" in x for x in lines) == 1 and sum(" reheat " in x for x in lines) == 1
    assert sum("--decay trainable" in x and "sgd_controls_trainable_cpu_s42" in x for x in lines) == 1
    assert not (tmp_path / "r").exists()
    for args, message in ((["--seeds", "1"], "missing --preset"), (["--preset", "huge", "--seeds", "1"], "unknown preset"),
                          (["--preset", "test", "--seeds", "1,1"], "lists 1 twice")):
        p = subprocess.run(["bash", str(STUDIES), *args], capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert p.returncode == 2 and message in p.stderr and p.stderr.strip().splitlines()[-1].startswith("error:")
