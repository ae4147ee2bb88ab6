#!/usr/bin/env python
"""Throughput of the training step (forward, backward, clipping, optimizer step) per model shape.

Uses the training loop's own step function (:func:`training.core.trainer.forward_backward`) on random
token batches, for the ``quick`` and ``paper`` shapes on the current device: bf16 autocast and fused
AdamW on CUDA, fp32 on the CPU. Prints a table and writes JSON (``--out``).

    python benchmarks/train_throughput.py                       # both shapes, default sizes per device
    python benchmarks/train_throughput.py --shapes paper --steps 20 --batch-size 64

Model FLOPs per token follow the usual 6·N (N = non-embedding-input parameters incl. the tied head)
plus attention 6·L·T·d (causal-halved 12·L·T·d). MFU is reported against the device's dense bf16
peak on a known GPU, against ``--peak-tflops`` when given, and on the CPU against the measured rate of
a large fp32 matrix product on the same threads (a practical peak: what the BLAS reaches at best).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch

from training.core.batch import Batch
from training.core.cli import CommandParser, run_main
from training.core.config import preset
from training.core.data_tokenizers import GPT2_VOCAB_SIZE
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.optim import build_optimizer
from training.core.trainer import autocast_context, build_model, forward_backward

# dense bf16 tensor-core peaks (TFLOP/s) of GPUs we run on
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
QUICK_VOCAB = 2048 + 64        # trained BPE plus its codeword tokens (approximately)


def flops_per_token(cfg, vocab: int) -> float:
    d, L, T = cfg.d_model, cfg.n_layer, cfg.seq_len
    per_block = 4 * d * d + (0 if cfg.attn_only else 2 * d * cfg.d_ff)
    n = L * per_block + d * vocab                      # matmul parameters, LM head included
    return 6.0 * n + 6.0 * L * T * d                   # causal attention: half of 12·L·T·d


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def measured_gemm_tflops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best observed fp32 TFLOP/s of an n×n matrix product on ``device`` (the CPU's practical peak)."""
    a = torch.randn(n, n, device=device)
    a @ a
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e12


def bench_shape(name: str, device: torch.device, steps: int, warmup: int, batch_size: int | None,
                compile_model: bool, peak: float | None = None, vocab_multiple: int = 1) -> dict:
    cfg = preset(name).replace(device=device.type, compile=compile_model, vocab_multiple=vocab_multiple)
    if batch_size:
        cfg = cfg.replace(batch_size=batch_size)
    elif device.type == "cpu" and name == "paper":
        cfg = cfg.replace(batch_size=4)            # keep a CPU measurement to seconds
    cfg = cfg.replace(grad_accum=1)
    vocab = GPT2_VOCAB_SIZE if cfg.tokenizer == "gpt2" else QUICK_VOCAB
    model = build_model(cfg, vocab, device)
    optimizer, _ = build_optimizer(model, cfg, device)
    fwd = torch.compile(model) if compile_model else model
    amp = lambda: autocast_context(cfg, device)  # noqa: E731
    params = list(model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), generator=g)
    batch = Batch(x[:, :-1], x[:, 1:], torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.bool)).to(device)

    def step():
        forward_backward(fwd, optimizer, lambda m: batch, 1, cfg.lambda_probe, cfg.grad_clip, params, amp)
        optimizer.step()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    tokens = cfg.batch_size * cfg.seq_len
    fpt = flops_per_token(cfg, vocab)
    tflops = fpt * tokens / med / 1e12
    return {"shape": name, "params": model.num_params(), "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
            "tokens_per_step": tokens, "ms_per_step_median": med * 1e3, "ms_per_step_min": times[0] * 1e3,
            "tokens_per_s": tokens / med, "model_tflops": tflops, "mfu": tflops / peak if peak else None,
            "precision": "bf16-autocast" if device.type == "cuda" else "fp32", "compiled": compile_model,
            "vocab_multiple": vocab_multiple}


def main() -> int:
    p = CommandParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=None, choices=["test", "quick", "cpu", "paper"],
                   help="model shapes (default quick paper; with --compare: quick cpu)")
    p.add_argument("--compare", action="store_true",
                   help="time our step with and without each option (compile, fused AdamW, threads) against a "
                        "nanoGPT-shaped model, interleaved (benchmarks/step_variants.py); CPU")
    p.add_argument("--rounds", type=int, default=7, help="--compare: interleaved rounds (median reported)")
    p.add_argument("--no-compile", action="store_true", help="--compare: leave out the compiled variants")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=5, help="timed steps per shape (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, help="micro-batch (default: the preset's; 4 for paper on a CPU)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--vocab-multiple", type=int, default=1, help="pad the vocabulary to a multiple of this (64 on GPUs)")
    p.add_argument("--peak-tflops", type=float, help="device peak for the MFU (default: known GPU peak; CPU: measured GEMM)")
    p.add_argument("--out", default="benchmarks/results/train_throughput.json")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be >= 1 and --warmup >= 0")
    device = resolve_device(args.device)
    if args.compare:
        return compare_main(args, device)
    args.shapes = args.shapes or ["quick", "paper"]
    if args.peak_tflops:
        peak, source = args.peak_tflops, "--peak-tflops"
    elif peak_tflops(device):
        peak, source = peak_tflops(device), "dense bf16 peak of the GPU model"
    elif device.type == "cpu":
        peak, source = measured_gemm_tflops(device), "measured fp32 GEMM 2048x2048 (best of 5, before and after)"
    else:
        peak, source = None, "unknown"
    rows = [bench_shape(s, device, args.steps, args.warmup, args.batch_size, args.compile, peak,
                        args.vocab_multiple) for s in args.shapes]
    if source.startswith("measured"):      # a shared machine: the best GEMM rate seen before or after the shapes
        peak = max(peak, measured_gemm_tflops(device))
        for r in rows:
            r["mfu"] = r["model_tflops"] / peak
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {device.type} ({dev_name}), torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"peak {peak if peak is None else f'{peak:.3f} TFLOP/s'} ({source})")
    print(f"{'shape':<7}{'params':>13}{'batch':>7}{'tokens/step':>13}{'ms/step':>10}{'tokens/s':>12}{'TFLOP/s':>9}{'MFU':>7}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['shape']:<7}{r['params']:>13,}{r['batch_size']:>7}{r['tokens_per_step']:>13,}"
              f"{r['ms_per_step_median']:>10.1f}{r['tokens_per_s']:>12,.0f}{r['model_tflops']:>9.3f}{mfu:>7}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": device.type, "device_name": dev_name, "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "peak_tflops": peak, "peak_source": source,
                               "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0


def compare_main(args, device: torch.device) -> int:
    """``--compare``: every step variant side by side per shape, with MFU against the measured GEMM peak."""
    from step_variants import bitwise_repeatable, compare   # benchmarks/
    if device.type != "cpu":
        raise UserError("--compare measures the CPU step (use --device cpu)")
    shapes = args.shapes or ["quick", "cpu"]
    peak = measured_gemm_tflops(device)
    results = []
    for name in shapes:
        cfg = preset(name).replace(device="cpu", grad_accum=1)
        if args.batch_size:
            cfg = cfg.replace(batch_size=args.batch_size)
        vocab = GPT2_VOCAB_SIZE if cfg.tokenizer == "gpt2" else QUICK_VOCAB
        rows = compare(cfg, vocab, args.rounds, args.steps, args.warmup, with_compile=not args.no_compile)
        fpt = flops_per_token(cfg, vocab)
        for r in rows:
            r["model_tflops"] = fpt * r["tokens_per_s"] / 1e12
        repeat = {"eager": bitwise_repeatable(cfg, vocab, False, False),
                  "fused AdamW": bitwise_repeatable(cfg, vocab, False, True)}
        if not args.no_compile:
            repeat["compiled"] = bitwise_repeatable(cfg, vocab, True, False)
        results.append({"shape": name, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "vocab": vocab,
                        "rows": rows, "bitwise_repeatable": repeat})
    peak = max(peak, measured_gemm_tflops(device))
    print(f"device cpu ({platform.processor() or 'cpu'}), torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"GEMM peak {peak:.3f} TFLOP/s (measured 2048² fp32, best before/after); {args.rounds} interleaved rounds "
          f"of {args.steps} steps, median")
    for res in results:
        print(f"\n{res['shape']}: {res['batch_size']} × {res['seq_len']} tokens, vocab {res['vocab']}; bitwise "
              "repeatable: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in res["bitwise_repeatable"].items()))
        print(f"{'variant':<32}{'threads':>8}{'ms/step':>10}{'tokens/s':>11}{'× nanoGPT eager':>17}{'MFU':>7}")
        for r in res["rows"]:
            r["mfu"] = r["model_tflops"] / peak
            print(f"{r['variant']:<32}{r['threads']:>8}{1e3 * r['s_per_step_median']:>10.1f}{r['tokens_per_s']:>11,.0f}"
                  f"{r['speedup_vs_nanogpt_eager']:>17.2f}{100 * r['mfu']:>6.1f}%")
    out = Path(args.out if args.out != "benchmarks/results/train_throughput.json" else "benchmarks/results/step_compare.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"peak_tflops": peak, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "rounds": args.rounds, "steps": args.steps, "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
