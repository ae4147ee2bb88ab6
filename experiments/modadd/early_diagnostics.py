"""Early diagnostics vs success on modular addition (the open question of the skydancerosel/bubble-modadd README):
train attention-only runs on finite training sets of several sizes and seeds (held-out eval split), measure
at 15 % of training the distance to the final subspace, the effective rank and r90 (and the held-out accuracy
as a geometry-free baseline), and test whether they predict the final held-out accuracy or a grokking-like
transition: Spearman ρ with bootstrap and Fisher-z 95 % CIs, permutation nulls (overall and within each
training-set size), and the pre-registered verdict (training/studies/modadd_early.py).

Runs: STUDY/n<N>_s<seed> (resumable; finished runs are skipped). Writes STUDY/analysis/modadd_early.json and
STUDY/report.md with figures.

Examples:
  python experiments/modadd/early_diagnostics.py                         # quick: 16 runs, a 2-core CPU, minutes
  python experiments/modadd/early_diagnostics.py --preset test --out-dir /tmp/early   # seconds
  python experiments/modadd/early_diagnostics.py --analyse-only --redo-analysis
"""
import sys
import time
from pathlib import Path

from training.core.cli import run_main
from training.core.config import parse_override
from training.core.errors import UserError
from training.core.runio import atomic_write_json
from training.studies import modadd_early as me
from training.studies.common import add_jobs_arg, executor_from_args, study_parser


def parse_args(argv=None):
    p = study_parser(__doc__, scale_help=f"{' | '.join(me.SIZES)} (default quick)", seed_default=0,
                     seed_help="seed of the bootstrap and permutation draws (the runs' seeds are the protocol's; default 0)",
                     out_default=f"runs/{me.STUDY}_<preset>")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the finished runs")
    p.add_argument("--redo-analysis", action="store_true", help="recompute every analysis even if cached")
    add_jobs_arg(p)
    args = p.parse_args(argv)
    args.runner = executor_from_args(args)
    if args.preset not in me.SIZES:
        raise UserError(f"unknown --preset '{args.preset}' (choose from {', '.join(me.SIZES)})")
    return args


def main() -> int:
    args = parse_args()
    overrides = dict(parse_override(item) for item in args.set)
    root = Path(args.out_dir) if args.out_dir else Path("runs") / f"{me.STUDY}_{args.preset}"
    me.run_configs(args.preset, overrides)                  # validates every config before any work
    t0 = time.monotonic()
    print(f"early-diagnostics study in {root}: preset {args.preset}", flush=True)
    timings = {}
    if not args.analyse_only:
        timings = me.train_all(root, args.preset, overrides, progress=not args.no_progress,
                               log=lambda s: print(s, flush=True), jobs=args.runner)
    t1 = time.monotonic()
    res = me.analyse_all(root, args.preset, overrides, redo=args.redo_analysis, log=lambda s: print(s, flush=True),
                         seed=args.seed)
    if not res["runs"]:
        raise UserError(f"no finished run in {root} to analyse; run without --analyse-only first")
    res["timings_s"] = {"train_this_invocation": timings, "analysis": round(time.monotonic() - t1, 2),
                        "total_this_invocation": round(time.monotonic() - t0, 2)}
    res["overrides"] = args.set
    atomic_write_json(root / "analysis" / f"{me.RESULT}.json", res)
    from figures.modadd_early_report import write_report
    path = write_report(res, root)
    for key, v in res["verdicts"].items():
        if key.startswith(f"{me.EARLY:g}|"):
            print(f"{key.split('|')[1]:<18} {v}")
    print(f"wrote {path} ({time.monotonic() - t0:.0f} s in this invocation)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
