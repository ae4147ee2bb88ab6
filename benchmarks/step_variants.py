"""Variants of the training step timed side by side (``train_throughput.py --compare``).

Our step (the training loop's own :func:`training.core.trainer.forward_backward` plus the optimizer step) with
and without each option that could make it faster on a CPU -- ``torch.compile`` (inductor), the fused AdamW
kernel, one or all threads -- against a plain GPT of the same shape written the way nanoGPT writes its model
(karpathy/nanoGPT ``model.py``: fused qkv projection, ``scaled_dot_product_attention``, 4·d GELU MLP, pre-LN,
tied head) with nanoGPT's AdamW setup (weight decay on the ≥ 2-D tensors, ``fused`` where available), eager and
compiled. The plain model is written here, not copied: only its shape and operations follow nanoGPT's, which is
what a step-time comparison needs. It has no linear biases, as ours (nanoGPT's ``bias=False``).

Rounds are interleaved (every variant once per round, in a rotated order) so that a shared machine's load
affects all alike; the median over rounds is reported, with the ratio to the nanoGPT-shaped eager step.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.core.batch import Batch
from training.core.config import Config
from training.core.optim import build_optimizer
from training.core.trainer import autocast_context, build_model, forward_backward


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, d_ff: int):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    """A GPT of the given shape in nanoGPT's layout (the comparison model; not used for training)."""

    def __init__(self, cfg: Config, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, cfg.d_model), nn.Embedding(cfg.seq_len, cfg.d_model)
        self.h = nn.ModuleList(_Block(cfg.d_model, cfg.n_head, cfg.d_ff) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.h:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@dataclass
class Variant:
    name: str
    step: Callable[[], None]
    threads: int


def _plain_optimizer(model: nn.Module, cfg: Config, fused: bool) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.wd}, {"params": rest, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _ours(cfg: Config, vocab: int, batch: Batch, compiled: bool, fused: bool) -> Callable[[], None]:
    device = torch.device("cpu")
    model = build_model(cfg, vocab, device)
    optimizer, _ = build_optimizer(model, cfg, device)
    if fused:      # the same AdamW with its fused CPU kernel (torch >= 2.4)
        for g in optimizer.param_groups:
            g["fused"], g["foreach"] = True, False
    fwd = torch.compile(model) if compiled else model
    params = list(model.parameters())
    amp = lambda: autocast_context(cfg, device)  # noqa: E731

    def step() -> None:
        forward_backward(fwd, optimizer, lambda m: batch, 1, cfg.lambda_probe, cfg.grad_clip, params, amp)
        optimizer.step()
    return step


def _plain(cfg: Config, vocab: int, batch: Batch, compiled: bool) -> Callable[[], None]:
    torch.manual_seed(cfg.seed)
    model = PlainGPT(cfg, vocab)
    optimizer = _plain_optimizer(model, cfg, fused=False)
    fwd = torch.compile(model) if compiled else model
    params = list(model.parameters())

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        fwd(batch.x, batch.y).backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
    return step


def variants(cfg: Config, vocab: int, batch: Batch, threads: int, with_compile: bool = True) -> list[Variant]:
    """Every option, each with its own model and optimizer (same seed, same batch)."""
    out = [Variant("nanoGPT-shaped, eager", _plain(cfg, vocab, batch, False), threads),
           Variant("ours, eager (default)", _ours(cfg, vocab, batch, False, False), threads),
           Variant("ours, fused AdamW", _ours(cfg, vocab, batch, False, True), threads),
           Variant("ours, one thread", _ours(cfg, vocab, batch, False, False), 1)]
    if with_compile:
        out += [Variant("nanoGPT-shaped, compiled", _plain(cfg, vocab, batch, True), threads),
                Variant("ours, compiled", _ours(cfg, vocab, batch, True, False), threads),
                Variant("ours, compiled + fused AdamW", _ours(cfg, vocab, batch, True, True), threads)]
    return out


def compare(cfg: Config, vocab: int, rounds: int, steps: int, warmup: int, with_compile: bool = True) -> list[dict]:
    """Median seconds per step of every variant over ``rounds`` interleaved rounds of ``steps`` steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), generator=g)
    batch = Batch(x[:, :-1], x[:, 1:], torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.bool))
    threads = torch.get_num_threads()
    vs = variants(cfg, vocab, batch, threads, with_compile)
    times: dict[str, list[float]] = {v.name: [] for v in vs}
    try:
        for v in vs:                                   # warm-up (compilation happens here)
            torch.set_num_threads(v.threads)
            for _ in range(warmup):
                v.step()
        for r in range(rounds):
            for v in vs[r % len(vs):] + vs[:r % len(vs)]:
                torch.set_num_threads(v.threads)
                t = time.perf_counter()
                for _ in range(steps):
                    v.step()
                times[v.name].append((time.perf_counter() - t) / steps)
    finally:
        torch.set_num_threads(threads)
    base = sorted(times[vs[0].name])[len(times[vs[0].name]) // 2]
    rows = []
    for v in vs:
        ts = sorted(times[v.name])
        med = ts[len(ts) // 2]
        rows.append({"variant": v.name, "threads": v.threads, "s_per_step_median": med, "s_per_step_min": ts[0],
                     "s_per_step_max": ts[-1], "tokens_per_s": cfg.batch_size * cfg.seq_len / med,
                     "speedup_vs_nanogpt_eager": base / med})
    return rows


def bitwise_repeatable(cfg: Config, vocab: int, compiled: bool, fused: bool, steps: int = 3) -> bool:
    """Two fresh runs of the variant from the same seed end with identical weights."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len + 1), generator=g)
    batch = Batch(x[:, :-1], x[:, 1:], torch.zeros(cfg.batch_size, cfg.seq_len, dtype=torch.bool))
    finals = []
    for _ in range(2):
        device = torch.device("cpu")
        model = build_model(cfg, vocab, device)
        optimizer, _ = build_optimizer(model, cfg, device)
        if fused:
            for gr in optimizer.param_groups:
                gr["fused"], gr["foreach"] = True, False
        fwd = torch.compile(model) if compiled else model
        params = list(model.parameters())
        for _ in range(steps):
            forward_backward(fwd, optimizer, lambda m: batch, 1, cfg.lambda_probe, cfg.grad_clip, params,
                             lambda: autocast_context(cfg, device))
            optimizer.step()
        finals.append(torch.cat([p.detach().flatten() for p in params]))
    return bool(torch.equal(finals[0], finals[1])) and math.isfinite(float(finals[0].sum()))
