"""What every analysis script shares: the standard arguments, opening a run, models at a step, outputs.

A script is thin: ``parser = analysis_parser(__doc__)``, ``run = open_run(args.run_dir)``, calls into
``training/``, then :func:`write_result` (RUN/analysis/<name>.json, strict JSON, atomic) and
:func:`save_figure` (RUN/analysis/<name>.png).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from training.core import runio
from training.core.config import Config
from training.core.errors import UserError
from training.core.model import GPT
from training.core.runio import read_run_config
from training.core.tasks import prepare_task
from training.geometry.trajectory import CheckpointSet


def analysis_parser(doc: str) -> argparse.ArgumentParser:
    first = (doc or "").strip().split("\n\n")[0]
    p = argparse.ArgumentParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=(doc or "").strip()[len(first):].strip() or None)
    p.add_argument("--run-dir", required=True, help="the run directory to analyse")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of the analysis (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_step_list(text: str, available: list[int]) -> list[int]:
    """A user's comma-separated checkpoint steps, sorted; each must be a checkpoint of the run."""
    try:
        wanted = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UserError(f"--steps must be a comma-separated list of integers (got '{text}')") from None
    missing = [s for s in wanted if s not in set(available)]
    if missing or not wanted:
        raise UserError(f"no checkpoint at step(s) {missing or text}; the run has {available[0]}..{available[-1]} "
                        f"({len(available)} checkpoints)")
    return wanted


def add_gradient_sampling_args(p: argparse.ArgumentParser, n_batches: int, paper_batches: int) -> None:
    """The options shared by the analyses that draw mini-batch gradients at chosen checkpoints."""
    p.add_argument("--steps", help="comma-separated checkpoint steps (default: --n-checkpoints spread over the run)")
    p.add_argument("--n-checkpoints", type=int, default=5, help="checkpoints spread over the run (default 5; 0 = all)")
    p.add_argument("--n-batches", type=int, default=n_batches,
                   help=f"M, mini-batches per checkpoint (default {n_batches}; paper {paper_batches})")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per mini-batch (default 8; paper 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")


class Run:
    """A run directory opened for analysis: its config and checkpoint steps, validated."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise UserError(f"run directory {self.dir} does not exist")
        if not (self.dir / "config.json").exists():
            raise UserError(f"{self.dir} is not a run directory (no config.json)")
        self.cfg: Config = read_run_config(self.dir)
        self.steps = runio.list_checkpoints(self.dir)
        if not self.steps:
            raise UserError(f"{self.dir} has no checkpoints")
        self.status = runio.read_status(self.dir) or {}

    @property
    def analysis_dir(self) -> Path:
        return self.dir / "analysis"

    def metrics(self) -> list[dict]:
        return runio.read_metrics(self.dir)

    def checkpoints(self):
        return CheckpointSet(self.dir)

    def task(self):
        """The run's data task (tokenizer, codewords, fixed eval sets) exactly as in training."""
        return prepare_task(self.cfg, self.dir)

    def model(self, step: int, attention: str = "sdpa", device: str | torch.device = "cpu"):
        """The model with the weights of checkpoint ``step``, in eval mode."""
        path = runio.checkpoint_path(self.dir, step)
        if step not in self.steps:
            raise UserError(f"{self.dir} has no checkpoint at step {step} (available: {self.steps[0]}..{self.steps[-1]})")
        tensors, meta = runio.load_checkpoint(path)
        if meta.get("contents") == "trunk" or "tok_emb.weight" not in tensors:
            raise UserError(f"{self.dir} stores trunk-only checkpoints (ckpt_contents=trunk): this analysis needs the "
                            "whole model (embeddings, LayerNorms); trajectory analyses work, this one needs a run "
                            "trained with ckpt_contents=full")
        vocab = tensors["tok_emb.weight"].shape[0]
        model = GPT(self.cfg.replace(attention=attention), vocab)
        runio.load_weights(model, path)
        runio.load_bias_stats(self.dir, step, model)    # disordered attention: the draws up to this step
        return model.to(device).eval()


def open_run(run_dir: str | Path) -> Run:
    return Run(run_dir)


def write_result(run: Run, name: str, result: dict) -> Path:
    path = run.analysis_dir / f"{name}.json"
    runio.atomic_write_json(path, result)
    return path
