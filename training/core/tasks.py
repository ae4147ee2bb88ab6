"""The task table, and the one validation of a config.

A task is what the trainer draws batches from and evaluates: ``lm_probe`` (the story corpus with the
embedded key-retrieval probe, :mod:`training.core.data`) or ``modadd`` (marker modular addition,
:mod:`training.core.modadd`). Each entry names how to build the task object for a config (with the
run directory, whose tokenizer and codewords are authoritative) and the checks of the task's own
settings. A new task is one entry here.

:func:`validate` is the only check a config needs before it is trained or compared: the config's own
field checks, then the optimizer's, the attention biases', subspace suppression's and the task's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from training.core.attention_bias import check_attention_bias
from training.core.batch import Batch
from training.core.config import Config
from training.core.control import check_suppression
from training.core.data import prepare_lm_probe
from training.core.errors import UserError
from training.core.modadd import ModAddTask, validate_modadd
from training.core.optim import check_optimizer


class Task(Protocol):
    """What the trainer asks of a task (both tasks below implement it; analyses may use more of each)."""
    cfg: Config
    tok: Any          # the tokenizer: vocab_size and identity (recorded in config.json), eos_id, encode/decode

    def train_batch(self, step: int, micro: int) -> Batch:
        """Micro-batch ``micro`` of update ``step``, a pure function of (data seed, step, micro) (exact resumption)."""

    def evaluate(self, model: torch.nn.Module, device: torch.device, amp: Callable) -> dict[str, float]:
        """The metrics logged at an evaluation step (on fixed sets that depend on eval_seed only)."""

    def resets_optimizer(self, step: int) -> bool:
        """True when update ``step`` starts with a fresh optimizer state (a curriculum stage boundary)."""


@dataclass(frozen=True)
class TaskSpec:
    prepare: Callable[[Config, Path | None], Task]      # (cfg, run_dir or None) -> the task object
    check: Callable[[Config], None]                     # one-line UserError for impossible task settings
    description: str


def _no_checks(cfg: Config) -> None:
    """lm_probe's settings are core fields, checked by :meth:`Config.check_fields`."""


TASKS: dict[str, TaskSpec] = {
    "lm_probe": TaskSpec(prepare_lm_probe, _no_checks,
                         "language modelling on the corpus with the key-retrieval probe at rate p_probe"),
    "modadd": TaskSpec(lambda cfg, run_dir: ModAddTask(cfg), validate_modadd,
                       "marker modular addition (synthetic: no corpus, tokenizer or codewords)"),
}


def task_spec(cfg: Config) -> TaskSpec:
    if cfg.task not in TASKS:
        raise UserError(f"unknown task '{cfg.task}' (choose from {', '.join(TASKS)})")
    return TASKS[cfg.task]


def validate(cfg: Config) -> Config:
    """Raise UserError with a one-line message for the first impossible setting of ``cfg``; return ``cfg``."""
    cfg.check_fields()
    check_optimizer(cfg)
    check_attention_bias(cfg)
    check_suppression(cfg)
    task_spec(cfg).check(cfg)
    return cfg


def prepare_task(cfg: Config, run_dir: Path | None = None) -> Task:
    """The task object of ``cfg`` (tokenizer, token cache, codewords or the synthetic generator)."""
    return task_spec(cfg).prepare(cfg, run_dir)
