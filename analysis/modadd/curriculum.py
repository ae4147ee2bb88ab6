"""Curriculum path dependence of a modular-addition run: accuracy per m at every evaluation while the
curriculum moves to larger m, and how much each m loses after its own stage.

Writes RUN/analysis/modadd_curriculum.json and modadd_curriculum.png.

Example:
  python analysis/modadd/curriculum.py --run-dir runs/modadd_quick_s0/attn_curr_s0
"""
import sys

from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    args = analysis_parser(__doc__).parse_args()
    from figures.modadd_report import plot_curriculum
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.curriculum(run.dir)
    path = write_result(run, "modadd_curriculum", res)
    plot_curriculum(res, run.analysis_dir / "modadd_curriculum.png")
    for m, f in res["forgetting"].items():
        print(f"m={m}: peak in own stage {f['peak_in_own_stage']}, final {f['final']}, drop {f['drop_from_peak']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
