"""B7 dimension of the switching manifold: are the switching directions many independent ones?

For the n switch pairs (--pairs PEAK:TROUGH,... or RUN/oscillation_manifest.json), the unit switching
directions D_e = (θ_peak − θ_trough)/‖·‖ over the trunk, their n×n cosine Gram M and its spectrum:
explained fractions λ_i/n, k95 / k99, participation ratio (Σλ)²/Σλ² and effective rank exp(entropy),
and the mean / max pairwise |cos|. (skydancerosel/mini_gpt's Gram–Schmidt count is n by construction in a
space of millions of dimensions, so it says nothing.) The numbers are compared with three nulls:

* isotropic: n uniformly random directions of R^D, D the trunk size: their Gram is drawn exactly
  (Bartlett decomposition of a Wishart matrix, n×n work), the most independent n directions can be;
* trajectory: displacements θ(t + ℓ) − θ(t) of the same run with the pairs' lags ℓ at random times
  whose ends are not switch events, inside --null-window (default: the span of the switch events
  widened by the largest lag): what ordinary motion of this trajectory looks like;
* shifted: the whole pattern of pairs moved in time by every possible offset (same lags, gaps and
  shared endpoints).
For each, the distribution of k95, participation ratio, effective rank and |cos| and the percentile of
the switch value in it. Pairs that share a checkpoint (a peak's rise and fall) are not independent
events; the statistics restricted to a maximal set of disjoint pairs are reported as well.
With fewer than 2 pairs the JSON says why and the script exits 0.

Output: RUN/analysis/manifold_dim.json and manifold_dim.png.

Example:  python analysis/basin/manifold_dim.py --run-dir runs/quick
"""
import sys

import numpy as np

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import manifold_dimension, null_window, p_ood_series, resolve_pairs
from training.geometry.trajectory import cached_gram


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--pairs", help="switch pairs PEAK:TROUGH,... (default: the oscillation manifest)")
    p.add_argument("--n-null", type=int, default=1000,
                   help="draws of the isotropic and trajectory nulls (default 1000)")
    p.add_argument("--null-window", default="events",
                   help="checkpoints of the trajectory null: events | run | LO:HI (default events)")
    args = p.parse_args()
    if args.n_null < 10:
        raise UserError("--n-null must be >= 10")
    run = open_run(args.run_dir, args.out_dir)
    p_ood = p_ood_series(run.metrics())
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pairs)
    result = {"run_dir": str(run.dir),
              "settings": {"seed": args.seed, "n_null": args.n_null, "null_window": args.null_window,
                           "pairs_source": info["source"]},
              "n_pairs": len(pairs)}
    if len(pairs) < 2:
        result["note"] = info.get("note") or f"only {len(pairs)} switch pair: a dimension needs at least 2 directions"
        result["manifold"] = None
        path = write_result(run, "manifold_dim", result)
        fig, ax = figure(1, 1, width=6.0, height=2.5)
        ax[0, 0].axis("off")
        ax[0, 0].text(0.5, 0.5, "B7: no switching-manifold dimension\n" + _wrap(result["note"]), ha="center",
                      va="center", fontsize=9)
        save_figure(fig, run, "manifold_dim")
        print(f"B7: {result['note']}")
        print(f"wrote {path}")
        return 0
    window = null_window(run.steps, pairs, args.null_window)
    gram = cached_gram(run.checkpoints(), None, progress=not args.no_progress)
    result["manifold"] = manifold_dimension(gram, pairs, run.steps, args.n_null, args.seed, window)
    path = write_result(run, "manifold_dim", result)
    plot(run, result["manifold"])
    print(result["manifold"]["verdict"])
    print(f"wrote {path}")
    return 0


def _wrap(text: str, width: int = 70) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width))


def plot(run, m) -> None:
    fig, ax = figure(1, 3, width=4.6, height=3.8)
    n = m["n_directions"]
    k = np.arange(1, n + 1)
    a = ax[0, 0]
    a.plot(k, np.cumsum(m["switch"]["explained"]), "o-", c="k", lw=2, label=f"switching (k95 = {m['switch']['k95']})")
    for name, key, c in (("isotropic", "isotropic_null", "C0"), ("trajectory", "trajectory_null", "C1"),
                         ("shifted", "shifted_null", "C2")):
        nl = m[key]
        if nl.get("explained_mean"):
            a.plot(k, np.cumsum(nl["explained_mean"]), "--", c=c,
                   label=f"{name} null (k95 {nl['k95']['mean']:.1f})")
    a.axhline(0.95, c="0.6", lw=0.8, ls=":")
    a.set_xticks(k)
    a.set(xlabel="number of components k", ylabel="cumulative explained fraction", ylim=(0, 1.02),
          title="B7: spectrum of the switch-direction Gram")
    a.legend(fontsize=7)
    a = ax[0, 1]
    sw = np.abs(np.asarray(m["cos_gram"])[np.triu_indices(n, 1)])
    top = max([sw.max()] + [max(m[key].get("abs_cos_sample") or [0]) for key in ("trajectory_null", "shifted_null")])
    bins = np.linspace(0, max(top, 1e-3) * 1.05, 25)
    for name, key, c in (("trajectory null", "trajectory_null", "C1"), ("shifted null", "shifted_null", "C2")):
        if m[key].get("abs_cos_sample"):
            a.hist(m[key]["abs_cos_sample"], bins=bins, density=True, alpha=0.4, color=c, label=name)
    a.hist(sw, bins=bins, density=True, histtype="step", lw=2, color="k", label="switching pairs")
    a.axvline(m["isotropic_null"]["mean_abs_cos"]["mean"], c="C0", ls="--", label="isotropic mean |cos|")
    a.set(xlabel="|cos| between directions", ylabel="density", title="pairwise |cos|")
    a.legend(fontsize=7)
    a = ax[0, 2]
    labels, lo, mid, hi = [], [], [], []
    for name, key in (("isotropic", "isotropic_null"), ("trajectory", "trajectory_null"), ("shifted", "shifted_null")):
        s = m[key].get("participation_ratio")
        if s:
            labels.append(name)
            lo.append(s["p05"])
            mid.append(s["p50"])
            hi.append(s["p95"])
    x = np.arange(len(labels))
    a.errorbar(x, mid, yerr=[np.subtract(mid, lo), np.subtract(hi, mid)], fmt="s", capsize=5, label="null 5-50-95%")
    a.axhline(m["switch"]["participation_ratio"], c="k", lw=2, label="switching pairs")
    a.set_xticks(x, labels)
    a.set(ylabel="participation ratio", ylim=(0, n + 0.5), title=f"effective dimension of {n} directions")
    a.legend(fontsize=7)
    save_figure(fig, run, "manifold_dim")


if __name__ == "__main__":
    sys.exit(run_main(main))
