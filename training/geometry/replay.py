"""The replay test of optimizer integration (arXiv 2602.23696 §4.2; claim 7 of docs/claims.md).

The paper's mechanism: per-batch gradients are nearly isotropic with respect to the backbone v_b, yet the
updates the optimizer applies line up with it, because momentum and adaptive normalisation integrate a weak
but coherent gradient bias. The published evidence compares the alignment of 200-step updates with that of
*single* mini-batch gradients; an average of Δ·accum gradients is expected to be about √(Δ·accum) times
better aligned than one of them by averaging alone, so a large ratio there says nothing about the optimizer.

The replay separates the two. From a checkpoint t whose optimizer state was saved, it trains the run
again for Δ steps exactly as the run did (the run's own batches, a pure function of (data seed, step,
micro-batch); its learning-rate and λ schedule; its gradient clipping; the saved moments) and keeps, over
the same Δ steps and batches,

- U  = Σ_s u_s, the applied updates θ_s − θ_{s−1} (over the trunk, canonical order);
- G  = Σ_s g_s, the gradients the optimizer received (after clipping), taken along the same path;
- for decoupled-weight-decay AdamW, U split into its decay part Σ −η_s·wd·θ_{s−1} and the rest;
- as a control, plain SGD from the same start on the same batches with each step's norm matched to the
  optimizer's, ‖Δθ_s‖ = ‖u_s‖ (no momentum, no decay), its sum U_sgd.

and reports cos(U, v_b), cos(−G, v_b) (descent moves along −g), cos(U_sgd, v_b) and the ratios
|cos(U, v_b)| / |cos(G, v_b)| and |cos(U, v_b)| / |cos(U_sgd, v_b)|. Both denominators accumulate the same
number of gradients, so averaging alone gives a ratio near 1; claims.md's rule asks for a ratio ≥ 2 at ≥ 3
checkpoints. Where a checkpoint exists at t + Δ the replayed weights are compared with it
(``replay_error`` = ‖θ_replay − θ_ckpt‖ / ‖θ_ckpt(t + Δ) − θ(t)‖): the replay is the run's own training
only when this is near 0.

Optimizer states exist at step 0 (a fresh optimizer, or the moments a run started from), at the steps a run
kept them (``optimizer_state_steps``, or every checkpoint with ``keep_optimizer_states``) and at the last
checkpoint (state/resume.pt). :func:`replay_starts` lists them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from training.core import runio
from training.core.config import Config
from training.core.model import GPT, trunk_names
from training.core.optim import OptimizerSpec, build_optimizer, lambda_at, lr_at, optimizer_step, set_lr
from training.core.trainer import forward_backward

RATIO_LIMIT = 2.0        # claims.md: updates at least twice as aligned as the gradients they integrate
MIN_CHECKPOINTS = 3      # ... at this many checkpoints


def resume_step(run_dir: Path) -> int | None:
    """The step of the run's resume state (state/resume.pt), None without one (or an unreadable one)."""
    path = Path(run_dir) / runio.STATE_FILE
    if not path.exists():
        return None
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True).get("step", -1))
    except Exception:
        return None


def optimizer_state_at(run_dir: Path, step: int, cfg: Config, resume: int | None = -1) -> tuple[Path | None, int, str] | None:
    """Where the optimizer moments at checkpoint ``step`` are: (file, the step and config hash it must carry),
    file None for a fresh optimizer (the exact state at step 0 of a run that loaded no moments); None when the
    run kept no state for that step. ``resume``: the resume state's step if already known (-1: read it)."""
    if step == 0:
        if not cfg.init_optimizer:
            return None, 0, cfg.hash()
        _, meta = runio.checkpoint_header(cfg.init_from)
        return Path(cfg.init_optimizer), int(meta.get("step", -1)), str(meta.get("config_hash", ""))
    kept = runio.optimizer_state_path(run_dir, step)
    if kept.exists():
        return kept, step, cfg.hash()
    if (resume_step(run_dir) if resume == -1 else resume) == step:
        return Path(run_dir) / runio.STATE_FILE, step, cfg.hash()
    return None


def replay_starts(run_dir: Path, cfg: Config, checkpoints: Sequence[int], delta: int) -> tuple[list[int], list[int]]:
    """(steps from which Δ steps can be replayed exactly, checkpoint steps that lack a saved optimizer state).

    A start needs the optimizer state at its step and t + Δ within the run's schedule."""
    ok, lacking = [], []
    resume = resume_step(run_dir)
    for s in checkpoints:
        if s + delta > cfg.steps:
            continue
        (ok if optimizer_state_at(run_dir, s, cfg, resume) is not None else lacking).append(s)
    return ok, lacking


def trunk_vector(model: GPT, names: Sequence[str]) -> torch.Tensor:
    """The trunk parameters as one float64 vector in canonical order."""
    params = dict(model.named_parameters())
    return torch.cat([params[n].detach().reshape(-1).double() for n in names])


def trunk_grad(model: GPT, names: Sequence[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    return torch.cat([params[n].grad.detach().reshape(-1).double() for n in names])


def decoupled_decay(optimizer: torch.optim.Optimizer, model: GPT, names: Sequence[str], cfg: Config) -> torch.Tensor | None:
    """Per-coordinate decoupled decay coefficient wd over the trunk (AdamW only: there θ ← θ(1 − η·wd) is applied
    before the adaptive step, so the decay part of u_s is exactly −η_s·wd·θ_{s−1}); None for other optimizers."""
    if cfg.optimizer != "adamw":
        return None
    wd_of = {id(p): float(g.get("weight_decay", 0.0)) for g in optimizer.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    first = next(model.parameters())
    return torch.cat([torch.full((params[n].numel(),), wd_of.get(id(params[n]), 0.0), dtype=torch.float64,
                                 device=first.device) for n in names])


def _cos(a: torch.Tensor, v: torch.Tensor) -> float | None:
    na = float(a.norm())
    return None if na == 0.0 else float(a @ v) / na


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0.0:
        return None
    return abs(num) / abs(den)


@dataclass
class Replay:
    """The sums over Δ replayed steps (trunk vectors, float64) and the per-step norms."""
    start: int
    delta: int
    grad_accum: int
    theta_start: torch.Tensor
    U: torch.Tensor                      # Σ u_s, the applied updates
    G: torch.Tensor                      # Σ g_s, the gradients the optimizer received
    grads: list[torch.Tensor]            # the g_s themselves (for the single-gradient alignment)
    step_norms: list[float]              # ‖u_s‖
    U_decay: torch.Tensor | None = None  # −Σ η_s·wd·θ_{s−1} (AdamW)
    U_sgd: torch.Tensor | None = None    # the matched-step-norm SGD control's Σ Δθ_s

    @property
    def theta_end(self) -> torch.Tensor:
        return self.theta_start + self.U

    def report(self, v: torch.Tensor) -> dict:
        """Cosines of the sums with the unit direction ``v`` and the ratios of claim 7."""
        single = [abs(c) for c in (_cos(-g, v) for g in self.grads) if c is not None]
        out = {"cos_update": _cos(self.U, v), "cos_gradient": _cos(-self.G, v),
               "mean_abs_cos_single_gradient": float(np.mean(single)) if single else None}
        if self.U_decay is not None:
            out["cos_decay_part"] = _cos(self.U_decay, v)
            out["cos_adaptive_part"] = _cos(self.U - self.U_decay, v)
        if self.U_sgd is not None:
            out["cos_sgd"] = _cos(self.U_sgd, v)
            out["ratio_sgd"] = _ratio(out["cos_update"], out["cos_sgd"])
        out["ratio_gradient"] = _ratio(out["cos_update"], out["cos_gradient"])
        out["single_batch_ratio"] = _ratio(out["cos_update"], out["mean_abs_cos_single_gradient"])
        return out

    def summary(self) -> dict:
        uu = float(self.U @ self.U)
        return {"start": self.start, "delta": self.delta, "update_norm": math.sqrt(uu),
                "mean_step_norm": float(np.mean(self.step_norms)),
                "decay_share": float((self.U_decay @ self.U) / uu) if self.U_decay is not None and uu > 0 else None,
                "sqrt_delta_accum": math.sqrt(self.delta * self.grad_accum)}


def replay(model: GPT, cfg: Config, task, start: int, delta: int, device: torch.device, amp: Callable,
           state: tuple[Path | None, int, str], reload: Callable[[], GPT] | None = None) -> Replay:
    """Replay Δ steps from checkpoint ``start``: weights already in ``model``, optimizer moments from ``state``
    (as :func:`optimizer_state_at` gives them), the run's batches, schedule and clipping. With ``reload`` (a fresh
    copy of the model at ``start``) the matched-step-norm SGD control runs too. Memory: Δ + 5 trunk vectors."""
    names = trunk_names(cfg)
    model.train()
    optimizer, spec = build_optimizer(model, cfg, device)
    if state[0] is not None:
        runio.load_optimizer_moments(optimizer, state[0], state[1], state[2])
    trainable = [p for p in model.parameters() if p.requires_grad]
    wd = decoupled_decay(optimizer, model, names, cfg)
    theta0 = trunk_vector(model, names)
    rep = Replay(start, delta, cfg.grad_accum, theta0, torch.zeros_like(theta0), torch.zeros_like(theta0), [], [],
                 torch.zeros_like(theta0) if wd is not None else None)
    for s in range(start + 1, start + delta + 1):
        lr, lam = lr_at(cfg, s), lambda_at(cfg, s)
        if task.resets_optimizer(s):
            optimizer.state.clear()
        set_lr(optimizer, lr)
        seen: dict[str, torch.Tensor] = {}

        def gradients(step=s, lam=lam) -> dict:
            sums = forward_backward(model, optimizer, lambda m: task.train_batch(step, m).to(device), cfg.grad_accum,
                                    lam, cfg.grad_clip, trainable, amp)
            seen["g"] = trunk_grad(model, names)      # the last call's: what the optimizer steps with
            return sums

        before = trunk_vector(model, names)
        _, finite = optimizer_step(optimizer, spec, gradients, cfg.grad_accum)
        if not finite:
            raise FloatingPointError(f"non-finite loss or gradient at step {s} of the replay from {start}")
        u = trunk_vector(model, names) - before
        rep.U += u
        rep.G += seen["g"]
        rep.grads.append(seen["g"])
        if rep.U_decay is not None:
            rep.U_decay -= lr * wd * before
        rep.step_norms.append(float(u.norm()))
    del optimizer
    if reload is not None:
        rep.U_sgd = _sgd_control(reload(), cfg, task, start, rep.step_norms, device, amp, names)
    return rep


def _sgd_control(model: GPT, cfg: Config, task, start: int, step_norms: Sequence[float], device: torch.device,
                 amp: Callable, names: Sequence[str]) -> torch.Tensor | None:
    """Σ Δθ_s over the trunk of plain SGD from ``start`` on the run's batches, step s scaled so that its trunk
    norm is step_norms[s] (the whole model takes the same learning rate); None where a gradient vanishes."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(trainable, lr=0.0)
    theta0 = trunk_vector(model, names)
    for k, s in enumerate(range(start + 1, start + len(step_norms) + 1)):
        forward_backward(model, sgd, lambda m, step=s: task.train_batch(step, m).to(device), cfg.grad_accum,
                         lambda_at(cfg, s), cfg.grad_clip, trainable, amp)
        gn = float(trunk_grad(model, names).norm())
        if not math.isfinite(gn) or gn == 0.0:
            return None
        set_lr(sgd, step_norms[k] / gn)
        sgd.step()
    return trunk_vector(model, names) - theta0


def claim7_summary(records: Sequence[dict], limit: float = RATIO_LIMIT, need: int = MIN_CHECKPOINTS,
                   key: str = "held_out") -> dict:
    """Claim 7's reading from the replays' reports against the ``key`` backbone: the ratio |cos(U, v_b)| /
    |cos(G, v_b)| per replayed checkpoint, how many reach ``limit``, and the ``need``-th largest ratio (None with
    fewer checkpoints: the rule cannot be applied)."""
    ratios = [r[key]["ratio_gradient"] for r in records if r[key].get("ratio_gradient") is not None]
    ranked = sorted(ratios, reverse=True)
    third = ranked[need - 1] if len(ranked) >= need else None
    return {"backbone": key, "ratios": ratios, "n_checkpoints": len(ratios),
            "n_at_or_above_limit": sum(r >= limit for r in ratios), "limit": limit, "need": need,
            "third_largest_ratio": third, "holds": None if third is None else third >= limit,
            "sgd_ratios": [r[key].get("ratio_sgd") for r in records]}
