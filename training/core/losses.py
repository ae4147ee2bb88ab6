"""The composite training loss L = L_LM + λ·L_probe and the evaluation metrics (arXiv 2602.23696;
skydancerosel/mini_gpt's ``training/pilot.py``).

With λ > 0 the LM term is the mean cross-entropy over ordinary target positions (not probe, not
ignored) of the micro-batch and the probe term the mean over probe positions; an empty set
contributes zero. With λ = 0 the loss is the plain mean cross-entropy over all non-ignored targets,
probe positions included, as in mini_gpt's ``training/pilot.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


def token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy (B, T) in fp32; ignored targets give 0."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T),
                           ignore_index=IGNORE, reduction="none").view(B, T)


@dataclass
class LossParts:
    loss: torch.Tensor          # what is back-propagated
    lm: torch.Tensor            # mean CE over ordinary targets
    probe: torch.Tensor         # mean CE over probe targets (0 when there are none)
    n_probe: torch.Tensor       # number of probe targets


def composite_loss(logits: torch.Tensor, targets: torch.Tensor, probe_mask: torch.Tensor, lam: float) -> LossParts:
    ce = token_ce(logits, targets)
    valid = targets != IGNORE
    probe = probe_mask & valid
    lm_mask = valid & ~probe
    n_probe = probe.sum()
    probe_loss = (ce * probe).sum() / n_probe.clamp(min=1)
    if lam == 0:
        lm_all = (ce * valid).sum() / valid.sum().clamp(min=1)
        lm_only = (ce * lm_mask).sum() / lm_mask.sum().clamp(min=1)
        return LossParts(lm_all, lm_only, probe_loss, n_probe)
    lm_loss = (ce * lm_mask).sum() / lm_mask.sum().clamp(min=1)
    return LossParts(lm_loss + lam * probe_loss, lm_loss, probe_loss, n_probe)


@torch.no_grad()
def probe_stats(logits: torch.Tensor, targets: torch.Tensor, probe_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sums for the probe metrics of one forward pass (combine batches by adding).

    correct: examples whose greedy prediction equals the target at every probe position;
    scored: examples with at least one probe position; nll_sum / nll_n over probe positions;
    lm_sum / lm_n over the other non-ignored positions.
    """
    ce = token_ce(logits, targets)
    valid = targets != IGNORE
    probe = probe_mask & valid
    # greedy predictions only where they are scored: the argmax over the vocabulary at every position costs
    # about as much as the rest of the statistics together
    hit = torch.ones_like(probe)
    hit[probe] = logits[probe].argmax(-1) == targets[probe]
    scored = probe.any(dim=1)
    other = valid & ~probe
    return {
        "correct": (hit.all(dim=1) & scored).sum(), "scored": scored.sum(),
        "nll_sum": (ce * probe).sum(), "nll_n": probe.sum(),
        "lm_sum": (ce * other).sum(), "lm_n": other.sum(),
    }
