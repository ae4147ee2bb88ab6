"""Trunk directions of a finished run, as a basis for subspace suppression (training/core/control.py reads the
file; the core cannot read a run's geometry itself).

* ``backbone``: the top-k uncentred principal directions of the drift θ(t) − θ(0) over all checkpoints (PC1 is the
  backbone v_b; :func:`training.geometry.trajectory.pca` on the cached Gram, turned into parameter space by
  :meth:`CheckpointSet.materialise`), each beside its explained fraction and the random-walk null's;
* ``switching``: the unit switching directions (θ_peak − θ_trough)/‖·‖ of the run's p_ood switch pairs
  (:func:`training.geometry.switching.switch_coeffs`), only pairs above the noise level. The pairs come from
  RUN/oscillation_manifest.json when it exists (analysis/switching/detect_oscillations.py), else they are
  detected here on the checkpointed evaluations with the calibrated threshold at σ_eval (the binomial standard
  error at p = 0.5 of the probe evaluation set, :func:`training.core.regime.sigma_eval`). A run without such a
  pair has no switching direction: a one-line UserError says so (a study records it as not applicable).

Rows are unit vectors in the canonical trunk order (k × D_trunk); the file is safetensors with one tensor
``basis`` and metadata (run, kind, steps).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.core import runio
from training.core.errors import UserError
from training.core.regime import sigma_eval
from training.geometry.nulls import null_of
from training.geometry.switching import MANIFEST, SwitchPair, detect_oscillations, read_manifest, switch_coeffs
from training.geometry.trajectory import CheckpointSet, cached_gram, pca

KINDS = ("backbone", "switching")


def backbone_directions(run_dir: Path, k: int = 1, progress: bool = False) -> tuple[np.ndarray, dict]:
    """(k × D rows, info): the top-k uncentred PCs of θ(t) − θ(0); info has each one's explained fraction and the
    random-walk null's."""
    if k < 1:
        raise UserError(f"the backbone basis needs k >= 1 directions (got {k})")
    ck = CheckpointSet(run_dir)
    gram = cached_gram(ck, progress=progress)
    traj = pca(gram, k=k)
    if traj.coeffs.shape[0] < k:
        raise UserError(f"{run_dir}: the drift has rank {traj.coeffs.shape[0]} < k = {k}")
    null = pca(null_of(gram))
    rows = ck.materialise(gram, traj.coeffs[:k].T).T
    return rows, {"kind": "backbone", "k": k, "steps": list(gram.steps),
                  "explained_variance_ratio": traj.explained_variance_ratio[:k].tolist(),
                  "null_explained_variance_ratio": null.explained_variance_ratio[:k].tolist()}


def switch_pairs(run_dir: Path, steps: list[int]) -> tuple[list[SwitchPair], dict]:
    """The run's switch pairs above the noise level, and how they were found."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists():
        pairs, m = read_manifest(run_dir, steps)
        keep = [q for q in pairs if q.at_noise_level is not True]
        return keep, {"source": str(run_dir / MANIFEST), "prominence": m.get("prominence"), "n_pairs": len(pairs)}
    cfg = runio.read_run_config(run_dir)
    series = {int(r["step"]): float(r["p_ood"]) for r in runio.read_metrics(run_dir) if r.get("p_ood") is not None}
    xs = [s for s in sorted(series) if s in set(steps)]
    if len(xs) < 3:
        return [], {"source": "metrics.jsonl", "reason": f"{len(xs)} checkpointed evaluations of p_ood (need 3)"}
    osc = detect_oscillations(xs, [series[s] for s in xs], noise_std=sigma_eval(cfg))
    keep = [q for q in osc.pairs if q.at_noise_level is not True]
    return keep, {"source": "metrics.jsonl (calibrated threshold at sigma_eval)", "prominence": osc.prominence,
                  "sigma_eval": sigma_eval(cfg), "n_pairs": len(osc.pairs)}


def switching_directions(run_dir: Path, k: int | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """(P × D rows, info): the unit switching directions of the pairs above noise (the first k by amplitude when
    k is given). A run without any is a UserError naming the reason."""
    ck = CheckpointSet(run_dir)
    pairs, how = switch_pairs(Path(run_dir), ck.steps)
    if not pairs:
        raise UserError(f"{run_dir} has no switch pair above the noise level ({how.get('reason') or how['source']}): "
                        "there is no switching direction to suppress")
    pairs = sorted(pairs, key=lambda q: -q.amplitude)[:k] if k else pairs
    gram = cached_gram(ck, progress=progress)
    C, _ = switch_coeffs(gram, pairs)
    rows = ck.materialise(gram, C.T).T
    return rows.reshape(len(pairs), -1), {"kind": "switching", "k": len(pairs), **how,
                                          "pairs": [[q.peak_step, q.trough_step] for q in pairs]}


def directions(run_dir: Path, kind: str, k: int | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    if kind not in KINDS:
        raise UserError(f"unknown direction kind '{kind}' (choose from {', '.join(KINDS)})")
    if kind == "backbone":
        return backbone_directions(run_dir, k or 1, progress)
    return switching_directions(run_dir, k, progress)


def write_basis(path: Path, rows: np.ndarray, info: dict, run_dir: Path) -> Path:
    """Write ``rows`` (k × D, float32) as a safetensors basis file (atomic), with ``info`` in its metadata."""
    from safetensors.numpy import save_file
    meta = {"run_dir": str(run_dir), "info": json.dumps(info)}
    arr = np.ascontiguousarray(rows, dtype=np.float32)
    runio.atomic_write(Path(path), lambda tmp: save_file({"basis": arr}, str(tmp), metadata=meta))
    return Path(path)
