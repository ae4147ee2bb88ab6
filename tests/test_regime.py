"""The regime calculator: integrated weight decay and the other knobs, against closed forms and the paper's values."""
import math

import pytest

from training.core.config import preset
from training.core.regime import flags, integrated_wd, paper_regime, regime, sigma_eval, wd_for


def test_constant_learning_rate_closed_form():
    cfg = preset("test").replace(warmup=0, lr_floor=1.0, steps=40, lr=2e-3, wd=0.3)
    assert integrated_wd(cfg) == pytest.approx(0.3 * 2e-3 * 40, rel=1e-12)


def test_warmup_then_cosine_closed_form():
    """Σ lr for a linear warm-up of W steps then a full cosine (no floor) ≈ lr·(W/2 + (T − W)/2)."""
    cfg = preset("test").replace(warmup=100, lr_floor=0.0, steps=2100, lr=1e-3, wd=1.0)
    assert integrated_wd(cfg) == pytest.approx(1e-3 * (100 / 2 + 2000 / 2), rel=2e-3)


def test_the_papers_values():
    """Λ 2.56 for the paper's 10,000 steps, 1.02 for its 4,000-step β2 runs; quick and cpu are calibrated to it."""
    paper = paper_regime()
    assert paper["integrated_wd"] == pytest.approx(2.56, abs=0.005)
    assert paper["checkpoints"] == 51 and paper["lambda_switch"] == pytest.approx(0.4)
    assert paper["sigma_eval"] == pytest.approx(0.5 / math.sqrt(2000))
    assert paper["tokens_per_param"] == pytest.approx(10_000 * 128 * 256 / 51_045_888)
    beta_runs = preset("paper").replace(steps=4000, lambda_step=1600)
    assert integrated_wd(beta_runs) == pytest.approx(1.02, abs=0.005)
    assert flags(paper) == []
    for name in ("quick", "cpu"):            # docs/regime.md: every knob within the tolerances
        assert abs(integrated_wd(preset(name)) - 2.56) < 0.25 * 2.56
        assert flags(regime(preset(name))) == [], name


def test_flags_name_each_knob_outside_the_regime():
    # the quick preset before the calibration: Λ 0.092, λ switch at 300 of 600 steps, 192 probe-eval examples
    old = preset("quick").replace(wd=0.1, lambda_step=300, n_probe_eval=192)
    assert integrated_wd(old) == pytest.approx(0.092, abs=0.001)
    got = flags(regime(old, analysis_batch=8))
    assert any(s.startswith("Λ") for s in got) and any("σ_eval" in s for s in got)
    assert any("λ switch at 0.50" in s for s in got)                # the paper's 0.40
    assert any("analysis batch 1,024 tokens" in s for s in got)     # 8 sequences of 128 tokens vs 64 of 256
    assert not any("checkpoints" in s for s in got)                 # 31 ≥ 30
    few = regime(preset("paper").replace(ckpt_every=1000))
    assert any("checkpoints" in s for s in flags(few))
    assert sigma_eval(preset("paper").replace(task="modadd")) is None


def test_wd_for_inverts_the_integrated_weight_decay():
    cfg = preset("quick").replace(steps=1000, warmup=80)
    wd = wd_for(cfg, 2.56)
    assert integrated_wd(cfg.replace(wd=wd)) == pytest.approx(2.56, rel=1e-12)


def test_effective_integrated_wd_counts_momentum_for_coupled_decay():
    """Λ_eff = Λ for decoupled decay and plain SGD; Λ / (1 − m) for L2 decay through heavy-ball momentum. The paper's
    SGD controls (Table 8): A and B ≈ 1.02, C and C′ ten times that."""
    from training.core.regime import effective_integrated_wd
    from training.studies.sgd_controls import run_configs
    c = preset("test")
    for opt, gain in (("adamw", 1.0), ("sgd", 1.0), ("sgdw_nesterov", 1.0), ("sgd_momentum", 2.0)):
        cfg = c.replace(optimizer=opt, momentum=0.5)
        assert effective_integrated_wd(cfg) == pytest.approx(gain * integrated_wd(cfg), rel=1e-12)
    lam = {k: effective_integrated_wd(v) for k, v in run_configs(preset("paper")).items()}
    assert lam["A"] == pytest.approx(1.017, abs=0.001) and lam["B"] == pytest.approx(lam["A"], rel=1e-12)
    assert lam["C"] == pytest.approx(10 * lam["A"], rel=1e-9) and lam["Cprime"] == pytest.approx(10 * lam["A"], rel=1e-9)
