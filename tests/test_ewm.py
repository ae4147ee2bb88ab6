"""The exponentially weighted mean of a validation curve (training/geometry/stats.py: ewm, smoothed_curve_summary)
against pandas' Series.ewm and a direct weighted sum, and its entries in the symmetry study's table."""
import math

import numpy as np
import pytest

from training.geometry.stats import EWM_ALPHA, ewm, smoothed_curve_summary
from training.studies import symmetry_study as ss


def direct(x, alpha, adjust):
    """Each output as an explicit weighted sum of the inputs so far (no recursion)."""
    out = []
    for t in range(len(x)):
        if adjust:
            w = np.array([(1 - alpha) ** (t - i) for i in range(t + 1)])
        else:   # x_0 keeps the weight (1−α)^t of everything before it, x_i (i ≥ 1) gets α(1−α)^(t−i)
            w = np.array([(1 - alpha) ** t] + [alpha * (1 - alpha) ** (t - i) for i in range(1, t + 1)])
        out.append(float(w @ np.asarray(x[:t + 1])) / float(w.sum()))
    return np.array(out)


@pytest.mark.parametrize("alpha", [EWM_ALPHA, 0.35, 1.0])
@pytest.mark.parametrize("adjust", [True, False])
def test_ewm_matches_pandas_and_a_direct_sum(alpha, adjust):
    x = np.random.default_rng(3).normal(4.0, 0.3, 23)
    got = ewm(x, alpha, adjust=adjust)
    np.testing.assert_allclose(got, direct(x, alpha, adjust), rtol=1e-12)
    pd = pytest.importorskip("pandas")
    np.testing.assert_allclose(got, pd.Series(x).ewm(alpha=alpha, adjust=adjust).mean().to_numpy(), rtol=1e-12)


def test_ewm_known_values_and_bad_input():
    # adjust=True on [1, 0]: (0.9·1 + 0)/(0.9 + 1); the recursion: 0.9·1 + 0.1·0
    assert ewm([1.0, 0.0])[1] == pytest.approx(0.9 / 1.9, rel=1e-15)
    assert ewm([1.0, 0.0], adjust=False)[1] == pytest.approx(0.9, rel=1e-15)
    assert ewm([2.5] * 7).tolist() == pytest.approx([2.5] * 7, rel=1e-15)       # a constant stays constant
    assert smoothed_curve_summary([]) == {"smoothed_final": None, "smoothed_min": None}
    s = smoothed_curve_summary([3.0, 1.0, 2.0])
    y = direct([3.0, 1.0, 2.0], EWM_ALPHA, True)
    assert s == {"smoothed_final": pytest.approx(y[-1]), "smoothed_min": pytest.approx(y.min())}
    for bad in ([1.0, math.nan], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="finite"):
            ewm(bad)
    with pytest.raises(ValueError, match="alpha"):
        ewm([1.0], alpha=0.0)


def test_symmetry_table_carries_the_smoothed_losses():
    def run(final, sm):
        return {"state": "completed", "final_val_loss": final, "best_val_loss": final - 0.1,
                "smoothed_final_val_loss": sm, "smoothed_min_val_loss": sm - 0.05}
    runs = {"ecd_sym": run(4.0, 4.2), "ecd_bq": run(3.9, 4.0), "adamw_sym": run(3.5, 3.6), "adamw_bq": run(3.5, 3.7)}
    rows = ss.summary_rows(runs)
    assert [(r["smoothed_final_val_loss"], r["smoothed_min_val_loss"]) for r in rows] == \
        [(4.2, pytest.approx(4.15)), (4.0, pytest.approx(3.95)), (3.6, pytest.approx(3.55)), (3.7, pytest.approx(3.65))]
    d = ss.deltas(rows)
    assert d["ecd"]["smoothed_final"] == pytest.approx(-0.2) and d["adamw"]["smoothed_final"] == pytest.approx(0.1)
    assert d["ecd"]["seed_smoothed"] == pytest.approx(3.984 - 4.024)      # the repository's smoothed ECD runs
    assert "seed_smoothed" not in d["adamw"]                                # it has no smoothed AdamW bQ-only run
