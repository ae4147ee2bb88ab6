"""Known-answer tests of the modular-addition analyses: commutators, attention entropy and override,
per-block spectra and principal angles, the Top-K SAE."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.geometry.attention_probe import (override_logits, readout_attention_stats, record_attention, row_entropy,
                                      topk_mass, topk_renormalise)
from training.geometry.commutator import (FlatModel, embed, hvp, orthonormal_basis, projection_ratio, projection_summary,
                                 random_rho_mc, random_rho_mean, sgd_commutator)
from training.core.config import preset
from training.geometry.exec_subspace import principal_angles, spectrum, top_directions
from training.core.model import GPT
from training.core.modadd import ModAddTask, answer_stats, modadd_config
from training.geometry.trajectory import random_walk_null
from training.core.tasks import validate


def _model(n_layer=1, attn_only=True, dtype=torch.float64, seed=0):
    cfg = validate(modadd_config(preset("test").replace(n_layer=n_layer, d_model=16, n_head=2, d_ff=32, attn_only=attn_only,
                                               batch_size=8, modadd_n_eval=64, attention="math")))
    torch.manual_seed(seed)
    task = ModAddTask(cfg)
    model = GPT(cfg, task.tok.vocab_size).to(dtype)
    return cfg, task, model


def _ce_loss(fwd, ex):
    return F.cross_entropy(fwd(ex.x)[:, -1, :], ex.label)


# ---------------------------------------------------------------------------- commutators
def test_commutator_of_a_batch_with_itself_is_zero_and_theta_is_untouched():
    cfg, task, model = _model(n_layer=2)
    fm = FlatModel(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    theta = fm.theta()
    a = task.sample([1, 2, 3], m=2)
    r = sgd_commutator(fm.loss_fn(_ce_loss), theta, a, a, eta=1e-3)
    assert r["delta_norm"] == 0.0 and torch.count_nonzero(r["delta"]) == 0
    b = task.sample([1, 2, 4], m=3)
    r2 = sgd_commutator(fm.loss_fn(_ce_loss), theta, a, b, eta=1e-3)
    assert r2["delta_norm"] > 0
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_quadratic_loss_commutator_equals_second_order_form_exactly():
    rng = np.random.default_rng(0)
    P = 12
    XA, XB = rng.standard_normal((20, P)), rng.standard_normal((15, P))
    yA, yB = rng.standard_normal(20), rng.standard_normal(15)
    theta0 = rng.standard_normal(P)
    batches = {"A": (torch.tensor(XA), torch.tensor(yA)), "B": (torch.tensor(XB), torch.tensor(yB))}

    def loss(theta, batch):
        X, y = batch
        return 0.5 * ((X @ theta - y) ** 2).mean()
    eta = 0.05
    r = sgd_commutator(loss, torch.tensor(theta0), batches["A"], batches["B"], eta, second_order=True)
    # independent dense computation: H = XᵀX/n, g = Xᵀ(Xθ − y)/n
    HA, HB = XA.T @ XA / 20, XB.T @ XB / 15
    gA, gB = XA.T @ (XA @ theta0 - yA) / 20, XB.T @ (XB @ theta0 - yB) / 15
    expected = eta ** 2 * (HB @ gA - HA @ gB)
    # the naive form θ_AB − θ_BA agrees too
    tAB = theta0 - eta * gA - eta * (XB.T @ (XB @ (theta0 - eta * gA) - yB) / 15)
    tBA = theta0 - eta * gB - eta * (XA.T @ (XA @ (theta0 - eta * gB) - yA) / 20)
    np.testing.assert_allclose(tAB - tBA, expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(r["delta"].numpy(), expected, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(r["hvp_form"].numpy(), HB @ gA - HA @ gB, rtol=1e-10, atol=1e-12)
    assert r["rel_err_hvp"] < 1e-9
    assert r["D"] == pytest.approx(np.linalg.norm(expected) / (eta ** 2 * np.linalg.norm(gA) * np.linalg.norm(gB)))
    h = np.linalg.norm(HB @ gA - HA @ gB)
    assert r["scaled_defect"] == pytest.approx(h / (np.linalg.norm(HB @ gA) + np.linalg.norm(HA @ gB)))


def test_transformer_commutator_converges_to_hvp_form_at_rate_eta():
    cfg, task, model = _model(n_layer=2, seed=1)
    fm = FlatModel(model)
    f = fm.loss_fn(_ce_loss)
    theta = fm.theta()
    a, b = task.sample([5, 1], m=1), task.sample([5, 2], m=2)
    errs = [sgd_commutator(f, theta, a, b, eta, second_order=True)["rel_err_hvp"] for eta in (1e-2, 5e-3, 2.5e-3)]
    assert errs[2] < 0.05
    assert 1.5 < errs[0] / errs[1] < 2.6 and 1.5 < errs[1] / errs[2] < 2.6     # O(eta) remainder
    # the HVP through the math attention path equals a dense finite-difference Hessian column product
    v = torch.randn(fm.P, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = 1e-5
    from training.geometry.commutator import gradient
    fd = (gradient(f, theta + eps * v, b) - gradient(f, theta - eps * v, b)) / (2 * eps)
    hv = hvp(f, theta, b, v)
    assert float((fd - hv).norm() / hv.norm()) < 1e-6


def test_projection_ratio_and_random_baselines():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(50, dtype=torch.float64, generator=g)
    assert projection_ratio(delta, orthonormal_basis(delta[:, None])) == pytest.approx(1.0)
    other = torch.randn(50, 4, dtype=torch.float64, generator=g)
    other = other - delta[:, None] * (delta @ other)[None, :] / (delta @ delta)
    assert projection_ratio(delta, orthonormal_basis(other)) == pytest.approx(0.0, abs=1e-12)
    mc = random_rho_mc(delta, 5, 600, g)
    exact = random_rho_mean(5, 50)
    assert abs(mc["mean"] - exact) < 3 * mc["se"]
    assert exact == pytest.approx(math.sqrt(5 / 50), rel=0.1)
    s = projection_summary(delta, orthonormal_basis(other), n_mc=10, generator=g)
    assert s["perp_norm_fraction"] == pytest.approx(1.0) and s["perp_energy_fraction"] == pytest.approx(1.0)
    Q = embed([(3, torch.ones(2)), (10, torch.ones(3))], 20)
    assert Q.shape == (20, 2) and Q[3:5, 0].sum() == 2 and Q[10:13, 1].sum() == 3 and Q.sum() == 5


# ---------------------------------------------------------------------------- attention
def test_uniform_and_one_hot_entropies():
    T = 7
    uni = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    assert torch.allclose(row_entropy(uni), torch.log(torch.arange(1, T + 1).float()), atol=1e-6)
    assert torch.all(row_entropy(torch.eye(T)) == 0)
    assert torch.allclose(topk_mass(uni, 2)[-1], torch.tensor(2 / T))
    r = topk_renormalise(torch.tensor([[0.1, 0.5, 0.15, 0.25]]), 2)
    assert torch.allclose(r, torch.tensor([[0, 0.5 / 0.75, 0, 0.25 / 0.75]]))


def test_model_with_zero_queries_attends_uniformly():
    cfg, task, model = _model(n_layer=2, dtype=torch.float32)
    with torch.no_grad():
        for b in model.blocks:
            b.attn.qkv.weight[:cfg.d_model].zero_()          # q = 0: every visible key scores the same
    x = task.eval_set(2).x[:8]
    stats = readout_attention_stats(model, x)
    n_keys = x.shape[1]
    for layer in stats["layers"]:
        assert np.allclose(layer["entropy"], np.log(n_keys), atol=1e-5)
    assert stats["uniform_entropy"] == pytest.approx(np.log(n_keys))


def test_top_T_override_is_a_no_op_and_top1_is_hard_routing():
    cfg, task, model = _model(n_layer=2, dtype=torch.float32, seed=3)
    model.eval()
    ex = task.eval_set(3)
    T = ex.x.shape[1]
    with torch.no_grad():
        clean = model(ex.x)
    assert torch.allclose(override_logits(model, ex.x, T), clean, atol=1e-5)
    # a hook also works on a model set to the fused (sdpa) path: it is routed through the math path
    model.set_attention("sdpa")
    assert torch.allclose(override_logits(model, ex.x, T), clean, atol=1e-5)
    assert all(b.attn.prob_hook is None for b in model.blocks)
    base = answer_stats(model, ex, "cpu")
    over = answer_stats(model, ex, "cpu", logits_fn=lambda xb: override_logits(model, xb, T)[:, -1])
    assert base["acc"] == over["acc"] and base["loss"] == pytest.approx(over["loss"], abs=1e-5)

    # top-1 on a one-layer model, by hand: each query copies the value of its highest-scoring key
    cfg1, task1, m1 = _model(n_layer=1, dtype=torch.float64, seed=4)
    x = task1.eval_set(2).x[:4]
    _, atts = record_attention(m1, x)
    with torch.no_grad():
        h0 = m1.tok_emb(x) + m1.pos_emb(torch.arange(x.shape[1]))
        a = m1.blocks[0].ln1(h0)
        d, H = cfg1.d_model, cfg1.n_head
        v = (a @ m1.blocks[0].attn.qkv.weight[2 * d:].T).view(4, -1, H, d // H).transpose(1, 2)   # (B, H, T, dh)
        j = atts[0].argmax(-1)                                                                     # (B, H, T)
        y = torch.gather(v, 2, j[..., None].expand(-1, -1, -1, d // H))
        out = h0 + m1.blocks[0].attn.out_proj(y.transpose(1, 2).reshape(4, -1, d))
        hand = m1.lm_head(m1.ln_f(out))
    assert torch.allclose(override_logits(m1, x, 1), hand, atol=1e-10)


# ---------------------------------------------------------------------------- spectra and subspaces
def test_two_dimensional_trajectory_spectrum_and_invariances():
    rng = np.random.default_rng(0)
    T, D = 30, 200
    t = np.linspace(0, 1, T)
    A = np.stack([t, np.sin(3 * t)], axis=1)                      # T × 2 coordinates
    B = np.linalg.qr(rng.standard_normal((D, 2)))[0].T            # 2 × D orthonormal rows
    X = A @ B + 1e-6 * rng.standard_normal((T, D))
    s = spectrum(X, centered=True)
    sv = np.linalg.svd(A - A.mean(0), compute_uv=False)
    p = sv / sv.sum()
    assert s["r90"] <= 2 and s["r95"] == 2
    assert s["erank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=5e-3)   # noise adds a little entropy
    lam = sv ** 2
    assert s["participation_ratio"] == pytest.approx(lam.sum() ** 2 / (lam ** 2).sum(), rel=1e-3)
    # invariant under a rotation of parameter space and (the reference's "shuffled null") row permutations
    R = np.linalg.qr(rng.standard_normal((D, D)))[0]
    rot = spectrum(X @ R, centered=True)
    perm = spectrum(X[rng.permutation(T)], centered=True)
    for other in (rot, perm):
        assert np.allclose(other["evr"], s["evr"], atol=1e-10)
        assert other["erank"] == pytest.approx(s["erank"]) and other["r90"] == s["r90"]


def test_centered_random_walk_null_matches_simulation_and_brownian_limit():
    rng = np.random.default_rng(1)
    norms = rng.uniform(0.5, 2.0, size=8)
    D, pc1 = 40, []
    for _ in range(300):
        U = rng.standard_normal((8, D))
        U /= np.linalg.norm(U, axis=1, keepdims=True)
        X = np.vstack([np.zeros(D), np.cumsum(norms[:, None] * U, axis=0)])
        pc1.append(spectrum(X, centered=True)["pc1"])
    null = random_walk_null(norms, D, n_samples=300, seed=3, centered=True)
    assert null["pc1"] == pytest.approx(np.mean(pc1), abs=0.02)
    # centred Brownian motion: eigenvalues ∝ 1/k², PC1 = 6/π² ≈ 0.61 (the "≈ 60 %" of a pure random walk)
    high = random_walk_null(np.ones(60), 25_000_000, n_samples=30, seed=0, centered=True)
    assert high["pc1"] == pytest.approx(6 / np.pi ** 2, abs=0.03)


def test_principal_angles():
    rng = np.random.default_rng(2)
    U = np.linalg.qr(rng.standard_normal((30, 3)))[0]
    assert principal_angles(U, U)["overlap"] == pytest.approx(1.0)
    W = np.linalg.qr(np.hstack([U, rng.standard_normal((30, 3))]))[0][:, 3:]
    assert principal_angles(U, W)["overlap"] == pytest.approx(0.0, abs=1e-12)
    overlaps = [principal_angles(U, np.linalg.qr(rng.standard_normal((30, 3)))[0])["overlap"] for _ in range(400)]
    assert np.mean(overlaps) == pytest.approx(3 / 30, abs=0.01)
    X = np.vstack([np.zeros(30), U[:, 0], U[:, 0] + U[:, 1]])
    V = top_directions(X, 5, centered=False)
    assert V.shape == (30, 2) and principal_angles(V, U[:, :2])["overlap"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- SAE
def test_topk_sae_recovers_a_planted_dictionary():
    from training.geometry.sae import atom_recovery, planted_dictionary, train_sae
    X, D = planted_dictionary(2000, 16, 24, 3, seed=0)
    fit = train_sae(X, 48, 3, steps=300, batch=128, lr=1e-2, seed=0)
    rec = atom_recovery(fit.sae, D)
    assert float((rec > 0.9).float().mean()) >= 0.9
    assert fit.fvu < 0.2
    z = fit.sae.encode(X[:50])
    assert torch.all((z != 0).sum(1) <= 3)
    fit.sae.relu = False
    assert torch.all((fit.sae.encode(X[:50]) != 0).sum(1) == 3)


def test_sae_patch_with_an_exact_autoencoder_changes_nothing():
    from training.geometry.sae import TopKSAE, patch_hook
    cfg, task, model = _model(n_layer=2, dtype=torch.float32, seed=5)
    d = cfg.d_model
    sae = TopKSAE(d, 2 * d, d, relu=True)
    with torch.no_grad():                      # z = (x⁺, x⁻) and x̂ = x⁺ − x⁻ = x exactly
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye]))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=1))
        sae.b_pre.zero_()
    ex = task.eval_set(2)
    with torch.no_grad():
        clean = model(ex.x)
        mask = ex.value_mask() | (torch.arange(ex.x.shape[1]) == ex.x.shape[1] - 1)
        h = model.blocks[0].register_forward_hook(patch_hook(sae, mask, None))
        recon = model(ex.x)
        h.remove()
        h = model.blocks[0].register_forward_hook(patch_hook(sae, mask, torch.arange(d)))
        ablated = model(ex.x)
        h.remove()
    assert torch.allclose(recon, clean, atol=1e-5)
    assert not torch.allclose(ablated[:, -1], clean[:, -1], atol=1e-3)
