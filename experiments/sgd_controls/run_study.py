"""SGD-family controls (arXiv 2602.23696 §5): train runs A (AdamW), B (SGD), C (SGD + momentum), C' (Nesterov SGDW)
with everything but the optimizer shared, then compare their trajectory geometry.

The runs are trained one after another in this process (or resumed where they stopped; finished runs
are skipped) into STUDY/A_adamw, STUDY/B_sgd, STUDY/C_sgd_momentum and STUDY/Cprime_sgdw_nesterov. A run
that diverges is recorded as diverged and the study goes on. The analysis then writes
STUDY/analysis/sgd_control_results.json (protocol, table9, table10, matched, pc1_rotation,
update_alignment, residual_coupling, verdict), STUDY/analysis/table9.md and five figures (training_curves, pca_summary,
pc1_rotation, update_alignment, matched_loss .png). At --preset paper every setting is the paper's
(Table 8: 4000 steps, ...); at quick/test the steps and rates are scaled (see
experiments/sgd_controls/README.md and the JSON's "protocol").

Examples:
  python experiments/sgd_controls/run_study.py                         # quick preset, ~10 min on 2 free CPU cores
  python experiments/sgd_controls/run_study.py --preset paper --set device=cuda
  python experiments/sgd_controls/run_study.py --runs A,C --analyse-only
"""
import sys
import time

from figures.style import figure, save_figure
from training.core import runio
from training.core.cli import run_main
from training.core.config import parse_override
from training.core.regime import effective_integrated_wd
from training.geometry.analysis_io import write_result
from training.studies import sgd_controls as sc
from training.studies.common import (
    RunJob,
    add_jobs_arg,
    executor_from_args,
    refuse_protocol_overrides,
    study_base_config,
    study_dir,
    study_parser,
    train_runs,
)

RESULT = "sgd_control_results"
COLORS = {"A": "tab:blue", "B": "tab:red", "C": "tab:green", "Cprime": "tab:purple"}


def parse_args():
    p = study_parser(__doc__, out_default=f"runs/{sc.STUDY}_<preset>_s<seed>")
    p.add_argument("--runs", default="A,B,C,Cprime", help="which runs to train and analyse (default A,B,C,Cprime)")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the runs already trained")
    p.add_argument("--decay", default="paper", choices=sc.DECAY_MODES,
                   help="paper: Table 8's weight decays (C and C' have Λ_eff ≈ 10, the decay dominates); matched: each "
                        "SGD-family decay rescaled to A's Λ_eff; trainable: the SGD learning rates raised to "
                        "100x (B 1000x) AdamW's first, then matched (default paper; the others write to "
                        f"runs/{sc.STUDY}_<decay>_<preset>_s<seed>)")
    add_jobs_arg(p)
    args = p.parse_args()
    args.runner = executor_from_args(args)         # --jobs, or --executor slurm's jobs: refused here if inconsistent
    refuse_protocol_overrides((parse_override(item)[0] for item in args.set), sc.PROTOCOL_FIELDS, "SGD-control",
                              {k: " (use training/pilot.py for a single run with other values)" for k in sc.PROTOCOL_FIELDS})
    return args


def main() -> int:
    args = parse_args()
    keys = sc.parse_runs(args.runs)
    base = study_base_config(args)
    cfgs = sc.run_configs(base, args.decay)
    root = study_dir(args, sc.STUDY if args.decay == "paper" else f"{sc.STUDY}_{args.decay}")
    s = sc.scaled_settings(base)
    print(f"SGD-control study in {root}: preset {args.preset}, seed {args.seed}, {s['steps']} steps per run, window "
          f"{s['window']}, runs {','.join(keys)}, {args.decay} weight decays")
    timings = {}
    if not args.analyse_only:
        for key in keys:
            c = cfgs[key]
            print(f"run {key}: {c.optimizer} lr {c.lr:g} wd {c.wd:g} Λ_eff {effective_integrated_wd(c):.3g}"
                  + (f" momentum {c.momentum:g}" if sc.RUNS[key].momentum is not None else ""), flush=True)
        done = train_runs([RunJob(f"run {key}", cfgs[key], root / sc.RUNS[key].dirname) for key in keys], args.runner)
        timings = {key: done[f"run {key}"]["seconds"] for key in keys}
    t0 = time.monotonic()
    result = sc.analyse(root, base, keys, progress=not args.no_progress, decay=args.decay)
    result["timings_s"] = {"train_this_invocation": timings, "analysis": round(time.monotonic() - t0, 2)}
    out = root / "analysis"
    path = write_result(out, RESULT, result)
    runio.atomic_write_text(out / "table9.md", sc.table9_markdown(result))
    plot_all(out, result)
    report(result)
    print(f"wrote {path}, {out / 'table9.md'} and figures in {out}")
    return 0


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def report(result):
    print(f"{'run':<7}{'optimizer':<15}{'state':<10}{'final val':>10}{'best p_ood':>11}{'val@2000':>9}"
          f"{'PC1 %':>7}{'-null':>7}{'raw %':>7}{'k95':>5}{'k99':>5}{'drift':>9}{'Λ_eff':>7}{'|θT|/|θ0|':>10}"
          f"{'decay-dom.':>11}")
    for r in result["table9"]:
        pct = (lambda v: None if v is None else 100 * v)
        dom = {True: "yes", False: "no"}.get(r.get("decay_dominated"), "n/a")
        print(f"{r['run']:<7}{r['optimizer']:<15}{r['state']:<10}{_fmt(r['final_val_loss'], '.3f'):>10}"
              f"{_fmt(r['best_p_ood'], '.3f'):>11}{_fmt(r['val_at_2000'], '.3f'):>9}"
              f"{_fmt(pct(r['pc1']), '.1f'):>7}{_fmt(pct(r.get('pc1_minus_null')), '+.1f'):>7}"
              f"{_fmt(pct(r['pc1_raw']), '.1f'):>7}"
              f"{_fmt(r['k95'], 'd'):>5}{_fmt(r['k99'], 'd'):>5}{_fmt(r['drift'], '.3f'):>9}"
              f"{_fmt(r.get('lambda_eff'), '.3g'):>7}{_fmt(r.get('norm_ratio'), '.3f'):>10}{dom:>11}")
    v = result["verdict"]
    print(f"verdict (literal rule): {v['outcome']}; bridge: {v['bridge']}; direction-agnostic: {v['direction_agnostic']}")
    print(v["reading"])


# ---------------------------------------------------------------------------- figures
def plot_all(out, result):
    plot_curves(out, result)
    plot_pca(out, result)
    plot_rotation(out, result)
    plot_update(out, result)
    plot_matched(out, result)


def _legend(a):
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=7)


def _label(key):
    return sc.RUNS[key].label


def plot_curves(out, result):
    fig, ax = figure(1, 2, width=5.4)
    lo, hi = result["protocol"]["window"]
    for key, c in result["curves"].items():
        pts = [(s, v) for s, v in zip(c["step"], c["val_loss"]) if v is not None]
        ax[0, 0].plot(*zip(*pts), "-", color=COLORS[key], label=_label(key)) if pts else None
        pts = [(s, v) for s, v in zip(c["step"], c["p_ood"]) if v is not None]
        ax[0, 1].plot(*zip(*pts), "-", color=COLORS[key], label=_label(key)) if pts else None
    for a in ax[0]:
        a.axvspan(lo, hi, color="0.9", zorder=0, label="analysis window")
        a.axvline(result["protocol"]["step_2000"], color="0.5", ls=":", lw=1)
        _legend(a)
    ax[0, 0].set(xlabel="step", ylabel="validation loss", title="validation loss")
    ax[0, 1].set(xlabel="step", ylabel="p_ood", title="OOD probe accuracy", ylim=(-0.02, 1.02))
    fig.suptitle("SGD-family controls: training curves (dotted: scaled step 2000)")
    save_figure(fig, out, "training_curves")


def _bars(a, keys, values, fmt, ylabel, title):
    xs = range(len(keys))
    a.bar(xs, [0 if v is None else v for v in values], color=[COLORS[k] for k in keys])
    for x, v in zip(xs, values):
        a.annotate("n/a" if v is None else format(v, fmt), (x, 0 if v is None else v), ha="center", va="bottom",
                   fontsize=8)
    a.set_xticks(list(xs), [_label(k) for k in keys], rotation=20, fontsize=8)
    a.set(ylabel=ylabel, title=title)


def plot_pca(out, result):
    fig, ax = figure(1, 3, width=4.2)
    rows = result["table9"]
    keys = [r["run"] for r in rows]
    lo, hi = result["protocol"]["window"]
    _bars(ax[0, 0], keys, [None if r["pc1"] is None else 100 * r["pc1"] for r in rows], ".1f", "PC1 (%)",
          "PC1, row-normalised (dots: raw)")
    ax[0, 0].plot(range(len(keys)), [float("nan") if r["pc1_raw"] is None else 100 * r["pc1_raw"] for r in rows],
                  "ko", ms=4)
    ax[0, 0].set_ylim(0, 110)
    _bars(ax[0, 1], keys, [r["k95"] for r in rows], "d", "k95", "components for 95 % of the energy")
    _bars(ax[0, 2], keys, [r["drift"] for r in rows], ".3g", "‖θ(end) − θ(start)‖", "window drift")
    fig.suptitle(f"Uncentered PCA of the drifts in the window [{lo}, {hi}], anchored at its start")
    save_figure(fig, out, "pca_summary")


def plot_rotation(out, result):
    fig, ax = figure(1, 2, width=5.2)
    for key, r in result["pc1_rotation"].items():
        if r.get("reason") is None and r.get("window_start"):
            if r["adjacent_abs_cos"]:
                ax[0, 0].plot(r["window_start"][1:], r["adjacent_abs_cos"], "o-", color=COLORS[key], label=_label(key))
            ax[0, 1].plot(r["window_start"], r["global_abs_cos"], "o-", color=COLORS[key], label=_label(key))
    ax[0, 0].set(xlabel="sub-window start step", ylabel="|cos(PC1_i, PC1_i-1)|", title="adjacent sub-window PC1s",
                 ylim=(-0.02, 1.02))
    ax[0, 1].set(xlabel="sub-window start step", ylabel="|cos(PC1_i, v_b)|", title="sub-window PC1 vs window PC1",
                 ylim=(-0.02, 1.02))
    for a in ax[0]:
        _legend(a)
    fig.suptitle(f"PC1 rotation: sliding sub-windows of {result['protocol']['rotation_drifts']} row-normalised drifts")
    save_figure(fig, out, "pc1_rotation")


def plot_update(out, result):
    fig, ax = figure(1, 1, width=6.0)
    a = ax[0, 0]
    for key, r in result["update_alignment"].items():
        pts = r.get("points") or []
        if pts:
            a.plot([p["t"] for p in pts], [p["signed_cos"] for p in pts], "o-", color=COLORS[key], label=_label(key))
    a.axhline(0, color="0.5", lw=0.8)
    d = result["protocol"]["update_alignment"]["delta"]
    a.set(xlabel="step t", ylabel="cos(θ(t+Δ) − θ(t), v_b)", title=f"update alignment with the window backbone (Δ = {d})",
          ylim=(-1.05, 1.05))
    _legend(a)
    save_figure(fig, out, "update_alignment")


def plot_matched(out, result):
    rows = [dict(r, label=f"{r['run']} {r['window_spec']}\n{r['kind']}") for r in result["table10"]]
    rows += [dict(r, label=f"{r['run']} [{r['window'][0]}..{r['window'][-1]}]\nauto" + (" (never)" if r["never_reached"]
                                                                                        else ""))
             for r in result["matched"]["rows"] if r["window"]]
    fig, ax = figure(2, 1, width=max(6.0, 0.75 * len(rows)), height=3.2)
    xs = list(range(len(rows)))
    for a, field, scale, ylabel in ((ax[0, 0], "pc1", 100, "PC1 (%), row-normalised"), (ax[1, 0], "drift", 1, "drift")):
        vals = [None if r[field] is None else scale * r[field] for r in rows]
        a.bar(xs, [0 if v is None else v for v in vals], color=[COLORS[r["run"]] for r in rows])
        for x, v, r in zip(xs, vals, rows):
            txt = "n/a" if v is None else (f"{v:.1f}" if field == "pc1" else f"{v:.3g}")
            if field == "pc1" and r["k95"] is not None:
                txt += f"\nk95={r['k95']}"
            a.annotate(txt, (x, 0 if v is None else v), ha="center", va="bottom", fontsize=7)
        a.set_xticks(xs, [r["label"] for r in rows], fontsize=7)
        a.set_ylabel(ylabel)
    ax[0, 0].set_ylim(0, 115)
    if any(r["drift"] for r in rows):
        ax[1, 0].set_yscale("log")
    t = result["matched"].get("target")
    ax[0, 0].set_title("Matched-loss comparison: the paper's Table-10 windows (scaled) and windows bracketing "
                       + ("C's final val loss" + (f" {t:.3f}" if t is not None else "")))
    save_figure(fig, out, "matched_loss")


if __name__ == "__main__":
    sys.exit(run_main(main))
