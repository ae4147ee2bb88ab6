#!/usr/bin/env python
"""The empirical-Fisher spectrum at the peaks against the troughs of the switch pairs, paired, with its noise.

At the peak and the trough of each of the --max-pairs largest-amplitude pairs (RUN/oscillation_manifest.json or
--pairs), M seeded mini-batch trunk gradients give the non-zero spectrum of the empirical Fisher (as
fisher_analysis.py: training/geometry/fisher.py fisher_spectrum; the training loss with the run's λ at that
step). Per checkpoint: λ_1, the trace, the top eigenvalues, and the resampling noise of ln λ_1 and ln trace
(--n-boot resamples of the M gradients with replacement). Per pair: d = ln(peak/trough) for λ_1 and the trace,
its noise se = sqrt(sd_peak² + sd_trough²) and z = d/se; over the pairs the mean d and its standard error. The
null is d = 0 (the same curvature at both ends, up to mini-batch noise): |z| < 2 is no difference. Note that
a peak and a trough also differ in λ when the pair straddles the λ switch (recorded per checkpoint).

A run without switch pairs gets a recorded "not applicable" with the reason (exit 0).

Output: RUN/analysis/fisher_peaks.json and fisher_peaks.png.

Example:  python analysis/fisher/fisher_peaks.py --run-dir runs/quick --max-pairs 3
"""
import math
import sys

import numpy as np
from tqdm import tqdm

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import lambda_at
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import p_ood_series, resolve_pairs
from training.geometry.fisher import fisher_spectrum, gradient_gram, peak_trough_fisher, spectrum_bootstrap
from training.geometry.gradients import PARTS, minibatch_gradients


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--pairs", help="switch pairs PEAK:TROUGH,... (default: the oscillation manifest)")
    p.add_argument("--max-pairs", type=int, default=3, help="the largest-amplitude pairs used (default 3; 0 = all)")
    p.add_argument("--n-batches", type=int, default=12, help="M, mini-batches per checkpoint (default 12; paper 32)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per mini-batch (default 8; paper 64)")
    p.add_argument("--part", default="total", choices=PARTS, help="which loss (default total = LM + λ·probe)")
    p.add_argument("--n-boot", type=int, default=200, help="resamples of the M gradients (default 200)")
    p.add_argument("--top-k", type=int, default=10, help="eigenvalues stored per checkpoint (default 10)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    args = p.parse_args()
    device = resolve_device(args.device)        # a bad --device is an error before anything is written
    if args.max_pairs < 0 or args.n_batches < 2 or args.n_boot < 2:
        raise UserError("--max-pairs must be >= 0, --n-batches >= 2 and --n-boot >= 2")
    run = open_run(args.run_dir, args.out_dir)
    p_ood = p_ood_series(run.metrics())
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pairs)
    base = {"run_dir": str(run.dir),
            "settings": {"seed": args.seed, "max_pairs": args.max_pairs, "n_batches": args.n_batches,
                         "batch_size": args.batch_size, "part": args.part, "n_boot": args.n_boot,
                         "pairs_source": info["source"], "space": "trunk"}}
    if not pairs:
        why = info.get("note", "no switch pairs")
        path = write_result(run, "fisher_peaks", {**base, "applicable": False, "reason": why})
        print(f"not applicable: {why}\nwrote {path}")
        return 0
    top = sorted(pairs, key=lambda q: -(q.amplitude if math.isfinite(q.amplitude) else -math.inf))
    top = top if args.max_pairs == 0 else top[:args.max_pairs]
    steps = sorted({s for q in top for s in (q.peak_step, q.trough_step)})
    task = run.task()
    records = {}
    for step in tqdm(steps, desc="fisher at peaks/troughs", unit="ckpt", disable=True if args.no_progress else None):
        model = run.model(step, device=device)
        G = minibatch_gradients(model, task, run.cfg, step, args.n_batches, args.seed, args.batch_size, args.part)
        spec = fisher_spectrum(G)
        boot = spectrum_bootstrap(gradient_gram(G) / G.shape[0], args.n_boot, np.random.default_rng([args.seed, step]))
        records[step] = {"step": step, "lambda": lambda_at(run.cfg, step), "p_ood_logged": p_ood.get(step),
                         **spec.summary(args.top_k),
                         "sd_log_lambda_1": boot["sd_log_lambda_1"], "sd_log_trace": boot["sd_log_trace"]}
        del G, model
    comparison = peak_trough_fisher(records, top)
    result = {**base, "applicable": True, "checkpoints": [records[s] for s in steps], **comparison}
    path = write_result(run, "fisher_peaks", result)
    plot(run, result)
    for r in comparison["pairs"]:
        print(f"pair {r['peak_step']}/{r['trough_step']}: ln(lambda_1 peak/trough) {r['lambda_1']['log_ratio']:+.3f} "
              f"(se {r['lambda_1']['se']:.3f}), ln(trace ratio) {r['trace']['log_ratio']:+.3f} "
              f"(se {r['trace']['se']:.3f})")
    print(f"wrote {path}")
    return 0


def plot(run, r) -> None:
    fig, ax = figure(1, 2, width=4.2, height=3.6)
    x = np.arange(len(r["pairs"]))
    labels = [f"{q['peak_step']}/{q['trough_step']}" for q in r["pairs"]]
    for j, key in enumerate(("lambda_1", "trace")):
        a = ax[0, j]
        a.errorbar(x, [q[key]["log_ratio"] for q in r["pairs"]], yerr=[2 * q[key]["se"] for q in r["pairs"]], fmt="o",
                   capsize=4, label="ln(peak / trough) ± 2 se")
        a.axhline(0, c="k", lw=0.8, label="null: no difference")
        a.set_xticks(x, labels, fontsize=7)
        a.set(xlabel="pair (peak/trough)", ylabel=f"ln {key} ratio", title=f"Fisher {key}: peaks vs troughs")
        a.legend(fontsize=7)
    save_figure(fig, run, "fisher_peaks")


if __name__ == "__main__":
    sys.exit(run_main(main))
