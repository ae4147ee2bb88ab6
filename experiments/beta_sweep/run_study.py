"""The AdamW β2 sweep: train one run per β2 (nothing else changed), analyse each, tabulate, reheat.

Commands (each resumable: re-running skips finished work and resumes unfinished runs):
  train    one run per β2 of --beta2s into <study>/b2_<β2>, one after another; a diverged run is
           recorded and the sweep goes on
  analyse  analysis/beta_sweep/beta_summary.py (in this process) on every run whose beta_metrics.json is older than its
           status.json (or missing)
  summary  <study>/analysis/beta_sweep_summary.json, table_beta2.md, table_beta2.csv and the figures
  reheat   the β2-ablation reheating grid: for each β2 (--reheat-beta2s, else --beta2s, else 0.95,0.80),
           checkpoint (--ckpts, paper steps) and learning rate (--lrs, paper values) a reheating run
           from that checkpoint with a fresh AdamW of the run's β2 into <study>/b2_<β2>/reheat/<name>
  all      train, analyse, summary, reheat, summary

Steps and learning rates are the paper's; at other presets they are scaled by training/studies/common.py
(steps × preset steps / 10,000, learning rates × preset lr / 1e-3). The protocol fields (steps, λ
schedule, evaluation and checkpoint cadence, β2) cannot be --set: the study fixes them.

Examples:
  python experiments/beta_sweep/run_study.py all --preset quick
  python experiments/beta_sweep/run_study.py train --preset paper --set device=cuda
  python experiments/beta_sweep/run_study.py reheat --preset quick --beta2s 0.95 --ckpts 4000 --lrs 6e-4
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from training.core import runio
from training.core.cli import run_main
from training.core.config import Config
from training.core.errors import UserError
from training.core.tasks import validate
from training.studies import beta_sweep as bs
from training.studies import common as studies

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = ("train", "analyse", "summary", "reheat", "all")
ANALYSIS_SCRIPT = ROOT / "analysis" / "beta_sweep" / "beta_summary.py"


def build_parser():
    p = studies.study_parser(__doc__, out_default=f"runs/{bs.STUDY}_<preset>_s<seed>")
    p.add_argument("command", choices=COMMANDS, help="what to do (see the commands below)")
    p.add_argument("--beta2s", help="β2 values of the sweep, comma-separated (default 0.99,0.95,0.90,0.80,0.0)")
    p.add_argument("--reheat-beta2s", help="β2 values to reheat (default: --beta2s if given, else 0.95,0.80)")
    p.add_argument("--ckpts", default=",".join(map(str, bs.REHEAT_CKPTS)),
                   help="reheating checkpoints in paper steps of the 4,000-step runs, scaled (default 2000,4000)")
    p.add_argument("--lrs", help="reheating learning rates in paper values, scaled (default 1e-3,6e-4,3e-4)")
    p.add_argument("--n-batches", type=int, default=bs.DEFAULT_INTERFERENCE_BATCHES,
                   help="analysis: mini-batches per interference checkpoint (default 8)")
    p.add_argument("--batch-size", type=int, help="analysis: sequences per mini-batch (default: the run's micro-batch)")
    p.add_argument("--analysis-seed", type=int, default=0, help="analysis: seed of the analysis batches (default 0)")
    p.add_argument("--device", default="auto", help="analysis: auto | cpu | cuda (training: --set device=...)")
    studies.add_jobs_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.runner = studies.executor_from_args(args)     # --jobs, or --executor slurm's jobs: refused here if inconsistent
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)      # stage messages appear in order with training's log
    bs.check_overrides(args.set)
    base = studies.study_base_config(args)
    validate(base)
    root = studies.study_dir(args, bs.STUDY)
    beta2s = bs.parse_beta2s(args.beta2s) if args.beta2s else None
    reheat_beta2s = (bs.parse_beta2s(args.reheat_beta2s, "--reheat-beta2s") if args.reheat_beta2s
                     else beta2s or list(bs.REHEAT_BETA2S))
    ckpts = bs.parse_paper_steps(args.ckpts)
    lrs = bs.parse_paper_lrs(args.lrs) if args.lrs else None
    if args.n_batches < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise UserError("--n-batches and --batch-size must be at least 1")
    sweep = Sweep(args, base, root, beta2s, reheat_beta2s, ckpts, lrs)
    stages = {"train": [train], "analyse": [analyse], "summary": [summary], "reheat": [reheat],
              "all": [train, analyse, summary, reheat, summary]}[args.command]
    for stage in stages:
        stage(sweep)
    return 0


@dataclass(frozen=True)
class Sweep:
    """What every stage works from: the command line, the preset's base config, the study directory and the
    parsed choices (None = the stage's default)."""
    args: argparse.Namespace
    base: Config
    root: Path
    beta2s: list[float] | None          # --beta2s
    reheat_beta2s: list[float]          # --reheat-beta2s, else --beta2s, else the paper's two
    ckpts: list[int]                    # reheating checkpoints in paper steps
    lrs: list[float] | None             # reheating learning rates in paper values


# ---------------------------------------------------------------------------- stages
def train(sweep: Sweep):
    args, base, root = sweep.args, sweep.base, sweep.root
    beta2s = sweep.beta2s or list(bs.BETA2S)
    p = bs.protocol(base)
    print(f"β2 sweep at preset {base.preset}: {len(beta2s)} runs of {p['steps']} steps (warmup {p['warmup']}, "
          f"λ {base.lambda_probe:g} → {base.lambda_after:g} at step {p['lambda_step']}, eval every {p['eval_every']}, "
          f"checkpoints every {p['ckpt_every']} + dense {p['ckpt_dense']}) in {root}")
    runs = bs.train_sweep(base, beta2s, root, jobs=args.runner)
    for r in runs:
        print(f"  β2 = {bs.beta2_label(r['beta2'])}: {r['state']}")


def selected_runs(root, beta2s):
    runs = bs.find_runs(root)
    if beta2s is not None:
        have = {b for b, _ in runs}
        missing = [b for b in beta2s if b not in have]
        if missing:
            raise UserError(f"no β2 = {bs.beta2_label(missing[0])} run in {root}; train it first")
        runs = [(b, d) for b, d in runs if b in set(beta2s)]
    if not runs:
        raise UserError(f"{root} holds no β2-sweep run; train first (run_study.py train)")
    return runs


def analyse(sweep: Sweep):
    args = sweep.args
    for b, d in selected_runs(sweep.root, sweep.beta2s):
        state = studies.run_state(d)
        if state not in ("completed", "diverged"):
            raise UserError(f"run {d} is {state}; finish it first (run_study.py train)")
        if bs.analysis_current(d):
            print(f"analysis of β2 = {bs.beta2_label(b)} is up to date ({d}/analysis/beta_metrics.json)")
            continue
        argv = ["--run-dir", str(d), "--seed", str(args.analysis_seed), "--n-batches", str(args.n_batches),
                "--device", args.device]
        if args.batch_size is not None:
            argv += ["--batch-size", str(args.batch_size)]
        if args.no_progress:
            argv.append("--no-progress")
        print(f"== analysing β2 = {bs.beta2_label(b)}: {d}", flush=True)
        analysis_main()(argv)          # the script itself, in this process (no second start-up per run)


def analysis_main():
    """main() of analysis/beta_sweep/beta_summary.py, loaded from its file."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("beta_summary", ANALYSIS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def reheat(sweep: Sweep):
    args, reheat_beta2s, ckpts = sweep.args, sweep.reheat_beta2s, sweep.ckpts
    plan = bs.reheat_plan(sweep.root, reheat_beta2s, ckpts, sweep.lrs)
    print(f"β2 reheating grid: {len(plan)} runs (β2 {', '.join(map(bs.beta2_label, reheat_beta2s))}; "
          f"paper checkpoints {ckpts})")
    jobs = []
    for entry in plan:
        tag = f"β2 = {bs.beta2_label(entry['beta2'])}, ckpt {entry['ckpt']}, lr {entry['lr']:g}"
        if "skip" in entry:
            print(f"  {tag}: skipped ({entry['skip']})")
            continue
        cfg = entry["cfg"].replace(**{**bs.runtime_overrides(args.set), "progress": not args.no_progress})
        jobs.append(studies.RunJob(tag, cfg, Path(entry["out_dir"])))
    studies.train_runs(jobs, args.runner, lambda msg: print(f"  {msg}"))    # failures: one line each, then an error


def summary(sweep: Sweep):
    base, root = sweep.base, sweep.root
    runs = selected_runs(root, sweep.beta2s)
    rows = [bs.summary_row(b, d) for b, d in runs]
    reheat_rows = bs.reheat_table(runs)
    record = runio.read_json(root / "study.json", "study record") if (root / "study.json").exists() else {}
    out_dir = root / "analysis"
    extra = per_run_curves(runs)
    result = {"study": bs.STUDY, "study_dir": str(root), "preset": record.get("preset", base.preset),
              "seed": record.get("seed", base.seed), "protocol": record.get("protocol", bs.protocol(base)),
              "units": {"pc1": "fraction of the full spectrum (tables show percent)",
                        "drift": "‖θ(window end) − θ(window start)‖ over the trunk",
                        "interference": "mean over the interference checkpoints of the mean cos(g_LM, g_probe)"},
              "table": rows, "reheat_table": reheat_rows, "p_ood_curves": bs.p_ood_curves(runs), **extra,
              "figures": []}
    figs = plot_all(result, out_dir)
    result["figures"] = [str(f) for f in figs]
    runio.atomic_write_json(out_dir / "beta_sweep_summary.json", result)
    md = markdown(result)
    runio.atomic_write_text(out_dir / "table_beta2.md", md)
    runio.atomic_write_text(out_dir / "table_beta2.csv", bs.csv_text(rows))
    if reheat_rows:
        runio.atomic_write_text(out_dir / "table_beta2_reheat.csv", reheat_csv(reheat_rows))
    print(md)
    print(f"wrote {out_dir / 'beta_sweep_summary.json'}, table_beta2.md, table_beta2.csv and {len(figs)} figures")


# ---------------------------------------------------------------------------- outputs
def per_run_curves(runs):
    """Update-alignment and interference details of each analysed run (what the figures draw)."""
    ua, inter = [], []
    for b, d in runs:
        path = Path(d) / "analysis" / "beta_metrics.json"
        if not path.exists():
            continue
        res = runio.read_json(path, "analysis file")
        u = res.get("update_alignment", {})
        ua.append({"beta2": b, "delta": u.get("delta"), "steps": u.get("steps", []), "abs_cos": u.get("abs_cos", []),
                   "signed_cos": u.get("signed_cos", [])})
        inter.append({"beta2": b, "points": [{k: pt.get(k) for k in ("target", "step", "mean_cos", "std_cos",
                                                                     "mean_abs_cos", "n_batches", "reason")}
                                             for pt in res.get("interference", {}).get("points", [])]})
    return {"update_alignment_curves": ua, "interference_points": inter}


def markdown(result) -> str:
    p = result["protocol"]
    rows = result["table"]
    text = [f"# AdamW β2 sweep ({result['preset']} preset, seed {result['seed']})", "",
            f"{p['steps']} steps per run; window [{p['window'][0]}, {p['window'][1]}] (row-normalised PC1, k95, "
            f"drift); |cos(u, v_b)| = mean |cos(θ(t) − θ(t − {p['delta']}), v_b)|; interference = "
            f"cos(g_LM, g_probe) at steps {p['interference_steps']}.", "",
            studies.markdown_table(bs.TABLE_HEADER, [bs.table_cells(r) for r in rows])]
    notes = []
    for r in rows:
        if r.get("diverged_reason"):
            notes.append(f"- β2 = {bs.beta2_label(r['beta2'])} diverged: {r['diverged_reason']}.")
        if r.get("window_partial"):
            notes.append(f"- † β2 = {bs.beta2_label(r['beta2'])}: {r['reasons'].get('pc1', 'partial window')}.")
        for k in ("pc1", "interference", "mean_abs_update_cos"):
            if r["reasons"].get(k) and not (k == "pc1" and r.get("window_partial")):
                value = "null" if r.get(k) is None else "value shown"
                notes.append(f"- β2 = {bs.beta2_label(r['beta2'])}, {k} ({value}): {r['reasons'][k]}.")
    if notes:
        text += ["Notes:", *dict.fromkeys(notes), ""]
    if result["reheat_table"]:
        text += ["## β2-ablation reheating", "",
                 "Fresh AdamW with the run's β2, λ doubled, warmup then cosine; G = max p_ood(t) − p_ood(t0); "
                 "the best LR has the largest G (\"any\" when all tie).", "",
                 studies.markdown_table(bs.REHEAT_HEADER, [bs.reheat_cells(e) for e in result["reheat_table"]]),
                 "All learning rates:", "",
                 studies.markdown_table(("β2", "Ckpt", "LR", "p0", "Peak p_ood", "Peak step", "G", "Final p_ood"),
                                   [[bs.beta2_label(e["beta2"]), str(e["ckpt"]), f"{r['lr']:g}",
                                     bs._fmt(r.get("p0"), ".3f"), bs._fmt(r.get("peak_p_ood"), ".3f"),
                                     bs._fmt(r.get("peak_step"), "d"),
                                     "—" if r.get("G") is None else f"{r['G']:+.3f}",
                                     bs._fmt(r.get("final_p_ood"), ".3f")]
                                    for e in result["reheat_table"] for r in e["lrs"]])]
    return "\n".join(text)


def reheat_csv(entries) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ("beta2", "ckpt", "ckpt_paper", "lr", "best", "p0", "peak_p_ood", "peak_step", "G", "final_p_ood",
            "state", "run_dir")
    w.writerow(cols)
    for e in entries:
        for r in e["lrs"]:
            cells = {**r, "beta2": e["beta2"], "ckpt": e["ckpt"], "ckpt_paper": e["ckpt_paper"],
                     "best": r["lr"] == e["best_lr"]}
            w.writerow(["" if cells.get(c) is None else cells[c] for c in cols])
    return buf.getvalue()


def save_png(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    runio.atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return path


def plot_all(result, out_dir: Path) -> list[Path]:
    from figures.style import figure
    rows = result["table"]
    x = list(range(len(rows)))
    labels = [bs.beta2_label(r["beta2"]) for r in rows]
    figs = []
    shaded = set()

    def vs_beta(a, key, scale=1.0, **kw):
        xs = [i for i, r in zip(x, rows) if r[key] is not None]
        a.plot(xs, [scale * rows[i][key] for i in xs], "o-", **kw)
        if id(a) not in shaded:
            shaded.add(id(a))
            for i, r in zip(x, rows):
                if r["state"] == "diverged":
                    a.axvspan(i - 0.4, i + 0.4, color="red", alpha=0.08)
        a.set_xticks(x, labels)
        a.set_xlabel("β2 (shaded: diverged)")

    fig, ax = figure(2, 2, width=4.6, height=3.3)
    w = result["protocol"]["window"]
    vs_beta(ax[0, 0], "pc1", 100, label="row-normalised")
    vs_beta(ax[0, 0], "pc1_raw", 100, label="raw")
    ax[0, 0].legend(fontsize=7)
    ax[0, 0].set(ylabel="PC1 (%)", title=f"PC1 of the window [{w[0]}, {w[1]}]")
    from matplotlib.ticker import MaxNLocator
    for a in (ax[0, 1], ax[1, 0]):
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    vs_beta(ax[0, 1], "k95")
    ax[0, 1].set(ylabel="k95", title="components for 95 % (row-normalised)")
    vs_beta(ax[1, 0], "k99")
    ax[1, 0].set(ylabel="k99", title="components for 99 % (row-normalised)")
    vs_beta(ax[1, 1], "drift")
    ax[1, 1].set(ylabel="‖θ(end) − θ(start)‖", title="window drift", yscale="log")
    figs.append(save_png(fig, out_dir / "beta_geometry.png"))

    fig, ax = figure(1, 2, width=4.8, height=3.4)
    vs_beta(ax[0, 0], "mean_abs_update_cos", label="all t")
    vs_beta(ax[0, 0], "mean_abs_update_cos_early", label=f"t <= {result['protocol']['early_end']}")
    ax[0, 0].legend(fontsize=7)
    ax[0, 0].set(ylabel="mean |cos(u, v_b)|", title="update alignment with the backbone")
    for c in result["update_alignment_curves"]:
        if c["steps"]:
            ax[0, 1].plot(c["steps"], c["abs_cos"], ".-", ms=3, label=f"β2 = {bs.beta2_label(c['beta2'])}")
    ax[0, 1].set(xlabel="step t", ylabel="|C(t)|", title=f"|cos(θ(t) − θ(t−Δ), v_b)|, Δ = {result['protocol']['delta']}")
    if result["update_alignment_curves"]:
        ax[0, 1].legend(fontsize=7)
    figs.append(save_png(fig, out_dir / "beta_update_alignment.png"))

    fig, ax = figure(1, 1, width=5.2, height=3.6)
    a = ax[0, 0]
    vs_beta(a, "interference", label="mean over checkpoints", c="k")
    for j, c in enumerate(result["interference_points"]):
        i = labels.index(bs.beta2_label(c["beta2"]))
        for k, pt in enumerate(c["points"]):
            if pt.get("mean_cos") is not None:
                a.errorbar(i + 0.1 * (k - 0.5), pt["mean_cos"], yerr=pt.get("std_cos") or 0, fmt="s", ms=4,
                           c=f"C{k}", capsize=3, label=f"step ≈ {pt['target']}" if j == 0 else None)
    a.axhline(0, c="gray", lw=0.8)
    a.legend(fontsize=7)
    a.set(ylabel="cos(g_LM, g_probe)", title="LM / probe gradient interference (trunk)")
    figs.append(save_png(fig, out_dir / "beta_interference.png"))

    fig, ax = figure(1, 1, width=6.0, height=3.8)
    for c in result["p_ood_curves"]:
        ax[0, 0].plot(c["steps"], c["p_ood"], label=f"β2 = {bs.beta2_label(c['beta2'])}")
    ax[0, 0].set(xlabel="step", ylabel="p_ood", title="OOD probe accuracy during training")
    ax[0, 0].legend(fontsize=7)
    figs.append(save_png(fig, out_dir / "beta_p_ood.png"))

    if result["reheat_table"]:
        groups = result["reheat_table"]
        fig, ax = figure(1, len(groups), width=4.0, height=3.4)
        for a, e in zip(ax[0], groups):
            for r in e["lrs"]:
                ms = [m for m in runio.read_metrics(Path(r["run_dir"])) if "step" in m]
                a.plot([m["step"] for m in ms], [m.get("p_ood") for m in ms], label=f"lr {r['lr']:g}")
            a.set(xlabel="reheating step", ylabel="p_ood", title=f"β2 = {bs.beta2_label(e['beta2'])}, ckpt {e['ckpt']}")
            a.legend(fontsize=7)
        figs.append(save_png(fig, out_dir / "beta_reheat.png"))
        result["reheat_curves"] = [
            {"beta2": e["beta2"], "ckpt": e["ckpt"], "lr": r["lr"],
             "steps": [m["step"] for m in runio.read_metrics(Path(r["run_dir"])) if "step" in m],
             "p_ood": [m.get("p_ood") for m in runio.read_metrics(Path(r["run_dir"])) if "step" in m]}
            for e in groups for r in e["lrs"]]
    return figs


if __name__ == "__main__":
    sys.exit(run_main(main))
