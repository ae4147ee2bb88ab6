"""The seeds of one configuration drawn over each other, each beside its own null.

Four panels: the backbone coordinate a(t) and the residual norm ‖r(t)‖ (RUN/analysis/trajectory_pca.json,
trunk.null_profile: the run's and its random walk's with the same increment norms), the lagged update alignment
C(t) (same file, signed), and the OOD probe accuracy p_ood(t) (RUN/metrics.jsonl) with the binomial band
±2 σ_eval around 0.5. Solid lines are the runs, dashed lines of the same colour their nulls.

Output: OUT/seed_overlay.png and .pdf.

Example:  python figures/seed_overlay.py --run-dir runs/cpu_seeds/s42 --run-dir runs/cpu_seeds/s271 --out-dir runs/cpu_seeds/figures
"""
import argparse
import math
import sys
from pathlib import Path

from figures.style import SERIES, figure, legend_below, mark_step, panel_label, save
from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError


def load(run_dir: Path) -> dict:
    cfg = runio.read_run_config(run_dir)
    path = run_dir / "analysis" / "trajectory_pca.json"
    if not path.exists():
        raise UserError(f"{path} is missing; run analysis/backbone/trajectory_pca.py --run-dir {run_dir} first")
    prof = runio.read_json(path, "trajectory-PCA result").get("trunk", {}).get("null_profile")
    if not prof:
        raise UserError(f"{path} has no trunk.null_profile; run analysis/backbone/trajectory_pca.py again")
    p = [(r["step"], r["p_ood"]) for r in runio.read_metrics(run_dir) if r.get("p_ood") is not None]
    switch = cfg.lambda_step if cfg.lambda_after != cfg.lambda_probe else None
    return {"label": f"seed {cfg.seed}", "observed": prof["observed"], "null": prof["random_walk"], "p_ood": p,
            "switch": switch, "n_probe_eval": cfg.n_probe_eval}


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    ap = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", action="append", required=True, help="a run directory (repeat for every seed)")
    ap.add_argument("--out-dir", required=True, help="where seed_overlay.png/.pdf go")
    args = ap.parse_args()
    runs = [load(Path(d)) for d in args.run_dir]
    fig, axes = figure(2, 2)
    ax_a, ax_r, ax_c, ax_p = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    for i, r in enumerate(runs):
        col = SERIES[i % len(SERIES)]
        o, n = r["observed"], r["null"]
        ax_a.plot(o["steps"], o["a"], color=col, label=r["label"])
        ax_a.plot(n["steps"], n["a"], color=col, ls="--", lw=0.9, label="random-walk null (dashed)")
        ax_r.plot(o["steps"], o["residual_norm"], color=col)
        ax_r.plot(n["steps"], n["residual_norm"], color=col, ls="--", lw=0.9)
        ax_c.plot(o["C"]["steps"], o["C"]["signed"], color=col)
        ax_c.plot(n["C"]["steps"], n["C"]["signed"], color=col, ls="--", lw=0.9)
        if r["p_ood"]:
            s, p = zip(*r["p_ood"])
            ax_p.plot(s, p, color=col)
    sig = 0.5 / math.sqrt(min(r["n_probe_eval"] for r in runs))
    ax_p.axhspan(0.5 - 2 * sig, 0.5 + 2 * sig, color="0.85", label="0.5 ± 2σ_eval")
    for ax in (ax_a, ax_r, ax_c, ax_p):
        mark_step(ax, runs[0]["switch"], "λ switch")
        ax.set_xlabel("step")
    ax_c.axhline(0, color="0.5", lw=0.6)
    ax_a.set_ylabel("a(t)")
    ax_r.set_ylabel("‖r(t)‖")
    ax_c.set_ylabel("C(t) (signed)")
    ax_p.set_ylabel("p_ood")
    for ax, t in zip((ax_a, ax_r, ax_c, ax_p), "abcd"):
        panel_label(ax, f"({t})")
    legend_below(fig, [ax_a, ax_p], ncols=4)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = save(fig, out / "seed_overlay")
    print(f"wrote {', '.join(map(str, paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
