"""Permutation nulls for two questions the modular-addition study asks of many numbers at once.

* :func:`max_correlation_test` -- which of K features (SAE latents, random directions) correlate with a
  numeric label (the marker count m)? Pearson's r of every feature with the label, and a family-wise
  null from the maximum |r| over all K features with the labels permuted across exchangeable units
  (``groups``: rows of one unit -- e.g. the slots of one sequence -- keep a common label and move
  together). A feature's family-wise p-value is ``(1 + #{max_null ≥ |r_j|}) / (1 + n_perm)``, so the
  chance that *any* feature reaches p < α under the null is at most α whatever K is and however the
  features covary. The count of features beyond the null's (1 − α) quantile is reported beside the
  same count under the null (its mean over the permutations, at most α by construction).
  A feature that is constant over the rows (an SAE latent that never fires) has no correlation: its r
  is None, it counts as 0 in the maximum, and ``n_constant`` says how many there were.
* :func:`permuted_rank_correlations` -- Spearman's ρ of many random permutations of y against x at once
  (:func:`row_correlations` of ranks; the permutation null of a rank correlation, used by the modular-addition
  early-diagnostics study and the ECD η study).
* :func:`group_difference_test` -- is a statistic (default: the median) of the values in group A
  different from that in group B? Difference of the statistic, with a two-sided permutation p-value
  from shuffling the A/B labels, within strata when ``strata`` is given (e.g. the checkpoint a
  commutator sample was measured at, so that a trend over training cannot masquerade as a group effect).

Every draw comes from ``np.random.default_rng([seed, salt])`` with a salt of each function.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from training.core.errors import UserError

_TIE_ATOL = 1e-12           # a null value within this of the observed counts as "at least as large" (conservative)


def row_correlations(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching rows (NaN where a row is constant)."""
    A = A - A.mean(-1, keepdims=True)
    B = B - B.mean(-1, keepdims=True)
    den = np.sqrt((A * A).sum(-1) * (B * B).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (A * B).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def permuted_rank_correlations(rx: np.ndarray, ry: np.ndarray, n: int, rng) -> np.ndarray:
    """ρ of ``n`` random permutations of y against x, from their ranks ``rx``, ``ry`` (a permutation of y permutes
    its ranks, so the ranks are computed once)."""
    idx = np.argsort(rng.random((n, len(ry))), axis=1)
    return row_correlations(np.broadcast_to(rx, idx.shape), ry[idx])


def _label_units(labels: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(unit index of every row, label of every unit); a unit's rows must share one label."""
    if groups is None:
        return np.arange(len(labels)), labels
    uniq, inv = np.unique(groups, return_inverse=True)
    unit_label = np.full(len(uniq), np.nan)
    unit_label[inv] = labels
    if not np.array_equal(unit_label[inv], labels):
        raise UserError("every row of one group must carry the same label (groups are the units that are permuted)")
    return inv, unit_label


def _standardise_columns(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns centred and scaled to unit norm; (matrix, mask of the non-constant columns)."""
    Zc = Z - Z.mean(0)
    norm = np.sqrt((Zc ** 2).sum(0))
    scale = np.maximum(np.abs(Z).max(0), 1e-300)
    live = norm > 1e-12 * scale * np.sqrt(len(Z))
    Zc[:, live] /= norm[live]
    Zc[:, ~live] = 0.0
    return Zc, live


def correlations(Z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson's r of every column of Z (n × K) with ``labels`` (n,); (r with NaN for constant columns, live mask)."""
    Zs, live = _standardise_columns(np.asarray(Z, dtype=float))
    y = np.asarray(labels, dtype=float)
    yc = y - y.mean()
    ny = np.sqrt(yc @ yc)
    if ny == 0:
        raise UserError("the label is constant, so no correlation with it is defined")
    r = (yc / ny) @ Zs
    r[~live] = np.nan
    return r, live


def max_correlation_test(Z: Any, labels: Any, groups: Any = None, n_perm: int = 1000, alpha: float = 0.05,
                         seed: int = 0, top: int = 10) -> dict:
    """Per-feature Pearson r with ``labels``, family-wise permutation p-values (max-|r| null) and counts.

    Returns ``r`` (list, None for constant features), ``p_fwer`` (None likewise), ``top`` (the ``top``
    features by |r|: index, r, p_fwer), ``max_abs_r``, ``threshold`` (the null's (1 − α) quantile of max |r|),
    ``n_significant`` (p_fwer < α), ``null_mean_count`` (features beyond ``threshold`` per permutation,
    averaged), ``null_max_abs_r`` (mean and sd), ``n_live``, ``n_constant``, ``n_rows``, ``n_units``, ``n_perm``.
    """
    Z = np.asarray(Z, dtype=float)
    y = np.asarray(labels, dtype=float)
    if Z.ndim != 2 or y.ndim != 1 or len(Z) != len(y):
        raise UserError(f"features must be (n, K) and labels (n,) (got {Z.shape} and {y.shape})")
    if not (np.all(np.isfinite(Z)) and np.all(np.isfinite(y))):
        raise UserError("features and labels must be finite numbers")
    if isinstance(n_perm, bool) or int(n_perm) < 1:
        raise UserError(f"the number of permutations must be a positive integer (got {n_perm!r})")
    unit, unit_label = _label_units(y, None if groups is None else np.asarray(groups))
    r, live = correlations(Z, y)
    Zs, _ = _standardise_columns(Z)
    rng = np.random.default_rng([seed, 7331])
    perms = np.stack([rng.permutation(unit_label)[unit] for _ in range(int(n_perm))])     # (n_perm, n)
    perms = perms - perms.mean(1, keepdims=True)
    perms /= np.sqrt((perms ** 2).sum(1, keepdims=True))
    null_abs = np.abs(perms @ Zs)                                                        # (n_perm, K)
    null_max = null_abs.max(1)
    absr = np.where(live, np.abs(np.nan_to_num(r)), 0.0)
    p = (1 + (null_max[None, :] >= absr[:, None] - _TIE_ATOL).sum(1)) / (1 + int(n_perm))
    thr = float(np.quantile(null_max, 1 - alpha))
    order = np.argsort(-absr)[:top]
    plain = lambda a: [None if not live[j] else float(a[j]) for j in range(len(a))]     # noqa: E731
    return {"r": plain(r), "p_fwer": plain(p), "max_abs_r": float(absr.max()),
            "top": [{"index": int(j), "r": float(r[j]), "p_fwer": float(p[j])} for j in order if live[j]],
            "threshold": thr, "alpha": alpha, "n_significant": int(((p < alpha) & live).sum()),
            "null_mean_count": float((null_abs > thr).sum(1).mean()),
            "null_max_abs_r": {"mean": float(null_max.mean()),
                               "sd": float(null_max.std(ddof=1)) if n_perm > 1 else 0.0},
            "n_live": int(live.sum()), "n_constant": int((~live).sum()), "n_rows": int(len(y)),
            "n_units": int(len(unit_label)), "n_perm": int(n_perm)}


def group_difference_test(values: Sequence[float], in_a: Sequence[bool], strata: Sequence[Any] | None = None,
                          n_perm: int = 2000, seed: int = 0,
                          stat: Callable[[np.ndarray], float] = np.median) -> dict:
    """stat(values in A) − stat(values in B) and its two-sided permutation p-value (labels shuffled within strata).

    Returns ``a``, ``b`` (the statistic in each group), ``n_a``, ``n_b``, ``diff``, ``p_value``,
    ``null_sd``, ``n_perm``, ``stratified``; with an empty group every number is None and ``reason`` says why.
    """
    v = np.asarray(values, dtype=float)
    a = np.asarray(in_a, dtype=bool)
    if v.shape != a.shape or v.ndim != 1:
        raise UserError(f"values and group labels must be 1-D of the same length (got {v.shape} and {a.shape})")
    out: dict = {"n_a": int(a.sum()), "n_b": int((~a).sum()), "n_perm": int(n_perm), "stratified": strata is not None}
    if not a.any() or a.all():
        return {**out, "a": None, "b": None, "diff": None, "p_value": None, "null_sd": None,
                "reason": "one group is empty"}
    obs = float(stat(v[a])) - float(stat(v[~a]))
    rng = np.random.default_rng([seed, 9173])
    cells = [np.arange(len(v))] if strata is None else \
        [np.flatnonzero(np.asarray(strata, dtype=object) == s) for s in dict.fromkeys(strata)]
    null = np.empty(int(n_perm))
    for i in range(int(n_perm)):
        lab = a.copy()
        for c in cells:
            lab[c] = rng.permutation(a[c])
        null[i] = float(stat(v[lab])) - float(stat(v[~lab]))
    p = (1 + int((np.abs(null) >= abs(obs) - _TIE_ATOL).sum())) / (1 + int(n_perm))
    return {**out, "a": float(stat(v[a])), "b": float(stat(v[~a])), "diff": obs, "p_value": p,
            "null_sd": float(null.std(ddof=1)) if n_perm > 1 else 0.0, "reason": None}
