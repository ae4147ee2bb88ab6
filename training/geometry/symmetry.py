"""Symmetry breaking in attention (arXiv 2601.22257; the disordered attention of evasilverstein/symmetry-breaking-files'
``symmetry_breaking_paper_code/train_gpt_disorder.py`` and its bQ analyses ``analysis/analysis_bQ_batch.py``,
``analysis/analysis_bQ_null_baseline.py``).

Two parts, one implementation each (the biases themselves are part of the model:
:mod:`training.core.attention_bias`):

* Symmetry diagnostics from checkpoints: per head, the balancedness B = Θ_QΘ_Qᵀ − Θ_KΘ_Kᵀ (and the V–O
  analogue W_V W_Vᵀ − W_O^(h)ᵀW_O^(h)) and the Noether charge J = antisym(Θ_Q Π_Qᵀ + Θ_K Π_Kᵀ), Π a velocity
  (an optimizer's velocity buffer or the difference of consecutive checkpoints).
* bQ alignment: cos(W_K^(h)·e, ⟨bQ⟩) for every token embedding e and every learned position embedding, per
  layer and head, with the analytic null (a random direction: mean 0, variance 1/head_dim).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from training.core import runio
from training.core.errors import UserError
from training.core.runio import read_run_config


def mean_bq(run_dir: Path, step: int) -> np.ndarray:
    """⟨bQ⟩ per layer (n_layer, head_dim): the mean of the training draws up to ``step`` (the
    distribution mean at step 0, before any draw)."""
    rows = []
    for d in runio.read_bias_stats(run_dir, step)["layers"]:
        q = d["streams"].get("q")
        if q is None:
            raise UserError(f"{run_dir} was trained without bQ (attn_disorder has no 'q')")
        rows.append(q["mean_of_draws"] if q["mean_of_draws"] is not None else [q["mean"]] * d["head_dim"])
    return np.asarray(rows, dtype=np.float64)


# ---------------------------------------------------------------------------- per-head blocks of the weights
def head_blocks(state: dict[str, torch.Tensor], layer: int, n_head: int) -> dict[str, list[torch.Tensor]]:
    """Per-head row blocks Θ_Q, Θ_K, Θ_V (head_dim × d_model) of layer ``layer``'s fused qkv matrix and the
    column blocks W_O^(h) (d_model × head_dim) of its output projection, in float64; ``bq``: the learned query
    bias of the layer (``attn_bq_learned``) as one head_dim × 1 column, or an empty list without one."""
    qkv = state[f"blocks.{layer}.attn.qkv.weight"].double()
    out = state[f"blocks.{layer}.attn.out_proj.weight"].double()
    d = qkv.shape[1]
    hd = d // n_head
    q, k, v = qkv[:d], qkv[d:2 * d], qkv[2 * d:]
    bq = state.get(f"blocks.{layer}.attn.bq")
    return {"q": [q[h * hd:(h + 1) * hd] for h in range(n_head)],
            "k": [k[h * hd:(h + 1) * hd] for h in range(n_head)],
            "v": [v[h * hd:(h + 1) * hd] for h in range(n_head)],
            "o": [out[:, h * hd:(h + 1) * hd] for h in range(n_head)],
            "bq": [] if bq is None else [bq.double().reshape(hd, 1)]}


def antisym(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m - m.transpose(-1, -2))


def noether_charge(theta: dict, velocity: dict) -> dict[str, list[torch.Tensor]]:
    """J per head: QK sector antisym(Θ_Q Π_Qᵀ + Θ_K Π_Kᵀ); VO sector antisym(Θ_V Π_Vᵀ + W_Oᵀ Π_O) (the
    rotation acts on W_O's columns, Θ_V → RΘ_V, W_O → W_O Rᵀ). ``theta`` and ``velocity`` are
    :func:`head_blocks` outputs of the weights and of a velocity of the same layer.

    ``qk_layer`` (one matrix per layer): the charge of the rotation common to all heads of the layer,
    Σ_h antisym(Θ_Q^h Π_Q^hᵀ + Θ_K^h Π_K^hᵀ) + antisym(b_Q π_bᵀ). A learned query bias b_Q shared by the heads is
    a symmetry partner only of that common rotation (Θ_Q^h → RΘ_Q^h, Θ_K^h → RΘ_K^h for every h, b_Q → R b_Q;
    the generator A = −Aᵀ moves b_Q by A b_Q, so Noether's J = Σ_i x_i π_iᵀ antisymmetrised over everything the
    rotation moves gains the term b_Q π_bᵀ): with it, the per-head charges are not conserved, their sum with the
    bias term is. Without a learned bias the term is absent and qk_layer is the sum of the per-head charges."""
    out = {"qk": [], "vo": [], "qk_layer": []}
    for tq, tk, pq, pk in zip(theta["q"], theta["k"], velocity["q"], velocity["k"]):
        out["qk"].append(antisym(tq @ pq.T + tk @ pk.T))
    for tv, to, pv, po in zip(theta["v"], theta["o"], velocity["v"], velocity["o"]):
        out["vo"].append(antisym(tv @ pv.T + to.T @ po))
    total = sum(out["qk"]) + sum((b @ pb.T for b, pb in zip(theta.get("bq", []), velocity.get("bq", []))),
                                 torch.zeros_like(out["qk"][0]))
    out["qk_layer"].append(antisym(total))
    return out


SECTOR_BLOCKS = {"qk": ("q", "k"), "vo": ("v", "o"), "qk_layer": ("q", "k", "bq")}


def charge_norms(theta: dict, velocity: dict) -> dict[str, dict[str, list[float]]]:
    """Per sector of :func:`noether_charge`: the Frobenius norm of each charge matrix (``abs``) and the same
    divided by ‖Θ_sector‖·‖Π_sector‖ (``rel``; scale-free; the blocks the sector's rotation moves, per head, or all
    heads of the layer and the learned bias for ``qk_layer``)."""
    J = noether_charge(theta, velocity)
    out = {}
    for sec, names in SECTOR_BLOCKS.items():
        heads = [None] if sec == "qk_layer" else range(len(theta["q"]))
        scale = [_block_norm(theta, names, h) * _block_norm(velocity, names, h) for h in heads]
        norms = [float(torch.linalg.norm(j)) for j in J[sec]]
        out[sec] = {"abs": norms, "rel": [a / b if b > 0 else 0.0 for a, b in zip(norms, scale)]}
    return out


def _block_norm(blocks: dict, names, head: int | None) -> float:
    """‖(the named blocks of head ``head``)‖, or of every head's and the bias's blocks with ``head=None``."""
    parts = [t for n in names for t in blocks.get(n, [])] if head is None else [blocks[n][head] for n in names
                                                                                  if n != "bq"]
    return math.sqrt(sum(float(t.pow(2).sum()) for t in parts))


def balancedness(theta: dict) -> dict[str, list[torch.Tensor]]:
    """B per head: QK sector Θ_QΘ_Qᵀ − Θ_KΘ_Kᵀ; VO sector Θ_VΘ_Vᵀ − W_OᵀW_O (conserved by gradient flow)."""
    return {"qk": [tq @ tq.T - tk @ tk.T for tq, tk in zip(theta["q"], theta["k"])],
            "vo": [tv @ tv.T - to.T @ to for tv, to in zip(theta["v"], theta["o"])]}


def symmetry_trajectory(run_dir: Path, steps: list[int] | None = None) -> dict:
    """For every checkpoint t after the first: per layer and sector, the RMS over heads of the Frobenius
    norms ‖B(t) − B(0)‖ and ‖J(t)‖, with J from the velocity Π = θ(t) − θ(t_prev) between consecutive
    checkpoints, and the same two norms relative to ‖B(0)‖ and ‖Θ‖·‖Π‖ (scale-free)."""
    cfg = read_run_config(run_dir)
    have = runio.list_checkpoints(run_dir)
    steps = have if steps is None else [s for s in steps if s in have]
    if len(steps) < 2:
        raise UserError(f"{run_dir} needs at least two checkpoints for symmetry diagnostics")
    states = {}

    def load(s):
        if s not in states:
            states.clear() if len(states) > 2 else None
            states[s] = runio.load_checkpoint(runio.checkpoint_path(run_dir, s))[0]
        return states[s]

    if cfg.attn_bq_learned and "blocks.0.attn.bq" not in load(steps[0]):
        raise UserError(f"{run_dir} learned its query bias but its checkpoints hold no blocks.L.attn.bq (trunk-only "
                        "checkpoints?): the layer charge needs it")
    base = {L: balancedness(head_blocks(load(steps[0]), L, cfg.n_head)) for L in range(cfg.n_layer)}
    rows = []
    for prev, cur in zip(steps[:-1], steps[1:]):
        sp, sc = load(prev), load(cur)
        row = {"step": cur, "prev": prev, "layers": []}
        for L in range(cfg.n_layer):
            tc, tp = head_blocks(sc, L, cfg.n_head), head_blocks(sp, L, cfg.n_head)
            vel = {k: [a - b for a, b in zip(tc[k], tp[k])] for k in tc}
            J = charge_norms(tc, vel)
            B = balancedness(tc)
            entry = {}
            for sec in ("qk", "vo"):
                db = [float(torch.linalg.norm(b - b0)) for b, b0 in zip(B[sec], base[L][sec])]
                b0 = [float(torch.linalg.norm(b0)) for b0 in base[L][sec]]
                entry[sec] = {"balancedness_drift": _rms(db),
                              "balancedness_drift_rel": _rms([a / b if b > 0 else 0.0 for a, b in zip(db, b0)])}
            for sec in SECTOR_BLOCKS:
                entry.setdefault(sec, {}).update(charge=_rms(J[sec]["abs"]), charge_rel=_rms(J[sec]["rel"]))
            row["layers"].append(entry)
        for sec in SECTOR_BLOCKS:
            for key in ("balancedness_drift", "balancedness_drift_rel", "charge", "charge_rel"):
                if key in row["layers"][0][sec]:
                    row[f"{sec}_{key}"] = _rms([e[sec][key] for e in row["layers"]])
        rows.append(row)
    return {"steps": steps, "rows": rows,
            "definitions": {"charge": "RMS over heads and layers of ||antisym(Θ_Q Πᵀ_Q + Θ_K Πᵀ_K)||_F (VO: antisym(Θ_V Πᵀ_V + W_Oᵀ Π_O)), Π = θ(t) − θ(prev)",
                            "charge_rel": "the same with each head's norm divided by ||Θ_sector||·||Π_sector||",
                            "qk_layer_charge": "RMS over layers of ||Σ_h antisym(Θ_Q Πᵀ_Q + Θ_K Πᵀ_K) + antisym(b_Q π_bᵀ)||_F, "
                                               "the charge of the rotation common to a layer's heads (b_Q: a learned "
                                               "query bias)",
                            "balancedness_drift": "RMS of ||B(t) − B(first)||_F, B = Θ_QΘ_Qᵀ − Θ_KΘ_Kᵀ (VO: Θ_VΘ_Vᵀ − W_OᵀW_O)"}}


def _rms(xs) -> float:
    xs = list(xs)
    return math.sqrt(sum(x * x for x in xs) / len(xs)) if xs else 0.0


# ---------------------------------------------------------------------------- bQ alignment
def alignment_cosines(keys: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """cos(keys[..., i, :], direction) along the last axis (zero rows give 0)."""
    keys = keys.double()
    d = direction.double()
    num = keys @ d
    den = keys.norm(dim=-1) * d.norm()
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


def layer_cosines(state: dict[str, torch.Tensor], layer: int, n_head: int, bq_layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, V) token and (H, T) position cosines cos(W_K^(h)·e, ⟨bQ⟩_l) of one layer (raw tied token
    embedding, learned positions, no LayerNorm, no key bias)."""
    tok, pos = state["tok_emb.weight"].double(), state["pos_emb.weight"].double()
    blocks = head_blocks(state, layer, n_head)
    b = torch.as_tensor(np.asarray(bq_layer), dtype=torch.float64)
    tok_cos = torch.stack([alignment_cosines(tok @ wk.T, b) for wk in blocks["k"]])
    pos_cos = torch.stack([alignment_cosines(pos @ wk.T, b) for wk in blocks["k"]])
    return tok_cos, pos_cos


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata
    return rankdata(x)


def recency(curve, n_perm: int = 2000, seed: int = 0) -> dict:
    """Recency of a positional alignment curve c(p), p = 0..T−1 (for a query at position t, causal attention
    sees keys p ≤ t, so c rising with p favours recent keys).

    ``spearman``: rank correlation of c(p) with p; ``slope``: least-squares slope of c against p/(T−1) (the
    fitted change of the cosine from the first to the last position); ``late_minus_early``: mean c over the last
    quarter of positions − over the first quarter. Null: the positions shuffled ``n_perm`` times (seeded),
    giving the null sd of the Spearman correlation (analytic ≈ 1/√(T−1)) and its two-sided p-value
    (1 + #|null| ≥ |observed|)/(1 + n_perm)."""
    c = np.asarray(curve, dtype=np.float64)
    T = c.size
    if T < 4:
        return {"reason": f"{T} positions; at least 4 are needed"}
    u = np.arange(T) / (T - 1)
    rc = _ranks(c)
    rp = np.arange(T, dtype=np.float64)

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean(axis=-1, keepdims=True)
        den = np.sqrt((a * a).sum() * (b * b).sum(axis=-1))
        return np.where(den > 0, (b @ a) / np.where(den > 0, den, 1), 0.0)

    rho = float(corr(rp, rc))
    uc = u - u.mean()
    slope = float(uc @ (c - c.mean()) / (uc @ uc))
    q = max(1, T // 4)
    rng = np.random.default_rng([seed, 6151])
    null = corr(rp, np.stack([rng.permutation(rc) for _ in range(n_perm)])) if n_perm else np.zeros(0)
    return {"spearman": rho, "slope": slope, "late_minus_early": float(c[-q:].mean() - c[:q].mean()),
            "positions": T, "null_spearman_sd": float(null.std()) if n_perm else None,
            "null_spearman_sd_analytic": 1.0 / math.sqrt(T - 1),
            "p_perm": float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (1 + n_perm)) if n_perm else None,
            "n_perm": n_perm, "reason": None}


def bq_alignment(state: dict[str, torch.Tensor], n_layer: int, n_head: int, bq: np.ndarray, top: int = 15,
                 classes: list[str] | None = None, n_perm: int = 1000, seed: int = 0) -> dict:
    """Token and position alignment with ⟨bQ⟩ per layer and head (as symmetry-breaking-files'
    ``analysis/analysis_bQ_batch.py``): cos(W_K^(h)·e, ⟨bQ⟩_l)
    for every row e of the (raw, tied) token embedding and of the learned position embedding, with no
    LayerNorm and no key bias. Per layer: the mean over heads of the token cosines' mean, std and the
    z-score of their mean square against the analytic null (a random direction in head_dim dimensions has
    E cos² = 1/head_dim), per head the mean cosine and mean cos², the top/bottom ``top`` token ids by
    head-mean cosine, the position curve and its :func:`recency` (head mean and per head); with ``classes``
    (one class per token id, :mod:`training.geometry.token_classes`), the enrichment of positive head-mean
    alignment in each class."""
    from training.geometry.token_classes import class_enrichment, structure_content_direction
    out = []
    for L in range(n_layer):
        tok_cos, pos_cos = layer_cosines(state, L, n_head, bq[L])
        hd = int(np.asarray(bq[L]).size)
        b_norm = float(np.linalg.norm(np.asarray(bq[L], dtype=np.float64)))
        mean_tok = tok_cos.mean(0)
        order = torch.argsort(mean_tok, descending=True)
        ms = float(tok_cos.pow(2).mean())
        n = tok_cos.numel()
        pos_mean = pos_cos.mean(0).numpy()
        entry = {"layer": L, "bq_norm": b_norm,
                 "token_cos_mean": float(tok_cos.mean()), "token_cos_std": float(tok_cos.std()),
                 "token_cos_mean_square": ms, "null_mean_square": 1.0 / hd,
                 # the mean of n cos² values under the null: variance ≈ 2/(hd(hd+2)) per value (cos² ~ Beta)
                 "z_mean_square": (ms - 1.0 / hd) / math.sqrt(2.0 * (hd - 1) / (hd * hd * (hd + 2)) / n),
                 "token_cos_head_mean": tok_cos.mean(1).tolist(),
                 "token_cos_head_mean_square": tok_cos.pow(2).mean(1).tolist(),
                 "top_tokens": order[:top].tolist(), "top_cos": mean_tok[order[:top]].tolist(),
                 "bottom_tokens": order[-top:].flip(0).tolist(), "bottom_cos": mean_tok[order[-top:].flip(0)].tolist(),
                 "position_cos": pos_mean.tolist(),
                 "position_cos_first_last_heads": [pos_cos[0].tolist(), pos_cos[-1].tolist()],
                 "position_recency": recency(pos_mean, seed=seed),
                 "position_recency_per_head": [recency(pos_cos[h].numpy(), n_perm=0)["spearman"]
                                               for h in range(n_head)]}
        if classes is not None:
            vals = mean_tok.numpy()
            if len(classes) < vals.size:             # padded embedding rows beyond the tokenizer's vocabulary
                vals = vals[:len(classes)]
            enr = class_enrichment(vals, classes[:vals.size], n_perm=n_perm, seed=seed)
            enr["structure_content"] = structure_content_direction(enr)
            entry["token_classes"] = enr
        out.append(entry)
    return {"layers": out}


def null_direction(mean: float, std_first: float, std_last: float, head_dim: int, n_layer: int, seed: int) -> np.ndarray:
    """One random bQ draw per layer from the bQ distribution: the null of symmetry-breaking-files'
    ``analysis/analysis_bQ_null_baseline.py`` for a symmetric model."""
    rng = np.random.default_rng([seed, 4242])
    std = np.linspace(std_first, std_last, head_dim)
    return mean + std * rng.standard_normal((n_layer, head_dim))
