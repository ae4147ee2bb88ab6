"""Modular-addition study (the skydancerosel/bubble-modadd README): train attention-only and standard models on the marker task,
analyse them (per-block spectra, attention bubbling, SGD commutators, SAE ablation, curriculum, held-out
linear probes) and write STUDY/report.md with figures and the headline table next to the bubble-modadd README's claims.

Nine runs are trained into STUDY/<run>, side by side on a CPU (--jobs; finished runs are skipped, an
interrupted one resumes exactly): attn_ref_s<seed>, attn_ref_s<seed+1>, mlp_ref_s<seed>, mlp_ref_s<seed+1>,
attn_strict_s<seed>, attn_curr_s<seed>, attn_curr_s<seed+1>, and modular multiplication (C = 7)
attn_mul_s<seed>, attn_mul_s<seed+1>. Analyses are cached in each run's analysis/ directory (recomputed when the
run changed or with --redo-analysis). See experiments/modadd/README.md.

Examples:
  python experiments/modadd/run_study.py                              # quick preset: a 2-core CPU, minutes
  python experiments/modadd/run_study.py --preset reference --set device=cuda   # the reference code's sizes
  python experiments/modadd/run_study.py --preset test --out-dir /tmp/modadd     # seconds
  python experiments/modadd/run_study.py --analyse-only --redo-analysis
"""
import sys
import time
from pathlib import Path

from training.core.cli import run_main
from training.core.config import parse_override
from training.core.errors import UserError
from training.core.runio import atomic_write_json
from training.studies import modadd_study as ms
from training.studies.common import add_jobs_arg, executor_from_args, study_parser


def parse_args(argv=None):
    p = study_parser(__doc__, scale_help=f"{' | '.join(ms.SIZES)} (default quick)", seed_default=0,
                     seed_help="seed of the first run (the second seed of each arm uses seed+1; default 0)",
                     out_default=f"runs/{ms.STUDY}_<preset>_s<seed>")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the finished runs")
    p.add_argument("--redo-analysis", action="store_true", help="recompute every analysis even if cached")
    add_jobs_arg(p)
    p.add_argument("--runs", default="", help="roles to train (comma list of attn,attn_seed2,mlp,mlp_seed2,strict,"
                                              "curriculum,curriculum_seed2,mul,mul_seed2; default all)")
    args = p.parse_args(argv)
    args.runner = executor_from_args(args)         # --jobs, or --executor slurm's jobs: refused here if inconsistent
    if args.preset not in ms.SIZES:
        raise UserError(f"unknown --preset '{args.preset}' (choose from {', '.join(ms.SIZES)})")
    roles = [r.strip() for r in args.runs.split(",") if r.strip()]
    bad = [r for r in roles if r not in {s.role for s in ms.run_specs(0)}]
    if bad:
        raise UserError(f"--runs: unknown role(s) {', '.join(bad)}")
    args.roles = roles or None
    return args


def main() -> int:
    args = parse_args()
    overrides = dict(parse_override(item) for item in args.set)
    root = Path(args.out_dir) if args.out_dir else Path("runs") / f"{ms.STUDY}_{args.preset}_s{args.seed}"
    ms.run_configs(args.preset, args.seed, overrides)          # validates every config before any work
    t0 = time.monotonic()
    print(f"modadd study in {root}: preset {args.preset}, seed {args.seed}", flush=True)
    timings = {}
    if not args.analyse_only:
        timings = ms.train_all(root, args.preset, args.seed, overrides, progress=not args.no_progress,
                               only=args.roles, log=lambda s: print(s, flush=True), jobs=args.runner)
    t1 = time.monotonic()
    res = ms.analyse_all(root, args.preset, args.seed, redo=args.redo_analysis, progress=not args.no_progress,
                         log=lambda s: print(s, flush=True))
    if not res["runs"]:
        raise UserError(f"no finished run in {root} to analyse; run without --analyse-only first")
    res["timings_s"] = {"train_this_invocation": timings, "analysis": round(time.monotonic() - t1, 2),
                        "total_this_invocation": round(time.monotonic() - t0, 2)}
    res["protocol"] = {"sizes": ms.SIZES[args.preset], "analysis": ms.ANALYSIS[args.preset], "overrides": args.set,
                       "runs": {s.name: dict(s.changes) for s in ms.run_specs(args.seed)}}
    atomic_write_json(root / "analysis" / f"{ms.RESULT}.json", res)
    from figures.modadd_report import write_report
    path = write_report(res, root)
    for key, h in res["headline"].items():
        if isinstance(h, dict) and "verdict" in h:
            print(f"{key:<11} {h['verdict']}")
    print(f"wrote {path} ({time.monotonic() - t0:.0f} s in this invocation)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
