"""Update alignment C(t) = cos(θ(t) − θ(t−Δ), v_b) for the trunk and every block.

v_b is the raw uncentered PC1 of all selected checkpoints' drift from the first (sign: a(t_last) > 0),
per block for the block curves and over the trunk for the trunk curve; Δ is the checkpoint spacing of
the selection. Reports signed and absolute cosines, their means, the noise floor sqrt(2/(πD)) of a
random direction (a floor, not a null), the sign-flip step t* after which the signed alignment stays
negative, and beside them the null: C(t) of the D → ∞ random walk with the same increment norms
(training.geometry.nulls), signed and absolute, with its mean |C|.
Output: RUN/analysis/update_alignment.json and .png.

Example:  python analysis/backbone/update_alignment.py --run-dir runs/quick --stride 40
"""
import sys

import numpy as np

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.gradients import noise_floor
from training.geometry.nulls import null_of, profile
from training.geometry.trajectory import cached_gram, pca, select_steps, sign_flip_step, update_alignment


def curve(gram, steps, total_steps):
    v = pca(gram, steps, steps[0], rownorm=False, k=1).coeffs[0]
    u = update_alignment(gram, v, steps)
    u["mean_abs_cos"] = float(np.mean(u["abs_cos"]))
    u["mean_signed_cos"] = float(np.mean(u["signed_cos"]))
    u["sign_flip_step"] = sign_flip_step(u["steps"], u["signed_cos"])
    u["noise_floor"] = noise_floor(gram.dim)
    u["dim"] = gram.dim
    if steps[0] == gram.anchor:          # the same C(t) of the D → ∞ random walk with these increments
        c = profile(null_of(gram, steps), total_steps, steps)["C"]
        abs_c = np.abs(c["signed"])
        u["random_walk"] = {**c, "abs_cos": abs_c.tolist(), "mean_abs_cos": float(abs_c.mean()),
                            "null": "isotropic random walk with the run's increment norms, D → ∞"}
    return u


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--stride", type=int, help="keep checkpoints whose step is a multiple of this (first and last kept)")
    p.add_argument("--start", type=int)
    p.add_argument("--end", type=int)
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    ckpts = run.checkpoints()
    steps = select_steps(ckpts.steps, args.stride, args.start, args.end)
    progress = not args.no_progress
    trunk = curve(cached_gram(ckpts, None, progress=progress), steps, run.cfg.steps)
    blocks = [{"block": b, **curve(cached_gram(ckpts, b, progress=progress), steps, run.cfg.steps)}
              for b in range(run.cfg.n_layer)]
    result = {"run_dir": str(run.dir), "steps": trunk["steps"], "prev_steps": trunk["prev_steps"],
              "settings": {"stride": args.stride, "start": args.start, "end": args.end}, "trunk": trunk, "blocks": blocks}
    path = write_result(run, "update_alignment", result)
    fig, ax = figure(1, 2, width=5.2)
    for b in blocks:
        ax[0, 0].plot(b["steps"], b["abs_cos"], lw=1, label=f"block {b['block']}")
        ax[0, 1].plot(b["steps"], b["signed_cos"], lw=1)
    ax[0, 0].plot(trunk["steps"], trunk["abs_cos"], "k", lw=2, label="trunk")
    ax[0, 1].plot(trunk["steps"], trunk["signed_cos"], "k", lw=2)
    if "random_walk" in trunk:
        ax[0, 0].plot(trunk["steps"], trunk["random_walk"]["abs_cos"], "k--", lw=1, label="random-walk null")
    ax[0, 0].axhline(trunk["noise_floor"], ls=":", c="gray", label="random-direction floor")
    ax[0, 1].axhline(0, c="gray", lw=0.5)
    ax[0, 0].set(xlabel="step", ylabel="|C(t)|", title="update alignment with v_b")
    ax[0, 1].set(xlabel="step", ylabel="C(t)", title="signed")
    ax[0, 0].legend(fontsize=6)
    save_figure(fig, run, "update_alignment")
    null = f", random-walk null {trunk['random_walk']['mean_abs_cos']:.3f}" if "random_walk" in trunk else ""
    print(f"trunk mean |C| {trunk['mean_abs_cos']:.3f} (random-direction floor {trunk['noise_floor']:.2e}{null}), "
          f"sign flip at {trunk['sign_flip_step']}")
    for b in blocks:
        print(f"block {b['block']}: mean |C| {b['mean_abs_cos']:.3f}, sign flip at {b['sign_flip_step']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
