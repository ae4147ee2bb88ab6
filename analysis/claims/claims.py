"""The claims ledger: the paper's claims judged against their nulls over the runs (seeds) of one configuration.

Reads the analysis outputs of each run (run the per-seed pipeline, or at least
analysis/backbone/trajectory_pca.py, first), applies the verdict rule of training/studies/claims.py and
writes claims.json and claims.md: per claim the statistic, each run's observed value and null, the effect,
the margin, the verdict, and the regime flags (a run outside the paper's regime cannot confirm or refute it).

Examples:
  python analysis/claims/claims.py --run-dir runs/quick                        # -> runs/quick/analysis/claims.*
  python analysis/claims/claims.py --run-dir runs/s42 --run-dir runs/s271 --run-dir runs/s314 --out-dir runs/seeds
  python analysis/claims/claims.py --run-dir runs/quick --study runs/sgd_controls_quick_s42 \
      --study runs/beta_sweep_quick_s42 --out-dir runs/quick_ledger                 # claims 16, 17 and 18 too
  python analysis/claims/claims.py --study runs/modadd_quick_s0 --study runs/modadd_quick_s1 \
      --out-dir runs/modadd_ledger                         # the modular-addition claims M1, M2 over two seeds
"""
import sys
from pathlib import Path

from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.studies import claims


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip())
    p.add_argument("--run-dir", action="append", default=[],
                   help="a run directory (repeat the flag for every seed of the configuration)")
    p.add_argument("--study", action="append", default=[],
                   help="a study directory (repeat per seed): SGD controls (claims 16, 17), β2 sweep (18), "
                        "modular addition (M1, M2), symmetry breaking (S1)")
    p.add_argument("--out-dir", help="where claims.json and claims.md go (default RUN/analysis for one run; "
                                     "required for several)")
    p.add_argument("--seed", type=int, default=0, help="unused: nothing here is random (accepted for uniformity)")
    p.add_argument("--no-progress", action="store_true", help="accepted for uniformity")
    args = p.parse_args()
    if not args.run_dir and not args.study:
        raise UserError("give at least one --run-dir or --study")
    if (len(args.run_dir) > 1 or not args.run_dir) and args.out_dir is None:
        raise UserError("several --run-dir, or --study alone, need --out-dir DIR for the ledger they share")
    out = runio.check_out_dir(args.out_dir) if args.out_dir is not None else runio.analysis_dir(args.run_dir[0])
    if len(args.run_dir) == 1 and args.out_dir is not None:     # one run analysed elsewhere (e.g. read-only)
        runio.redirect_analysis(Path(args.run_dir[0]), out)
    led = claims.ledger(args.run_dir, args.study)
    runio.atomic_write_json(out / "claims.json", led)
    runio.atomic_write_text(out / "claims.md", claims.markdown(led))
    for c in led["claims"]:
        print(f"claim {c['claim']!s:>2} {c['verdict']:28s} {c['statistic']}")
    if led["out_of_regime"]:
        print("outside the paper's regime: " + "; ".join(led["regime_flags"]))
    print(f"wrote {out / 'claims.json'} and claims.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
