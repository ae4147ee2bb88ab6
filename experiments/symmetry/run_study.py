#!/usr/bin/env python
"""Symmetry-breaking study: optimizers (AdamW, SGD, ECD, SOAP, ECD-global) × {symmetric, random query bias} and the
control arms bQ + bV, zero-mean bQ and learned bQ (training/studies/symmetry_study.py's ARM_OPTIMIZERS: which
optimizer gets which arm by default; --every-pair trains every optimizer × arm selected).

Trains every run into STUDY/<optimizer>_<arm>, side by side on a CPU (--jobs; finished runs are skipped,
unfinished ones resumed exactly), then writes STUDY/analysis/symmetry_results.json (every number), STUDY/report.md (the
results table next to the headline numbers of evasilverstein/symmetry-breaking-files, and what this toolkit confirms or not) and
STUDY/analysis/curves.png. See training/studies/symmetry_study.py for the protocol.

Examples:
  python experiments/symmetry/run_study.py                          # CPU size, minutes on 2 cores
  python experiments/symmetry/run_study.py --optimizers ecd,adamw --arms sym,bq
  python experiments/symmetry/run_study.py --arms bq_learned --optimizers ecd,ecd_global --every-pair
  python experiments/symmetry/run_study.py --set mlp_act=prelu_random --out-dir runs/symmetry_cpu_s0_prelu
  python experiments/symmetry/run_study.py --size gpu --set device=cuda --set corpus_path=data/fineweb10B
"""
import sys
import time
from pathlib import Path

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.config import parse_override
from training.core.runio import atomic_write_text
from training.geometry.analysis_io import write_result
from training.studies import symmetry_study as ss
from training.studies.common import (
    RunJob,
    add_jobs_arg,
    executor_from_args,
    refuse_protocol_overrides,
    study_parser,
    train_runs,
)


def parse_args(argv=None):
    p = study_parser(__doc__, scale="size", scale_default="cpu",
                     scale_help="cpu (default; minutes on a CPU) | gpu (symmetry-breaking-files' 124M on FineWeb)", seed_default=0,
                     out_default="runs/symmetry_<size>_s<seed>")
    p.add_argument("--optimizers", default=",".join(ss.OPTIMIZERS), help=f"subset of {','.join(ss.OPTIMIZERS)}")
    plan = "; ".join(f"{a}: {','.join(o)}" for a, o in ss.ARM_OPTIMIZERS.items())
    p.add_argument("--arms", default=",".join(ss.ARMS),
                   help=f"subset of {','.join(ss.ARMS)} (each with the optimizers of the default plan: {plan})")
    p.add_argument("--every-pair", action="store_true",
                   help="train every selected optimizer × arm, not the default plan")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the runs already trained")
    add_jobs_arg(p)

    args = p.parse_args(argv)
    args.runner = executor_from_args(args)         # --jobs, or --executor slurm's jobs: refused here if inconsistent
    refuse_protocol_overrides((parse_override(i)[0] for i in args.set), ss.PROTOCOL_FIELDS, "symmetry",
                              {k: " (use training/pilot.py for a single run with other values)" for k in ss.PROTOCOL_FIELDS})
    return args


def main(argv=None) -> int:
    t_start = time.monotonic()
    args = parse_args(argv)
    opts = ss.parse_list(args.optimizers, ss.OPTIMIZERS, "optimizers")
    arms = ss.parse_list(args.arms, ss.ARMS, "arms")
    overrides = dict(parse_override(i) for i in args.set)
    overrides["progress"] = not args.no_progress
    cfgs = ss.run_configs(args.size, args.seed, opts, arms, overrides, every_pair=args.every_pair)
    root = Path(args.out_dir) if args.out_dir else Path("runs") / f"symmetry_{args.size}_s{args.seed}"
    print(f"symmetry study in {root}: size {args.size}, seed {args.seed}, runs {', '.join(cfgs)}", flush=True)
    if not args.analyse_only:
        train_runs([RunJob(name, cfg, root / name) for name, cfg in cfgs.items()], args.runner,
                   log=lambda msg: print(msg, flush=True))
    result = ss.analyse(root, cfgs, progress=not args.no_progress)
    wall = time.monotonic() - t_start
    result["wall_s_this_invocation"] = round(wall, 1)
    out = root / "analysis"
    path = write_result(out, "symmetry_results", result)
    plot(out, result)
    plot_alignment(out, result)
    plot_puzzles(out, result)
    note = " (analysis only)" if args.analyse_only else ""
    atomic_write_text(root / "report.md", ss.report_markdown(result, args.size, wall, note))
    for line in result["verdicts"]:
        print(line)
    for c in result["arm_claims"]:
        print(f"{c['claim']}: {c['verdict']}")
    print(f"wrote {path}, {root / 'report.md'} and {out}/curves.png, bq_alignment.png, logic_puzzles.png")
    return 0


def plot(out, result):
    fig, ax = figure(1, 3, width=4.2)
    colors = {"adamw": "tab:blue", "sgd": "tab:red", "ecd": "tab:green", "soap": "tab:purple", "ecd_global": "tab:olive"}
    styles = {"sym": "-", "bq": "--", "bq_bv": "-.", "bq_zero": ":", "bq_learned": (0, (5, 1, 1, 1, 1, 1))}
    for name, r in result["runs"].items():
        opt, arm = ss.split_name(name)
        style = styles[arm]
        c = r["curve"]
        if c["step"]:
            ax[0, 0].plot(c["step"], c["val_loss"], linestyle=style, color=colors.get(opt), label=name)
        s = r.get("symmetry") or {}
        if s.get("steps"):
            ax[0, 1].semilogy(s["steps"], [max(v, 1e-12) for v in s["qk_charge_rel"]], linestyle=style,
                              color=colors.get(opt))
        vc = r.get("velocity_charge") or {}
        if vc.get("steps"):
            ax[0, 2].semilogy(vc["steps"], [max(v, 1e-12) for v in vc["qk_layer_charge_rel"]], linestyle=style,
                              color=colors.get(opt), label=name)
    ax[0, 0].set(xlabel="step", ylabel="validation loss", title="loss (line style: arm; colour: optimizer)")
    ax[0, 1].set(xlabel="step", ylabel="relative QK charge (Δθ)", title="Noether charge from checkpoints")
    ax[0, 2].set(xlabel="step", ylabel="relative layer QK charge (velocity)", title="ECD: charge from its velocity")
    for a in ax[0]:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=6)
    save_figure(fig, out, "curves")


def plot_alignment(out, result):
    """Per-head mean cos(W_K e, <bQ>) of every run (rows) and layer·head (columns), |<bQ>| per layer, and
    layer 0's positional alignment."""
    al = {n: r["bq_alignment"]["layers"] for n, r in result["runs"].items()
          if (r.get("bq_alignment") or {}).get("layers")}
    if not al:
        return
    names = list(al)
    fig, ax = figure(1, 3, width=4.5)
    grid = [[h for l in al[n] for h in l["token_cos_head_mean"]] for n in names]
    im = ax[0, 0].imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    n_head = len(al[names[0]][0]["token_cos_head_mean"])
    ax[0, 0].set(yticks=range(len(names)), xlabel=f"layer x {n_head} heads", title="per-head mean token cos with <bQ>")
    ax[0, 0].set_yticklabels(names, fontsize=6)
    fig.colorbar(im, ax=ax[0, 0])
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ls = al[n]
        ax[0, 1].bar([l["layer"] + i * width for l in ls], [l["bq_norm"] for l in ls], width, label=n)
        ax[0, 2].plot(ls[0]["position_cos"], ":" if n.endswith("_sym") else "-", label=n)
    n_layer = len(al[names[0]])
    ax[0, 1].set(xlabel="layer", ylabel="|<bQ>|", title="|<bQ>| per layer (sym: a random draw)",
                 xticks=[L + 0.4 - width / 2 for L in range(n_layer)], xticklabels=[str(L) for L in range(n_layer)])
    ax[0, 2].set(xlabel="position", ylabel="cos(W_K p, <bQ>)", title="layer 0 positional alignment")
    ax[0, 2].legend(fontsize=5)
    save_figure(fig, out, "bq_alignment")


def plot_puzzles(out, result):
    runs = {n: r["logic_puzzles"] for n, r in result["runs"].items() if "tasks" in (r.get("logic_puzzles") or {})}
    if not runs:
        return
    tasks = list(next(iter(runs.values()))["tasks"])
    fig, ax = figure(1, 1, width=9)
    width = 0.8 / len(runs)
    for i, (n, r) in enumerate(runs.items()):
        acc = [r["tasks"][t]["accuracy"] for t in tasks]
        lo = [a - r["tasks"][t]["ci95"][0] for a, t in zip(acc, tasks)]
        hi = [r["tasks"][t]["ci95"][1] - a for a, t in zip(acc, tasks)]
        ax[0, 0].bar([k + i * width for k in range(len(tasks))], acc, width, yerr=[lo, hi], label=n,
                     hatch=None if n.endswith("_sym") else "//", error_kw={"lw": 0.5})
    first = next(iter(runs.values()))
    for k, t in enumerate(tasks):
        ax[0, 0].hlines(first["tasks"][t]["chance"], k - 0.1, k + 0.9, colors="k", linestyles="--", lw=0.8)
    ax[0, 0].set(xticks=[k + 0.4 for k in range(len(tasks))], ylabel="accuracy (Wilson 95 %)", ylim=(0, 1),
                 title="logic puzzles (dashed: chance)")
    ax[0, 0].set_xticklabels(tasks, fontsize=7)
    ax[0, 0].legend(fontsize=5, ncol=2)
    save_figure(fig, out, "logic_puzzles")


if __name__ == "__main__":
    sys.exit(run_main(main))
