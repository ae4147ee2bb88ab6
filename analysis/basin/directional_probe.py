"""Directional probe: perturb a checkpoint by ε along v_sw, v_b and random directions ⊥ both, relax, compare.

For one switch pair (--pair PEAK:TROUGH, default the largest-amplitude pair of RUN/oscillation_manifest.json)
and each scope (the trunk and every block, or --scopes trunk,0,2): the unit switching direction v_sw =
(θ_peak − θ_trough)/s with s = ‖θ_peak − θ_trough‖ over that scope, the scope's backbone v_b (raw PC1 of its
drifts θ(t) − θ(0), sign a(t_last) > 0), and --n-random seeded Gaussian directions orthonormalised against both
(the null). From the --start checkpoint (default the peak) the scope's weights move by ε·s·v̂ for every ε of
--eps (default −1, −0.5, 0.5, 1: units of the switch distance, so ε = −1 along v_sw from the peak lands the
scope exactly on the trough's weights), then protocol R relaxes the model (training/geometry/basin.py: the
run's optimizer, fresh; --relax-steps updates at the preset's scale; batches from the relaxation stream keyed
by the start step, the same for every direction and ε). p_ood, nll_ood and the validation loss are measured
on the fixed evaluation sets before and after the relaxation; every Δ is against ε = 0 (the unperturbed
checkpoint relaxed the same way), and Δp_ood is also given in units of σ_eval (RUN/analysis/eval_noise.json).

Cost: (1 + |eps|·(2 + n_random)) relaxations per scope; at `quick` (18 relaxation steps, 3 blocks, the
defaults) 68 relaxations, several minutes on a 2-core CPU: use --scopes trunk for a quick look.

A run without switch pairs gets a recorded "not applicable" with the reason (exit 0).

Output: RUN/analysis/directional_probe.json and directional_probe.png.

Example:  python analysis/basin/directional_probe.py --run-dir runs/quick --scopes trunk --eps=-1,1
"""
import math
import sys

import numpy as np
from tqdm import tqdm

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import p_ood_series, relax, relax_defaults, resolve_pairs
from training.geometry.directional_probe import measure, orthonormal_random, shift, summarise, unit
from training.geometry.switching import eval_noise_std, switch_coeffs
from training.geometry.trajectory import cached_gram, pca


def parse_eps(text: str) -> list[float]:
    try:
        eps = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--eps must be comma-separated numbers (got '{text}')") from None
    eps = [e for e in eps if e != 0]
    if not eps or not all(math.isfinite(e) for e in eps):
        raise UserError(f"--eps needs at least one finite non-zero value (ε = 0 is always measured); got '{text}'")
    return eps


def parse_scopes(text: str, n_layer: int) -> list[int | None]:
    out: list[int | None] = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        if item == "trunk":
            out.append(None)
        elif item == "blocks":
            out += list(range(n_layer))
        elif item.isdigit() and int(item) < n_layer:
            out.append(int(item))
        else:
            raise UserError(f"--scopes: '{item}' is not trunk, blocks or a block index 0..{n_layer - 1}")
    if not out:
        raise UserError("--scopes is empty")
    return list(dict.fromkeys(out))


def scope_name(block: int | None) -> str:
    return "trunk" if block is None else f"block{block}"


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--pair", help="the switch pair PEAK:TROUGH (default: the manifest's largest-amplitude pair)")
    p.add_argument("--start", choices=("peak", "trough"), default="peak", help="checkpoint perturbed (default peak)")
    p.add_argument("--eps", default="-1,-0.5,0.5,1", help="ε in units of the switch distance (default -1,-0.5,0.5,1)")
    p.add_argument("--n-random", type=int, default=2, help="random directions ⊥ v_sw, v_b per scope (default 2)")
    p.add_argument("--scopes", default="trunk,blocks", help="trunk, blocks and/or block indices (default trunk,blocks)")
    p.add_argument("--relax-steps", type=int, help="relaxation updates (default: protocol R's 300 scaled to the preset)")
    p.add_argument("--lr", type=float, help="relaxation learning rate (default: 6e-4 scaled to the preset)")
    p.add_argument("--lam", type=float, help="relaxation probe weight λ (default: twice the preset's initial λ)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    args = p.parse_args()
    device = resolve_device(args.device)        # a bad --device is an error before anything is written
    if args.n_random < 1:
        raise UserError("--n-random must be >= 1 (the random directions are the null)")
    run = open_run(args.run_dir, args.out_dir)
    eps = parse_eps(args.eps)
    scopes = parse_scopes(args.scopes, run.cfg.n_layer)
    settings = relax_defaults(run.cfg, args.relax_steps, args.lr, args.lam)
    sigma, sigma_source = eval_noise_std(run.dir)
    p_ood = p_ood_series(run.metrics())
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pair)
    base = {"run_dir": str(run.dir), "settings": {"seed": args.seed, "eps": eps, "n_random": args.n_random,
                                                   "scopes": [scope_name(b) for b in scopes], "start": args.start,
                                                   "relax": settings.as_dict(), "pairs_source": info["source"],
                                                   "eps_unit": "the switch distance s = |theta_peak - theta_trough| "
                                                               "of the scope; the move is eps * s * unit direction"},
            "sigma_eval": sigma, "sigma_source": sigma_source}
    if not pairs:
        why = info.get("note", "no switch pairs")
        path = write_result(run, "directional_probe", {**base, "applicable": False, "reason": why})
        print(f"not applicable: {why}\nwrote {path}")
        return 0
    pair = max(pairs, key=lambda q: q.amplitude if math.isfinite(q.amplitude) else -math.inf)
    start = pair.peak_step if args.start == "peak" else pair.trough_step
    task = run.task()
    ckpts = run.checkpoints()
    records, geometry = [], []
    jobs = [(b, None, 0.0) for b in scopes]
    directions = {}
    for b in scopes:
        gram = cached_gram(ckpts, b, progress=not args.no_progress)
        C, norms = switch_coeffs(gram, [pair])
        vb = pca(gram, k=1).coeffs[0]
        V = ckpts.materialise(gram, np.stack([C[0], vb], axis=1))
        v_sw, v_b = unit(V[:, 0]), unit(V[:, 1])
        R = orthonormal_random(np.stack([v_sw, v_b], axis=1), args.n_random, args.seed, b)
        named = {"v_sw": v_sw, "v_b": v_b} | {f"random{k}": R[:, k] for k in range(R.shape[1])}
        directions[b] = (float(norms[0]), named)
        geometry.append({"scope": scope_name(b), "dim": gram.dim, "switch_distance": float(norms[0]),
                         "cos_v_sw_v_b": float(v_sw @ v_b),
                         "max_abs_cos_random": float(np.max(np.abs(R.T @ np.stack([v_sw, v_b], axis=1))))})
        jobs += [(b, name, e) for name in named for e in eps]
    bar = tqdm(jobs, desc="directional probe", unit="relax", disable=True if args.no_progress else None)
    for b, name, e in bar:
        model = run.model(start, device=device)
        if name is not None:
            s, named = directions[b]
            shift(model, named[name], e * s, b)
        model.train()
        pre = measure(model, task, device)
        r = relax(model, run.cfg, task, settings, args.seed, [start, 0], device)
        post = measure(model, task, device)
        records.append({"scope": scope_name(b), "direction": name or "none", "eps": e, "pre": pre, "post": post,
                        "steps_done": r["steps_done"], "diverged": r["diverged"]})
    result = {**base, "applicable": True,
              "pair": {"peak_step": pair.peak_step, "trough_step": pair.trough_step, "kind": pair.kind,
                       "amplitude": pair.amplitude},
              "start_step": start, "p_ood_logged": p_ood.get(start), "geometry": geometry, "records": records,
              "summary": summarise(records, sigma)}
    path = write_result(run, "directional_probe", result)
    plot(run, result)
    for c in result["summary"]:
        d = c["post_delta_p_ood"]
        print(f"{c['scope']} eps {c['eps']:+g}: after relaxation dp_ood v_sw {d['v_sw']:+.3f}, v_b {d['v_b']:+.3f}, "
              f"random {d['random_mean']:+.3f}" + ("" if sigma is None else f" (sigma_eval {sigma:.3f})"))
    print(f"wrote {path}")
    return 0


def plot(run, r) -> None:
    cells = r["summary"]
    scopes = list(dict.fromkeys(c["scope"] for c in cells))
    fig, ax = figure(2, len(scopes), width=3.4, height=3.0)
    for j, sc in enumerate(scopes):
        cs = [c for c in cells if c["scope"] == sc]
        e = [c["eps"] for c in cs]
        for i, q in enumerate(("p_ood", "val_loss")):
            a = ax[i, j]
            d = [c[f"post_delta_{q}"] for c in cs]
            a.plot(e, [x["v_sw"] for x in d], "o-", label="v_sw")
            a.plot(e, [x["v_b"] for x in d], "s-", label="v_b")
            a.errorbar(e, [x["random_mean"] for x in d], yerr=[x["random_sd"] or 0.0 for x in d], fmt="^--", c="0.4",
                       capsize=3, label="random ⊥ (mean ± sd)")
            if q == "p_ood" and r["sigma_eval"]:
                a.axhspan(-2 * r["sigma_eval"], 2 * r["sigma_eval"], color="0.9", label="±2σ_eval")
            a.axhline(0, c="k", lw=0.5)
            a.set(xlabel="ε (switch distances)", ylabel=f"Δ{q} after relaxation", title=sc)
        ax[0, j].legend(fontsize=6)
    save_figure(fig, run, "directional_probe")


if __name__ == "__main__":
    sys.exit(run_main(main))
