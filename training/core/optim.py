"""Optimizers, the learning-rate schedule and the λ schedule (one implementation each).

Optimizers are looked up by name in :data:`OPTIMIZERS`; a new one (SOAP, ECD, Muon, ...) is added with
:func:`register_optimizer` and the training loop does not change. An optimizer that re-evaluates the
loss (ECD) registers with ``needs_closure=True`` and receives a closure from the loop.

Parameter groups (as skydancerosel/mini_gpt's ``training/pilot.py``): weight decay on every parameter except LayerNorm weights and
biases; the tied embedding/head and the positional embedding are decayed, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from training.core.config import Config
from training.core.ecd import ECD
from training.core.errors import UserError
from training.core.model import trunk_parameters


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
    :class:`torch.optim.SGD` is kept at zero (run C′ of arXiv 2602.23696 §5).
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
    needs_closure: bool = False     # step(closure): the optimizer evaluates the loss itself (ECD)
    description: str = ""
    diagnostics: bool = False       # the optimizer's diagnostics() -> {name: value} is logged at every evaluation


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register_optimizer(name: str, build: Callable, needs_closure: bool = False, description: str = "",
                       diagnostics: bool = False) -> None:
    OPTIMIZERS[name] = OptimizerSpec(build, needs_closure, description, diagnostics)


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


def _ecd(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    return ECD(param_groups(model, cfg.wd), lr=cfg.lr, eta=cfg.ecd_eta, F0=cfg.ecd_F0, nu=cfg.ecd_nu,
               weight_decay=cfg.wd, projection=cfg.ecd_projection,
               seed=cfg.seed if cfg.ecd_seed is None else cfg.ecd_seed)


def _soap(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.Optimizer:
    try:
        from pytorch_optimizer import SOAP
    except ImportError:
        raise UserError("optimizer soap needs the pytorch-optimizer package: pip install pytorch-optimizer") from None
    return SOAP(param_groups(model, cfg.wd), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                weight_decay=cfg.wd, precondition_frequency=cfg.soap_precondition_frequency)


class MuonAdamW:
    """torch.optim.Muon on the 2-D trunk matrices (learning rate matched to AdamW's RMS, so one lr serves
    both) and AdamW on every other parameter, stepped together; one state_dict holds both."""

    def __init__(self, model: nn.Module, cfg: Config, device: torch.device):
        trunk = [p for _, p in trunk_parameters(model)]
        ids = {id(p) for p in trunk}
        rest = [dict(g, params=[p for p in g["params"] if id(p) not in ids]) for g in param_groups(model, cfg.wd)]
        self.muon = torch.optim.Muon(trunk, lr=cfg.lr, weight_decay=cfg.wd, momentum=cfg.momentum,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW([g for g in rest if g["params"]], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                       eps=cfg.eps, fused=device.type == "cuda")
        self.param_groups = self.muon.param_groups + self.adamw.param_groups
        self.state = _JointState(self.muon, self.adamw)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("not a Muon+AdamW optimizer state")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


class _JointState:
    """``optimizer.state.clear()`` (a curriculum stage restart) on both halves of :class:`MuonAdamW`."""

    def __init__(self, *optimizers):
        self.optimizers = optimizers

    def clear(self) -> None:
        for o in self.optimizers:
            o.state.clear()


def _muon(model: nn.Module, cfg: Config, device: torch.device):
    return MuonAdamW(model, cfg, device)


register_optimizer("ecd", _ecd, needs_closure=True, diagnostics=True,
                   description="ECD_q1 (training/core/ecd.py): lr = Δt̂, wd = coupled L2, ecd_eta / ecd_F0 / ecd_nu / ecd_projection")
register_optimizer("soap", _soap, description="SOAP (pytorch-optimizer), betas (beta1, beta2), decoupled decay")
register_optimizer("muon", _muon, description="Muon (torch.optim) on the 2-D trunk matrices, AdamW on the rest")


def check_optimizer(cfg: Config) -> None:
    """One-line errors for an unknown optimizer or impossible optimizer-specific settings."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UserError(msg)
    need(cfg.optimizer in OPTIMIZERS, f"unknown optimizer '{cfg.optimizer}' (choose from {', '.join(OPTIMIZERS)})")
    need(cfg.ecd_eta > 0, f"ecd_eta must be positive (got {cfg.ecd_eta})")
    need(cfg.ecd_nu >= 0, f"ecd_nu must be >= 0 (got {cfg.ecd_nu})")
    need(cfg.ecd_projection in ("per_tensor", "global"),
         f"unknown ecd_projection '{cfg.ecd_projection}' (choose from per_tensor, global)")
    need(cfg.soap_precondition_frequency > 0,
         f"soap_precondition_frequency must be positive (got {cfg.soap_precondition_frequency})")


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> tuple[torch.optim.Optimizer, OptimizerSpec]:
    spec = OPTIMIZERS[cfg.optimizer]
    return spec.build(model, cfg, device), spec


def optimizer_step(optimizer: torch.optim.Optimizer, spec: OptimizerSpec, gradients: Callable[[], dict],
                   grad_accum: int = 1) -> tuple[dict, bool]:
    """One update of any registered optimizer; return the gradient pass's sums and whether they are finite.

    ``gradients()`` zeroes the gradients, back-propagates the loss (summed over ``grad_accum`` micro-batches)
    and returns its sums (at least ``loss`` and the pre-clipping ``gnorm``, as
    :func:`training.core.trainer.forward_backward` does). An optimizer that needs the loss (``needs_closure``,
    ECD) calls it itself, with the mean micro-batch loss; for the others it is called here and the update is
    applied only when the loss and the gradient norm are finite.
    """
    sums: dict = {}

    def closure() -> torch.Tensor:
        sums.update(gradients())
        return sums["loss"] / grad_accum

    if spec.needs_closure:
        optimizer.step(closure)
    else:
        closure()
    finite = math.isfinite(float(sums["loss"] + sums["gnorm"]))
    if finite and not spec.needs_closure:
        optimizer.step()
    return sums, finite


def diagnostics(optimizer: torch.optim.Optimizer, spec: OptimizerSpec) -> dict[str, float]:
    """What the optimizer reports of its own at an evaluation ({} for those that report nothing)."""
    return optimizer.diagnostics() if spec.diagnostics else {}


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
