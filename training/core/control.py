"""Subspace suppression: a training-time control that removes a chosen subspace S of the trunk from every
gradient, g ← g − λ_c·P_S g (the "SubspaceSuppressor" of the legacy path of skydancerosel/mini_gpt,
``training/control.py``; arXiv 2602.23696 does not use it).

S is either

* **estimated** (no basis file): at the first step and then every ``suppress_every`` steps, the trunk gradients of
  the two parts of the composite loss are taken on micro-batch 0 of that step, d = g_probe − g_LM is normalised and
  appended to a buffer of the last ``suppress_buffer`` such directions, and S becomes the span of the top
  ``suppress_k`` right singular vectors of that buffer (m × D); a refresh whose batch holds no probe target adds
  nothing (d would be −g_LM alone) and is counted as skipped. As in the reference, one batch per refresh; here
  both parts come from the *same* batch, so d is their difference on equal data;
* **given**: ``suppress_basis`` names a file of k trunk-length vectors (``.npy``, or ``.safetensors`` holding
  one tensor), k × D_trunk or a single D_trunk vector, in the canonical trunk order
  (:func:`training.core.model.trunk_names`); e.g. the backbone or the switching directions of an earlier run
  (``analysis/switching/export_directions.py``). Its rows are orthonormalised (QR); linearly dependent,
  non-finite or wrongly sized rows are refused in one line.

The basis Q (D × r, r = rank) is kept exactly orthonormal (float64 QR, stored in float32, so QᵀQ = I to float32
round-off) and the projection is applied to the accumulated trunk gradient *before* global-norm clipping: the
clip then bounds the update actually taken, and since clipping only rescales, the direction of the clipped
gradient is still exactly orthogonal to S at λ_c = 1. Only the gradient is projected: for plain SGD (no momentum,
no decay) the trunk update −lr·g is orthogonal to S; AdamW's per-coordinate scaling, momentum and weight decay
can put update components back into S (the reference projects the gradient too). The logged ``grad_norm`` is
then the norm of the projected gradient.

The control's state (buffer, basis, counters) is part of the resume state (``state/resume.pt``), so a killed run
resumes bitwise; a given basis is read from its file once, at the start of the run, and resumed from the state.
Memory: the buffer holds ``suppress_buffer`` × D_trunk floats (in memory and in the resume state).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.core.errors import UserError
from training.core.losses import composite_loss

BASIS_SUFFIXES = (".npy", ".safetensors")
RANK_TOL = 1e-6          # a basis row whose QR diagonal is below this × the largest is linearly dependent


@dataclass
class SuppressionSettings:
    """Subspace suppression's settings, fields of :class:`training.core.config.Config` (hashed only when they differ
    from these defaults, so earlier runs keep their hashes). Off while ``suppress_strength`` is 0."""
    suppress_strength: float = 0.0   # λ_c in [0, 1]: g ← g − λ_c·P_S g; 0 = off
    suppress_basis: str = ""         # file of k trunk vectors (.npy / .safetensors); "" = estimate S online
    suppress_k: int = 3              # estimated S: top-k directions of the buffer
    suppress_every: int = 200        # estimated S: refresh at steps 1, 1 + N, 1 + 2N, ...
    suppress_buffer: int = 50        # estimated S: the last this many normalised g_probe − g_LM directions


def active(cfg) -> bool:
    return cfg.suppress_strength > 0


def check_suppression(cfg) -> None:
    """One-line UserError for impossible suppression settings (the basis file itself is read by the trainer)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UserError(msg)
    need(0.0 <= cfg.suppress_strength <= 1.0,
         f"suppress_strength must be in [0, 1] (λ_c; 0 = off, 1 removes the subspace; got {cfg.suppress_strength})")
    need(cfg.suppress_k >= 1, f"suppress_k must be at least 1 (an empty subspace suppresses nothing; got {cfg.suppress_k})")
    need(cfg.suppress_every >= 1, f"suppress_every must be at least 1 (got {cfg.suppress_every})")
    need(cfg.suppress_buffer >= 1, f"suppress_buffer must be at least 1 (got {cfg.suppress_buffer})")
    need(cfg.suppress_k <= cfg.suppress_buffer,
         f"suppress_k={cfg.suppress_k} exceeds suppress_buffer={cfg.suppress_buffer}: the buffer's rank is at most its size")
    if cfg.suppress_basis:
        need(active(cfg), f"suppress_basis={cfg.suppress_basis} is set but suppress_strength is 0: nothing would be "
                          "suppressed; give --suppress-strength (e.g. 1)")
        need(Path(cfg.suppress_basis).suffix in BASIS_SUFFIXES,
             f"suppress_basis {cfg.suppress_basis}: expected a {' or '.join(BASIS_SUFFIXES)} file")


# ---------------------------------------------------------------------------- the algebra (numpy / torch, exact)
def orthonormal_basis(rows: np.ndarray, what: str = "the basis") -> np.ndarray:
    """D × r orthonormal basis (float64, QR) of the span of ``rows`` (k × D); refuses an empty, non-finite or
    linearly dependent set in one line."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise UserError(f"{what} is empty (shape {tuple(rows.shape)}): give at least one direction")
    if not np.all(np.isfinite(rows)):
        raise UserError(f"{what} has non-finite entries")
    norms = np.linalg.norm(rows, axis=1)
    if np.any(norms == 0):
        raise UserError(f"{what}: row {int(np.argmin(norms))} is zero")
    Q, R = np.linalg.qr((rows / norms[:, None]).T)
    d = np.abs(np.diag(R))
    if d.min() < RANK_TOL * d.max():
        raise UserError(f"{what}: its {rows.shape[0]} rows are linearly dependent (rank < {rows.shape[0]})")
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)[None, :]


def top_directions(buffer: np.ndarray, k: int) -> np.ndarray:
    """D × r orthonormal basis of the top-min(k, rank) right singular vectors of ``buffer`` (m × D), from the m × m
    Gram in float64 (V = Bᵀ U Σ⁻¹, then QR); signs fixed so that each vector's largest |entry| is positive."""
    B = np.asarray(buffer, dtype=np.float64)
    lam, U = np.linalg.eigh(B @ B.T)
    order = np.argsort(lam)[::-1]
    lam, U = lam[order], U[:, order]
    keep = int(np.sum(lam > max(lam[0], 0.0) * 1e-12)) if len(lam) else 0
    r = min(k, keep)
    if r == 0:
        raise UserError("the suppression buffer has no non-zero direction")
    V = B.T @ U[:, :r] / np.sqrt(lam[:r])
    Q, R = np.linalg.qr(V)
    Q = Q * np.where(np.diag(R) < 0, -1.0, 1.0)[None, :]
    idx = np.argmax(np.abs(Q), axis=0)
    return Q * np.sign(Q[idx, np.arange(r)])[None, :]


def read_basis_file(path: str | Path, dim: int) -> np.ndarray:
    """The k × D rows of a basis file (.npy, or .safetensors with one tensor); one-line UserError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suppress_basis {path} does not exist")
    try:
        if path.suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        else:
            from safetensors.numpy import load_file
            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise UserError(f"suppress_basis {path} holds {len(tensors)} tensors ({', '.join(sorted(tensors)) or 'none'}); "
                                "expected exactly one, k × D_trunk")
            rows = next(iter(tensors.values()))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"suppress_basis {path} is not a readable {path.suffix} array ({type(e).__name__})") from None
    rows = np.asarray(rows)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[-1] != dim:
        raise UserError(f"suppress_basis {path} has shape {tuple(np.shape(rows))}; expected k × {dim} (k directions "
                        f"of the trunk's {dim} parameters, canonical order)")
    return orthonormal_basis(rows, f"suppress_basis {path}")


# ---------------------------------------------------------------------------- the control in the training step
class Suppressor:
    """Holds S for one run and applies g ← g − λ_c·P_S g to the trunk gradients in place."""

    def __init__(self, cfg, trunk: list[torch.nn.Parameter]):
        self.cfg, self.trunk = cfg, list(trunk)
        self.sizes = [p.numel() for p in self.trunk]
        self.dim = sum(self.sizes)
        self.device = self.trunk[0].device
        self.basis: torch.Tensor | None = None               # D × r, float32, on the device
        self.buffer = torch.zeros(0, self.dim)               # m × D, float32, host
        self.refreshes = self.skipped = 0
        self.removed_sum, self.removed_n = 0.0, 0             # Σ ‖λ_c P_S g‖²/‖g‖² since the last record

    # ----- S
    def start(self) -> None:
        """A fresh run: read the given basis (nothing to do for an estimated S)."""
        if self.cfg.suppress_basis:
            self._set_basis(read_basis_file(self.cfg.suppress_basis, self.dim))

    def _set_basis(self, Q: np.ndarray) -> None:
        self.basis = torch.from_numpy(np.ascontiguousarray(Q, dtype=np.float32)).to(self.device)

    def due(self, step: int) -> bool:
        return not self.cfg.suppress_basis and (step - 1) % self.cfg.suppress_every == 0

    def refresh(self, fwd, batch, lam: float, amp) -> None:
        """Add the normalised g_probe − g_LM of ``batch`` to the buffer and recompute S (see the module docstring)."""
        with amp():
            logits = fwd(batch.x)
        parts = composite_loss(logits, batch.y, batch.probe_mask, lam)
        self.refreshes += 1
        if int(parts.n_probe) == 0:
            self.skipped += 1
            return
        g_lm = torch.autograd.grad(parts.lm, self.trunk, retain_graph=True, allow_unused=True)
        g_pr = torch.autograd.grad(parts.probe, self.trunk, allow_unused=True)
        d = torch.cat([(torch.zeros_like(p) if b is None else b).reshape(-1).float()
                       - (torch.zeros_like(p) if a is None else a).reshape(-1).float()
                       for p, a, b in zip(self.trunk, g_lm, g_pr)]).cpu()
        n = float(torch.linalg.vector_norm(d.double()))
        if not (n > 0 and np.isfinite(n)):
            self.skipped += 1
            return
        self.buffer = torch.cat([self.buffer, (d.double() / n).float()[None]])[-self.cfg.suppress_buffer:]
        self._set_basis(top_directions(self.buffer.numpy(), self.cfg.suppress_k))

    # ----- the projection
    @torch.no_grad()
    def project(self) -> None:
        """g ← g − λ_c·Q Qᵀ g over the trunk gradients (one vector in the canonical order)."""
        if self.basis is None:
            return
        grads = [p.grad for p in self.trunk]
        if any(g is None for g in grads):
            return
        Q, off, coef, total = self.basis, 0, None, 0.0
        pieces = []
        for g, n in zip(grads, self.sizes):
            q = Q[off:off + n]
            pieces.append(q)
            c = q.T @ g.reshape(-1).float()
            coef = c if coef is None else coef + c
            total += float(g.float().pow(2).sum())
            off += n
        lam = self.cfg.suppress_strength
        for g, q in zip(grads, pieces):
            g.sub_((lam * (q @ coef)).view_as(g).to(g.dtype))
        removed = lam * lam * float(coef.double().pow(2).sum())
        self.removed_sum += removed / total if total > 0 else 0.0
        self.removed_n += 1

    # ----- records and resumption
    def record(self) -> dict:
        """Keys for metrics.jsonl (reset after each evaluation)."""
        out = {"suppress_rank": 0 if self.basis is None else int(self.basis.shape[1]),
               "suppress_removed": self.removed_sum / self.removed_n if self.removed_n else None,
               "suppress_refreshes": self.refreshes, "suppress_skipped": self.skipped}
        self.removed_sum, self.removed_n = 0.0, 0
        return out

    def state_dict(self) -> dict:
        return {"basis": None if self.basis is None else self.basis.detach().cpu().clone(),
                "buffer": self.buffer.clone(), "refreshes": self.refreshes, "skipped": self.skipped,
                "removed_sum": self.removed_sum, "removed_n": self.removed_n}

    def load_state_dict(self, st: dict | None) -> None:
        if st is None:
            raise UserError("the resume state has no subspace-suppression state (written by a run without it); "
                            "it cannot be resumed exactly")
        self.basis = None if st["basis"] is None else st["basis"].to(self.device)
        self.buffer = st["buffer"].clone()
        self.refreshes, self.skipped = int(st["refreshes"]), int(st["skipped"])
        self.removed_sum, self.removed_n = float(st["removed_sum"]), int(st["removed_n"])
