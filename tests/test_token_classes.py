"""Token classes and their alignment enrichment (training/geometry/token_classes.py), the recency metric of the
positional alignment (training/geometry/symmetry.recency), and both inside bq_alignment on hand-built weights:
planted classes and planted recency against dense numpy, closed-form hypergeometric tails and scipy."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from conftest import mini_tiktoken
from training.core.config import preset
from training.core.data_tokenizers import TiktokenTokenizer
from training.geometry.symmetry import bq_alignment, recency
from training.geometry.token_classes import (FUNCTION_WORDS, class_enrichment, structure_content_direction,
                                             token_class, token_classes)


@pytest.mark.parametrize("text, cls", [(" the", "function"), ("The", "function"), (" of", "function"),
                                       (".", "punctuation"), (" ,", "punctuation"), ('."', "punctuation"),
                                       ("!", "punctuation"), (" cat", "content"), ("ing", "content"),
                                       (" Lily", "content"), (" 42", "digit"), ("<|endoftext|>", "other"),
                                       ("\n", "other"), (" ", "other"), ("\ufffd", "other"), (" x2", "other"),
                                       (" don't", "other")])
def test_token_class_rules(text, cls):
    assert token_class(text) == cls


def test_token_classes_of_a_tiktoken_vocabulary():
    tok = TiktokenTokenizer(mini_tiktoken())
    cls = token_classes(tok)
    assert len(cls) == tok.vocab_size
    ids = {w: tok.encode(w)[0] for w in (" the", " is", " ZEBRA", " word")}
    assert cls[ids[" the"]] == "function" and cls[ids[" is"]] == "function"
    assert cls[ids[" ZEBRA"]] == "content" and cls[ids[" word"]] == "content"
    assert cls[ord(".")] == "punctuation" and cls[ord("7")] == "digit" and cls[0xFF] == "other"
    assert cls[tok.eos_id] == "other"
    assert {"the", "of", "and", "is", "not"} <= FUNCTION_WORDS


def hyper_tail(k, N, K, n, upper=True):
    """P(X >= k) (or <= k) for X ~ hypergeometric by exact binomial coefficients."""
    rng = range(k, min(K, n) + 1) if upper else range(max(0, n - (N - K)), k + 1)
    return sum(math.comb(K, j) * math.comb(N - K, n - j) for j in rng) / math.comb(N, n)


def planted(seed=0):
    rng = np.random.default_rng(seed)
    cls = ["punctuation"] * 60 + ["content"] * 150 + ["function"] * 90
    v = np.concatenate([rng.normal(0.25, 0.2, 60), rng.normal(-0.15, 0.2, 150), rng.normal(0.0, 0.2, 90)])
    return v, cls


def test_enrichment_on_planted_classes():
    v, cls = planted()
    res = class_enrichment(v, cls, n_perm=2000, seed=1, top_k=30)
    N, K = v.size, int((v > 0).sum())
    lab = np.asarray(cls)
    for c, d in res["classes"].items():
        m = lab == c
        n, k = int(m.sum()), int((v[m] > 0).sum())
        assert (d["n"], d["positive"]) == (n, k)
        assert d["frac_positive"] == pytest.approx(k / n) and d["overall_frac_positive"] == pytest.approx(K / N)
        assert d["log2_enrichment"] == pytest.approx(math.log2((k / n) / (K / N)))
        assert d["p_greater"] == pytest.approx(hyper_tail(k, N, K, n, True), rel=1e-9)
        assert d["p_less"] == pytest.approx(hyper_tail(k, N, K, n, False), rel=1e-9)
        assert d["mean_minus_overall"] == pytest.approx(v[m].mean() - v.mean())
        # permutation null of the class's positive fraction: the hypergeometric spread
        sd = math.sqrt((K / N) * (1 - K / N) * (N - n) / (n * (N - 1)))
        assert d["null"]["frac_diff_sd"] == pytest.approx(sd, rel=0.1)
        assert abs(d["null"]["frac_diff_mean"]) < 3 * sd / math.sqrt(2000) + 1e-3
        top = int((lab[np.argsort(-v)[:30]] == c).sum())
        assert d["top_k_count"] == top
    p, w, f = (res["classes"][c] for c in ("punctuation", "content", "function"))
    assert p["log2_enrichment"] > 0.5 and p["p_greater"] < 1e-6 and p["p_fisher"] < 1e-6
    assert p["null"]["p_perm_frac"] == pytest.approx(1 / 2001)
    assert w["log2_enrichment"] < 0 and w["p_less"] < 1e-6
    assert f["null"]["p_perm_mean"] > 0.01            # the unplanted class
    sc = structure_content_direction(res)
    assert sc["holds"] and sc["significant"]
    # the reverse planting reverses the reading
    assert not structure_content_direction(class_enrichment(-v, cls, n_perm=0))["holds"]


def test_fisher_two_sided_against_the_exact_table():
    v = np.array([1, 1, 1, -1, 1, -1, -1, -1, -1, 1.0])
    cls = ["punctuation"] * 4 + ["content"] * 6
    d = class_enrichment(v, cls, n_perm=0)["classes"]["punctuation"]
    N, K, n, k = 10, 5, 4, 3
    probs = {j: math.comb(K, j) * math.comb(N - K, n - j) / math.comb(N, n) for j in range(0, n + 1)}
    two = sum(q for q in probs.values() if q <= probs[k] * (1 + 1e-9))
    assert d["p_fisher"] == pytest.approx(two) and d["odds_ratio"] == pytest.approx((3 * 4) / (1 * 2))


def test_recency_on_planted_and_null_curves():
    T = 64
    rng = np.random.default_rng(0)
    u = np.arange(T) / (T - 1)
    c = 0.3 * u + rng.normal(0, 0.02, T)
    r = recency(c, n_perm=2000, seed=0)
    assert r["spearman"] == pytest.approx(spearmanr(np.arange(T), c)[0], abs=1e-12)
    assert r["slope"] == pytest.approx(np.polyfit(u, c, 1)[0], abs=1e-12) and r["slope"] == pytest.approx(0.3, abs=0.03)
    q = T // 4
    assert r["late_minus_early"] == pytest.approx(c[-q:].mean() - c[:q].mean())
    assert r["p_perm"] == pytest.approx(1 / 2001)
    noise = recency(rng.normal(0, 1, T), n_perm=4000, seed=1)
    assert noise["null_spearman_sd"] == pytest.approx(1 / math.sqrt(T - 1), rel=0.1)
    assert recency(-c)["spearman"] == pytest.approx(-r["spearman"])
    assert recency([1, 2, 3])["reason"]


def test_bq_alignment_with_planted_classes_and_recency():
    cfg = preset("test")
    d, H, hd, T = cfg.d_model, cfg.n_head, cfg.head_dim, cfg.seq_len
    V = 30
    g = torch.Generator().manual_seed(0)
    bq = np.linspace(0.2, 0.9, hd)[None].repeat(cfg.n_layer, 0)
    tok = torch.zeros(V, d)
    tok[:, 1:] = 0.1 * torch.randn(V, d - 1, generator=g)      # dimensions W_K ignores
    tok[:10, 0] = 1.0      # class "punctuation": keys along +<bQ>
    tok[10:25, 0] = -1.0   # class "content": keys along -<bQ>
    pos = torch.zeros(T, d)
    pos[:, 0] = torch.linspace(-1, 1, T)                       # key along <bQ> rising with position
    pos[:, 1] = 1.0                                            # plus a fixed orthogonal part
    state = {"tok_emb.weight": tok, "pos_emb.weight": pos}
    orth = np.zeros(hd)
    orth[0], orth[1] = bq[0][1], -bq[0][0]                      # orthogonal to <bQ>
    for L in range(cfg.n_layer):
        qkv = torch.zeros(3 * d, d)
        for h in range(H):
            qkv[d + h * hd:d + (h + 1) * hd, 0] = torch.as_tensor(bq[L], dtype=torch.float32)
            qkv[d + h * hd:d + (h + 1) * hd, 1] = torch.as_tensor(orth, dtype=torch.float32)
        state[f"blocks.{L}.attn.qkv.weight"] = qkv
        state[f"blocks.{L}.attn.out_proj.weight"] = torch.zeros(d, d)
    classes = ["punctuation"] * 10 + ["content"] * 15 + ["function"] * 5
    res = bq_alignment(state, cfg.n_layer, H, bq, classes=classes, n_perm=500)
    for layer in res["layers"]:
        tc = layer["token_classes"]["classes"]
        assert tc["punctuation"]["frac_positive"] == 1.0 and tc["content"]["frac_positive"] == 0.0
        assert layer["token_classes"]["structure_content"]["holds"]
        rc = layer["position_recency"]
        assert rc["spearman"] == pytest.approx(1.0) and rc["p_perm"] == pytest.approx(1 / 2001)
        assert layer["position_recency_per_head"] == pytest.approx([1.0] * H)
        assert len(layer["token_cos_head_mean_square"]) == H
        assert layer["bq_norm"] == pytest.approx(float(np.linalg.norm(bq[0])))
