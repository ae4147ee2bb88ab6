"""Peaks, troughs and switch pairs of the OOD probe accuracy p_ood(t): the oscillation manifest.

Peaks and troughs are the local maxima and minima of the evaluated p_ood series whose prominence
(scipy.signal.find_peaks on p and on −p) is at least h. Only evaluations at checkpointed steps are
used, since a switching direction needs the weights at both ends; other evaluation steps are skipped
and listed. h is, in order of precedence: --prominence; --noise-k × the mean bootstrap std of p_ood
from RUN/analysis/eval_noise.json (analysis/basin/eval_noise.py), when that file exists and the std
is not 0; the fixed default 0.03. Each peak is paired with the nearest trough after it (before the
next peak) and the nearest trough before it (after the previous peak). Zero pairs is a valid result.

Output: RUN/oscillation_manifest.json and RUN/analysis/detect_oscillations.png.

Example:  python analysis/switching/detect_oscillations.py --run-dir runs/quick
"""
import sys

from figures.style import figure, save_figure
from training.core import runio
from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run
from training.geometry.switching import (
    DEFAULT_PROMINENCE,
    MANIFEST,
    NOISE_MULTIPLIER,
    PAIRING_RULE,
    detect_oscillations,
    manifest_dict,
    noise_prominence,
)


def choose_prominence(args, run) -> tuple[float, dict]:
    if args.prominence is not None:
        if not args.prominence > 0:
            raise UserError(f"--prominence must be > 0 (got {args.prominence})")
        return args.prominence, {"prominence_source": "--prominence"}
    path = runio.find_analysis_input(run.dir, "eval_noise.json")
    if path.exists():
        noise = runio.read_json(path, "eval-noise file")
        try:
            std = float(noise["mean_std"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path} has no mean_std; run analysis/basin/eval_noise.py again") from None
        h = noise_prominence(std, args.noise_k)
        levels = [float(c["p_ood"]) for c in noise.get("checkpoints", []) if c.get("p_ood") is not None]
        info = {"noise_std": std, "noise_k": args.noise_k, "noise_file": str(path),
                "noise_steps": [c.get("step") for c in noise.get("checkpoints", [])], "noise_p_ood": levels}
        if levels and all(min(q, 1 - q) < 0.1 for q in levels):
            info["warning"] = ("the eval noise was measured where p_ood is near 0 or 1, where it is smallest; it "
                               "underestimates the noise at intermediate p_ood (binomial: sqrt(p(1-p)/n)); consider "
                               "eval_noise.py --steps at intermediate p_ood or --prominence")
        if h is not None:
            return h, {"prominence_source": f"{args.noise_k:g} x mean bootstrap std of p_ood (eval_noise.json)", **info}
        return DEFAULT_PROMINENCE, {"prominence_source": "fixed default (the eval-noise std is 0: p_ood is 0 or 1 "
                                                         "at the measured checkpoints)", **info}
    return DEFAULT_PROMINENCE, {"prominence_source": "fixed default (no analysis/eval_noise.json)"}


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--prominence", type=float,
                   help="prominence threshold h on p_ood (overrides the noise-based default)")
    p.add_argument("--noise-k", type=float, default=NOISE_MULTIPLIER,
                   help=f"h = NOISE_K x mean bootstrap std from eval_noise.json (default {NOISE_MULTIPLIER:g})")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    records = [r for r in run.metrics() if r.get("p_ood") is not None and "step" in r]
    if not records:
        raise UserError(f"{run.dir}/metrics.jsonl has no evaluation with p_ood; train (or resume) the run first")
    series = {int(r["step"]): float(r["p_ood"]) for r in records}     # a later record of a step wins
    have = set(run.steps)
    steps = [s for s in sorted(series) if s in have]
    skipped = [s for s in sorted(series) if s not in have]
    p_ood = [series[s] for s in steps]
    h, source = choose_prominence(args, run)
    osc = detect_oscillations(steps, p_ood, h)
    settings = {"metric": "p_ood", **source, "pairing_rule": PAIRING_RULE, "n_eval_points": len(series),
                "n_checkpointed_points": len(steps), "skipped_eval_steps_without_checkpoint": skipped,
                "run_state": run.status.get("state"), "seed": args.seed}
    manifest = {**manifest_dict(osc, settings), "run_state": run.state}
    run.warn_if_unfinished()
    path = runio.run_output(run.dir, MANIFEST)
    runio.atomic_write_json(path, manifest)

    fig, ax = figure(1, 1, width=7.0)
    a = ax[0, 0]
    a.plot(sorted(series), [series[s] for s in sorted(series)], c="0.75", lw=1, label="all evaluations")
    a.plot(steps, p_ood, ".-", c="C0", lw=1, ms=3, label="checkpointed evaluations")
    a.plot(osc.peaks, [series[s] for s in osc.peaks], "^", c="C3", label="peaks")
    a.plot(osc.troughs, [series[s] for s in osc.troughs], "v", c="C2", label="troughs")
    for q in osc.pairs:
        a.plot([q.peak_step, q.trough_step], [q.peak_p_ood, q.trough_p_ood], c="C1", lw=2, alpha=0.6)
    a.set(xlabel="step", ylabel="p_ood",
          title=f"oscillations of p_ood (prominence h = {h:.3g}, {len(osc.pairs)} pairs)")
    a.legend(fontsize=7)
    save_figure(fig, run, "detect_oscillations")

    print(f"prominence h = {h:.4g} ({source['prominence_source']})")
    if "warning" in source:
        print(f"warning: {source['warning']}")
    print(f"{len(steps)} of {len(series)} evaluations are at checkpoints"
          + (f"; skipped {len(skipped)} eval step(s) without a checkpoint: {skipped[:10]}"
             + (" ..." if len(skipped) > 10 else "") if skipped else ""))
    print(f"peaks at {osc.peaks}, troughs at {osc.troughs}")
    if osc.pairs:
        for q in osc.pairs:
            print(f"  pair {q.kind:4s} peak {q.peak_step} ({q.peak_p_ood:.3f}) / trough {q.trough_step} "
                  f"({q.trough_p_ood:.3f}): amplitude {q.amplitude:.3f}")
    else:
        print("no switch pairs: p_ood shows no oscillation above the threshold (an empty manifest is written)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
