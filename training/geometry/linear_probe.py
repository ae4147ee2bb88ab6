"""Linear probes: multinomial logistic regression on fixed feature vectors (the probes of the modular-addition
study, scored on held-out data unlike skydancerosel/bubble-modadd's).

Why logistic regression, and how it is fitted:

* scikit-learn is not a dependency of the toolkit, so the probe is written out here. Class scores are
  s = W z + b on *whitened* features z = Pᵀ(x − μ): μ and the covariance come from the training set
  only, P = U Λ^(-1/2) over the covariance's eigen-directions, and directions whose variance is below
  ``REL_VAR_FLOOR`` of the largest (numerically constant ones, e.g. a slot that holds the same vector in
  every sequence) are dropped. Whitening keeps the class of linear functions of x; it makes the probe
  and its penalty independent of how the network scales its residual directions, and it makes the
  fit well conditioned (a label carried by a low-variance direction, as m is here, otherwise needs huge
  weights, many iterations and a weak penalty).
* The objective is the mean cross-entropy plus (λ/2)·‖W‖²_F (the bias is not penalised): strictly
  convex for λ > 0. It is minimised in float64 by ``torch.optim.LBFGS`` (strong-Wolfe line search) with
  the analytic gradient, from fixed starts (zeros, or the previous fit along the λ path), for at most
  ``MAX_ITER`` iterations: fits are deterministic on a CPU.
* λ is chosen without looking at the held-out set: the training set is split (seeded) into an inner
  fit part and a validation part, each λ of ``L2_GRID`` is fitted on the first and scored on the second,
  the best validation accuracy wins (ties go to the larger λ, the simpler probe), and the probe is then
  refitted with that λ on the whole training set.
* What a caller reports is the accuracy on a *disjoint* held-out set (:func:`probe_report`); the training
  accuracy is returned next to it, labelled as such, because a probe with as many weights as there are
  training points can score perfectly on noise (the reference reported training accuracy only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
MAX_ITER = 300
GRAD_TOL = 1e-6          # stop when every gradient entry of the (mean, O(1)) objective is below this
REL_VAR_FLOOR = 1e-8     # whitening drops directions with less variance than this fraction of the largest


@dataclass
class LinearProbe:
    """A fitted probe: whitening (mu, P: d × r) and the class scores' weights W (K × r) and bias b (K)."""

    mu: torch.Tensor
    P: torch.Tensor
    W: torch.Tensor
    b: torch.Tensor
    l2: float
    iterations: int

    def scores(self, X) -> torch.Tensor:
        return (_as64(X) - self.mu) @ self.P @ self.W.T + self.b

    def predict(self, X) -> torch.Tensor:
        return self.scores(X).argmax(-1)

    def accuracy(self, X, y) -> float:
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        if len(y) == 0:
            return float("nan")
        return float((self.predict(X) == y).double().mean())


def _as64(X) -> torch.Tensor:
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    return X.detach().to(torch.float64)


def whitener(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, P) with Pᵀ(x − μ) of identity covariance over the rows of X, on the directions kept."""
    mu = X.mean(0)
    Xc = X - mu
    ev, U = torch.linalg.eigh(Xc.T @ Xc / max(1, len(X)))
    scale = float(X.abs().max()) if X.numel() else 0.0
    floor = max(REL_VAR_FLOOR * float(ev.max()) if ev.numel() else 0.0, (1e-7 * scale) ** 2, 1e-300)
    keep = ev > floor                 # the second term: rounding noise of a feature that is really constant
    return mu, U[:, keep] / ev[keep].sqrt()


def fit_logistic(X, y, n_classes: int, l2: float, max_iter: int = MAX_ITER,
                 init: LinearProbe | None = None) -> LinearProbe:
    """The λ-penalised multinomial logistic regression of labels ``y`` (0..n_classes-1) on features ``X``.

    ``init``: a probe fitted on the same rows whose weights are the starting point (a warm start along a
    λ path); else zeros."""
    if l2 <= 0:
        raise ValueError(f"l2 must be positive (got {l2})")
    X = _as64(X)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if X.ndim != 2 or len(X) != len(y) or len(y) == 0:
        raise ValueError(f"need features (n, d) and n labels (got {tuple(X.shape)} and {len(y)})")
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    mu, P = (init.mu, init.P) if init is not None else whitener(X)
    Z = (X - mu) @ P
    n, r = Z.shape
    onehot = torch.zeros(n, n_classes, dtype=torch.float64)
    onehot[torch.arange(n), y] = 1.0
    W = init.W.clone() if init is not None else torch.zeros(n_classes, r, dtype=torch.float64)
    b = init.b.clone() if init is not None else torch.zeros(n_classes, dtype=torch.float64)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=GRAD_TOL,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():          # the objective and its analytic gradient (no autograd graph)
        s = torch.addmm(b, Z, W.T)
        lse = torch.logsumexp(s, 1, keepdim=True)
        loss = (lse[:, 0] - s.gather(1, y[:, None])[:, 0]).mean() + 0.5 * l2 * (W * W).sum()
        G = (torch.exp(s - lse) - onehot) / n                 # d(mean cross-entropy)/d(scores)
        W.grad = torch.addmm(W, G.T, Z, beta=l2)
        b.grad = G.sum(0)
        return loss
    with torch.no_grad():
        opt.step(closure)
    return LinearProbe(mu, P, W, b, float(l2), int(opt.state[W].get("n_iter", 0)))


def select_l2(X, y, n_classes: int, grid: Sequence[float] = L2_GRID, val_frac: float = 0.25, seed: int = 0) -> dict:
    """Validation accuracy of each λ in ``grid`` on a seeded split of the *training* data; the chosen λ."""
    X = _as64(X)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    n = len(y)
    n_val = int(round(val_frac * n))
    if n_val < 1 or n - n_val < 2:
        return {"chosen": float(max(grid)), "val_acc": {}}
    perm = torch.from_numpy(np.random.default_rng([seed, 0x5EED]).permutation(n))
    fit_i, val_i = perm[n_val:], perm[:n_val]
    accs, prev = {}, None
    for l2 in sorted(grid, reverse=True):      # strongest penalty first, each fit warm-started from the last
        prev = fit_logistic(X[fit_i], y[fit_i], n_classes, l2, init=prev)
        accs[float(l2)] = prev.accuracy(X[val_i], y[val_i])
    best = max(accs.values())
    chosen = max(l2 for l2, a in accs.items() if a == best)
    return {"chosen": chosen, "val_acc": {f"{k:g}": v for k, v in sorted(accs.items())}}


def fit_probe(X, y, n_classes: int, l2: float | None = None, grid: Sequence[float] = L2_GRID,
              seed: int = 0) -> tuple[LinearProbe, dict]:
    """A probe on all of (X, y), with λ = ``l2`` or, when None, chosen by :func:`select_l2`."""
    sel = {"chosen": float(l2), "val_acc": {}} if l2 is not None else select_l2(X, y, n_classes, grid, seed=seed)
    return fit_logistic(X, y, n_classes, sel["chosen"]), sel


def probe_report(X_train, y_train, X_test, y_test, n_classes: int, l2: float | None = None, seed: int = 0) -> dict:
    """Fit on the training set, score on the held-out set: held-out and training accuracy, chance levels.

    ``chance_uniform`` is 1/n_classes; ``chance_majority`` is the held-out accuracy of always answering the
    most frequent training label (the better of the two baselines when the classes are unbalanced).
    ``rank`` is the number of whitened directions the probe used.
    """
    probe, sel = fit_probe(X_train, y_train, n_classes, l2=l2, seed=seed)
    y_tr = np.asarray(y_train)
    y_te = np.asarray(y_test)
    majority = int(np.bincount(y_tr, minlength=n_classes).argmax())
    return {"test_acc": probe.accuracy(X_test, y_te), "train_acc": probe.accuracy(X_train, y_tr),
            "chance_uniform": 1.0 / n_classes, "chance_majority": float(np.mean(y_te == majority)),
            "l2": sel["chosen"], "l2_val_acc": sel["val_acc"], "iterations": probe.iterations,
            "rank": int(probe.P.shape[1]), "n_train": int(len(y_tr)), "n_test": int(len(y_te))}
