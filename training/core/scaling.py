"""The paper's protocols at the scale of a preset.

The paper's protocols (arXiv 2602.23696: ablations, reheating, basin relaxation) are stated in steps and
learning rates of its 10,000-step, lr 1e-3 run. At another preset they keep their *proportions*: a step
count s becomes ``round(s * steps_of_preset / 10_000)`` and a learning rate η becomes
``η * lr_of_preset / 1e-3`` (so the paper's 4,000-step ablations are 240 steps at a 600-step preset, its
reheating rates {1e-3, 6e-4, 3e-4} are {3e-3, 1.8e-3, 9e-4} at a preset with lr 3e-3). At ``paper``
every value is the paper's own.
"""
from __future__ import annotations

from training.core.config import PRESETS, Config, preset

PAPER_STEPS = 10_000
PAPER_LR = 1e-3
PAPER_REHEAT_LRS = (1e-3, 6e-4, 3e-4)


def preset_steps(cfg: Config) -> int:
    """Length of the preset this config derives from (its own steps when it has no preset)."""
    return preset(cfg.preset).steps if cfg.preset in PRESETS else cfg.steps


def preset_lr(cfg: Config) -> float:
    return preset(cfg.preset).lr if cfg.preset in PRESETS else cfg.lr


def scale_step(cfg: Config, paper_step: int, minimum: int = 1) -> int:
    """The step of this preset that corresponds to ``paper_step`` of the paper's 10,000-step run."""
    return max(minimum, int(round(paper_step * preset_steps(cfg) / PAPER_STEPS)))


def scale_window(cfg: Config, lo: int, hi: int) -> tuple[int, int]:
    return (0 if lo == 0 else scale_step(cfg, lo), scale_step(cfg, hi))


def scale_lr(cfg: Config, paper_lr: float) -> float:
    """The learning rate of this preset that plays the role of ``paper_lr`` (same ratio to the preset's lr)."""
    return float(f"{paper_lr * preset_lr(cfg) / PAPER_LR:.6g}")


def reheat_defaults(cfg: Config) -> dict:
    """The paper's reheating protocol (arXiv 2602.23696 §6.1 and §9.5) at the scale of ``cfg``'s preset.

    λ = 4 is twice the paper's initial probe weight; at other presets it is twice theirs. Evaluations
    (and checkpoints) every 200 paper steps, the cadence of the reference pipeline (the paper's text says
    100; pass ``eval_every`` to get it).
    """
    return {"steps": scale_step(cfg, 2000), "warmup": scale_step(cfg, 200), "lam": 2.0 * preset(cfg.preset).lambda_probe
            if cfg.preset in PRESETS else 2.0 * cfg.lambda_probe,
            "lrs": [scale_lr(cfg, lr) for lr in PAPER_REHEAT_LRS], "eval_every": scale_step(cfg, 200)}
