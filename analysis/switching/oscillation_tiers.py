"""Oscillation tiers: each switch pair's amplitude δ in units of the evaluation noise σ_eval, beside noise's count.

δ = p_ood(peak) − p_ood(trough) of each pair of RUN/oscillation_manifest.json (detect_oscillations.py), divided
by σ_eval, the mean bootstrap std of p_ood (RUN/analysis/eval_noise.json). Tiers (the cut-offs of
skydancerosel/mini_gpt's detect_oscillations.py, K_A = 3 and K_B = 2): A δ ≥ 3σ, B 2σ ≤ δ < 3σ, C δ < 2σ.
Beside the counts, the null: the number of peaks that a white-noise series of std σ_eval and the same length
throws up with prominence ≥ 2σ and ≥ 3σ (Monte Carlo, training/geometry/switching.py expected_false_peaks:
e.g. 2.9 and 0.95 for 30 points), and the calibrated noise-level amplitude k*·σ. A tier-A or B count at or
below those numbers is what noise alone gives.

Without eval_noise.json, or without switch pairs, the result is a recorded "not applicable" with the reason
(exit 0). The figure is the delta-significance plot of this run (figures/plot_delta_significance.py draws it
across seeds).

Output: RUN/analysis/oscillation_tiers.json and delta_significance.png.

Example:  python analysis/switching/oscillation_tiers.py --run-dir runs/quick
"""
import sys

from figures.plot_delta_significance import draw
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import p_ood_series, resolve_pairs
from training.geometry.switching import eval_noise_std, oscillation_tiers


def main() -> int:
    p = analysis_parser(__doc__)
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    sigma, source = eval_noise_std(run.dir)
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood_series(run.metrics()), None)
    base = {"run_dir": str(run.dir), "sigma_source": source, "pairs_source": info["source"]}
    if sigma is None:
        why = f"no evaluation noise σ_eval: {source}"
    elif info["source"] == "none":
        why = info["note"]
    else:
        why = None
    if why is not None:
        path = write_result(run, "oscillation_tiers", {**base, "applicable": False, "reason": why})
        print(f"not applicable: {why}\nwrote {path}")
        return 0
    p_ood = p_ood_series(run.metrics())
    n_points = len([s for s in run.steps if s in p_ood])      # the checkpointed evaluations detection used
    t = oscillation_tiers(pairs, sigma, n_points)
    result = {**base, "applicable": bool(pairs), **t}
    if not pairs:
        result["reason"] = info.get("note", "no switch pairs")
    path = write_result(run, "oscillation_tiers", result)
    draw([{"label": f"seed {run.cfg.seed}", **t}], run.analysis_dir / "delta_significance.png",
         formats=("png",))
    nl = t["null"]
    print(f"sigma_eval {sigma:.4f}; {len(pairs)} pair(s): tier A {t['counts']['A']}, B {t['counts']['B']}, "
          f"C {t['counts']['C']}; white noise of {n_points} points: {nl['expected_noise_peaks_2sigma']:.2f} peaks "
          f">= 2 sigma, {nl['expected_noise_peaks_3sigma']:.2f} >= 3 sigma")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
