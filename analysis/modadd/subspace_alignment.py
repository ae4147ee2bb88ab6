"""Principal angles between the top-k centred trajectory PCs of equal-shape blocks: across the layers of one
run and, with --other-run, across two runs (e.g. two seeds), against the random overlap k/n.

Writes RUN/analysis/modadd_cross_subspaces.json. Formulas: training/geometry/exec_subspace.py.

Example:
  python analysis/modadd/subspace_alignment.py --run-dir STUDY/attn_ref_s0 --other-run STUDY/attn_ref_s1
"""
import sys

from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--other-run", help="a second run of the same architecture (e.g. another seed)")
    p.add_argument("--k", type=int, default=3, help="principal directions per block (default 3)")
    args = p.parse_args()
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.cross_subspaces(run.dir, args.other_run, k=args.k)
    path = write_result(run, "modadd_cross_subspaces", res)
    for lbl, r in (res.get("across_runs") or {}).items():
        print(f"{lbl}: overlap {r['overlap']:.3f} (random {r['random_overlap']:.4f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
