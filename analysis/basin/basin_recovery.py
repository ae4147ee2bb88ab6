"""B1 basin recovery: from the troughs of the detected switch pairs, a fresh optimizer with a raised probe weight.

The mini_gpt README's B1 ("basin recovery from checkpoint: fresh optimizer, probe weight increase"). For each
start checkpoint (by default the trough of each of the --max-pairs largest-amplitude switch pairs of
RUN/oscillation_manifest.json or --pairs; --start peak,trough adds the peaks) the weights are relaxed in
process with protocol R's optimizer (training/geometry/basin.py: the run's optimizer and parameter groups,
fresh, constant learning rate, the run's clip and micro-batch) for the paper's 1000 steps scaled to the preset,
with the raised λ (the reference's 8.0 scaled: four times the preset's initial λ, so twice its λ after the
switch) and, as its control, with λ unchanged (the run's own λ at that checkpoint; --no-control skips it), both
on the same seeded batches. p_ood is evaluated before the first update and every 50 paper steps (scaled). Recorded per start and λ: the start p_ood, the maximum reached and
its step, the number of steps to reach --threshold (default 0.6, the paper's re-entry level; "never" if not
reached) and the gain beside what a flat series would show from evaluation noise alone, σ_eval·E[max of n
normals] (σ_eval from RUN/analysis/eval_noise.json).

Protocol at `quick`: 60 steps, p_ood every 3, lr 1.8e-3, λ 4 (control: the run's λ, 1 or 2); `test`: 2 steps.
--steps, --every, --lr, --lam override. Resumable: finished relaxations are kept in
RUN/analysis/basin_recovery_progress.json (reused only with the same run, protocol, seed and device).

A run without switch pairs gets a recorded "not applicable" with the reason (exit 0).

Output: RUN/analysis/basin_recovery.json and basin_recovery.png.

Example:  python analysis/basin/basin_recovery.py --run-dir runs/quick
          python analysis/basin/basin_recovery.py --run-dir runs/quick --max-pairs 0 --start trough,peak
"""
import math
import sys
from dataclasses import replace

from tqdm import tqdm

from figures.style import figure, save_figure
from training.core import runio
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import lambda_at
from training.geometry.analysis_io import analysis_parser, open_run, write_result
from training.geometry.basin import (PROBE_P_OOD, load_progress, p_ood_series, recovery_defaults, recovery_summary,
                                     relax, resolve_pairs)
from training.geometry.switching import eval_noise_std

PROGRESS = "basin_recovery_progress.json"
B1_KEY = 0xB1                 # relaxation batches of B1: call key [step, B1_KEY]


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--pairs", help="switch pairs PEAK:TROUGH,... (default: the oscillation manifest)")
    p.add_argument("--max-pairs", type=int, default=2, help="the largest-amplitude pairs used (default 2; 0 = all)")
    p.add_argument("--start", default="trough", help="which end(s) of a pair to start from: trough, peak or both "
                                                     "as trough,peak (default trough)")
    p.add_argument("--threshold", type=float, default=PROBE_P_OOD, help="p_ood to reach (default 0.6)")
    p.add_argument("--steps", type=int, help="updates per recovery (default: 1000 paper steps scaled)")
    p.add_argument("--every", type=int, help="p_ood every this many updates (default: 50 paper steps scaled)")
    p.add_argument("--lr", type=float, help="learning rate (default: 6e-4 scaled to the preset)")
    p.add_argument("--lam", type=float, help="the raised probe weight (default: four times the preset's initial λ)")
    p.add_argument("--no-control", action="store_true", help="skip the λ-unchanged control")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    args = p.parse_args()
    device = resolve_device(args.device)        # a bad --device is an error before anything is written
    ends = [e.strip() for e in args.start.split(",") if e.strip()]
    if not ends or any(e not in ("trough", "peak") for e in ends) or args.max_pairs < 0:
        raise UserError("--start must be trough, peak or trough,peak and --max-pairs >= 0")
    if not 0 < args.threshold <= 1:
        raise UserError(f"--threshold must be in (0, 1] (got {args.threshold})")
    run = open_run(args.run_dir, args.out_dir)
    settings, every = recovery_defaults(run.cfg, args.steps, args.lr, args.lam, args.every, args.threshold)
    sigma, sigma_source = eval_noise_std(run.dir)
    p_ood = p_ood_series(run.metrics())
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pairs)
    base = {"run_dir": str(run.dir),
            "settings": {"seed": args.seed, "max_pairs": args.max_pairs, "start": ends, "every": every,
                         "threshold": args.threshold, "control": not args.no_control, "relax": settings.as_dict(),
                         "pairs_source": info["source"],
                         "protocol": "fresh optimizer as in training, constant lr, raised lambda; control: lambda "
                                     "unchanged (the run's own at the start checkpoint); same seeded batches"},
            "sigma_eval": sigma, "sigma_source": sigma_source}
    if not pairs:
        why = info.get("note", "no switch pairs")
        path = write_result(run, "basin_recovery", {**base, "applicable": False, "reason": why, "starts": []})
        print(f"not applicable: {why}\nwrote {path}")
        return 0
    top = sorted(pairs, key=lambda q: -(q.amplitude if math.isfinite(q.amplitude) else -math.inf))
    top = top if args.max_pairs == 0 else top[:args.max_pairs]
    starts: dict[int, dict] = {}
    for q in top:
        for e in ends:
            s = q.trough_step if e == "trough" else q.peak_step
            starts.setdefault(s, {"step": s, "role": e, "pairs": [], "p_ood_logged": p_ood.get(s)})
            starts[s]["pairs"].append(f"{q.peak_step}:{q.trough_step}")
    key = {"config_hash": run.cfg.hash(), "relax": settings.as_dict(), "every": every, "seed": args.seed,
           "device": device.type}
    progress_path = run.analysis_dir / PROGRESS
    records, why = load_progress(progress_path, key)
    if why:
        print(why)
    done = {(r["step"], r["arm"]) for r in records}
    jobs = []
    for s in sorted(starts):
        arms = {"raised": settings.lam} if args.no_control else {"raised": settings.lam,
                                                                  "control": lambda_at(run.cfg, s)}
        jobs += [(s, arm, lam) for arm, lam in arms.items() if (s, arm) not in done]
    task = run.task() if jobs else None
    for s, arm, lam in tqdm(jobs, desc="basin recovery", unit="relax", disable=True if args.no_progress else None):
        model = run.model(s, device=device)
        r = relax(model, run.cfg, task, replace(settings, lam=lam), args.seed,
                  [s, B1_KEY], device, trace_every=every)
        records.append({"step": s, "arm": arm, "lam": lam, **r})
        runio.atomic_write_json(progress_path, {"settings": key, "records": records})

    out = []
    for s in sorted(starts):
        row = dict(starts[s])
        for rec in (r for r in records if r["step"] == s):
            tr = rec["trace"]
            row[rec["arm"]] = {"lam": rec["lam"], "diverged": rec["diverged"], "trace": tr,
                               **recovery_summary([t["step"] for t in tr], [t["p_ood"] for t in tr], args.threshold,
                                                  sigma)}
        if "control" in row and "raised" in row:
            row["max_raised_minus_control"] = row["raised"]["max_p_ood"] - row["control"]["max_p_ood"]
            row["max_raised_minus_control_sigma"] = (None if not sigma else row["max_raised_minus_control"] / sigma)
        out.append(row)
    result = {**base, "applicable": True, "starts": out,
              "n_reached": sum(bool(r.get("raised", {}).get("reached")) for r in out), "n_starts": len(out)}
    path = write_result(run, "basin_recovery", result)
    plot(run, result)
    for r in out:
        a = r["raised"]
        line = (f"start {r['step']} ({r['role']}, p_ood {a['start_p_ood']:.3f}): raised lambda {a['lam']:g} -> max "
                f"{a['max_p_ood']:.3f} at +{a['max_step']}, steps to {args.threshold:g}: "
                f"{'never' if a['steps_to_threshold'] is None else a['steps_to_threshold']}")
        if "control" in r:
            c = r["control"]
            line += f"; control lambda {c['lam']:g} -> max {c['max_p_ood']:.3f}"
        print(line)
    print(f"wrote {path}")
    return 0


def plot(run, r) -> None:
    fig, ax = figure(1, 1, width=6.5, height=4.0)
    a = ax[0, 0]
    for i, s in enumerate(r["starts"]):
        for arm, ls in (("raised", "-"), ("control", ":")):
            if arm in s:
                t = s[arm]["trace"]
                a.plot([x["step"] for x in t], [x["p_ood"] for x in t], ls, marker=".", c=f"C{i % 10}",
                       label=f"{s['step']} ({s['role']}), λ {s[arm]['lam']:g}")
    a.axhline(r["settings"]["threshold"], c="k", lw=0.8, ls="--", label="threshold")
    a.set(xlabel="relaxation step", ylabel="p_ood", ylim=(-0.02, 1.02),
          title="B1: basin recovery (solid: raised λ; dotted: λ unchanged)")
    a.legend(fontsize=6)
    save_figure(fig, run, "basin_recovery")


if __name__ == "__main__":
    sys.exit(run_main(main))
