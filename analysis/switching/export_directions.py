"""Export trunk directions of a run as a basis file for subspace suppression (pilot.py --suppress-basis FILE).

--kind backbone: the top --k uncentred principal directions of θ(t) − θ(0) (PC1 = the backbone v_b);
--kind switching: the unit switching directions (θ_peak − θ_trough)/‖·‖ of the p_ood switch pairs above the noise
level (from RUN/oscillation_manifest.json when present, else detected on the checkpointed evaluations), the --k
largest by amplitude (default all). A run without such a pair stops with one error line: it has no switching
direction. Output: a safetensors file with one k × D_trunk tensor "basis" (default RUN/analysis/<kind>_basis.safetensors)
and RUN/analysis/export_directions_<kind>.json (what was exported, with the explained fractions beside the
random-walk null's for the backbone).

Example:  python analysis/switching/export_directions.py --run-dir runs/quick --kind backbone --k 1
          python training/pilot.py --preset quick --seed 7 --suppress-strength 1 \\
              --suppress-basis runs/quick/analysis/backbone_basis.safetensors
"""
import sys
from pathlib import Path

from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.directions import KINDS, directions, write_basis


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--kind", default="backbone", choices=KINDS, help="backbone (default) | switching")
    p.add_argument("--k", type=int, help="directions to export (backbone default 1; switching default all)")
    p.add_argument("--basis-out", help="the basis file to write (default RUN/analysis/<kind>_basis.safetensors)")
    args = p.parse_args()
    if args.k is not None and args.k < 1:
        raise UserError(f"--k must be at least 1 (got {args.k}): an empty subspace suppresses nothing")
    run = open_run(args.run_dir, args.out_dir)
    rows, info = directions(run.dir, args.kind, args.k, progress=not args.no_progress)
    out = Path(args.basis_out) if args.basis_out else Path(run.analysis_dir) / f"{args.kind}_basis.safetensors"
    if out.suffix != ".safetensors":
        raise UserError(f"--basis-out {out}: the basis file must end in .safetensors")
    write_basis(out, rows, info, run.dir)
    path = write_result(run, f"export_directions_{args.kind}", {**info, "basis_file": str(out),
                                                                "shape": list(rows.shape)})
    print(f"wrote {out} ({rows.shape[0]} × {rows.shape[1]}) and {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
