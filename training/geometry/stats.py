"""Small statistics shared by the analyses and studies: what counts as a finite number, Pearson's r, the
mean ± sd of a quantity over seeds, and the exponentially weighted mean of a curve (:func:`ewm`).

JSON results mix numbers, ``None`` and booleans; :func:`finite` accepts only real numbers that are finite
(a boolean is not a number here, although Python's ``bool`` is an ``int``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def finite(x: Any) -> bool:
    """True for an int or float that is finite; False for None, booleans, strings, NaN and ±inf."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's correlation of two equally long series; None with fewer than 3 points or a constant series."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) != len(y):
        raise ValueError(f"pearson needs series of equal length (got {len(x)} and {len(y)})")
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def mean_sd(values: Sequence[Any]) -> dict[str, float | int | None]:
    """{"mean", "sd", "n"} over the finite values (sd with ddof 1; None below two values; mean None with none)."""
    v = [float(x) for x in values if finite(x)]
    return {"mean": float(np.mean(v)) if v else None, "sd": float(np.std(v, ddof=1)) if len(v) > 1 else None,
            "n": len(v)}


# The smoothing of evasilverstein/symmetry-breaking-files' smoothed validation results: an exponentially
# weighted mean with α = 0.1 over the evaluation records. Its convention is not stated; :func:`ewm` uses pandas'
# default (``Series.ewm(alpha=0.1).mean()``, adjust=True). Over its 122–244 evaluations the final values of the
# two conventions differ by a weight of 0.9**n (< 1e-11); over a short curve (17 evaluations: 0.9**17 ≈ 0.17)
# they do not.
EWM_ALPHA = 0.1


def ewm(values: Sequence[float], alpha: float = EWM_ALPHA, adjust: bool = True) -> np.ndarray:
    """Exponentially weighted mean of a series, one value per input value.

    ``adjust=True`` (pandas' default): y_t = Σ_{i≤t} (1−α)^(t−i) x_i / Σ_{i≤t} (1−α)^(t−i), i.e. the weights are
    renormalised over the values seen so far. ``adjust=False``: the recursion y_0 = x_0, y_t = (1−α)·y_{t−1} + α·x_t.
    The index is the record, not the step: the records are assumed equally spaced. Values must be finite."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("ewm needs a one-dimensional series of finite values")
    if not 0 < alpha <= 1:
        raise ValueError(f"ewm: alpha must lie in (0, 1] (got {alpha})")
    out, num, den = np.empty_like(x), 0.0, 0.0
    for t, v in enumerate(x):
        if adjust:
            num, den = (1 - alpha) * num + v, (1 - alpha) * den + 1.0
            out[t] = num / den
        else:
            out[t] = v if t == 0 else (1 - alpha) * out[t - 1] + alpha * v
    return out


def smoothed_curve_summary(values: Sequence[float], alpha: float = EWM_ALPHA) -> dict[str, float | None]:
    """{"smoothed_final", "smoothed_min"}: the last value and the minimum of :func:`ewm` (None for no values)."""
    if len(values) == 0:
        return {"smoothed_final": None, "smoothed_min": None}
    y = ewm(values, alpha)
    return {"smoothed_final": float(y[-1]), "smoothed_min": float(y.min())}
