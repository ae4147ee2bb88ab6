"""Rewrite STUDY/report.md and its figures from STUDY/analysis/modadd_study.json (no training, no analysis).

Example:
  python experiments/modadd/report.py --study-dir runs/modadd_quick_s0
"""
import sys
from pathlib import Path

from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.core.runio import read_json


def main() -> int:
    p = CommandParser(description=__doc__.strip().split("\n\n")[0])
    p.add_argument("--study-dir", required=True, help="the study directory written by run_study.py")
    p.add_argument("--no-progress", action="store_true", help="accepted for uniformity; nothing to show")
    args = p.parse_args()
    root = Path(args.study_dir)
    res_path = root / "analysis" / "modadd_study.json"
    if not res_path.exists():
        raise UserError(f"{res_path} does not exist; run experiments/modadd/run_study.py first")
    from figures.modadd_report import write_report
    print(f"wrote {write_report(read_json(res_path, 'study result'), root)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
