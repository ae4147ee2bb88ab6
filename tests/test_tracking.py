"""Experiment tracking (training/core/tracking.py): TensorBoard and W&B (offline) sinks fed from metrics.jsonl's
records, read back with TensorBoard's own reader and from W&B's offline run file; resume, missing packages,
unknown sinks, and the config hash that --log leaves alone."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_inprocess, run_pilot
from training.core import runio, tracking
from training.core.config import Config, parse_override, preset
from training.core.errors import UserError

pytest.importorskip("tensorboard")
wandb_pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch, tmp_path):
    """W&B offline and quiet, its settings and caches in this test's folder; no API key."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard shows them (its EventAccumulator, which drops purged events)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (.wandb): a LevelDB-style log of wandb_internal_pb2.Record after a 7-byte
    header (':W&B', magic, version); 32 KiB blocks of chunks (crc32c, length, type: full/first/middle/last)."""
    data, block, pos, out, buf = path.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:                       # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):                 # full or last chunk: one record
            r = wandb_pb.Record()
            r.ParseFromString(buf)
            out.append(r)
            buf = b""
    return out


def wandb_history(path: Path) -> list[dict]:
    rows = []
    for r in wandb_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return rows


def offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def check_tensorboard_equals_metrics(run: Path) -> None:
    """Every number of every metrics.jsonl record is in TensorBoard at the record's step, once (float32)."""
    got = tensorboard_scalars(run / "tensorboard")
    want: dict[str, list[tuple[int, float]]] = {}
    for r in runio.read_metrics(run):
        for k, v in tracking.scalars(r).items():
            want.setdefault(k, []).append((r["step"], v))
    assert {k for k in got if not k.startswith("summary/")} == set(want)
    for k, pts in want.items():
        assert [s for s, _ in got[k]] == [s for s, _ in pts], k
        assert [v for _, v in got[k]] == pytest.approx([v for _, v in pts], rel=1e-6, abs=1e-30), k


def test_tensorboard_sink_holds_the_metrics_records(tmp_path, cache):
    run = tmp_path / "tb"
    run_pilot("--preset", "test", "--out-dir", str(run), "--log", "tensorboard", cache=cache)
    check_tensorboard_equals_metrics(run)
    assert [r["step"] for r in runio.read_metrics(run)] == [0, 5, 10, 15, 20]
    assert "val_loss" in tensorboard_scalars(run / "tensorboard")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["config"]["log"] == ["tensorboard"]
    assert cfg["config_hash"] == preset("test").hash()          # --log changes no number: the hash is the preset's
    assert not (run / "wandb").exists()

    # an analysis's headline numbers join the same log (training/core/tracking.log_summary), at the last step
    p = subprocess.run([sys.executable, str(ROOT / "analysis/backbone/trajectory_pca.py"), "--no-progress",
                        "--run-dir", str(run), "--no-blocks", "--null-samples", "2", "--log", "tensorboard"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    got = tensorboard_scalars(run / "tensorboard")
    pca = json.loads((run / "analysis" / "trajectory_pca.json").read_text())["trunk"]
    assert got["summary/trajectory_pca/pc1"] == [(20, pytest.approx(pca["raw"]["pc1"], rel=1e-6))]
    assert got["summary/trajectory_pca/k95"] == [(20, pca["raw"]["k95"])]
    check_tensorboard_equals_metrics(run)                      # the training scalars are still there, once each


def test_wandb_offline_run_holds_the_metrics_records(tmp_path, cache):
    run = tmp_path / "wb"
    run_pilot("--preset", "test", "--out-dir", str(run), "--log", "wandb", cache=cache)
    run_id = (run / "wandb" / "run-id").read_text().strip()
    [offline] = offline_runs(run)
    assert offline.name.endswith("-" + run_id)
    rows = wandb_history(offline / f"run-{run_id}.wandb")
    records = runio.read_metrics(run)
    assert [row["_step"] for row in rows] == [r["step"] for r in records]
    for row, r in zip(rows, records):
        assert {k: v for k, v in row.items() if not k.startswith("_")} == tracking.scalars(r)
    [meta] = [r.run for r in wandb_records(offline / f"run-{run_id}.wandb") if r.WhichOneof("record_type") == "run"]
    assert meta.run_id == run_id and meta.display_name == "wb"
    config = {u.key: json.loads(u.value_json) for u in meta.config.update}
    assert config["preset"] == "test" and config["log"] == ["wandb"]


CRASH = """
import sys
from training import pilot
from training.core.trainer import Trainer
checkpoint = Trainer._checkpoint
def crash(self, step):
    if step == 15:           # after the evaluation of step 15 was logged, before its checkpoint: resumes from 10
        raise RuntimeError("simulated crash")
    checkpoint(self, step)
Trainer._checkpoint = crash
sys.exit(pilot.main(sys.argv[1:]))
"""


def test_resume_logs_each_step_once_and_continues_the_wandb_run(tmp_path, cache):
    run = tmp_path / "crash"
    p = subprocess.run([sys.executable, "-c", CRASH, "--no-progress", "--preset", "test", "--out-dir", str(run),
                        "--set", f"cache_dir={cache}", "--log", "tensorboard,wandb"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode != 0 and "simulated crash" in p.stderr
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    first = tensorboard_scalars(run / "tensorboard")
    assert [s for s, _ in first["val_loss"]] == [0, 5, 10, 15]        # the sinks were closed, their files complete
    stale = dict(first["elapsed_s"])[15]

    run_pilot("--resume", "--out-dir", str(run), cache=cache)          # the run's own sinks (config.json's log)
    records = runio.read_metrics(run)
    assert [r["step"] for r in records] == [0, 5, 10, 15, 20]
    check_tensorboard_equals_metrics(run)        # step 15 once, with the resumed session's values (purge_step=11)
    assert dict(tensorboard_scalars(run / "tensorboard")["elapsed_s"])[15] != stale

    run_id = (run / "wandb" / "run-id").read_text().strip()
    sessions = offline_runs(run)
    assert len(sessions) == 2 and all(s.name.endswith("-" + run_id) for s in sessions)   # one W&B run, two parts
    steps = [[row["_step"] for row in wandb_history(s / f"run-{run_id}.wandb")] for s in sessions]
    assert steps == [[0, 5, 10, 15], [15, 20]]


def test_a_sink_added_on_resume_gets_the_earlier_records(tmp_path, cache):
    run = tmp_path / "late"
    p = subprocess.run([sys.executable, "-c", CRASH, "--no-progress", "--preset", "test", "--out-dir", str(run),
                        "--set", f"cache_dir={cache}"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode != 0 and not (run / "tensorboard").exists()
    run_pilot("--resume", "--out-dir", str(run), "--log", "tensorboard", cache=cache)
    check_tensorboard_equals_metrics(run)                              # 0..10 from metrics.jsonl, then 15, 20


def test_unknown_sink_is_one_error_line(tmp_path, cache):
    for args in (["--log", "mlflow"], ["--log", "tensorboard,mlflow"], ["--set", "log=mlflow"]):
        p = run_pilot("--preset", "test", "--out-dir", str(tmp_path / "x"), *args, cache=cache, check=False)
        assert p.returncode == 2
        assert p.stderr.strip() == "error: unknown log sink 'mlflow' (choose from tensorboard, wandb)", p.stderr
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("sink, module", [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb")])
def test_missing_package_is_one_error_line(tmp_path, capsys, monkeypatch, cache, sink, module):
    monkeypatch.setitem(sys.modules, module, None)           # `import module` now fails as if it were not installed
    with pytest.raises(UserError, match=r"pip install -e '\.\[tracking\]'"):
        tracking.require([sink])
    code, out, err = run_inprocess(capsys, "training/pilot.py", "--preset", "test", "--out-dir", str(tmp_path / "r"),
                                   "--set", f"cache_dir={cache}", "--log", sink)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and errors == err.strip().splitlines()[-1:], err      # one error line, the last one
    assert errors[0].startswith(f"error: --log {sink} needs the {sink} package") and "[tracking]" in errors[0]
    assert not (tmp_path / "r").exists()                      # stopped before anything was written


def test_log_field_parses_and_leaves_the_hash_alone():
    c = preset("test")
    for value in (("tensorboard",), ("tensorboard", "wandb"), ()):
        d = c.replace(log=value)
        assert d.hash() == c.hash()
        assert Config.from_json(d.to_json()) == d
    assert parse_override("log=tensorboard,wandb") == ("log", ("tensorboard", "wandb"))
    assert parse_override('log=["wandb"]') == ("log", ("wandb",))
    assert parse_override("log=") == ("log", ())
    assert tracking.parse_flag(["tensorboard", "wandb"]) == tracking.parse_flag(["tensorboard,wandb"])
    assert tracking.parse_flag(["none"]) == ()
    with pytest.raises(UserError, match="config field log expects a list of names"):
        parse_override("log=[1]")
    assert tracking.scalars({"step": 3, "a": 1, "b": None, "c": "x", "d": True, "e": float("nan"), "f": 0.5}) == \
        {"a": 1.0, "f": 0.5}
