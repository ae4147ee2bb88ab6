"""A Top-K sparse autoencoder (as in skydancerosel/bubble-modadd, arXiv 2602.10496) and activation patching through it.

Encoder z_pre = W_enc (x − b_pre) + b_enc; the code z keeps the k largest entries of z_pre (and, with
``relu``, clips them at zero; the reference keeps negative survivors); the reconstruction is
x̂ = W_dec z + b_pre. Decoder columns are kept at unit norm after every step (a common Top-K SAE choice,
not the reference's, which leaves them free), so latent sizes live in z. The loss is the mean squared
error plus a tiny L2 on z_pre (1e-6 · mean z_pre², as the reference). Training is full-batch-free:
mini-batches drawn with replacement from a seeded generator, Adam.

Ablation (:func:`patch_hook`) edits the activation *where the SAE was trained* and lets the rest of the
network run on the edited value -- unlike the reference, which edited the final residual at value
positions and then applied only the classifier to the last position (an edit that reached the logits in
about a fifth of batches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn


class TopKSAE(nn.Module):
    def __init__(self, d: int, d_sae: int, k: int, relu: bool = True, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d, d_sae, generator=g)
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_pre = nn.Parameter(torch.zeros(d))
        self.k, self.relu = k, relu

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b_pre) @ self.W_enc.T + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z_pre = self.pre(x)
        top = z_pre.topk(self.k, dim=-1)
        vals = top.values.clamp_min(0) if self.relu else top.values
        return torch.zeros_like(z_pre).scatter(-1, top.indices, vals)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec.T + self.b_pre

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_pre = self.pre(x)
        top = z_pre.topk(self.k, dim=-1)
        vals = top.values.clamp_min(0) if self.relu else top.values
        z = torch.zeros_like(z_pre).scatter(-1, top.indices, vals)
        return self.decode(z), z, z_pre

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=0, keepdim=True).clamp_min(1e-12))


@dataclass
class SAEFit:
    sae: TopKSAE
    losses: list[float]
    fvu: float            # fraction of variance unexplained on the training data


def train_sae(X: torch.Tensor, d_sae: int, k: int, steps: int = 2000, batch: int = 512, lr: float = 1e-3,
              relu: bool = True, seed: int = 0, l2_pre: float = 1e-6) -> SAEFit:
    """Fit a Top-K SAE to the rows of X (n × d)."""
    X = X.float()
    sae = TopKSAE(X.shape[1], d_sae, k, relu=relu, seed=seed)
    with torch.no_grad():
        sae.b_pre.copy_(X.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    for _ in range(steps):
        xb = X[torch.randint(0, len(X), (min(batch, len(X)),), generator=g)]
        xh, _, z_pre = sae(xb)
        loss = ((xh - xb) ** 2).mean() + l2_pre * (z_pre ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sae.normalise_decoder()
        losses.append(float(loss.detach()))
    return SAEFit(sae, losses, fraction_unexplained(sae, X))


@torch.no_grad()
def fraction_unexplained(sae: TopKSAE, X: torch.Tensor) -> float:
    xh, _, _ = sae(X.float())
    return float(((xh - X) ** 2).sum() / ((X - X.mean(0)) ** 2).sum())


@torch.no_grad()
def latent_variance(sae: TopKSAE, X: torch.Tensor) -> torch.Tensor:
    """Variance of each latent's pre-activation over X (the reference ranks "execution" latents by it)."""
    return sae.pre(X.float()).var(0)


def patch_hook(sae: TopKSAE, mask: torch.Tensor, ablate: torch.Tensor | None):
    """A forward hook for the module whose output the SAE reads: at the positions where ``mask`` (B, T) is
    True, replace the output by the SAE's reconstruction with the latents ``ablate`` zeroed (None: the
    reconstruction only, the control)."""
    def hook(module, inputs, output):
        h = output
        sel = h[mask]
        z = sae.encode(sel)
        if ablate is not None and len(ablate):
            z[:, ablate] = 0.0
        h = h.clone()
        h[mask] = sae.decode(z).to(h.dtype)
        return h
    return hook


def planted_dictionary(n: int, d: int, n_atoms: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples x = D c with unit-norm random atoms D (d × n_atoms) and k-sparse nonnegative codes c."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((d, n_atoms))
    D /= np.linalg.norm(D, axis=0, keepdims=True)
    C = np.zeros((n, n_atoms))
    for i in range(n):
        idx = rng.choice(n_atoms, size=k, replace=False)
        C[i, idx] = rng.uniform(0.5, 1.5, size=k)
    return torch.tensor(C @ D.T, dtype=torch.float32), torch.tensor(D, dtype=torch.float32)


def atom_recovery(sae: TopKSAE, D: torch.Tensor) -> torch.Tensor:
    """For each true atom, the best |cosine| with a decoder column."""
    W = sae.W_dec.detach()
    W = W / W.norm(dim=0, keepdim=True)
    Dn = D / D.norm(dim=0, keepdim=True)
    return (Dn.T @ W).abs().max(dim=1).values
