"""Difficulty sweep of the marker task over (m_max, C): one attention-only run per cell, then per cell the final
held-out accuracy beside its chance level (Wilson 95 % interval, exact binomial p-value), learned or not, and
the execution dimension (median attention-block r90) beside its random-walk null (training/studies/modadd_sweep.py).

Runs: SWEEP/m<m_max>_C<C>_s<seed> (resumable; finished runs are skipped, analyses cached). Writes
SWEEP/sweep.md and SWEEP/analysis/modadd_sweep.json.

Examples:
  python experiments/modadd/difficulty_sweep.py                          # quick: 3 x 3 cells, a 2-core CPU, minutes
  python experiments/modadd/difficulty_sweep.py --preset test --out-dir /tmp/sweep    # seconds
"""
import sys
import time
from pathlib import Path

from training.core.cli import run_main
from training.core.config import parse_override
from training.core.errors import UserError
from training.studies import modadd_sweep as sw
from training.studies.common import add_jobs_arg, executor_from_args, study_parser


def parse_args(argv=None):
    p = study_parser(__doc__, scale_help=f"{' | '.join(sw.SIZES)} (default quick)", seed_default=0,
                     seed_help="seed of every run (default 0)", out_default=f"runs/{sw.STUDY}_<preset>_s<seed>")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the finished runs")
    p.add_argument("--redo-analysis", action="store_true", help="recompute every analysis even if cached")
    add_jobs_arg(p)
    args = p.parse_args(argv)
    args.runner = executor_from_args(args)
    if args.preset not in sw.SIZES:
        raise UserError(f"unknown --preset '{args.preset}' (choose from {', '.join(sw.SIZES)})")
    return args


def main() -> int:
    args = parse_args()
    overrides = dict(parse_override(item) for item in args.set)
    root = Path(args.out_dir) if args.out_dir else Path("runs") / f"{sw.STUDY}_{args.preset}_s{args.seed}"
    sw.run_configs(args.preset, args.seed, overrides)          # validates every config before any work
    t0 = time.monotonic()
    print(f"difficulty sweep in {root}: preset {args.preset}, seed {args.seed}", flush=True)
    timings = {}
    if not args.analyse_only:
        timings = sw.train_all(root, args.preset, args.seed, overrides, progress=not args.no_progress,
                               log=lambda s: print(s, flush=True), jobs=args.runner)
    t1 = time.monotonic()
    res = sw.analyse_all(root, args.preset, args.seed, overrides, redo=args.redo_analysis,
                         log=lambda s: print(s, flush=True))
    if not res["cells"]:
        raise UserError(f"no finished run in {root} to analyse; run without --analyse-only first")
    res["timings_s"] = {"train_this_invocation": timings, "analysis": round(time.monotonic() - t1, 2),
                        "total_this_invocation": round(time.monotonic() - t0, 2)}
    res["overrides"] = args.set
    path = sw.write_outputs(res, root)
    print(sw.markdown(res))
    print(f"wrote {path} ({time.monotonic() - t0:.0f} s in this invocation)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
