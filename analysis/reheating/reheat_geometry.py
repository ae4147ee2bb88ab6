"""Reheating runs of a run: re-entry into the probe basin, and where they move relative to the ORIGINAL backbone.

For every finished reheating run under RUN/reheat/ (made by experiments/reheating/reheat.py; --from-step
selects those of one start checkpoint): the re-entry numbers p0, peak p_ood and its step, the first step
with p_ood >= 0.60, the final p_ood and the gain G = max p_ood − p0 (the tables of arXiv 2602.23696 Table 11 and
mini_gpt README finding 5); and, with v_b the raw PC1 of the original run's drifts θ_o(t) − θ_o(0) (sign with
a(t_last) > 0), the backbone coordinate a(t) = ⟨θ(t) − θ_o(0), v_b⟩ and the residual ‖r(t)‖ along the
original run and along each reheating run, how far reheating moved (‖θ(t) − θ(0)‖ of the reheating run)
and the share of that displacement along v_b, with the changes Δa, Δ‖r‖ and their relative sizes. All
inner products come from one float64 Gram matrix streamed over the union of the checkpoint files
(cached in RUN/analysis/gram/reheating_trunk.npz, keyed by the files' sizes and times).

Output: RUN/analysis/reheating.json and reheating.png.

Example:  python analysis/reheating/reheat_geometry.py --run-dir runs/quick
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.studies import reheating


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--from-step", type=int, help="only the reheating runs started from this checkpoint step")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    if args.from_step is not None and args.from_step not in run.steps:
        raise UserError(f"{run.dir} has no checkpoint at step {args.from_step}")
    runs, skipped = reheating.find_reheats(run.dir, args.from_step)
    for s in skipped:
        print(f"skipped {s['dir']}: {s['reason']}", file=sys.stderr)
    result = {"run_dir": str(run.dir), "from_step": args.from_step,
              **reheating.geometry(run.dir, run.cfg, runs, run.analysis_dir / "gram" / "reheating_trunk.npz",
                                   progress=not args.no_progress),
              "skipped": skipped}
    bad = [e["name"] for e in result["runs"] if e["start_check"]["consistent"] is False]
    if bad:
        e = next(e for e in result["runs"] if e["name"] == bad[0])["start_check"]
        print(f"warning: the step-0 evaluation of {len(bad)} reheating run(s) differs from the original's at the start "
              f"step (e.g. val_loss {e['original_val_loss']:.4f} vs {e['reheat_val_loss']:.4f}, p_ood "
              f"{e['original_p_ood']:.3f} vs {e['reheat_p_ood']:.3f}): the original was evaluated differently (an "
              "older version of the code?); its curve and the reheating curves are not on one scale", file=sys.stderr)
    path = write_result(run, "reheating", result)
    plot(run, result)
    print_tables(result)
    print(result["reading"])
    print(f"wrote {path}")
    return 0


def _fmt(x, spec=".3f"):
    return "-" if x is None else format(x, spec)


def print_tables(result: dict) -> None:
    print(f"backbone: raw PC1 {100 * result['backbone']['pc1']:.1f}% of the original run's drift "
          f"({result['backbone']['n_checkpoints']} checkpoints)")
    print("reheating (as arXiv 2602.23696 Table 11)")
    print(f"  {'lr':>9} {'moments':>8} {'from':>6} {'peak p_ood':>10} {'at step':>8} {'first>=0.60':>11} {'final':>6}")
    for r in result["table"]:
        print(f"  {r['lr']:9.3g} {'saved' if r['moments'] else 'fresh':>8} {r['from_step']:6d} {r['peak_p_ood']:10.3f} "
              f"{r['peak_step']:8d} {_fmt(r['first_step_at_threshold'], 'd'):>11} {r['final_p_ood']:6.3f}")
    print("re-entry gain (as mini_gpt README finding 5)")
    print(f"  {'lr':>9} {'moments':>8} {'p0':>6} {'peak':>6} {'G':>7}")
    for r in result["table"]:
        print(f"  {r['lr']:9.3g} {'saved' if r['moments'] else 'fresh':>8} {r['p0']:6.3f} {r['peak_p_ood']:6.3f} "
              f"{r['G']:+7.3f}")
    print("backbone coordinate and residual during reheating")
    print(f"  {'lr':>9} {'moments':>8} {'a(0)':>10} {'Δa/a(0)':>9} {'‖r(0)‖':>10} {'Δ‖r‖/‖r(0)‖':>12} "
          f"{'moved':>9} {'on v_b':>7}")
    for e in result["runs"]:
        print(f"  {e['lr']:9.3g} {'saved' if e['moments'] else 'fresh':>8} {e['a0']:10.4g} "
              f"{_fmt(e['rel_delta_a'], '+9.2%')} {e['r0']:10.4g} {_fmt(e['rel_delta_r'], '+12.2%')} "
              f"{e['moved_final']:9.4g} {e['backbone_fraction_of_move']:7.2%}")


def plot(run, result: dict) -> None:
    import matplotlib.pyplot as plt
    fig, ax = figure(1, 3, width=5.4, height=3.9)
    o = result["original"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    last = o["last_step"]
    end = max([last] + [e["from_step"] + e["ckpt_steps"][-1] for e in result["runs"]])

    # panel 1: the paper's Fig. 4 -- original p_ood, reheating curves appended after their start step
    a0 = ax[0, 0]
    a0.axvspan(0, last, color="0.92", zorder=0, label="original training")
    a0.plot(o["eval_steps"], o["eval_p_ood"], color="0.35", lw=1.2, label="original p_ood")
    for i, e in enumerate(result["runs"]):
        c = colors[i % len(colors)]
        t = [e["from_step"] + s for s in e["steps"]]
        label = f"lr {e['lr']:g}{' (saved moments)' if e['moments'] else ''}"
        a0.plot(t, e["p_ood"], color=c, lw=1.4, ls="--" if e["moments"] else "-", label=label)
        r = e["reentry"]
        a0.plot(e["from_step"] + r["peak_step"], r["peak_p_ood"], "o", color=c, ms=6, mec="k", mew=0.6)
    a0.axhline(0.6, color="k", ls=":", lw=0.8, label="0.60")
    a0.set(xlabel="step (reheating offset by its start step)", ylabel="p_ood", xlim=(0, end),
           title="probe re-entry (peaks marked)")
    a0.legend(fontsize=7, loc="best")

    # panel 2: a(t) and ‖r(t)‖ along the original run, continued along each reheating run
    a1 = ax[0, 1]
    a1.axvspan(0, last, color="0.92", zorder=0)
    a1.plot(o["ckpt_steps"], o["a"], color="0.2", lw=1.4, label="a(t) original")
    a1.plot(o["ckpt_steps"], o["r_norm"], color="0.2", lw=1.4, ls="--", label="‖r(t)‖ original")
    for i, e in enumerate(result["runs"]):
        c = colors[i % len(colors)]
        t = [e["from_step"] + s for s in e["ckpt_steps"]]
        a1.plot(t, e["a"], color=c, lw=1.4)
        a1.plot(t, e["r_norm"], color=c, lw=1.4, ls="--")
    a1.set(xlabel="step (reheating offset by its start step)", ylabel="parameter-space norm", xlim=(0, end),
           title=f"a(t) solid, ‖r(t)‖ dashed; original v_b (PC1 {100 * result['backbone']['pc1']:.0f}%)")
    a1.legend(fontsize=7, loc="best")

    # panel 3: the changes during reheating, relative to the start
    a2 = ax[0, 2]
    for i, e in enumerate(result["runs"]):
        c = colors[i % len(colors)]
        s = e["ckpt_steps"]
        a2.plot(s, [100 * (x - e["a0"]) / abs(e["a0"]) if e["a0"] else 0.0 for x in e["a"]], color=c, lw=1.4,
                label=f"lr {e['lr']:g}{' (saved moments)' if e['moments'] else ''}")
        a2.plot(s, [100 * (x - e["r0"]) / e["r0"] if e["r0"] else 0.0 for x in e["r_norm"]], color=c, lw=1.4, ls="--")
    a2.axhline(0, color="k", lw=0.6)
    a2.set(xlabel="reheating step", ylabel="change relative to the start value (%)",
           title="(a(t) − a(0))/a(0) solid, (‖r(t)‖ − ‖r(0)‖)/‖r(0)‖ dashed")
    a2.legend(fontsize=7, loc="best")
    save_figure(fig, run, "reheating")


if __name__ == "__main__":
    sys.exit(run_main(main))
