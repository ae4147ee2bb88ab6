"""Disordered attention (training/core/attention_bias.py, the model option) and the symmetry diagnostics: bK is a
softmax no-op, zero biases reproduce the symmetric model, a per-head rotation of Q and K is a symmetry of
the symmetric model only, the invariance identity behind the Noether charge, the balancedness, and the
bQ alignment against hand-built answers and the analytic null."""
import math

import numpy as np
import pytest
import torch

from training.core.config import preset
from training.core.model import GPT
from training.core.attention_bias import attention_biases
from training.geometry.symmetry import (alignment_cosines, antisym, balancedness, bq_alignment,
                               head_blocks, noether_charge)

VOCAB = 40


def make(attn_disorder="none", seed=0, **kw):
    cfg = preset("test").replace(attn_disorder=attn_disorder, attention="math", **kw)
    torch.manual_seed(seed)
    return GPT(cfg, VOCAB).double(), cfg


def tokens(n=3, T=16, seed=1):
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


def copy_weights(dst, src):
    dst.load_state_dict(src.state_dict())
    return dst


def attention_probs(model, x, layer=0):
    """Probabilities of layer ``layer`` computed from its q and k (after the biases), independently of
    the model's attention code."""
    h = model.tok_emb(x) + model.pos_emb(torch.arange(x.shape[1]))
    for blk in model.blocks[:layer]:
        h = blk(h)
    attn = model.blocks[layer].attn
    C = h.shape[-1]
    q, k, v = attn.qkv(model.blocks[layer].ln1(h)).split(C, dim=2)
    if attn.bias is not None:
        q, k, v = attn.bias(q, k, v, False)
    B, T = x.shape
    q, k = (t.view(B, T, attn.n_head, attn.head_dim).transpose(1, 2) for t in (q, k))
    s = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    return torch.softmax(s, -1)


# ---------------------------------------------------------------------------- the model option
def test_key_bias_leaves_attention_probabilities_unchanged():
    m_q, _ = make("q")
    m_qk, _ = make("qk")
    copy_weights(m_qk, m_q)
    m_q.eval(), m_qk.eval()
    x = tokens()
    pq, pqk = attention_probs(m_q, x, 1), attention_probs(m_qk, x, 1)
    assert m_qk.blocks[1].attn.bias.sample("k", False).abs().min() > 0.05     # bK is really there
    torch.testing.assert_close(pqk, pq, rtol=0, atol=1e-6)
    torch.testing.assert_close(m_qk(x), m_q(x), rtol=0, atol=1e-6)


def test_zero_mean_and_std_reproduce_the_symmetric_model_exactly():
    zero = dict(attn_bq_mean=0.0, attn_bq_std_first=0.0, attn_bq_std_last=0.0, attn_bk_mean=0.0,
                attn_bk_std_first=0.0, attn_bk_std_last=0.0, attn_bv_mean=0.0, attn_bv_std_first=0.0,
                attn_bv_std_last=0.0)
    sym, _ = make("none")
    dis, _ = make("qkv", **zero)
    assert set(dis.state_dict()) == set(sym.state_dict())     # the biases are not part of the weights
    copy_weights(dis, sym)
    x = tokens()
    for train in (True, False):
        sym.train(train), dis.train(train)
        assert torch.equal(sym(x), dis(x))


def rotate_qk(model, seed=5):
    """Apply a random orthogonal R_h to the rows of every head's Q and K blocks (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in model.blocks:
            W = blk.attn.qkv.weight
            d, hd = W.shape[1], blk.attn.head_dim
            for h in range(blk.attn.n_head):
                R, _ = torch.linalg.qr(torch.randn(hd, hd, generator=g, dtype=W.dtype))
                for off in (0, d):
                    rows = slice(off + h * hd, off + (h + 1) * hd)
                    W[rows] = R @ W[rows]


@pytest.mark.parametrize("disorder,changes", [("none", False), ("q", True)])
def test_per_head_rotation_is_a_symmetry_only_without_bq(disorder, changes):
    m, _ = make(disorder)
    m.eval()
    x = tokens()
    before = m(x)
    rotate_qk(m)
    diff = float((m(x) - before).detach().abs().max())
    if changes:
        assert diff > 1e-3
    else:
        assert diff <= 1e-5


def test_training_draws_differ_and_evaluation_policies():
    m, cfg = make("q")
    x = tokens()
    m.train()
    a, b = m(x), m(x)
    assert not torch.allclose(a, b)
    bias = m.blocks[0].attn.bias
    assert bias.draws == 2
    last = torch.tensor(bias.last["q"], dtype=torch.float64)
    m.eval()
    torch.testing.assert_close(bias.sample("q", False), torch.full((cfg.head_dim,), 0.5, dtype=torch.float64))
    assert torch.equal(m(x), m(x))                          # "mean" is deterministic
    bias.policy = "last"
    assert torch.equal(bias.sample("q", False), last)
    bias.policy = "resample"
    r1, r2 = m(x), m(x)
    assert not torch.allclose(r1, r2) and bias.draws == 2   # eval draws do not touch the training stream
    # per-coordinate std follows linspace(0.05, 0.15, head_dim); each layer has its own stream
    torch.testing.assert_close(bias.std_q, torch.linspace(0.05, 0.15, cfg.head_dim, dtype=torch.float64))
    assert m.blocks[0].attn.bias._draw(0, 0).tolist() != m.blocks[1].attn.bias._draw(0, 0).tolist()


def test_draws_are_reproducible_and_restorable():
    m1, _ = make("qv", seed=0)
    m2, _ = make("qv", seed=0)
    x = tokens()
    m1.train(), m2.train()
    for _ in range(3):
        m1(x)
    stats = [b.stats() for b in attention_biases(m1)]
    for b, s in zip(attention_biases(m2), stats):
        b.load_stats(s)
    assert torch.equal(m1(x), m2(x))
    q = stats[0]["streams"]["q"]
    assert np.allclose(np.asarray(q["sum"]) / 3, q["mean_of_draws"])


# ---------------------------------------------------------------------------- diagnostics
def grads_of(model, x):
    model.zero_grad()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("disorder", ["none", "qv"])
def test_invariance_identity_one_sgd_step_has_zero_charge_only_when_symmetric(disorder):
    m, cfg = make(disorder, attn_bv_mean=0.5)     # evaluation uses the mean bias: make bV's nonzero
    m.eval()
    x = tokens()
    G = grads_of(m, x)
    W = {n: p.detach() for n, p in m.named_parameters()}
    for L in range(cfg.n_layer):
        theta = head_blocks(W, L, cfg.n_head)
        vel = head_blocks({k: -0.1 * v for k, v in G.items()}, L, cfg.n_head)     # one SGD step's velocity
        J = noether_charge(theta, vel)
        for sec, names in (("qk", "qk"), ("vo", "vo")):
            scale = max(float(torch.linalg.norm(theta[names[0]][h] @ vel[names[0]][h].T)) for h in range(cfg.n_head))
            worst = max(float(torch.linalg.norm(j)) for j in J[sec]) / scale
            broken = (sec == "qk" and "q" in disorder) or (sec == "vo" and "v" in disorder)
            if broken:
                assert worst > 1e-4, (sec, worst)
            else:
                assert worst < 1e-10, (sec, worst)


def test_balancedness_is_conserved_to_first_order_by_gradient_flow():
    m, cfg = make("none")
    m.eval()
    x = tokens()
    G = grads_of(m, x)
    W = {n: p.detach() for n, p in m.named_parameters()}
    for L in range(cfg.n_layer):
        th, g = head_blocks(W, L, cfg.n_head), head_blocks(G, L, cfg.n_head)
        for sec, (a, b) in (("qk", ("q", "k")), ("vo", ("v", "o"))):
            for h in range(cfg.n_head):
                if sec == "qk":   # dB/dt under θ' = −G
                    dB = -(g[a][h] @ th[a][h].T + th[a][h] @ g[a][h].T) + (g[b][h] @ th[b][h].T + th[b][h] @ g[b][h].T)
                else:
                    dB = -(g[a][h] @ th[a][h].T + th[a][h] @ g[a][h].T) + (g[b][h].T @ th[b][h] + th[b][h].T @ g[b][h])
                assert float(dB.abs().max()) < 1e-12 * max(1.0, float(th[a][h].norm() * g[a][h].norm())) + 1e-16


def test_balancedness_norm_invariant_under_rotation_and_matches_dense():
    m, cfg = make("none")
    W = {n: p.detach().clone() for n, p in m.named_parameters()}
    B0 = balancedness(head_blocks(W, 0, cfg.n_head))
    th = head_blocks(W, 0, cfg.n_head)
    torch.testing.assert_close(B0["qk"][1], th["q"][1] @ th["q"][1].T - th["k"][1] @ th["k"][1].T)
    rotate_qk(m)
    W2 = {n: p.detach().clone() for n, p in m.named_parameters()}
    B1 = balancedness(head_blocks(W2, 0, cfg.n_head))
    for a, b in zip(B0["qk"], B1["qk"]):
        assert float(torch.linalg.norm(a)) == pytest.approx(float(torch.linalg.norm(b)), rel=1e-10)
    assert torch.equal(antisym(torch.eye(3)), torch.zeros(3, 3))


# ---------------------------------------------------------------------------- bQ alignment
def test_hand_built_key_matrix_gives_cosine_one():
    cfg = preset("test")
    d, H, hd = cfg.d_model, cfg.n_head, cfg.head_dim
    state = {"tok_emb.weight": torch.zeros(VOCAB, d), "pos_emb.weight": torch.randn(cfg.seq_len, d)}
    bq = np.linspace(0.2, 0.9, hd)[None].repeat(cfg.n_layer, 0)
    for L in range(cfg.n_layer):
        qkv = torch.randn(3 * d, d)
        qkv[d:2 * d] = 0.0
        for h in range(H):      # W_K^(h) maps e_7 to ⟨bQ⟩ and e_3 to −⟨bQ⟩
            qkv[d + h * hd:d + (h + 1) * hd, 0] = torch.as_tensor(bq[L], dtype=torch.float32)
        state[f"blocks.{L}.attn.qkv.weight"] = qkv
        state[f"blocks.{L}.attn.out_proj.weight"] = torch.randn(d, d)
    state["tok_emb.weight"][7, 0] = 2.0
    state["tok_emb.weight"][3, 0] = -0.5
    state["tok_emb.weight"][11, 1] = 1.0         # mapped to zero: cosine 0 by convention
    res = bq_alignment(state, cfg.n_layer, H, bq, top=3)
    for layer in res["layers"]:
        assert layer["top_tokens"][0] == 7 and layer["top_cos"][0] == pytest.approx(1.0, abs=1e-12)
        assert layer["bottom_tokens"][0] == 3 and layer["bottom_cos"][0] == pytest.approx(-1.0, abs=1e-12)


def test_null_cosines_have_mean_zero_and_variance_one_over_head_dim():
    hd = 16
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(20000, hd, generator=g, dtype=torch.float64)
    c = alignment_cosines(keys, torch.full((hd,), 0.5, dtype=torch.float64))
    assert abs(float(c.mean())) < 0.01
    assert float(c.var()) == pytest.approx(1 / hd, rel=0.05)
    assert float(alignment_cosines(torch.zeros(2, hd), torch.ones(hd)).abs().max()) == 0.0
