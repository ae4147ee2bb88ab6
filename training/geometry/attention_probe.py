"""Reading and editing attention probabilities: entropy, top-k mass, top-k override ("bubbling").

Every block's attention module has an optional ``prob_hook`` (training/core/model.py): a function that gets the
probabilities (B, H, T, T) after the softmax and returns the ones to use. Setting it routes the module
through the explicit math path. :func:`prob_hooks` installs one function for every layer for the
duration of a ``with`` block.

Definitions (after arXiv 2602.10496 and skydancerosel/bubble-modadd; here the readout row is the separator
position, the last query):

* entropy of a row a: H = -Σ_j a_j ln a_j in nats (0 ln 0 = 0, no epsilon); a uniform causal row over n
  visible keys has H = ln n;
* top-k mass: the sum of the k largest entries of a row;
* top-k override: record every layer's probabilities on a clean forward pass, keep the k largest entries
  of every row, renormalise, and run again with those matrices imposed in every layer. With k >= the
  number of keys the matrices are the clean ones and nothing changes.
"""
from __future__ import annotations

import contextlib
from functools import partial

import numpy as np
import torch


@contextlib.contextmanager
def prob_hooks(model, fn):
    """Call ``fn(layer, att) -> att`` on every block's attention probabilities inside the block."""
    blocks = list(model.blocks)
    for i, b in enumerate(blocks):
        b.attn.prob_hook = partial(fn, i)
    try:
        yield model
    finally:
        for b in blocks:
            b.attn.prob_hook = None


def row_entropy(att: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row (last dimension) of a probability tensor."""
    return -torch.special.xlogy(att, att).sum(-1)


def topk_mass(att: torch.Tensor, k: int) -> torch.Tensor:
    return att.topk(min(k, att.shape[-1]), dim=-1).values.sum(-1)


def topk_renormalise(att: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of every row, zero the rest, renormalise to sum 1."""
    k = min(k, att.shape[-1])
    idx = att.topk(k, dim=-1).indices
    kept = torch.zeros_like(att).scatter(-1, idx, att.gather(-1, idx))
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-30)


@torch.no_grad()
def record_attention(model, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, [probabilities of layer 0, 1, ...]) of one forward pass."""
    store: list[torch.Tensor | None] = [None] * len(model.blocks)

    def keep(layer, att):
        store[layer] = att.detach().clone()
        return att
    with prob_hooks(model, keep):
        logits = model(x)
    return logits, store


@torch.no_grad()
def readout_attention_stats(model, x: torch.Tensor, ks=(1, 2, 4, 8), atts: list[torch.Tensor] | None = None) -> dict:
    """Per layer and head: mean entropy and top-k mass of the readout (last) row, and the mean entropy
    over all query rows; averaged over the batch. ``atts``: probabilities already recorded for x."""
    if atts is None:
        _, atts = record_attention(model, x)
    out = []
    for att in atts:
        last = att[:, :, -1, :]                                   # (B, H, T)
        out.append({"entropy": row_entropy(last).mean(0).tolist(),
                    "topk_mass": {str(k): topk_mass(last, k).mean(0).tolist() for k in ks},
                    "all_rows_entropy": row_entropy(att).mean((0, 2)).tolist()})
    return {"layers": out, "uniform_entropy": float(np.log(x.shape[1]))}


@torch.no_grad()
def override_logits(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """Logits with every layer's attention replaced by the top-k renormalised clean probabilities."""
    _, atts = record_attention(model, x)
    with prob_hooks(model, lambda layer, att: topk_renormalise(atts[layer], k)):
        return model(x)
