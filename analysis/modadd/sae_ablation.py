"""Top-K SAE on the residual stream of a modular-addition run (value slots + answer slot after one block) at
early / mid / late checkpoints, with latent ablation patched at that site and propagated through the rest
of the network; controls: reconstruction only, and as many random latents.

Writes RUN/analysis/modadd_sae.json and modadd_sae.png. Formulas: training/geometry/sae.py.

Example:
  python analysis/modadd/sae_ablation.py --run-dir runs/modadd_quick_s0/attn_ref_s0 --steps 160,640,1440
"""
import sys

from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, parse_step_list, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--steps", help="checkpoint steps (default: 10 %%, 40 %%, 90 %% of the run)")
    p.add_argument("--layer", type=int, help="SAE site: the residual after this block (default n_layer - 2)")
    p.add_argument("--sae-steps", type=int, default=1500, help="SAE training steps (default 1500)")
    p.add_argument("--n-ablate", type=int, default=6, help="latents zeroed (default 6, as skydancerosel/bubble-modadd)")
    args = p.parse_args()
    from figures.modadd_report import plot_sae
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    steps = parse_step_list(args.steps, run.steps) if args.steps else None
    res = ma.sae_ablation(run.dir, steps=steps, layer=args.layer, sae_steps=args.sae_steps, n_ablate=args.n_ablate,
                          seed=args.seed, progress=not args.no_progress)
    path = write_result(run, "modadd_sae", res)
    plot_sae(res, run.analysis_dir / "modadd_sae.png")
    for s in res["stages"]:
        print(f"step {s['step']}: acc {s['mean']['clean']:.3f}, recon {s['mean']['recon']:.3f}, top-latent ablation "
              f"{s['mean']['ablate_top']:.3f}, random {s['mean']['ablate_random']:.3f} (FVU {s['fvu']:.3f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
