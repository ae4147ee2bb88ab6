"""The modular-addition study's commutator-series and SAE-vs-m aggregation and verdicts, checked by hand on
made-up samples (no training): the (m_A, m_B) design and cells, the per-checkpoint spike series, and the
verdict rules of the headline."""
import numpy as np
import pytest

from training.geometry.stats import pearson
from training.geometry.surrogates import spike_index
from training.studies import modadd_study as ms
from training.studies.modadd_analysis import cell_design, cell_summary, spike_summary


def _sample(ma, mb, D, cos=0.1, ga=1.0, gb=2.0, eta=1e-3):
    return {"m_a": ma, "m_b": mb, "D": D, "grad_cos": cos, "g_a_norm": ga, "g_b_norm": gb,
            "delta_norm": D * eta * eta * ga * gb, "loss_a": 1.0, "loss_b": 1.0}


def test_cell_design_is_balanced_and_fills_every_cell():
    ms_ = [1, 2, 3]
    d = cell_design(ms_, 20, seed=0)
    counts = {c: d.count(c) for c in {(a, b) for a in ms_ for b in ms_}}
    assert len(d) == 20 and len(counts) == 9 and max(counts.values()) - min(counts.values()) <= 1
    assert d == cell_design(ms_, 20, seed=0) and d != cell_design(ms_, 20, seed=1)
    assert len(set(cell_design(ms_, 5, seed=0))) == 5                  # fewer samples than cells: distinct cells


def test_cell_summary_by_hand():
    rows = [{"samples": [_sample(1, 1, 4.0, 0.5), _sample(1, 2, 8.0, 0.1), _sample(2, 1, 6.0, 0.2)]},
            {"samples": [_sample(1, 1, 2.0, 0.7), _sample(1, 2, 10.0, 0.3), _sample(1, 2, 12.0, -0.1)]}]
    c = cell_summary(rows, [1, 2], n_perm=500, seed=0)
    assert c["n"] == [[2, 3], [1, 0]] and c["empty"] == [[2, 2]] and c["n_samples"] == 6
    assert c["D_median"] == [[3.0, 10.0], [6.0, None]]
    assert c["grad_cos_median"][0] == pytest.approx([0.6, 0.1]) and c["grad_cos_median"][1][0] == pytest.approx(0.2)
    t = c["same_vs_cross_D"]
    assert t["a"] == 3.0 and t["b"] == np.median([8.0, 6.0, 10.0, 12.0]) and t["diff"] == 3.0 - 9.0
    assert t["stratified"] and t["n_a"] == 2 and t["n_b"] == 4 and 0 < t["p_value"] <= 1


def test_spike_summary_by_hand():
    rng = np.random.default_rng(0)
    n, eta = 12, 1e-3
    rows = []
    for c in range(n):
        Ds = rng.uniform(1.0, 5.0, size=3) * (1 + c)
        loss = 2.0 - 0.1 * c
        rows.append({"step": 10 * (c + 1), "loss": loss, "loss_prev": loss + rng.uniform(0.01, 0.2),
                     "samples": [_sample(1, 1, float(D), ga=1.0 + c, gb=2.0) for D in Ds]})
    s = spike_summary(rows, eta, window=5, factor=2.0, n_surrogates=200, seed=0)
    D = np.array([np.median([z["D"] for z in r["samples"]]) for r in rows])
    fl = np.array([abs(r["loss"] - r["loss_prev"]) for r in rows])
    gg = np.array([(1.0 + c) * 2.0 for c in range(n)])
    np.testing.assert_allclose(s["D"], D)
    np.testing.assert_allclose(s["loss_fluctuation"], fl)
    np.testing.assert_allclose(s["grad_norm_product"], gg)
    np.testing.assert_allclose(s["delta_over_eta2"], D * gg)
    assert s["D_vs_loss"]["r"] == pytest.approx(pearson(spike_index(D), spike_index(fl)))
    assert s["D_vs_inverse_grad_norms"]["r"] == pytest.approx(pearson(spike_index(D), spike_index(1 / gg)))
    assert s["spikes"]["count"] == int((spike_index(D) > np.log(2.0)).sum()) and s["spikes"]["n"] == n
    assert s["levels"]["levels"]["r"] == pytest.approx(pearson(D, fl))
    short = spike_summary(rows[:3], eta)
    assert "reason" in short and "D_vs_loss" not in short


def _claims(**per_role):
    runs = {role: {"config": {"modadd_classes": 8}, **res} for role, res in per_role.items()}
    acc = {role: {"acc": 0.9} for role in per_role}
    return ms._Claims(runs, acc, 1 / 8)


def _spikes(r, p, r_norm=0.0, p_norm=0.5):
    coup = lambda rr, pp: {"r": rr, "p_phase": pp, "p_shift": pp, "n": 20}    # noqa: E731
    return {"commutator_series": {"spikes": {
        "D": [1.0, 2.0], "window": 5, "factor": 2.0, "D_vs_loss": coup(r, p),
        "D_vs_inverse_grad_norms": coup(r_norm, p_norm), "delta_vs_loss": coup(0.0, 0.9),
        "levels": {"levels": {"r": 0.1}, "first_differences": {"r": 0.0}, "verdict_input": 0.5},
        "spikes": {"count": 1, "count_second_half": 1, "null_mean_count": 0.8, "n": 20}}}}


def test_commutator_spike_verdicts():
    v = ms._commutator_spikes(_claims(attn=_spikes(0.1, 0.6), attn_seed2=_spikes(-0.2, 0.4)))
    assert v["verdict"].startswith("confirmed: weak") and "within the surrogate null in every seed" in v["verdict"]
    assert v["n_seeds"] == 2 and v["r_D_vs_loss"] == [0.1, -0.2]
    v = ms._commutator_spikes(_claims(attn=_spikes(0.1, 0.01), attn_seed2=_spikes(-0.2, 0.4)))
    assert "beyond the surrogate null in 1 of 2 seeds" in v["verdict"]
    v = ms._commutator_spikes(_claims(attn=_spikes(0.7, 0.001), attn_seed2=_spikes(0.2, 0.4)))
    assert v["verdict"].startswith("not confirmed") and "1 of 2" in v["verdict"]
    v = ms._commutator_spikes(_claims(attn=_spikes(0.5, 0.2)))
    assert v["verdict"].startswith("inconclusive") and v["n_seeds"] == 1
    v = ms._commutator_spikes(_claims(attn=_spikes(0.1, 0.6, r_norm=0.8, p_norm=0.001)))
    assert "normalisation" in v["verdict"]
    assert ms._commutator_spikes(_claims(attn={})) is None


def _sae_m(n_sig, n_live, r_sig, r_live):
    t = lambda k, n: {"n_significant": k, "n_live": n, "null_mean_count": 0.05, "max_abs_r": 0.5,    # noqa: E731
                      "threshold": 0.1, "top": [{"r": 0.5}], "alpha": 0.05, "r": [0.6, -0.55, 0.2, None]}
    return {"sae_m": {"stages": [{"step": 1, "sae": t(0, 1), "random": t(0, 1)},
                                 {"step": 9, "sae": t(n_sig, n_live), "random": t(r_sig, r_live)}]}}


def test_sae_m_verdicts_use_the_last_stage_and_the_random_control():
    v = ms._sae_m(_claims(attn=_sae_m(3, 100, 0, 100), attn_seed2=_sae_m(2, 90, 1, 100)))
    assert v["verdict"].startswith("confirmed: a few latents") and "more often than random" in v["verdict"]
    assert v["n_significant"] == [3, 2] and v["steps"] == [9, 9] and v["n_seeds"] == 2 and v["n_strong"] == [2, 2]
    v = ms._sae_m(_claims(attn=_sae_m(40, 70, 60, 90)))
    assert v["verdict"].startswith("not confirmed as 'a small number'") and "random directions" in v["verdict"]
    assert "correlate as often" in v["verdict"]
    v = ms._sae_m(_claims(attn=_sae_m(0, 70, 0, 90)))
    assert v["verdict"].startswith("not confirmed: no latent")
    v = ms._sae_m(_claims(attn=_sae_m(0, 70, 0, 90), attn_seed2=_sae_m(3, 70, 0, 90)))
    assert v["verdict"].startswith("inconclusive")


def test_commutator_cell_verdict_counts_seeds():
    def cells(p_d, p_c):
        t = lambda p: {"a": 1.0, "b": 2.0, "diff": -1.0, "p_value": p}    # noqa: E731
        return {"commutator_series": {"cells": {"n_samples": 80, "empty": [], "same_vs_cross_D": t(p_d),
                                                "same_vs_cross_grad_cos": t(p_c)}}}
    v = ms._commutator_cells(_claims(attn=cells(0.5, 0.01), attn_seed2=cells(0.2, 0.03)))
    assert "D differs between same-m and cross-m pairs in 0 of 2 seeds" in v["verdict"]
    assert "cos(g_A, g_B) differs between same-m and cross-m pairs in 2 of 2 seeds" in v["verdict"]
