"""One run of the β2 sweep: window geometry, update alignment with the backbone, LM/probe gradient interference.

Measured (paper steps, scaled to the run's preset; training/studies/beta_sweep.py has the definitions):
- window [600, 2000]: uncentered PCA of θ(t) − θ(600), row-normalised PC1, k95, k99 and raw PC1; the
  drift ‖θ(2000) − θ(600)‖;
- backbone v_b = raw PC1 of all checkpoints from θ(0); update alignment C(t) = cos(θ(t) − θ(t − 200), v_b)
  wherever both checkpoints exist; mean |C| over all t and over t <= 2000;
- interference cos(g_LM, g_probe) on the trunk at the checkpoints nearest 1600 and 3000, over --n-batches
  seeded batches (the LM and the probe gradient of a batch share its text windows).
A diverged run is analysed on the checkpoints it wrote: non-finite checkpoints are left out, a window
or an interference checkpoint beyond its last usable checkpoint is measured on what exists (flagged, with
a note), and every number that cannot be computed is null with its reason (summary_reasons).

Output: RUN/analysis/beta_metrics.json and .png.

Example:  python analysis/beta_sweep/beta_summary.py --run-dir runs/beta_sweep_quick_s42/b2_0.95
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.studies.beta_sweep import DEFAULT_INTERFERENCE_BATCHES, analyse_run, beta2_label


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--n-batches", type=int, default=DEFAULT_INTERFERENCE_BATCHES,
                   help=f"M, mini-batches per interference checkpoint (default {DEFAULT_INTERFERENCE_BATCHES}, "
                        "as skydancerosel/mini_gpt)")
    p.add_argument("--batch-size", type=int,
                   help="sequences per mini-batch (default: the run's micro-batch; paper 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    args = p.parse_args(argv)
    if args.n_batches < 1:
        raise UserError(f"--n-batches must be at least 1 (got {args.n_batches})")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {args.batch_size})")
    run = open_run(args.run_dir, args.out_dir)
    device = resolve_device(args.device)
    result = analyse_run(run, n_batches=args.n_batches, seed=args.seed, batch_size=args.batch_size,
                         device=device, progress=not args.no_progress)
    path = write_result(run, "beta_metrics", result)
    plot(run, result)
    s, o = result["summary"], result["outcome"]

    def f(v, spec):
        return "null" if v is None else format(v, spec)
    print(f"β2 = {beta2_label(result['beta2'])}: {o['state']}"
          + (f" ({o['diverged_reason']})" if o.get("diverged_reason") else "")
          + f"; final val {f(o.get('final_val_loss'), '.4f')}, best p_ood {f(o.get('best_p_ood'), '.3f')}")
    print(f"window {result['protocol']['window']}: PC1 {f(None if s['pc1'] is None else 100 * s['pc1'], '.1f')}% "
          f"(raw {f(None if s['pc1_raw'] is None else 100 * s['pc1_raw'], '.1f')}%), k95 {f(s['k95'], 'd')}, "
          f"k99 {f(s['k99'], 'd')}, drift {f(s['drift'], '.4g')}")
    print(f"mean |cos(u, v_b)| {f(s['mean_abs_update_cos'], '.3f')} (t <= {result['protocol']['early_end']}: "
          f"{f(s['mean_abs_update_cos_early'], '.3f')}); interference {f(s['interference'], '.4f')}")
    for k, why in result["summary_reasons"].items():
        print(f"  {k}: {why}")
    print(f"wrote {path}")
    return 0


def plot(run, result):
    fig, ax = figure(1, 3, width=4.4, height=3.4)
    b = beta2_label(result["beta2"])
    ms = [m for m in run.metrics() if "step" in m]
    a = ax[0, 0]
    a.plot([m["step"] for m in ms], [m.get("p_ood") for m in ms], label="p_ood")
    a.plot([m["step"] for m in ms], [m.get("p_in") for m in ms], label="p_in")
    a.set(xlabel="step", ylabel="probe accuracy", title=f"β2 = {b}: probe ({result['outcome']['state']})")
    a.legend(fontsize=7)
    ua = result["update_alignment"]
    a = ax[0, 1]
    if ua.get("steps"):
        a.plot(ua["steps"], ua["abs_cos"], "o-", ms=3, label=f"|C(t)|, Δ = {ua['delta']}")
        if ua.get("mean_abs_cos") is not None:
            a.axhline(ua["mean_abs_cos"], ls="--", c="gray", label=f"mean {ua['mean_abs_cos']:.3f}")
        a.legend(fontsize=7)
    else:
        a.text(0.5, 0.5, ua.get("reason", "no data"), ha="center", va="center", wrap=True, fontsize=7,
               transform=a.transAxes)
    a.set(xlabel="step t", ylabel="|cos(θ(t) − θ(t−Δ), v_b)|", title="update alignment with the backbone")
    w = result["window"]
    a = ax[0, 2]
    if "reason" not in w:
        k = range(1, len(w["explained_variance_ratio"]) + 1)
        a.semilogy(k, w["explained_variance_ratio"], "o-", ms=3, label="row-normalised")
        a.semilogy(k, w["explained_variance_ratio_raw"], "s-", ms=3, label="raw")
        a.legend(fontsize=7)
        a.set(title=f"window [{w['steps'][0]}, {w['steps'][-1]}]: PC1 {100 * w['pc1']:.1f}%, k95 {w['k95']}")
    else:
        a.text(0.5, 0.5, w["reason"], ha="center", va="center", wrap=True, fontsize=7, transform=a.transAxes)
        a.set(title="window geometry")
    from matplotlib.ticker import MaxNLocator
    a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a.set(xlabel="component", ylabel="explained fraction")
    save_figure(fig, run, "beta_metrics")


if __name__ == "__main__":
    sys.exit(run_main(main))
