"""Disordered attention: random, non-learned biases bQ, bK, bV on the queries, keys and values (the
symmetry-breaking / ECD study's "disordered attention"; off unless ``attn_disorder`` asks for it).

:class:`AttentionBias` is an optional part of :class:`training.core.model.CausalSelfAttention`. The biases are
drawn afresh at every training forward, one draw per layer shared by all heads, b = mean + std ⊙ ε with
std = linspace(first, last, head_dim). Draw number n of layer l is a pure function of (seed, layer, stream, n),
so the only state is a draw counter; that counter, the running mean of the draws and the last draw are written
next to every checkpoint (``step_XXXXXX.attn_bias.json``), so a resumed run continues exactly and analyses read
⟨bQ⟩ without touching the weights. Evaluation uses the policy ``mean`` (the distribution mean; deterministic),
``last`` (the last training draw, as evasilverstein/symmetry-breaking-files' train_gpt_disorder.py does) or
``resample`` (a fresh draw per evaluation forward, from a stream of its own); the run directory's files of this state are written and read by
:mod:`training.core.runio`. The diagnostics of the symmetry these biases break live in
:mod:`training.geometry.symmetry`.

:class:`BreakingSettings` holds the two controls added later (their fields come last in config.json): a
*learned* query bias (``attn_bq_learned``: an ``nn.Parameter`` of head_dim entries per layer, shared by the heads,
started at ``attn_bq_mean``; it rotates with W_Q and W_K, so a rotation common to the heads stays a symmetry) and
the MLP activation (``mlp_act``: ``gelu`` or ``prelu_random``, per-hidden-unit learnable negative slopes drawn from
N(0.2, 1) with the run's seed, the RandomPReLU1d of evasilverstein/symmetry-breaking-files' train_gpt_disorder.py
as its README and results describe it). Both live in :mod:`training.core.model`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from training.core.errors import UserError

STREAMS = {"q": 0, "k": 1, "v": 2}
EVAL_STREAM_OFFSET = 10          # evaluation draws ("resample") use streams 10, 11, 12

def bias_spec(cfg) -> dict[str, tuple[float, float, float]]:
    """{stream: (mean, std_first, std_last)} of the biases ``cfg.attn_disorder`` switches on."""
    table = {"q": (cfg.attn_bq_mean, cfg.attn_bq_std_first, cfg.attn_bq_std_last),
             "k": (cfg.attn_bk_mean, cfg.attn_bk_std_first, cfg.attn_bk_std_last),
             "v": (cfg.attn_bv_mean, cfg.attn_bv_std_first, cfg.attn_bv_std_last)}
    which = "" if cfg.attn_disorder == "none" else cfg.attn_disorder
    return {s: table[s] for s in "qkv" if s in which}


@dataclass
class AttentionBiasSettings:
    """Disordered attention: non-learned random biases added to the queries (bQ), keys (bK) and values (bV),
    fields of :class:`training.core.config.Config` (checked by :func:`check_attention_bias`)."""
    attn_disorder: str = "none"      # none | q | qk | qv | qkv: which of bQ, bK, bV are added
    attn_bq_mean: float = 0.5        # bQ ~ mean + std_i * N(0, 1), std_i = linspace(first, last, head_dim)
    attn_bq_std_first: float = 0.05
    attn_bq_std_last: float = 0.15
    attn_bk_mean: float = 0.3        # bK cancels in the softmax (a no-op kept for symmetry-breaking-files' runs)
    attn_bk_std_first: float = 0.12
    attn_bk_std_last: float = 0.08
    attn_bv_mean: float = 0.0
    attn_bv_std_first: float = 0.05
    attn_bv_std_last: float = 0.05
    attn_bias_seed: Optional[int] = None   # seed of the bias draws; None = seed
    attn_bias_eval: str = "mean"     # evaluation bias: mean | last (the last training draw, reference) | resample


MLP_ACTS = ("gelu", "prelu_random")
PRELU_SLOPE_MEAN, PRELU_SLOPE_STD = 0.2, 1.0      # RandomPReLU1d's initial negative slopes, N(0.2, 1.0²)


@dataclass
class BreakingSettings:
    """Symmetry-breaking controls added after the published field order (last in config.json; hashed only when
    set, so earlier runs keep their hashes); checked by :func:`check_attention_bias`."""
    attn_bq_learned: bool = False    # a learned query bias per layer (shared by the heads), started at attn_bq_mean
    mlp_act: str = "gelu"            # gelu | prelu_random (learnable per-hidden-unit negative slopes ~ N(0.2, 1))


def prelu_slopes(seed: int, layer: int, d_ff: int) -> np.ndarray:
    """The initial negative slopes of layer ``layer``'s PReLU MLP: N(0.2, 1.0²) per hidden unit, a pure
    function of (seed, layer) that leaves torch's generator (hence every other initial weight) untouched."""
    rng = np.random.default_rng([seed, layer, 9173])
    return PRELU_SLOPE_MEAN + PRELU_SLOPE_STD * rng.standard_normal(d_ff)


class AttentionBias(nn.Module):
    """Random, non-learned q/k/v biases of one attention layer (see the module docstring)."""

    def __init__(self, cfg, layer: int = 0):
        super().__init__()
        self.head_dim, self.n_head = cfg.d_model // cfg.n_head, cfg.n_head
        self.spec = bias_spec(cfg)
        self.seed = cfg.seed if cfg.attn_bias_seed is None else cfg.attn_bias_seed
        self.policy = cfg.attn_bias_eval
        self.layer = layer
        for s, (mean, first, last) in self.spec.items():
            self.register_buffer(f"mean_{s}", torch.full((self.head_dim,), float(mean)), persistent=False)
            self.register_buffer(f"std_{s}", torch.linspace(first, last, self.head_dim), persistent=False)
        self.draws = 0                    # training draws so far (each draws every stream once)
        self.eval_draws = 0
        self.sums = {s: np.zeros(self.head_dim) for s in self.spec}      # float64 running sums of the draws
        self.last = {s: None for s in self.spec}

    def _draw(self, stream: int, index: int) -> np.ndarray:
        return np.random.default_rng([self.seed, self.layer, stream, index]).standard_normal(self.head_dim)

    def sample(self, s: str, training: bool) -> torch.Tensor:
        """The bias of stream ``s`` for one forward (advances no counter; see :meth:`forward`)."""
        mean, std = getattr(self, f"mean_{s}"), getattr(self, f"std_{s}")
        if training or self.policy == "resample":
            stream = STREAMS[s] + (0 if training else EVAL_STREAM_OFFSET)
            eps = self._draw(stream, self.draws if training else self.eval_draws)
            return mean + std * torch.as_tensor(eps, dtype=mean.dtype, device=mean.device)
        if self.policy == "last" and self.last[s] is not None:
            return torch.as_tensor(self.last[s], dtype=mean.dtype, device=mean.device)
        return mean

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, training: bool):
        """Add the biases to q, k, v of shape (B, T, n_head·head_dim); one draw shared by all heads."""
        out = {"q": q, "k": k, "v": v}
        for s in self.spec:
            b = self.sample(s, training)
            if training:
                self.sums[s] += b.detach().double().cpu().numpy()
                self.last[s] = b.detach().cpu().tolist()
            out[s] = out[s] + b.to(out[s].dtype).repeat(self.n_head)
        if training:
            self.draws += 1
        elif self.policy == "resample":
            self.eval_draws += 1
        return out["q"], out["k"], out["v"]

    def stats(self) -> dict:
        return {"layer": self.layer, "draws": self.draws, "eval_draws": self.eval_draws, "seed": self.seed,
                "policy": self.policy, "head_dim": self.head_dim,
                "streams": {s: {"mean": float(m), "std_first": float(a), "std_last": float(b),
                                "sum": self.sums[s].tolist(), "last": self.last[s],
                                "mean_of_draws": (self.sums[s] / self.draws).tolist() if self.draws else None}
                            for s, (m, a, b) in self.spec.items()}}

    def load_stats(self, d: dict) -> None:
        self.draws, self.eval_draws = int(d["draws"]), int(d["eval_draws"])
        for s in self.spec:
            self.sums[s] = np.asarray(d["streams"][s]["sum"], dtype=np.float64)
            self.last[s] = d["streams"][s]["last"]


def attention_biases(model: nn.Module) -> list[AttentionBias]:
    return [m for m in model.modules() if isinstance(m, AttentionBias)]


def check_attention_bias(cfg) -> None:
    """One-line errors for impossible disordered-attention settings (the ``attn_*`` fields)."""
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise UserError(msg)
    need(cfg.attn_disorder in ("none", "q", "qk", "qv", "qkv"),
         f"unknown attn_disorder '{cfg.attn_disorder}' (choose from none, q, qk, qv, qkv)")
    need(cfg.attn_bias_eval in ("mean", "last", "resample"),
         f"unknown attn_bias_eval '{cfg.attn_bias_eval}' (choose from mean, last, resample)")
    need(cfg.mlp_act in MLP_ACTS, f"unknown mlp_act '{cfg.mlp_act}' (choose from {', '.join(MLP_ACTS)})")
    need(not (cfg.attn_bq_learned and cfg.attn_disorder != "none"),
         f"attn_bq_learned=true needs attn_disorder=none (a query bias is either learned or random; got "
         f"attn_disorder={cfg.attn_disorder})")
    need(min(cfg.attn_bq_std_first, cfg.attn_bq_std_last, cfg.attn_bk_std_first, cfg.attn_bk_std_last,
             cfg.attn_bv_std_first, cfg.attn_bv_std_last) >= 0, "attention-bias std values must be >= 0")
