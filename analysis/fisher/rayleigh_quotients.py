#!/usr/bin/env python
"""Fisher Rayleigh quotients along the backbone, PC2, the switching direction and random directions (arXiv 2602.23696 §4.5).

Directions (trunk space, canonical order): v_b = PC1 and v_pc2 = PC2 of the raw uncentered PCA of all
checkpoints' drifts from the first checkpoint (sign: a(t_last) > 0); v_sw = θ(peak) − θ(trough),
normalised, for the first pair of RUN/oscillation_manifest.json (written by
analysis/switching/detect_oscillations.py; without it q_switch is null); w_1..w_K = K seeded random
unit directions orthogonal to v_b and to each other (the same at every checkpoint). The nulls of claims 10
and 11 (docs/claims.md) beside them: K random directions with v_b's energy in every trunk tensor
(``anisotropy_energy_matched``: a direction that lives in the tensors with large gradients has a large q
whatever it is), K directions uniform in the trajectory's span (``anisotropy_span``), the radial direction
θ̂(t) of each checkpoint (``anisotropy_radial``), PC2–PC5 (``q_pcs``); with --method grad also q(v_b) /
trace F̂, the centred (variance-only) quotients, and the top eigenvector's overlap with PC2, with the in-span
and with the orthogonal random directions beside the floor sqrt(2/(πD)). --hessian K adds the curvature itself,
v̂ᵀHv̂ by Hessian-vector products (forward over reverse, math attention), along v_b, PC2 and K of the
energy-matched directions (``hessian`` in each record). ``claim10`` and ``claim11`` are the
ledger's inputs (training/geometry/fisher.py).

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
from training.core.cli import run_main, show
from training.core.model import trunk_names, trunk_tensor_sizes
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import lambda_at
from training.geometry.analysis_io import Run, add_gradient_sampling_args, analysis_parser, open_run, write_result
from training.geometry.fisher import (
    anisotropy_ratio,
    centred_rayleigh,
    claim10_summary,
    claim11_summary,
    energy_matched_directions,
    fisher_spectrum,
    orthogonal_random_directions,
    overlap,
    rayleigh,
    hessian_quadratic,
    rayleigh_jvp,
    span_random_coeffs,
    top_eigenvectors,
)
from training.geometry.gradients import PARTS, choose_steps, minibatch_gradients, noise_floor
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
    p.add_argument("--hessian", type=int, default=0, metavar="K",
                   help="also v̂ᵀHv̂ by Hessian-vector products along v_b, PC2 and the first K energy-matched directions "
                        "(default 0: off; each direction costs about three backward passes per batch)")
    return p


def switch_pair(run: Run) -> tuple[SwitchPair | None, str]:
    """The manifest's first switch pair, or None and the reason."""
    if not runio.find_analysis_input(run.dir, MANIFEST, top=True).exists():
        return None, f"no {MANIFEST} in the run directory (run analysis/switching/detect_oscillations.py first)"
    pairs, _ = read_manifest(run.dir, run.steps)
    if not pairs:
        return None, f"{MANIFEST} lists no peak/trough pair"
    return pairs[0], f"first pair of {MANIFEST}"


N_PCS = 5                # PC1 (v_b) .. PC5


def directions(run: Run, ckpts: CheckpointSet, gram: Gram, n_span: int, seed: int) -> tuple[np.ndarray, dict]:
    """D × m matrix [v_b, PC2..PC5 (as many as the drifts' rank gives), v_sw?, n_span directions random in the
    trajectory's span] (unnormalised span vectors, one pass over the checkpoints) and where each column is."""
    full = pca(gram, k=len(gram.steps))
    p = pca(gram, k=N_PCS)
    n_pc = len(p.coeffs)
    cols = [p.coeffs[k] for k in range(n_pc)]
    info = {"dim": gram.dim, "anchor_step": gram.anchor, "n_checkpoints": len(gram.steps),
            "pc1_explained": float(p.explained_variance_ratio[0]),
            "pc2_explained": float(p.explained_variance_ratio[1]) if len(p.explained_variance_ratio) > 1 else None,
            "n_pcs": n_pc, "has_pc2": n_pc > 1}
    pair, info["switch_note"] = switch_pair(run)
    info["switch_pair"] = None if pair is None else {"peak_step": pair.peak_step, "trough_step": pair.trough_step}
    index = {"pcs": list(range(n_pc)), "switch": None}
    if pair is not None:
        c = switch_coeffs(gram, [pair])[0][0]
        info["cos_backbone_switch"] = cos_span(gram, p.coeffs[0], c)
        index["switch"] = len(cols)
        cols.append(c)
    span = span_random_coeffs(full.coeffs, n_span, seed)
    index["span"] = list(range(len(cols), len(cols) + n_span))
    cols.extend(span.T)
    info["index"] = index
    return ckpts.materialise(gram, np.stack(cols, axis=1)), info


def main() -> int:
    args = build_parser().parse_args()
    t0 = time.monotonic()
    run = open_run(args.run_dir, args.out_dir)
    steps = choose_steps(run.steps, args.steps, args.n_checkpoints, run.cfg.steps)
    device = resolve_device(args.device)
    ckpts = run.checkpoints()
    gram = cached_gram(ckpts, progress=not args.no_progress)
    V, info = directions(run, ckpts, gram, args.n_random, args.seed)
    idx = info.pop("index")
    K = args.n_random
    if not 0 <= args.hessian <= K:
        raise UserError(f"--hessian must be between 0 and --n-random = {K} (got {args.hessian})")
    W = orthogonal_random_directions(V[:, 0], K, args.seed)
    W_em = energy_matched_directions(V[:, 0], trunk_tensor_sizes(run.cfg), K, args.seed + 1)
    fixed = torch.cat([torch.from_numpy(V), W, W_em], dim=1).to(device)   # [pcs, (v_sw), span.., perp.., em..]
    i_perp = list(range(V.shape[1], V.shape[1] + K))
    i_em = list(range(V.shape[1] + K, V.shape[1] + 2 * K))
    pcs, i_sw, i_span = idx["pcs"], idx["switch"], idx["span"]
    names = trunk_names(run.cfg)
    task = run.task()
    from tqdm import tqdm
    records = []
    for step in tqdm(steps, desc="rayleigh", unit="ckpt", disable=True if args.no_progress else None):
        model = run.model(step, attention="math" if args.method == "jvp" else "sdpa", device=device)
        params = dict(model.named_parameters())
        radial = torch.cat([params[n].detach().reshape(-1).double() for n in names])[:, None]
        allv = torch.cat([fixed, radial.to(device)], dim=1)                 # θ̂(t) last
        rec = {"step": step, "lambda": lambda_at(run.cfg, step)}
        if args.method == "grad":
            G = minibatch_gradients(model, task, run.cfg, step, args.n_batches, args.seed, args.batch_size, args.part,
                                    progress=not args.no_progress)
            q = rayleigh(G, allv)
            qc = centred_rayleigh(G, allv)
            spec = fisher_spectrum(G)
            u1 = top_eigenvectors(G, spec, 1)
            top = {"overlap_top_eigvec_backbone": overlap(u1, allv[:, 0]),
                   "overlap_top_eigvec_pc2": overlap(u1, allv[:, 1]) if len(pcs) > 1 else None,
                   "overlap_top_eigvec_span_random_mean": float(np.mean([overlap(u1, allv[:, i]) for i in i_span])),
                   "overlap_top_eigvec_random_mean": float(np.mean([overlap(u1, allv[:, i]) for i in i_perp])),
                   "lambda_1": float(spec.eigenvalues[0]), "trace": spec.trace,
                   "q_backbone_over_trace": float(q[0] / spec.trace) if spec.trace > 0 else None,
                   "q_centred_backbone": float(qc[0]), "q_centred_random_mean": float(qc[i_perp].mean()),
                   "q_centred_energy_matched_mean": float(qc[i_em].mean()),
                   "anisotropy_centred": anisotropy_ratio(qc[0], qc[i_em])}
            del G
        else:
            q = rayleigh_jvp(model, task, run.cfg, step, allv, args.n_batches, args.seed, args.batch_size, args.part,
                             chunk=args.jvp_chunk, progress=not args.no_progress)
            top = {k: None for k in ("overlap_top_eigvec_backbone", "overlap_top_eigvec_pc2",
                                     "overlap_top_eigvec_span_random_mean", "overlap_top_eigvec_random_mean",
                                     "lambda_1", "trace", "q_backbone_over_trace", "q_centred_backbone",
                                     "q_centred_random_mean", "q_centred_energy_matched_mean", "anisotropy_centred")}
        if args.hessian:
            sel = [0] + ([1] if len(pcs) > 1 else []) + i_em[:args.hessian]
            h = hessian_quadratic(model, task, run.cfg, step, allv[:, sel], args.n_batches, args.seed, args.batch_size,
                                  args.part, chunk=args.jvp_chunk, progress=not args.no_progress)
            h_em = h[len(sel) - min(args.hessian, K):]
            rec["hessian"] = {"h_backbone": float(h[0]), "h_pc2": float(h[1]) if len(pcs) > 1 else None,
                              "h_energy_matched": h_em.tolist(),
                              "ratio_energy_matched": float(h[0] / h_em.mean()) if h_em.mean() > 0 else None}
        q_rand = q[i_perp]
        rec.update({"q_backbone": float(q[0]), "q_switch": None if i_sw is None else float(q[i_sw]),
                    "q_pc2": float(q[1]) if len(pcs) > 1 else None, "q_pcs": [float(q[i]) for i in pcs],
                    "q_random_mean": float(q_rand.mean()), "q_random_std": float(q_rand.std()),
                    "q_energy_matched_mean": float(q[i_em].mean()), "q_span_random_mean": float(q[i_span].mean()),
                    "q_radial": float(q[-1]),
                    "anisotropy": anisotropy_ratio(q[0], q_rand),
                    "anisotropy_energy_matched": anisotropy_ratio(q[0], q[i_em]),
                    "anisotropy_span": anisotropy_ratio(q[0], q[i_span]),
                    "anisotropy_radial": float(q[0] / q[-1]) if q[-1] > 0 else None, **top})
        records.append(rec)
        del model
    result = {"M": args.n_batches, "K": args.n_random, "seed": args.seed, "batch_size": args.batch_size,
              "method": args.method, "part": args.part, "steps": steps, "directions": info,
              "noise_floor": noise_floor(gram.dim),
              "note": None if args.method == "grad" else
              "forward-mode q(v) forms no gradient matrix, so the top-eigenvector overlaps, lambda_1, trace and the "
              "centred quotients are null",
              "checkpoints": records, "claim10": claim10_summary(records), "claim11": claim11_summary(records),
              "elapsed_s": round(time.monotonic() - t0, 2)}
    path = write_result(run, "rayleigh_quotients", result)
    plot(run, records)
    c10, c11 = result["claim10"], result["claim11"]
    print(f"alpha against energy-matched directions: max {show(c10.get('alpha_max'))} at step "
          f"{c10.get('alpha_max_step')}, {show(c10.get('growth'))}x its first value (claim 10 asks for >= 3 and >= 5x); "
          f"against random directions orthogonal to v_b: max {show(max(r['anisotropy'] for r in records))}")
    print(f"top Fisher eigenvector: |<u1, v_b>| / max(|<u1, PC2>|, in-span random) median {show(c11['median_ratio'])} "
          f"(claim 11 'orthogonal' needs <= 3; random-direction floor {noise_floor(gram.dim):.2g})")
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
