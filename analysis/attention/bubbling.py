"""Attention entropy and bubbling of a modular-addition run: per layer and head, the entropy and top-k mass of
the readout row (the separator) at every checkpoint for each m, the attention mass on value / marker /
separator / other slots, and the accuracy when every layer's attention is cut to its top-k keys
(k in {T+1, 8, 4, 2, 1}) at the last checkpoint.

Writes RUN/analysis/modadd_attention.json and modadd_attention.png. Formulas: training/geometry/attention_probe.py.

Example:
  python analysis/attention/bubbling.py --run-dir runs/modadd_quick_s0/attn_ref_s0
"""
import sys

from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--probe-n", type=int, default=128, help="probe sequences per m (default 128)")
    args = p.parse_args()
    from figures.modadd_report import plot_attention
    from training.studies import modadd_analysis as ma
    run = open_run(args.run_dir, args.out_dir)
    res = ma.attention(run.dir, probe_n=args.probe_n, progress=not args.no_progress)
    path = write_result(run, "modadd_attention", res)
    plot_attention(res, run.analysis_dir / "modadd_attention.png")
    for m, v in res["last_layer_entropy"].items():
        print(f"m={m}: last-layer readout entropy {v[0]:.2f} -> min {min(v):.2f} -> {v[-1]:.2f} "
              f"(uniform {res['uniform_entropy']:.2f})")
    print("top-k override accuracy:", {k: round(v, 3) for k, v in res["override"]["mean"].items()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
