#!/usr/bin/env python
"""What ``gram_online`` costs the training, at the ``quick`` and ``cpu`` presets.

Two figures per preset:

* A/B: the same short run trained in fresh processes without (A) and with ``--set gram_online=true`` (B),
  interleaved (A B, B A, ...), one torch thread each; the training time of each is the last ``elapsed_s`` of its
  metrics.jsonl (the runner of ``tracking_overhead.py``). Reported: the median ratio B/A with its range.
* direct: the online Gram replayed over synthetic checkpoints of the preset's trunk shape, as many as the full
  run writes (``trajectory_pca_scale.py``'s replay: each checkpoint's update timed, its tensors in memory), summed
  over the run, as a share of the full run's training time (the A runs' seconds per step times the preset's
  steps). The short runs write few checkpoints, whose rows are the cheapest; this figure has all of them.

    python benchmarks/gram_online_overhead.py                          # quick and cpu, 60 steps, 3 pairs each

Writes ``benchmarks/results/gram_online_overhead.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tracking_overhead import train  # (the A/B runner: one implementation)
from trajectory_pca_scale import online_replay, write_checkpoints

from training.core import runio
from training.core.cli import CommandParser, run_main
from training.core.config import checkpoint_steps, preset
from training.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def ab_pairs(name: str, args, tmp: Path) -> list[dict]:
    ns = argparse.Namespace(preset=name, steps=args.steps, cache=args.cache, set=[], threads=args.threads)
    train(tmp / f"{name}_warm", ns, [])                 # builds the corpus / tokenizer cache; not timed
    pairs = []
    for i in range(args.repeats):
        arms = [("A", []), ("B", ["--set", "gram_online=true"])]
        got = {}
        for arm, extra in arms if i % 2 == 0 else arms[::-1]:
            got[arm] = train(tmp / f"{name}_{arm}{i}", ns, extra)
        pairs.append(got)
        print(f"{name} pair {i + 1}: without {got['A']:.2f} s, with gram_online {got['B']:.2f} s, "
              f"ratio {got['B'] / got['A']:.4f}", file=sys.stderr)
    return pairs


def direct(name: str, threads: int, tmp: Path) -> dict:
    import torch
    from training.geometry.trajectory import CheckpointSet
    cfg = preset(name)
    T = len(checkpoint_steps(cfg))
    run = tmp / f"{name}_replay"
    dim = write_checkpoints(run, cfg, T, seed=0)
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rep = online_replay(CheckpointSet(run))
    finally:
        torch.set_num_threads(n)
    return {"checkpoints": T, "trunk_params": dim, "update_s": rep["update_s"], "update_total_s": sum(rep["update_s"])}


def main() -> int:
    p = CommandParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["quick", "cpu"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the runs (OMP_NUM_THREADS; default 1)")
    p.add_argument("--repeats", type=int, default=3, help="A/B pairs per preset (default 3)")
    p.add_argument("--cache", default=str(ROOT / ".cache"), help="token/tokenizer cache (default: .cache)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gram_online_overhead.json"))
    args = p.parse_args()
    if args.repeats < 1 or args.steps < 2 or args.threads < 1:
        raise UserError("--repeats and --threads must be >= 1 and --steps >= 2")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.presets:
            pairs = ab_pairs(name, args, Path(tmp))
            ratios = sorted(q["B"] / q["A"] for q in pairs)
            a = statistics.median(q["A"] for q in pairs)
            d = direct(name, args.threads, Path(tmp))
            full_s = a / args.steps * preset(name).steps
            rows.append({"preset": name, "steps": args.steps, "pairs": pairs,
                         "median_train_s": {"without": a, "with": statistics.median(q["B"] for q in pairs)},
                         "ratio_median": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
                         "direct": d, "full_run_train_s_estimate": full_s,
                         "direct_share": d["update_total_s"] / full_s})
    print(f"{'preset':>7}{'A s':>8}{'B s':>8}{'B/A median':>12}{'range':>16}{'ckpts':>7}{'rows total s':>14}"
          f"{'last row s':>12}{'full run s':>12}{'share':>9}")
    for r in rows:
        d = r["direct"]
        print(f"{r['preset']:>7}{r['median_train_s']['without']:>8.2f}{r['median_train_s']['with']:>8.2f}"
              f"{r['ratio_median']:>12.4f}{'%.3f-%.3f' % (r['ratio_min'], r['ratio_max']):>16}{d['checkpoints']:>7}"
              f"{d['update_total_s']:>14.2f}{d['update_s'][-1]:>12.3f}{r['full_run_train_s_estimate']:>12.0f}"
              f"{100 * r['direct_share']:>8.2f}%")
    out = {"threads": args.threads, "repeats": args.repeats, "results": rows,
           "machine": {"python": sys.version.split()[0], "time": time.strftime("%Y-%m-%d %H:%M")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    runio.atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
