"""Is a correlation between two short, smooth series across checkpoints evidence of anything?

Most quantities logged per checkpoint change slowly: a backbone residual norm ‖r(t)‖, an OOD probe
accuracy p_ood(t), a learning rate. Two such series, even when generated independently, share little
more than "both drift", and with 20–30 checkpoints that is enough for |corr| ≥ 0.73 in roughly 12–28 %
of independent draws. Pearson's textbook p-value assumes independent points and is therefore far too
optimistic here; a large r on levels says nothing by itself. A published illustration: on a reference
run, corr(‖r‖, p_ood) was +0.85 on one half of training and −0.73 on the other, and +0.15 on first
differences -- the "coupling" was the shared trend.

This module judges such a correlation in two ways, and is the one place in the toolkit that does so.

**Variants.** The correlation is computed on the levels, on first differences (which remove a shared
drift and most of the autocorrelation) and on the residuals of a least-squares line in time
(:func:`detrend`). A genuine coupling of fluctuations survives differencing; a shared trend does not.

**Surrogate test.** Only ``y`` is resampled; ``x`` stays as observed. Two surrogate families keep what
makes smooth series correlate by chance and destroy any alignment with ``x``:

* *circular shift* -- ``y`` rotated by a uniformly random nonzero offset (keeps the series exactly,
  including its autocorrelation, up to the wrap-around seam);
* *phase randomisation* (Fourier-transform surrogate) -- the discrete Fourier transform of ``y`` keeps
  its amplitude at every frequency while the phases are replaced by independent uniform ones; the
  zero-frequency term (the mean) and, for even lengths, the Nyquist term stay real and unchanged, so
  that the inverse transform is real. Each surrogate has the same mean, the same amplitude spectrum and
  hence the same circular autocorrelation as ``y``.

With ``n_surrogates`` draws from a numpy Generator seeded by ``seed``, the two-sided p-value is
``(1 + #{|r_surr| ≥ |r_obs|}) / (1 + n_surrogates)``: never zero, and exact under the null that ``y`` is
exchangeable with its surrogates. At least 1000 surrogates are the default (the smallest possible p is
then about 0.001).

:func:`coupling` runs all variants with both methods and names the one number a claim about coupling
should rest on: the phase-surrogate p-value of the first differences (``verdict_input``; the claims
ledger's rule is "surrogate p < 0.05 on differences").

**Spikes.** :func:`spike_index` measures how far a positive series jumps above its local level:
log y(t) − log of the median of y over a centred window of ``window`` points (truncated at the ends). It
removes a slow trend (a defect that grows over training, a loss that falls) so that what two spike
indices share is their excursions, not their drifts; a point more than ``factor`` times its rolling
median is a *spike* (index > log factor).

Caveats: both surrogate families treat the points as evenly spaced in time (checkpoints at a fixed
interval); first differences are plain differences, not divided by the step gaps; the detrending line
is fitted against the given steps. Pearson's r itself is :func:`training.geometry.stats.pearson`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from training.core.errors import UserError
from training.geometry.stats import finite, pearson

METHODS = ("phase", "shift")
VARIANTS = ("levels", "first_differences", "detrended")
MIN_POINTS = 6                        # fewest checkpoints coupling() will judge (5 differences)
_CONSTANT_RTOL = 1e-12                # a series whose spread is below this fraction of its magnitude is constant
_TIE_ATOL = 1e-12                     # |r_surr| within this of |r_obs| counts as "at least as large" (conservative)


def _series(y: Any, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D float array of at least 3 finite numbers, or a UserError saying what is wrong."""
    try:
        a = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a sequence of numbers") from None
    if a.ndim != 1:
        raise UserError(f"{name} must be one-dimensional (got shape {a.shape})")
    if len(a) < 3:
        raise UserError(f"{name} needs at least 3 points for a surrogate test (got {len(a)})")
    if not np.all(np.isfinite(a)):
        raise UserError(f"{name} contains NaN or infinite values ({int(np.sum(~np.isfinite(a)))} of {len(a)})")
    return a


def _is_constant(a: np.ndarray) -> bool:
    return float(np.ptp(a)) <= _CONSTANT_RTOL * float(np.max(np.abs(a)))


def _count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UserError(f"the number of surrogates must be a positive integer (got {n!r})")
    return int(n)


def circular_shift_surrogates(y: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations of ``y`` by offsets drawn uniformly from 1..len(y)-1; shape (n, len(y))."""
    y = _series(y)
    n = _count(n)
    L = len(y)
    offsets = rng.integers(1, L, size=n)
    return y[(np.arange(L)[None, :] + offsets[:, None]) % L]


def phase_randomised_surrogates(y: Sequence[float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` Fourier-transform surrogates of ``y`` (same mean and amplitude spectrum, random phases); (n, len(y))."""
    y = _series(y)
    n = _count(n)
    L = len(y)
    spectrum = np.fft.rfft(y)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, len(spectrum)))
    phases[:, 0] = 0.0                          # the mean stays as it is
    if L % 2 == 0:
        phases[:, -1] = 0.0                     # the Nyquist term must stay real
    return np.fft.irfft(spectrum[None, :] * np.exp(1j * phases), n=L, axis=1)


def detrend(y: Sequence[float], t: Sequence[float] | None = None) -> np.ndarray:
    """Residuals of ``y`` after its least-squares line in ``t`` (default 0, 1, 2, ...).

    A series that is a straight line up to rounding gives exact zeros, so that it is recognised as constant.
    """
    y = np.asarray(y, dtype=float)
    t = np.arange(len(y), dtype=float) if t is None else np.asarray(t, dtype=float)
    if t.shape != y.shape or y.ndim != 1:
        raise UserError(f"detrend needs y and t of the same 1-D length (got {y.shape} and {t.shape})")
    if len(y) < 2:
        return y - y.mean() if len(y) else y.copy()
    tc = t - t.mean()
    yc = y - y.mean()
    denom = float(tc @ tc)
    resid = yc - (tc @ yc / denom) * tc if denom > 0 else yc
    scale = float(np.max(np.abs(yc))) if len(yc) else 0.0
    if float(np.max(np.abs(resid))) <= 1e-10 * scale:
        return np.zeros_like(resid)
    return resid


def first_differences(y: Sequence[float]) -> np.ndarray:
    """y[1:] - y[:-1] (one point shorter)."""
    return np.diff(np.asarray(y, dtype=float))


def rolling_median(y: Sequence[float], window: int) -> np.ndarray:
    """Median of ``y`` over the centred window of ``window`` (odd) points around each point, truncated at the ends."""
    y = np.asarray(y, dtype=float)
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise UserError(f"the rolling window must be a positive odd number of points (got {window!r})")
    h = window // 2
    return np.array([np.median(y[max(0, i - h):i + h + 1]) for i in range(len(y))])


def spike_index(y: Sequence[float], window: int = 5) -> np.ndarray:
    """log y(t) − log rolling_median(y, window)(t) for a positive series (0: at its local level)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 1 or not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise UserError("a spike index needs a 1-D series of positive finite numbers")
    return np.log(y) - np.log(rolling_median(y, window))


def _correlations(x: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Pearson's r of ``x`` with every row of ``Y`` in one call of numpy's corrcoef (the call stats.pearson makes)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.corrcoef(x[None, :], Y)[0, 1:]


def surrogate_correlation(x: Sequence[float], y: Sequence[float], n_surrogates: int = 1000, seed: int = 0,
                          method: str = "phase") -> dict[str, Any]:
    """Pearson's r of ``x`` and ``y`` with a two-sided surrogate p-value from surrogates of ``y``.

    The surrogates are drawn as ``<family>_surrogates(y, n_surrogates, np.random.default_rng(seed))``.
    Returns ``{"r", "p_value", "n_surrogates", "method", "n"}``. Raises UserError for unequal lengths,
    NaN/inf, a constant series, fewer than 3 points or an unknown method.
    """
    if method not in METHODS:
        raise UserError(f"unknown surrogate method {method!r}; choose one of {', '.join(METHODS)}")
    x, y = _series(x, "x"), _series(y, "y")
    if len(x) != len(y):
        raise UserError(f"x and y must have the same length (got {len(x)} and {len(y)})")
    for name, a in (("x", x), ("y", y)):
        if _is_constant(a):
            raise UserError(f"{name} is constant, so its correlation is undefined")
    n_surrogates = _count(n_surrogates)
    r = pearson(x, y)
    if r is None:                                # unreachable after the checks above; kept as a guard
        raise UserError("the correlation of x and y is undefined")
    rng = np.random.default_rng(seed)
    make = phase_randomised_surrogates if method == "phase" else circular_shift_surrogates
    r_surr = _correlations(x, make(y, n_surrogates, rng))
    exceed = int(np.sum(np.abs(r_surr) >= abs(r) - _TIE_ATOL))   # NaN rows never count
    return {"r": r, "p_value": (1 + exceed) / (1 + n_surrogates), "n_surrogates": n_surrogates,
            "method": method, "n": len(x)}


def _usable(v: Any) -> bool:
    """A finite number, numpy scalars included (stats.finite alone accepts only Python int and float)."""
    return finite(v) or (isinstance(v, (np.integer, np.floating)) and bool(np.isfinite(v)))


def _plain(v: Any) -> int | float:
    """A step as a JSON-able Python number (numpy integers and integral floats become int)."""
    v = float(v)
    return int(v) if v.is_integer() else v


def _empty(n: int, steps: list | None, n_surrogates: int, seed: int, reason: str) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "steps": steps, "n_surrogates": n_surrogates, "seed": seed}
    for v in VARIANTS:
        out[v] = {"r": None, "p_phase": None, "p_shift": None}
    out.update(verdict_input=None, note="not judged: " + reason, reason=reason)
    return out


def coupling(steps: Sequence[float], x: Sequence[Any], y: Sequence[Any], n_surrogates: int = 1000,
             seed: int = 0) -> dict[str, Any]:
    """Correlation of two per-checkpoint series on levels, first differences and detrended residuals.

    Checkpoints are put in step order; a checkpoint where ``x`` or ``y`` is not a finite number (None in a
    JSON log, NaN) is left out. Each variant gets ``{"r", "p_phase", "p_shift"}``; ``verdict_input`` is the
    phase-surrogate p-value of the first differences. With fewer than 6 usable points, or a series that is
    constant, every number is None and ``reason`` says why (nothing is raised); otherwise ``reason`` is None.
    A variant that is undefined (e.g. constant differences of a straight line) has None entries.
    """
    n_surrogates = _count(n_surrogates)
    if not (len(steps) == len(x) == len(y)):
        raise UserError(f"steps, x and y must have the same length (got {len(steps)}, {len(x)} and {len(y)})")
    keep = [i for i in range(len(steps)) if _usable(steps[i]) and _usable(x[i]) and _usable(y[i])]
    keep.sort(key=lambda i: steps[i])
    s = np.array([steps[i] for i in keep], dtype=float)
    xs = np.array([x[i] for i in keep], dtype=float)
    ys = np.array([y[i] for i in keep], dtype=float)
    n = len(keep)
    span = [_plain(steps[keep[0]]), _plain(steps[keep[-1]])] if n else None
    if n < MIN_POINTS:
        return _empty(n, span, n_surrogates, seed,
                      f"{n} usable points; at least {MIN_POINTS} are needed to judge a coupling")
    if len(np.unique(s)) != n:
        raise UserError("steps must not repeat")
    for name, a in (("x", xs), ("y", ys)):
        if _is_constant(a):
            return _empty(n, span, n_surrogates, seed, f"{name} is constant over the checkpoints")

    out: dict[str, Any] = {"n": n, "steps": span, "n_surrogates": n_surrogates, "seed": seed}
    series = {"levels": (xs, ys), "first_differences": (first_differences(xs), first_differences(ys)),
              "detrended": (detrend(xs, s), detrend(ys, s))}
    for variant, (a, b) in series.items():
        entry: dict[str, Any] = {"r": None, "p_phase": None, "p_shift": None}
        if not (_is_constant(a) or _is_constant(b)):
            for method in METHODS:
                res = surrogate_correlation(a, b, n_surrogates=n_surrogates, seed=seed, method=method)
                entry["r"] = res["r"]
                entry[f"p_{method}"] = res["p_value"]
        out[variant] = entry
    p = out["first_differences"]["p_phase"]
    out["verdict_input"] = p
    if p is None:
        out["note"] = "first differences are constant; no verdict on coupling"
        out["reason"] = "a series has constant first differences"
    else:
        lv = out["levels"]["r"]
        out["note"] = (f"r = {lv:+.2f} on levels, {out['first_differences']['r']:+.2f} on differences "
                       f"(phase-surrogate p = {p:.3g}); judge coupling by the differences, not the levels")
        out["reason"] = None
    return out


def spike_coupling(x: Sequence[float], y: Sequence[float], window: int = 5, factor: float = 2.0,
                   n_surrogates: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pearson's r of the spike indices of two positive series, with phase- and shift-surrogate p-values.

    The surrogates resample the spike index of ``y`` (the index removes each series' slow trend first).
    Returns ``{"r", "p_phase", "p_shift", "n", "window", "factor", "spikes_x", "spikes_y"}`` (spikes: points
    more than ``factor`` times their rolling median); r and the p-values are None, with ``reason``, when an
    index is constant or there are fewer than ``MIN_POINTS`` points.
    """
    sx, sy = spike_index(x, window), spike_index(y, window)
    out: dict[str, Any] = {"n": len(sx), "window": window, "factor": factor,
                           "spikes_x": int((sx > np.log(factor)).sum()), "spikes_y": int((sy > np.log(factor)).sum()),
                           "r": None, "p_phase": None, "p_shift": None, "reason": None}
    if len(sx) != len(sy):
        raise UserError(f"x and y must have the same length (got {len(sx)} and {len(sy)})")
    if len(sx) < MIN_POINTS:
        return {**out, "reason": f"{len(sx)} points; at least {MIN_POINTS} are needed"}
    if _is_constant(sx) or _is_constant(sy):
        return {**out, "reason": "a spike index is constant"}
    for method in METHODS:
        res = surrogate_correlation(sx, sy, n_surrogates=n_surrogates, seed=seed, method=method)
        out["r"], out[f"p_{method}"] = res["r"], res["p_value"]
    return out
