"""Directional probe: move a checkpoint by ε along a chosen direction, relax it, and measure what changed.

Directions (unit vectors of the trunk, or of one block's trunk, in the canonical flatten order):

* v_sw, the switching direction (θ_peak − θ_trough)/‖·‖ of a switch pair (:func:`training.geometry.switching.switch_coeffs`);
* v_b, the backbone: raw PC1 of the drifts θ(t) − θ(0) with a(t_last) > 0 (:func:`training.geometry.trajectory.pca`);
* random directions: seeded Gaussian vectors orthonormalised against v_sw, v_b and each other (Gram–Schmidt in
  float64), the null: a move of the same size in a direction with no meaning.

v_sw and v_b live in the span of the checkpoints, so they are span coefficients over the Gram's steps turned
into parameter vectors once (:meth:`training.geometry.trajectory.CheckpointSet.materialise`).

Size. ε is measured in units of the pair's own switch distance s = ‖θ_peak − θ_trough‖ over the same
parameters (trunk or block): the move is θ ← θ + ε·s·v̂. So ε = −1 along v_sw from the peak puts the trunk
(or block) exactly at the trough's weights (the other parameters stay the peak's), and ε = ±1 along any
other direction is a move as long as the switch itself. (skydancerosel/mini_gpt's switching_alignment.py
used ε·RMS(block)·v̂, a move of ~ε/√n of the block's size: a tiny perturbation at the paper's scale.)

Measurement. For each (direction, ε) the same fixed evaluation sets give p_ood and the validation loss
before and after relaxation with protocol R (:func:`training.geometry.basin.relax`: the run's optimizer,
fresh, batches from the relaxation stream keyed by the checkpoint step, so every direction and ε is relaxed
on the same batches); Δ is against ε = 0 (the unperturbed checkpoint relaxed the same way), and the
evaluation noise σ_eval of p_ood is the unit to read Δp_ood in.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from training.core.errors import UserError
from training.core.model import trunk_parameters

RANDOM_TAG = 0x64697270      # "dirp": random directions use np.random.default_rng([seed, RANDOM_TAG, block code])


def block_code(block: int | None) -> int:
    return 0 if block is None else 1 + int(block)


def orthonormal_random(fixed: np.ndarray, k: int, seed: int, block: int | None = None) -> np.ndarray:
    """D × k unit vectors, orthogonal to every column of ``fixed`` (D × m, any norms) and to each other: seeded
    Gaussian draws, each made orthogonal to the columns before it by two passes of Gram–Schmidt (float64)."""
    fixed = np.asarray(fixed, dtype=np.float64).reshape(fixed.shape[0], -1)
    D = fixed.shape[0]
    if k < 0 or fixed.shape[1] + k > D:
        raise UserError(f"cannot draw {k} directions orthogonal to {fixed.shape[1]} others in {D} dimensions")
    rng = np.random.default_rng([int(seed), RANDOM_TAG, block_code(block)])
    basis: list[np.ndarray] = []
    for c in fixed.T:                       # an orthonormal basis of the fixed columns first (they need not be ⊥)
        c = c.copy()
        for _ in range(2):
            for b in basis:
                c -= (b @ c) * b
        if np.linalg.norm(c) > 1e-12 * max(1.0, np.abs(fixed).max()):
            basis.append(c / np.linalg.norm(c))
    out = []
    for _ in range(k):
        z = rng.standard_normal(D)
        for _ in range(2):
            for b in basis:
                z -= (b @ z) * b
        z /= np.linalg.norm(z)
        basis.append(z)
        out.append(z)
    return np.stack(out, axis=1) if out else np.zeros((D, 0))


def unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0:
        raise UserError("a probe direction is the zero vector")
    return np.asarray(v, dtype=np.float64) / n


@torch.no_grad()
def shift(model: torch.nn.Module, vector: np.ndarray, scale: float, block: int | None = None) -> None:
    """θ ← θ + scale·vector over the trunk (or one block's trunk) of ``model``, in the canonical order.

    The increment is computed in float64 and rounded once into each weight's dtype; scale 0 leaves the weights
    bitwise unchanged."""
    params = trunk_parameters(model, block)
    n = sum(p.numel() for _, p in params)
    if vector.shape != (n,):
        raise UserError(f"a direction of {vector.shape} entries does not fit the {n} trunk weights")
    if scale == 0:
        return
    pos = 0
    for _, p in params:
        k = p.numel()
        new = p.detach().double().cpu().flatten() + scale * torch.from_numpy(vector[pos:pos + k])
        p.copy_(new.view_as(p).to(p.device, p.dtype))
        pos += k


def trunk_vector(model: torch.nn.Module, block: int | None = None) -> np.ndarray:
    """The model's trunk (or block) weights as one float64 vector in the canonical order."""
    return np.concatenate([p.detach().double().cpu().flatten().numpy() for _, p in trunk_parameters(model, block)])


def measure(model: torch.nn.Module, task, device, amp=contextlib.nullcontext) -> dict:
    """p_ood, nll_ood and the validation loss of the fixed evaluation sets (no randomness)."""
    m = task.evaluate(model, torch.device(device), amp, sets=("val", "probe_ood"))
    return {"p_ood": m["p_ood"], "nll_ood": m["nll_ood"], "val_loss": m["val_loss"]}


def summarise(records: Sequence[dict], sigma: float | None) -> list[dict]:
    """Per scope and ε: Δp_ood and Δval_loss (after relaxation, against ε = 0) of v_sw and v_b beside the random
    directions' mean and spread (the null), the differences in σ_eval units, and the pre-relaxation Δs."""
    out = []
    base = {r["scope"]: r for r in records if r["eps"] == 0}
    keys = sorted({(r["scope"], r["eps"]) for r in records if r["eps"] != 0}, key=lambda k: (str(k[0]), k[1]))
    for scope, eps in keys:
        b = base.get(scope)
        if b is None:
            continue
        rows = [r for r in records if r["scope"] == scope and r["eps"] == eps]
        cell: dict = {"scope": scope, "eps": eps}
        for when in ("pre", "post"):
            for q in ("p_ood", "val_loss"):
                d = {r["direction"]: r[when][q] - b[when][q] for r in rows}
                rnd = np.array([v for k, v in d.items() if k.startswith("random")])
                c = {"v_sw": d.get("v_sw"), "v_b": d.get("v_b"),
                     "random_mean": float(rnd.mean()) if len(rnd) else None,
                     "random_sd": float(rnd.std(ddof=1)) if len(rnd) > 1 else None, "random": rnd.tolist()}
                if q == "p_ood" and sigma:
                    c["in_sigma"] = {k: (None if v is None else v / sigma)
                                     for k, v in (("v_sw", c["v_sw"]), ("v_b", c["v_b"]),
                                                  ("random_mean", c["random_mean"]))}
                cell[f"{when}_delta_{q}"] = c
        out.append(cell)
    return out
