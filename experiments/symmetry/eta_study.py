#!/usr/bin/env python
"""ECD η-concentration mini-study: the symmetry study's ECD run (symmetric model) for seeds × η, then per η the
across-seed SD of the final and smoothed validation loss and of two geometry summaries, and the test of
"higher η → less variance across runs" with its permutation null (training/studies/ecd_eta.py).

Trains every run into STUDY/eta<η>_s<seed> side by side on a CPU (--jobs; finished runs are skipped, unfinished
ones resumed exactly), then writes STUDY/analysis/ecd_eta.json (every number) and STUDY/report.md.

Examples:
  python experiments/symmetry/eta_study.py                       # cpu size: 3 η × 4 seeds, minutes on 2 cores
  python experiments/symmetry/eta_study.py --etas 10,100,1000 --seeds 0,1,2,3,4,5
  python experiments/symmetry/eta_study.py --size test --out-dir /tmp/eta    # seconds
"""
import sys
import time
from pathlib import Path

from training.core.cli import run_main
from training.core.config import parse_override
from training.core.runio import atomic_write_json, atomic_write_text
from training.studies import ecd_eta as es
from training.studies.common import (
    RunJob,
    add_jobs_arg,
    executor_from_args,
    refuse_protocol_overrides,
    study_parser,
    train_runs,
)


def parse_args(argv=None):
    p = study_parser(__doc__, scale="size", scale_default="cpu",
                     scale_help=f"{' | '.join(es.SIZES)} (default cpu: the symmetry study's cpu model)",
                     seed_default=0, seed_help="seed of the permutation and bootstrap draws (default 0; the runs' "
                                               "seeds are --seeds)", out_default=f"runs/{es.STUDY}_<size>")
    p.add_argument("--etas", help="comma-separated η values (default: the size's; cpu: 30,100,300)")
    p.add_argument("--seeds", help="comma-separated training seeds (default: the size's; cpu: 0,1,2,3)")
    p.add_argument("--analyse-only", action="store_true", help="train nothing; analyse the runs already trained")
    add_jobs_arg(p)
    args = p.parse_args(argv)
    args.runner = executor_from_args(args)
    refuse_protocol_overrides((parse_override(i)[0] for i in args.set), es.PROTOCOL_FIELDS, "η-concentration",
                              {"seed": " (use --seeds)", "ecd_eta": " (use --etas)"})
    args.etas = es.parse_numbers(args.etas, float, "etas") if args.etas else None
    args.seeds = es.parse_numbers(args.seeds, int, "seeds") if args.seeds else None
    return args


def main(argv=None) -> int:
    t0 = time.monotonic()
    args = parse_args(argv)
    overrides = dict(parse_override(i) for i in args.set)
    overrides["progress"] = not args.no_progress
    runs = es.run_configs(args.size, args.etas, args.seeds, overrides)
    root = Path(args.out_dir) if args.out_dir else Path("runs") / f"{es.STUDY}_{args.size}"
    print(f"η-concentration study in {root}: size {args.size}, {len(runs)} runs", flush=True)
    if not args.analyse_only:
        train_runs([RunJob(name, cfg, root / name) for name, (_, _, cfg) in runs.items()], args.runner,
                   log=lambda msg: print(msg, flush=True))
    result = es.analyse(root, runs, seed=args.seed, log=lambda msg: print(msg, flush=True))
    wall = time.monotonic() - t0
    result["wall_s_this_invocation"] = round(wall, 1)
    path = root / "analysis" / f"{es.RESULT}.json"
    atomic_write_json(path, result)
    note = " (analysis only)" if args.analyse_only else ""
    atomic_write_text(root / "report.md", es.report_markdown(result, args.size, wall, note))
    c = result["claim"]
    print(f"claim: {c['claim']}\n  {c['observed']}\n  seeds per η: {c['seeds']}; verdict: {c['verdict']}")
    print(f"wrote {path} and {root / 'report.md'} ({wall:.0f} s in this invocation)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
