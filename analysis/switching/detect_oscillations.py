"""Peaks, troughs and switch pairs of the OOD probe accuracy p_ood(t): the oscillation manifest.

Peaks and troughs are the local maxima and minima of the evaluated p_ood series whose prominence
(scipy.signal.find_peaks on p and on −p) is at least h. Only evaluations at checkpointed steps are
used, since a switching direction needs the weights at both ends; other evaluation steps are skipped
and listed. Each peak is paired with the nearest trough after it (before the next peak) and the
nearest trough before it (after the previous peak). Zero pairs is a valid result.

The threshold h, in order of precedence:
  1. --prominence H: h = H, as given;
  2. with a noise estimate σ = the mean bootstrap std of p_ood in RUN/analysis/eval_noise.json
     (analysis/basin/eval_noise.py), when the file exists and σ > 0:
     --noise-k K: h = K·σ; by default h = k*·σ, where k* is the smallest multiplier (2, 2.25, …, 8)
     at which n points of pure white noise of std σ give on average at most --false-peak-target
     (default 0.2) peaks, n the number of checkpointed evaluations. A fixed multiple such as 2σ is
     no fixed error rate: it lets through about 2.9 noise peaks per 30-point series and 5.2 per 50;
  3. without a noise estimate: the fixed default 0.03, which is not calibrated against noise
     (the manifest says so in threshold_rule).

With σ known the manifest also records noise_multiplier (h/σ), expected_false_peaks (white-noise
peaks per series expected at h for this length), noise_level_amplitude (k*·σ), per pair
at_noise_level (its amplitude peak − trough is below k*·σ), and n_pairs_above_noise, the number of
pairs whose amplitude reaches k*·σ: the count to use for "any oscillation above noise".

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
    FALSE_PEAK_TARGET,
    MANIFEST,
    PAIRING_RULE,
    detect_oscillations,
    load_eval_noise,
    manifest_dict,
)


def noise_estimate(args, run) -> tuple[float | None, dict]:
    """σ of p_ood from RUN/analysis/eval_noise.json (None when the file is missing or σ is 0) and what was read."""
    path, noise, std = load_eval_noise(run.dir)
    if noise is None:
        return None, {"noise_note": "no analysis/eval_noise.json"}
    levels = [float(c["p_ood"]) for c in noise.get("checkpoints", []) if c.get("p_ood") is not None]
    info = {"noise_std": std, "noise_file": str(path),
            "noise_steps": [c.get("step") for c in noise.get("checkpoints", [])], "noise_p_ood": levels}
    if levels and all(min(q, 1 - q) < 0.1 for q in levels):
        info["warning"] = ("the eval noise was measured where p_ood is near 0 or 1, where it is smallest; it "
                           "underestimates the noise at intermediate p_ood (binomial: sqrt(p(1-p)/n)); consider "
                           "eval_noise.py --steps at intermediate p_ood or --prominence")
    if not std > 0:
        info["noise_note"] = "the eval-noise std is 0 (p_ood is 0 or 1 at the measured checkpoints)"
        return None, info
    return std, info


def describe(osc, args, info) -> str:
    t = osc.threshold
    if t.rule == "explicit prominence":
        return "--prominence"
    if t.rule == "explicit multiplier":
        return f"--noise-k {args.noise_k:g} x mean bootstrap std of p_ood (eval_noise.json)"
    if t.rule == "calibrated":
        return (f"calibrated: {t.calibrated_multiplier:g} x mean bootstrap std of p_ood (eval_noise.json), the "
                f"smallest multiplier with <= {t.false_peak_target:g} expected white-noise peaks in "
                f"{t.n_points} points")
    why = info.get("noise_note", "no noise estimate")
    return f"fixed default {DEFAULT_PROMINENCE:g}, not calibrated against noise ({why})"


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--prominence", type=float,
                   help="prominence threshold h on p_ood, used as given (overrides the noise-based default)")
    p.add_argument("--noise-k", type=float,
                   help="h = NOISE_K x mean bootstrap std from eval_noise.json, a fixed multiplier instead of the "
                        "calibrated one (a fixed multiple gives more noise peaks on longer series)")
    p.add_argument("--false-peak-target", type=float, default=FALSE_PEAK_TARGET,
                   help="expected white-noise peaks per series that the calibrated multiplier allows, and that "
                        f"defines at_noise_level (default {FALSE_PEAK_TARGET:g})")
    args = p.parse_args()
    if args.prominence is not None and not args.prominence > 0:
        raise UserError(f"--prominence must be > 0 (got {args.prominence})")
    if args.noise_k is not None and not args.noise_k > 0:
        raise UserError(f"--noise-k must be > 0 (got {args.noise_k})")
    if not args.false_peak_target > 0:
        raise UserError(f"--false-peak-target must be > 0 (got {args.false_peak_target})")
    run = open_run(args.run_dir, args.out_dir)
    records = [r for r in run.metrics() if r.get("p_ood") is not None and "step" in r]
    if not records:
        raise UserError(f"{run.dir}/metrics.jsonl has no evaluation with p_ood; train (or resume) the run first")
    series = {int(r["step"]): float(r["p_ood"]) for r in records}     # a later record of a step wins
    have = set(run.steps)
    steps = [s for s in sorted(series) if s in have]
    skipped = [s for s in sorted(series) if s not in have]
    p_ood = [series[s] for s in steps]
    sigma, info = noise_estimate(args, run)
    if args.noise_k is not None and sigma is None and args.prominence is None:
        raise UserError(f"--noise-k needs a noise estimate (> 0) in analysis/eval_noise.json ({info['noise_note']}); "
                        "run analysis/basin/eval_noise.py or give --prominence")
    osc = detect_oscillations(steps, p_ood, args.prominence, noise_std=sigma,
                              noise_multiplier=None if args.prominence is not None else args.noise_k,
                              target=args.false_peak_target)
    h = osc.prominence
    source = {"prominence_source": describe(osc, args, info), "noise_k": args.noise_k, **info}
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
          title=f"oscillations of p_ood (prominence h = {h:.3g}"
                + (f" = {osc.threshold.noise_multiplier:.3g} σ" if osc.threshold.noise_std is not None else ", no σ")
                + f", {len(osc.pairs)} pairs)")
    a.legend(fontsize=7)
    save_figure(fig, run, "detect_oscillations")

    print(f"prominence h = {h:.4g} ({source['prominence_source']})")
    t = osc.threshold
    if t.noise_std is not None:
        print(f"noise: sigma = {t.noise_std:.4g}, h = {t.noise_multiplier:.3g} sigma; expected white-noise peaks at h "
              f"in {t.n_points} points: {t.expected_false_peaks:.3g}; noise-level amplitude "
              f"{t.calibrated_multiplier:g} sigma = {t.noise_level_amplitude:.4g}")
    if "warning" in source:
        print(f"warning: {source['warning']}")
    print(f"{len(steps)} of {len(series)} evaluations are at checkpoints"
          + (f"; skipped {len(skipped)} eval step(s) without a checkpoint: {skipped[:10]}"
             + (" ..." if len(skipped) > 10 else "") if skipped else ""))
    print(f"peaks at {osc.peaks}, troughs at {osc.troughs}")
    if osc.pairs:
        for q in osc.pairs:
            print(f"  pair {q.kind:4s} peak {q.peak_step} ({q.peak_p_ood:.3f}) / trough {q.trough_step} "
                  f"({q.trough_p_ood:.3f}): amplitude {q.amplitude:.3f}"
                  + (" (at noise level)" if q.at_noise_level else ""))
        if osc.n_pairs_above_noise is not None:
            print(f"{osc.n_pairs_above_noise} of {len(osc.pairs)} pair(s) above the noise-level amplitude")
    else:
        print("no switch pairs: p_ood shows no oscillation above the threshold (an empty manifest is written)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
