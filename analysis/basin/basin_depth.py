"""B6 basin depth: perturb a checkpoint, relax it with protocol R, and see whether it returns to the probe basin.

For each chosen checkpoint, perturbation size σ and trial: every trunk matrix becomes
W + σ·rms(W)·Z (Z ~ N(0, I) from a generator seeded with (--seed, step, σ, trial); a relative
perturbation of size σ), then protocol R relaxes it (training/geometry/basin.py: a fresh optimizer as in
training, constant lr, probe weight λ, the run's clip and micro-batch size, no accumulation, batches
from a seeded stream of its own) and the OOD probe set is evaluated: p_ood, nll_ood, lm_ood, and the
regime "probe" (p_ood >= 0.6 and nll_ood <= 2.0) or "lm". Per checkpoint and σ: D_σ = mean p_ood over
the trials, its std and standard error, mean nll_ood and lm_ood, the fraction of probe regimes; and
σ½, where D_σ first falls below D_0/2 (linear interpolation; inf if never, 0 if D_0 = 0). Trials at
the same (checkpoint, trial) share their relaxation batches across σ, so σ is the only difference.

Protocol R scaled to the run's preset (training/studies/common.py): paper 300 steps at lr 6e-4 with λ = 4;
quick 18 steps at lr 1.8e-3 with λ = 2; test 1 step. --relax-steps, --lr and --lam override.

Checkpoints: --steps, else the peaks and troughs of the --max-pairs largest switch pairs (--pairs or
RUN/oscillation_manifest.json) plus the last checkpoint ("late"), else (no pairs) the checkpoint of
the best logged p_ood and the last one. With pairs, the drift table (distances between the peak,
trough and late weights, from the Gram) is added.

Default σ grid: the paper's {0, 0.01, 0.03, 0.1, 0.3} for a paper-preset run, {0, 1, 3, 10} for the
small presets, whose basins are much wider: on the quick run, σ <= 1 leaves the relaxed p_ood where
σ = 0 does, σ = 3 barely lowers it and σ = 10 destroys it, so the paper's grid would report σ½ = inf
everywhere. With 1 trial and the largest pair this is 8-12 relaxations, one to two minutes for a
quick run on a 2-core CPU. The paper's full protocol: --sigmas 0,0.01,0.03,0.1,0.3 --n-trials 8
--max-pairs 0 (skydancerosel/mini_gpt's B6_basin_depth.py used 4 trials). The relaxation itself (a fresh optimizer at ~6x
the run's final learning rate) moves p_ood: compare D_0 with the logged p_ood of the checkpoint,
which the JSON keeps beside it.

Every finished relaxation is appended to RUN/analysis/basin_depth_progress.json, so an interrupted
run resumes where it stopped; records are reused only when the run, the protocol, the seed and the
device are the same.

Output: RUN/analysis/basin_depth.json and basin_depth.png.

Example:  python analysis/basin/basin_depth.py --run-dir runs/quick
          python analysis/basin/basin_depth.py --run-dir runs/paper --n-trials 8 --max-pairs 0
"""
import math
import sys

import numpy as np
import torch
from tqdm import tqdm

from figures.style import figure, save_figure
from training.core import runio
from training.core.cli import run_main
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.geometry.analysis_io import analysis_parser, open_run, parse_step_list, write_result
from training.geometry.basin import (
    PAPER_SIGMAS,
    SMALL_MODEL_SIGMAS,
    default_sigmas,
    depth_summary,
    drift_table,
    load_progress,
    p_ood_series,
    pair_steps,
    peak_trough_depth,
    perturb_trunk,
    perturbation_seed,
    relax,
    relax_defaults,
    resolve_pairs,
    sigma_half,
)
from training.geometry.trajectory import cached_gram

PROGRESS = "basin_depth_progress.json"


def parse_sigmas(text: str) -> list[float]:
    try:
        s = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--sigmas must be a comma-separated list of numbers (got '{text}')") from None
    if not s or s[0] != 0.0 or not all(math.isfinite(x) and x >= 0 for x in s):
        raise UserError(f"--sigmas must be finite values >= 0 and include 0 (the unperturbed reference); got '{text}'")
    return s


def choose_checkpoints(args, run, pairs, p_ood) -> list[dict]:
    last = run.steps[-1]
    roles: dict[int, list[str]] = {}
    if args.steps:
        for s in parse_step_list(args.steps, run.steps):
            roles.setdefault(s, []).append("chosen")
    elif pairs:
        top = sorted(pairs, key=lambda q: -q.amplitude)
        top = top if args.max_pairs == 0 else top[:args.max_pairs]
        for q in top:
            roles.setdefault(q.peak_step, []).append("peak")
            roles.setdefault(q.trough_step, []).append("trough")
    else:
        evaluated = [s for s in run.steps if s in p_ood]
        if evaluated:
            roles.setdefault(max(evaluated, key=lambda s: (p_ood[s], -s)), []).append("best_p_ood")
    if not args.steps:
        roles.setdefault(last, []).append("late")
    return [{"step": s, "role": "/".join(sorted(set(roles[s]))), "p_ood_logged": p_ood.get(s)} for s in sorted(roles)]


def main() -> int:
    p = analysis_parser(__doc__)
    p.add_argument("--steps", help="comma-separated checkpoint steps (default: switch peaks/troughs + last)")
    p.add_argument("--pairs", help="switch pairs PEAK:TROUGH,... (default: the oscillation manifest)")
    p.add_argument("--max-pairs", type=int, default=1,
                   help="use the peaks and troughs of this many largest-amplitude pairs (default 1; 0 = all)")
    p.add_argument("--sigmas", help="perturbation sizes, must include 0 (default: "
                   + ",".join(f"{s:g}" for s in PAPER_SIGMAS) + " for a paper run, "
                   + ",".join(f"{s:g}" for s in SMALL_MODEL_SIGMAS) + " otherwise)")
    p.add_argument("--n-trials", type=int, default=1, help="trials per (checkpoint, σ) (default 1; paper 8)")
    p.add_argument("--relax-steps", type=int, help="relaxation updates (default: 300 scaled to the preset)")
    p.add_argument("--lr", type=float, help="relaxation learning rate (default: 6e-4 scaled to the preset)")
    p.add_argument("--lam", type=float, help="relaxation probe weight λ (default: twice the preset's initial λ)")
    p.add_argument("--p-threshold", type=float, default=0.6, help="probe regime: p_ood >= this (default 0.6)")
    p.add_argument("--nll-threshold", type=float, default=2.0, help="probe regime: nll_ood <= this (default 2.0)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | mps | auto (default cpu)")
    args = p.parse_args()
    if args.n_trials < 1 or args.max_pairs < 0:
        raise UserError("--n-trials must be >= 1 and --max-pairs >= 0")
    run = open_run(args.run_dir, args.out_dir)
    sigmas = parse_sigmas(args.sigmas) if args.sigmas is not None else list(default_sigmas(run.cfg))
    settings = relax_defaults(run.cfg, args.relax_steps, args.lr, args.lam, args.p_threshold, args.nll_threshold)
    device = resolve_device(args.device)
    metrics = run.metrics()
    p_ood = p_ood_series(metrics)
    pairs, info = resolve_pairs(run.dir, run.steps, p_ood, args.pairs)
    ckpts = choose_checkpoints(args, run, pairs, p_ood)

    key = {"config_hash": run.cfg.hash(), "relax": settings.as_dict(), "seed": args.seed, "device": device.type}
    progress_path = run.analysis_dir / PROGRESS
    records, why = load_progress(progress_path, key)
    if why:
        print(why)
    done = {(r["step"], r["sigma"], r["trial"]) for r in records}
    jobs = [(c["step"], s, t) for c in ckpts for t in range(args.n_trials) for s in sigmas
            if (c["step"], s, t) not in done]
    if done and jobs:
        print(f"resuming: {len(done)} relaxation(s) already done, {len(jobs)} to go")
    task = run.task() if jobs else None
    bar = tqdm(jobs, desc="basin depth", unit="relax", disable=True if args.no_progress else None)
    for step, sigma, trial in bar:
        model = run.model(step, device=device)
        seed = perturbation_seed(args.seed, step, sigma, trial)
        perturb_trunk(model, sigma, torch.Generator().manual_seed(seed))
        r = relax(model, run.cfg, task, settings, args.seed, [step, trial], device)
        records.append({"step": step, "sigma": sigma, "trial": trial, "perturbation_seed": seed, **r})
        runio.atomic_write_json(progress_path, {"settings": key, "records": records})

    checkpoints = []
    for c in ckpts:
        trials = {s: [r for r in records if r["step"] == c["step"] and r["sigma"] == s and r["trial"] < args.n_trials]
                  for s in sigmas}
        per_sigma = depth_summary(sigmas, trials)
        sh = sigma_half(sigmas, [d["mean_p_ood"] for d in per_sigma])
        checkpoints.append({**c, "sigma_half": sh, "sigma_half_is_inf": math.isinf(sh), "per_sigma": per_sigma})

    result = {"run_dir": str(run.dir),
              "settings": {"seed": args.seed, "sigmas": sigmas, "n_trials": args.n_trials, "device": str(device),
                           "max_pairs": args.max_pairs, "relax": settings.as_dict(), "pairs_source": info["source"],
                           "perturbation": "W + sigma * rms(W) * Z per trunk matrix, Z ~ N(0, I)",
                           "paper_protocol": "--sigmas 0,0.01,0.03,0.1,0.3 --n-trials 8 --max-pairs 0"},
              "n_pairs": len(pairs),
              "pairs": [{"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind,
                         "amplitude": q.amplitude} for q in pairs],
              "checkpoints": checkpoints}
    if "note" in info:
        result["note"] = info["note"]
    result["claim21"] = peak_trough_depth(checkpoints)
    if pairs:
        peaks, troughs = pair_steps(pairs)
        gram = cached_gram(run.checkpoints(), None, progress=not args.no_progress)
        result["drift_table"] = drift_table(gram, peaks, troughs, run.steps[-1])
    else:
        result["drift_table"] = None
        result["drift_table_note"] = "no switch pairs: the drift table needs peaks and troughs"
    path = write_result(run, "basin_depth", result)
    plot(run, result)

    print(f"protocol R: {settings.steps} steps, lr {settings.lr:g}, lambda {settings.lam:g}, batch "
          f"{settings.batch_size}; sigmas {sigmas}, {args.n_trials} trial(s)")
    if "note" in result:
        print(f"note: {result['note']}")
    for c in checkpoints:
        cells = "  ".join(f"s={d['sigma']:g}: {d['mean_p_ood']:.3f}" for d in c["per_sigma"])
        print(f"step {c['step']} ({c['role']}, logged p_ood {_fmt(c['p_ood_logged'])}): D_sigma {cells}; "
              f"sigma_1/2 = {c['sigma_half']:.3g}")
    dt = result["drift_table"]
    if dt:
        print(f"drift table: mean within {_fmt(dt['mean_within'])}, mean between {dt['mean_between']:.4g}, "
              f"ratio {_fmt(dt['ratio_between_within'])}, |C_P - C_T| {dt['centre_distance']:.4g}")
    print(f"wrote {path}")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def plot(run, r) -> None:
    fig, ax = figure(1, 3, width=4.6, height=3.8)
    sig = r["settings"]["sigmas"]
    pos = [s for s in sig if s > 0]
    for i, c in enumerate(r["checkpoints"]):
        d = c["per_sigma"]
        err = [x["sem_p_ood"] or 0.0 for x in d]
        lbl = f"{c['step']} ({c['role']})"
        ax[0, 0].errorbar(sig, [x["mean_p_ood"] for x in d], yerr=err, marker="o", capsize=3, c=f"C{i % 10}", label=lbl)
        ax[0, 1].plot(sig, [x["probe_fraction"] for x in d], "o-", c=f"C{i % 10}", label=lbl)
        if c["p_ood_logged"] is not None:
            ax[0, 0].axhline(c["p_ood_logged"], c=f"C{i % 10}", ls=":", lw=1)
    for a in ax[0, :2]:
        if pos:
            a.set_xscale("symlog", linthresh=min(pos))
        a.set_xlabel("perturbation size σ (relative)")
    ax[0, 0].set(ylabel="D_σ = mean p_ood after relaxation", ylim=(-0.02, 1.02),
                 title=f"B6: basin depth ({r['settings']['n_trials']} trial(s); dotted: logged p_ood)")
    ax[0, 0].legend(fontsize=7)
    ax[0, 1].set(ylabel="fraction in the probe regime", ylim=(-0.02, 1.02), title="probe-regime fraction")
    x = np.arange(len(r["checkpoints"]))
    top = max(pos) if pos else 1.0
    sh = [c["sigma_half"] for c in r["checkpoints"]]
    vals = [top * 1.2 if (v is None or math.isinf(v)) else v for v in sh]
    bars = ax[0, 2].bar(x, vals, color=[f"C{i % 10}" for i in range(len(x))])
    for b, v in zip(bars, sh):
        if v is None or math.isinf(v):
            b.set_hatch("//")
            ax[0, 2].text(b.get_x() + b.get_width() / 2, b.get_height(), f"> {top:g}", ha="center", va="bottom",
                          fontsize=7)
    ax[0, 2].set_xticks(x, [f"{c['step']}\n{c['role']}" for c in r["checkpoints"]], fontsize=7)
    ax[0, 2].set(ylabel="σ½", title="σ½ (hatched: never below D_0/2)")
    if r.get("note"):
        fig.suptitle(r["note"][:110] + ("…" if len(r["note"]) > 110 else ""), fontsize=8)
    save_figure(fig, run, "basin_depth")


if __name__ == "__main__":
    sys.exit(run_main(main))
