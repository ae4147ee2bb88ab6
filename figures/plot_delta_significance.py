"""Switch-pair significance across seeds: each pair's amplitude δ = p(peak) − p(trough) against its peak step.

The figure of skydancerosel/mini_gpt's ``figures/plot_delta_significance.py``, drawn from each run's
oscillation manifest (RUN/oscillation_manifest.json) and evaluation noise (RUN/analysis/eval_noise.json,
σ_eval = its mean bootstrap std). Panel (a): δ against the peak step, one colour per run, with the bands
±2σ and ±3σ of the runs' mean σ_eval (shaded) and each run's own 3σ (dashed line in its colour); panel (b):
δ/σ_eval of its own run against the peak step, with the tier cut-offs 2 and 3 (tiers A ≥ 3σ, B 2–3σ, C < 2σ:
training/geometry/switching.py TIER_CUTS, mini_gpt's K_A = 3, K_B = 2) and each run's calibrated noise-level
amplitude k*·σ (dotted; at most 0.2 white-noise peaks per series of its length). The legend counts the pairs
of each tier per run. A run without eval_noise.json is refused; a run without switch pairs is drawn as
"no pairs" in the legend.

Output: OUT (default fig_delta_significance.png in the current directory; .pdf beside it).

Example:  python figures/plot_delta_significance.py --run-dir runs/cpu_seeds/s42 --run-dir runs/cpu_seeds/s271 \\
              --out runs/cpu_seeds/figures/fig_delta_significance.png
"""
import argparse
import sys
from pathlib import Path

from figures.style import SERIES, figure, panel_label, save
from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError
from training.geometry.switching import MANIFEST, SwitchPair, eval_noise_std, oscillation_tiers


def load(run_dir: Path) -> dict:
    """One run's pairs with their tiers (training.geometry.switching.oscillation_tiers)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    path = runio.find_analysis_input(run_dir, MANIFEST, top=True)
    if not path.exists():
        raise UserError(f"{path} is missing; run analysis/switching/detect_oscillations.py --run-dir {run_dir} first")
    m = runio.read_json(path, "oscillation manifest")
    sigma, why = eval_noise_std(run_dir)
    if sigma is None:
        raise UserError(f"{run_dir}: no evaluation noise: {why}")
    try:
        pairs = [SwitchPair(int(q["peak_step"]), int(q["trough_step"]), float(q["peak_p_ood"]),
                            float(q["trough_p_ood"]), float(q["amplitude"]), str(q.get("kind", "")),
                            q.get("at_noise_level")) for q in m["pairs"]]
        n_points = int(m.get("n_points") or len(m.get("settings", {}).get("steps", [])) or 0)
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not an oscillation manifest; run detect_oscillations.py again") from None
    cfg = runio.read_run_config(run_dir)
    return {"label": f"seed {cfg.seed}", "dir": str(run_dir), **oscillation_tiers(pairs, sigma, max(n_points, 0))}


def draw(runs: list[dict], out: Path, formats=("png", "pdf")) -> list[Path]:
    fig, ax = figure(1, 2, width=4.6, height=3.8)
    a, b = ax[0, 0], ax[0, 1]
    mean_sigma = sum(r["sigma"] for r in runs) / len(runs)
    for k, shade in ((3, "0.93"), (2, "0.85")):
        a.axhspan(-k * mean_sigma, k * mean_sigma, color=shade, zorder=0,
                  label=f"±{k}σ (mean σ_eval {mean_sigma:.3f})")
    for i, r in enumerate(runs):
        c = SERIES[i % len(SERIES)]
        n = r["counts"]
        lbl = (f"{r['label']}: A {n['A']}, B {n['B']}, C {n['C']}" if r["pairs"] else f"{r['label']}: no pairs")
        x = [q["peak_step"] for q in r["pairs"]]
        a.plot(x, [q["delta"] for q in r["pairs"]], "o", c=c, label=lbl)
        a.axhline(3 * r["sigma"], c=c, ls="--", lw=0.8)
        b.plot(x, [q["delta_sigma"] for q in r["pairs"]], "o", c=c, label=r["label"])
        if r["null"]["calibrated_multiplier"] is not None:
            b.axhline(r["null"]["calibrated_multiplier"], c=c, ls=":", lw=0.8)
    for k in (2, 3):
        b.axhline(k, c="k", lw=0.8, ls="--")
    a.axhline(0, c="k", lw=0.5)
    a.set(xlabel="peak step", ylabel="δ = p_ood(peak) − p_ood(trough)", title="switch-pair amplitude")
    b.set(xlabel="peak step", ylabel="δ / σ_eval", title="in units of the evaluation noise (tiers at 2, 3)")
    a.legend(fontsize=6)
    b.legend(fontsize=6)
    panel_label(a, "(a)")
    panel_label(b, "(b)")
    out = Path(out)
    return save(fig, out.with_suffix(""), formats)


def main() -> int:
    first = __doc__.strip().split("\n\n")[0]
    ap = CommandParser(description=first, epilog=__doc__.strip()[len(first):].strip(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", action="append", required=True, help="a run directory (repeat per seed)")
    ap.add_argument("--out", default="fig_delta_significance.png", help="output PNG (a PDF is written beside it)")
    ap.add_argument("--no-progress", action="store_true", help="accepted for symmetry with the analyses (no bars here)")
    args = ap.parse_args()
    runs = [load(Path(d)) for d in args.run_dir]
    paths = draw(runs, Path(args.out))
    for r in runs:
        print(f"{r['label']}: sigma_eval {r['sigma']:.4f}, {len(r['pairs'])} pair(s), tiers {r['counts']}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
