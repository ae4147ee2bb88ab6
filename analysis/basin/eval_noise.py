"""Evaluation noise of p_ood: bootstrap standard deviation over the OOD probe examples.

At each chosen checkpoint (default: the last 3) one forward pass over the fixed OOD probe set gives
every example's correctness (greedy codeword right at all its probe positions, as in training's
p_ood). n_boot resamples of the examples with replacement give p_ood values whose standard deviation
(ddof 1) is the bootstrap std; the binomial standard error sqrt(p(1 − p)/n) is reported beside it.
The resampling generator of a checkpoint is seeded with (--seed, step). mean_std, the mean over the
checkpoints, is the σ of detect_oscillations.py's default prominence h = k*·σ (k* calibrated to the series
length so that white noise of std σ gives at most 0.2 false peaks per series). Note that the std depends on p: it is
0 at p = 0 or 1 and largest at p = 1/2, so choose --steps where p_ood is representative.

Output: RUN/analysis/eval_noise.json and .png.

Example:  python analysis/basin/eval_noise.py --run-dir runs/quick --steps 360,480,720
"""
import sys

import numpy as np
from tqdm import tqdm

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, parse_step_list, write_result
from training.geometry.switching import bootstrap_std, probe_readout


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--steps", help="comma-separated checkpoint steps (default: the last --last checkpoints)")
    p.add_argument("--last", type=int, default=3, help="number of final checkpoints used without --steps (default 3)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per checkpoint (default 1000)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    args = p.parse_args()
    if args.last < 1 or args.n_boot < 2:
        raise UserError("--last must be >= 1 and --n-boot >= 2")
    run = open_run(args.run_dir, args.out_dir)
    device = resolve_device(args.device)
    steps = run.steps[-args.last:] if args.steps is None else parse_step_list(args.steps, run.steps)
    task = run.task()
    probe_set = task.eval_set("probe_ood")
    logged = {int(r["step"]): r.get("p_ood") for r in run.metrics() if "step" in r}
    rows = []
    for step in tqdm(steps, desc="eval noise", unit="ckpt", disable=True if args.no_progress else None):
        readout = probe_readout(run.model(step, device=device), probe_set, run.cfg.eval_batch_size, device)
        correct = readout.correct[-1]
        pv = float(correct.mean())
        rows.append({"step": step, "p_ood": pv,
                     "bootstrap_std": bootstrap_std(correct, args.n_boot, np.random.default_rng([args.seed, step])),
                     "binomial_se": float(np.sqrt(pv * (1 - pv) / len(correct))), "n_examples": int(len(correct)),
                     "p_ood_logged": logged.get(step)})
    result = {"checkpoints": rows, "mean_std": float(np.mean([r["bootstrap_std"] for r in rows])),
              "mean_binomial_se": float(np.mean([r["binomial_se"] for r in rows])),
              "n_boot": args.n_boot, "seed": args.seed, "eval_set": "probe_ood", "device": str(device)}
    path = write_result(run, "eval_noise", result)

    fig, ax = figure(1, 1)
    a = ax[0, 0]
    x = np.arange(len(rows))
    a.errorbar(x, [r["p_ood"] for r in rows], yerr=[r["bootstrap_std"] for r in rows], fmt="o", capsize=4,
               label="p_ood ± bootstrap std")
    a.errorbar(x + 0.15, [r["p_ood"] for r in rows], yerr=[r["binomial_se"] for r in rows], fmt="none", capsize=4,
               ecolor="C1", label="binomial SE")
    a.set_xticks(x, [str(r["step"]) for r in rows])
    a.set(xlabel="checkpoint step", ylabel="p_ood", title=f"evaluation noise (n_boot = {args.n_boot})")
    a.legend(fontsize=7)
    save_figure(fig, run, "eval_noise")

    for r in rows:
        print(f"step {r['step']}: p_ood {r['p_ood']:.4f} (logged {r['p_ood_logged']}), bootstrap std "
              f"{r['bootstrap_std']:.4f}, binomial SE {r['binomial_se']:.4f}, n = {r['n_examples']}")
    print(f"mean bootstrap std {result['mean_std']:.4f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
