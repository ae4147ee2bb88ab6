"""Reheating controls: is the re-entry gain G more than noise, more than re-warming alone, more than a run with no
probe basin would show? (the verdict of claim 19 in docs/claims.md)

At one learning rate (the paper's 6e-4 of arXiv 2602.23696 Table 11, scaled to the preset; --lr) from the start
checkpoint (--from-step, default the last), three reheating runs with the protocol of experiments/reheating/reheat.py:

* λ doubled: the paper's protocol (λ twice the run's initial probe weight); the pipeline's stage 14 trains it;
* λ unchanged: the same with λ the run's initial probe weight (RUN/reheat/<name>_lam<λ>/);
* λ = 0 start: the original run trained again with probe weight 0 throughout (same seed, data, schedule;
  RUN/reheat_controls/lambda0/), then reheated exactly as the λ-doubled run.

G = max p_ood − p0 of each, and the noise bias σ_eval · E[max of n normals] that a curve which never moves shows
over the same n evaluations (training/geometry/nulls.py). Claim 19's statistic is G(λ doubled) − the largest
control, in units of σ_eval (the ledger asks for ≥ 4 in every seed). The first two runs and the λ = 0 original
train side by side on a CPU; finished runs are skipped and interrupted ones resumed, so running the command again
completes the set.

Output: RUN/analysis/reheat_controls.json.

Example:  python experiments/reheating/controls.py --run-dir runs/quick
"""
import argparse
import math
import sys

from training.core.cli import CommandParser, run_main
from training.core.config import parse_override
from training.geometry.analysis_io import open_run, write_result
from training.studies import executors, reheating


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip(),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", required=True, help="the finished run whose reheating is controlled")
    p.add_argument("--from-step", type=int, help="checkpoint step to reheat from (default: the last checkpoint)")
    p.add_argument("--lr", type=float, help="peak learning rate of the three reheatings (default: the paper's 6e-4, "
                                            "scaled to the preset)")
    p.add_argument("--jobs", type=int, help="runs trained side by side (default: all at once on a CPU, 1 on a GPU)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of every run (e.g. device=cuda), as reheat.py's --set")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    executors.add_executor_args(p)
    args = p.parse_args()
    args.runner = executors.from_args(args)     # --jobs, or --executor slurm's jobs: refused here if inconsistent
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        p.error(f"--lr must be a positive learning rate (got {args.lr})")
    run = open_run(args.run_dir)
    from_step = reheating.start_checkpoint(run.dir, run.steps, args.from_step, run.status)
    overrides = dict(parse_override(item) for item in args.set) | {"progress": not args.no_progress}
    plan = reheating.plan_controls(run.dir, run.cfg, from_step, overrides, args.lr)
    print(f"reheating controls of {run.dir} from step {from_step} at lr {plan.lr:g}: λ doubled ({plan.lam_doubled:g}), "
          f"λ unchanged ({plan.lam_unchanged:g}), λ = 0-trained start ({plan.lambda0_dir})")
    spec0 = reheating.train_controls(plan, run.dir, args.runner, overrides)
    result = reheating.controls_result(run.dir, run.cfg, plan, spec0)
    print(f"{'run':<18} {'p0':>6} {'peak':>6} {'@step':>6} {'G':>7}")
    for key, r in result["runs"].items():
        print(f"{key:<18} {r['p0']:6.3f} {r['peak_p_ood']:6.3f} {r['peak_step']:6d} {r['G']:+7.3f}")
    print(result["reading"])
    print(f"wrote {write_result(run, 'reheat_controls', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
