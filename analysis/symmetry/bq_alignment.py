#!/usr/bin/env python
"""bQ alignment (arXiv 2601.22257; evasilverstein/symmetry-breaking-files'
analysis/analysis_bQ_batch.py): how the keys of tokens and positions line up with ⟨bQ⟩.

For every layer l and head h: cos(W_K^(h)·e, ⟨bQ⟩_l) for each row e of the raw tied token embedding and of
the learned position embedding (no LayerNorm, no key bias). For a run trained with a query bias, ⟨bQ⟩ is
the mean of its training draws up to the checkpoint (read from <checkpoint>.attn_bias.json); for a
symmetric run, the null of the reference: one random draw from the bQ distribution of the run's config
(seeded by --seed). Per layer: mean/std of the token cosines, the z-score of their mean square against
the analytic random-direction null (E cos² = 1/head_dim), the top and bottom tokens (ids and, when the
run has a tokenizer, their text), and the position curve averaged over heads.

Writes RUN/analysis/bq_alignment.json and bq_alignment.png (layers × positions heatmap, per-head mean
token cosine, |<bQ>| per layer).

Examples::

    python analysis/symmetry/bq_alignment.py --run-dir runs/symmetry_cpu_s0/adamw_bq
    python analysis/symmetry/bq_alignment.py --run-dir runs/symmetry_cpu_s0/adamw_sym --step 200   # the null
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.token_classes import token_classes
from training.studies.symmetry_study import alignment


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--step", type=int, help="checkpoint to analyse (default: the last)")
    p.add_argument("--top", type=int, default=15, help="top/bottom tokens listed per layer (default 15)")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    step = run.steps[-1] if args.step is None else args.step
    if step not in run.steps:
        raise UserError(f"{run.dir} has no checkpoint at step {step} (available {run.steps[0]}..{run.steps[-1]})")
    try:
        tok = run.tokenizer()
    except UserError as e:
        tok, why = None, str(e)
    classes = token_classes(tok) if tok is not None else None
    res = alignment(run.dir, run.cfg, step, args.seed, classes)
    if tok is not None:
        for layer in res["layers"]:
            layer["top_text"] = [tok.token_str(t) for t in layer["top_tokens"]]
            layer["bottom_text"] = [tok.token_str(t) for t in layer["bottom_tokens"]]
    else:
        res["token_classes_reason"] = why
    path = write_result(run, "bq_alignment", res)
    fig, ax = figure(1, 3, width=4.5)
    im = ax[0, 0].imshow([l["position_cos"] for l in res["layers"]], aspect="auto", cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    ax[0, 0].set(xlabel="position", ylabel="layer", title=f"cos(W_K p, <bQ>), head mean\n({res['direction']})")
    fig.colorbar(im, ax=ax[0, 0])
    im = ax[0, 1].imshow([l["token_cos_head_mean"] for l in res["layers"]], aspect="auto", cmap="RdBu_r",
                         vmin=-0.5, vmax=0.5)
    ax[0, 1].set(xlabel="head", ylabel="layer", title="per-head mean cos(W_K e_tok, <bQ>)")
    fig.colorbar(im, ax=ax[0, 1])
    ax[0, 2].bar([l["layer"] for l in res["layers"]], [l["bq_norm"] for l in res["layers"]])
    ax[0, 2].set(xlabel="layer", ylabel="|<bQ>|", title="|<bQ>| per layer")
    save_figure(fig, run, "bq_alignment")
    for layer in res["layers"]:
        rc = layer["position_recency"]
        print(f"layer {layer['layer']}: |<bQ>| {layer['bq_norm']:.3f}  token cos mean {layer['token_cos_mean']:+.3f} "
              f"std {layer['token_cos_std']:.3f}  z(mean cos^2 vs null) {layer['z_mean_square']:+.1f}  "
              f"position recency rho {rc['spearman']:+.3f} (permutation p {rc['p_perm']:.3g})")
        for c, d in (layer.get("token_classes") or {}).get("classes", {}).items():
            print(f"    {c:12s} n {d['n']:6d}  positive {d['frac_positive']:.3f} vs {d['overall_frac_positive']:.3f} "
                  f"overall  Fisher p {d['p_fisher']:.3g}  permutation p {d['null']['p_perm_frac']:.3g}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
