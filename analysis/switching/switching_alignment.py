"""Switching directions vs the backbone, per block and over the trunk, and the per-layer logit lens.

For every switch pair of RUN/oscillation_manifest.json (detect_oscillations.py), v_sw =
(θ_peak − θ_trough)/‖·‖ is compared with the trajectory's uncentered PCA (drifts of the selected
checkpoints from the first, raw unless --rownorm; v_b = PC1 with a(t_last) > 0), over the trunk and
in each block separately:
  cos(v_sw, v_b) and |cos|; backbone share c² and transverse share 1 − c²;
  E_2:k = Σ_{j=2..k} ⟨v_sw, v_j⟩² (capture of ‖v_sw‖² by PCs 2..k), k = 2..--k-max;
  E⊥_2:k, the same for the unit transverse part (v_sw − c v_b)/‖·‖ (the paper's E_2:6 at k = 6);
  |cos| between the switching directions of different events.
Over the trunk, beside them (``trunk.nulls``, claims 12 and 13 of docs/claims.md), for every pair above the
noise level: the same statistics for every displacement of the trajectory over the same number of
checkpoints (the same-lag null; the pair's percentile rank in it) and for the D → ∞ random walk with the
run's increments at the pair's position.
At each pair's peak and trough checkpoint, the logit lens (final LayerNorm + tied head applied to the
residual stream after the embedding and after every block) reads out the codeword on the OOD probe
set: exact-match accuracy and mean codeword probability per layer.

Output: RUN/analysis/switching_alignment.json and .png.

Example:  python analysis/switching/switching_alignment.py --run-dir runs/quick
"""
import sys

import numpy as np
from tqdm import tqdm

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.nulls import null_of
from training.geometry.switching import probe_readout, read_manifest, switching_geometry, switching_nulls
from training.geometry.trajectory import cached_gram, pca, select_steps


def logit_lens(run, pairs, device, progress: bool) -> dict:
    roles: dict[int, set[str]] = {}
    for q in pairs:
        roles.setdefault(q.peak_step, set()).add("peak")
        roles.setdefault(q.trough_step, set()).add("trough")
    probe_set = run.task().eval_set("probe_ood") if roles else None
    logged = {int(r["step"]): r.get("p_ood") for r in run.metrics() if "step" in r}
    out, layers = [], None
    for step in tqdm(sorted(roles), desc="logit lens", unit="ckpt", disable=None if progress else True):
        r = probe_readout(run.model(step, device=device), probe_set, run.cfg.eval_batch_size, device)
        layers = r.layers
        out.append({"step": step, "role": "/".join(sorted(roles[step])), "p_ood_logged": logged.get(step),
                    "n_examples": int(r.correct.shape[1]), "accuracy": r.accuracy.tolist(),
                    "p_codeword": r.mean_p_codeword.tolist()})
    return {"eval_set": "probe_ood", "layers": layers, "checkpoints": out}


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--stride", type=int, help="PCA on checkpoints whose step is a multiple of this (first/last kept)")
    p.add_argument("--rownorm", action="store_true", help="row-normalised PCA instead of raw")
    p.add_argument("--k-max", type=int, default=6, help="largest k of E_2:k (default 6)")
    p.add_argument("--no-lens", action="store_true", help="skip the logit lens")
    p.add_argument("--device", default="cpu", help="device of the logit-lens forward passes (default cpu)")
    args = p.parse_args()
    if args.k_max < 2:
        raise UserError("--k-max must be >= 2")
    run = open_run(args.run_dir, args.out_dir)
    device = resolve_device(args.device)
    pairs, manifest = read_manifest(run.dir, run.steps)
    ckpts = run.checkpoints()
    steps = select_steps(ckpts.steps, args.stride)
    progress = not args.no_progress

    def scope(block):
        gram = cached_gram(ckpts, block, progress=progress)
        traj = pca(gram, steps, steps[0], rownorm=args.rownorm, k=args.k_max)
        out = switching_geometry(gram, pairs, traj, args.k_max)
        if block is None and steps[0] == gram.anchor:       # claims 12 and 13: the same-lag and random-walk nulls
            rw = null_of(gram)
            out["nulls"] = switching_nulls(gram, rw, pairs, traj, pca(rw, steps, steps[0], rownorm=args.rownorm,
                                                                      k=args.k_max), args.k_max)
        return out

    trunk = scope(None)
    blocks = [{"block": b, **scope(b)} for b in range(run.cfg.n_layer)]
    lens = None if args.no_lens else logit_lens(run, pairs, device, progress)
    block_abs = [pp["abs_cos_backbone"] for b in blocks for pp in b["pairs"]]
    block_e = [pp["capture_transverse"][f"pc2_to_pc{args.k_max}"] for b in blocks for pp in b["pairs"]]
    result = {
        "run_dir": str(run.dir), "n_pairs": len(pairs),
        "pairs": [{"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind, "amplitude": q.amplitude}
                  for q in pairs],
        "manifest_prominence": manifest.get("prominence"),
        "settings": {"pca_steps": steps, "reference_step": steps[0], "rownorm": args.rownorm, "stride": args.stride,
                     "k_max": args.k_max, "seed": args.seed, "device": str(device)},
        "trunk": trunk, "blocks": blocks,
        "block_range": {"abs_cos_backbone": [min(block_abs), max(block_abs)] if block_abs else None,
                        f"capture_transverse_pc2_to_pc{args.k_max}": [min(block_e), max(block_e)] if block_e else None},
        "logit_lens": lens,
    }
    path = write_result(run, "switching_alignment", result)

    fig, ax = figure(2, 2, width=5.2)
    labels = [f"{q.peak_step}/{q.trough_step}" for q in pairs]
    x = np.arange(len(pairs))
    scopes = [("trunk", trunk)] + [(f"block {b['block']}", b) for b in blocks]
    for j, (name, s) in enumerate(scopes):
        style = dict(c="k", marker="s") if name == "trunk" else dict(c=f"C{j}", marker="o")
        ax[0, 0].plot(x, [pp["abs_cos_backbone"] for pp in s["pairs"]], ls="none", label=name, **style)
        for pp in s["pairs"]:
            ax[0, 1].plot(range(2, args.k_max + 1), list(pp["capture_transverse"].values()), c=style["c"], lw=1,
                          alpha=0.7)
    ax[0, 0].set_xticks(x, labels, rotation=45, fontsize=7)
    ax[0, 0].set(xlabel="pair (peak/trough)", ylabel="|cos(v_sw, v_b)|", title="switching vs backbone", ylim=(0, 1))
    ax[0, 0].legend(fontsize=6)
    ax[0, 1].set(xlabel="k", ylabel="E⊥_2:k", title="transverse capture by PCs 2..k (black: trunk)", ylim=(0, 1))
    if pairs:
        im = ax[1, 0].imshow(np.asarray(trunk["pairwise_abs_cos"]), vmin=0, vmax=1, cmap="viridis")
        fig.colorbar(im, ax=ax[1, 0])
        ax[1, 0].set_xticks(x, labels, rotation=45, fontsize=6)
        ax[1, 0].set_yticks(x, labels, fontsize=6)
    ax[1, 0].set(title="|cos| between switching directions (trunk)")
    if lens and lens["checkpoints"]:
        for c in lens["checkpoints"]:
            ax[1, 1].plot(range(len(lens["layers"])), c["accuracy"], marker="o",
                          ls="-" if "peak" in c["role"] else "--", label=f"{c['step']} ({c['role']})")
        ax[1, 1].set_xticks(range(len(lens["layers"])), lens["layers"], rotation=45, fontsize=7)
        ax[1, 1].legend(fontsize=6)
    ax[1, 1].set(ylabel="codeword accuracy", title="logit lens on the OOD probe set (solid: peaks)", ylim=(-0.02, 1.02))
    save_figure(fig, run, "switching_alignment")

    if not pairs:
        print("the manifest has no switch pairs (no oscillation above its threshold): nothing to align")
    for name, s in scopes:
        sm = s["summary"]
        if pairs:
            print(f"{name:8s} mean |cos(v_sw, v_b)| {sm['mean_abs_cos_backbone']:.3f}, mean E_2:{args.k_max} "
                  f"{sm['mean_capture']:.3f}, transverse E⊥_2:{args.k_max} {sm['mean_capture_transverse']:.3f}"
                  + (f", mean |cos| between events {sm['mean_abs_cos_between_events']:.3f}"
                     if sm["mean_abs_cos_between_events"] is not None else ""))
    nl = trunk.get("nulls")
    if nl and nl["n_pairs"]:
        print(f"against displacements of the same lag (trunk, {nl['n_pairs']} pair(s) above the noise level): median "
              f"percentile of |cos(v_sw, v_b)| {nl['claim12']['median_abs_cos_percentile']:.2f} (claim 12 asks <= 0.05), "
              f"of E⊥_2:{args.k_max} {nl['claim13']['median_capture_percentile']:.2f} (claim 13 asks >= 0.95); the random "
              f"walk at the pairs' positions: |cos| {nl['claim12']['median_random_walk_abs_cos']:.3f}, "
              f"E⊥ {nl['claim13']['median_random_walk_capture']:.3f}")
    for c in (lens or {}).get("checkpoints", []):
        print(f"lens step {c['step']} ({c['role']}): accuracy per layer "
              + " ".join(f"{a:.3f}" for a in c["accuracy"]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
