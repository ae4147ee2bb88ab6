"""The symmetry study's controls in the model and the diagnostics: a learned query bias keeps the rotation common
to a layer's heads a symmetry (ECD with the global projection and no noise conserves its Noether charge, the
random bias does not), and the PReLU MLP (hand-set slopes against the closed form; it breaks the hidden-unit
permutation symmetry that the GELU MLP has)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.core.attention_bias import prelu_slopes
from training.core.config import preset
from training.core.ecd import ECD
from training.core.errors import UserError
from training.core.model import GPT
from training.core.tasks import validate
from training.geometry.symmetry import charge_norms, head_blocks, noether_charge

VOCAB = 40


def make(seed=0, **kw):
    cfg = preset("test").replace(attention="math", seed=seed, **kw)
    torch.manual_seed(seed)
    return GPT(cfg, VOCAB).double(), cfg


def batch(step, n=4, T=16):
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(1000 + step))


def lm_loss(model, x):
    logits = model(x)
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))


def layer_charges(model, opt, cfg, with_bias_term=True):
    """Per layer the charge norms of θ and ECD's velocity (the optimizer's state, i.e. Π)."""
    theta = {n: p.detach() for n, p in model.named_parameters()}
    vel = {n: opt.state[p]["velocity"] for n, p in model.named_parameters()}
    if not with_bias_term:
        vel = {n: v for n, v in vel.items() if not n.endswith("attn.bq")}
    return [charge_norms(head_blocks(theta, L, cfg.n_head), head_blocks(vel, L, cfg.n_head))
            for L in range(cfg.n_layer)]


def ecd_charge_history(steps=40, **kw):
    """max over layers of the QK charges after each of ``steps`` ECD updates (global projection, ν = 0)."""
    model, cfg = make(**kw)
    model.train()
    opt = ECD(model.parameters(), lr=0.5, eta=50.0, F0=0.0, nu=0.0, projection="global")
    hist = {"qk_layer": [], "qk_layer_rel": [], "qk_head": [], "qk_layer_no_bias_term": []}
    for step in range(steps):
        x = batch(step)

        def closure():
            opt.zero_grad()
            loss = lm_loss(model, x)
            loss.backward()
            return loss
        opt.step(closure)
        ch = layer_charges(model, opt, cfg)
        hist["qk_layer"].append(max(c["qk_layer"]["abs"][0] for c in ch))
        hist["qk_layer_rel"].append(max(c["qk_layer"]["rel"][0] for c in ch))
        hist["qk_head"].append(max(max(c["qk"]["abs"]) for c in ch))
        hist["qk_layer_no_bias_term"].append(max(c["qk_layer"]["abs"][0]
                                                 for c in layer_charges(model, opt, cfg, with_bias_term=False)))
    assert opt.skipped == 0 and opt.iteration == steps
    return hist


def test_learned_bq_charge_is_conserved_by_global_ecd_and_random_bq_charge_is_not():
    """Global-projection ECD at ν = 0 multiplies J by a scalar each step and starts from J(0) = 0 (p0 = −g0,
    orthogonal to the rotation orbits), so J(t) = J(0) = 0 up to float64 rounding: asserted ABSOLUTE
    ‖J(t) − J(0)‖_F ≤ 1e-10 (θ of norm O(1), unit velocity; the relative charge is asserted too)."""
    learned = ecd_charge_history(attn_bq_learned=True)
    assert max(learned["qk_layer"]) < 1e-10 and max(learned["qk_layer_rel"]) < 1e-10, learned["qk_layer"][-5:]
    # the bias term is needed: without it, and per head, the charge is not conserved (the shared bias couples
    # the heads, only their common rotation is a symmetry)
    assert max(learned["qk_layer_no_bias_term"]) > 1e-4
    assert max(learned["qk_head"]) > 1e-4
    # the same dynamics with the random (non-learned) bQ: the charge drifts far above rounding
    random_ = ecd_charge_history(attn_disorder="q")
    assert max(random_["qk_layer"]) > 1e-5 and random_["qk_layer"][-1] > 1e-6, random_["qk_layer"][-5:]
    # and the symmetric model conserves both the per-head and the common charge
    sym = ecd_charge_history(steps=10)
    assert max(sym["qk_head"]) < 1e-10 and max(sym["qk_layer"]) < 1e-10


def test_learned_bq_is_a_rotation_partner_and_the_charge_adds_its_term():
    """A common rotation R of every head's Q and K rows with b_Q → R b_Q leaves the logits unchanged only when
    the bias rotates too; the layer charge equals the dense sum Σ_h antisym(Θ_Q Π_Qᵀ + Θ_K Π_Kᵀ) + antisym(b πᵀ)."""
    model, cfg = make(attn_bq_learned=True)
    with torch.no_grad():
        for blk in model.blocks:
            blk.attn.bq.add_(torch.randn(cfg.head_dim, dtype=torch.float64))
    model.eval()
    x = batch(0)
    ref = model(x)
    R, _ = torch.linalg.qr(torch.randn(cfg.head_dim, cfg.head_dim, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(3)))
    d, hd = cfg.d_model, cfg.head_dim
    with torch.no_grad():
        w = model.blocks[0].attn.qkv.weight
        for h in range(cfg.n_head):
            for off in (0, d):
                w[off + h * hd: off + (h + 1) * hd] = R @ w[off + h * hd: off + (h + 1) * hd]
    assert (model(x) - ref).abs().max() > 1e-3          # the bias not rotated: not a symmetry
    with torch.no_grad():
        model.blocks[0].attn.bq.copy_(R @ model.blocks[0].attn.bq)
    assert torch.allclose(model(x), ref, atol=1e-12)
    # the charge against a dense computation with a random velocity
    g = torch.Generator().manual_seed(4)
    theta = {n: p.detach() for n, p in model.named_parameters()}
    vel = {n: torch.randn(p.shape, dtype=torch.float64, generator=g) for n, p in theta.items()}
    J = noether_charge(head_blocks(theta, 1, cfg.n_head), head_blocks(vel, 1, cfg.n_head))["qk_layer"][0]
    W, P = theta["blocks.1.attn.qkv.weight"].numpy(), vel["blocks.1.attn.qkv.weight"].numpy()
    M = sum(W[o + h * hd:o + (h + 1) * hd] @ P[o + h * hd:o + (h + 1) * hd].T
            for h in range(cfg.n_head) for o in (0, d))
    M = M + np.outer(theta["blocks.1.attn.bq"].numpy(), vel["blocks.1.attn.bq"].numpy())
    assert np.allclose(J.numpy(), 0.5 * (M - M.T), atol=1e-12)


def test_learned_bq_config_checks():
    cfg = validate(preset("test").replace(attn_bq_learned=True, attn_bq_mean=0.25))
    model = GPT(cfg, VOCAB)
    assert torch.equal(model.blocks[1].attn.bq.detach(), torch.full((cfg.head_dim,), 0.25))
    assert "blocks.0.attn.bq" in dict(model.named_parameters())
    with pytest.raises(UserError, match="attn_bq_learned=true needs attn_disorder=none"):
        validate(preset("test").replace(attn_bq_learned=True, attn_disorder="qv"))
    with pytest.raises(UserError, match="unknown mlp_act 'relu'"):
        validate(preset("test").replace(mlp_act="relu"))


# ---------------------------------------------------------------------------- the PReLU MLP
def test_prelu_mlp_matches_the_closed_form_with_hand_set_slopes():
    model, cfg = make(mlp_act="prelu_random")
    mlp = model.blocks[0].mlp
    slopes = torch.linspace(-1.0, 2.0, cfg.d_ff, dtype=torch.float64)
    with torch.no_grad():
        mlp.slope.copy_(slopes)
    x = torch.randn(3, 5, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    U, D = mlp.w_up.weight.detach().numpy(), mlp.w_down.weight.detach().numpy()
    h = x.numpy() @ U.T
    want = np.where(h >= 0, h, slopes.numpy() * h) @ D.T
    assert np.allclose(mlp(x).detach().numpy(), want, atol=1e-12)
    assert mlp.slope.requires_grad


def test_prelu_slopes_are_seeded_draws_from_n_0p2_1_and_leave_the_other_weights_alone():
    model, cfg = make(mlp_act="prelu_random", seed=3)
    gelu, _ = make(seed=3)
    for i, blk in enumerate(model.blocks):
        assert np.allclose(blk.mlp.slope.detach().numpy(), prelu_slopes(3, i, cfg.d_ff))
        assert torch.equal(blk.mlp.w_up.weight, gelu.blocks[i].mlp.w_up.weight)
    assert not torch.equal(model.blocks[0].mlp.slope, model.blocks[1].mlp.slope)
    other, _ = make(mlp_act="prelu_random", seed=4)
    assert not torch.equal(model.blocks[0].mlp.slope, other.blocks[0].mlp.slope)
    draws = np.concatenate([prelu_slopes(s, 0, 1000) for s in range(20)])       # 20,000 draws
    assert abs(draws.mean() - 0.2) < 4 / math.sqrt(draws.size) and abs(draws.std() - 1.0) < 0.03


@pytest.mark.parametrize("act", ["gelu", "prelu_random"])
def test_hidden_unit_permutation_is_a_symmetry_of_gelu_only(act):
    model, cfg = make(mlp_act=act)
    mlp = model.blocks[0].mlp
    x = torch.randn(2, 7, cfg.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ref = mlp(x).detach()
    perm = torch.randperm(cfg.d_ff, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        mlp.w_up.weight.copy_(mlp.w_up.weight[perm])
        mlp.w_down.weight.copy_(mlp.w_down.weight[:, perm])
    out = mlp(x).detach()
    if act == "gelu":
        assert torch.allclose(out, ref, atol=1e-12)
        return
    assert (out - ref).abs().max() > 1e-3             # distinct slopes: permuting the weights alone changes f
    with torch.no_grad():
        mlp.slope.copy_(mlp.slope[perm])              # permuting the slopes with them restores it
    assert torch.allclose(mlp(x).detach(), ref, atol=1e-12)


# ---------------------------------------------------------------------------- the study's arms and their claims
def test_study_plan_settings_and_names():
    from training.studies.symmetry_study import ARM_OPTIMIZERS, ARMS, OPTIMIZERS, run_configs, split_name
    cfgs = run_configs("cpu", 0, OPTIMIZERS, ARMS)
    assert len(cfgs) == 10 + 4 + 2 + 1 == sum(len(v) for v in ARM_OPTIMIZERS.values())
    assert {n for n in cfgs if not n.endswith(("_sym", "_bq"))} == {
        "adamw_bq_bv", "sgd_bq_bv", "ecd_bq_bv", "soap_bq_bv", "ecd_bq_zero", "adamw_bq_zero", "ecd_global_bq_learned"}
    bv, zero, learned = cfgs["ecd_bq_bv"], cfgs["ecd_bq_zero"], cfgs["ecd_global_bq_learned"]
    assert (bv.attn_disorder, bv.attn_bv_mean, bv.attn_bv_std_first, bv.attn_bv_std_last, bv.attn_bq_mean) == \
        ("qv", 0.0, 0.05, 0.05, 0.5)
    assert (zero.attn_disorder, zero.attn_bq_mean) == ("q", 0.0)
    assert zero.attn_bq_std_first == cfgs["ecd_bq"].attn_bq_std_first
    assert (learned.attn_disorder, learned.attn_bq_learned, learned.ecd_projection) == ("none", True, "global")
    assert cfgs["ecd_bq"].hash() != zero.hash() and not cfgs["ecd_bq"].attn_bq_learned
    assert len(run_configs("cpu", 0, OPTIMIZERS, ARMS, every_pair=True)) == 25
    with pytest.raises(UserError, match="no runs: the default plan trains bq_learned with ecd_global"):
        run_configs("cpu", 0, ["sgd"], ["bq_learned"])
    assert split_name("ecd_global_bq_learned") == ("ecd_global", "bq_learned")
    assert split_name("sgd_bq_bv") == ("sgd", "bq_bv") and split_name("ecd_global_bq") == ("ecd_global", "bq")
    with pytest.raises(UserError, match="ends in no arm"):
        split_name("ecd_foo")


def test_curve_noise_is_the_residual_sd_about_a_line():
    from training.studies.symmetry_arms import curve_noise
    a = 0.01
    line = [3.0 - 0.05 * t for t in range(12)]
    assert curve_noise(line) == pytest.approx(0.0, abs=1e-12)
    # the last 4 values carry [a, −a, −a, a], orthogonal to 1 and t: residual sd = sqrt(4a²/2)
    y = line[:8] + [v + e for v, e in zip(line[8:], (a, -a, -a, a))]
    assert curve_noise(y) == pytest.approx(a * math.sqrt(2), rel=1e-9)
    assert curve_noise([1.0, 2.0, None]) is None


def row(opt, arm, final, best=None, noise=0.004, state="completed", **kw):
    return {"optimizer": opt, "arm": arm, "run": f"{opt}_{arm}", "state": state, "final_val_loss": final,
            "best_val_loss": final if best is None else best, "curve_noise": noise, **kw}


def test_arm_contrasts_readings_and_claims():
    from training.studies.symmetry_arms import arm_claims, arm_contrasts
    from training.studies.symmetry_study import EFFECT, SEED_RESULTS
    rows = [row("ecd", "sym", 4.00), row("ecd", "bq", 3.90), row("ecd", "bq_bv", 3.70, 3.65),
            row("ecd", "bq_zero", 3.905), row("adamw", "bq", 3.5), row("adamw", "bq_bv", 3.6, noise=0.1)]
    cs = {(c["optimizer"], c["arm"], c["reference"]): c for c in arm_contrasts(rows, SEED_RESULTS["rows"], EFFECT)}
    c = cs[("ecd", "bq_bv", "bq")]
    assert c["final"] == pytest.approx(-0.2) and c["best"] == pytest.approx(-0.25)
    assert c["null_sd"] == pytest.approx(0.004 * math.sqrt(2)) and c["reading"] == "lower"
    assert c["published"] == pytest.approx(3.347 - 3.847, abs=1e-9)
    assert cs[("ecd", "bq", "bq_zero")]["reading"] == "no clear effect"          # |−0.005| < 0.01
    # AdamW's +0.1 is inside 2 × its null sd √(0.1² + 0.004²): no clear effect, not "higher"
    assert cs[("adamw", "bq_bv", "bq")]["reading"] == "no clear effect"
    assert ("adamw", "bq_bv", "sym") not in cs
    claims = arm_claims(rows, list(cs.values()), EFFECT)
    assert [cl["claim"].split(" (")[0] for cl in claims] == ["bQ + bV beats bQ alone",
                                                             "a nonzero bQ mean works better than a zero mean"]
    assert all(cl["seeds"] == 1 and "inconclusive (1 seed)" in cl["verdict"] and cl["null"] for cl in claims)
    assert claims[0]["verdict"].startswith("supported by ecd; no clear effect for adamw at this seed")


@pytest.mark.parametrize("learned, word", [(2e-7, "ecd_global: conserved"), (3e-5, "ecd_global: NOT conserved")])
def test_learned_charge_claim_against_the_symmetric_and_random_runs(learned, word):
    from training.studies.symmetry_arms import arm_claims
    key = "ecd_velocity_qk_layer_charge_rel_max"
    rows = [row("ecd_global", "sym", 4.0, **{key: 1e-7}), row("ecd_global", "bq", 3.9, **{key: 2e-3}),
            row("ecd_global", "bq_learned", 3.95, **{key: learned, "ecd_velocity_qk_charge_rel_max": 1e-2})]
    (claim,) = arm_claims(rows, [], 0.01)
    assert claim["verdict"].startswith(word) and "1 seed" in claim["verdict"]
    assert "1.0e-07 symmetric" in claim["observed"] and "2.0e-03 with the random bQ" in claim["observed"]
