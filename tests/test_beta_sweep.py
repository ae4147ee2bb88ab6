"""The β2-sweep study end to end at the `test` preset, checked against its runs' files and dense numpy."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from training.studies import beta_sweep as bs
from training.core import runio
from training.studies import common as studies
from training.core.config import checkpoint_steps, preset
from training.core.errors import UserError
from training.core.model import trunk_names


def _load(name, rel):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


STUDY = _load("run_study", "experiments/beta_sweep/run_study.py")
BETA_SUMMARY = _load("beta_summary", "analysis/beta_sweep/beta_summary.py")


def strict_json(path):
    def no_constants(name):
        raise AssertionError(f"{path} holds {name}: not strict JSON")
    return json.loads(path.read_text(), parse_constant=no_constants)


def metrics_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A two-run sweep (β2 = 0.95 and the diverging β2 = 0) with a two-run reheating grid, via `all`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny models on a shared 2-core machine: one thread is several times faster
    base = tmp_path_factory.mktemp("beta_sweep")
    common = ["--preset", "test", "--out-dir", str(base / "study"), "--set", f"cache_dir={base / 'cache'}",
              "--no-progress", "--n-batches", "2"]
    args = ["all", *common, "--beta2s", "0.95,0", "--reheat-beta2s", "0.95", "--ckpts", "4000", "--lrs", "1e-3,6e-4"]
    assert STUDY.main(args) == 0
    yield {"root": base / "study", "cache": base / "cache", "args": args}
    torch.set_num_threads(threads)


def test_protocol_scaling():
    p = bs.protocol(preset("paper"))
    assert (p["steps"], p["warmup"], p["lambda_step"], p["eval_every"]) == (4000, 1500, 4000, 200)
    assert p["ckpt_dense"] == [[600, 2000, 50], [2000, 4000, 100]] and p["window"] == [600, 2000]
    assert (p["delta"], p["early_end"], p["interference_steps"]) == (200, 2000, [1600, 3000])
    assert len(checkpoint_steps(bs.sweep_config(preset("paper"), 0.8))) == 52      # as the reference's runs
    q = bs.protocol(preset("quick"))
    assert (q["steps"], q["warmup"], q["eval_every"], q["window"], q["delta"]) == (240, 50, 12, [36, 120], 12)
    assert q["ckpt_dense"] == [[36, 120, 3], [120, 240, 6]] and q["interference_steps"] == [96, 180]
    assert q["reheat"]["lrs"] == [3e-3, 1.8e-3, 9e-4] and q["reheat"]["steps"] == 120


def test_runs_differ_only_in_beta2(sweep):
    cfgs = {b: runio.read_json(sweep["root"] / f"b2_{b}" / "config.json")["config"] for b in ("0.95", "0")}
    diff = {k for k in cfgs["0.95"] if cfgs["0.95"][k] != cfgs["0"][k]}
    assert diff == {"beta2", "out_dir"}
    c = cfgs["0"]
    t = preset("test")
    assert (c["beta2"], c["steps"], c["lambda_step"], c["warmup"]) == (0.0, 8, 8, min(t.warmup, 8))
    assert (c["p_probe"], c["batch_size"], c["grad_accum"], c["lr"]) == (t.p_probe, t.batch_size, t.grad_accum, t.lr)
    assert c["keep_optimizer_states"] is False


def test_summary_rows_match_metrics(sweep):
    out = strict_json(sweep["root"] / "analysis" / "beta_sweep_summary.json")
    rows = {r["beta2"]: r for r in out["table"]}
    assert set(rows) == {0.95, 0.0}
    for b, r in rows.items():
        ms = metrics_lines(sweep["root"] / f"b2_{b:g}")
        assert r["best_p_ood"] == max(m["p_ood"] for m in ms)
        keys = {"beta2", "state", "final_val_loss", "val_display", "best_p_ood", "pc1", "pc1_raw", "k95", "k99",
                "drift", "mean_abs_update_cos", "interference", "run_dir"}
        assert keys <= set(r)
    assert rows[0.95]["state"] == "completed"
    assert rows[0.95]["final_val_loss"] == rows[0.95]["val_display"] == metrics_lines(sweep["root"] / "b2_0.95")[-1]["val_loss"]
    # β2 = 0 blows up (final val loss far above its initial value): diverged, with the geometry it produced
    d = rows[0.0]
    ms = metrics_lines(sweep["root"] / "b2_0")
    assert ms[-1]["val_loss"] > ms[0]["val_loss"]
    assert d["state"] == "diverged" and d["val_display"] == "diverged" and d["final_val_loss"] is None
    assert all(d[k] is not None for k in ("pc1", "k95", "drift", "mean_abs_update_cos", "interference"))
    md = (sweep["root"] / "analysis" / "table_beta2.md").read_text()
    assert "| 0 | diverged |" in md and "β2-ablation reheating" in md
    csv = (sweep["root"] / "analysis" / "table_beta2.csv").read_text().splitlines()
    assert len(csv) == 3 and "None" not in "".join(csv)
    assert csv[0].startswith("beta2,state,final_val_loss")
    for name in ("beta_geometry", "beta_update_alignment", "beta_interference", "beta_p_ood", "beta_reheat"):
        assert (sweep["root"] / "analysis" / f"{name}.png").stat().st_size > 1000


def trunk_matrix(run_dir, steps):
    from safetensors.numpy import load_file
    from training.core.runio import read_run_config
    names = trunk_names(read_run_config(run_dir))
    rows = []
    for s in steps:
        t = load_file(str(runio.checkpoint_path(run_dir, s)))
        rows.append(np.concatenate([t[n].astype(np.float64).ravel() for n in names]))
    return np.stack(rows)


@pytest.mark.parametrize("b", ["0.95", "0"])
def test_geometry_matches_dense_svd(sweep, b):
    run_dir = sweep["root"] / f"b2_{b}"
    res = strict_json(run_dir / "analysis" / "beta_metrics.json")
    steps = runio.list_checkpoints(run_dir)
    assert steps == list(range(9))
    theta = trunk_matrix(run_dir, steps)
    lo, hi = res["protocol"]["window"]
    assert (lo, hi) == (1, 4)
    X = theta[lo + 1:hi + 1] - theta[lo]                        # drifts from the window's first checkpoint
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    s = np.linalg.svd(Xn, compute_uv=False)
    evr = s ** 2 / np.sum(s ** 2)
    cum = np.cumsum(evr)
    sraw = np.linalg.svd(X, compute_uv=False)
    summ = res["summary"]
    assert summ["pc1"] == pytest.approx(evr[0], rel=1e-9)
    assert summ["k95"] == int(np.argmax(cum >= 0.95 - 1e-12) + 1)
    assert summ["k99"] == int(np.argmax(cum >= 0.99 - 1e-12) + 1)
    assert summ["pc1_raw"] == pytest.approx(sraw[0] ** 2 / np.sum(sraw ** 2), rel=1e-9)
    assert summ["drift"] == pytest.approx(np.linalg.norm(theta[hi] - theta[lo]), rel=1e-9)
    # backbone: raw PC1 of all drifts from θ(0); update alignment with Δ = 1 checkpoint step
    D = theta[1:] - theta[0]
    v = np.linalg.svd(D, full_matrices=False)[2][0]
    delta = res["protocol"]["delta"]
    cos = [abs((theta[t] - theta[t - delta]) @ v) / np.linalg.norm(theta[t] - theta[t - delta])
           for t in range(delta, 9)]
    assert res["update_alignment"]["steps"] == list(range(delta, 9))
    assert summ["mean_abs_update_cos"] == pytest.approx(np.mean(cos), rel=1e-7)
    early = res["protocol"]["early_end"]
    assert summ["mean_abs_update_cos_early"] == pytest.approx(np.mean(cos[:early - delta + 1]), rel=1e-7)


def test_interference_matches_independent_gradients(sweep):
    """cos(g_LM, g_probe) of the first analysis batch, recomputed with plain autograd and masks."""
    from training.core.tasks import prepare_task
    from training.geometry.gradients import GRAD_TAG
    from training.core.model import GPT
    from training.core.runio import read_run_config
    run_dir = sweep["root"] / "b2_0.95"
    res = strict_json(run_dir / "analysis" / "beta_metrics.json")
    pt = res["interference"]["points"][0]
    assert (pt["target"], pt["step"], len(pt["cos"])) == (3, 3, 2)
    cfg = read_run_config(run_dir).replace(cache_dir=str(sweep["cache"]))
    task = prepare_task(cfg, run_dir)
    tensors, _ = runio.load_checkpoint(runio.checkpoint_path(run_dir, 3))
    model = GPT(cfg, tensors["tok_emb.weight"].shape[0])
    runio.load_weights(model, runio.checkpoint_path(run_dir, 3))
    model.eval()
    params = dict(model.named_parameters())
    names = trunk_names(cfg)
    grads = []
    for p_probe in (None, 1.0):             # the LM batch (run's mixture) and the probe batch, same key
        batch = task.sample_batch([res["settings"]["seed"], GRAD_TAG, 0], p_probe=p_probe)
        logits = model(batch.x)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), batch.y.flatten(), ignore_index=-100,
                             reduction="none").view(batch.y.shape)
        valid = batch.y != -100
        mask = (valid & ~batch.probe_mask) if p_probe is None else (valid & batch.probe_mask)
        loss = (ce * mask).sum() / mask.sum()
        g = torch.autograd.grad(loss, [params[n] for n in names])
        grads.append(np.concatenate([x.detach().double().numpy().ravel() for x in g]))
    want = grads[0] @ grads[1] / (np.linalg.norm(grads[0]) * np.linalg.norm(grads[1]))
    assert pt["cos"][0] == pytest.approx(want, abs=1e-5)
    assert pt["mean_cos"] == pytest.approx(np.mean(pt["cos"]), rel=1e-12)
    means = [p["mean_cos"] for p in res["interference"]["points"]]
    assert res["summary"]["interference"] == pytest.approx(np.mean(means), rel=1e-12)


def test_reheat_grid(sweep):
    out = strict_json(sweep["root"] / "analysis" / "beta_sweep_summary.json")
    (entry,) = out["reheat_table"]
    assert (entry["beta2"], entry["ckpt"], entry["ckpt_paper"]) == (0.95, 8, 4000)
    assert [r["lr"] for r in entry["lrs"]] == [3e-3, 1.8e-3]
    orig = runio.read_json(sweep["root"] / "b2_0.95" / "config.json")["config"]
    for r in entry["lrs"]:
        ms = metrics_lines(sweep["root"] / "b2_0.95" / "reheat" / studies.reheat_name(8, r["lr"], False))
        p = [m["p_ood"] for m in ms]
        assert ms[0]["step"] == 0 and r["p0"] == p[0]
        assert r["G"] == pytest.approx(max(p) - p[0], abs=1e-15) and r["peak_p_ood"] == max(p)
        assert r["final_p_ood"] == p[-1]
        c = runio.read_json(sweep["root"] / "b2_0.95" / "reheat" / studies.reheat_name(8, r["lr"], False)
                            / "config.json")["config"]
        assert c["beta2"] == 0.95 and c["lr"] == r["lr"] and c["init_from"].endswith("b2_0.95/checkpoints/step_000008.safetensors")
        assert (c["batch_size"], c["grad_accum"], c["p_probe"]) == (orig["batch_size"], orig["grad_accum"], orig["p_probe"])
        assert c["lambda_probe"] == 2 * preset("test").lambda_probe and c["init_optimizer"] == ""
        assert c["steps"] == studies.scale_step(preset("test"), 2000)
    best = max(entry["lrs"], key=lambda r: r["G"])
    assert entry["G"] == best["G"] and entry["peak_p_ood"] == best["peak_p_ood"]
    assert entry["best_lr_tied"] or entry["best_lr"] == best["lr"]


def test_rerun_is_a_no_op(sweep, capsys):
    root = sweep["root"]
    watched = [p for p in root.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or p.name in
               ("metrics.jsonl", "status.json", "beta_metrics.json", "resume.pt"))]
    before = {p: p.stat().st_mtime_ns for p in watched}
    for cmd in ("train", "analyse", "reheat"):          # the stages that do work (`all` adds two summaries)
        assert STUDY.main([cmd, *sweep["args"][1:]]) == 0
    text = capsys.readouterr().out
    assert text.count(": already completed (") == 4 and text.count("is up to date") == 2   # no run restarted
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_nonfinite_divergence_keeps_what_it_produced(sweep, tmp_path):
    """A run stopped by a non-finite loss (β2 = 0 with a vanishing eps) still gets its row and geometry."""
    args = ["--preset", "test", "--out-dir", str(tmp_path / "s"), "--set", f"cache_dir={sweep['cache']}",
            "--set", "eps=1e-30", "--no-progress", "--n-batches", "1", "--beta2s", "0"]
    for cmd in ("train", "analyse"):
        assert STUDY.main([cmd, *args]) == 0
    run_dir = tmp_path / "s" / "b2_0"
    status = runio.read_status(run_dir)
    assert status["state"] == "diverged"
    steps = runio.list_checkpoints(run_dir)
    assert steps[-1] < 8
    res = strict_json(run_dir / "analysis" / "beta_metrics.json")
    row = bs.summary_row(0.0, run_dir)         # what `summary` tabulates (its figures are tested above)
    assert row["state"] == "diverged" and row["val_display"] == "diverged" and row["final_val_loss"] is None
    assert row["best_p_ood"] == max(m["p_ood"] for m in metrics_lines(run_dir) if m["p_ood"] is not None)
    if len([s for s in steps if 1 <= s <= 4]) >= 2:
        assert row["pc1"] is not None and row["drift"] is not None
    usable = res["checkpoints"]["finite"]
    for pt in res["interference"]["points"]:                       # targets 3 and 6, tolerance Δ = 1
        assert pt["step"] == min(usable, key=lambda s: (abs(s - pt["target"]), s))
        assert pt.get("substituted", False) == (abs(pt["step"] - pt["target"]) > 1)
        if pt.get("substituted"):
            assert pt["reason"].startswith(f"measured at step {pt['step']}") and row["interference_substituted"]
    distinct = {pt["step"]: pt["mean_cos"] for pt in res["interference"]["points"] if pt["mean_cos"] is not None}
    if distinct:
        assert row["interference"] == pytest.approx(np.mean(list(distinct.values())), rel=1e-12)
    for k, v in res["summary"].items():
        assert v is not None or res["summary_reasons"][k]


def test_nonfinite_checkpoint_is_left_out(sweep, tmp_path):
    """A checkpoint with an infinite weight is dropped from the geometry; the JSON stays strict."""
    from safetensors.torch import save_file
    run_dir = tmp_path / "run"
    shutil.copytree(sweep["root"] / "b2_0.95", run_dir, ignore=shutil.ignore_patterns("reheat", "analysis"))
    path = runio.checkpoint_path(run_dir, 8)
    tensors, meta = runio.load_checkpoint(path)
    tensors["blocks.1.mlp.w_up.weight"][0, 0] = float("inf")
    save_file(tensors, str(path), metadata=meta)
    from training.geometry.analysis_io import open_run
    res = bs.analyse_run(open_run(run_dir), n_batches=1)
    runio.atomic_write_json(tmp_path / "out.json", res)
    assert json.loads((tmp_path / "out.json").read_text()) == res          # nothing non-finite was in it
    assert res["checkpoints"]["non_finite"] == [8] and res["checkpoints"]["finite"] == list(range(8))
    assert res["update_alignment"]["steps"][-1] == 7
    assert [p["step"] for p in res["interference"]["points"]] == [3, 6]
    assert all(v is not None for v in res["summary"].values())


def test_bad_flags_and_dirs(sweep, tmp_path):
    env = dict(os.environ, PYTHONHASHSEED="0")
    p = subprocess.run([sys.executable, str(ROOT / "experiments/beta_sweep/run_study.py"), "train", "--preset", "test",
                        "--beta2s", "0.9,1.5", "--out-dir", str(tmp_path / "x")], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.startswith("error: --beta2s") and p.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError, match=r"--set beta2=\.\.\.: the β2-sweep protocol sets this itself \(use --beta2s\)"):
        STUDY.main(["train", "--preset", "test", "--set", "beta2=0.5"])
    with pytest.raises(UserError, match="unknown preset"):
        STUDY.main(["train", "--preset", "huge"])
    with pytest.raises(UserError, match="does not exist"):
        STUDY.main(["summary", "--preset", "test", "--out-dir", str(tmp_path / "none")])
    with pytest.raises(UserError, match="no β2 = 0.8 run"):
        STUDY.main(["reheat", "--preset", "test", "--out-dir", str(sweep["root"]), "--beta2s", "0.8"])
    with pytest.raises(UserError, match="--ckpts"):
        STUDY.main(["reheat", "--preset", "test", "--out-dir", str(sweep["root"]), "--ckpts", "9000"])
    with pytest.raises(UserError, match="does not exist"):
        BETA_SUMMARY.main(["--run-dir", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as e:
        BETA_SUMMARY.main(["--help"])
    assert e.value.code == 0
    assert "reheat" in STUDY.build_parser().format_help()


def test_shell_pipeline_help_and_bad_preset():
    sh = str(ROOT / "experiments/beta_sweep/run_beta2.sh")
    p = subprocess.run(["bash", sh, "--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "analyse" in p.stdout and "set -e" not in p.stdout
    p = subprocess.run(["bash", sh, "--preset", "huge"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and p.stderr.strip() == "error: unknown preset 'huge' (choose from quick, cpu, paper, test)"


def test_shell_pipeline_stops_at_the_failing_stage(tmp_path):
    p = subprocess.run(["bash", str(ROOT / "experiments/beta_sweep/run_beta2.sh"), "--preset", "test", "--beta2s", "2",
                        "--out-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "=== [analyse]" not in p.stdout
    assert "error: --beta2s" in p.stderr and "stage 'train' failed (exit 2)" in p.stderr


def test_the_ledger_reads_claim_18_from_the_sweep(sweep):
    """Claim 18's row comes from the sweep's summary table; with one β2 defined (β2 = 0 diverges here) the trend is
    not measured, and says why."""
    from training.studies.claims import ledger
    root = sweep["root"]
    summary = json.loads((root / "analysis" / "beta_sweep_summary.json").read_text())
    defined = [r for r in summary["table"] if r.get("pc1_minus_null") is not None]
    run = Path(summary["table"][0]["run_dir"])
    row = next(c for c in ledger([run], [root])["claims"] if c["claim"] == 18)
    if len(defined) < 2:
        assert row["verdict"] == "not measured" and f"for {len(defined)} β2" in row["why"]
    else:
        x = sorted(defined, key=lambda r: -r["beta2"])
        assert row["effect"] == [pytest.approx(x[0]["pc1_minus_null"] - x[-1]["pc1_minus_null"])]
