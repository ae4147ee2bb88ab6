"""Synthetic run directories with known trajectories, for testing the geometry library against numpy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from training.core import runio
from training.core.config import preset
from training.core.model import GPT, trunk_names


def make_run(run_dir: Path, thetas: list[dict[str, torch.Tensor]], steps: list[int], cfg=None) -> Path:
    """Write a run directory whose checkpoints hold the given state dicts (config.json + checkpoints)."""
    cfg = cfg or preset("test")
    run_dir.mkdir(parents=True, exist_ok=True)
    runio.atomic_write_json(run_dir / "config.json", {"config": cfg.to_dict(), "config_hash": cfg.hash()})
    model = GPT(cfg, 64)
    for step, sd in zip(steps, thetas):
        model.load_state_dict(sd, strict=False)
        runio.save_checkpoint(run_dir, step, model, cfg.hash())
    return run_dir


def synthetic_trajectory(run_dir: Path, T: int = 12, seed: int = 0, cfg=None):
    """A drifting trajectory: a strong common direction plus a few transverse modes and noise.

    Returns (run_dir, steps, dense matrix Θ of flattened trunks in canonical order, per-block Θ list).
    """
    cfg = cfg or preset("test")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    base = GPT(cfg, 64).state_dict()
    names = trunk_names(cfg)
    direction = {n: torch.randn(base[n].shape, generator=g) for n in names}
    modes = [{n: torch.randn(base[n].shape, generator=g) for n in names} for _ in range(3)]
    thetas, steps = [], [10 * i for i in range(T)]
    for i in range(T):
        sd = {k: v.clone() for k, v in base.items()}
        for n in names:
            sd[n] += 0.05 * i * direction[n]
            for j, m in enumerate(modes):
                sd[n] += 0.02 * np.sin(0.7 * (j + 1) * i) * m[n]
            sd[n] += 0.002 * torch.randn(base[n].shape, generator=g)
        thetas.append(sd)
    make_run(run_dir, thetas, steps, cfg)
    Theta = np.stack([np.concatenate([sd[n].numpy().astype(np.float64).ravel() for n in names]) for sd in thetas])
    return run_dir, steps, Theta


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
