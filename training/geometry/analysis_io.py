"""What every analysis script shares: the standard arguments, opening a run, models at a step, outputs.

A script is thin: ``parser = analysis_parser(__doc__)``, ``run = open_run(args.run_dir, args.out_dir)``, calls
into ``training/``, then :func:`write_result` (RUN/analysis/<name>.json, strict JSON, atomic) and
:func:`save_figure` (RUN/analysis/<name>.png).

``--out-dir DIR`` sends every output of the analysis (results, figures, the Gram cache, the oscillation
manifest) to DIR instead of the run, so a run on a read-only disk can be analysed; outputs of earlier
analyses are then read from DIR when they are there, else from the run.

Every result records the state and step of the run it was computed from (``run_state``), and a run that
is not ``completed`` (still running, failed, diverged) gets one warning line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from training.core import runio
from training.core.cli import CommandParser
from training.core.config import Config
from training.core.errors import UserError
from training.core.model import GPT
from training.core.runio import read_run_config
from training.core.tasks import prepare_task
from training.geometry.trajectory import CheckpointSet


def analysis_parser(doc: str) -> argparse.ArgumentParser:
    first = (doc or "").strip().split("\n\n")[0]
    p = CommandParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=(doc or "").strip()[len(first):].strip() or None)
    p.add_argument("--run-dir", required=True, help="the run directory to analyse")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw of the analysis (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out-dir", help="write the outputs here instead of RUN/analysis (e.g. for a read-only run)")
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
    p.add_argument("--steps", help="comma-separated checkpoint steps, or the paper's choice scaled to the run: "
                                   "paper-figure2 (11 checkpoints) | paper-table6 (4) (default: --n-checkpoints "
                                   "spread over the run)")
    p.add_argument("--n-checkpoints", type=int, default=5, help="checkpoints spread over the run (default 5; 0 = all)")
    p.add_argument("--n-batches", type=int, default=n_batches,
                   help=f"M, mini-batches per checkpoint (default {n_batches}; paper {paper_batches})")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per mini-batch (default 8; paper 64)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")


class Run:
    """A run directory opened for analysis: its config, checkpoint steps and status, validated."""

    def __init__(self, run_dir: str | Path, out_dir: str | Path | None = None):
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
        record = runio.read_json(self.dir / "config.json", "run config")
        self.imported: dict | None = record.get("imported") if isinstance(record.get("imported"), dict) else None
        if out_dir is not None:
            runio.redirect_analysis(self.dir, runio.check_out_dir(out_dir))
        self._warned = False

    @property
    def analysis_dir(self) -> Path:
        return runio.analysis_dir(self.dir)

    @property
    def state(self) -> dict:
        """The run's state when it was opened: {"state": completed | running | failed | diverged | unknown,
        "step": the step of status.json, "last_checkpoint": the last checkpoint's step}."""
        return {"state": self.status.get("state") or "unknown", "step": self.status.get("step"),
                "last_checkpoint": self.steps[-1]}

    def warn_if_unfinished(self) -> None:
        """One line on stderr (once) when the run is not completed: its results describe a run still changing
        (running), cut short (failed) or ended by a non-finite loss (diverged)."""
        st = self.state
        if st["state"] != "completed" and not self._warned:
            self._warned = True
            print(f"warning: {self.dir} is not completed (state {st['state']} at step {st['step']}); this analysis "
                  f"covers its checkpoints up to step {st['last_checkpoint']}", file=sys.stderr)

    def metrics(self) -> list[dict]:
        return runio.read_metrics(self.dir)

    def checkpoints(self):
        return CheckpointSet(self.dir)

    def require_model(self) -> None:
        """Refuse, in one line, an analysis that needs the model of a run imported from a foreign architecture
        (training/importers): the toolkit cannot run that model, only its checkpoints' trajectory."""
        imp = self.imported
        if imp is not None and not imp.get("native_model"):
            why = ("whose model this toolkit cannot run (it stores their trunk only)" if imp.get("architecture") !=
                   "mini_gpt" else "which do not hold the whole model (it stores their trunk only)")
            raise UserError(f"{self.dir} was imported from {imp.get('architecture')} checkpoints, {why}: analyses that "
                            "need the model (gradients, Fisher, switching with probes, basins) refuse it; the "
                            "trajectory analyses work")

    def task(self):
        """The run's data task (tokenizer, codewords, fixed eval sets) exactly as in training."""
        self.require_model()
        return prepare_task(self.cfg, self.dir)

    def tokenizer(self):
        """The run's tokenizer (tokenizer.json or GPT-2), without building its token cache."""
        from training.core.data import run_tokenizer
        return run_tokenizer(self.dir, self.cfg)

    def model(self, step: int, attention: str = "sdpa", device: str | torch.device = "cpu"):
        """The model with the weights of checkpoint ``step``, in eval mode."""
        self.require_model()
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


def open_run(run_dir: str | Path, out_dir: str | Path | None = None) -> Run:
    return Run(run_dir, out_dir)


def write_result(run: "Run | Path", name: str, result: dict) -> Path:
    """RUN/analysis/<name>.json (or the --out-dir's); an opened :class:`Run` adds ``run_state`` to the result
    and warns once when the run is not completed. ``run`` may also be a folder (a study's own results):
    then the file is <folder>/<name>.json."""
    path = (Path(run.analysis_dir) if isinstance(run, Run) else Path(run)) / f"{name}.json"
    if isinstance(run, Run) and isinstance(result, dict):
        result = {**result, "run_state": run.state}
        run.warn_if_unfinished()
    runio.atomic_write_json(path, result)
    return path
