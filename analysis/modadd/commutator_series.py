"""The SGD commutator's normalised defect D at many checkpoints of a modular-addition run, with (m_A, m_B)
drawn from a balanced design: D's spikes against the loss fluctuations (spike indices, phase-randomised and
circular-shift surrogates, the gradient-norm normalisation control), and median D and cos(g_A, g_B) per
(m_A, m_B) cell with a same-m / cross-m permutation test.

Writes RUN/analysis/modadd_commutator_series.json and modadd_commutator_series.png. Formulas:
training/geometry/commutator.py, surrogates.py, permutation.py.

Example:
  python analysis/modadd/commutator_series.py --run-dir runs/modadd_quick_s0/attn_ref_s0 --n-checkpoints 20 --samples 4
"""
import sys

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--n-checkpoints", type=int, default=20, help="checkpoints measured, evenly spread (default 20)")
    p.add_argument("--samples", type=int, default=4, help="commutator samples per checkpoint (default 4)")
    p.add_argument("--eta", type=float, default=1e-3, help="the plain SGD step of the commutator (default 1e-3)")
    p.add_argument("--surrogates", type=int, default=1000, help="surrogates per correlation (default 1000)")
    args = p.parse_args()
    for name in ("n_checkpoints", "samples", "surrogates"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    from figures.modadd_report import plot_commutator_series
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.commutator_series(run.dir, n_checkpoints=args.n_checkpoints, samples=args.samples, eta=args.eta,
                               n_surrogates=args.surrogates, seed=args.seed, progress=not args.no_progress)
    path = write_result(run, "modadd_commutator_series", res)
    plot_commutator_series(res, run.analysis_dir / "modadd_commutator_series.png")
    sp, cells = res["spikes"], res["cells"]
    if "D_vs_loss" in sp:
        v = sp["D_vs_loss"]
        print(f"spike index of D vs |ΔL|: r {v['r']}, phase p {v['p_phase']}, shift p {v['p_shift']} "
              f"({v['n']} checkpoints)")
    else:
        print(f"no spike analysis: {sp['reason']}")
    t = cells["same_vs_cross_D"]
    print(f"median D same-m {t['a']} vs cross-m {t['b']} (permutation p {t['p_value']}); empty cells {cells['empty']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
