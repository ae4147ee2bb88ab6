"""Small statistics shared by the analyses and studies: what counts as a finite number, Pearson's r, and the
mean ± sd of a quantity over seeds.

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
