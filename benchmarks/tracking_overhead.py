#!/usr/bin/env python
"""What ``--log tensorboard`` costs the training: whole short runs with and without it, interleaved A/B.

Each repeat trains the same run twice in fresh processes (``training/pilot.py``, order alternating: A B, B A, ...),
once without a sink (A) and once with ``--log tensorboard`` (B), and reads the training time of each from its
metrics.jsonl (the last record's ``elapsed_s``: the training loop with its evaluations, checkpoints and sink writes;
not the process start, imports or the sink's opening, which happen once per run). Reported: the median ratio B/A
of the pairs with its range, the medians of both arms, and -- a figure that the machine's noise cannot blur -- the
time one TensorBoard write of a metrics record takes, measured in this process, times the run's records, as a
share of the run's training time.

    python benchmarks/tracking_overhead.py                                  # quick shape, 60 steps, 5 pairs
    python benchmarks/tracking_overhead.py --preset test --steps 200 --repeats 9

Writes ``benchmarks/results/tracking_overhead.json`` (``--out``).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from training.core import runio, tracking
from training.core.cli import CommandParser, run_main
from training.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, args, extra: list[str]) -> float:
    """Train one run into ``out``; its training time (s)."""
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--no-progress", "--preset", args.preset,
           "--steps", str(args.steps), "--out-dir", str(out), "--set", f"cache_dir={args.cache}",
           "--set", f"lambda_step={args.steps // 2}", "--set", "warmup=10", "--device", "cpu", *args.set, *extra]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(args.threads))    # fewer threads than cores: less at the mercy of other load
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if p.returncode != 0:
        raise UserError(f"training failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(runio.read_metrics(out)[-1]["elapsed_s"])


def sink_write_seconds(record: dict, n: int = 200) -> float:
    """Median seconds of one TensorBoardSink.log of ``record`` (add_scalar per number + flush), in this process."""
    with tempfile.TemporaryDirectory() as d:
        sink = tracking.TensorBoardSink(Path(d))
        times = []
        for i in range(n):
            t = time.perf_counter()
            sink.log({**record, "step": i})
            times.append(time.perf_counter() - t)
        sink.close()
    return statistics.median(times)


def main() -> int:
    p = CommandParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the runs (OMP_NUM_THREADS; default 1)")
    p.add_argument("--repeats", type=int, default=5, help="A/B pairs (default 5)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="passed to pilot.py")
    p.add_argument("--cache", default=str(ROOT / ".cache"), help="token/tokenizer cache (default: .cache)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tracking_overhead.json"))
    args = p.parse_args()
    if args.repeats < 1 or args.steps < 2 or args.threads < 1:
        raise UserError("--repeats and --threads must be >= 1 and --steps >= 2")
    args.set = [x for item in args.set for x in ("--set", item)]
    tracking.require(["tensorboard"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train(tmp / "warm", args, [])            # builds the corpus / tokenizer cache; not timed
        pairs = []
        for i in range(args.repeats):
            arms = [("A", []), ("B", ["--log", "tensorboard"])]
            got = {}
            for arm, extra in arms if i % 2 == 0 else arms[::-1]:
                got[arm] = train(tmp / f"{arm}{i}", args, extra)
            pairs.append(got)
            print(f"pair {i + 1}: without {got['A']:.2f} s, with --log tensorboard {got['B']:.2f} s, "
                  f"ratio {got['B'] / got['A']:.4f}", file=sys.stderr)
        records = runio.read_metrics(tmp / "B0")
        n_scalars = len(tracking.scalars(records[-1]))
        per_write = sink_write_seconds(records[-1])
    ratios = sorted(p["B"] / p["A"] for p in pairs)
    a, b = statistics.median(p["A"] for p in pairs), statistics.median(p["B"] for p in pairs)
    write_share = per_write * len(records) / a
    result = {"preset": args.preset, "steps": args.steps, "repeats": args.repeats, "threads": args.threads,
              "set": args.set,
              "records_per_run": len(records), "scalars_per_record": n_scalars, "pairs": pairs,
              "median_train_s": {"without": a, "with_tensorboard": b},
              "ratio_median": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
              "sink_write_ms": 1e3 * per_write, "sink_write_share": write_share,
              "machine": {"python": sys.version.split()[0], "time": time.strftime("%Y-%m-%d %H:%M")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    runio.atomic_write_json(args.out, result)
    print(f"{args.preset}, {args.steps} steps, {len(records)} records of {n_scalars} numbers, {args.repeats} pairs: "
          f"training {a:.2f} s without, {b:.2f} s with --log tensorboard (medians); ratio with/without "
          f"{result['ratio_median']:.4f} (pairs {ratios[0]:.4f}-{ratios[-1]:.4f})")
    print(f"one TensorBoard write of a record: {1e3 * per_write:.3f} ms; x {len(records)} records = "
          f"{100 * write_share:.3f} % of the training time")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
