"""Basin tests B1-B3 from the logged metrics and the checkpoint Gram (no forward passes).

B1  time series: p_ood and p_in with the peaks and troughs of the oscillation manifest, nll_ood
    (inverted axis: up = better probe) and lm_ood, the LM loss on the OOD probe sequences.
B2  objective competition: lm_ood against nll_ood over the evaluations after step 0, with Pearson r.
B3  switching alignment, per switch pair (peak, trough): with the unit switching direction
    D = (θ_peak − θ_trough)/‖·‖ over the trunk, a(t) = cos(θ(t_{k+1}) − θ(t_k), D) for every pair of
    consecutive evaluated checkpoints, placed at the midpoint, and its Pearson correlation with
    Δp_ood = p_ood(t_{k+1}) − p_ood(t_k), over all intervals and over the intervals outside the pair's
    own span (inside it the update is part of D by construction); the cosines between switching
    directions. The noise floor sqrt(2/(πD)) is the |cos| of a random direction.

Switch pairs come from --pairs PEAK:TROUGH,... or RUN/oscillation_manifest.json
(analysis/switching/detect_oscillations.py). Without pairs B1 and B2 are still computed and B3 says
why it is empty.

Output: RUN/analysis/basin_tests.json and basin_B1_timeseries.png, basin_B2_scatter.png,
basin_B3_switching_alignment.png.

Example:  python analysis/basin/basin_tests.py --run-dir runs/quick
          python analysis/basin/basin_tests.py --run-dir runs/quick --pairs 340:280,460:360
"""
import sys

import numpy as np

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import p_ood_series, resolve_pairs, switch_alignment
from training.geometry.stats import pearson
from training.geometry.trajectory import cached_gram

SERIES = ("p_ood", "p_in", "nll_ood", "lm_ood")


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--pairs", help="switch pairs PEAK:TROUGH,... (checkpoint steps); default: the oscillation manifest")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    metrics = run.metrics()
    rows: dict[int, dict] = {}
    for r in metrics:
        if "step" in r and all(r.get(k) is not None for k in SERIES):
            rows[int(r["step"])] = r
    if len(rows) < 2:
        raise UserError(f"{run.dir}/metrics.jsonl has {len(rows)} evaluation(s) with {', '.join(SERIES)}; "
                        "train (or resume) the run first")
    steps = sorted(rows)
    p_ood = p_ood_series(metrics)
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pairs)

    b1 = {"steps": steps, **{k: [float(rows[s][k]) for s in steps] for k in SERIES},
          "peaks": info["peaks"], "troughs": info["troughs"]}
    later = [s for s in steps if s > 0]
    b2 = {"steps": later, "lm_ood": [float(rows[s]["lm_ood"]) for s in later],
          "nll_ood": [float(rows[s]["nll_ood"]) for s in later]}
    b2["pearson_r"] = pearson(b2["lm_ood"], b2["nll_ood"])
    b2["n"] = len(later)

    result = {"run_dir": str(run.dir), "settings": {"seed": args.seed, "pairs_source": info["source"]},
              "n_pairs": len(pairs),
              "pairs": [{"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind,
                         "amplitude": q.amplitude} for q in pairs],
              "B1": b1, "B2": b2}
    if "note" in info:
        result["note"] = info["note"]
    ckpt_steps = [s for s in run.steps if s in p_ood]
    if pairs and len(ckpt_steps) >= 2:
        gram = cached_gram(run.checkpoints(), None, progress=not args.no_progress)
        result["B3"] = switch_alignment(gram, pairs, ckpt_steps, p_ood)
    else:
        why = info.get("note") or "fewer than 2 evaluated checkpoints"
        result["B3"] = {"directions": [], "pairwise_cosines": [], "note": why}
    path = write_result(run, "basin_tests", result)
    plot(run, result)

    print(f"B2: Pearson r(lm_ood, nll_ood) = {_fmt(b2['pearson_r'])} over {b2['n']} evaluations")
    if result["B3"]["directions"]:
        for d in result["B3"]["directions"]:
            print(f"B3 pair {d['peak_step']}/{d['trough_step']}: corr(a, dp_ood) {_fmt(d['corr_alignment_dp_ood'])} "
                  f"(outside the pair {_fmt(d['corr_alignment_dp_ood_outside'])}), mean |a| "
                  f"{d['mean_abs_alignment']:.3f} (noise floor {result['B3']['noise_floor']:.2g})")
        if result["B3"]["mean_abs_pairwise_cos"] is not None:
            print(f"B3 pairwise |cos| between switching directions: mean {result['B3']['mean_abs_pairwise_cos']:.3f}, "
                  f"max {result['B3']['max_abs_pairwise_cos']:.3f}")
    else:
        print(f"B3: no switch pairs ({result['B3']['note']})")
    print(f"wrote {path}")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def plot(run, r) -> None:
    b1, b2, b3 = r["B1"], r["B2"], r["B3"]
    fig, ax = figure(3, 1, width=7.5, height=2.6)
    s = np.asarray(b1["steps"])
    val = dict(zip(b1["steps"], b1["p_ood"]))
    a = ax[0, 0]
    a.plot(s, b1["p_ood"], ".-", label="p_ood")
    a.plot(s, b1["p_in"], ".-", alpha=0.7, label="p_in")
    a.plot(b1["peaks"], [val.get(t, np.nan) for t in b1["peaks"]], "^", c="C3", ms=8, label="peaks")
    a.plot(b1["troughs"], [val.get(t, np.nan) for t in b1["troughs"]], "v", c="C2", ms=8, label="troughs")
    a.set(ylabel="probe accuracy", title="B1: probe accuracy with the switch events")
    a.legend(fontsize=7, ncol=4)
    ax[1, 0].plot(s, b1["nll_ood"], ".-", c="C4")
    ax[1, 0].invert_yaxis()
    ax[1, 0].set(ylabel="nll_ood (inverted)", title="probe NLL on the OOD set")
    ax[2, 0].plot(s, b1["lm_ood"], ".-", c="C5")
    ax[2, 0].set(xlabel="step", ylabel="lm_ood", title="LM loss on the OOD probe sequences")
    save_figure(fig, run, "basin_B1_timeseries")

    fig, ax = figure(1, 1, width=5.2, height=4.2)
    a = ax[0, 0]
    sc = a.scatter(b2["nll_ood"], b2["lm_ood"], c=b2["steps"], cmap="viridis", s=18)
    fig.colorbar(sc, ax=a, label="step")
    a.set(xlabel="nll_ood (probe)", ylabel="lm_ood (language model)",
          title=f"B2: objective competition, Pearson r = {_fmt(b2['pearson_r'])} (n = {b2['n']})")
    save_figure(fig, run, "basin_B2_scatter")

    fig, ax = figure(1, 2, width=5.6, height=4.0)
    if b3["directions"]:
        for i, d in enumerate(b3["directions"]):
            ax[0, 0].plot(d["mid_steps"], d["alignments"], ".-", c=f"C{i % 10}", lw=1,
                          label=f"{d['peak_step']}/{d['trough_step']} r={_fmt(d['corr_alignment_dp_ood'])}")
            for pk in (d["peak_step"], d["trough_step"]):
                ax[0, 0].axvline(pk, c=f"C{i % 10}", ls=":", lw=0.8)
        ax[0, 0].axhline(0, c="k", lw=0.5)
        ax[0, 0].axhspan(-b3["noise_floor"], b3["noise_floor"], color="0.8", label="random-direction |cos|")
        ax[0, 0].legend(fontsize=6)
        n = len(b3["directions"])
        im = ax[0, 1].imshow(np.asarray(b3["pairwise_cosines"]), vmin=-1, vmax=1, cmap="RdBu_r")
        fig.colorbar(im, ax=ax[0, 1])
        labels = [f"{d['peak_step']}/{d['trough_step']}" for d in b3["directions"]]
        ax[0, 1].set_xticks(range(n), labels, rotation=45, fontsize=7)
        ax[0, 1].set_yticks(range(n), labels, fontsize=7)
    else:
        for a in ax[0]:
            a.text(0.5, 0.5, "no switch pairs:\n" + _wrap(b3["note"]), ha="center", va="center", fontsize=8,
                   transform=a.transAxes)
    ax[0, 0].set(xlabel="step (interval midpoint)", ylabel="cos(update, switching direction)",
                 title="B3: update alignment with each switching direction")
    ax[0, 1].set(title="cosines between switching directions (peak/trough)")
    save_figure(fig, run, "basin_B3_switching_alignment")


def _wrap(text: str, width: int = 48) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


if __name__ == "__main__":
    sys.exit(run_main(main))
