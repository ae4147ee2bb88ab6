"""Optimizers, the learning-rate schedule and the λ schedule (one implementation each).

Optimizers are looked up by name in :data:`OPTIMIZERS`; a new one (SOAP, ECD, Muon, ...) is added with
:func:`register_optimizer` and the training loop does not change. An optimizer that re-evaluates the
loss (ECD) registers with ``needs_closure=True`` and receives a closure from the loop.

Parameter groups (reference §3.3): weight decay on every parameter except LayerNorm weights and
biases; the tied embedding/head and the positional embedding are decayed, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from training.config import Config


# ---------------------------------------------------------------------------- schedules
def lr_at(cfg: Config, step: int) -> float:
    """Learning rate of update number ``step`` (1-based): linear warmup, then cosine clamped at lr_floor.

    During warmup lr·step/warmup; afterwards lr·max(½(1 + cos(π·progress)), lr_floor) with
    progress = (step − warmup)/(steps − warmup) capped at 1 (a clamp, not a cosine ending at the floor).
    """
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    progress = min(1.0, (step - cfg.warmup) / span)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * max(coeff, cfg.lr_floor)


def lambda_at(cfg: Config, step: int) -> float:
    """Probe-loss weight of update number ``step``: lambda_probe before lambda_step, lambda_probe2 from it on."""
    return cfg.lambda_after if step >= cfg.lambda_step else cfg.lambda_probe


# ---------------------------------------------------------------------------- parameter groups
def param_groups(model: nn.Module, wd: float) -> list[dict]:
    """Two groups: decay (everything but LayerNorm) and no-decay (LayerNorm weight and bias)."""
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters():          # de-duplicated: the tied matrix appears once
        (no_decay if id(p) in no_decay_ids else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class SGDW(torch.optim.SGD):
    """SGD (optionally Nesterov) with decoupled weight decay θ ← (1 − lr·wd)·θ after each step.

    The decay of a group is read from ``group["decoupled_wd"]``; the coupled L2 term of
    :class:`torch.optim.SGD` is kept at zero (reference §4.18, run C′).
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float, nesterov: bool):
        groups = [dict(g, decoupled_wd=g.pop("weight_decay", 0.0), weight_decay=0.0) for g in groups]
        super().__init__(groups, lr=lr, momentum=momentum, nesterov=nesterov)

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        for group in self.param_groups:
            wd = group["decoupled_wd"]
            if wd:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - group["lr"] * wd)
        return loss


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class OptimizerSpec:
    build: Callable[[nn.Module, Config, torch.device], torch.optim.Optimizer]
    needs_closure: bool = False
    description: str = ""


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register_optimizer(name: str, build: Callable, needs_closure: bool = False, description: str = "") -> None:
    OPTIMIZERS[name] = OptimizerSpec(build, needs_closure, description)


def _adamw(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device.type == "cuda")


def _sgd(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, cfg.wd), lr=cfg.lr, momentum=0.0)


def _sgd_momentum(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(param_groups(model, cfg.wd), lr=cfg.lr, momentum=cfg.momentum)


def _sgdw_nesterov(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return SGDW(param_groups(model, cfg.wd), lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


register_optimizer("adamw", _adamw, description="AdamW, decoupled decay on all but LayerNorm (paper run A)")
register_optimizer("sgd", _sgd, description="SGD without momentum, L2-coupled decay (run B)")
register_optimizer("sgd_momentum", _sgd_momentum, description="SGD with momentum, L2-coupled decay (run C)")
register_optimizer("sgdw_nesterov", _sgdw_nesterov, description="Nesterov SGD with decoupled decay, SGDW (run C′)")


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> tuple[torch.optim.Optimizer, OptimizerSpec]:
    spec = OPTIMIZERS[cfg.optimizer]
    return spec.build(model, cfg, device), spec


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
