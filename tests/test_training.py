"""End-to-end training on the `test` preset: run directory, exact kill-and-resume, divergence, refusals."""
import json
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from conftest import ROOT, run_pilot
from training.core import runio


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, cache):
    run = tmp_path_factory.mktemp("runs") / "ref"
    run_pilot("--preset", "test", "--out-dir", str(run), cache=cache)
    return run


def test_run_directory_contract(reference_run):
    run = reference_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["preset"] == "test" and len(cfg["config_hash"]) == 16
    assert {"git_commit", "command", "torch", "time"} <= set(cfg["provenance"])
    # what bitwise reproducibility depends on besides code and seed: this process's CPU kernels and threads
    import torch
    assert cfg["provenance"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cfg["provenance"]["threads"] >= 1 and cfg["provenance"]["cpu"]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert runio.list_checkpoints(run) == [0, 5, 10, 15, 20]
    meta_step = []
    for s in runio.list_checkpoints(run):
        tensors, meta = runio.load_checkpoint(runio.checkpoint_path(run, s))
        assert meta["step"] == str(s) and meta["config_hash"] == cfg["config_hash"]
        assert all(t.dtype.is_floating_point and str(t.dtype) == "torch.float32" for t in tensors.values())
        assert "lm_head.weight" not in tensors and "tok_emb.weight" in tensors
        meta_step.append(s)
    records = runio.read_metrics(run)
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20]
    keys = {"step", "tokens", "lr", "lambda", "train_loss", "val_loss", "p_in", "p_ood", "nll_in", "nll_ood",
            "lm_ood", "grad_norm", "elapsed_s"}
    assert keys <= set(records[-1])
    assert records[0]["train_loss"] is None and records[-1]["train_loss"] > 0
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert records[2]["lambda"] == 2.0 and records[1]["lambda"] == 1.0
    words = json.loads((run / "codewords.json").read_text())["codewords"]
    assert len(words) == 16 and len(set(words)) == 16
    assert (run / "tokenizer.json").exists()


def _ckpt_bytes(run):
    return {s: runio.checkpoint_path(run, s).read_bytes() for s in runio.list_checkpoints(run)}


@pytest.mark.parametrize("kill_after", [1, 3])
def test_sigkill_then_resume_is_bitwise_identical(reference_run, tmp_path, cache, kill_after):
    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--no-progress", "--preset", "test",
           "--out-dir", str(run), "--set", f"cache_dir={cache}", "--set", "steps=20"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(runio.list_checkpoints(run)) < kill_after and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "running"          # killed without a chance to clean up
    run_pilot("--resume", "--out-dir", str(run), cache=cache)
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    ref, got = _ckpt_bytes(reference_run), _ckpt_bytes(run)
    assert sorted(got) == sorted(ref)
    for s in ref:
        assert got[s] == ref[s], f"checkpoint {s} differs after resume"
    steps = [r["step"] for r in runio.read_metrics(run)]
    assert steps == [0, 5, 10, 15, 20]
    # the metrics themselves agree too (up to wall-clock time)
    for a, b in zip(runio.read_metrics(run), runio.read_metrics(reference_run)):
        a.pop("elapsed_s"), b.pop("elapsed_s")
        assert a == b


def test_resume_of_completed_run_is_a_no_op(reference_run, cache):
    before = _ckpt_bytes(reference_run)
    p = run_pilot("--resume", "--out-dir", str(reference_run), cache=cache)
    assert "already completed" in p.stdout
    assert _ckpt_bytes(reference_run) == before


def test_diverging_run_ends_as_diverged(tmp_path, cache):
    run = tmp_path / "div"
    p = run_pilot("--preset", "test", "--out-dir", str(run), "--optimizer", "sgd", "--lr", "1e30",
                  "--set", "grad_clip=0", "--set", "warmup=0", cache=cache)
    assert p.returncode == 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "diverged" and 0 < status["step"] <= 20
    assert "non-finite" in status["message"]
    assert 0 in runio.list_checkpoints(run)          # usable by analyses
    for s in runio.list_checkpoints(run):
        t = load_file(str(runio.checkpoint_path(run, s)))
        assert all(v.isfinite().all() for v in t.values())


def test_second_writer_is_refused(reference_run, cache):
    with runio.RunLock(reference_run):
        p = run_pilot("--resume", "--out-dir", str(reference_run), cache=cache, check=False)
    assert p.returncode == 2
    assert "is in use by pid" in p.stderr and p.stderr.count("\n") == 1


def test_existing_run_directory_is_not_overwritten(reference_run, cache):
    before = _ckpt_bytes(reference_run)
    p = run_pilot("--preset", "test", "--out-dir", str(reference_run), cache=cache, check=False)
    assert p.returncode == 2 and "already holds a run" in p.stderr
    assert _ckpt_bytes(reference_run) == before


@pytest.mark.parametrize("args, message", [
    (["--preset", "test", "--set", "n_head=3"], "n_head=3 does not divide d_model=32"),
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "test", "--set", "corpus=files", "--set", "corpus_path=/nonexistent/x.txt"], "does not exist"),
    (["--preset", "test", "--init-from", "/nonexistent.safetensors"], "--init-from /nonexistent.safetensors does not exist"),
    (["--resume", "--out-dir", "/nonexistent/run"], "holds no run to resume"),
    (["--preset", "test", "--set", "tokenizer=gpt2"], "gpt2 tokenizer needs tiktoken's vocabulary"),
])
def test_bad_input_gives_one_line_errors(tmp_path, cache, args, message):
    p = run_pilot(*args, "--out-dir", str(tmp_path / "r"), cache=cache, check=False) if "--out-dir" not in args \
        else run_pilot(*args, cache=cache, check=False)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr
    assert p.stderr.strip().count("\n") <= 1 and "Traceback" not in p.stderr


def test_corrupt_checkpoint_is_reported(reference_run, tmp_path, cache):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(runio.checkpoint_path(reference_run, 5).read_bytes()[:100])
    p = run_pilot("--preset", "test", "--init-from", str(bad), "--out-dir", str(tmp_path / "r"), cache=cache, check=False)
    assert p.returncode == 2 and "corrupt or truncated" in p.stderr


def test_init_from_starts_from_the_checkpoint_with_fresh_optimizer(reference_run, tmp_path, cache):
    src = runio.checkpoint_path(reference_run, 20)
    run = tmp_path / "reheat"
    run_pilot("--preset", "test", "--init-from", str(src), "--out-dir", str(run), "--set", "steps=5",
              "--set", "warmup=1", "--set", "lambda_step=0", "--data-seed", "7", cache=cache)
    a, b = load_file(str(src)), load_file(str(runio.checkpoint_path(run, 0)))
    assert all((a[k] == b[k]).all() for k in a)
    prov = json.loads((run / "config.json").read_text())["provenance"]
    assert prov["init_step"] == "20"


def test_dry_run_paper_needs_no_network():
    p = subprocess.run([sys.executable, str(ROOT / "training" / "pilot.py"), "--preset", "paper", "--dry-run"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0
    assert "51,045,888" in p.stdout and "25,165,824" in p.stdout
    assert '"n_layer": 8' in p.stdout
