"""Reheating: restart a run from one of its checkpoints with a doubled probe weight and a new warmup-cosine
schedule, at several learning rates (arXiv 2602.23696 §6; mini_gpt README finding 5).

Each reheating run is an ordinary run directory RUN/reheat/ckpt<step>_lr<lr>_<fresh|moments>/: the weights
of checkpoint --from-step (default: the last), a fresh optimizer (--moments fresh, the paper's protocol) or
the optimizer moments saved at that step (--moments saved; the last checkpoint's are always kept, others
need a run trained with --set keep_optimizer_states=true), constant λ, linear warmup then cosine to the
floor, an evaluation and a checkpoint every --eval-every steps, and a data stream of its own (never the
original run's batch order). Defaults are the paper's protocol scaled to the run's preset
(training/studies/common.py): paper 2000 steps, warmup 200, λ 4, lrs 1e-3,6e-4,3e-4, eval every 200; quick 120,
12, 2, 3e-3,1.8e-3,9e-4, 12. On a CPU the runs train side by side, one process each (--jobs; small models use
one core better than two); on a GPU one after another. Finished runs are skipped and interrupted ones resumed,
so re-running the command completes the set.

Then: python analysis/reheating/reheat_geometry.py --run-dir RUN

Example:  python experiments/reheating/reheat.py --run-dir runs/quick --moments both
"""
import argparse
import sys

from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.config import parse_override
from training.core.errors import UserError
from training.geometry.analysis_io import open_run
from training.studies import common as studies
from training.studies import executors, reheating


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="the finished run to reheat")
    p.add_argument("--seed", type=int, help="training seed of the reheating runs (default: the original run's); "
                                            "their data stream is keyed by this seed and the start checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--from-step", type=int, help="checkpoint step to reheat from (default: the last checkpoint)")
    p.add_argument("--lrs", help="comma-separated peak learning rates (default: the paper's 1e-3,6e-4,3e-4, scaled)")
    p.add_argument("--steps", type=int, help="length of each reheating run (default: 2000 paper steps, scaled)")
    p.add_argument("--warmup", type=int, help="linear warmup steps (default: 200 paper steps, scaled)")
    p.add_argument("--lam", type=float, help="constant probe-loss weight λ (default: twice the preset's initial λ)")
    p.add_argument("--eval-every", type=int, help="evaluation and checkpoint cadence (default: 100 paper steps, scaled)")
    p.add_argument("--moments", default="fresh", help="fresh | saved | both: fresh optimizer (the paper) and/or the "
                                                      "optimizer moments saved at --from-step (default fresh)")
    p.add_argument("--jobs", type=int, help="runs trained side by side, each in its own process (default: all at "
                                            "once on a CPU, up to 4 per core; 1 on a GPU)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of every reheating run (e.g. device=cuda, beta2=0.8); fields "
                        "that change the computation are added to the run names")
    executors.add_executor_args(p)
    args = p.parse_args()
    args.runner = executors.from_args(args)     # --jobs, or --executor slurm's jobs: refused here if inconsistent
    modes = reheating.moment_modes(args.moments)
    run = open_run(args.run_dir)
    from_step = reheating.start_checkpoint(run.dir, run.steps, args.from_step, run.status)
    d = studies.reheat_defaults(run.cfg)
    lrs = reheating.parse_lrs(args.lrs) if args.lrs else d["lrs"]
    overrides = dict(parse_override(item) for item in args.set)
    if args.seed is not None and args.seed != run.cfg.seed:
        overrides["seed"] = args.seed
    overrides["progress"] = not args.no_progress
    specs = reheating.plan_reheats(run.dir, run.cfg, from_step, lrs,
                                   d["steps"] if args.steps is None else args.steps,
                                   d["warmup"] if args.warmup is None else args.warmup,
                                   d["lam"] if args.lam is None else args.lam,
                                   d["eval_every"] if args.eval_every is None else args.eval_every,
                                   modes, overrides)
    c = specs[0].cfg
    print(f"reheating {run.dir} from step {from_step}: {len(specs)} run(s), {c.steps} steps, warmup {c.warmup}, "
          f"λ {c.lambda_probe:g}, eval every {c.eval_every}, lrs {', '.join(f'{s.lr:g}' for s in specs)}")
    reheating.train_reheats(specs, run.dir, args.runner)
    print(f"{'run':<36} {'state':<10} {'p0':>6} {'peak':>6} {'@step':>6} {'G':>7} {'final':>6}")
    for spec in specs:
        state = studies.run_state(spec.dir)
        try:
            r = studies.reentry(runio.read_metrics(spec.dir))
            print(f"{spec.name:<36} {state:<10} {r['p0']:6.3f} {r['peak_p_ood']:6.3f} {r['peak_step']:6d} "
                  f"{r['G']:+7.3f} {r['final_p_ood']:6.3f}")
        except UserError:     # a run with no usable evaluation is reported by its state only
            print(f"{spec.name:<36} {state:<10}")
    print(f"next: python analysis/reheating/reheat_geometry.py --run-dir {run.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
