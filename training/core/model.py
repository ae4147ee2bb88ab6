"""The GPT of the paper (arXiv 2602.23696 §2.1; the README's "paper" preset).

Decoder-only, pre-LayerNorm, learned absolute positions, no linear biases, the LM head tied to the
token embedding, N(0, init_std) initialisation of every Linear and Embedding (no residual scaling),
exact GELU. Blocks can be attention-only (no MLP, hence no dead parameters).

Symmetry-breaking options (training/core/attention_bias.py): random non-learned q/k/v biases
(``attn_disorder``), a learned query bias ``blocks.L.attn.bq`` (``attn_bq_learned``; head_dim entries shared by
the heads, started at ``attn_bq_mean``) and a PReLU MLP ``blocks.L.mlp.slope`` (``mlp_act=prelu_random``:
max(h, 0) + a·min(h, 0) per hidden unit, a learnable, drawn from N(0.2, 1) with the run's seed). Neither
parameter is in the trunk.

Attention has two interchangeable paths, selectable at run time with :meth:`GPT.set_attention`:
``"sdpa"`` (``F.scaled_dot_product_attention``, used for training) and ``"math"`` (explicit
softmax(QKᵀ/√d)V, which supports forward-mode and higher-order autodiff used by analyses).

The *trunk* (docs/definitions.md) is, per block, the attention qkv and output matrices and the MLP up and
down matrices, in module registration order. :func:`trunk_parameters` is the single place that
defines it; every gradient, drift and direction in the toolkit is flattened in that order.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.core.attention_bias import AttentionBias, prelu_slopes
from training.core.config import ATTENTION, Config


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.n_head = cfg.n_head
        self.head_dim = cfg.d_model // cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.backend = cfg.attention
        # disordered attention (training/core/attention_bias.py): random non-learned q/k/v biases; None = symmetric
        self.bias = AttentionBias(cfg) if cfg.attn_disorder != "none" else None
        # a learned query bias (attn_bq_learned): one head_dim vector per layer added to every head's queries
        self.bq_mean = cfg.attn_bq_mean
        if cfg.attn_bq_learned:
            self.bq = nn.Parameter(torch.full((self.head_dim,), float(cfg.attn_bq_mean)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        if self.bias is not None:
            q, k, v = self.bias(q, k, v, self.training)
        if hasattr(self, "bq"):
            q = q + self.bq.repeat(self.n_head)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        hook = getattr(self, "prob_hook", None)    # set by analyses that read / edit the probabilities
        if self.backend == "sdpa" and hook is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = math_attention(q, k, v, dropout_p=p, training=self.training, hook=hook)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.out_proj(y))


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   dropout_p: float = 0.0, training: bool = False, hook=None) -> torch.Tensor:
    """Explicit causal attention softmax(q kᵀ / √d + mask) v, differentiable to any order.

    ``hook(att)``, when given, receives the probabilities (B, H, T, T) and returns the ones to use
    (a module's ``prob_hook`` attribute; see training/geometry/attention_probe.py).
    """
    T = q.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    if hook is not None:
        att = hook(att)
    if dropout_p > 0 and training:
        att = F.dropout(att, p=dropout_p)
    return att @ v


class MLP(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.w_up = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.w_down = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.act = cfg.mlp_act
        if self.act == "prelu_random":       # per-hidden-unit negative slopes (set by GPT.reset_parameters)
            self.slope = nn.Parameter(torch.zeros(cfg.d_ff))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w_up(x)
        h = F.gelu(h) if self.act == "gelu" else torch.where(h >= 0, h, self.slope * h)
        return self.drop(self.w_down(h))


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        if not cfg.attn_only:
            self.ln2 = nn.LayerNorm(cfg.d_model)
            self.mlp = MLP(cfg)
        self.attn_only = cfg.attn_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        if not self.attn_only:
            x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: Config, vocab_size: int):
        super().__init__()
        self.cfg = cfg
        self.vocab_size = vocab_size
        # rows padded to a multiple of cfg.vocab_multiple (tensor-core friendly shapes); the extra rows start
        # at zero, are never an input, and their logits are sliced off, so they stay zero and change nothing
        mult = max(1, getattr(cfg, "vocab_multiple", 1))
        self.padded_vocab = -(-vocab_size // mult) * mult
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        for i, block in enumerate(self.blocks):
            if block.attn.bias is not None:
                block.attn.bias.layer = i          # each layer draws its own attention biases
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size, bias=False)
        if self.padded_vocab != vocab_size:    # built unpadded first: the random stream is the unpadded model's
            w = self.tok_emb.weight
            self.tok_emb.weight = nn.Parameter(torch.cat([w.detach(), w.new_zeros(self.padded_vocab - vocab_size,
                                                                                  cfg.d_model)]))
            self.tok_emb.num_embeddings = self.lm_head.out_features = self.padded_vocab
        self.lm_head.weight = self.tok_emb.weight      # tied
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        for m in self.modules():
            if (m is self.tok_emb or m is self.lm_head) and self.padded_vocab != self.vocab_size:
                with torch.no_grad():       # the real rows draw exactly what an unpadded model draws
                    m.weight.zero_()
                    nn.init.normal_(m.weight[:self.vocab_size], mean=0.0, std=std)
            elif isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, mean=0.0, std=std)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():                # drawn outside torch's generator: the other weights stay as without
            for i, block in enumerate(self.blocks):
                if hasattr(block.attn, "bq"):
                    block.attn.bq.fill_(block.attn.bq_mean)
                if not block.attn_only and hasattr(block.mlp, "slope"):
                    block.mlp.slope.copy_(torch.as_tensor(prelu_slopes(self.cfg.seed, i, self.cfg.d_ff)))

    def set_attention(self, backend: str) -> "GPT":
        if backend not in ATTENTION:
            raise ValueError(f"unknown attention backend {backend!r}")
        for block in self.blocks:
            block.attn.backend = backend
        return self

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> logits (B, T, V)."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return logits if self.padded_vocab == self.vocab_size else logits[..., :self.vocab_size]

    def num_params(self) -> int:
        """Number of distinct parameters (the tied embedding/head counted once, vocabulary padding not counted)."""
        return sum(p.numel() for p in self.parameters()) - (self.padded_vocab - self.vocab_size) * self.cfg.d_model


# ---------------------------------------------------------------------------- the trunk
TRUNK_SUFFIXES = ("attn.qkv.weight", "attn.out_proj.weight", "mlp.w_up.weight", "mlp.w_down.weight")


def trunk_names(cfg: Config, block: int | None = None) -> list[str]:
    """State-dict names of the trunk matrices in canonical order (per block: qkv, out_proj, w_up, w_down).

    ``block`` selects one block; ``None`` gives the whole trunk, block by block.
    """
    suffixes = TRUNK_SUFFIXES[:2] if cfg.attn_only else TRUNK_SUFFIXES
    blocks = range(cfg.n_layer) if block is None else [block]
    if block is not None and not 0 <= block < cfg.n_layer:
        raise IndexError(f"block {block} out of range for a {cfg.n_layer}-layer model")
    return [f"blocks.{b}.{s}" for b in blocks for s in suffixes]


def trunk_parameters(model: GPT, block: int | None = None) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs of the trunk (or of one block's trunk) in canonical order."""
    params = dict(model.named_parameters())
    return [(n, params[n]) for n in trunk_names(model.cfg, block)]


def trunk_tensor_sizes(cfg: Config, block: int | None = None) -> list[int]:
    """Number of entries of each trunk matrix, in the order of :func:`trunk_names`."""
    d, f = cfg.d_model, cfg.d_ff
    size = {"attn.qkv.weight": 3 * d * d, "attn.out_proj.weight": d * d, "mlp.w_up.weight": d * f,
            "mlp.w_down.weight": f * d}
    return [size[n.split(".", 2)[2]] for n in trunk_names(cfg, block)]


def trunk_size(cfg: Config, block: int | None = None) -> int:
    d, f = cfg.d_model, cfg.d_ff
    per_block = 3 * d * d + d * d + (0 if cfg.attn_only else 2 * d * f)
    return per_block * (cfg.n_layer if block is None else 1)
