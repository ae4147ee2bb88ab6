"""Mini-batch gradients of the trunk and their alignment with trajectory directions (arXiv 2602.23696 §4.1, §4.4).

Every gradient here is a flat vector over the trunk (or one block's trunk) in the canonical order of
:func:`training.core.model.trunk_names` -- the order in which :mod:`training.geometry.trajectory` materialises
backbone and drift directions -- so ⟨g, v⟩ always pairs a gradient coordinate with the same parameter
as the direction (the reference's Fisher script paired them with a permuted order).

Analysis batches are drawn from :meth:`LMProbeTask.sample_batch` with keys ``[seed, GRAD_TAG, i]``:
the same seed gives the same M batches in every script; training keys are ``[data_seed, step, micro]``
and no run reaches step GRAD_TAG (≈1.7e9), so no training batch is replayed whatever the seed. The
gradient-matrix and forward-mode (JVP, :mod:`training.geometry.fisher`) paths use the same batches.

Formulas (g_i = gradient of mini-batch i, v a direction, D its dimension):

- alignment        cos_i = ⟨g_i, v⟩ / (‖g_i‖ ‖v‖)
- noise floor      E|cos(a, b)| ≈ sqrt(2 / (π D)) for a uniformly random unit direction in R^D
- t-statistic      t = mean_i cos_i / (s / √M), s the sample std (ddof = 1) of the M signed cosines: a sign
                   shared across mini-batches shows as |t| large even when every |cos_i| is at the floor
                   (a common component c₁ along v gives √M·mean ≈ √M·c₁, so t ≈ √M·c₁ / s)
- floor verdict    at the noise floor iff max over checkpoints of mean|cos|/floor < 3 and of |t| < 3
                   (:func:`floor_summary`)
- block projection P_iℓ = ⟨g_i[ℓ], v̂_ℓ⟩, the gradient restricted to block ℓ projected on block ℓ's
                   unit backbone; b_ℓ(t) = (1/M) Σ_i P_iℓ (eq. 24 of the paper, mean over mini-batches)
- cumulative bias  B_ℓ(t_k) = Σ_{j ≤ k} b_ℓ(t_j) over the analysed checkpoints t_1 < … < t_k (eq. 25):
                   an unweighted sum of raw gradient projections, no learning-rate factor or sign flip.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np
import torch

from training.core.batch import Batch
from training.core.config import Config
from training.core.data import LMProbeTask
from training.core.errors import UserError
from training.core.losses import composite_loss
from training.core.model import GPT, trunk_names, trunk_size
from training.core.optim import lambda_at
from training.geometry.analysis_io import parse_step_list

GRAD_TAG = 0x67726164                # "grad": key [seed, GRAD_TAG, i]; training keys are [data_seed, step, micro]
PARTS = ("total", "lm", "probe")     # which loss a gradient is of
CHUNK_ELEMS = 1 << 23                # float64 elements per column chunk in projections (64 MiB)


# ---------------------------------------------------------------------------- losses and batches
def part_loss(logits: torch.Tensor, batch: Batch, lam: float, part: str) -> torch.Tensor:
    """The scalar loss of ``part``: 'total' = L_LM + λ·L_probe, 'lm' = L_LM, 'probe' = L_probe.

    All three come from :func:`training.core.losses.composite_loss` (the training loss), so the gradients
    analysed are exactly those of training.
    """
    parts = composite_loss(logits, batch.y, batch.probe_mask, lam)
    if part == "total":
        return parts.loss
    if part == "lm":
        return parts.lm
    if part == "probe":
        return parts.probe
    raise UserError(f"unknown loss part '{part}' (choose from {', '.join(PARTS)})")


def analysis_batches(task: LMProbeTask, n_batches: int, seed: int, batch_size: int | None = None,
                     part: str = "total") -> list[Batch]:
    """The M seeded analysis mini-batches: key [seed, GRAD_TAG, i], i = 0..M-1.

    'total' and 'lm' use the training mixture (p_probe of the run); 'probe' uses p_probe = 1 so that
    every sequence carries a probe target (same key, so the same text windows).
    """
    if n_batches < 1:
        raise UserError(f"the number of mini-batches must be at least 1 (got {n_batches})")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"the mini-batch size must be at least 1 (got {batch_size})")
    if part not in PARTS:
        raise UserError(f"unknown loss part '{part}' (choose from {', '.join(PARTS)})")
    p_probe = 1.0 if part == "probe" else None
    return [task.sample_batch([seed, GRAD_TAG, i], batch_size=batch_size, p_probe=p_probe) for i in range(n_batches)]


# ---------------------------------------------------------------------------- gradients
def flat_grad(model: GPT, names: Sequence[str]) -> torch.Tensor:
    """Concatenation of the ``.grad`` of the named parameters, in the order of ``names``.

    Pass ``trunk_names(cfg, block)`` for the canonical trunk order.
    """
    params = dict(model.named_parameters())
    grads = []
    for n in names:
        g = params[n].grad
        if g is None:
            raise ValueError(f"parameter {n} has no gradient; run backward() on a loss that depends on it first")
        grads.append(g.reshape(-1))
    return torch.cat(grads)


@contextlib.contextmanager
def _grads_only_for(model: GPT, names: Sequence[str]) -> Iterator[None]:
    """Temporarily switch off weight gradients of every parameter not in ``names`` (saves the tied-head matmul)."""
    keep = set(names)
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in keep)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


def minibatch_gradients(model: GPT, task: LMProbeTask, cfg: Config, step: int, n_batches: int, seed: int,
                        batch_size: int | None = None, part: str = "total", block: int | None = None,
                        progress: bool = False) -> torch.Tensor:
    """G (M × D): row i is the gradient of the ``part`` loss on analysis batch i (mini-batch mean, not per sample).

    λ = lambda_at(cfg, step), the probe weight of the run's schedule at this checkpoint. The model is put
    in eval mode; rows are over the trunk (``block=None``) or one block, in canonical order, in the
    model's dtype and on its device. Memory: the M × D matrix plus one backward pass.
    """
    lam = lambda_at(cfg, step)
    names = trunk_names(cfg, block)
    first = next(model.parameters())
    G = torch.empty(n_batches, trunk_size(cfg, block), dtype=first.dtype, device=first.device)
    model.eval()
    batches = analysis_batches(task, n_batches, seed, batch_size, part)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc=f"grad {part} @{step}", unit="batch", leave=False, disable=None)
    with _grads_only_for(model, names):
        for i, b in enumerate(batches):
            b = b.to(first.device)
            model.zero_grad(set_to_none=True)
            part_loss(model(b.x), b, lam, part).backward()
            G[i] = flat_grad(model, names)
    model.zero_grad(set_to_none=True)
    return G


# ---------------------------------------------------------------------------- projections in float64
def as_direction(v: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A direction (D or D × m, numpy or torch) as a float64 tensor on the device of ``like``."""
    t = torch.as_tensor(v) if isinstance(v, np.ndarray) else v
    return t.to(device=like.device, dtype=torch.float64)


def project(G: torch.Tensor, V: np.ndarray | torch.Tensor) -> torch.Tensor:
    """G·V accumulated in float64 over column chunks: (M,) for a D-vector V, (M × m) for D × m.

    Gradient–backbone cosines sit near sqrt(2/(πD)), so ⟨g, v⟩ is a sum with heavy cancellation; float64
    accumulation keeps it exact to round-off whatever G's dtype, with memory M × chunk.
    """
    V = as_direction(V, G)
    if V.shape[0] != G.shape[1]:
        raise ValueError(f"direction has {V.shape[0]} coordinates, the gradients {G.shape[1]}")
    out = torch.zeros((G.shape[0],) + tuple(V.shape[1:]), dtype=torch.float64, device=G.device)
    width = chunk_width(G)
    for a in range(0, G.shape[1], width):
        out += G[:, a:a + width].to(torch.float64) @ V[a:a + width]
    return out


def chunk_width(G: torch.Tensor) -> int:
    """Columns per float64 chunk of an M-row matrix (about CHUNK_ELEMS elements)."""
    return max(1, CHUNK_ELEMS // max(1, G.shape[0]))


def row_norms(G: torch.Tensor) -> torch.Tensor:
    """‖g_i‖ for each row, accumulated in float64 over column chunks."""
    out = torch.zeros(G.shape[0], dtype=torch.float64, device=G.device)
    width = chunk_width(G)
    for a in range(0, G.shape[1], width):
        out += G[:, a:a + width].to(torch.float64).square().sum(dim=1)
    return out.sqrt()


def unit(v: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """v / ‖v‖ as float64 on the device of ``like`` (a zero vector is an error)."""
    v = as_direction(v, like)
    n = torch.linalg.vector_norm(v)
    if n == 0:
        raise UserError("a direction of the analysis is the zero vector")
    return v / n


# ---------------------------------------------------------------------------- alignment
def alignment(G: torch.Tensor, v: np.ndarray | torch.Tensor, norms: torch.Tensor | None = None) -> np.ndarray:
    """cos_i = ⟨g_i, v⟩ / (‖g_i‖ ‖v‖) for every row of G (0 for a zero gradient); ``norms`` = row_norms(G) if known."""
    proj = project(G, unit(v, G))
    n = row_norms(G) if norms is None else norms
    return torch.where(n > 0, proj / n.clamp(min=torch.finfo(torch.float64).tiny), 0.0).cpu().numpy()


def noise_floor(dim: int) -> float:
    """sqrt(2 / (π D)): the expected |cos| between a fixed and a uniformly random unit vector of R^D (large D)."""
    return math.sqrt(2.0 / (math.pi * dim))


def t_statistic(c: np.ndarray) -> float | None:
    """One-sample t-statistic of the values ``c`` against 0: mean / (s / √M), s the sample std (ddof = 1).

    None (not NaN) when M < 2 or the values have no spread (s = 0, e.g. all equal), so the result is JSON-safe.
    """
    c = np.asarray(c, dtype=np.float64)
    m = c.size
    if m < 2:
        return None
    sd = float(c.std(ddof=1))
    if not math.isfinite(sd) or sd <= 0.0 or np.all(c == c[0]):     # equal values: rounding makes sd ≈ 1e-17
        return None
    t = float(c.mean()) / (sd / math.sqrt(m))
    return t if math.isfinite(t) else None


def alignment_stats(G: torch.Tensor, v: np.ndarray | torch.Tensor) -> dict[str, float | int | None]:
    """Summary of c_i = cos(g_i, v) over the M rows of G.

    Keys:

    - ``mean_cos``, ``std_cos``: mean and *population* std (ddof = 0) of the signed cosine;
      ``std_cos_ddof1`` is the sample std (ddof = 1; None when M < 2);
    - ``mean_abs_cos``: mean |c_i|; ``noise_floor``: sqrt(2/(πD)); ``abs_cos_over_floor``: their ratio;
    - ``n``: M, the number of mini-batches;
    - ``t_stat``: one-sample t of the signed cosines against 0, mean_cos / (std_cos_ddof1 / √M) -- a sign
      shared across mini-batches is structure even when every |c_i| sits at the floor (None when M < 2
      or std_cos_ddof1 = 0);
    - ``sqrt_n_mean``: √M · mean_cos, the coherent-drift statistic: a common component c₁ along v in every
      gradient makes it ≈ √M·c₁, which t divides by the spread of the cosines;
    - ``grad_norm``: mean ‖g_i‖.
    """
    norms = row_norms(G)
    c = alignment(G, v, norms)
    floor = noise_floor(G.shape[1])
    m = int(c.size)
    return {"mean_cos": float(c.mean()), "std_cos": float(c.std()),
            "std_cos_ddof1": float(c.std(ddof=1)) if m >= 2 else None,
            "mean_abs_cos": float(np.abs(c).mean()),
            "noise_floor": floor, "abs_cos_over_floor": float(np.abs(c).mean() / floor),
            "n": m, "t_stat": t_statistic(c), "sqrt_n_mean": float(math.sqrt(m) * c.mean()),
            "grad_norm": float(norms.mean())}


def energy_split(G: torch.Tensor, v: np.ndarray | torch.Tensor) -> dict[str, float]:
    """The share of each gradient's squared norm along the unit direction v (mean cos²) and across it
    (arXiv 2602.23696 Remark 1's parallel / perpendicular split), and the share of the M gradients' summed
    energy along v (Σ⟨g_i, v⟩² / Σ‖g_i‖², what a sum of the gradients keeps)."""
    c = alignment(G, v)
    proj = project(G, unit(v, G)).cpu().numpy()
    total = float((row_norms(G).double() ** 2).sum())
    return {"parallel": float(np.mean(c ** 2)), "perpendicular": float(1 - np.mean(c ** 2)),
            "parallel_of_total": float((proj ** 2).sum() / total) if total > 0 else None}


def effective_dimension(G: torch.Tensor, v: np.ndarray | torch.Tensor) -> dict[str, float | int]:
    """Two readings of Prop. 1's d_eff (arXiv 2602.23696 §4.1: E|⟨ĝ, v⟩| ~ 1/√d_eff) from the M gradients:

    - ``from_alignment`` = 1 / mean cos²(g_i, v): the dimension an isotropic gradient would need to give the
      observed alignment with v (D for a direction the gradients ignore, 1 for one they lie along);
    - ``participation_ratio`` = (Σλ)² / Σλ² of the eigenvalues λ of the gradients' second moment (1/M)Σ g gᵀ,
      from their M × M Gram: how many directions the M gradients' energy spreads over, at most M (``bound``).
    """
    c = alignment(G, v)
    Gd = G.double()
    K = (Gd @ Gd.T).cpu().numpy()
    tr, fro = float(np.trace(K)), float((K * K).sum())
    msq = float(np.mean(c ** 2))
    return {"from_alignment": 1.0 / msq if msq > 0 else None,
            "participation_ratio": tr ** 2 / fro if fro > 0 else None, "bound": int(G.shape[0])}


def coordinate_snr(G: torch.Tensor, v: np.ndarray | torch.Tensor, beta1: float) -> dict[str, float | None]:
    """The per-coordinate signal-to-noise ratio SNR_i = |μ_i| / σ_i of the gradient over the M mini-batches
    (μ_i the mean, σ_i the sample std), and eq. 18 of arXiv 2602.23696: momentum with β1 multiplies it by
    √((1+β1)/(1−β1)) (√19 at β1 = 0.9).

    Returned: the median and 90th percentile of SNR_i, the share of coordinates above 1, the null median (pure
    noise: SNR_i = |t_{M−1}|/√M, from Student's t) and ``backbone_weighted`` = Σ v_i² SNR_i / mean SNR_i, the SNR
    of the coordinates that carry the direction v relative to the average coordinate's (1 for a direction
    that ignores the SNR; the paper's mechanism wants it above 1 for v_b). Needs M ≥ 2."""
    from scipy import stats
    m = int(G.shape[0])
    if m < 2:
        return {"median": None, "p90": None, "share_above_1": None, "null_median": None,
                "momentum_factor": None, "backbone_weighted": None, "n": m}
    Gd = G.double()
    mu, sd = Gd.mean(0), Gd.std(0)
    snr = torch.where(sd > 0, mu.abs() / sd, torch.zeros_like(sd))
    w = unit(v, G).double() ** 2
    mean_snr = float(snr.mean())
    q = np.quantile(snr.cpu().numpy(), [0.5, 0.9])
    return {"median": float(q[0]), "p90": float(q[1]), "share_above_1": float((snr > 1).double().mean()),
            "null_median": float(stats.t.ppf(0.75, m - 1) / math.sqrt(m)),
            "momentum_factor": math.sqrt((1 + beta1) / (1 - beta1)),
            "backbone_weighted": float((w * snr).sum()) / mean_snr if mean_snr > 0 else None, "n": m}


def prop1_stats(G: torch.Tensor, v: np.ndarray | torch.Tensor, beta1: float) -> dict:
    """:func:`energy_split`, :func:`effective_dimension` and :func:`coordinate_snr` of one set of gradients."""
    return {"energy": energy_split(G, v), "d_eff": effective_dimension(G, v), "snr": coordinate_snr(G, v, beta1)}


FLOOR_RATIO_LIMIT = 3.0              # mean|cos| / floor at or above this: not at the noise floor
T_LIMIT = 3.0                        # |t| of the signed cosines at or above this: not at the noise floor


def floor_summary(stats: Sequence[dict], ratio_limit: float = FLOOR_RATIO_LIMIT,
                  t_limit: float = T_LIMIT) -> dict:
    """Noise-floor verdict over several checkpoints, from their :func:`alignment_stats` dicts (one per checkpoint).

    - ``abs_cos_over_floor_max`` / ``_median``: max and median over checkpoints of mean|cos| / floor;
    - ``abs_t_max``: max over checkpoints of |t_stat| (checkpoints whose t is None are skipped; None if all are);
    - ``n_checkpoints``; ``batches_per_checkpoint``: M (a list if the checkpoints differ);
    - ``at_noise_floor``: abs_cos_over_floor_max < ratio_limit and abs_t_max < t_limit;
    - ``excess``: max(abs_cos_over_floor_max − ratio_limit, abs_t_max − t_limit); ≤ 0 ⇔ at the floor up to
      the boundary (exactly at a limit counts as *not* at the floor, as in the rule).

    ``at_noise_floor`` and ``excess`` are None when a statistic is missing (no checkpoints, or no t because
    M < 2 or the cosines have no spread), so a verdict never rests on the |cos| ratio alone.
    """
    ratios = [float(s["abs_cos_over_floor"]) for s in stats]
    ts = [abs(float(s["t_stat"])) for s in stats if s.get("t_stat") is not None]
    ns = sorted({int(s["n"]) for s in stats})
    r_max = max(ratios) if ratios else None
    t_max = max(ts) if ts else None
    ok = r_max is not None and t_max is not None
    return {"n_checkpoints": len(ratios),
            "batches_per_checkpoint": (ns[0] if len(ns) == 1 else ns) if ns else None,
            "abs_cos_over_floor_max": r_max,
            "abs_cos_over_floor_median": float(np.median(ratios)) if ratios else None,
            "abs_t_max": t_max,
            "ratio_limit": float(ratio_limit), "t_limit": float(t_limit),
            "at_noise_floor": bool(r_max < ratio_limit and t_max < t_limit) if ok else None,
            "excess": float(max(r_max - ratio_limit, t_max - t_limit)) if ok else None}


# ---------------------------------------------------------------------------- claim 9: block localisation
DOMINANCE_LIMIT = 3.0                # block 0's |signed cos| at least 3 × the other blocks' median (claims.md)


def block_dominance(block_stats: Sequence[dict]) -> float | None:
    """|mean signed cos of block 0| / median over blocks ℓ ≥ 1 of |mean signed cos of block ℓ|, from one
    checkpoint's per-block :func:`alignment_stats`; None with one block or when the others' median is 0."""
    if len(block_stats) < 2:
        return None
    others = float(np.median([abs(s["mean_cos"]) for s in block_stats[1:]]))
    return abs(block_stats[0]["mean_cos"]) / others if others > 0 else None


def dominance_summary(checkpoints: Sequence[dict], limit: float = DOMINANCE_LIMIT, t_limit: float = T_LIMIT) -> dict:
    """Claim 9's reading over checkpoints. Each item has per-block :func:`alignment_stats` lists under
    ``backbone`` (v_ℓ, the block's PC1), ``pc2`` (the block's PC2) and ``random`` (a random unit vector of the
    block), and its ``step``.

    - ``dominance``: per checkpoint, :func:`block_dominance` for each of the three directions; ``median_*`` their
      medians over checkpoints;
    - ``block0_abs_t``: per checkpoint |t| of block 0's signed cosines with v_0; ``median_block0_abs_t``;
    - ``null``: max(limit, median PC2 dominance, median random dominance): a block whose gradients are merely
      larger or more coherent in every direction dominates the PC2 and random projections as much;
    - ``excess`` = min(median dominance − null, median |t₀| − t_limit): > 0 iff block 0 dominates its backbone
      projection by at least 3×, more than it dominates the nulls, with a sign its mini-batches share.
    """
    dom = {k: [block_dominance(c[k]) for c in checkpoints] for k in ("backbone", "pc2", "random")}
    t0 = [abs(c["backbone"][0]["t_stat"]) if c["backbone"] and c["backbone"][0].get("t_stat") is not None else None
          for c in checkpoints]

    def med(xs):
        xs = [x for x in xs if x is not None]
        return float(np.median(xs)) if xs else None

    m = {k: med(v) for k, v in dom.items()}
    mt = med(t0)
    null = max([limit] + [x for x in (m["pc2"], m["random"]) if x is not None])
    ok = m["backbone"] is not None and mt is not None
    return {"steps": [c["step"] for c in checkpoints], "dominance": dom, "block0_abs_t": t0,
            **{f"median_{k}": v for k, v in m.items()}, "median_block0_abs_t": mt, "limit": limit, "t_limit": t_limit,
            "null": null, "excess": float(min(m["backbone"] - null, mt - t_limit)) if ok else None,
            "holds": bool(m["backbone"] - null > 0 and mt - t_limit > 0) if ok else None}

# ---------------------------------------------------------------------------- per-block projections
def block_slices(cfg: Config) -> list[slice]:
    """Column range of each block inside a trunk vector (the trunk is block-major in canonical order)."""
    sizes = [trunk_size(cfg, b) for b in range(cfg.n_layer)]
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def block_projections(G: torch.Tensor, block_dirs: Sequence[np.ndarray | torch.Tensor], cfg: Config) -> np.ndarray:
    """P (M × L): P[i, ℓ] = ⟨g_i restricted to block ℓ, v_ℓ / ‖v_ℓ‖⟩ for trunk gradients G (M × D_trunk)."""
    slices = block_slices(cfg)
    if len(block_dirs) != len(slices) or G.shape[1] != slices[-1].stop:
        raise ValueError("block_projections needs trunk gradients and one direction per block")
    return np.stack([project(G[:, sl], unit(v, G)).cpu().numpy() for sl, v in zip(slices, block_dirs)], axis=1)


def signed_block_bias(G: torch.Tensor, block_dirs: Sequence[np.ndarray | torch.Tensor], cfg: Config) -> np.ndarray:
    """b_ℓ(t) = (1/M) Σ_i ⟨g_i,ℓ(t), v̂_ℓ⟩ for each block ℓ (paper eq. 24, averaged over the M mini-batches)."""
    return block_projections(G, block_dirs, cfg).mean(axis=0)


def cumulative_bias(b: np.ndarray) -> np.ndarray:
    """B_ℓ(t_k) = Σ_{j ≤ k} b_ℓ(t_j): running sums down the rows of b (checkpoints × blocks), paper eq. 25."""
    return np.cumsum(np.asarray(b, dtype=np.float64), axis=0)


# ---------------------------------------------------------------------------- checkpoint choice
def spread_steps(steps: Sequence[int], n: int) -> list[int]:
    """``n`` checkpoints spread evenly (by index) over a run, first and last included.

    The first checkpoint (the anchor of every drift, where no direction is defined yet) is skipped
    when the run has others; ``n <= 0`` or ``n`` at least the number available gives them all.
    """
    pool = list(steps[1:]) if len(steps) > 1 else list(steps)
    if n <= 0 or n >= len(pool):
        return pool
    idx = np.unique(np.round(np.linspace(0, len(pool) - 1, n)).astype(int))
    return [pool[i] for i in idx]


# The paper's checkpoint choices as fractions of its 10,000 steps (arXiv 2602.23696): Figure 2's gradient
# alignment at checkpoint indices 0, 4, 9, ..., 49 of its 51 (the mini_gpt code's figure script), Table 6's
# Rayleigh quotients at steps 200, 1800, 4800 and 9600.
PAPER_CHECKPOINTS = {"paper-figure2": (0.0, 0.08) + tuple(0.18 + 0.1 * k for k in range(9)),
                     "paper-table6": (0.02, 0.18, 0.48, 0.96)}


def paper_steps(available: Sequence[int], total_steps: int, name: str) -> list[int]:
    """The checkpoints of ``available`` nearest to the paper's choice ``name`` scaled to a run of ``total_steps``
    (each fraction × total_steps, the earlier checkpoint on a tie; repeats dropped, order kept)."""
    avail = sorted(available)
    out: list[int] = []
    for f in PAPER_CHECKPOINTS[name]:
        target = f * total_steps
        best = min(avail, key=lambda s: (abs(s - target), s))
        if best not in out:
            out.append(best)
    return out


def choose_steps(available: Sequence[int], explicit: str | None, n: int, total_steps: int | None = None) -> list[int]:
    """Checkpoints to analyse: a comma list given by the user (each must exist), one of the paper's choices
    (``paper-figure2``, ``paper-table6``: :func:`paper_steps`, scaled to ``total_steps``), or
    ``spread_steps(available, n)``."""
    if not explicit:
        return spread_steps(available, n)
    if explicit in PAPER_CHECKPOINTS:
        return paper_steps(available, total_steps if total_steps is not None else max(available), explicit)
    return parse_step_list(explicit, list(available))


# ---------------------------------------------------------------------------- LM / probe interference
def interference(model: GPT, task: LMProbeTask, cfg: Config, step: int, n_batches: int, seed: int,
                 batch_size: int | None = None, block: int | None = None, progress: bool = False) -> dict:
    """Gradient interference between the two terms of the training loss (mini_gpt README, finding 3; mini_gpt's ``beta2_backbone_analysis.py``).

    For analysis batch i (key [seed, GRAD_TAG, i]) g_LM,i is the gradient of L_LM on the training mixture
    and g_probe,i the gradient of L_probe on the same text windows with a probe in every sequence
    (:func:`analysis_batches`); both over the trunk (or one block) in canonical order. Returns
    cos_i = ⟨g_LM,i, g_probe,i⟩ / (‖g_LM,i‖ ‖g_probe,i‖) for every batch (NaN where a gradient is zero
    or non-finite), their mean, std and mean |cos|, the mean gradient norms and the noise floor of the
    dimension (the typical |cos| of two unrelated directions). All sums are float64.
    """
    g_lm = minibatch_gradients(model, task, cfg, step, n_batches, seed, batch_size, "lm", block, progress)
    g_probe = minibatch_gradients(model, task, cfg, step, n_batches, seed, batch_size, "probe", block, progress)
    dots = torch.zeros(n_batches, dtype=torch.float64, device=g_lm.device)
    width = chunk_width(g_lm)
    for a in range(0, g_lm.shape[1], width):
        dots += (g_lm[:, a:a + width].to(torch.float64) * g_probe[:, a:a + width].to(torch.float64)).sum(dim=1)
    n_lm, n_probe = row_norms(g_lm), row_norms(g_probe)
    denom = n_lm * n_probe
    cos = torch.where(denom > 0, dots / denom.clamp(min=torch.finfo(torch.float64).tiny),
                      torch.full_like(dots, float("nan"))).cpu().numpy()
    ok = np.isfinite(cos)
    return {"step": int(step), "n_batches": int(n_batches), "seed": int(seed), "batch_size": batch_size,
            "block": block, "cos": cos.tolist(), "n_finite": int(ok.sum()),
            "mean_cos": float(cos[ok].mean()) if ok.any() else None,
            "std_cos": float(cos[ok].std()) if ok.any() else None,
            "mean_abs_cos": float(np.abs(cos[ok]).mean()) if ok.any() else None,
            "lm_grad_norm": float(n_lm.mean()), "probe_grad_norm": float(n_probe.mean()),
            "noise_floor": noise_floor(g_lm.shape[1])}
