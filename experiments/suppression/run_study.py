"""Subspace suppression: per seed, train the preset's run with and without g ← g − λ_c·P_S g, then tabulate what
changes (p_ood oscillation, backbone PC1 beside its random-walk null, validation loss) across seeds.

Commands (resumable: re-running skips finished runs and resumes unfinished ones):
  train    <study>/s<seed>/baseline and <study>/s<seed>/suppressed for every seed of --seeds
  summary  <study>/analysis/suppression_summary.json and table_suppression.md
  all      train, then summary

--basis: online (default: the top --k directions of recent g_probe − g_LM differences, refreshed every --every
steps, default 200 paper steps scaled to the preset), backbone or switching (the top --k backbone directions /
the switching directions of each seed's own baseline run, taken once it has finished; a baseline without switch
pairs above noise gets a recorded "not applicable"), or a basis file (.npy / .safetensors, k × D_trunk; the same
for every seed). The suppression fields cannot be --set: use these flags.

Examples:
  python experiments/suppression/run_study.py all --preset quick --seeds 1,2,3
  python experiments/suppression/run_study.py all --preset cpu --seeds 42,271,314 --basis switching
  python experiments/suppression/run_study.py summary --preset quick --seeds 1,2,3
"""
import sys
from pathlib import Path

from training.core import runio
from training.core.cli import run_main
from training.core.errors import UserError
from training.core.tasks import validate
from training.studies import common as studies
from training.studies import suppression as sup

COMMANDS = ("train", "summary", "all")


def build_parser():
    p = studies.study_parser(__doc__, out_default=f"runs/{sup.STUDY}_<preset>")
    p.add_argument("command", choices=COMMANDS, help="what to do (see the commands below)")
    p.add_argument("--seeds", default="42,271,314", help="training seeds, comma-separated (default 42,271,314)")
    p.add_argument("--basis", default="online", help="online | backbone | switching | FILE (default online)")
    p.add_argument("--k", type=int, default=sup.DEFAULT_K, help=f"dimension of S (default {sup.DEFAULT_K})")
    p.add_argument("--every", type=int, help="online S: refresh every N steps (default 200 paper steps, scaled)")
    p.add_argument("--strength", type=float, default=sup.DEFAULT_STRENGTH, help="λ_c in (0, 1] (default 1)")
    studies.add_jobs_arg(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.runner = studies.executor_from_args(args)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    sup.check_overrides(args.set)
    seeds = sup.parse_seeds(args.seeds)
    if args.k < 1:
        raise UserError(f"--k must be at least 1 (got {args.k}): an empty subspace suppresses nothing")
    if not 0 < args.strength <= 1:
        raise UserError(f"--strength must be in (0, 1] (got {args.strength})")
    if args.every is not None and args.every < 1:
        raise UserError(f"--every must be at least 1 (got {args.every})")
    base = validate(studies.study_base_config(args))
    root = runio.check_out_dir(args.out_dir) if args.out_dir is not None else Path("runs") / f"{sup.STUDY}_{args.preset}"
    p = sup.protocol(base, args.basis, args.k, args.every, args.strength)
    if args.command in ("train", "all"):
        print(f"suppression study at preset {base.preset}: seeds {seeds}, S {p['mode']} (k {p['k']}, λ_c "
              f"{p['strength']:g}, every {p['every']}), {2 * len(seeds)} runs of {base.steps} steps in {root}")
        runs = sup.train(base, root, seeds, p, jobs=args.runner, log=lambda m: print(f"  {m}"))
        for label, r in runs.items():
            print(f"  {label}: {r['state']}" + (f" ({r['reason']})" if r.get("reason") else ""))
    if args.command in ("summary", "all"):
        if not sup.record_path(root).exists():
            raise UserError(f"{root} holds no suppression study; train it first (run_study.py train)")
        record = runio.read_json(sup.record_path(root), "study record")
        summary = sup.summarise(root, seeds, record)
        out = root / "analysis"
        runio.atomic_write_json(out / "suppression_summary.json", summary)
        md = sup.markdown(summary)
        runio.atomic_write_text(out / "table_suppression.md", md)
        print(md)
        print(f"wrote {out / 'suppression_summary.json'} and table_suppression.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
