"""Distance of a modular-addition run's trajectory to its final low-dimensional subspace, over training: per
block (W_Q, W_K, W_V, W_O per layer; MLP matrices) and for the whole trunk, the principal angles between the
top-k uncentred PCs of the drifts up to each checkpoint and the final top-k PCs (their overlap = mean squared
cosine), and the share of x(t) in the final subspace, beside the random walk with the same step sizes.

Writes RUN/analysis/modadd_subspace_distance.json and .png. Formulas: training/geometry/subspace_distance.py.

Example:
  python analysis/modadd/subspace_distance.py --run-dir runs/modadd_quick_s0/attn_ref_s0 --k 3
"""
import sys

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--k", type=int, default=3, help="dimension of the subspaces (default 3, as the reference's basis)")
    args = p.parse_args()
    if args.k < 1:
        raise UserError(f"--k must be at least 1 (got {args.k})")
    from figures.modadd_report import plot_subspace_distance
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.subspace_distance(run.dir, k=args.k)
    path = write_result(run, "modadd_subspace_distance", res)
    plot_subspace_distance([(run.dir.name, res)], run.analysis_dir / "modadd_subspace_distance.png")
    s = res["summary"]
    for f in res["fractions"]:
        r = s[f"{f:g}"]
        print(f"at {f:.0%} of training: attention-block overlap median {r['attention_overlap_median']:.3f} "
              f"(random walk {r['attention_null_overlap_median']:.3f}); trunk {r['trunk_overlap']:.3f} "
              f"(random walk {r['trunk_null_overlap']:.3f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
