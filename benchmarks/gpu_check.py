#!/usr/bin/env python
"""One short GPU check of the `paper` preset: step throughput, a short run, the trunk PCA, bf16 vs fp32.

Meant for a machine with one NVIDIA GPU that is lent for a few minutes (``benchmarks/gpu_check.sh`` wraps
it with a time limit). Five parts, each timed and written to one JSON, then printed as one table:

1. ``step``: the training step at the paper's shape (8 layers, d 512, V 50,257 padded to 50,304, 64 × 256
   tokens per micro-batch), bf16 autocast, with and without ``torch.compile``: ms/step, tokens/s, MFU
   against the GPU's dense bf16 peak, peak memory (``benchmarks/train_throughput.py``'s own step);
2. ``run``: a 300-step `paper` run with checkpoints every 100 steps through the training command, and the
   10,000-step time it projects (its steps 100 → 300 per step, eval and checkpoints included at twice the
   paper's density, times 10,000). The machine is offline, so the run trains on the built-in synthetic
   corpus with a trained BPE of ``--run-vocab`` tokens instead of TinyStories with GPT-2's 50,257: the
   projection from the step benchmark (which has the full vocabulary) is printed beside it;
3. ``pca``: the exact trunk PCA of 51 checkpoints of the paper's trunk on the GPU against one read of the
   same files (``benchmarks/trajectory_pca_scale.py --device cuda``);
4. ``precision``: the first steps' losses of the same model and batches in bf16 autocast and in fp32
   (largest relative difference);
5. the targets of the performance issue beside the numbers: the 10k-step run in ≤ 10 minutes, ≥ 35 % bf16
   MFU, PCA within 2× of the read.

``--dry-run`` runs every part at the `test` shape on the CPU in seconds (what CI checks), so the code paths
and the JSON layout are the same as on the GPU.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from train_throughput import PEAK_TFLOPS, bench_shape, measured_gemm_tflops, peak_tflops  # benchmarks/
from training.core.batch import Batch
from training.core.cli import CommandParser, run_main
from training.core.config import preset
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import build_optimizer
from training.core.trainer import autocast_context, build_model, forward_backward

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"run_10k_minutes": 10.0, "bf16_mfu": 0.35, "pca_over_read": 2.0}


def part_step(device: torch.device, dry: bool) -> list[dict]:
    """Step throughput without and with torch.compile, with the peak memory of each."""
    peak = peak_tflops(device) or (measured_gemm_tflops(device, n=512, reps=2) if dry else None)
    rows = []
    for compiled in (False, True):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        if dry:
            r = bench_shape("test", device, steps=2, warmup=1, batch_size=None, compile_model=compiled, peak=peak)
        else:
            r = bench_shape("paper", device, steps=20, warmup=5, batch_size=64, compile_model=compiled, peak=peak,
                            vocab_multiple=64)
        r["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda"
                                else None)
        rows.append(r)
    return rows


def part_run(work: Path, device: torch.device, dry: bool, run_vocab: int, step_ms: float | None) -> dict:
    """A short run through the training command; the 10,000-step time it projects."""
    run_dir = work / "paper300"
    steps, every = (6, 2) if dry else (300, 100)
    cmd = [sys.executable, str(ROOT / "training" / "pilot.py"), "--preset", "test" if dry else "paper",
           "--steps", str(steps), "--ckpt-every", str(every), "--eval-every", str(every), "--no-progress",
           # the paper's schedule in proportion (warmup 15 %, λ switch at 40 %): the timing does not depend on it
           "--warmup", str(max(1, steps * 15 // 100)), "--lambda-step", str(steps * 4 // 10),
           "--device", device.type, "--out-dir", str(run_dir)]
    if not dry:      # offline: the built-in corpus and a trained BPE in place of TinyStories + GPT-2's tokenizer
        cmd += ["--set", "corpus=synthetic", "--set", "n_train_docs=20000", "--set", "n_val_docs=1000",
                "--set", "tokenizer=bpe", "--set", f"bpe_vocab_size={run_vocab}", "--set", "vocab_multiple=64"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"ok": False, "error": tail[0], "wall_s": wall, "command": cmd}
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    by_step = {r["step"]: r["elapsed_s"] for r in recs}
    first, last = every, steps
    per_step = (by_step[last] - by_step[first]) / (last - first)
    out = {"ok": True, "steps": steps, "ckpt_every": every, "wall_s": wall, "train_s": by_step[last],
           "s_per_step_incl_eval_ckpt": per_step, "projected_10k_minutes": per_step * 10_000 / 60,
           "checkpoints": len(list((run_dir / "checkpoints").glob("step_*.safetensors"))),
           "vocabulary": "trained BPE" if dry else f"trained BPE of {run_vocab} tokens (offline)"}
    if step_ms is not None:
        cfg = preset("test" if dry else "paper")
        out["projected_10k_minutes_from_step"] = step_ms / 1e3 * cfg.grad_accum * 10_000 / 60
    return out


def part_pca(work: Path, device: torch.device, dry: bool) -> dict:
    """The trunk PCA on the device against one read of the same checkpoints."""
    out = work / "pca.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "trajectory_pca_scale.py"), "--checkpoints", "5" if dry else "51",
           "--preset", "test" if dry else "paper", "--repeats", "1", "--workdir", str(work / "pca"),
           "--device", device.type, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        return {"ok": False, "error": tail[0]}
    res = json.loads(out.read_text())
    row = res["results"][0] if "results" in res else res
    return {"ok": True, **{k: row[k] for k in row if isinstance(row[k], (int, float, str))}}


def part_precision(device: torch.device, dry: bool, steps: int = 10) -> dict:
    """The same model, optimizer and batches trained ``steps`` steps in fp32 and in bf16 autocast."""
    cfg = preset("test" if dry else "paper").replace(device=device.type, grad_accum=1,
                                                     batch_size=4 if dry else 16)
    vocab = 512 if dry else 50_257
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), generator=g)
        batches.append(Batch(x[:, :-1], x[:, 1:], torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.bool)).to(device))
    losses = {}
    for precision in ("fp32", "bf16"):
        c = cfg.replace(precision=precision)
        model = build_model(c, vocab, device)
        optimizer, _ = build_optimizer(model, c, device)
        params = list(model.parameters())
        curve = []
        for b in batches:
            sums = forward_backward(model, optimizer, lambda m, b=b: b, 1, c.lambda_probe, c.grad_clip, params,
                                    lambda c=c: autocast_context(c, device))
            optimizer.step()
            curve.append(float(sums["loss"]))
        losses[precision] = curve
    rel = [abs(a - b) / abs(a) for a, b in zip(losses["fp32"], losses["bf16"])]
    return {"steps": steps, "loss_fp32": losses["fp32"], "loss_bf16": losses["bf16"], "max_rel_diff": max(rel),
            "first_rel_diff": rel[0]}


def verdicts(res: dict) -> dict:
    step = {r["compiled"]: r for r in res["step"]}
    best = max(res["step"], key=lambda r: r["tokens_per_s"])
    run = res["run"]
    pca = res["pca"]
    ratio = pca.get("ratio_pca_over_read")
    return {"bf16_mfu": best["mfu"], "bf16_mfu_met": best["mfu"] is not None and best["mfu"] >= TARGETS["bf16_mfu"],
            "compile_speedup": step[False]["ms_per_step_median"] / step[True]["ms_per_step_median"]
            if step[True]["ms_per_step_median"] > 0 else None,
            "run_10k_minutes": run.get("projected_10k_minutes"),
            "run_10k_met": run.get("ok", False) and run["projected_10k_minutes"] <= TARGETS["run_10k_minutes"],
            "pca_over_read": ratio, "pca_met": ratio is not None and ratio <= TARGETS["pca_over_read"]}


def table(res: dict) -> list[str]:
    lines = [f"device: {res['device_name']} · torch {res['torch']} · {'DRY RUN (test shape, CPU)' if res['dry_run'] else 'paper shape'}"]
    for r in res["step"]:
        if r["ms_per_step_median"] != r["ms_per_step_median"]:
            lines.append(f"step  compile={str(r['compiled']):5}  not run")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        mem = f"{r['peak_memory_gib']:.1f} GiB" if r["peak_memory_gib"] is not None else "-"
        lines.append(f"step  compile={str(r['compiled']):5}  {r['ms_per_step_median']:9.1f} ms  "
                     f"{r['tokens_per_s']:>12,.0f} tok/s  MFU {mfu:>6}  peak mem {mem}")
    run = res["run"]
    if run.get("ok"):
        lines.append(f"run   {run['steps']} steps, ckpt every {run['ckpt_every']}: {run['train_s']:.1f} s training "
                     f"({run['wall_s']:.1f} s wall) -> 10k steps ≈ {run['projected_10k_minutes']:.1f} min"
                     + (f" (from the step benchmark at V 50,304: {run['projected_10k_minutes_from_step']:.1f} min)"
                        if "projected_10k_minutes_from_step" in run else ""))
    else:
        lines.append(f"run   failed: {run.get('error')}")
    pca = res["pca"]
    lines.append("pca   " + (", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in pca.items() if k != "ok") if pca.get("ok") else f"failed: {pca.get('error')}"))
    p = res["precision"]
    lines.append("bf16  not run" if not p["steps"] else
                 f"bf16  vs fp32 over {p['steps']} steps: max relative loss difference {p['max_rel_diff']:.2e}")
    v = res["verdicts"]
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    lines.append(f"targets: 10k run {fmt(v['run_10k_minutes'], '.1f')} min (≤ {TARGETS['run_10k_minutes']:.0f}: "
                 f"{'met' if v['run_10k_met'] else 'not met'}); bf16 MFU {fmt(v['bf16_mfu'], '.1%')} (≥ 35 %: "
                 f"{'met' if v['bf16_mfu_met'] else 'not met'}); PCA/read {fmt(v['pca_over_read'], '.2f')} (≤ 2: "
                 f"{'met' if v['pca_met'] else 'not met'}); compile speed-up {fmt(v['compile_speedup'], '.2f')}x")
    return lines


def main() -> int:
    p = CommandParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every part at the test shape on the CPU (seconds)")
    p.add_argument("--device", default="auto", help="auto (default) | cuda | cpu")
    p.add_argument("--run-vocab", type=int, default=8192, help="BPE vocabulary of the offline 300-step run")
    p.add_argument("--parts", nargs="+", default=["step", "run", "pca", "precision"],
                   choices=["step", "run", "pca", "precision"], help="parts to run (default all)")
    p.add_argument("--workdir", help="scratch directory (default: a temporary one, removed afterwards)")
    p.add_argument("--out", help="JSON to write (default $OUT/gpu_check.json when $OUT is set, else "
                                 "benchmarks/results/gpu_check.json)")
    args = p.parse_args()
    device = torch.device("cpu") if args.dry_run else resolve_device(args.device)
    if not args.dry_run and device.type != "cuda":
        raise UserError(f"gpu_check needs a CUDA GPU (device {device.type}); use --dry-run to check it on a CPU")
    out = Path(args.out) if args.out else (Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT")
                                           else ROOT / "benchmarks" / "results" / "gpu_check.json")
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res: dict = {"device_name": name, "torch": torch.__version__, "dry_run": args.dry_run, "targets": TARGETS,
                 "known_peaks_tflops": PEAK_TFLOPS, "seconds": {}}
    empty_step = [{"compiled": c, "ms_per_step_median": float("nan"), "tokens_per_s": 0.0, "mfu": None,
                   "peak_memory_gib": None} for c in (False, True)]
    try:
        for part in ("step", "run", "pca", "precision"):
            t = time.perf_counter()
            if part not in args.parts:
                res[part] = empty_step if part == "step" else {"ok": False, "error": "not run (--parts)"}
                if part == "precision":
                    res[part] = {"steps": 0, "max_rel_diff": float("nan")}
                continue
            if part == "step":
                res["step"] = part_step(device, args.dry_run)
            elif part == "run":
                step_ms = next((r["ms_per_step_median"] for r in res["step"] if not r["compiled"]), None)
                res["run"] = part_run(work, device, args.dry_run, args.run_vocab,
                                      None if step_ms != step_ms else step_ms)
            elif part == "pca":
                res["pca"] = part_pca(work, device, args.dry_run)
            else:
                res["precision"] = part_precision(device, args.dry_run)
            res["seconds"][part] = round(time.perf_counter() - t, 1)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    res["verdicts"] = verdicts(res)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2))
    tmp.replace(out)
    print("\n".join(table(res)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
