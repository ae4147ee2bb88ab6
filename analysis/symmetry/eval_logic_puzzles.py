#!/usr/bin/env python
"""Downstream evaluation on generated logic puzzles (the task kinds of evasilverstein/symmetry-breaking-files'
analysis/eval_logic_puzzles.py) for any checkpoint of any text-trained run of the toolkit.

The suite (training/geometry/logic_puzzles.py) is generated from --suite-seed: pattern completion (numeric and
alphabetic sequences), retrieval (near and far context), simple inference, negation and syntax (number
agreement). Each item is scored through the run's tokenizer (its tokenizer.json, or GPT-2): every candidate
gets the sum of its tokens' log-likelihood given the context, and the item is right when the answer beats
every distractor (a tie is wrong). Per task: accuracy, chance (1 / candidates), Wilson 95 % interval and the
exact one-sided binomial p-value against chance.

Writes RUN/analysis/logic_puzzles.json (logic_puzzles_step<S>.json with --step) and the bar plot beside it.

Examples::

    python analysis/symmetry/eval_logic_puzzles.py --run-dir runs/symmetry_cpu_s0/ecd_bq
    python analysis/symmetry/eval_logic_puzzles.py --run-dir runs/quick --step 200 --n-per-task 100
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.logic_puzzles import evaluate_run


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--step", type=int, help="checkpoint to evaluate (default: the last)")
    p.add_argument("--n-per-task", type=int, default=50, help="items per task (default 50)")
    p.add_argument("--suite-seed", type=int, default=0, help="seed of the generated suite (default 0)")
    p.add_argument("--far-fillers", type=int, default=3, help="filler sentences in far retrieval (default 3)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    res = evaluate_run(run.dir, args.step, seed=args.suite_seed, n_per_task=args.n_per_task,
                       far_fillers=args.far_fillers, device=args.device)
    name = "logic_puzzles" if args.step is None else f"logic_puzzles_step{res['step']}"
    path = write_result(run, name, res)
    tasks = list(res["tasks"])
    fig, ax = figure(1, 1, width=7)
    acc = [res["tasks"][t]["accuracy"] for t in tasks]
    err = [[a - res["tasks"][t]["ci95"][0] for a, t in zip(acc, tasks)],
           [res["tasks"][t]["ci95"][1] - a for a, t in zip(acc, tasks)]]
    ax[0, 0].bar(range(len(tasks)), acc, yerr=err)
    ax[0, 0].scatter(range(len(tasks)), [res["tasks"][t]["chance"] for t in tasks], marker="_", s=300, c="k",
                     label="chance")
    ax[0, 0].set(xticks=range(len(tasks)), ylim=(0, 1), ylabel="accuracy (Wilson 95 %)",
                 title=f"logic puzzles, step {res['step']}")
    ax[0, 0].set_xticklabels(tasks, fontsize=7)
    ax[0, 0].legend(fontsize=7)
    save_figure(fig, run, name)
    for t, d in res["tasks"].items():
        print(f"{t:16s} {d['accuracy']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] chance {d['chance']:.3f} "
              f"p(above chance) {d['p_above_chance']:.3g}  n {d['n']}")
    o = res["overall"]
    print(f"{'all':16s} {o['accuracy']:.3f} [{o['ci95'][0]:.3f}, {o['ci95'][1]:.3f}] chance {o['chance']:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
