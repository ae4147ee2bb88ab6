#!/usr/bin/env python
"""Symmetry diagnostics from checkpoints (arXiv 2601.22257): Noether charge and balancedness.

Per head of every layer, with Θ_Q, Θ_K, Θ_V the head's row blocks of the fused qkv matrix and W_O^(h) the
head's column block of the output projection:

- balancedness B_QK = Θ_QΘ_Qᵀ − Θ_KΘ_Kᵀ and B_VO = Θ_VΘ_Vᵀ − W_OᵀW_O, conserved by gradient flow on a
  symmetric model: ‖B(t) − B(first)‖ (RMS over heads, absolute and relative to ‖B(first)‖);
- Noether charge J_QK = antisym(Θ_QΠ_Qᵀ + Θ_KΠ_Kᵀ), J_VO = antisym(Θ_VΠ_Vᵀ + W_OᵀΠ_O) with Π the
  difference of consecutive checkpoints (absolute, and relative to ‖Θ‖·‖Π‖ per head); for an ECD run that
  kept its optimizer states (keep_optimizer_states), also from ECD's velocity, the quantity ECD conserves
  exactly with the global projection at ν = 0;
- the layer QK charge Σ_h J_QK^h + antisym(b_Q π_bᵀ), the charge of the rotation common to a layer's heads, the
  one a learned query bias (attn_bq_learned) keeps (b_Q the bias, π_b its velocity; without the bias, the heads' sum).

Writes RUN/analysis/symmetry_diagnostics.json and symmetry_diagnostics.png.

Examples::

    python analysis/symmetry/symmetry_diagnostics.py --run-dir runs/symmetry_cpu_s0/ecd_sym
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.symmetry import symmetry_trajectory
from training.studies.symmetry_study import velocity_charge


def main() -> int:
    args = analysis_parser(__doc__).parse_args()
    run = open_run(args.run_dir, args.out_dir)
    res = symmetry_trajectory(run.dir)
    vel = [(s, velocity_charge(run.dir, run.cfg, s)) for s in run.steps[1:]] if run.cfg.optimizer == "ecd" else []
    res["velocity_charge"] = [{"step": s, **v} for s, v in vel if v is not None]
    path = write_result(run, "symmetry_diagnostics", res)
    fig, ax = figure(1, 2, width=4.5)
    steps = [r["step"] for r in res["rows"]]
    for sec in ("qk", "vo", "qk_layer"):
        ax[0, 0].semilogy(steps, [max(r[f"{sec}_charge_rel"], 1e-12) for r in res["rows"]], label=f"{sec} (Δθ)")
        if res["velocity_charge"]:
            ax[0, 0].semilogy([v["step"] for v in res["velocity_charge"]],
                              [max(v[sec]["charge_rel"], 1e-12) for v in res["velocity_charge"]], "--",
                              label=f"{sec} (ECD velocity)")
        if sec != "qk_layer":
            ax[0, 1].plot(steps, [r[f"{sec}_balancedness_drift_rel"] for r in res["rows"]], label=sec)
    ax[0, 0].set(xlabel="step", ylabel="relative Noether charge")
    ax[0, 1].set(xlabel="step", ylabel="relative balancedness drift")
    for a in ax[0]:
        a.legend(fontsize=7)
    save_figure(fig, run, "symmetry_diagnostics")
    last = res["rows"][-1]
    print(f"step {last['step']}: QK charge {last['qk_charge_rel']:.2e} (relative), VO {last['vo_charge_rel']:.2e}, "
          f"layer QK {last['qk_layer_charge_rel']:.2e}; "
          f"balancedness drift QK {last['qk_balancedness_drift_rel']:.3f}, VO {last['vo_balancedness_drift_rel']:.3f}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
