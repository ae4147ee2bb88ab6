"""B5, the learning-rate threshold map: how high p_ood gets, and whether it escapes, at each restart learning rate.

Restarts from one checkpoint with a fresh optimizer at several learning rates, read two ways:

* default: the reheating runs of the run (RUN/reheat/*, experiments/reheating/reheat.py: fresh optimizer,
  raised λ, warmup + cosine at each learning rate; the runs with saved moments are left out), those
  started from the latest start step; nothing is trained;
* --lrs LR,LR,...: in-process relaxations from --from-step (default the last checkpoint) at each constant
  learning rate with the B1 recovery protocol (basin_recovery.py: raised λ, 1000 paper steps scaled,
  p_ood every 50 paper steps scaled, the same seeded batches at every learning rate).

Per learning rate: the start p_ood, the maximum and its step, the first escape (the first evaluation with
p_ood > --threshold, default 0.4 as in skydancerosel/mini_gpt's B5 map) and the first step with p_ood ≥ 0.6
(the paper's re-entry level), beside the gain a flat series would show from evaluation noise alone
(σ_eval·E[max of n normals]); then the smallest learning rate that escapes and the largest that does not.

A run without reheating runs (and no --lrs) gets a recorded "not applicable" with the reason (exit 0).

Output: RUN/analysis/lr_threshold_map.json and lr_threshold_map.png.

Example:  python analysis/basin/lr_threshold_map.py --run-dir runs/quick
          python analysis/basin/lr_threshold_map.py --run-dir runs/quick --lrs 3e-4,1e-3,3e-3 --from-step 360
"""
import sys
from dataclasses import replace

from figures.style import figure, save_figure
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import ESCAPE_THRESHOLD, PROBE_P_OOD, recovery_defaults, relax, threshold_map
from training.geometry.switching import eval_noise_std
from training.studies.reheating import find_reheats, metric_series, parse_lrs

B5_KEY = 0xB5


def from_reheats(run) -> tuple[list[dict], dict]:
    found, skipped = find_reheats(run.dir)
    fresh = [r for r in found if not r.moments]
    if not fresh:
        why = (f"no finished reheating runs with a fresh optimizer under {run.dir / 'reheat'} (train them with "
               f"python experiments/reheating/reheat.py --run-dir {run.dir}, or give --lrs)")
        return [], {"source": "reheating runs", "reason": why, "skipped": skipped}
    start = max(r.from_step for r in fresh)
    series = []
    for r in (r for r in fresh if r.from_step == start):
        m = metric_series(r.dir)
        series.append({"lr": r.lr, "name": r.name, "dir": str(r.dir), "lam": r.cfg.lambda_probe,
                       "steps": m["steps"], "p_ood": m["p_ood"]})
    return series, {"source": "reheating runs", "from_step": start, "skipped": skipped,
                    "schedule": "each reheating run's warmup + cosine"}


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--lrs", help="relax in process at these constant learning rates instead of reading the reheating runs")
    p.add_argument("--from-step", type=int, help="with --lrs: the start checkpoint (default the last)")
    p.add_argument("--steps", type=int, help="with --lrs: updates per learning rate (default 1000 paper steps scaled)")
    p.add_argument("--every", type=int, help="with --lrs: p_ood every this many updates (default 50 paper steps scaled)")
    p.add_argument("--lam", type=float, help="with --lrs: probe weight (default twice the preset's initial λ)")
    p.add_argument("--threshold", type=float, default=ESCAPE_THRESHOLD, help="escape: p_ood > this (default 0.4)")
    p.add_argument("--device", default="cpu", help="with --lrs: cpu | cuda | mps | auto (default cpu)")
    args = p.parse_args()
    device = resolve_device(args.device)        # a bad --device is an error before anything is written
    if not 0 < args.threshold < 1:
        raise UserError(f"--threshold must be in (0, 1) (got {args.threshold})")
    if args.lrs is None and any(v is not None for v in (args.from_step, args.steps, args.every, args.lam)):
        raise UserError("--from-step, --steps, --every and --lam apply to --lrs only")
    run = open_run(args.run_dir, args.out_dir)
    sigma, sigma_source = eval_noise_std(run.dir)
    base = {"run_dir": str(run.dir), "sigma_eval": sigma, "sigma_source": sigma_source,
            "settings": {"seed": args.seed, "threshold": args.threshold, "target": PROBE_P_OOD, "lrs": args.lrs}}
    if args.lrs is None:
        series, info = from_reheats(run)
    else:
        lrs = parse_lrs(args.lrs)
        start = run.steps[-1] if args.from_step is None else args.from_step
        if start not in run.steps:
            raise UserError(f"--from-step {start}: no checkpoint there (the run has {run.steps[0]}..{run.steps[-1]})")
        settings, every = recovery_defaults(run.cfg, args.steps, None, args.lam, args.every)
        task = run.task()
        series = []
        for lr in lrs:
            r = relax(run.model(start, device=device), run.cfg, task, replace(settings, lr=lr), args.seed,
                      [start, B5_KEY], device, trace_every=every)
            series.append({"lr": lr, "lam": settings.lam, "diverged": r["diverged"],
                           "steps": [t["step"] for t in r["trace"]], "p_ood": [t["p_ood"] for t in r["trace"]]})
        info = {"source": "in-process relaxations (constant learning rate)", "from_step": start,
                "relax": {**settings.as_dict(), "lr": None}, "every": every}
    if not series:
        path = write_result(run, "lr_threshold_map", {**base, **info, "applicable": False})
        print(f"not applicable: {info['reason']}\nwrote {path}")
        return 0
    m = threshold_map(series, args.threshold, sigma)
    result = {**base, **info, "applicable": True, **m, "series": series}
    path = write_result(run, "lr_threshold_map", result)
    plot(run, result)
    for r in m["rows"]:
        print(f"lr {r['lr']:g}: p_ood {r['start_p_ood']:.3f} -> max {r['max_p_ood']:.3f} at {r['max_step']}; escape "
              f"(> {args.threshold:g}) at {'never' if r['first_escape_step'] is None else r['first_escape_step']}")
    print(f"lowest escaping lr {m['lowest_escaping_lr']}, highest non-escaping lr {m['highest_non_escaping_lr']}")
    print(f"wrote {path}")
    return 0


def plot(run, r) -> None:
    fig, ax = figure(1, 2, width=4.8, height=3.8)
    for i, s in enumerate(r["series"]):
        ax[0, 0].plot(s["steps"], s["p_ood"], ".-", c=f"C{i % 10}", label=f"lr {s['lr']:g}")
    ax[0, 0].axhline(r["threshold"], c="k", ls="--", lw=0.8, label=f"escape > {r['threshold']:g}")
    ax[0, 0].set(xlabel="step of the restart", ylabel="p_ood", ylim=(-0.02, 1.02), title="B5: restarts per learning rate")
    ax[0, 0].legend(fontsize=7)
    rows = r["rows"]
    lr = [x["lr"] for x in rows]
    ax[0, 1].semilogx(lr, [x["max_p_ood"] for x in rows], "o-", label="max p_ood")
    ax[0, 1].semilogx(lr, [x["start_p_ood"] for x in rows], "s:", c="0.5", label="start p_ood")
    if r["sigma_eval"]:
        ax[0, 1].semilogx(lr, [x["start_p_ood"] + x["noise_bias"] for x in rows], "v:", c="0.7",
                          label="start + noise bias of the max")
    for x in rows:
        if x["escaped"]:
            ax[0, 1].annotate(f"escape at {x['first_escape_step']}", (x["lr"], x["max_p_ood"]), fontsize=7)
    ax[0, 1].axhline(r["threshold"], c="k", ls="--", lw=0.8)
    ax[0, 1].set(xlabel="learning rate", ylabel="p_ood", ylim=(-0.02, 1.02), title="threshold map")
    ax[0, 1].legend(fontsize=7)
    save_figure(fig, run, "lr_threshold_map")


if __name__ == "__main__":
    sys.exit(run_main(main))
