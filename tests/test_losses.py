"""The composite loss and probe metrics against an explicit per-position computation."""
import math

import pytest
import torch

from training.core.losses import composite_loss, probe_stats


def _manual(logits, y, mask, lam):
    lm, pr = [], []
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            if y[b, t] == -100:
                continue
            logp = logits[b, t] - torch.logsumexp(logits[b, t], dim=0)
            (pr if mask[b, t] else lm).append(-logp[y[b, t]].item())
    lm_mean = sum(lm) / len(lm)
    pr_mean = sum(pr) / len(pr) if pr else 0.0
    if lam == 0:
        return (sum(lm) + sum(pr)) / (len(lm) + len(pr)), lm_mean, pr_mean
    return lm_mean + lam * pr_mean, lm_mean, pr_mean


@pytest.mark.parametrize("lam", [0.0, 2.0, 4.0])
def test_composite_loss_matches_manual(lam):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    y = torch.randint(0, 11, (3, 7), generator=g)
    y[0, 5:] = -100
    mask = torch.zeros(3, 7, dtype=torch.bool)
    mask[1, 3] = mask[2, 6] = True
    mask[0, 6] = True                                 # a probe flag on an ignored target does not count
    parts = composite_loss(logits, y, mask, lam)
    loss, lm, pr = _manual(logits, y, mask, lam)
    assert parts.loss.item() == pytest.approx(loss, rel=1e-5)
    assert parts.lm.item() == pytest.approx(lm, rel=1e-5)
    assert parts.probe.item() == pytest.approx(pr, rel=1e-5)
    assert parts.n_probe.item() == 2


def test_empty_probe_contributes_zero():
    logits = torch.randn(2, 4, 5)
    y = torch.randint(0, 5, (2, 4))
    parts = composite_loss(logits, y, torch.zeros(2, 4, dtype=torch.bool), 4.0)
    assert parts.probe.item() == 0.0 and parts.loss.item() == pytest.approx(parts.lm.item())


def test_probe_stats_exact_match_and_means():
    V = 6
    logits = torch.full((3, 4, V), -5.0)
    y = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [0, 0, 0, -100]])
    mask = torch.zeros(3, 4, dtype=torch.bool)
    mask[0, 2] = mask[1, 2] = True                   # example 2 has no probe position: not scored
    logits[0, 2, 3] = 5.0                            # example 0 right
    logits[1, 2, 5] = 5.0                            # example 1 wrong
    s = probe_stats(logits, y, mask)
    assert s["correct"].item() == 1 and s["scored"].item() == 2
    assert s["nll_n"].item() == 2 and s["lm_n"].item() == 3 + 3 + 3
    ce_right = -torch.log_softmax(logits[0, 2], 0)[3].item()
    ce_wrong = -torch.log_softmax(logits[1, 2], 0)[3].item()
    assert s["nll_sum"].item() == pytest.approx(ce_right + ce_wrong, rel=1e-5)
    assert math.isfinite(s["lm_sum"].item())


def test_probe_stats_correct_counts_against_a_loop():
    """An example is correct only when the greedy token is right at every one of its probe positions (random
    logits, several probe positions per example, ignored targets), counted here position by position."""
    g = torch.Generator().manual_seed(3)
    B, T, V = 40, 9, 4
    logits = torch.randn(B, T, V, generator=g)
    y = logits.argmax(-1).clone()
    flip = torch.rand(B, T, generator=g) < 0.15            # some greedy predictions made wrong
    y[flip] = (y[flip] + 1) % V
    y[torch.rand(B, T, generator=g) < 0.1] = -100
    mask = torch.rand(B, T, generator=g) < 0.3
    s = probe_stats(logits, y, mask)
    correct = scored = 0
    for b in range(B):
        pos = [t for t in range(T) if mask[b, t] and y[b, t] != -100]
        if pos:
            scored += 1
            correct += all(int(logits[b, t].argmax()) == int(y[b, t]) for t in pos)
    assert 0 < correct < scored
    assert s["correct"].item() == correct and s["scored"].item() == scored
