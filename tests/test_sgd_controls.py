"""The SGD-control study end to end at the `test` preset, checked against its definitions.

One study is trained with a hard kill in the middle of its last run (C'), resumed by re-running the same
command, and compared with an uninterrupted C'. Its JSON is checked against metrics.jsonl, against dense
numpy PCA of the checkpoints, against the verdict rule and the protocol ratios of Table 8.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import ROOT
from training.core.config import preset
from training.core.model import trunk_names
from training.studies.common import scale_step

SCRIPT = "experiments/sgd_controls/run_study.py"
DIRS = {"A": "A_adamw", "B": "B_sgd", "C": "C_sgd_momentum", "Cprime": "Cprime_sgdw_nesterov"}
KILL_AT = 4          # C' is killed (os._exit, no clean-up) right after its step-4 state is on disk

# A wrapper that runs the study exactly as the command line does, but dies hard in the middle of run C'.
KILLER = """
import os, runpy, sys

from training.core import runio
save_state = runio.save_state
def dying_save_state(run_dir, state):
    save_state(run_dir, state)
    if run_dir.name == "Cprime_sgdw_nesterov" and state["step"] == {kill}:
        os._exit(137)
runio.save_state = dying_save_state
sys.argv = [{script!r}] + sys.argv[1:]
runpy.run_path({script!r}, run_name="__main__")
"""


def _env():
    # one thread: the study's runs are tiny, and the machine is shared
    return dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")


def study(out_dir, cache, *extra, wrapper=None):
    cmd = [sys.executable, str(wrapper or ROOT / SCRIPT), "--preset", "test", "--out-dir", str(out_dir),
           "--set", f"cache_dir={cache}", "--no-progress", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=_env())


def mtimes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob("*/checkpoints/*.safetensors"))}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def trunk(run_dir: Path, step: int, names) -> np.ndarray:
    t = load_file(str(run_dir / "checkpoints" / f"step_{step:06d}.safetensors"))
    return np.concatenate([t[n].astype(np.float64).ravel() for n in names])


def dense_window(run_dir: Path, steps, names):
    """(row-normalised evr, raw evr, drift, rownorm PC1 vector) of the drifts from steps[0], by dense SVD."""
    theta = np.stack([trunk(run_dir, s, names) for s in steps])
    X = theta[1:] - theta[0]
    out = []
    for M in (X / np.linalg.norm(X, axis=1, keepdims=True), X):
        _, S, Vt = np.linalg.svd(M, full_matrices=False)
        out.append(((S ** 2) / np.sum(S ** 2), Vt[0] * np.sign(M[-1] @ Vt[0])))
    return out[0][0], out[1][0], float(np.linalg.norm(X[-1])), out[0][1]


def k_at(evr, level):
    return int(np.argmax(np.cumsum(evr) >= level - 1e-12) + 1)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """The study, killed hard inside run C' and then resumed by re-running the same command."""
    base = tmp_path_factory.mktemp("sgd")
    cache = tmp_path_factory.getbasetemp() / "cache"          # the session's shared token cache
    root = base / "study"
    killer = base / "killer.py"
    killer.write_text(KILLER.format(kill=KILL_AT, script=str(ROOT / SCRIPT)))
    p = study(root, cache, "--jobs", "1", wrapper=killer)    # in one process: the wrapper's kill must apply
    assert p.returncode == 137, p.stderr[-2000:]
    status = json.loads((root / DIRS["Cprime"] / "status.json").read_text())
    assert status["state"] == "running" and status["step"] < 8          # really interrupted mid-run
    before = mtimes(root)
    p = study(root, cache)
    assert p.returncode == 0, p.stderr[-3000:]
    after = mtimes(root)
    # A, B, C were finished: not retrained; C' resumed (its early checkpoints untouched, later ones new)
    assert {k: v for k, v in after.items() if not k.startswith("Cprime")} == \
        {k: v for k, v in before.items() if not k.startswith("Cprime")}
    assert all(after[k] == v for k, v in before.items())
    assert f"resuming {root / DIRS['Cprime']} from step {KILL_AT}" in p.stdout + p.stderr
    return {"root": root, "cache": cache, "base": base, "stdout": p.stdout,
            "result": json.loads((root / "analysis" / "sgd_control_results.json").read_text())}


def test_resumed_run_equals_uninterrupted(done):
    """C' trained without interruption (in this process, one thread as the study's subprocess) is the same run."""
    import torch

    from training.studies import sgd_controls as sc
    from training.studies.common import ensure_run
    ref = done["base"] / "reference"
    cfg = sc.run_configs(preset("test").replace(seed=42, progress=False, cache_dir=str(done["cache"])))["Cprime"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert ensure_run(cfg, ref) == "completed"
    finally:
        torch.set_num_threads(threads)
    a = done["root"] / DIRS["Cprime"]
    files = sorted(x.name for x in (a / "checkpoints").iterdir())
    assert files == sorted(x.name for x in (ref / "checkpoints").iterdir()) and len(files) == 9
    for f in files:
        assert (a / "checkpoints" / f).read_bytes() == (ref / "checkpoints" / f).read_bytes(), f
    strip = lambda ms: [{k: v for k, v in m.items() if k != "elapsed_s"} for m in ms]  # noqa: E731
    assert strip(metrics(a)) == strip(metrics(ref))


def test_rerun_is_a_noop(done):
    root = done["root"]
    before = mtimes(root)
    p = study(root, done["cache"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert mtimes(root) == before
    assert (p.stdout + p.stderr).count("already completed") == 4
    again = json.loads((root / "analysis" / "sgd_control_results.json").read_text())
    assert again["table9"] == done["result"]["table9"] and again["verdict"] == done["result"]["verdict"]


def test_protocol_and_configs(done):
    res, root = done["result"], done["root"]
    cfgs = {k: json.loads((root / d / "config.json").read_text())["config"] for k, d in DIRS.items()}
    test = preset("test")
    A = cfgs["A"]
    assert (A["optimizer"], A["lr"], A["wd"]) == ("adamw", test.lr, test.wd)
    assert (cfgs["B"]["optimizer"], cfgs["B"]["lr"], cfgs["B"]["wd"], cfgs["B"]["momentum"]) == ("sgd", A["lr"], A["wd"], 0.0)
    assert cfgs["C"]["optimizer"] == "sgd_momentum" and cfgs["C"]["momentum"] == 0.9
    assert cfgs["C"]["lr"] == pytest.approx(10 * A["lr"]) and cfgs["C"]["wd"] == pytest.approx(A["wd"] / 10)
    assert cfgs["Cprime"]["optimizer"] == "sgdw_nesterov" and cfgs["Cprime"]["momentum"] == 0.9
    assert cfgs["Cprime"]["lr"] == pytest.approx(10 * A["lr"]) and cfgs["Cprime"]["wd"] == pytest.approx(A["wd"])
    steps = scale_step(test, 4000)
    assert steps == 8
    for k, c in cfgs.items():
        # everything but the optimizer is shared: same seed, data stream, schedule, cadence, λ switch on the last step
        same = {f: v for f, v in c.items() if f not in ("optimizer", "lr", "wd", "momentum", "out_dir")}
        assert same == {f: v for f, v in A.items() if f not in ("optimizer", "lr", "wd", "momentum", "out_dir")}
        assert c["steps"] == steps and c["lambda_step"] == steps and c["warmup"] == min(test.warmup, steps)
        assert c["eval_every"] == scale_step(test, 200) and c["early_stop"] is False
        p = res["protocol"]["runs"][k]
        assert (p["optimizer"], p["lr"], p["wd"]) == (c["optimizer"], c["lr"], c["wd"])
    assert res["protocol"]["runs"]["C"]["lr_over_A"] == 10 and res["protocol"]["runs"]["C"]["wd_over_A"] == 0.1
    assert res["protocol"]["window"] == [scale_step(test, 600), scale_step(test, 2000)]
    # the same initialisation: every run's step-0 weights are equal
    names = trunk_names(preset("test"))
    t0 = trunk(root / DIRS["A"], 0, names)
    for d in DIRS.values():
        np.testing.assert_array_equal(trunk(root / d, 0, names), t0)


def test_table9_against_metrics_and_dense_pca(done):
    res, root = done["result"], done["root"]
    names = trunk_names(preset("test"))
    assert [r["run"] for r in res["table9"]] == list(DIRS)
    step_2000 = res["protocol"]["step_2000"]
    lo, hi = res["protocol"]["window"]
    for row in res["table9"]:
        run = root / DIRS[row["run"]]
        ms = metrics(run)
        assert row["state"] == json.loads((run / "status.json").read_text())["state"] == "completed"
        assert row["final_val_loss"] == ms[-1]["val_loss"] and ms[-1]["step"] == 8
        assert row["best_p_ood"] == max(m["p_ood"] for m in ms)
        at = next(m for m in ms if m["step"] == step_2000)
        assert (row["val_at_2000"], row["p_ood_at_2000"]) == (at["val_loss"], at["p_ood"])
        win = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("*.safetensors"))
        win = [s for s in win if lo <= s <= hi]
        assert row["window_steps"] == win and len(win) >= 3
        evr, evr_raw, drift, _ = dense_window(run, win, names)
        assert row["pc1"] == pytest.approx(evr[0], rel=1e-9)
        assert row["pc1_raw"] == pytest.approx(evr_raw[0], rel=1e-9)
        assert (row["k95"], row["k99"]) == (k_at(evr, 0.95), k_at(evr, 0.99))
        assert row["drift"] == pytest.approx(drift, rel=1e-9)
        rc = res["residual_coupling"][row["run"]]
        assert rc["energy_pc2_6"] == pytest.approx(float(np.sum(evr[1:6])), abs=1e-9)


def test_weight_norms_decay_and_null_columns_against_dense(done):
    """Table 9's Λ_eff, ‖θ_T‖/‖θ_0‖, decay-dominated flag and PC1 − null, each from an independent computation."""
    import math

    from training.core.optim import lr_at
    from training.core.runio import read_run_config
    res, root = done["result"], done["root"]
    names = trunk_names(preset("test"))
    for row in res["table9"]:
        run = root / DIRS[row["run"]]
        cfg = read_run_config(run)
        gain = 1 / (1 - cfg.momentum) if cfg.optimizer == "sgd_momentum" else 1.0
        lam = cfg.wd * sum(lr_at(cfg, t) for t in range(1, cfg.steps + 1)) * gain
        assert row["lambda_eff"] == pytest.approx(lam, rel=1e-12)
        assert row["decay_only_norm_ratio"] == pytest.approx(math.exp(-lam), rel=1e-12)
        steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("*.safetensors"))
        a, b = trunk(run, steps[0], names), trunk(run, steps[-1], names)
        assert row["norm_ratio"] == pytest.approx(np.linalg.norm(b) / np.linalg.norm(a), rel=1e-9)
        cos = -(a @ (b - a)) / (np.linalg.norm(a) * np.linalg.norm(b - a))
        assert row["shrink_cos"] == pytest.approx(cos, abs=1e-9)
        assert row["decay_share"] == pytest.approx(max(cos, 0.0) ** 2, abs=1e-9)
        ratio = np.linalg.norm(b) / np.linalg.norm(a)
        assert row["decay_dominated"] == bool(ratio < 0.1 or max(cos, 0.0) ** 2 >= 0.9)
        # the null: a random walk with the window's own increment norms, in orthonormal directions (dense)
        win = row["window_steps"]
        n = [np.linalg.norm(trunk(run, t1, names) - trunk(run, t0, names)) for t0, t1 in zip(win, win[1:])]
        X = np.cumsum(np.diag(n), axis=0)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        s2 = np.linalg.svd(X, compute_uv=False) ** 2
        assert row["pc1_null"] == pytest.approx(s2[0] / s2.sum(), rel=1e-9)
        assert row["pc1_minus_null"] == pytest.approx(row["pc1"] - s2[0] / s2.sum(), abs=1e-9)
    prot = res["protocol"]["runs"]
    assert prot["C"]["paper_lambda_eff"] == pytest.approx(10 * prot["A"]["paper_lambda_eff"], rel=1e-12)


def test_table9_markdown_shows_the_json_rows(done):
    """STUDY/analysis/table9.md: one row per run with PC1 − null, Λ_eff, ‖θ_T‖/‖θ_0‖ and the decay flag, each the
    JSON's number as printed."""
    from training.studies.sgd_controls import RUNS, TABLE9_HEADER
    text = (done["root"] / "analysis" / "table9.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert tuple(header) == TABLE9_HEADER
    rows = {cells[0]: dict(zip(header, cells)) for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in lines[1:])}
    assert len(rows) == len(done["result"]["table9"]) == 4
    for r in done["result"]["table9"]:
        got = rows[RUNS[r["run"]].label]
        assert got["state"] == r["state"]
        assert float(got["PC1 − null (pp)"]) == pytest.approx(100 * r["pc1_minus_null"], abs=0.051)
        assert float(got["Λ_eff"]) == pytest.approx(r["lambda_eff"], rel=5e-3)
        assert float(got["‖θ_T‖/‖θ_0‖"]) == pytest.approx(r["norm_ratio"], abs=5e-4)
        assert got["decay-dominated"] == ("yes" if r["decay_dominated"] else "no")
    assert f"Literal rule: {done['result']['verdict']['outcome']}" in text


def test_update_alignment_and_table10_dense(done):
    res, root = done["result"], done["root"]
    names = trunk_names(preset("test"))
    lo, hi = res["protocol"]["window"]
    run = root / DIRS["A"]
    win = next(r for r in res["table9"] if r["run"] == "A")["window_steps"]
    _, _, _, vb = dense_window(run, win, names)
    ua = res["update_alignment"]["A"]
    delta = res["protocol"]["update_alignment"]["delta"]
    assert ua["points"] and all(p["t_plus_delta"] == p["t"] + delta for p in ua["points"])
    for p in ua["points"]:
        u = trunk(run, p["t_plus_delta"], names) - trunk(run, p["t"], names)
        assert p["signed_cos"] == pytest.approx(u @ vb / np.linalg.norm(u), abs=1e-9)
    assert ua["missing_t"] == [t for t in res["protocol"]["update_alignment"]["ts"] if t + delta > 8]
    # Table 10 rows: windows are checkpoints of the run, val ranges from metrics.jsonl, geometry by dense SVD
    assert [r["kind"] for r in res["table10"]].count("standard") == 3
    for row in res["table10"]:
        rd = root / DIRS[row["run"]]
        ms = [m["val_loss"] for m in metrics(rd) if row["window"][0] <= m["step"] <= row["window"][-1]]
        assert row["val_range"] == [min(ms), max(ms)]
        if len(row["window"]) < 2:
            assert row["pc1"] is None and row["reason"]
            continue
        evr, _, drift, _ = dense_window(rd, row["window"], names)
        assert row["pc1"] == pytest.approx(evr[0], rel=1e-9) and row["drift"] == pytest.approx(drift, rel=1e-9)


def test_matched_windows_bracket_the_target(done):
    res, root = done["result"], done["root"]
    m = res["matched"]
    assert m["target"] == next(r for r in res["table9"] if r["run"] == "C")["final_val_loss"]
    for row in m["rows"]:
        ms = metrics(root / DIRS[row["run"]])
        ckpts = sorted(int(p.stem.split("_")[1]) for p in (root / DIRS[row["run"]] / "checkpoints").glob("*.safetensors"))
        w = row["window"]
        assert len(w) >= 3 and w == ckpts[ckpts.index(w[0]):ckpts.index(w[0]) + len(w)]     # consecutive checkpoints

        def vr(a, b):
            v = [x["val_loss"] for x in ms if a <= x["step"] <= b]
            return (min(v), max(v)) if v else None
        brackets = lambda a, b: vr(a, b) is not None and vr(a, b)[0] <= m["target"] <= vr(a, b)[1]  # noqa: E731
        if row["never_reached"]:
            assert not any(brackets(ckpts[i], ckpts[i + 2]) for i in range(len(ckpts) - 2))
            assert not brackets(ckpts[0], ckpts[-1]) and w == ckpts[-3:]
        else:
            assert brackets(w[0], w[-1]) and list(vr(w[0], w[-1])) == row["val_range"]
            # no shorter window brackets the target, and no equally short one starts earlier
            for n in range(3, len(w) + 1):
                last = ckpts.index(w[0]) if n == len(w) else len(ckpts) - n + 1
                assert not any(brackets(ckpts[i], ckpts[i + n - 1]) for i in range(last)), (row, n)


def test_verdict_follows_the_rule(done):
    res = done["result"]
    v = res["verdict"]
    pc1 = {r["run"]: r["pc1"] for r in res["table9"]}
    k95 = {r["run"]: r["k95"] for r in res["table9"]}
    a, b, c = pc1["A"], pc1["B"], pc1["C"]
    want = ("OPTIMIZER-INDUCED" if b < 0.75 * a else "INTRINSIC" if abs(b - a) <= 0.15 * a else "AMBIGUOUS")
    assert v["outcome"] == want and v["bridge"] == (c > b) and v["inputs"]["pc1"] == pc1
    assert v["colinear"] == {k: pc1[k] >= 0.95 and k95[k] == 1 for k in pc1}
    assert v["sgd_pc1_above_adamw"] == {k: pc1[k] > a for k in ("B", "C", "Cprime")}
    assert v["reading"] and v["direction_agnostic_reading"]
    for name in ("training_curves", "pca_summary", "pc1_rotation", "update_alignment", "matched_loss"):
        assert (done["root"] / "analysis" / f"{name}.png").stat().st_size > 5000


def test_bad_flags_and_missing_runs_give_one_line(done, tmp_path, monkeypatch, capsys):
    p = study(tmp_path / "s", done["cache"], "--bogus")                 # as a user runs it
    assert p.returncode == 2 and p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    import runpy
    cases = ((["--runs", "A,X"], "--runs"), (["--set", "steps=3"], "the SGD-control protocol sets this itself"), (["--preset", "nope"], "preset"),
             (["--analyse-only"], "has not been trained"))
    for extra, words in cases:                                           # the same entry point, in this process
        monkeypatch.setattr(sys, "argv", [SCRIPT, "--preset", "test", "--out-dir", str(tmp_path / "s"), *extra])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / SCRIPT), run_name="__main__")
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err, (extra, err)
    assert not (tmp_path / "s").exists()


def test_diverged_and_motionless_runs_do_not_stop_the_analysis(done, tmp_path):
    """B made to look diverged at step 3 (later checkpoints and evaluations gone), C given a checkpoint equal
    to the window start (a zero drift row): the analysis reports them with reasons and goes on."""
    import shutil

    from training.studies import sgd_controls as sc
    root = tmp_path / "study"
    shutil.copytree(done["root"], root)
    b = root / DIRS["B"]
    for p in (b / "checkpoints").glob("*.safetensors"):
        if int(p.stem.split("_")[1]) >= 3:
            p.unlink()
    kept = [m for m in metrics(b) if m["step"] <= 2]
    (b / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in kept))
    (b / "status.json").write_text(json.dumps({"state": "diverged", "step": 3, "message": "non-finite loss"}))
    c = root / DIRS["C"] / "checkpoints"
    shutil.copyfile(c / "step_000001.safetensors", c / "step_000002.safetensors")
    base = preset("test").replace(seed=42, progress=False, cache_dir=str(done["cache"]))
    res = sc.analyse(root, base, list(DIRS), log=lambda s: None)
    rows = {r["run"]: r for r in res["table9"]}
    assert rows["B"]["state"] == "diverged" and rows["B"]["final_val_loss"] == kept[-1]["val_loss"]
    assert rows["B"]["val_at_2000"] is None and rows["B"]["window_steps"] == [1, 2]
    assert rows["B"]["pc1"] == pytest.approx(1.0) and rows["B"]["k95"] == 1     # one drift row
    assert rows["C"]["pc1"] is None and "exactly zero" in rows["C"]["geometry_reason"]
    assert res["pc1_rotation"]["C"]["reason"] and res["update_alignment"]["C"]["reason"]
    assert res["verdict"]["bridge"] is None and res["verdict"]["colinear"]["C"] is None
    assert rows["A"] == next(r for r in done["result"]["table9"] if r["run"] == "A")


def test_rule_on_the_papers_numbers():
    """The literal rule calls the paper's outcome (SGD 100 % vs AdamW 61.5 %) ambiguous; the direction-agnostic
    reading separates colinear SGD-family runs from AdamW."""
    from training.studies import sgd_controls as sc
    rows = {r["run"]: {"pc1": r.get("pc1"), "k95": r.get("k95")} for r in sc.PAPER_RESULTS["table9"]}
    rows["Cprime"] = {"pc1": 0.99, "k95": 1}
    v = sc.verdict(rows)
    assert v["outcome"] == "AMBIGUOUS" and v["bridge"] is False
    assert v["direction_agnostic"] == "SGD-COLINEAR-ADAMW-NOT"
    assert sc.verdict({"A": {"pc1": 0.8, "k95": 3}, "B": {"pc1": 0.5, "k95": 4}})["outcome"] == "OPTIMIZER-INDUCED"
    assert sc.verdict({"A": {"pc1": 0.8, "k95": 3}, "B": {"pc1": 0.9, "k95": 2}})["outcome"] == "INTRINSIC"
    assert sc.verdict({"A": {"pc1": 0.8, "k95": 3}})["outcome"] == "UNDEFINED"


def test_matched_window_definition():
    from training.studies import sgd_controls as sc
    steps = [0, 5, 10, 12, 14, 16, 18, 20]
    ms = [{"step": s, "val_loss": v} for s, v in [(0, 9.0), (10, 6.0), (20, 4.0)]]
    m = sc.matched_window(steps, ms, 5.0)                 # crossed between the evaluations at 10 and 20
    assert m == {"window": [10, 12, 14, 16, 18, 20], "val_range": [4.0, 6.0], "never_reached": False}
    m = sc.matched_window(steps, ms, 7.0)
    assert m["window"] == [0, 5, 10] and not m["never_reached"]
    m = sc.matched_window(steps, ms, 1.0)                 # never that low: the last three evaluated checkpoints
    assert m == {"window": [0, 10, 20], "val_range": [4.0, 9.0], "never_reached": True}


def test_matched_decay_gives_every_run_As_effective_decay():
    from training.core.errors import UserError
    from training.core.regime import effective_integrated_wd
    from training.studies import sgd_controls as sc
    for name in ("test", "cpu", "paper"):
        paper, matched = sc.run_configs(preset(name)), sc.run_configs(preset(name), "matched")
        target = effective_integrated_wd(matched["A"])
        for key in sc.RUNS:
            assert effective_integrated_wd(matched[key]) == pytest.approx(target, rel=1e-5)
            assert matched[key].replace(wd=paper[key].wd) == paper[key]
    m = sc.run_configs(preset("paper"), "matched")
    assert (m["C"].wd, m["Cprime"].wd) == (0.005, 0.05)
    with pytest.raises(UserError, match="unknown decay protocol 'l2'"):
        sc.run_configs(preset("test"), "l2")


def test_trainable_decay_raises_the_sgd_learning_rates_then_matches_the_decay():
    """--decay trainable: C and C' at 100x AdamW's learning rate, B at 1000x (C's heavy-ball step lr/(1 - m)), every
    Λ_eff equal to A's, everything else as the paper protocol."""
    from training.core.regime import effective_integrated_wd
    from training.studies import sgd_controls as sc
    for name in ("test", "cpu", "paper"):
        base = preset(name)
        paper, t = sc.run_configs(base), sc.run_configs(base, "trainable")
        assert t["A"] == paper["A"]
        assert t["B"].lr == pytest.approx(1000 * base.lr) and t["C"].lr == pytest.approx(100 * base.lr)
        assert t["Cprime"].lr == pytest.approx(100 * base.lr)
        assert t["B"].lr == pytest.approx(t["C"].lr / (1 - t["C"].momentum))
        target = effective_integrated_wd(t["A"])
        for key in sc.RUNS:
            assert effective_integrated_wd(t[key]) == pytest.approx(target, rel=1e-5)
            assert t[key].replace(wd=paper[key].wd, lr=paper[key].lr) == paper[key]
    cpu = sc.run_configs(preset("cpu"), "trainable")
    assert (cpu["C"].lr, cpu["C"].wd) == (0.3, 0.001388)       # the one measured in experiments/sgd_controls/README.md
    assert "1000×" in sc.protocol(preset("cpu"), cpu, "trainable")["decay_protocol"]


def test_the_ledger_reads_claim_16_from_the_study(done):
    """The claims ledger's row of claim 16 comes from this study's Table 9: decay-dominated when run B's flag says
    so, else (PC1 − null) of B minus that of A, or the reason it is undefined."""
    from training.studies.claims import ledger
    row = next(c for c in ledger([done["root"] / DIRS["A"]], [done["root"]])["claims"] if c["claim"] == 16)
    t9 = {r["run"]: r for r in done["result"]["table9"]}
    x = row["inputs"][0]
    assert x["decay_dominated"] == t9["B"]["decay_dominated"] and x["norm_ratio"] == t9["B"]["norm_ratio"]
    if t9["B"]["decay_dominated"]:
        assert row["verdict"] == "decay-dominated"
    elif t9["A"]["pc1_minus_null"] is None or t9["B"]["pc1_minus_null"] is None:
        assert row["verdict"] == "not measured" and "undefined" in row["why"]
    else:
        assert row["verdict"] == "inconclusive (single seed)"
        assert row["effect"] == [t9["B"]["pc1_minus_null"] - t9["A"]["pc1_minus_null"]]


def test_claim17_windows_and_the_ledgers_row(done):
    """Claim 17's matched windows: consecutive checkpoints, at least 7 where the run has them and brackets the
    target (else its last ones, flagged), PC1 − null against a dense random walk with the window's increments; the
    ledger's row is (PC1 − null)_C − (PC1 − null)_A, inconclusive when a window has fewer than 6 drifts."""
    from training.studies import sgd_controls as sc
    from training.studies.claims import ledger
    res, root = done["result"], done["root"]
    block = res["matched"]["claim17"]
    assert block["target"] == res["matched"]["target"] and block["min_drifts"] == sc.CLAIM17_DRIFTS == 6
    names = trunk_names(preset("test"))
    for row in block["rows"]:
        run = root / DIRS[row["run"]]
        ckpts = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("*.safetensors"))
        w = row["window"]
        assert w == ckpts[ckpts.index(w[0]):ckpts.index(w[0]) + len(w)] and row["n_drifts"] == len(w) - 1
        assert len(w) >= 7 or row["never_reached"] or len(w) == len(ckpts)
        if row["pc1_minus_null"] is None:
            continue
        n = [np.linalg.norm(trunk(run, t1, names) - trunk(run, t0, names)) for t0, t1 in zip(w, w[1:])]
        X = np.cumsum(np.diag(n), axis=0)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        s2 = np.linalg.svd(X, compute_uv=False) ** 2
        assert row["null_pc1"] == pytest.approx(s2[0] / s2.sum(), rel=1e-9)
    c17 = next(c for c in ledger([], [root])["claims"] if c["claim"] == 17)
    rows = {r["run"]: r for r in block["rows"]}
    if rows["C"]["window_decay_dominated"]:
        assert c17["verdict"] == "decay-dominated"
    elif rows["A"]["pc1_minus_null"] is None or rows["C"]["pc1_minus_null"] is None:
        assert c17["verdict"] == "not measured"
    else:
        assert c17["effect"] == pytest.approx([rows["C"]["pc1_minus_null"] - rows["A"]["pc1_minus_null"]])
        assert c17["verdict"] == "inconclusive (single seed)"
        short = min(rows["A"]["n_drifts"], rows["C"]["n_drifts"]) < 6
        assert ("forced by the row count" in (c17["why"] or "")) == short
