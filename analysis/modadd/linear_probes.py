"""Linear probes on a modular-addition run: how well a linear read-out of the residual stream at the readout
(separator) position predicts the label y = (sum of the marked values) mod C and the number of markers m,
after the embedding and after each block, at one checkpoint.

Each probe (multinomial logistic regression, training/geometry/linear_probe.py) is fitted on --n-train seeded task
sequences and scored on --n-test other ones (a disjoint set): the HELD-OUT accuracy is the result; the
training accuracy is reported next to it, labelled, to show the gap (skydancerosel/bubble-modadd reported training
accuracy). Chance: 1/C for y, 1/(number of m values) for m, and the majority-class rate.

Writes RUN/analysis/modadd_linear_probes.json and modadd_linear_probes.png.

Example:
  python analysis/modadd/linear_probes.py --run-dir runs/modadd_quick_s0/attn_ref_s0
"""
import sys

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result

NAME = "modadd_linear_probes"


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--step", type=int, help="checkpoint step to probe (default: the last)")
    p.add_argument("--n-train", type=int, default=2048, help="sequences the probes are fitted on (default 2048)")
    p.add_argument("--n-test", type=int, default=1024, help="held-out sequences they are scored on (default 1024)")
    p.add_argument("--l2", type=float, help="fixed L2 penalty (default: chosen on a split of the training set)")
    args = p.parse_args()
    if args.l2 is not None and args.l2 <= 0:
        raise UserError(f"--l2 must be positive (got {args.l2})")
    from figures.modadd_report import plot_linear_probes
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.linear_probes(run.dir, step=args.step, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                           l2=args.l2)
    path = write_result(run, NAME, res)
    plot_linear_probes(res, run.analysis_dir / f"{NAME}.png")
    print(f"step {res['step']}: {res['n_train']} training / {res['n_test']} held-out sequences; chance y "
          f"{res['chance']['y']:.3f}, m {res['chance']['m']:.3f}; the model's own answer accuracy "
          f"{res['model_answer_acc_test']:.3f}")
    for r in res["layers"]:
        print(f"  {r['name']:<10} y: held-out {r['y']['test_acc']:.3f} (train {r['y']['train_acc']:.3f})   "
              f"m: held-out {r['m']['test_acc']:.3f} (train {r['m']['train_acc']:.3f})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
