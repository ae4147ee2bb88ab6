"""The paper's figures 1-4, its tables and every number its text quotes, for one run, from the analysis JSON.

Reads only files: RUN/config.json, RUN/metrics.jsonl, RUN/oscillation_manifest.json and RUN/analysis/*.json
(trajectory_pca, update_alignment, residual_decomposition, rayleigh_quotients, switching_alignment,
reheating), plus the study summaries STUDY/analysis/sgd_control_results.json (--sgd-dir) and
STUDY/analysis/beta_sweep_summary.json (--beta-dir), and a claims ledger (--ledger, the claims.json of
analysis/claims/claims.py). Nothing is recomputed from checkpoints.

Writes into OUT (default RUN/figures):
  fig1_backbone, fig2_alignment, fig3_fisher, fig4_reheating   (.png and .pdf)
  tables/<name>.md and tables/<name>.tex                        (Markdown and LaTeX booktabs)
  numbers.json    every quoted number (value, text, LaTeX macro, source), the tables' cells, the plotted series
  numbers.tex     one \\newcommand per number (macro names without digits) and \\ifhave<analysis> flags
With --paper-dir DIR the LaTeX side (numbers.tex, numbers.json, tables/*.tex, figures/*.pdf) is also
written there (paper/generated for paper/paper.tex).

A figure or table whose input is missing is skipped with one printed line (exit 0); --strict makes that
an error. A missing, incomplete or corrupt run directory, or a --ledger that is missing or not a claims
ledger, is a one-line error (exit 2).

Examples:
  python figures/make_paper_figures.py --run-dir runs/quick
  python figures/make_paper_figures.py --run-dir runs/quick --sgd-dir runs/sgd_controls_quick_s42 \\
      --beta-dir runs/beta_sweep_quick_s42 --paper-dir paper/generated
  python figures/make_paper_figures.py --run-dir runs/quick --ledger runs/cpu_seeds/claims.json \\
      --paper-dir paper/generated
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The implementation lives in figures/paperlib/; this file is the command. The names below are also what
# figures/make_report.py and tests/test_figures.py use as ``make_paper_figures.<name>``.
from figures.paperlib.formatting import fmt, macro_name  # noqa: F401
from figures.paperlib.inputs import RUN_INPUTS, STUDY_INPUTS, load_inputs, use_out_dir  # noqa: F401
from figures.paperlib.numbers import Numbers, numbers_switching  # noqa: F401
from figures.paperlib.outputs import Result, generate  # noqa: F401
from figures.paperlib.plots import FIGURES  # noqa: F401
from figures.paperlib.tables import Cell, Col, Table, table_switching  # noqa: F401
from training.core.cli import CommandParser, run_main


def parser() -> argparse.ArgumentParser:
    first = __doc__.strip().split("\n\n")[0]
    p = CommandParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.strip()[len(first):].strip())
    add_input_args(p)
    p.add_argument("--ledger", help="a claims ledger JSON (analysis/claims/claims.py; e.g. runs/cpu_seeds/claims.json) "
                                    "for the verdicts table table_claims")
    p.add_argument("--out", help="output folder (default RUN/figures, or DIR/figures with --out-dir)")
    p.add_argument("--paper-dir", help="also write numbers.tex, tables/*.tex and figures/*.pdf here (e.g. paper/generated)")
    p.add_argument("--strict", action="store_true", help="a missing input is an error instead of a skipped figure/table")
    return p


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", required=True, help="the run directory (its analysis JSON is read)")
    p.add_argument("--sgd-dir", help="SGD-control study directory (reads STUDY/analysis/sgd_control_results.json)")
    p.add_argument("--beta-dir", help="β2-sweep study directory (reads STUDY/analysis/beta_sweep_summary.json)")
    p.add_argument("--allow-incomplete", action="store_true", help="draw a run that has not finished training")
    p.add_argument("--seed", type=int, default=0, help="unused: nothing here is random (accepted for uniformity)")
    p.add_argument("--no-progress", action="store_true", help="accepted for uniformity (nothing here is long)")
    p.add_argument("--out-dir", help="read the run's analyses from DIR and write there instead of into the run "
                                     "(the --out-dir its analyses were given, e.g. for a read-only run)")


def main() -> int:
    args = parser().parse_args()
    base = use_out_dir(args.run_dir, args.out_dir)
    inp = load_inputs(args.run_dir, args.sgd_dir, args.beta_dir, args.allow_incomplete, ledger=args.ledger)
    out = Path(args.out) if args.out else (base or inp.run_dir) / "figures"
    res = generate(inp, out, Path(args.paper_dir) if args.paper_dir else None, args.strict)
    written = sum(1 for f in res.figures.values() if f["status"] == "written")
    print(f"{written} of {len(FIGURES)} figures, {len(res.tables)} tables; {len(res.skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
