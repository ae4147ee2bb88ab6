#!/usr/bin/env python
"""How the drift grows: power-law exponents of the backbone and transverse displacements per regime, beside the
random-walk and weight-decayed-walk exponents and the mechanism's prediction (arXiv 2602.23696 §4.2, eq. 20:
backbone ∝ T, transverse ∝ √T).

For the trunk and each block (training/geometry/drift_scaling.py), per regime [t0, t1] (the whole run, either
side of the λ switch and of the LR peak when inside the run, and any ``--window``): Δa(τ) = ⟨x(t) − x(t0), v_b⟩
and ‖Δr(τ)‖ on the run's global backbone v_b, τ = t − t0, each fitted as c·τ^α on logs, with the ordinary and
the Newey–West 95 % intervals of α. The nulls are measured the same way (their own in-sample PC1), which matters:
for an isotropic walk the in-sample Δa already grows almost linearly and ‖Δr‖ is flattened.

Writes RUN/analysis/drift_scaling.json and drift_scaling.png.

Examples::

    python analysis/backbone/drift_scaling.py --run-dir runs/quick
    python analysis/backbone/drift_scaling.py --run-dir runs/quick --window late=300:600
"""
import sys

import numpy as np

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.drift_scaling import exponent_table, regimes_of, scaling_beside_nulls
from training.geometry.phases import parse_window
from training.geometry.trajectory import cached_gram


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--window", action="append", default=[], metavar="[NAME=]START:END",
                   help="an extra regime, in steps (repeatable)")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    ckpts = run.checkpoints()
    regimes = regimes_of(run.cfg, ckpts.steps, [parse_window(w) for w in args.window])
    progress = not args.no_progress
    trunk = scaling_beside_nulls(cached_gram(ckpts, None, progress=progress), regimes, run.cfg)
    blocks = [{"block": b, **scaling_beside_nulls(cached_gram(ckpts, b, progress=progress), regimes, run.cfg)}
              for b in range(run.cfg.n_layer)]
    result = {"run_dir": str(run.dir), "steps": ckpts.steps,
              "regimes": [{"name": w.name, "start": w.start, "end": w.end} for w in regimes],
              "trunk": trunk, "trunk_table": exponent_table(trunk), "blocks": blocks}
    path = write_result(run, "drift_scaling", result)

    fig, ax = figure(1, 2, width=5.2)
    whole = trunk["observed"][0]
    for j, kind in enumerate(("backbone", "transverse")):
        for key, style, label in (("observed", "k-", "trunk"), ("random_walk", "k--", "random-walk null"),
                                  ("weight_decayed_walk", "k:", "weight-decayed walk")):
            reg = trunk[key][0] if trunk.get(key) else None
            if not reg or not reg["curves"]:
                continue
            tau = np.asarray(reg["curves"]["tau"], dtype=float)
            y = np.abs(np.asarray(reg["curves"][kind], dtype=float))
            fit = reg[kind]
            lab = label + (f" (α = {fit['exponent']:.2f})" if fit["exponent"] is not None else "")
            ax[0, j].loglog(tau[y > 0], y[y > 0], style, lw=1.5 if key == "observed" else 1, label=lab)
        if whole["curves"]:
            tau = np.asarray(whole["curves"]["tau"], dtype=float)
            y0 = abs(whole["curves"][kind][0]) or 1.0
            pred = trunk["predicted"][kind]
            ax[0, j].loglog(tau, y0 * (tau / tau[0]) ** pred, color="0.6", lw=0.8, label=f"∝ τ^{pred:g} (eq. 20)")
        ax[0, j].set(xlabel="τ = t − t0 (steps)", ylabel="|Δa(τ)|" if kind == "backbone" else "‖Δr(τ)‖",
                     title=f"{kind} displacement, whole run")
        ax[0, j].legend(fontsize=6)
    save_figure(fig, run, "drift_scaling")
    for r in result["trunk_table"]:
        e = "-" if r["exponent"] is None else f"{r['exponent']:.2f}"
        ci = "" if not r["ci95_hac"] else f" [{r['ci95_hac'][0]:.2f}, {r['ci95_hac'][1]:.2f}]"
        n = "-" if r["random_walk"] is None else f"{r['random_walk']:.2f}"
        print(f"trunk {r['regime']}, {r['curve']}: α {e}{ci} (random walk {n}, eq. 20 {r['predicted']:g})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
