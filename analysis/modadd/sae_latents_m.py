"""Which Top-K SAE latents of a modular-addition run correlate with the marker count m? An SAE trained on
sequences of mixed m (value slots + answer slot after one block), each latent's Pearson r with m at the
answer slot, a family-wise permutation null (m permuted across sequences, max |r| over latents), and an
untrained SAE of the same size (random directions) as the control.

Writes RUN/analysis/modadd_sae_m.json and modadd_sae_m.png. Formulas: training/geometry/sae.py, permutation.py.

Example:
  python analysis/modadd/sae_latents_m.py --run-dir runs/modadd_quick_s0/attn_ref_s0 --steps 1440
"""
import sys

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, parse_step_list, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--steps", help="checkpoint steps (default: 10 %%, 40 %%, 90 %% of the run)")
    p.add_argument("--layer", type=int, help="SAE site: the residual after this block (default n_layer - 2)")
    p.add_argument("--sequences", type=int, default=1024, help="mixed-m sequences (default 1024)")
    p.add_argument("--sae-steps", type=int, default=1500, help="SAE training steps (default 1500)")
    p.add_argument("--permutations", type=int, default=1000, help="label permutations of the null (default 1000)")
    args = p.parse_args()
    if args.sequences < 8 or args.permutations < 1:
        raise UserError(f"--sequences must be at least 8 and --permutations at least 1 "
                        f"(got {args.sequences}, {args.permutations})")
    from figures.modadd_report import plot_sae_m
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    steps = parse_step_list(args.steps, run.steps) if args.steps else None
    res = ma.sae_latents_m(run.dir, steps=steps, layer=args.layer, n_sequences=args.sequences, sae_steps=args.sae_steps,
                           n_perm=args.permutations, seed=args.seed, progress=not args.no_progress)
    path = write_result(run, "modadd_sae_m", res)
    plot_sae_m(res, run.analysis_dir / "modadd_sae_m.png")
    for s in res["stages"]:
        a, b = s["sae"], s["random"]
        print(f"step {s['step']}: {a['n_significant']} of {a['n_live']} live latents beyond the family-wise null "
              f"(max |r| {a['max_abs_r']:.3f}, threshold {a['threshold']:.3f}); random directions "
              f"{b['n_significant']} of {b['n_live']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
