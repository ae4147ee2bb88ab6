#!/usr/bin/env python
"""Fisher Rayleigh quotients along the backbone, PC2, the switching direction and random directions (arXiv 2602.23696 §4.5).

Directions (trunk space, canonical order): v_b = PC1 and v_pc2 = PC2 of the raw uncentered PCA of all
checkpoints' drifts from the first checkpoint (sign: a(t_last) > 0); v_sw = θ(peak) − θ(trough),
normalised, for the first pair of RUN/oscillation_manifest.json (written by
analysis/switching/detect_oscillations.py; without it q_switch is null); w_1..w_K = K seeded random
unit directions orthogonal to v_b and to each other (the same at every checkpoint).

Per checkpoint, with M seeded mini-batch gradients g_i of the training loss (λ of the run's schedule):
q(v) = (1/M)·Σ ⟨g_i, v⟩², anisotropy α = q(v_b) / mean_k q(w_k), and (with --method grad) the overlap
|⟨u_1, v_b⟩| of the top empirical-Fisher eigenvector u_1 = Gᵀw_1/‖Gᵀw_1‖ from the M × M Gram matrix.
--method jvp obtains every ⟨g_i, v⟩ as a forward-mode directional derivative instead (no gradient
matrix; then the eigenvector overlap, λ1 and trace are null).

Writes RUN/analysis/rayleigh_quotients.json and rayleigh_quotients.png.

Examples::

    python analysis/fisher/rayleigh_quotients.py --run-dir runs/quick
    python analysis/fisher/rayleigh_quotients.py --run-dir runs/quick --method jvp --n-batches 8
    python analysis/fisher/rayleigh_quotients.py --run-dir runs/paper_s42 --n-batches 32 --batch-size 64 \\
        --n-random 10 --n-checkpoints 10 --device cuda
"""
import sys
import time

import numpy as np
import torch

from figures.style import figure, save_figure
from training.core import runio
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.optim import lambda_at
from training.geometry.analysis_io import Run, add_gradient_sampling_args, analysis_parser, open_run, write_result
from training.geometry.fisher import (
    anisotropy_ratio,
    fisher_spectrum,
    orthogonal_random_directions,
    overlap,
    rayleigh,
    rayleigh_jvp,
    top_eigenvectors,
)
from training.geometry.gradients import PARTS, choose_steps, minibatch_gradients
from training.geometry.switching import MANIFEST, SwitchPair, read_manifest, switch_coeffs
from training.geometry.trajectory import CheckpointSet, Gram, cached_gram, cos_span, pca


def build_parser():
    p = analysis_parser(__doc__)
    add_gradient_sampling_args(p, n_batches=12, paper_batches=32)
    p.add_argument("--n-random", type=int, default=8, help="K, random directions ⊥ v_b (default 8; paper 10)")
    p.add_argument("--part", default="total", choices=PARTS, help="which loss (default total = LM + λ·probe)")
    p.add_argument("--method", default="grad", choices=("grad", "jvp"),
                   help="grad: gradient matrix (default); jvp: forward-mode directional derivatives")
    p.add_argument("--jvp-chunk", type=int, default=16, help="directions per forward-mode pass (default 16)")
    return p


def switch_pair(run: Run) -> tuple[SwitchPair | None, str]:
    """The manifest's first switch pair, or None and the reason."""
    if not runio.find_analysis_input(run.dir, MANIFEST, top=True).exists():
        return None, f"no {MANIFEST} in the run directory (run analysis/switching/detect_oscillations.py first)"
    pairs, _ = read_manifest(run.dir, run.steps)
    if not pairs:
        return None, f"{MANIFEST} lists no peak/trough pair"
    return pairs[0], f"first pair of {MANIFEST}"


def directions(run: Run, ckpts: CheckpointSet, gram: Gram) -> tuple[np.ndarray, dict]:
    """D × m matrix [v_b, v_pc2?, v_sw?] (unnormalised span vectors) and a description of them."""
    p = pca(gram, k=2)
    cols, info = [p.coeffs[0]], {"dim": gram.dim, "anchor_step": gram.anchor, "n_checkpoints": len(gram.steps),
                                 "pc1_explained": float(p.explained_variance_ratio[0]),
                                 "pc2_explained": float(p.explained_variance_ratio[1])
                                 if len(p.explained_variance_ratio) > 1 else None}
    info["has_pc2"] = len(p.coeffs) > 1
    if info["has_pc2"]:
        cols.append(p.coeffs[1])
    pair, info["switch_note"] = switch_pair(run)
    info["switch_pair"] = None if pair is None else {"peak_step": pair.peak_step, "trough_step": pair.trough_step}
    if pair is not None:
        c = switch_coeffs(gram, [pair])[0][0]
        info["cos_backbone_switch"] = cos_span(gram, p.coeffs[0], c)
        cols.append(c)
    return ckpts.materialise(gram, np.stack(cols, axis=1)), info


def main() -> int:
    args = build_parser().parse_args()
    t0 = time.monotonic()
    run = open_run(args.run_dir, args.out_dir)
    steps = choose_steps(run.steps, args.steps, args.n_checkpoints)
    device = resolve_device(args.device)
    ckpts = run.checkpoints()
    gram = cached_gram(ckpts, progress=not args.no_progress)
    V, info = directions(run, ckpts, gram)
    W = orthogonal_random_directions(V[:, 0], args.n_random, args.seed)
    allv = torch.cat([torch.from_numpy(V), W], dim=1).to(device)    # [v_b, (v_pc2), (v_sw), w_1..w_K]
    i_pc2 = 1 if info["has_pc2"] else None
    i_sw = (2 if info["has_pc2"] else 1) if info["switch_pair"] else None
    task = run.task()
    from tqdm import tqdm
    records = []
    for step in tqdm(steps, desc="rayleigh", unit="ckpt", disable=True if args.no_progress else None):
        model = run.model(step, attention="math" if args.method == "jvp" else "sdpa", device=device)
        rec = {"step": step, "lambda": lambda_at(run.cfg, step)}
        if args.method == "grad":
            G = minibatch_gradients(model, task, run.cfg, step, args.n_batches, args.seed, args.batch_size, args.part,
                                    progress=not args.no_progress)
            q = rayleigh(G, allv)
            spec = fisher_spectrum(G)
            top = {"overlap_top_eigvec_backbone": overlap(top_eigenvectors(G, spec, 1), allv[:, 0]),
                   "lambda_1": float(spec.eigenvalues[0]), "trace": spec.trace}
            del G
        else:
            q = rayleigh_jvp(model, task, run.cfg, step, allv, args.n_batches, args.seed, args.batch_size, args.part,
                             chunk=args.jvp_chunk, progress=not args.no_progress)
            top = {"overlap_top_eigvec_backbone": None, "lambda_1": None, "trace": None}
        q_rand = q[V.shape[1]:]
        rec.update({"q_backbone": float(q[0]), "q_switch": None if i_sw is None else float(q[i_sw]),
                    "q_pc2": None if i_pc2 is None else float(q[i_pc2]),
                    "q_random_mean": float(q_rand.mean()), "q_random_std": float(q_rand.std()),
                    "anisotropy": anisotropy_ratio(q[0], q_rand), **top})
        records.append(rec)
        del model
    result = {"M": args.n_batches, "K": args.n_random, "seed": args.seed, "batch_size": args.batch_size,
              "method": args.method, "part": args.part, "steps": steps, "directions": info,
              "note": None if args.method == "grad" else
              "forward-mode q(v) forms no gradient matrix, so the top-eigenvector overlap, lambda_1 and trace are null",
              "checkpoints": records, "elapsed_s": round(time.monotonic() - t0, 2)}
    path = write_result(run, "rayleigh_quotients", result)
    plot(run, records)
    print(f"wrote {path}")
    return 0


def plot(run: Run, records: list[dict]) -> None:
    fig, ax = figure(1, 2)
    s = [r["step"] for r in records]
    for key, label, style in (("q_backbone", "backbone v_b", "o-r"), ("q_switch", "switch v_sw", "s-b"),
                              ("q_pc2", "PC2", "^-g"), ("q_random_mean", "random ⊥ v_b (mean)", "x-k")):
        if all(r[key] is not None for r in records):
            ax[0, 0].semilogy(s, [r[key] for r in records], style, ms=4, label=label)
    ax[0, 0].set(xlabel="step", ylabel="q(v) = (1/M) Σ ⟨g_i, v⟩²", title="Fisher Rayleigh quotients")
    ax[0, 1].plot(s, [r["anisotropy"] for r in records], "o-", color="purple")
    ax[0, 1].axhline(1.0, color="grey", lw=0.8)
    ax[0, 1].set(xlabel="step", ylabel="α = q(v_b) / mean q(w_k)", title="anisotropy")
    for a in ax[0]:
        if s[0] < run.cfg.lambda_step <= s[-1]:
            a.axvline(run.cfg.lambda_step, color="grey", ls="--", lw=0.8)
    ax[0, 0].legend(fontsize=7)
    save_figure(fig, run, "rayleigh_quotients")


if __name__ == "__main__":
    sys.exit(run_main(main))
