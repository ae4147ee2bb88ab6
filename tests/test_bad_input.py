"""Bad inputs end in one `error:` line (exit 2), with no traceback, and change no file of an existing run.

One `test`-preset run is trained per session (conftest's ``tiny_run``); cases that corrupt a run work on
a copy. Scripts run in-process (``run_inprocess``) to save a Python start per case."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run_inprocess

ANALYSES = sorted(str(Path(p).relative_to(ROOT)) for p in glob.glob(str(ROOT / "analysis" / "*" / "*.py")))
WITH_DEVICE = [s for s in ANALYSES if '"--device"' in (ROOT / s).read_text()
               or "add_gradient_sampling_args" in (ROOT / s).read_text()]
STUDIES = ["experiments/beta_sweep/run_study.py", "experiments/modadd/run_study.py",
           "experiments/sgd_controls/run_study.py", "experiments/symmetry/run_study.py",
           "experiments/reheating/reheat.py"]


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file of a run. RUN/.lock is left out: it holds only the pid of the last process
    that locked the run (a refused command takes the lock before it looks), not run content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def assert_one_error_line(code, out, err, names: str | None = None, status: int = 2):
    assert code == status, (code, out, err)
    assert "Traceback" not in out + err, out + err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error:"), err
    if names is not None:
        assert names in lines[-1], (names, lines[-1])


@pytest.fixture(scope="module")
def run(tiny_run):
    before = tree_hashes(tiny_run)
    yield tiny_run
    after = tree_hashes(tiny_run)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a bad input changed files of the shared run: {changed}"


@pytest.fixture
def run_copy(run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(run, dst)
    return dst


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain_file.txt"
    f.write_text("not a directory\n")
    return f


# ---------------------------------------------------------------- analysis flags (every analysis script)
@pytest.mark.parametrize("script", ANALYSES)
def test_analysis_missing_run_dir(capsys, script, tmp_path):
    missing = tmp_path / "no_such_run"
    assert_one_error_line(*run_inprocess(capsys, script, "--run-dir", str(missing)), names=str(missing))


@pytest.mark.parametrize("script", ANALYSES)
def test_analysis_run_dir_is_a_file(capsys, script, a_file):
    assert_one_error_line(*run_inprocess(capsys, script, "--run-dir", str(a_file)), names=str(a_file))


@pytest.mark.parametrize("script", ANALYSES)
def test_analysis_unknown_flag(capsys, script, run):
    assert_one_error_line(*run_inprocess(capsys, script, "--run-dir", str(run), "--no-such-flag"),
                          names="--no-such-flag")


@pytest.mark.parametrize("script", ANALYSES)
def test_analysis_no_run_dir_flag(capsys, script):
    assert_one_error_line(*run_inprocess(capsys, script), names="--run-dir")


@pytest.mark.parametrize("script", WITH_DEVICE)
def test_analysis_unknown_device(capsys, script, run):
    code, out, err = run_inprocess(capsys, script, "--run-dir", str(run), "--device", "tpu")
    assert_one_error_line(code, out, err, names="tpu")
    assert "cpu" in err.splitlines()[-1]          # the line lists the choices


# ---------------------------------------------------------------- study flags
@pytest.mark.parametrize("script", STUDIES)
def test_study_unknown_flag(capsys, script):
    code, out, err = run_inprocess(capsys, script, "--no-such-flag")
    assert_one_error_line(code, out, err)
    last = err.splitlines()[-1]
    # argparse names a missing required flag before an unknown one; either names the offending flag
    assert "--no-such-flag" in last or "arguments are required:" in last, last


# ---------------------------------------------------------------- training flags and configs
PILOT = "training/pilot.py"
BAD_SETS = [
    ("no_such_field=1", "no_such_field"),
    ("train_gap=[\"a\",\"b\"]", "train_gap"),
    ("lr=null", "lr"),
    ("n_layer=abc", "n_layer"),
    ("n_layer=1.5", "n_layer"),
    ("attn_only=maybe", "attn_only"),
    ("train_gap=5", "train_gap"),
    ("train_gap=[1,2,3]", "train_gap"),
    ("d_model", "d_model"),
    ("seq_len={}", "seq_len"),
]


@pytest.mark.parametrize("setting,names", BAD_SETS)
def test_pilot_bad_set(capsys, tmp_path, setting, names):
    out_dir = tmp_path / "new_run"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", str(out_dir), "--set", setting)
    assert_one_error_line(code, out, err, names=names)
    assert not out_dir.exists()


@pytest.mark.parametrize("args,names", [
    (["--preset", "no_such_preset"], "no_such_preset"),
    (["--steps", "ten"], "--steps"),
    (["--lr", "fast"], "--lr"),
    (["--device", "tpu"], "tpu"),
    (["--bogus"], "--bogus"),
])
def test_pilot_bad_flags(capsys, tmp_path, args, names):
    out_dir = tmp_path / "new_run"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", str(out_dir), *args)
    assert_one_error_line(code, out, err, names=names)
    assert not out_dir.exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "", '{"n_layer": "x"}', '{"no_such_field": 1}'])
def test_pilot_bad_config_file(capsys, tmp_path, content):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(content)
    out_dir = tmp_path / "new_run"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--config", str(cfg), "--out-dir", str(out_dir))
    assert_one_error_line(code, out, err)
    assert not out_dir.exists()


def test_pilot_missing_config_file(capsys, tmp_path):
    cfg = tmp_path / "nope.json"
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--config", str(cfg), "--out-dir", str(tmp_path / "r")),
                          names=str(cfg))


def test_pilot_out_dir_is_a_file(capsys, a_file):                      # must-fix 3
    before = a_file.read_bytes()
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", str(a_file)),
                          names=str(a_file))
    assert a_file.read_bytes() == before


@pytest.mark.parametrize("script", STUDIES[:4])
def test_study_out_dir_is_a_file(capsys, script, a_file):                # must-fix 3, the studies
    before = a_file.read_bytes()
    args = {"beta_sweep": ("train", "--preset", "test"), "symmetry": ()}.get(Path(script).parent.name,
                                                                             ("--preset", "test"))
    code, out, err = run_inprocess(capsys, script, *args, "--out-dir", str(a_file))
    assert_one_error_line(code, out, err, names=str(a_file))
    assert a_file.read_bytes() == before


def test_overwrite_moves_the_old_run_aside(capsys, run_copy):
    """--overwrite trains again from step 0, but only after moving the old run, complete, to a sibling."""
    before = tree_hashes(run_copy)
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", str(run_copy), "--overwrite")
    assert code == 0, err
    aside = sorted(run_copy.parent.glob(run_copy.name + ".previous-*"))
    assert len(aside) == 1, list(run_copy.parent.iterdir())
    assert tree_hashes(aside[0]) == before                    # nothing of the old run lost or changed
    assert json.loads((run_copy / "status.json").read_text())["state"] == "completed"


def test_pilot_refuses_existing_run(capsys, run):
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", str(run)),
                          names=str(run))


def test_resume_without_resume_state_is_refused(capsys, run_copy):    # must-fix 1: data loss
    # a run killed after some checkpoints but before (or after losing) its resume state
    resume = next(run_copy.rglob("resume.pt"), None)
    if resume is not None:
        resume.unlink()
    status = json.loads((run_copy / "status.json").read_text())
    status["state"] = "running"
    (run_copy / "status.json").write_text(json.dumps(status))
    before = tree_hashes(run_copy)
    code, out, err = run_inprocess(capsys, PILOT, "--resume", "--out-dir", str(run_copy))
    assert_one_error_line(code, out, err, names=str(run_copy))
    assert "--overwrite" in err.splitlines()[-1] or "overwrite" in err
    assert tree_hashes(run_copy) == before


def test_resume_of_nothing(capsys, tmp_path):
    missing = tmp_path / "never_ran"
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--resume", "--out-dir", str(missing)), names=str(missing))
    assert not missing.exists()


# ---------------------------------------------------------------- checkpoints: foreign shape, corrupt, truncated
def _a_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("*.safetensors"))[-1]


@pytest.fixture
def foreign_ckpt(run, tmp_path):
    from safetensors.torch import load_file, save_file
    src = _a_checkpoint(run)
    tensors = load_file(str(src))
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    t = tensors[name]
    import torch
    tensors[name] = torch.zeros(t.shape[0] + 3, t.shape[1])
    dst = tmp_path / "foreign.safetensors"
    save_file(tensors, str(dst))
    return dst, name, tuple(t.shape), (t.shape[0] + 3, t.shape[1])


def test_init_from_foreign_shape(capsys, tmp_path, foreign_ckpt):     # must-fix 2
    path, name, _, _ = foreign_ckpt
    out_dir = tmp_path / "reheat"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--init-from", str(path), "--out-dir", str(out_dir))
    assert_one_error_line(code, out, err, names=str(path))
    assert name in err.splitlines()[-1]
    assert not out_dir.exists(), "a refused --init-from left a directory behind"


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "missing"])
def test_init_from_broken_checkpoint(capsys, tmp_path, run, kind):
    path = tmp_path / "bad.safetensors"
    data = _a_checkpoint(run).read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    out_dir = tmp_path / "reheat"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--init-from", str(path), "--out-dir", str(out_dir))
    assert_one_error_line(code, out, err, names=str(path))
    assert not out_dir.exists()


MODEL_LOADERS = ["analysis/basin/eval_noise.py", "analysis/fisher/fisher_analysis.py",
                 "analysis/fisher/rayleigh_quotients.py", "analysis/backbone/residual_decomposition.py"]


@pytest.mark.parametrize("script", MODEL_LOADERS)
@pytest.mark.parametrize("kind", ["foreign", "truncated"])
def test_analysis_of_a_bad_checkpoint(capsys, run_copy, foreign_ckpt, script, kind):   # must-fix 2
    victim = _a_checkpoint(run_copy)
    if kind == "foreign":
        shutil.copyfile(foreign_ckpt[0], victim)
    else:
        victim.write_bytes(victim.read_bytes()[:100])
    before = tree_hashes(run_copy)
    step = int("".join(c for c in victim.stem if c.isdigit()))
    code, out, err = run_inprocess(capsys, script, "--run-dir", str(run_copy), "--steps", str(step),
                                   "--device", "cpu", "--out-dir", str(run_copy.parent / "out"))
    assert_one_error_line(code, out, err, names=victim.name)
    if kind == "foreign":                         # the parameter and both shapes
        _, name, shape, other = foreign_ckpt
        last = err.splitlines()[-1].replace(" ", "")
        dims = [",".join(map(str, s)) for s in (shape, other)]
        assert name in last and all(d in last for d in dims), last
    assert tree_hashes(run_copy) == before


# ---------------------------------------------------------------- broken run files
@pytest.mark.parametrize("name,content", [
    ("config.json", "{broken"), ("config.json", ""), ("config.json", "[]"),
    ("status.json", "{broken"), ("metrics.jsonl", '{"step": 1}\n{broken\n'),
])
def test_analysis_of_broken_run_files(capsys, run_copy, name, content):
    (run_copy / name).write_text(content)
    before = tree_hashes(run_copy)
    code, out, err = run_inprocess(capsys, "analysis/basin/eval_noise.py", "--run-dir", str(run_copy),
                                   "--device", "cpu", "--out-dir", str(run_copy.parent / "out"))
    assert_one_error_line(code, out, err, names=name)
    assert tree_hashes(run_copy) == before


def test_resume_with_broken_config(capsys, run_copy):
    (run_copy / "config.json").write_text("{broken")
    before = tree_hashes(run_copy)
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--resume", "--out-dir", str(run_copy)), names="config.json")
    assert tree_hashes(run_copy) == before


# ---------------------------------------------------------------- operating-system failures
def _chmod_works(path: Path) -> bool:
    return hasattr(os, "geteuid") and os.geteuid() != 0


def test_analysis_of_read_only_run(capsys, run_copy):                  # must-fix 5
    if not _chmod_works(run_copy):
        pytest.skip("running as root: chmod cannot make a directory read-only")
    before = tree_hashes(run_copy)
    dirs = [run_copy, *[p for p in run_copy.rglob("*") if p.is_dir()]]
    for d in dirs:
        d.chmod(0o555)
    try:
        code, out, err = run_inprocess(capsys, "analysis/basin/eval_noise.py", "--run-dir", str(run_copy),
                                       "--device", "cpu", "--last", "1", "--n-boot", "5")
        assert_one_error_line(code, out, err)
        assert "--out-dir" in err.splitlines()[-1]
    finally:
        for d in dirs:
            d.chmod(0o755)
    assert tree_hashes(run_copy) == before


def test_disk_full_is_one_line(capsys, run_copy, monkeypatch):         # must-fix 5 (ENOSPC simulated)
    import errno
    from training.core import runio
    real_open = open

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[0]) if a else "?")
    before = tree_hashes(run_copy)
    monkeypatch.setattr(runio, "atomic_write_text", full, raising=False)
    monkeypatch.setattr(runio, "atomic_write_bytes", full, raising=False)
    import builtins
    out_dir = run_copy.parent / "out"
    out_dir.mkdir()

    def full_open(file, mode="r", *a, **k):
        if any(c in mode for c in "wax") and str(file).startswith(str(out_dir)):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", full_open)
    code, out, err = run_inprocess(capsys, "analysis/basin/eval_noise.py", "--run-dir", str(run_copy),
                                   "--device", "cpu", "--last", "1", "--n-boot", "5", "--out-dir", str(out_dir))
    monkeypatch.undo()
    assert_one_error_line(code, out, err, names="No space left")
    assert tree_hashes(run_copy) == before


# ---------------------------------------------------------------- unfinished runs (must-fix 7)
LM_ANALYSES = ["analysis/basin/eval_noise.py", "analysis/backbone/trajectory_pca.py",
               "analysis/backbone/update_alignment.py", "analysis/basin/basin_tests.py",
               "analysis/basin/manifold_dim.py", "analysis/switching/detect_oscillations.py",
               "analysis/fisher/rayleigh_quotients.py"]


@pytest.mark.parametrize("script", LM_ANALYSES)
def test_every_analysis_records_an_unfinished_run(capsys, run_copy, script):
    status = json.loads((run_copy / "status.json").read_text())
    status["state"] = "running"
    (run_copy / "status.json").write_text(json.dumps(status))
    out_dir = run_copy.parent / "out"
    code, out, err = run_inprocess(capsys, script, "--run-dir", str(run_copy), "--out-dir", str(out_dir))
    assert code == 0, err
    assert sum("warning:" in ln and "not completed" in ln for ln in (out + err).splitlines()) == 1, out + err
    results = [json.loads(p.read_text()) for p in out_dir.glob("*.json")]
    assert results and all(r.get("run_state", {}).get("state") == "running" for r in results), \
        [(r.get("run_state")) for r in results]


@pytest.mark.parametrize("state", ["running", "failed", "diverged"])
def test_analysis_of_unfinished_run_warns_and_records(capsys, run_copy, state):
    status = json.loads((run_copy / "status.json").read_text())
    status["state"] = state
    (run_copy / "status.json").write_text(json.dumps(status))
    out_dir = run_copy.parent / "out"
    code, out, err = run_inprocess(capsys, "analysis/basin/eval_noise.py", "--run-dir", str(run_copy),
                                   "--device", "cpu", "--last", "1", "--n-boot", "5", "--out-dir", str(out_dir))
    assert code == 0, err
    warnings = [ln for ln in (out + err).splitlines() if state in ln and "warning" in ln.lower()]
    assert len(warnings) == 1, out + err
    results = [json.loads(p.read_text()) for p in out_dir.rglob("*.json")]
    assert results and all(json.dumps(r).count(state) >= 1 for r in results)


# ---------------------------------------------------------------- found by a second new-user trial
def test_empty_out_dir_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                 # an empty --out-dir once trained silently into runs/<name>
    assert_one_error_line(*run_inprocess(capsys, PILOT, "--preset", "test", "--out-dir", ""), names="--out-dir")
    assert not any(tmp_path.iterdir())
    assert_one_error_line(*run_inprocess(capsys, "experiments/sgd_controls/run_study.py", "--preset", "test",
                                         "--out-dir", ""), names="--out-dir")
    assert not any(tmp_path.iterdir())


def test_analysis_empty_out_dir(capsys, run):
    assert_one_error_line(*run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(run),
                                         "--out-dir", ""), names="--out-dir")


def test_init_from_a_directory(capsys, tmp_path, run):
    out_dir = tmp_path / "reheat"
    code, out, err = run_inprocess(capsys, PILOT, "--preset", "test", "--init-from", str(run), "--out-dir", str(out_dir))
    assert_one_error_line(code, out, err, names="is a directory")
    assert not out_dir.exists()


@pytest.mark.parametrize("stride", ["0", "-2"])
@pytest.mark.parametrize("script", ["analysis/backbone/trajectory_pca.py", "analysis/backbone/update_alignment.py"])
def test_non_positive_stride(capsys, run, tmp_path, script, stride):
    assert_one_error_line(*run_inprocess(capsys, script, "--run-dir", str(run), "--stride", stride,
                                         "--out-dir", str(tmp_path / "out")), names="--stride")


@pytest.fixture
def unwritable(monkeypatch):
    """Make every atomic write under a folder fail with an OS error, as on a read-only or foreign-owned run:
    the chmod cases above are skipped where the tests run as root, these are not."""
    import errno as _errno
    from training.core import runio
    real = runio.atomic_write

    def under(folder: Path, code: int):
        def refuse(path, write_fn):
            if str(Path(path).resolve()).startswith(str(folder.resolve())):
                raise OSError(code, os.strerror(code), str(path))
            return real(path, write_fn)
        monkeypatch.setattr(runio, "atomic_write", refuse)
    return under, _errno


@pytest.mark.parametrize("code_name", ["EROFS", "EACCES"])
@pytest.mark.parametrize("command", ["analysis", "report", "resume"])
def test_unwritable_run_is_one_line(capsys, run_copy, unwritable, code_name, command):
    under, _errno = unwritable
    code = getattr(_errno, code_name)
    if command == "resume":                      # a stopped run, resumed where nothing can be written
        status = json.loads((run_copy / "status.json").read_text())
        status["state"] = "running"
        (run_copy / "status.json").write_text(json.dumps(status))
    before = tree_hashes(run_copy)
    under(run_copy, code)
    args = {"analysis": ("analysis/backbone/trajectory_pca.py", "--run-dir", str(run_copy)),
            "report": ("figures/make_report.py", "--run-dir", str(run_copy)),
            "resume": (PILOT, "--resume", "--out-dir", str(run_copy))}[command]
    got, out, err = run_inprocess(capsys, *args)
    assert_one_error_line(got, out, err, names=os.strerror(code))
    assert str(run_copy) in err.splitlines()[-1]
    if command != "resume":
        assert "--out-dir" in err.splitlines()[-1]       # the way out for an analysis
    assert tree_hashes(run_copy) == before


def test_unwritable_run_is_analysed_and_reported_elsewhere(capsys, run_copy, unwritable, tmp_path):
    """The way out the error line names: analyses and then the report with the same --out-dir, the run untouched."""
    under, _errno = unwritable
    before = tree_hashes(run_copy)
    under(run_copy, _errno.EROFS)
    out_dir = tmp_path / "elsewhere"
    code, out, err = run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(run_copy),
                                   "--out-dir", str(out_dir))
    assert code == 0, err
    code, out, err = run_inprocess(capsys, "figures/make_report.py", "--run-dir", str(run_copy), "--out-dir", str(out_dir))
    assert code == 0, err
    report = (out_dir / "report.md").read_text()
    pca = json.loads((out_dir / "trajectory_pca.json").read_text())
    assert f"PC1 holds {100 * pca['trunk']['raw']['explained_variance_ratio'][0]:.1f} %" in report      # the report read the redirected analysis
    assert (out_dir / "figures").is_dir()
    assert tree_hashes(run_copy) == before
