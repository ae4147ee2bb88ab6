"""Per-block trajectory spectra of a modular-addition run: r90, erank, participation ratio, alignment to
final (centred and uncentred) against the random-walk null with the same step sizes.

Writes RUN/analysis/modadd_spectra.json and modadd_spectra.png. Formulas: training/geometry/exec_subspace.py.

Example:
  python analysis/modadd/spectra.py --run-dir runs/modadd_quick_s0/attn_ref_s0
"""
import sys

from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--null-samples", type=int, default=20, help="random-walk null draws per block (default 20)")
    args = p.parse_args()
    from figures.modadd_report import plot_spectra
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.spectra(run.dir, null_samples=args.null_samples, seed=args.seed)
    path = write_result(run, "modadd_spectra", res)
    plot_spectra(res, str(run.dir.name), run.analysis_dir / "modadd_spectra.png")
    for name, s in res["summary"].items():
        print(f"{name}: centred r90 median {s['r90_median']:g} (range {s['r90_min']}-{s['r90_max']}), null "
              f"{s['null_r90_median']}, participation ratio {s['pr_median']:.2f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
