#!/usr/bin/env python
"""Gradient alignment with the backbone and the per-block signed gradient bias (arXiv 2602.23696 §4.1, §4.4; "9A/9B").

Backbones: the trunk v_b and, for each block ℓ, the block backbone v_ℓ = PC1 of the raw uncentered PCA
of that block's drifts over all checkpoints from the first one, sign fixed so that a(t_last) > 0.

At each chosen checkpoint t, for the total loss (LM + λ·probe, λ of the run's schedule), the LM part and
the probe part (probe batches with every sequence carrying a probe), over M seeded mini-batch gradients
g_i of the trunk:

- cos_i = cos(g_i, v) for the trunk backbone and, restricted to block ℓ, for v_ℓ: mean and std of the
  signed cosine, mean |cos|, and mean |cos| divided by the noise floor sqrt(2/(πD)) of that dimension,
  and the one-sample t = mean/(s/√M) of the signed cosines (s with ddof 1): a sign the mini-batches share
  is structure even where each |cos| sits at the floor;
- b_ℓ(t) = (1/M)·Σ_i ⟨g_i restricted to block ℓ, v_ℓ⟩, the mean signed projection (paper eq. 24), and
  its cumulative sum over the analysed checkpoints B_ℓ(t_k) = Σ_{j≤k} b_ℓ(t_j) (eq. 25): raw gradient
  projections, unweighted by the learning rate. Since v_ℓ points along the net drift, b_ℓ < 0 means
  the gradient at t pushes block ℓ forward along its backbone (descent moves along −g).

Claim 8 ("per-batch gradients are at the noise floor", docs/claims.md): ``noise_floor_verdict`` holds, per
loss part, the max over checkpoints of mean|cos(g, v_b)|/floor and of |t| for the trunk, with
at_noise_floor = both below 3 and excess = max(ratio − 3, |t| − 3); ``claim8`` is the total loss's.

Claim 9 ("block 0 drives the backbone, 3–10×"): the paper compares raw projections b_ℓ, which grow with a
block's gradient norm whatever the direction. ``claim9`` compares the per-block signed cosines instead: block
0's |mean cos(g_0, v_0)| over the median of the other blocks', per checkpoint before the λ switch, beside the
same ratio for each block's PC2 and for a random unit vector per block (``blocks_pc2``, ``blocks_random`` in
every record), with block 0's |t| (:func:`training.geometry.gradients.dominance_summary`).

Prop. 1 and eq. 18 of the paper (``prop1`` per checkpoint and loss part, trunk): the gradients' energy along v_b
and across it (Remark 1's split), two readings of the effective dimension d_eff (1/mean cos²(g, v_b), and the
participation ratio of the M gradients, at most M), and the per-coordinate SNR |μ_i|/σ_i over the M batches with
its pure-noise median, momentum's √((1+β1)/(1−β1)) and the SNR of the coordinates carrying v_b relative to the
average coordinate's (``backbone_weighted``; training/geometry/gradients.py).

Writes RUN/analysis/residual_decomposition.json and residual_decomposition.png.

Examples::

    python analysis/backbone/residual_decomposition.py --run-dir runs/quick
    python analysis/backbone/residual_decomposition.py --run-dir runs/paper_s42 --n-batches 16 --batch-size 64 \\
        --n-checkpoints 0 --device cuda        # paper scale: every checkpoint
"""
import sys
import time

import numpy as np

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import lambda_at
from training.geometry.analysis_io import Run, add_gradient_sampling_args, analysis_parser, open_run, write_result
from training.geometry.gradients import (
    PARTS,
    alignment_stats,
    block_slices,
    floor_summary,
    choose_steps,
    dominance_summary,
    cumulative_bias,
    minibatch_gradients,
    noise_floor,
    prop1_stats,
    signed_block_bias,
)
from training.geometry.trajectory import cached_gram, pca


def build_parser():
    p = analysis_parser(__doc__)
    add_gradient_sampling_args(p, n_batches=8, paper_batches=16)
    p.add_argument("--parts", default=",".join(PARTS), help="losses to analyse, comma-separated (default total,lm,probe)")
    return p


def backbones(run: Run, progress: bool, seed: int) -> tuple[np.ndarray, list[np.ndarray], dict, dict]:
    """Trunk v_b, per-block v_ℓ (unit D-vectors in canonical order), their explained fractions, and the
    comparison directions of claim 9 per block: its PC2 (None where the drifts have rank 1) and a random unit
    vector (seeded by ``seed`` and the block)."""
    ckpts = run.checkpoints()
    info = {"anchor_step": ckpts.steps[0], "n_checkpoints": len(ckpts.steps)}
    g = cached_gram(ckpts, progress=progress)
    p = pca(g, k=1)
    v_trunk = ckpts.materialise(g, p.coeffs[0])
    info.update(trunk_dim=g.dim, trunk_pc1=float(p.explained_variance_ratio[0]), block_dim=[], block_pc1=[])
    v_blocks, others = [], {"pc2": [], "random": []}
    for b in range(run.cfg.n_layer):
        gb = cached_gram(ckpts, block=b, progress=progress)
        pb = pca(gb, k=2)
        v_blocks.append(ckpts.materialise(gb, pb.coeffs[0]))
        others["pc2"].append(ckpts.materialise(gb, pb.coeffs[1]) if len(pb.coeffs) > 1 else None)
        others["random"].append(np.random.default_rng([seed, 9, b]).standard_normal(gb.dim))
        info["block_dim"].append(gb.dim)
        info["block_pc1"].append(float(pb.explained_variance_ratio[0]))
    return v_trunk, v_blocks, info, others


def main() -> int:
    args = build_parser().parse_args()
    t0 = time.monotonic()
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad or not parts:
        raise UserError(f"--parts must be a comma list of {', '.join(PARTS)} (got '{args.parts}')")
    run = open_run(args.run_dir, args.out_dir)
    steps = choose_steps(run.steps, args.steps, args.n_checkpoints, run.cfg.steps)
    device = resolve_device(args.device)
    v_trunk, v_blocks, info, others = backbones(run, not args.no_progress, args.seed)
    slices = block_slices(run.cfg)
    task = run.task()
    from tqdm import tqdm
    records = []
    for step in tqdm(steps, desc="gradient alignment", unit="ckpt", disable=True if args.no_progress else None):
        model = run.model(step, device=device)
        rec = {"step": step, "lambda": lambda_at(run.cfg, step)}
        for part in parts:
            G = minibatch_gradients(model, task, run.cfg, step, args.n_batches, args.seed, args.batch_size, part,
                                    progress=not args.no_progress)
            rec[part] = {"trunk": alignment_stats(G, v_trunk),
                         "blocks": [alignment_stats(G[:, sl], v) for sl, v in zip(slices, v_blocks)],
                         "b": signed_block_bias(G, v_blocks, run.cfg).tolist(),
                         "prop1": prop1_stats(G, v_trunk, run.cfg.beta1)}
            for kind, dirs in others.items():       # claim 9's comparison directions, same gradients
                rec[part][f"blocks_{kind}"] = ([alignment_stats(G[:, sl], v) for sl, v in zip(slices, dirs)]
                                               if all(v is not None for v in dirs) else None)
            del G
        records.append(rec)
        del model
    cumulative = {part: cumulative_bias([r[part]["b"] for r in records]).tolist() for part in parts}
    verdicts = {part: floor_summary([r[part]["trunk"] for r in records]) for part in parts}
    main_part = "total" if "total" in parts else parts[0]
    early = [r for r in records if r["step"] < run.cfg.lambda_step] or records
    claim9 = {"part": main_part, "phase": "before the λ switch (the paper's Table 5)" if early is not records else
              "all analysed checkpoints (none before the λ switch)",
              **dominance_summary([{"step": r["step"], "backbone": r[main_part]["blocks"],
                                    "pc2": r[main_part]["blocks_pc2"] or [], "random": r[main_part]["blocks_random"]}
                                   for r in early])}
    result = {"settings": {"n_batches": args.n_batches, "batch_size": args.batch_size, "parts": parts,
                           "seed": args.seed, "steps": steps},
              "backbone": info,
              "noise_floor": {"trunk": noise_floor(info["trunk_dim"]), "block": [noise_floor(d) for d in info["block_dim"]]},
              "sign_convention": "v_b and v_l point along the net drift (a(t_last) > 0); b_l(t) = mean_i <g_i,l, v_l> "
                                 "of raw gradients, so b_l < 0 means descent moves block l forward along its backbone",
              "checkpoints": records,
              "cumulative_B": {"steps": steps, **cumulative},
              "noise_floor_verdict": verdicts,
              "claim8": {"part": main_part, **verdicts[main_part]},
              "claim9": claim9,
              "elapsed_s": round(time.monotonic() - t0, 2)}
    path = write_result(run, "residual_decomposition", result)
    plot(run, result)
    c8 = result["claim8"]
    print(f"trunk gradients ({main_part} loss) vs v_b: max mean|cos|/floor {_g(c8['abs_cos_over_floor_max'])}, "
          f"max |t| {_g(c8['abs_t_max'])} over {c8['n_checkpoints']} checkpoints x {c8['batches_per_checkpoint']} "
          f"batches: {'at' if c8['at_noise_floor'] else 'not at' if c8['at_noise_floor'] is False else 'undecided, near'}"
          " the noise floor (limits 3, 3)")
    print(f"block 0 / median of the other blocks' |signed cos| with their backbones ({claim9['phase']}): "
          f"{_g(claim9['median_backbone'])} (with their PC2 {_g(claim9['median_pc2'])}, random directions "
          f"{_g(claim9['median_random'])}); block 0's median |t| {_g(claim9['median_block0_abs_t'])}")
    print(f"wrote {path}")
    return 0


def _g(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def plot(run: Run, result: dict) -> None:
    recs, parts = result["checkpoints"], result["settings"]["parts"]
    s = [r["step"] for r in recs]
    L = len(result["backbone"]["block_dim"])
    main_part = "total" if "total" in parts else parts[0]
    fig, ax = figure(2, 2)
    for part in parts:
        ax[0, 0].semilogy(s, [r[part]["trunk"]["mean_abs_cos"] for r in recs], "o-", ms=4, label=part)
    ax[0, 0].axhline(result["noise_floor"]["trunk"], color="grey", ls=":", label="noise floor")
    ax[0, 0].set(xlabel="step", ylabel="mean |cos(g, v_b)|", title="trunk gradient alignment")
    for b in range(L):
        ax[0, 1].semilogy(s, [r[main_part]["blocks"][b]["mean_abs_cos"] for r in recs], "o-", ms=4, label=f"block {b}")
    ax[0, 1].axhline(result["noise_floor"]["block"][0], color="grey", ls=":", label="noise floor")
    ax[0, 1].set(xlabel="step", ylabel=r"mean $|\cos(g_\ell, v_\ell)|$", title=f"per-block alignment ({main_part})")
    B = np.asarray(result["cumulative_B"][main_part])
    for b in range(L):
        ax[1, 0].plot(s, [r[main_part]["b"][b] for r in recs], "o-", ms=4, label=f"block {b}")
        ax[1, 1].plot(s, B[:, b], "o-", ms=4, label=f"block {b}")
    ax[1, 0].axhline(0, color="grey", lw=0.8)
    ax[1, 0].set(xlabel="step", ylabel=r"$b_\ell(t)$ = mean $\langle g_\ell, v_\ell\rangle$", title=f"signed projection ({main_part})")
    ax[1, 1].axhline(0, color="grey", lw=0.8)
    ax[1, 1].set(xlabel="step", ylabel=r"$B_\ell = \sum b_\ell$", title="cumulative signed bias")
    for a in ax.ravel():
        if s[0] < run.cfg.lambda_step <= s[-1]:
            a.axvline(run.cfg.lambda_step, color="grey", ls="--", lw=0.8)
        a.legend(fontsize=6)
    save_figure(fig, run, "residual_decomposition")


if __name__ == "__main__":
    sys.exit(run_main(main))
