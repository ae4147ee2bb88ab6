"""Studies through submitit (--executor slurm): the same code path with submitit's LocalExecutor (the hidden
``--executor submitit-local``), which runs each run as a real job in its own processes and brings its result or
its failure back through submitit's files, as from Slurm. No Slurm is needed.

A two-run β2 sweep at the `test` preset goes through it and equals the local pool's runs byte for byte; a re-run
submits nothing; a failed job gives one line and an error; a job of two tasks trains its run data-parallel; every
inconsistent flag is one ``error:`` line.
"""
import contextlib
import hashlib
import io
import os
import pickle
import sys
import time
from pathlib import Path

import pytest
import torch

from training.core import runio
from training.core.cli import run_main
from training.studies import executors, parallel

pytest.importorskip("submitit")

BETA2S = "0.99,0.9"
RUNS = ("b2_0.99", "b2_0.9")


def sweep(out, cache, *extra):
    """experiments/beta_sweep/run_study.py train ... in this process: (exit code, stdout, stderr)."""
    import runpy

    from conftest import ROOT
    g = runpy.run_path(str(ROOT / "experiments" / "beta_sweep" / "run_study.py"), run_name="executor_test")
    argv = ["train", "--preset", "test", "--beta2s", BETA2S, "--out-dir", str(out), "--no-progress",
            "--set", f"cache_dir={cache}", *extra]
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = run_main(lambda: g["main"](argv))
        except SystemExit as ex:
            rc = ex.code
    return rc, o.getvalue(), e.getvalue()


def checkpoints(run: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run / "checkpoints").iterdir())}


def job_files(root: Path) -> set:
    return {p.name for p in (root / ".submitit").iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    base = tmp_path_factory.mktemp("executors")
    cache = base / "cache"
    local = sweep(base / "local", cache)
    assert local[0] == 0, local
    t0 = time.monotonic()
    sub = sweep(base / "sub", cache, "--executor", "submitit-local")
    return {"base": base, "cache": cache, "local": base / "local", "sub": base / "sub", "out": sub,
            "seconds": time.monotonic() - t0}


def test_two_run_study_through_submitit_equals_the_local_pool(studies):
    rc, out, err = studies["out"]
    assert rc == 0, (out, err)
    assert "submitting 2 runs as submitit-local jobs" in out
    for name in RUNS:
        sub, local = studies["sub"] / name, studies["local"] / name
        assert runio.read_status(sub)["state"] == "completed"
        assert checkpoints(sub) == checkpoints(local)          # the same runs, byte for byte
    files = job_files(studies["sub"])
    assert sum(f.endswith("_0_log.err") for f in files) == 2 and sum(f.endswith("_result.pkl") for f in files) == 2
    assert len(list((studies["sub"] / ".submitit" / "runs").glob("*.job"))) == 2


def test_rerun_collects_and_submits_nothing(studies):
    before = job_files(studies["sub"])
    rc, out, err = sweep(studies["sub"], studies["cache"], "--executor", "submitit-local")
    assert rc == 0, (out, err)
    assert out.count("skip β2") == 2 and "submitted" not in out
    assert job_files(studies["sub"]) == before


def test_failed_job_is_one_line_then_a_rerun_resubmits_it_alone(studies, tmp_path):
    root = tmp_path / "study"
    bad = root / "b2_0.9"
    bad.mkdir(parents=True)       # an unfinished run of another config in the way: the job's ensure_run refuses it
    (bad / "config.json").write_bytes((studies["local"] / "b2_0.99" / "config.json").read_bytes())
    rc, out, err = sweep(root, studies["cache"], "--executor", "submitit-local")
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"failed: β2 = 0.9 ({bad}): {bad} already holds a run with a different config")
    log = lines[0].rsplit("(log: ", 1)[1].rstrip(")")
    assert log.endswith("_0_log.err") and "error: " in Path(log).read_text()
    assert lines[1].startswith("error: 1 of 2 runs failed") and "run the same command again" in lines[1]
    assert runio.read_status(root / "b2_0.99")["state"] == "completed"
    # fixed: the finished run is collected, the failed one alone is submitted again
    (bad / "config.json").unlink()
    rc, out, err = sweep(root, studies["cache"], "--executor", "submitit-local")
    assert rc == 0, (out, err)
    assert "skip β2 = 0.99" in out and "submitted β2 = 0.9 ->" in out and "submitted β2 = 0.99" not in out
    assert runio.read_status(bad)["state"] == "completed"     # (alone, with both cores' threads: not bit-equal)


def test_a_job_that_dies_without_a_result(tmp_path):
    """A job killed outside Python (here os._exit) has no result: one line with its state and log."""
    ex = executors.SubmititExecutor(executors.TEST_EXECUTOR, folder=tmp_path / "jobs")
    lines = []
    with pytest.raises(parallel.JobsFailed) as e:
        ex.run(os._exit, [3], label=str, run_dir=lambda _: tmp_path / "r", log=lambda _: None, report=lines.append)
    assert len(lines) == 1 and lines[0].startswith("failed: 3 (") and "ended without a result" in lines[0]
    assert "_0_log.err)" in lines[0] and str(e.value).startswith("1 of 1 runs failed")


def test_a_refused_submission_is_one_line(tmp_path, monkeypatch):
    """sbatch refusing a job (a bad partition, account, ...) stops the study with sbatch's own last line."""
    import subprocess

    import submitit

    def refuse(self, *a, **k):
        raise subprocess.CalledProcessError(1, ["sbatch"], output=b"sbatch: error: invalid partition specified: x\n")
    monkeypatch.setattr(submitit.LocalExecutor, "submit", refuse)
    ex = executors.SubmititExecutor(executors.TEST_EXECUTOR, folder=tmp_path / "jobs")
    with pytest.raises(executors.UserError) as e:
        ex.run(os._exit, [3], label=lambda _: "run r", run_dir=lambda _: tmp_path / "r", log=lambda _: None)
    assert str(e.value) == "submitting run r failed: sbatch: error: invalid partition specified: x"


def test_a_job_still_running_is_collected_not_submitted_again(tmp_path):
    """The record of an earlier invocation's job: waited for while it runs, submitted anew once it has ended."""
    import submitit
    ex = submitit.LocalExecutor(folder=tmp_path)
    ex.update_parameters(timeout_min=5)
    job = ex.submit(time.sleep, 60)
    record = tmp_path / "runs" / "x.job"
    record.parent.mkdir()
    executors._save_record(record, job)
    try:
        again = executors._earlier_job(record)
        assert again is not None and again.job_id == job.job_id
    finally:
        job.cancel()
    deadline = time.monotonic() + 30
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert executors._earlier_job(record) is None
    record.write_bytes(b"not a pickle")
    assert executors._earlier_job(record) is None
    assert executors._earlier_job(tmp_path / "missing.job") is None
    pickle.dumps(executors.SubmittedRun(os._exit, 0))           # what submitit pickles


def test_two_task_job_trains_data_parallel(studies, tmp_path):
    """--slurm ntasks_per_node=2: the run trained by the job's two tasks (gloo on a CPU), as torchrun would."""
    root = tmp_path / "ddp"
    rc, out, err = sweep(root, studies["cache"], "--executor", "submitit-local", "--slurm", "ntasks_per_node=2",
                         "--beta2s", "0.99")
    assert rc == 0, (out, err)
    assert len(list((root / ".submitit").glob("*_1_result.pkl"))) == 1        # a second task ran
    single, ddp = studies["local"] / "b2_0.99", root / "b2_0.99"
    assert runio.list_checkpoints(ddp) == runio.list_checkpoints(single)
    step = runio.list_checkpoints(single)[-1]
    a = runio.load_checkpoint(runio.checkpoint_path(single, step))[0]
    b = runio.load_checkpoint(runio.checkpoint_path(ddp, step))[0]
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-6, msg=k)
    # the data-parallel path: its losses are float64 sums over the ranks, not bit-equal to one process's
    assert runio.read_metrics(ddp)[1]["train_loss"] != runio.read_metrics(single)[1]["train_loss"]


@pytest.mark.parametrize("extra, message", [
    (["--slurm", "partition=gpu"], "--slurm is for --executor slurm"),
    (["--executor-dir", "x"], "--executor-dir is for --executor slurm"),
    (["--executor", "slurm", "--jobs", "2"], "--jobs is for --executor local"),
    (["--executor", "slurm", "--slurm", "partion=gpu"], "--slurm partion: not a parameter of submitit's SlurmExecutor "
                                                        "(did you mean partition?)"),
    (["--executor", "slurm", "--slurm", "partition"], "--slurm partition: expected KEY=VALUE"),
    (["--executor", "slurm", "--slurm", "time=2h"], "--slurm time=2h: time is a whole number of minutes"),
    (["--executor", "slurm", "--slurm", "additional_parameters=x"], "a mapping cannot be given"),
    (["--executor", "slurm"], "--executor slurm: no Slurm here (srun not found)"),
    (["--executor", "nope"], "argument --executor: invalid choice"),
])
def test_bad_executor_flags_are_one_error_line(tmp_path, extra, message):
    rc, out, err = sweep(tmp_path / "s", tmp_path / "cache", *extra)
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "s").exists()                       # refused before anything was written


def test_slurm_without_submitit_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)           # import submitit -> ImportError
    rc, out, err = sweep(tmp_path / "s", tmp_path / "cache", "--executor", "slurm", "--slurm", "partition=gpu")
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --executor slurm needs submitit, which is not installed: pip install -e .[cluster]")


def test_slurm_options_become_submitit_parameters():
    import submitit
    params = executors.parse_slurm_options(
        ["partition=gpu", "time=120", "gpus_per_node=4", "cpus_per_task=8", "mem=64G", "slurm_account=proj",
         "qos=high", "setup=module load cuda", "setup=source .venv/bin/activate", "exclusive=true"], submitit)
    assert params == {"partition": "gpu", "time": 120, "gpus_per_node": 4, "cpus_per_task": 8, "mem": "64G",
                      "account": "proj", "qos": "high", "setup": ["module load cuda", "source .venv/bin/activate"],
                      "exclusive": True}
    from submitit.slurm import slurm
    text = slurm._make_sbatch_string(command="true", folder="/tmp/x", **params)
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --time=120" in text and "module load cuda" in text
