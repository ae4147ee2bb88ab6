"""SGD commutators and their projection on an execution subspace (as skydancerosel/bubble-modadd's
``bubble_exp_comm_v2.py``; arXiv 2602.10496).

At parameters θ0 and two independent mini-batches A and B, two plain SGD steps of size η in either order
end at θ_AB = θ0 − η g_A − η ∇L_B(θ0 − η g_A) and θ_BA (A and B swapped). The commutator is
δ = θ_AB − θ_BA. It is computed here in the algebraically identical form

    δ = η (∇L_A(θ0 − η g_B) − g_A) − η (∇L_B(θ0 − η g_A) − g_B),

which never subtracts two nearly equal copies of θ0 (the cancellation that limits the naive form in fp32),
is exactly zero when A = B, and never touches the model's own parameters (everything is functional, so
θ0 is left bit-for-bit as it was).

* normalised defect D = ‖δ‖ / (‖η g_A‖ ‖η g_B‖) (the reference's quantity);
* second-order form: δ = η² (H_B g_A − H_A g_B) + O(η³), exact for a quadratic loss; the right-hand side is
  computed with Hessian-vector products (forward-over-reverse, torch.func) and needs the math attention
  path for a transformer. D → ‖H_B g_A − H_A g_B‖/(‖g_A‖ ‖g_B‖) as η → 0, which grows as gradients shrink
  at fixed curvature; the scaled defect ‖H_B g_A − H_A g_B‖ / (‖H_B g_A‖ + ‖H_A g_B‖) ∈ [0, 1] does not;
* projection on a subspace with orthonormal basis Q (P × K): ρ = ‖Qᵀδ‖/‖δ‖; the perpendicular norm
  fraction is sqrt(1 − ρ²) and the perpendicular energy fraction 1 − ρ² (the reference's "1 − ρ" is
  neither); random baselines: E[ρ²] = K/P exactly for a uniformly random K-subspace, so ρ_rand ≈ sqrt(K/P)
  (:func:`random_rho_mean` gives the exact mean of ρ), and a Monte-Carlo mean over Gaussian bases.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, jvp

LossFn = Callable[[torch.Tensor, object], torch.Tensor]     # (flat θ, batch) -> scalar loss


# ---------------------------------------------------------------------------- flat parameters of a model
class FlatModel:
    """A model's parameters as one flat vector (``model.named_parameters()`` order, the tied matrix once)."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype | None = None):
        self.model = model
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.offsets = dict(zip(self.names, np.cumsum([0] + self.sizes[:-1]).tolist()))
        self.dtype = dtype or named[0][1].dtype
        self.P = int(sum(self.sizes))

    def theta(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1).to(self.dtype) for _, p in self.model.named_parameters()])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, a = {}, 0
        for n, shape, size in zip(self.names, self.shapes, self.sizes):
            out[n] = theta[a:a + size].view(shape)
            a += size
        return out

    def loss_fn(self, batch_loss: Callable[[Callable, object], torch.Tensor]) -> LossFn:
        """``batch_loss(forward, batch)`` -> scalar, with ``forward(x)`` the model at the given θ."""
        def f(theta: torch.Tensor, batch) -> torch.Tensor:
            params = self.unflatten(theta)
            return batch_loss(lambda *a: functional_call(self.model, params, a), batch)
        return f


# ---------------------------------------------------------------------------- the commutator
def gradient(loss_fn: LossFn, theta: torch.Tensor, batch) -> torch.Tensor:
    return grad(loss_fn)(theta, batch)


def hvp(loss_fn: LossFn, theta: torch.Tensor, batch, v: torch.Tensor) -> torch.Tensor:
    """H(θ) v for the loss of ``batch``: forward-mode derivative of the gradient along v."""
    return jvp(lambda t: grad(loss_fn)(t, batch), (theta,), (v,))[1]


def sgd_commutator(loss_fn: LossFn, theta0: torch.Tensor, batch_a, batch_b, eta: float,
                   second_order: bool = False) -> dict:
    """δ = θ_AB − θ_BA of two plain SGD steps of size ``eta`` and its scalar summaries.

    Returns a dict with tensors ``delta``, ``g_a``, ``g_b`` (and ``hvp_form`` = H_B g_A − H_A g_B when
    ``second_order``) and floats ``D`` (normalised defect), ``delta_norm``, ``grad_cos``, ``g_a_norm``,
    ``g_b_norm``; with ``second_order`` also ``D_hvp`` (its η → 0 limit), ``scaled_defect`` and
    ``rel_err_hvp`` = ‖δ/η² − (H_B g_A − H_A g_B)‖ / ‖H_B g_A − H_A g_B‖.
    """
    g_a = gradient(loss_fn, theta0, batch_a)
    g_b = gradient(loss_fn, theta0, batch_b)
    g_a_after_b = gradient(loss_fn, theta0 - eta * g_b, batch_a)
    g_b_after_a = gradient(loss_fn, theta0 - eta * g_a, batch_b)
    delta = eta * (g_a_after_b - g_a) - eta * (g_b_after_a - g_b)
    na, nb, nd = float(g_a.norm()), float(g_b.norm()), float(delta.norm())
    out = {"delta": delta, "g_a": g_a, "g_b": g_b, "delta_norm": nd, "g_a_norm": na, "g_b_norm": nb,
           "D": nd / (eta * eta * na * nb) if na > 0 and nb > 0 else float("nan"),
           "grad_cos": float(g_a @ g_b) / (na * nb) if na > 0 and nb > 0 else float("nan"), "eta": eta}
    if second_order:
        hb_ga = hvp(loss_fn, theta0, batch_b, g_a)
        ha_gb = hvp(loss_fn, theta0, batch_a, g_b)
        form = hb_ga - ha_gb
        nf = float(form.norm())
        out.update(hvp_form=form, D_hvp=nf / (na * nb) if na > 0 and nb > 0 else float("nan"),
                   scaled_defect=nf / (float(hb_ga.norm()) + float(ha_gb.norm()) + 1e-300),
                   rel_err_hvp=float((delta / eta ** 2 - form).norm()) / nf if nf > 0 else float("nan"))
    return out


# ---------------------------------------------------------------------------- projections and baselines
def orthonormal_basis(vectors: torch.Tensor, tol: float = 1e-10) -> torch.Tensor:
    """Orthonormal columns spanning the columns of ``vectors`` (P × K), dropping numerically null ones."""
    if vectors.shape[1] == 0:
        return vectors
    q, r = torch.linalg.qr(vectors)
    keep = r.diagonal().abs() > tol * max(1.0, float(r.diagonal().abs().max()))
    return q[:, keep]


def projection_ratio(delta: torch.Tensor, Q: torch.Tensor) -> float:
    """ρ = ‖Qᵀδ‖ / ‖δ‖ for a basis Q with orthonormal columns."""
    nd = float(delta.norm())
    return float((Q.T @ delta).norm()) / nd if nd > 0 else float("nan")


def random_rho_mean(K: int, P: int) -> float:
    """Exact E[ρ] for a uniformly random K-dimensional subspace of R^P (ρ² ~ Beta(K/2, (P−K)/2))."""
    from scipy.special import gammaln
    if K >= P:
        return 1.0
    return float(math.exp(gammaln((K + 1) / 2) + gammaln(P / 2) - gammaln(K / 2) - gammaln((P + 1) / 2)))


def random_rho_mc(delta: torch.Tensor, K: int, n_trials: int, generator: torch.Generator) -> dict:
    """Monte-Carlo ρ of ``delta`` on the spans of Gaussian P × K matrices G: mean, std, standard error.

    ρ² = cᵀ(GᵀG)⁻¹c / ‖δ‖² with c = Gᵀδ, the projection on span(G) without orthonormalising G.
    """
    vals = []
    nd2 = float(delta @ delta)
    for _ in range(n_trials):
        g = torch.randn(delta.numel(), K, generator=generator, dtype=delta.dtype)
        c = g.T @ delta
        vals.append(math.sqrt(max(0.0, float(c @ torch.linalg.solve(g.T @ g, c)) / nd2)) if nd2 > 0 else float("nan"))
    v = np.asarray(vals)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "se": float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0, "n": n_trials}


def projection_summary(delta: torch.Tensor, Q: torch.Tensor, n_mc: int = 0,
                       generator: torch.Generator | None = None) -> dict:
    """ρ on Q, the random baselines, their ratio, and the perpendicular norm and energy fractions."""
    K, P = Q.shape[1], delta.numel()
    rho = projection_ratio(delta, Q)
    out = {"K": K, "P": P, "rho": rho, "rho_rand_sqrt_k_over_p": math.sqrt(K / P), "rho_rand_exact": random_rho_mean(K, P),
           "perp_norm_fraction": math.sqrt(max(0.0, 1 - rho * rho)), "perp_energy_fraction": 1 - rho * rho,
           "one_minus_rho_reference": 1 - rho}
    out["ratio"] = rho / out["rho_rand_exact"] if out["rho_rand_exact"] > 0 else float("nan")
    if n_mc:
        out["rho_rand_mc"] = random_rho_mc(delta, K, n_mc, generator or torch.Generator().manual_seed(0))
    return out


def embed(vectors: Sequence[tuple[int, torch.Tensor]], P: int, dtype=torch.float64) -> torch.Tensor:
    """P × K matrix whose columns are the given (offset, sub-vector) pairs placed in R^P."""
    out = torch.zeros(P, len(vectors), dtype=dtype)
    for j, (off, v) in enumerate(vectors):
        out[off:off + v.numel(), j] = v.reshape(-1).to(dtype)
    return out
