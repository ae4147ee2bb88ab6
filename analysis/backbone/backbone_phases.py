#!/usr/bin/env python
"""Phases of the backbone: the drift direction of each phase of training, the angles between phases, and the
rotation curve, each beside the random-walk and weight-decayed-walk values for the same windows.

arXiv 2602.23696 (abstract, §3.2) has the backbone "reorient gradually across phases, particularly following
objective reweighting". For the trunk and each block (training/geometry/phases.py):

- the backbone of a phase [start, end] = raw PC1 of the drifts θ(t) − θ(start) over its checkpoints; the
  default phases are the two sides of the λ switch (none when the run has no switch); ``--window`` adds any;
- the angle between every pair of phase backbones, arccos |cos| in degrees, with the null walks' angle for the
  same windows (disjoint windows of an isotropic walk are at 90°) and ``angle_below_null_deg``, how far the run's
  angle sits below the random walk's;
- the rotation curve ρ(t) = |cos(v_b[0, t], v_b[0, T])| of the backbone of the trajectory up to t against the
  whole run's, beside the same curve of the null walks.

Writes RUN/analysis/backbone_phases.json and backbone_phases.png.

Examples::

    python analysis/backbone/backbone_phases.py --run-dir runs/quick
    python analysis/backbone/backbone_phases.py --run-dir runs/quick --window early=0:200 --window late=400:600
"""
import sys

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.phases import default_windows, parse_window, phases_beside_nulls
from training.geometry.trajectory import cached_gram


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--window", action="append", default=[], metavar="[NAME=]START:END",
                   help="a phase of your own, in steps (repeatable); checkpoints inside [START, END] are used")
    args = p.parse_args()
    run = open_run(args.run_dir, args.out_dir)
    ckpts = run.checkpoints()
    steps = ckpts.steps
    windows = default_windows(run.cfg, steps[0], steps[-1], "lambda") + [parse_window(w) for w in args.window]
    progress = not args.no_progress
    result = {"run_dir": str(run.dir), "steps": steps,
              "windows": [{"name": w.name, "start": w.start, "end": w.end} for w in windows],
              "not_applicable": None}
    if not windows:
        result["not_applicable"] = ("the run has no λ switch inside its checkpoints and no --window was given: "
                                    "there are no phases to compare")
        path = write_result(run, "backbone_phases", result)
        print(f"not applicable: {result['not_applicable']}\nwrote {path}")
        return 0
    result["trunk"] = phases_beside_nulls(cached_gram(ckpts, None, progress=progress), windows, run.cfg)
    result["blocks"] = [{"block": b, **phases_beside_nulls(cached_gram(ckpts, b, progress=progress), windows, run.cfg)}
                        for b in range(run.cfg.n_layer)]
    path = write_result(run, "backbone_phases", result)

    fig, ax = figure(1, 2, width=5.2)
    tr = result["trunk"]
    for key, style, label in (("observed", "k-", "trunk"), ("random_walk", "k--", "random-walk null"),
                              ("weight_decayed_walk", "k:", "weight-decayed walk")):
        if tr.get(key):
            rot = tr[key]["rotation"]
            ax[0, 0].plot(rot["steps"], rot["rho"], style, lw=1.5 if key == "observed" else 1, label=label)
    for b in result["blocks"]:
        rot = b["observed"]["rotation"]
        ax[0, 0].plot(rot["steps"], rot["rho"], lw=0.6, alpha=0.6)
    ax[0, 0].set(xlabel="step t", ylabel="ρ(t) = |cos(v_b[0,t], v_b[0,T])|", title="rotation of the backbone")
    ax[0, 0].legend(fontsize=6)
    pairs = tr["observed"]["pairs"]
    labels = [" / ".join(p["between"]) for p in pairs]
    obs = [p["angle_deg"] if p["angle_deg"] is not None else 0.0 for p in pairs]
    null = [p["random_walk_angle_deg"] if p["random_walk_angle_deg"] is not None else 0.0 for p in pairs]
    x = range(len(pairs))
    ax[0, 1].bar([i - 0.2 for i in x], obs, width=0.4, color="k", label="trunk")
    ax[0, 1].bar([i + 0.2 for i in x], null, width=0.4, color="0.7", label="random-walk null")
    ax[0, 1].set_xticks(list(x), labels, fontsize=5, rotation=15)
    ax[0, 1].set(ylabel="angle between phase backbones (°)", ylim=(0, 95), title="phase backbones")
    ax[0, 1].legend(fontsize=6)
    save_figure(fig, run, "backbone_phases")
    for p_ in pairs:
        a = "-" if p_["angle_deg"] is None else f"{p_['angle_deg']:.1f}°"
        n = "-" if p_["random_walk_angle_deg"] is None else f"{p_['random_walk_angle_deg']:.1f}°"
        print(f"trunk: {' vs '.join(p_['between'])}: angle {a} (random walk {n})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
