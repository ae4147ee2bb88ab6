"""SGD commutators of a modular-addition run: δ = θ_AB − θ_BA of two plain SGD steps on independent batches at
checkpoints, the normalised defect D, its η → 0 (Hessian-vector-product) form and the scaled defect, and the
projection of δ on the causal per-block trajectory basis (top PCs of each attention matrix) and on the
toolkit's backbone, against the exact random baseline (≈ sqrt(K/P)) and a Monte-Carlo one.

Writes RUN/analysis/modadd_commutators.json and modadd_commutators.png. Formulas: training/geometry/commutator.py.

Example:
  python analysis/commutator/commutators.py --run-dir runs/modadd_quick_s0/attn_ref_s0 --samples 9
"""
import sys

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--n-checkpoints", type=int, default=6, help="checkpoints measured (default 6)")
    p.add_argument("--samples", type=int, default=5, help="batch pairs per checkpoint (default 5; skydancerosel/bubble-modadd: 9)")
    p.add_argument("--eta", type=float, default=1e-3, help="plain-SGD step size (default 1e-3, as skydancerosel/bubble-modadd)")
    p.add_argument("--pcs-per-block", type=int, default=3, help="trajectory PCs per block (default 3)")
    p.add_argument("--backbone-k", type=int, default=3, help="backbone PCs (default 3)")
    p.add_argument("--mc", type=int, default=10, help="Monte-Carlo random bases per sample (default 10)")
    args = p.parse_args()
    if args.eta <= 0 or args.samples < 1 or args.n_checkpoints < 1:
        raise UserError("--eta, --samples and --n-checkpoints must be positive")
    from figures.modadd_report import plot_commutators
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.commutators(run.dir, n_checkpoints=args.n_checkpoints, samples=args.samples, eta=args.eta,
                         pcs_per_block=args.pcs_per_block, backbone_k=args.backbone_k, n_mc=args.mc, seed=args.seed,
                         progress=not args.no_progress)
    path = write_result(run, "modadd_commutators", res)
    plot_commutators(res, run.analysis_dir / "modadd_commutators.png")
    for r in res["checkpoints"]:
        print(f"step {r['step']}: D {r['D_median']:.3g}, rho_exec {r['rho_exec_median']:.3g} "
              f"(random {r['median_sample']['rho_rand']:.3g}, ratio {r['ratio_exec_median']:.2f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
