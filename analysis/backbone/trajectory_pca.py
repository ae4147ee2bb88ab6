"""Exact uncentered PCA of the checkpoint trajectory: spectra, the backbone, its stability, a null model.

For the trunk and each block: the drift matrix X (rows θ(t) − θ(ref) for the selected checkpoints),
its full explained-variance spectrum, singular values, k95/k99, raw and row-normalised; the backbone
v_b (raw PC1, sign such that a(t_last) > 0) with the decomposition a(t), ‖r(t)‖, f_b(t); rolling-window
PC1 stability (adjacent-window |cos| and |cos| with the global v_b); and the random-walk null (the same
per-interval step sizes in random directions). When the drifts start at the first selected checkpoint, the
same statistics of two D → ∞ nulls under ``null_profile`` (training/geometry/nulls.py): the isotropic random
walk and the weight-decayed walk (the run's increments, its ‖θ(ref)‖² and its schedule's decay), with the
weight-decay diagnostics under ``null_profile.decay`` (‖θ(t)‖, the drift's share along −θ̂(ref), cos(v_b, −θ̂(ref)),
the pure-decay prediction (1 − c(t))‖θ(ref)‖) and claim 4's sign-flip step beside both walks' under
``null_profile.sign_flip``; for a run with a probe, ``trunk.coupling_residual_p_ood``: corr(‖r(t)‖, p_ood(t)) on
levels, first differences and detrended series with surrogate p-values (claim 15); under ``centred`` the ordinary
(centred) PCA of the same rows (arXiv 2602.23696 Remark 1): its spectrum, the share of the drift energy that
centring removes, |cos| of its PC1 with the uncentred one, and the same for the random-walk null. Output:
RUN/analysis/trajectory_pca.json and .png.

With ``--sketch DIM`` the Gram matrices come from a seeded Gaussian (Johnson–Lindenstrauss) sketch of
DIM dimensions instead (training/geometry/sketch.py): one pass over the checkpoints at a cost of DIM per
parameter and checkpoint, for runs with too many or too large checkpoints. The result goes to
RUN/analysis/trajectory_pca_sketch.json (+ .png) with, for the trunk and each block, the sketch's
entrywise error bound ε (failure probability --sketch-failure-prob), intervals guaranteed to hold the
exact explained fractions and PC1, and -- when the exact Gram is already cached -- the measured error.

With ``--log tensorboard,wandb`` the headline numbers (trunk PC1 raw and row-normalised, k95, k99, the random-walk
null's PC1) are also logged to the run's experiment-tracking sinks (training/core/tracking.py: TensorBoard scalars
``summary/trajectory_pca/...`` in RUN/tensorboard, W&B summary keys of the run's W&B run).

Example:  python analysis/backbone/trajectory_pca.py --run-dir runs/quick
          python analysis/backbone/trajectory_pca.py --run-dir runs/paper --sketch 1024
"""
import sys

from figures.style import figure, save_figure
from training.core import tracking
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import p_ood_series
from training.geometry.nulls import anchored, beside_null, null_of
from training.geometry.surrogates import coupling
from training.geometry.sketch import compute_sketch, measured_error, pca_bounds
from training.geometry.trajectory import (
    cached_gram,
    centred_pca,
    decomposition,
    increment_norms,
    pca,
    random_walk_null,
    rolling_pc1,
    select_steps,
)


def analyse(gram, steps, ref, args, null_seed, cfg):
    raw = pca(gram, steps, ref, rownorm=False, k=1)
    out = {"raw": raw.summary(), "rownorm": pca(gram, steps, ref, rownorm=True, k=1).summary()}
    if len([s for s in steps if s != ref]) >= 2:      # Remark 1: the centred spectrum beside the uncentred one
        out["centred"] = centred_pca(gram, steps, ref)
    inc = increment_norms(gram, [ref] + [s for s in steps if s != ref])
    out["random_walk_null"] = random_walk_null(inc, gram.dim, n_samples=args.null_samples, seed=null_seed)
    out["decomposition"] = decomposition(gram, raw.coeffs[0], steps, ref)
    width = min(args.window, len(steps))
    if width >= 3:
        out["rolling_pc1"] = rolling_pc1(gram, width, steps, global_coeffs=raw.coeffs[0])
    if ref == min(steps):       # the same statistics from the D → ∞ random walk with these increments
        out["null_profile"] = beside_null(gram, cfg.steps, steps, ref, width=max(2, width), cfg=cfg)
        if "centred" in out:
            null = null_of(anchored(gram, steps, ref))
            out["centred"]["random_walk"] = centred_pca(null, null.steps, ref)
    return out


def residual_coupling(run, dec, seed):
    """Claim 15: does ‖r(t)‖ move with p_ood(t)? The correlation on levels, first differences and detrended series
    with phase- and shift-surrogate p-values (training/geometry/surrogates.py), over the checkpoints where the run
    logged p_ood; None for a run without a probe."""
    p_ood = p_ood_series(run.metrics())
    if not p_ood:
        return None
    return coupling(dec["steps"], dec["residual_norm"], [p_ood.get(s) for s in dec["steps"]], seed=seed)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--stride", type=int, help="keep checkpoints whose step is a multiple of this (first and last kept)")
    p.add_argument("--start", type=int, help="first step of the window")
    p.add_argument("--end", type=int, help="last step of the window")
    p.add_argument("--ref", type=int, help="reference step of the drifts (default: the first selected checkpoint)")
    p.add_argument("--window", type=int, default=10, help="rolling-window width in checkpoints (default 10)")
    p.add_argument("--null-samples", type=int, default=20, help="random-walk null samples (default 20)")
    p.add_argument("--no-blocks", action="store_true", help="trunk only")
    p.add_argument("--sketch", type=int, metavar="DIM",
                   help="approximate the Gram matrices by a DIM-dimensional seeded JL sketch (seed: --seed)")
    p.add_argument("--sketch-failure-prob", type=float, default=0.01,
                   help="probability that the reported sketch error bound fails (default 0.01)")
    p.add_argument("--device", default="auto",
                   help="device of the Gram / sketch products: auto (cuda when present) | cpu | cuda (default auto)")
    p.add_argument("--log", action="append", default=[], metavar="SINK",
                   help="also log the headline numbers to tensorboard and/or wandb (as training/pilot.py --log)")
    args = p.parse_args()
    sinks = tracking.parse_flag(args.log)
    tracking.require(sinks)            # an unknown sink or a missing package stops it before the long part
    if args.null_samples < 1 or args.window < 2:
        raise UserError("--null-samples must be >= 1 and --window >= 2")
    if args.sketch is not None and args.sketch < 1:
        raise UserError(f"--sketch must be a positive dimension (got {args.sketch})")
    if not 0 < args.sketch_failure_prob < 1:
        raise UserError(f"--sketch-failure-prob must be in (0, 1) (got {args.sketch_failure_prob})")
    run = open_run(args.run_dir, args.out_dir)
    device = resolve_device(args.device)
    ckpts = run.checkpoints()
    steps = select_steps(ckpts.steps, args.stride, args.start, args.end)
    ref = steps[0] if args.ref is None else args.ref
    if ref not in ckpts.steps:
        raise UserError(f"--ref {ref} is not a checkpoint step of {run.dir}")
    if len([s for s in steps if s != ref]) < 2:
        raise UserError(f"only {len(steps)} checkpoint(s) selected; PCA needs at least 2 besides the reference")
    progress = not args.no_progress
    result = {"run_dir": str(run.dir), "settings": {"stride": args.stride, "start": args.start, "end": args.end,
                                                      "ref": ref, "window": args.window, "seed": args.seed,
                                                      "null_samples": args.null_samples}}
    if args.sketch:
        result["settings"].update(sketch=args.sketch, sketch_failure_prob=args.sketch_failure_prob)

    def gram_of(block):
        if not args.sketch:
            return cached_gram(ckpts, block, progress=progress, device=device)
        return compute_sketch(ckpts, args.sketch, seed=args.seed, block=block, failure_prob=args.sketch_failure_prob,
                              device=device, progress=progress)

    def sketch_report(g, block):
        if not args.sketch:
            return {}
        rep = {"sketch": g.describe(), "bounds": {"raw": pca_bounds(g, steps, ref, rownorm=False),
                                                  "rownorm": pca_bounds(g, steps, ref, rownorm=True)}}
        exact = cached_gram(ckpts, block, compute=False)
        if exact is not None:
            rep["measured_error"] = measured_error(g, exact, steps, ref)
        return rep

    trunk_gram = gram_of(None)
    result["trunk"] = analyse(trunk_gram, steps, ref, args, args.seed, run.cfg)
    result["trunk"]["coupling_residual_p_ood"] = residual_coupling(run, result["trunk"]["decomposition"], args.seed)
    result["trunk"]["dim"] = trunk_gram.dim
    result["trunk"].update(sketch_report(trunk_gram, None))
    result["random_walk_null"] = result["trunk"]["random_walk_null"]
    result["blocks"] = []
    if not args.no_blocks:
        for b in range(run.cfg.n_layer):
            g = gram_of(b)
            entry = analyse(g, steps, ref, args, args.seed + 1 + b, run.cfg)
            result["blocks"].append({"block": b, "dim": g.dim, **entry, **sketch_report(g, b)})
    name = "trajectory_pca_sketch" if args.sketch else "trajectory_pca"
    path = write_result(run, name, result)
    plot(run, result, name)
    t = result["trunk"]
    head = f"{name}/"
    tracking.log_summary(run.dir, sinks, {head + "pc1": t["raw"]["pc1"], head + "pc1_rownorm": t["rownorm"]["pc1"],
                                          head + "k95": t["raw"]["k95"], head + "k99": t["raw"]["k99"],
                                          head + "null_pc1": t["random_walk_null"]["pc1"]})
    print(f"trunk PC1 {100 * t['raw']['pc1']:.1f}% (row-normalised {100 * t['rownorm']['pc1']:.1f}%), "
          f"k95 {t['raw']['k95']}, k99 {t['raw']['k99']}; random-walk null PC1 {100 * t['random_walk_null']['pc1']:.1f}% "
          f"k95 {t['random_walk_null']['k95']:.1f}")
    if "null_profile" in t:
        o, n = t["null_profile"]["observed"], t["null_profile"]["random_walk"]
        print(f"beside the D → ∞ random walk: PC1 {100 * o['pc1']:.1f}% vs {100 * n['pc1']:.1f}%, "
              f"f_b(T) {o['backbone_fraction'][-1]:.3f} vs {n['backbone_fraction'][-1]:.3f}, "
              f"early |C| {_fmt(o['C']['abs_by_phase']['early'])} vs {_fmt(n['C']['abs_by_phase']['early'])}")
        w = t["null_profile"]["weight_decayed_walk"]
        if w is None:
            print(f"no weight-decayed walk: {t['null_profile']['weight_decayed_reason']}")
        else:
            d = t["null_profile"]["decay"]["observed"]
            print(f"beside the weight-decayed walk: PC1 {100 * o['pc1']:.1f}% vs {100 * w['pc1']:.1f}%, k95 {o['k95']} vs "
                  f"{w['k95']}; ‖θ(T)‖/‖θ(0)‖ {_fmt(d['theta_norm_ratio_end'])}, decay share of ‖x(T)‖² "
                  f"{_fmt(d['decay_share_end'])}, cos(v_b, −θ̂0) {_fmt(d['cos_backbone_decay'])}")
        co = o["coherence"]
        if co["lags"]:
            beside = (f", weight-decayed walk {_fmt(w['coherence']['rho'][0])}" if w is not None else "")
            print(f"increment coherence ρ(1) = mean cos(u_i, u_i+1) {_fmt(co['rho'][0])} (random walk 0"
                  f"{beside}); ρ(1…{co['lags'][-1]}) mean {_fmt(co['rho_mean'])}")
    cp = t["coupling_residual_p_ood"]
    if cp is not None:
        print(f"‖r(t)‖ vs p_ood: {cp['note']}")
    if args.sketch:
        bd = t["bounds"]["raw"]
        rng = (f"exact PC1 in [{100 * bd['explained_variance_ratio_lo'][0]:.1f}, "
               f"{100 * bd['explained_variance_ratio_hi'][0]:.1f}]%" if bd["valid"] else bd["reason"])
        print(f"sketch dim {args.sketch}: epsilon {t['sketch']['epsilon']:.3f} (failure prob. "
              f"{args.sketch_failure_prob:g}); {rng}")
    for b in result["blocks"]:
        print(f"block {b['block']}: PC1 {100 * b['raw']['pc1']:.1f}%  k95 {b['raw']['k95']}")
    print(f"wrote {path}")
    return 0


def plot(run, result, name="trajectory_pca"):
    fig, ax = figure(2, 2, width=5.2, height=3.6)
    t = result["trunk"]
    k = range(1, len(t["raw"]["explained_variance_ratio"]) + 1)
    ax[0, 0].semilogy(k, t["raw"]["explained_variance_ratio"], "o-", label="trunk raw")
    ax[0, 0].semilogy(k, t["rownorm"]["explained_variance_ratio"], "s-", label="trunk row-normalised")
    ax[0, 0].axhline(t["random_walk_null"]["pc1"], ls=":", c="gray", label="random-walk null PC1")
    ax[0, 0].set(xlabel="component", ylabel="explained fraction", title="spectrum")
    ax[0, 0].legend(fontsize=7)
    if result["blocks"]:
        bl = [b["block"] for b in result["blocks"]]
        ax[0, 1].bar(bl, [100 * b["raw"]["pc1"] for b in result["blocks"]], label="PC1")
        ax[0, 1].plot(bl, [100 * b["random_walk_null"]["pc1"] for b in result["blocks"]], "k_", ms=20, label="null")
        ax[0, 1].set(xlabel="block", ylabel="PC1 (%)", title="per-block PC1 (raw)")
        ax[0, 1].legend(fontsize=7)
    d = t["decomposition"]
    ax[1, 0].plot(d["steps"], d["a"], label="a(t)")
    ax[1, 0].plot(d["steps"], d["residual_norm"], label="‖r(t)‖")
    ax[1, 0].set(xlabel="step", title="backbone decomposition (trunk)")
    ax[1, 0].legend(fontsize=7)
    if "rolling_pc1" in t:
        r = t["rolling_pc1"]
        ax[1, 1].plot(r["window_start"][1:], r["adjacent_abs_cos"], label="adjacent windows")
        ax[1, 1].plot(r["window_start"], r["global_abs_cos"], label="vs global v_b")
        ax[1, 1].set(xlabel="window start step", ylabel="|cos|", title=f"rolling PC1 (W={r['width']})")
        ax[1, 1].legend(fontsize=7)
    save_figure(fig, run, name)


if __name__ == "__main__":
    sys.exit(run_main(main))
