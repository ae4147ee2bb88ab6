#!/usr/bin/env python
"""Empirical-Fisher spectrum at checkpoints spread over a run (arXiv 2602.23696 §4.5; skydancerosel/mini_gpt's
analysis/fisher/fisher_analysis.py).

At each checkpoint, the trunk gradients of M seeded mini-batches are stacked into G (M × D) and the
eigenvalues of (1/M)·G·Gᵀ -- the non-zero spectrum of the empirical Fisher (1/M)·Σ g gᵀ -- are computed
from the M × M Gram matrix. Reported per checkpoint: the top-k eigenvalues, λ1, the trace, λ1/trace,
the entropy effective rank and the participation ratio (both at most M). The loss is the training loss
with the probe weight λ of the run's schedule at that step (or its LM / probe part with --part).

Writes RUN/analysis/fisher_analysis.json and fisher_analysis.png.

Examples::

    python analysis/fisher/fisher_analysis.py --run-dir runs/quick
    python analysis/fisher/fisher_analysis.py --run-dir runs/paper_s42 --n-batches 32 --batch-size 64 \\
        --n-checkpoints 8 --device cuda
    python analysis/fisher/fisher_analysis.py --run-dir runs/quick --steps 100,400,600
"""
import sys
import time

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.optim import lambda_at
from training.geometry.analysis_io import add_gradient_sampling_args, analysis_parser, open_run, write_result
from training.geometry.fisher import fisher_spectrum
from training.geometry.gradients import PARTS, choose_steps, minibatch_gradients


def build_parser():
    p = analysis_parser(__doc__)
    add_gradient_sampling_args(p, n_batches=12, paper_batches=32)
    p.add_argument("--part", default="total", choices=PARTS, help="which loss (default total = LM + λ·probe)")
    p.add_argument("--top-k", type=int, default=20, help="eigenvalues stored per checkpoint (default 20)")
    return p


def main() -> int:
    args = build_parser().parse_args()
    t0 = time.monotonic()
    run = open_run(args.run_dir, args.out_dir)
    steps = choose_steps(run.steps, args.steps, args.n_checkpoints, run.cfg.steps)
    device = resolve_device(args.device)
    task = run.task()
    from tqdm import tqdm
    records = []
    for step in tqdm(steps, desc="fisher", unit="ckpt", disable=True if args.no_progress else None):
        model = run.model(step, device=device)
        G = minibatch_gradients(model, task, run.cfg, step, args.n_batches, args.seed, args.batch_size, args.part,
                                progress=not args.no_progress)
        records.append({"step": step, "lambda": lambda_at(run.cfg, step), **fisher_spectrum(G).summary(args.top_k)})
        del G, model
    result = {"settings": {"n_batches": args.n_batches, "batch_size": args.batch_size or run.cfg.batch_size,
                           "part": args.part, "seed": args.seed, "top_k": args.top_k, "steps": steps,
                           "space": "trunk"},
              "checkpoints": records, "elapsed_s": round(time.monotonic() - t0, 2)}
    path = write_result(run, "fisher_analysis", result)
    plot(run, records)
    print(f"wrote {path}")
    return 0


def plot(run, records: list[dict]) -> None:
    import matplotlib.cm as cm
    fig, ax = figure(1, 2)
    colors = cm.viridis([i / max(1, len(records) - 1) for i in range(len(records))])
    for r, c in zip(records, colors):
        ax[0, 0].semilogy(range(1, len(r["eigenvalues"]) + 1), r["eigenvalues"], "o-", ms=3, color=c,
                          label=f"step {r['step']}")
    ax[0, 0].set(xlabel="rank k", ylabel="eigenvalue λ_k of the empirical Fisher", title="Fisher spectrum (trunk)")
    ax[0, 0].legend(fontsize=7)
    s = [r["step"] for r in records]
    ax[0, 1].semilogy(s, [r["lambda_1"] for r in records], "o-", label="λ1")
    ax[0, 1].semilogy(s, [r["trace"] for r in records], "s-", label="trace")
    ax[0, 1].set(xlabel="step", title="top eigenvalue and trace")
    if s[0] < run.cfg.lambda_step <= s[-1]:
        ax[0, 1].axvline(run.cfg.lambda_step, color="grey", ls="--", lw=0.8, label="λ step")
    ax[0, 1].legend(fontsize=7)
    save_figure(fig, run, "fisher_analysis")


if __name__ == "__main__":
    sys.exit(run_main(main))
