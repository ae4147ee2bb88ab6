"""Paper figures, tables, numbers, the per-run report and the paper's generated inputs.

The per-run inputs are written by the real analysis scripts on a copy of the tiny `test`-preset run;
the reheating, SGD-control and β2-sweep summaries (other studies) are small synthetic files with their
schemas. Numbers are checked against the input JSON computed independently here (numpy, plain Python).
"""
import contextlib
import io
import json
import math
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_script
from figures import make_paper_figures as mpf

FIGS = ["fig1_backbone", "fig2_alignment", "fig3_fisher", "fig4_reheating"]
TABLES = ["table1_hyperparameters", "table2_pc1", "table_centred", "table3_update_alignment", "table4_sign_flip", "table5_block_bias", "table_gradient_alignment",
          "table6_rayleigh", "table9_sgd", "table10_matched", "table_beta2", "table_beta2_reheat", "table11_reheating",
          "table_claims", "comparison"]


# ---------------------------------------------------------------------------- synthetic study summaries
def synthetic_reheating(run_dir: Path) -> dict:
    """reheating.json as experiments/reheating writes it: original run + three reheats from the last checkpoint."""
    t = json.loads((run_dir / "analysis" / "trajectory_pca.json").read_text())
    dec = t["trunk"]["decomposition"]
    ms = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last, n = dec["steps"][-1], 8
    runs = []
    for k, (lr, amp) in enumerate([(3e-3, 0.55), (1.8e-3, 0.7), (9e-4, 0.35)]):
        steps = list(range(0, n + 1))
        p = [round(0.1 + 0.01 * k + amp * math.sin(math.pi * s / n) ** 2 * (1 - 0.3 * s / n), 6) for s in steps]
        peak = max(range(len(p)), key=lambda i: p[i])
        reentry = {"p0": p[0], "peak_p_ood": p[peak], "peak_step": steps[peak], "G": p[peak] - p[0],
                   "first_step_at_threshold": next((s for s, v in zip(steps, p) if v >= 0.6), None), "threshold": 0.6,
                   "final_p_ood": p[-1], "final_step": steps[-1], "final_val_loss": 3.0}
        a = [dec["a"][-1] * (1 + 0.01 * k * math.sin(math.pi * s / n)) for s in steps]
        r = [dec["residual_norm"][-1] * (1 + 0.3 * math.sin(math.pi * s / n)) for s in steps]
        runs.append({"name": f"ckpt{last:06d}_lr{lr:g}_fresh", "from_step": last, "lr": lr, "moments": False,
                     "lam": 4.0, "state": "completed", "n_steps": n, "steps": steps, "p_ood": p,
                     "val_loss": [3.0] * len(p), "reentry": reentry, "ckpt_steps": steps, "a": a, "r_norm": r,
                     "delta_a": a[-1] - a[0], "delta_r": r[-1] - r[0], "rel_delta_a": (a[-1] - a[0]) / abs(a[0]),
                     "rel_delta_r": (r[-1] - r[0]) / r[0]})
    original = {"steps": dec["steps"], "p_ood": None, "a": dec["a"], "r_norm": dec["residual_norm"], "last_step": last,
                "eval_steps": [m["step"] for m in ms], "eval_p_ood": [m["p_ood"] for m in ms]}
    return {"run_dir": str(run_dir), "original": original, "backbone": {}, "runs": runs,
            "table": [{"lr": e["lr"], **e["reentry"]} for e in runs], "reading": "synthetic"}


SGD = {"protocol": {"window": [2, 8]},
       "table9": [{"run": "A", "optimizer": "adamw", "state": "completed", "final_val_loss": 2.41, "best_p_ood": 0.31,
                   "pc1": 0.6234, "pc1_raw": 0.8123, "k95": 7, "k99": 12, "drift": 21.37, "pc1_minus_null": 0.0143,
                   "lambda_eff": 2.56, "decay_only_norm_ratio": 0.0773, "norm_ratio": 0.8125, "decay_share": 0.0412,
                   "decay_dominated": False},
                  {"run": "B", "optimizer": "sgd", "state": "completed", "final_val_loss": 6.8, "best_p_ood": 0.0,
                   "pc1": 0.9991, "pc1_raw": 0.9999, "k95": 1, "k99": 1, "drift": 3.2, "pc1_minus_null": -0.0276,
                   "lambda_eff": 40.96, "decay_only_norm_ratio": 1.6e-18, "norm_ratio": 0.0317, "decay_share": 0.9954,
                   "decay_dominated": True},
                  {"run": "C", "optimizer": "sgd_momentum", "state": "completed", "final_val_loss": 5.05,
                   "best_p_ood": 0.01, "pc1": 0.9932, "pc1_raw": 0.9991, "k95": 1, "k99": 2, "drift": 9.1,
                   "pc1_minus_null": None, "lambda_eff": None, "norm_ratio": None, "decay_share": None,
                   "decay_dominated": None}],
       "table10": [{"run": "A", "optimizer": "adamw", "window": [0, 1, 2], "window_spec": "[0,1,2]", "kind": "matched",
                    "val_range": [4.1, 7.7], "pc1": 0.774, "k95": 2, "k99": 2, "drift": 10.2}],
       "matched": {"rows": []}, "verdict": {"outcome": "OPTIMIZER-INDUCED", "reading": "synthetic"}}
BETA = {"table": [{"beta2": b, "state": st, "final_val_loss": v, "val_display": "diverged" if st == "diverged" else v,
                   "best_p_ood": 0.5, "pc1": pc1, "pc1_minus_null": excess, "k95": 6, "k99": 9, "drift": 100.0,
                   "mean_abs_update_cos": 0.2, "interference": 0.01}
                  for b, pc1, excess, st, v in [(0.99, 0.681, 0.0521, "completed", 1.2),
                                                (0.95, 0.684, 0.0338, "completed", 1.25),
                                                (0.8, 0.634, -0.0107, "completed", 1.4),
                                                (0.0, 0.516, None, "diverged", None)]],
        "reheat_table": [{"beta2": 0.95, "ckpt": 10, "best_lr": 1.8e-3, "best_lr_tied": False, "p0": 0.2,
                          "peak_p_ood": 0.4, "G": 0.2}]}


# a claims ledger as analysis/claims/claims.py writes it (the fields the paper reads): one judged claim over three
# seeds, one not measured, one decay-dominated, and the claims not judged yet
LEDGER = {"runs": ["runs/s42", "runs/s271", "runs/s314"], "n_runs": 3, "regime_flags": ["Λ = 0.64 (paper 2.56)"],
          "out_of_regime": True,
          "claims": [{"claim": 1, "text": "PC1 60–80 %: one direction dominates the drift", "statistic": "trunk raw PC1",
                      "observed": [0.851, 0.848, 0.852], "observed_mean": 0.8503, "observed_sd": 0.00208,
                      "null": [0.891, 0.9, 0.903], "effect": [-0.04, -0.052, -0.051], "effect_mean": -0.0477,
                      "margin": 0.05, "verdict": "not confirmed", "leaning": "not confirmed"},
                     {"claim": 6, "text": "early |C(t)| 0.20–0.34: updates & the backbone", "statistic": "mean |C(t)|",
                      "verdict": "not measured", "leaning": None, "why": "no trajectory_pca.json"},
                     {"claim": 16, "text": "SGD trajectories are colinear", "statistic": "(PC1 − null) of SGD − AdamW",
                      "verdict": "decay-dominated", "leaning": None}],
          "not_yet": [{"claim": 3, "what": "x"}, {"claim": 17, "what": "y"}]}


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# ---------------------------------------------------------------------------- fixtures
def run_inprocess(script: str, *args: str) -> tuple[int, str]:
    """Run a repository script as ``python script args`` would, but in this process (no second torch import)."""
    old, buf = sys.argv, io.StringIO()
    sys.argv = [str(ROOT / script), "--no-progress", *args]
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(str(ROOT / script), run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = old
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def full(tiny_run, tmp_path_factory):
    """A copy of the tiny run with every per-run analysis, synthetic study summaries, and the generated outputs."""
    base = tmp_path_factory.mktemp("figs")
    run = base / "run"
    shutil.copytree(tiny_run, run)
    shutil.rmtree(run / "analysis", ignore_errors=True)
    small = ["--n-batches", "2", "--batch-size", "2", "--n-checkpoints", "3"]
    for script, *extra in [("analysis/backbone/trajectory_pca.py", "--window", "3", "--null-samples", "2"),
                           ("analysis/backbone/update_alignment.py",),
                           ("analysis/backbone/residual_decomposition.py", *small, "--parts", "total"),
                           ("analysis/fisher/rayleigh_quotients.py", *small, "--n-random", "2"),
                           ("analysis/switching/detect_oscillations.py",)]:
        code, out = run_inprocess(script, "--run-dir", str(run), *extra)
        assert code == 0, (script, out)
    write_json(run / "analysis" / "reheating.json", synthetic_reheating(run))
    write_json(base / "sgd" / "analysis" / "sgd_control_results.json", SGD)
    write_json(base / "beta" / "analysis" / "beta_sweep_summary.json", BETA)
    write_json(base / "claims.json", LEDGER)
    code, gen = run_inprocess("figures/make_paper_figures.py", "--run-dir", str(run), "--sgd-dir", str(base / "sgd"),
                              "--beta-dir", str(base / "beta"), "--ledger", str(base / "claims.json"),
                              "--paper-dir", str(base / "generated"))
    assert code == 0, gen
    code, out = run_inprocess("figures/make_report.py", "--run-dir", str(run), "--sgd-dir", str(base / "sgd"),
                              "--reuse-figures")
    assert code == 0, out
    return {"base": base, "run": run, "out": run / "figures", "gen": gen, "paper": base / "generated",
            "numbers": json.loads((run / "figures" / "numbers.json").read_text()),
            "json": {n: json.loads((run / "analysis" / f"{n}.json").read_text())
                     for n in ("trajectory_pca", "update_alignment", "residual_decomposition", "rayleigh_quotients")}}


def md_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the Markdown table in ``path`` (escaped pipes restored)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return split[0], split[2:]


# ---------------------------------------------------------------------------- outputs
def test_every_figure_and_table_is_written(full):
    out = full["out"]
    for name in FIGS:
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 5000, name
        assert (full["paper"] / "figures" / f"{name}.pdf").stat().st_size > 5000
    for name in TABLES:
        assert (out / "tables" / f"{name}.md").read_text().count("\n|") >= 2, name
        tex = (out / "tables" / f"{name}.tex").read_text()
        assert r"\toprule" in tex and r"\bottomrule" in tex and tex.count("{") == tex.count("}"), name
        assert (full["paper"] / "tables" / f"{name}.tex").read_text() == tex
    # the tiny run has no oscillation: the switching table is skipped with one line, not an error
    assert "skipped table_switching" in full["gen"]
    assert not (out / "tables" / "table_switching.md").exists()
    assert (full["paper"] / "numbers.tex").read_text() == (out / "numbers.tex").read_text()


def test_table2_cells_are_the_json_values(full):
    t = full["json"]["trajectory_pca"]
    head, rows = md_rows(full["out"] / "tables" / "table2_pc1.md")
    col = {h: i for i, h in enumerate(head)}
    units = [("trunk", t["trunk"])] + [(f"block {b['block']}", b) for b in t["blocks"]]
    assert [r[0] for r in rows] == [u for u, _ in units]
    for (unit, e), row in zip(units, rows):
        assert row[col["PC1 raw (%)"]] == f"{100 * e['raw']['explained_variance_ratio'][0]:.1f}"
        assert row[col["PC1 row-norm. (%)"]] == f"{100 * e['rownorm']['explained_variance_ratio'][0]:.1f}"
        assert row[col["null PC1 (%)"]] == f"{100 * e['random_walk_null']['pc1']:.1f}"
        assert int(row[col["k95"]]) == e["raw"]["k95"]
        x = e["decomposition"]
        fb = x["a"][-1] ** 2 / x["drift_norm"][-1] ** 2          # f_b = a² / ‖x‖², recomputed
        assert float(row[col["f_b final (%)"]]) == pytest.approx(100 * fb, abs=0.051)
    tex = (full["out"] / "tables" / "table2_pc1.tex").read_text()
    assert f"trunk & 16{{,}}384 & {100 * t['trunk']['raw']['pc1']:.1f} &" in tex


def test_numbers_equal_the_inputs(full):
    num = full["numbers"]["numbers"]
    t, u = full["json"]["trajectory_pca"], full["json"]["update_alignment"]
    r, q = full["json"]["residual_decomposition"], full["json"]["rayleigh_quotients"]
    assert num["pc1_trunk_raw"]["value"] == t["trunk"]["raw"]["explained_variance_ratio"][0]
    assert num["pc1_trunk_raw"]["text"] == f"{100 * t['trunk']['raw']['pc1']:.1f}"
    assert num["pc1_trunk_raw"]["macro"] == r"\PcOneTrunkRaw"
    assert num["pc1_block_max"]["value"] == max(b["raw"]["pc1"] for b in t["blocks"])
    excess = 100 * (t["trunk"]["raw"]["pc1"] - t["trunk"]["random_walk_null"]["pc1"])
    assert num["pc1_excess_over_null"]["value"] == pytest.approx(excess)
    assert num["trunk_null_verb"]["value"] == ("exceeds" if excess > 0 else "does not exceed")
    assert num["update_cos_trunk"]["value"] == pytest.approx(np.mean(np.abs(u["trunk"]["signed_cos"])))
    early = [abs(c) for s, c in zip(u["trunk"]["steps"], u["trunk"]["signed_cos"]) if s < round(0.2 * 20)]
    assert num["update_cos_trunk_early"]["value"] == (pytest.approx(np.mean(early)) if early else None)
    g = [c["total"]["trunk"]["mean_abs_cos"] for c in r["checkpoints"]]
    assert num["grad_cos_max"]["value"] == max(g)
    assert num["grad_floor_trunk"]["value"] == pytest.approx(math.sqrt(2 / (math.pi * t["trunk"]["dim"])))
    assert num["update_over_grad"]["value"] == pytest.approx(u["trunk"]["mean_abs_cos"] / np.mean(g))
    qb = [c["q_backbone"] for c in q["checkpoints"]]
    assert num["q_b_growth"]["value"] == pytest.approx(qb[-1] / qb[0])
    assert num["anisotropy_max"]["value"] == max(c["anisotropy"] for c in q["checkpoints"])
    # reheating: G = max p_ood − p_ood at the start, of the run with the largest G
    rh = json.loads((full["run"] / "analysis" / "reheating.json").read_text())
    gains = [max(x["p_ood"]) - x["p_ood"][0] for x in rh["runs"]]
    assert num["reheat_gain"]["value"] == pytest.approx(max(gains))
    assert num["reheat_best_lr"]["value"] == rh["runs"][int(np.argmax(gains))]["lr"]
    assert num["sgd_pc1_adamw"]["value"] == 0.6234 and num["sgd_verdict"]["value"] == "OPTIMIZER-INDUCED"
    assert num["beta_pc1_max"]["value"] == 0.684 and num["beta_diverged"]["value"] == "0"
    assert num["beta_monotone_verb"]["value"] == "does not fall monotonically"     # 0.681 < 0.684
    # the paper's published values come from figures/paper_values.py with their source
    assert num["paper_sgd_pc1_adamw"]["value"] == 61.5 and "Table 9" in num["paper_sgd_pc1_adamw"]["source"]
    # numbers.tex: one letters-only macro per number, holding the LaTeX text
    tex = (full["out"] / "numbers.tex").read_text()
    assert "\\newcommand{\\PcOneTrunkRaw}{" + num["pc1_trunk_raw"]["tex"] + "}" in tex
    names = re.findall(r"\\newcommand\{\\([^}]*)\}", tex)
    assert len(names) == len(num) == len(set(names)) and all(n.isalpha() for n in names)


def test_phase_and_sign_tables(full):
    u = full["json"]["update_alignment"]
    T, b1 = 20, round(0.2 * 20)
    _, rows = md_rows(full["out"] / "tables" / "table3_update_alignment.md")
    late = [a for s, a in zip(u["trunk"]["steps"], u["trunk"]["abs_cos"]) if s > round(0.6 * T)]
    assert rows[2][0] == "late" and rows[2][3] == f"{np.mean(late):.3f}"
    assert rows[0][1] == f"t < {b1}"
    assert [r[0] for r in rows[3:]] == ["before λ switch", "after λ switch"]          # λ switches at step 10
    _, rows = md_rows(full["out"] / "tables" / "table4_sign_flip.md")
    for row, e in zip(rows, [u["trunk"]] + u["blocks"]):
        assert row[1] == ("none" if e["sign_flip_step"] is None else str(e["sign_flip_step"]))
        assert float(row[5]) == pytest.approx(np.mean(e["signed_cos"]), abs=5e-4)
    _, rows = md_rows(full["out"] / "tables" / "table5_block_bias.md")
    B = np.sum([c["total"]["b"] for c in full["json"]["residual_decomposition"]["checkpoints"]], axis=0)
    assert rows[-1][0] == "B (sum)"
    assert [float(x) for x in rows[-1][2:]] == pytest.approx(B, abs=5e-4)


def test_reheating_table_and_figure_data(full):
    rh = json.loads((full["run"] / "analysis" / "reheating.json").read_text())
    head, rows = md_rows(full["out"] / "tables" / "table11_reheating.md")
    col = {h: i for i, h in enumerate(head)}
    for run, row in zip(rh["runs"], rows):
        g = max(run["p_ood"]) - run["p_ood"][0]
        assert row[col["G"]] == f"{g:+.3f}"
        assert row[col["peak p_ood"]] == f"{max(run['p_ood']):.3f}"
    fig4 = full["numbers"]["figures"]["fig4_reheating"]["data"]
    start = rh["runs"][0]["from_step"]
    assert fig4["runs"][0]["steps"][0] == start and fig4["runs"][0]["steps"][-1] == start + 8   # appended after the start
    assert fig4["original"]["p_ood"] == rh["original"]["eval_p_ood"]


def test_switching_table_from_pairs(full):
    inp = mpf.load_inputs(full["run"])
    pair = {"peak_step": 10, "trough_step": 15, "kind": "fall", "abs_cos_backbone": 0.25, "backbone_share": 0.0625,
            "capture_transverse": {"pc2_to_pc6": 0.4}}
    inp.data["switching_alignment"] = {
        "pairs": [{"peak_step": 10, "trough_step": 15, "amplitude": 0.125}],
        "trunk": {"k_max": 6, "pairs": [pair], "summary": {"mean_abs_cos_backbone": 0.25, "mean_backbone_share": 0.0625,
                                                           "mean_capture_transverse": 0.4}},
        "blocks": [{"pairs": [dict(pair, abs_cos_backbone=0.1)]}, {"pairs": [dict(pair, abs_cos_backbone=0.3)]}],
        "block_range": {"abs_cos_backbone": [0.1, 0.3], "capture_transverse_pc2_to_pc6": [0.4, 0.4]}}
    t = mpf.table_switching(inp)
    md = t.to_md()
    assert "| 10 | 15 | fall | 0.125 | 0.250 | 0.062 | 40.0 | 0.100–0.300 | 40.0 |" in md
    N = mpf.Numbers()
    mpf.numbers_switching(inp, N)
    assert N["switch_transverse_trunk"].value == pytest.approx(0.9375) and N["e_trunk"].text() == "40.0"


def test_sgd_table_shows_the_decay_columns(full):
    head, rows = md_rows(full["out"] / "tables" / "table9_sgd.md")
    col = {h: i for i, h in enumerate(head)}
    assert [r[0] for r in rows] == [r["run"] for r in SGD["table9"]]
    dash = "—"
    for r, row in zip(SGD["table9"], rows):
        def cell(key, spec, scale=1.0):
            return dash if r.get(key) is None else format(scale * r[key], spec)
        assert row[col["PC1 − null (pp)"]] == cell("pc1_minus_null", "+.1f", 100.0)
        assert row[col["Λ_eff"]] == cell("lambda_eff", ".2f")
        assert row[col["‖θ_T‖/‖θ_0‖"]] == cell("norm_ratio", ".3f")
        assert row[col["decay share"]] == cell("decay_share", ".2f")
        assert row[col["decay-dominated"]] == {True: "yes", False: "no", None: dash}[r["decay_dominated"]]
    assert [row[col["PC1 − null (pp)"]] for row in rows] == ["+1.4", "-2.8", dash]
    assert [row[col["decay-dominated"]] for row in rows] == ["no", "yes", dash]
    t = json.loads((full["run"] / "figures" / "numbers.json").read_text())["tables"]["table9_sgd"]
    assert "‖θ_T‖/‖θ_0‖ < 0.1 or decay share ≥ 0.9" in t["caption"] and "claim 16" in t["caption"]
    assert "random walk with the run's own step sizes over the same window" in t["caption"]
    tex = (full["out"] / "tables" / "table9_sgd.tex").read_text()
    assert r"\ensuremath{+1.4}" in tex and r"\ensuremath{-2.8}" in tex and " & yes \\" in tex and tex.isascii()


def test_beta_table_has_pc1_minus_null(full):
    head, rows = md_rows(full["out"] / "tables" / "table_beta2.md")
    i = head.index("PC1 − null (pp)")
    assert head[i - 1] == "PC1 (%)"
    assert [r[i] for r in rows] == ["+5.2", "+3.4", "-1.1", "—"]
    assert [r[i - 1] for r in rows] == [f"{100 * r['pc1']:.1f}" for r in BETA["table"]]


def test_claims_table_from_the_ledger(full):
    head, rows = md_rows(full["out"] / "tables" / "table_claims.md")
    assert head == ["#", "claim", "statistic", "observed", "null", "effect", "margin", "verdict", "leaning"]
    judged, missing, dominated = LEDGER["claims"]
    assert rows[0] == ["1", judged["text"], judged["statistic"],
                       f"{judged['observed_mean']:.3g} ± {judged['observed_sd']:.3g}",
                       f"{np.mean(judged['null']):.3g}", f"{judged['effect_mean']:.3g}", f"{judged['margin']:.3g}",
                       "not confirmed", "not confirmed"]
    assert rows[0][3:7] == ["0.85 ± 0.00208", "0.898", "-0.0477", "0.05"]
    assert rows[1] == ["6", missing["text"], missing["statistic"], "—", "—", "—", "—", "not measured", "—"]
    assert rows[2][0] == "16" and rows[2][7] == "decay-dominated" and rows[2][3] == "—"
    md = (full["out"] / "tables" / "table_claims.md").read_text()
    assert "Over 3 runs" in md and "outside the paper's (Λ = 0.64 (paper 2.56))" in md
    assert "*Not judged here (their studies were not given): claims 3, 17.*" in md
    tex = (full["paper"] / "tables" / "table_claims.tex").read_text()
    assert r"updates \& the backbone" in tex and r"0.85 $\pm$ 0.00208" in tex and r"\label{tab:table_claims}" in tex
    assert r"claims 3, 17." in tex.split(r"\footnotesize")[1]
    assert tex.isascii() and r"$\Lambda$ = 0.64" in tex                # every symbol escaped for LaTeX
    assert r"\haveclaimstrue" in (full["paper"] / "numbers.tex").read_text()
    assert full["numbers"]["flags"]["claims"] is True and full["numbers"]["inputs"]["ledger"] == "present"


def test_without_ledger_no_claims_table(full, tmp_path, capsys):
    bare = bare_copy(full, tmp_path / "bare")
    paper = tmp_path / "gen"
    (paper / "tables").mkdir(parents=True)
    (paper / "tables" / "table_claims.tex").write_text("stale")
    assert call(mpf, "--run-dir", str(bare), "--paper-dir", str(paper)) == 0
    assert "table_claims" not in capsys.readouterr().out             # not asked for: skipped silently
    assert not (bare / "figures" / "tables" / "table_claims.md").exists()
    assert not (paper / "tables" / "table_claims.tex").exists()       # the stale one is removed
    assert r"\haveclaimsfalse" in (paper / "numbers.tex").read_text()
    assert call(mpf, "--run-dir", str(bare), "--paper-dir", str(paper), "--ledger", str(full["base"] / "claims.json")) == 0
    assert (paper / "tables" / "table_claims.tex").read_text().count(r" \\") == 1 + len(LEDGER["claims"])
    assert r"\haveclaimstrue" in (paper / "numbers.tex").read_text()


def test_bad_ledger_is_a_one_line_error(full, tmp_path, capsys):
    bare = bare_copy(full, tmp_path / "bare")
    write_json(tmp_path / "other.json", {"table9": []})
    (tmp_path / "corrupt.json").write_text('{"claims": [')
    for path, message in [(tmp_path / "missing.json", "does not exist"), (tmp_path, "does not exist"),
                          (tmp_path / "other.json", "is not a claims ledger"), (tmp_path / "corrupt.json", "corrupt")]:
        capsys.readouterr()
        assert call(mpf, "--run-dir", str(bare), "--ledger", str(path)) == 2, path
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (bare / "figures").exists()                             # nothing written


# ---------------------------------------------------------------------------- the report
def test_report_embeds_figures_and_lists_missing(full):
    run = full["run"]
    text = (run / "report.md").read_text()
    for name in FIGS:
        m = re.search(rf"!\[[^\]]*\]\(([^)]*{name}\.png)\)", text)
        assert m and (run / m.group(1)).exists(), name
    assert "| quantity | this run | paper (source) |" in text
    pc1 = full["numbers"]["numbers"]["pc1_trunk_raw"]["text"]
    assert re.search(rf"\| trunk PC1, raw / row-normalised \(%\) \| {re.escape(pc1)} / ", text)
    assert "`switching_alignment`: not run" in text and "`basin_depth`: not run" in text
    assert "`beta`: not included" in text and "`sgd`: not run" not in text
    reading = full["numbers"]["readings"][0]
    assert f"- {reading}" in text and full["numbers"]["numbers"]["trunk_null_verb"]["value"] in reading


# ---------------------------------------------------------------------------- the paper's inputs
STANDARD = set("""documentclass usepackage input newcommand title author thanks date begin end maketitle emph section
paragraph label ref cite texttt fi else mathrm frac sum langle rangle theta sigma rho alpha lambda pi ell beta top
times cdot sqrt quad approx item bibitem textbf par small centering includegraphics linewidth caption vb vsw
pood mathbf text le ge dots ldots Delta S cos pm""".split())


def active_tex(body: str, flags: dict[str, bool]) -> str:
    r"""The text TeX typesets given the \ifhave<flag> values (nested conditionals, \else)."""
    out, stack = [], []
    for tok in re.split(r"(\\ifhave[a-z]+|\\else\b|\\fi\b)", body):
        if tok.startswith("\\ifhave"):
            stack.append([flags[tok[len("\\ifhave"):]], False])
        elif tok == "\\else":
            stack[-1][1] = True
        elif tok == "\\fi":
            stack.pop()
        elif all(on != in_else for on, in_else in stack):
            out.append(tok)
    assert not stack
    return "".join(out)


def check_paper_against(gen_dir: Path) -> None:
    r"""Every macro paper.tex typesets is defined by gen_dir/numbers.tex, every \input'd file exists."""
    tex = (ROOT / "paper" / "paper.tex").read_text()
    body = "\n".join(re.sub(r"(?<!\\)%.*", "", line) for line in tex.splitlines())     # comments (not \%) removed
    gen = (gen_dir / "numbers.tex").read_text()
    defined = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", gen))
    flags = {m.group(1): m.group(2) == "true" for m in re.finditer(r"\\have([a-z]+)(true|false)", gen)}
    assert set(re.findall(r"\\ifhave([a-z]+)", body)) <= set(flags)
    assert body.count("{") == body.count("}")
    text = active_tex(body, flags)
    unknown = set(re.findall(r"\\([A-Za-z]+)", text)) - STANDARD - defined
    assert not unknown, unknown
    for path in re.findall(r"\\(?:input|includegraphics\[[^\]]*\])\{generated/([^}]*)\}", text):
        assert (gen_dir / path).exists(), path
    # no number typed into the prose (they come from macros; labels like "block 0" are allowed)
    prose = re.sub(r"\\[A-Za-z]+|\$[^$]*\$|\{[^{}]*\}", " ", body.split(r"\begin{thebibliography}")[0])
    assert not re.findall(r"\d+\.\d+|\d{3,}", prose)


def test_paper_uses_only_generated_numbers(full, tmp_path):
    check_paper_against(full["paper"])
    bare = tmp_path / "bare"                            # every \ifhave flag false: the paper still compiles
    bare.mkdir()
    for f in ("config.json", "metrics.jsonl", "status.json"):
        shutil.copy(full["run"] / f, bare / f)
    mpf.generate(mpf.load_inputs(bare), bare / "figures", paper_dir=tmp_path / "gen")
    check_paper_against(tmp_path / "gen")
    assert not list((tmp_path / "gen" / "figures").glob("*.pdf"))


# ---------------------------------------------------------------------------- missing and bad inputs
def call(module, *args: str) -> int:
    """Run a script's main() in this process as the command line would (UserError -> one line, exit 2)."""
    from training.core.cli import run_main
    old = sys.argv
    sys.argv = [module.__file__, *args]
    try:
        return run_main(module.main)
    except SystemExit as e:                             # --help
        return e.code
    finally:
        sys.argv = old


def bare_copy(full, where: Path) -> Path:
    where.mkdir()
    for f in ("config.json", "metrics.jsonl", "status.json"):
        shutil.copy(full["run"] / f, where / f)
    return where


def test_missing_inputs_are_skipped_or_strict(full, tmp_path, capsys):
    from figures import make_report
    bare = bare_copy(full, tmp_path / "bare")
    assert call(mpf, "--run-dir", str(bare)) == 0
    out = capsys.readouterr().out
    for name in FIGS:
        assert sum(line.startswith(f"skipped {name}: missing") for line in out.splitlines()) == 1
    assert not list((bare / "figures").glob("*.png"))
    assert "| not run |" in (bare / "figures" / "tables" / "comparison.md").read_text()
    assert call(mpf, "--run-dir", str(bare), "--strict") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing" in err and "trajectory_pca" in err
    assert call(make_report, "--run-dir", str(bare)) == 0
    text = (bare / "report.md").read_text()
    assert "### Figure 1 — backbone–residual decomposition\n\nnot run" in text
    assert "`trajectory_pca`: not run" in text


def test_bad_run_directories_are_one_line_errors(full, tmp_path, capsys):
    from figures import make_report
    p = run_script("figures/make_paper_figures.py", "--run-dir", str(tmp_path / "missing"))    # as a user runs it
    assert p.returncode == 2 and "does not exist" in p.stderr and p.stderr.count("\n") == 1
    assert call(make_report, "--run-dir", str(tmp_path / "missing")) == 2
    broken = bare_copy(full, tmp_path / "broken")
    (broken / "analysis").mkdir()
    cases = [('{"trunk": ', "corrupt"), ('{"trunk": {}}', "lacks an expected field")]
    for content, message in cases:
        (broken / "analysis" / "trajectory_pca.json").write_text(content)
        capsys.readouterr()
        assert call(mpf, "--run-dir", str(broken)) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    (broken / "analysis" / "trajectory_pca.json").unlink()
    (broken / "status.json").write_text('{"state": "running", "step": 5}')
    assert call(mpf, "--run-dir", str(broken)) == 2 and "not finished" in capsys.readouterr().err
    assert call(mpf, "--run-dir", str(broken), "--allow-incomplete") == 0
    assert call(mpf, "--run-dir", str(full["run"]), "--sgd-dir", str(tmp_path / "nope")) == 2
    assert "--sgd-dir" in capsys.readouterr().err


def test_help_and_make_targets(capsys):
    from figures import make_report
    for module in (mpf, make_report):
        assert call(module, "--help") == 0
        assert "--run-dir" in capsys.readouterr().out
    if shutil.which("make") and not shutil.which("latexmk"):
        p = subprocess.run(["make", "-s", "-C", str(ROOT / "paper"), "pdf"], capture_output=True, text=True)
        assert p.returncode != 0 and "latexmk is needed" in p.stdout


# ---------------------------------------------------------------------------- formatting
def test_formatting_rules():
    fmt = mpf.fmt
    assert fmt(0.79123, "pct") == "79.1" and fmt(None, "pct") == "—" and fmt(None, "pct", "tex") == "--"
    assert fmt(2.4e-6, "sci") == "2.4e-06" and fmt(2.4e-6, "sci", "tex") == r"\ensuremath{2.4\times10^{-6}}"
    assert fmt((0.2, 0.31), "num2") == "0.20–0.31" and fmt((0.2, 0.31), "num2", "tex") == "0.20--0.31"
    assert fmt(-0.0401, "signed") == "-0.040" and fmt(-0.0401, "signed", "tex") == r"\ensuremath{-0.040}"
    assert fmt(0.0143, "pp") == "+1.4" and fmt(-0.0276, "pp", "tex") == r"\ensuremath{-2.8}" and fmt(None, "pp") == "—"
    assert fmt(25165824, "int", "tex") == "25{,}165{,}824" and fmt(3375.0, "x") == "3,375×"
    assert fmt("a_b & 5 %", "text", "tex") == r"a\_b \& 5 \%"
    assert mpf.macro_name("k95_trunk") == "KNineFiveTrunk" and mpf.macro_name("pc1_trunk_raw") == "PcOneTrunkRaw"


def test_nulls_are_drawn_and_tabulated_beside_the_statistics(full):
    """Figures 1 and 2 carry the random walk's and the weight-decayed walk's a(t), ‖r(t)‖ and C(t) (from
    trajectory_pca's null profile), and Tables 2, 3, 4 and the gradient table have their null columns."""
    t = full["json"]["trajectory_pca"]
    figs = full["numbers"]["figures"]
    prof = t["trunk"]["null_profile"]
    panel = figs["fig1_backbone"]["data"]["panels"][0]
    assert set(panel["nulls"]) == {"random walk", "weight-decayed walk"}
    assert panel["nulls"]["random walk"]["a"] == prof["random_walk"]["a"]
    assert panel["nulls"]["weight-decayed walk"]["residual_norm"] == prof["weight_decayed_walk"]["residual_norm"]
    nC = figs["fig2_alignment"]["data"]["null_C"]
    assert nC["random walk"]["signed"] == prof["random_walk"]["C"]["signed"]
    head, rows = md_rows(full["out"] / "tables" / "table2_pc1.md")
    col = {h: i for i, h in enumerate(head)}
    assert rows[0][col["wd-walk PC1 (%)"]] == f"{100 * prof['weight_decayed_walk']['pc1']:.1f}"
    assert int(rows[0][col["wd-walk k95"]]) == prof["weight_decayed_walk"]["k95"]
    head, rows = md_rows(full["out"] / "tables" / "table3_update_alignment.md")
    col = {h: i for i, h in enumerate(head)}
    late = [abs(c) for s, c in zip(prof["random_walk"]["C"]["steps"], prof["random_walk"]["C"]["signed"]) if s > 12]
    assert rows[2][col["trunk null |C| (random walk)"]] == f"{np.mean(late):.3f}"
    head, rows = md_rows(full["out"] / "tables" / "table4_sign_flip.md")
    col = {h: i for i, h in enumerate(head)}
    flip = prof["sign_flip"]
    for key, name in (("t_star", "t*₃"), ("t_star_random_walk", "t*₃ random walk"),
                      ("t_star_weight_decayed_walk", "t*₃ wd walk")):
        assert rows[0][col[name]] == ("none" if flip[key] is None else str(flip[key]))
    head, rows = md_rows(full["out"] / "tables" / "table_gradient_alignment.md")
    r = full["json"]["residual_decomposition"]
    assert float(rows[0][head.index("t")]) == pytest.approx(r["checkpoints"][0]["total"]["trunk"]["t_stat"], abs=5e-3)


def test_table1_and_table8_come_from_the_configs(full, tmp_path):
    from figures.paperlib.tables import table1, table8
    from training.core.config import preset
    from training.core.runio import read_run_config
    from training.studies.sgd_controls import RUNS
    head, rows = md_rows(full["out"] / "tables" / "table1_hyperparameters.md")
    cfg = read_run_config(full["run"])
    by = {r[0]: r for r in rows}
    assert by["total steps"][1] == f"{cfg.steps:,}" and by["total steps"][2] == "10,000"
    assert by["weight decay"][2] == "0.50" and by["seed"][1] == str(cfg.seed) and by["seed"][2] == "42, 271"
    assert "(51 checkpoints)" in by["checkpoints"][2]
    # Table 8: each study run's own config.json, beside the paper's values of its spec
    inp = mpf.load_inputs(full["run"], sgd_dir=str(full["base"] / "sgd"))
    study = inp.study_dirs["sgd"]
    src = json.loads((full["run"] / "config.json").read_text())
    for key, opt, lr, wd in (("A", "adamw", 3e-3, 0.1), ("C", "sgd_momentum", 3e-2, 0.01)):
        d = tmp_path / RUNS[key].dirname
        d.mkdir()
        c = dict(src, config=dict(src["config"], optimizer=opt, lr=lr, wd=wd, momentum=0.9))
        (d / "config.json").write_text(json.dumps(c))
    inp.study_dirs["sgd"] = tmp_path
    t = table8(inp)
    assert [r[:5] for r in t.rows] == [["A AdamW", "adamw", 3e-3, cfg.beta1, 0.1], ["C SGD+momentum", "sgd_momentum", 3e-2, 0.9, 0.01]]
    assert [r[-2:] for r in t.rows] == [[1e-3, 0.5], [1e-2, 0.05]]
    assert table1(inp).rows[0][2].value.startswith("AdamW (β1 = 0.90, β2 = 0.95)")
    assert preset("paper").steps == 10_000
    inp.study_dirs["sgd"] = study


def test_seed_tables_aggregate_over_runs(full, tmp_path):
    a = full["run"]
    b = tmp_path / "b"
    shutil.copytree(a, b)
    tp = json.loads((b / "analysis" / "trajectory_pca.json").read_text())
    tp["trunk"]["raw"]["pc1"] = 0.5
    (b / "analysis" / "trajectory_pca.json").write_text(json.dumps(tp))
    (b / "analysis" / "rayleigh_quotients.json").unlink()
    out = tmp_path / "out"
    def seed_tables(*args):
        return subprocess.run([sys.executable, str(ROOT / "figures" / "seed_tables.py"), *args], capture_output=True,
                              text=True, cwd=ROOT)
    p = seed_tables("--run-dir", str(a), "--run-dir", str(b), "--out-dir", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "seed_tables.json").read_text())
    trunk = res["tables"]["table2"]["rows"][0]
    pa = json.loads((a / "analysis" / "trajectory_pca.json").read_text())["trunk"]["raw"]["pc1"]
    assert trunk["values"] == [pa, 0.5]
    assert trunk["mean"] == pytest.approx((pa + 0.5) / 2) and trunk["sd"] == pytest.approx(np.std([pa, 0.5], ddof=1))
    assert "table6" in res["not_built"] and "rayleigh_quotients.py" in res["not_built"]["table6"]
    assert "Table 4 over seeds" in (out / "seed_tables.md").read_text()
    bad = seed_tables("--run-dir", str(tmp_path / "nope"), "--out-dir", str(out))
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error:")
