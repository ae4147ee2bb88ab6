"""The dimensionless knobs of a run, beside the paper's: is a run in the regime a claim was made in?

A number from a small run can confirm or refute the paper only when the run sits in the paper's
dynamical regime. The knobs that decide it (arXiv 2602.23696's protocol, Table 1):

* Λ = wd · Σ_t lr_t, the integrated decoupled weight decay: AdamW forgets its initialisation on the time
  scale 1/(lr·wd), so Λ is about the number of such equilibration times the run lasts (2.56 for the
  paper's 10,000 steps; 1.02 for its 4,000-step β2 runs);
* the number of checkpoints T the trajectory analyses see (51);
* where λ switches, as a fraction of training (4,000 of 10,000: 0.4);
* σ_eval, the binomial standard error of a probe accuracy near 0.5 on the fixed evaluation set
  (0.5/√2000 = 0.011), which decides whether switching can be told from evaluation noise;
* tokens per parameter (what the model has seen, relative to its size);
* the analysis batch: tokens in each mini-batch the gradient and Fisher analyses average over (the paper's
  64 sequences of 256 tokens); the per-batch gradient claims depend on it.

:func:`regime` computes them for any config; :func:`flags` names those outside the tolerances the claims
ledger uses (Λ within ±25 %, T ≥ 30, λ switch within 0.05 of 0.4, σ_eval ≤ 0.02, analysis batch within a
factor 2 of the paper's in tokens). ``training/pilot.py
--dry-run`` prints the table.
"""
from __future__ import annotations

import math

from training.core.config import Config, checkpoint_steps, preset
from training.core.optim import lr_at

TOLERANCES = {"integrated_wd": 0.25, "checkpoints": 30, "lambda_switch": 0.05, "sigma_eval": 0.02,
              "analysis_batch": 2.0}
# Sequences per analysis mini-batch the per-seed pipeline (scripts/run_seed.sh) uses at each preset; the analyses'
# own default elsewhere. The paper's: 64 of 256 tokens (skydancerosel/mini_gpt, scripts/run_seed.sh); quick and cpu:
# 64 of 128 tokens, within the factor 2.
PIPELINE_ANALYSIS_BATCH = {"paper": 64, "quick": 64, "cpu": 64}
DEFAULT_ANALYSIS_BATCH = 8


def pipeline_analysis_batch(preset_name: str) -> int:
    return PIPELINE_ANALYSIS_BATCH.get(preset_name, DEFAULT_ANALYSIS_BATCH)


def integrated_wd(cfg: Config) -> float:
    """Λ = wd · Σ_{t=1..steps} lr_t with the run's own schedule (updates are numbered from 1)."""
    return cfg.wd * math.fsum(lr_at(cfg, t) for t in range(1, cfg.steps + 1))


# Optimizers whose weight decay is an L2 term in the gradient that then passes through a heavy-ball momentum m, so
# that the stationary per-step decay is lr·wd/(1 − m). Plain SGD's L2 term and every decoupled decay (AdamW, SGDW,
# SOAP, ...) shrink θ by lr·wd per step.
COUPLED_MOMENTUM_DECAY = ("sgd_momentum",)


def effective_integrated_wd(cfg: Config) -> float:
    """Λ_eff: what the weight decay alone would do to the weights over the run, ‖θ‖ → e^(−Λ_eff)·‖θ‖.

    Λ for decoupled decay (AdamW, SGDW, ...); Λ / (1 − momentum) for SGD with L2-coupled decay and heavy-ball
    momentum (the L2 term passes through the momentum buffer, whose stationary gain is 1 / (1 − m)). The paper's
    SGD controls (arXiv 2602.23696, Table 8) have Λ_eff ≈ 1 for AdamW and plain SGD and ≈ 10 for SGD with
    momentum (10× the lr, a tenth of the decay) and for SGDW (10× the lr): e^(−10) ≈ 5·10⁻⁵ of the start remains.
    """
    lam = integrated_wd(cfg)
    if cfg.optimizer in COUPLED_MOMENTUM_DECAY:
        lam /= 1.0 - cfg.momentum
    return lam


def decay_rate(cfg: Config) -> float:
    """wd_eff: the weight decay per unit learning rate that shrinks θ each update, θ ← (1 − lr·wd_eff)·θ."""
    return cfg.wd / (1.0 - cfg.momentum) if cfg.optimizer in COUPLED_MOMENTUM_DECAY else cfg.wd


def decay_path(cfg: Config, t_end: int) -> tuple[list[float], list[float]]:
    """(lr_s for s = 0..t_end with lr_0 = 0, c(s) for s = 0..t_end): the schedule and the factor
    c(s) = Π_{u=1..s} (1 − lr_u · wd_eff) by which weight decay alone has shrunk θ(0) after s updates."""
    rate, lrs, cs, logc = decay_rate(cfg), [0.0], [1.0], 0.0
    for t in range(1, int(t_end) + 1):
        lr = lr_at(cfg, t)
        logc += math.log1p(-min(lr * rate, 1.0 - 1e-300))
        lrs.append(lr)
        cs.append(math.exp(logc))
    return lrs, cs


def decay_factors(cfg: Config, steps) -> list[float]:
    """c(t) at each of ``steps`` (:func:`decay_path`; wd_eff = wd, or wd / (1 − momentum) for L2-coupled heavy-ball
    SGD, the per-step rule of :func:`effective_integrated_wd`; −log c(T) ≈ Λ_eff for small steps). Every trunk
    matrix is decayed (only LayerNorm parameters are exempt, and they are not in the trunk)."""
    steps = [int(s) for s in steps]
    if any(s < 0 for s in steps):
        raise ValueError("steps must be non-negative")
    _, cs = decay_path(cfg, max(steps, default=0))
    return [cs[s] for s in steps]


def wd_for(cfg: Config, target: float) -> float:
    """The weight decay that gives ``cfg``'s schedule the integrated weight decay ``target`` (Λ is linear in wd)."""
    return target / math.fsum(lr_at(cfg, t) for t in range(1, cfg.steps + 1))


def sigma_eval(cfg: Config) -> float | None:
    """Standard error of an accuracy near 0.5 on ``n_probe_eval`` examples (None when the run has no probe)."""
    return 0.5 / math.sqrt(cfg.n_probe_eval) if cfg.n_probe_eval and cfg.task == "lm_probe" else None


def regime(cfg: Config, n_params: int | None = None, analysis_batch: int | None = None) -> dict:
    """The knobs of ``cfg``: integrated_wd, checkpoints, lambda_switch, sigma_eval, tokens, tokens_per_param and
    analysis_batch_tokens (``analysis_batch`` sequences of the run's context; default: what the pipeline uses at the
    run's preset)."""
    tokens = cfg.steps * cfg.tokens_per_step
    if analysis_batch is None:
        analysis_batch = pipeline_analysis_batch(cfg.preset)
    lam_switch = cfg.lambda_step / cfg.steps if cfg.steps and cfg.lambda_after != cfg.lambda_probe else None
    return {"integrated_wd": integrated_wd(cfg), "checkpoints": len(checkpoint_steps(cfg)),
            "lambda_switch": lam_switch, "sigma_eval": sigma_eval(cfg), "tokens": tokens,
            "tokens_per_param": tokens / n_params if n_params else None,
            "analysis_batch_tokens": analysis_batch * cfg.seq_len}


def paper_regime() -> dict:
    """The same knobs for the paper's run (the ``paper`` preset; 51,045,888 parameters)."""
    return regime(preset("paper"), n_params=51_045_888)


def flags(knobs: dict, paper: dict | None = None) -> list[str]:
    """The knobs outside the tolerances around the paper's values, each as a short phrase (empty: in regime)."""
    paper = paper or paper_regime()
    out = []
    lam, ref = knobs["integrated_wd"], paper["integrated_wd"]
    if abs(lam - ref) > TOLERANCES["integrated_wd"] * ref:
        out.append(f"Λ = wd·Σlr {lam:.3g} vs the paper's {ref:.3g}")
    if knobs["checkpoints"] < TOLERANCES["checkpoints"]:
        out.append(f"{knobs['checkpoints']} checkpoints (< {TOLERANCES['checkpoints']})")
    if knobs["lambda_switch"] is None or abs(knobs["lambda_switch"] - paper["lambda_switch"]) > TOLERANCES["lambda_switch"]:
        where = "no λ switch" if knobs["lambda_switch"] is None else f"λ switch at {knobs['lambda_switch']:.2f} of training"
        out.append(f"{where} (the paper's: {paper['lambda_switch']:.2f})")
    if knobs["sigma_eval"] is None or knobs["sigma_eval"] > TOLERANCES["sigma_eval"]:
        s = "no probe evaluation" if knobs["sigma_eval"] is None else f"σ_eval {knobs['sigma_eval']:.3f}"
        out.append(f"{s} (> {TOLERANCES['sigma_eval']}; the paper's {paper['sigma_eval']:.3f})")
    mine, ref = knobs.get("analysis_batch_tokens"), paper.get("analysis_batch_tokens")
    if mine and ref and not ref / TOLERANCES["analysis_batch"] <= mine <= ref * TOLERANCES["analysis_batch"]:
        out.append(f"analysis batch {mine:,} tokens vs the paper's {ref:,}")
    return out


def table(knobs: dict, paper: dict | None = None) -> list[str]:
    """Lines ``knob  this run  the paper`` for printing."""
    paper = paper or paper_regime()

    def f(v, spec):
        return "—" if v is None else format(v, spec)
    rows = [("Λ = wd·Σ lr (integrated weight decay)", "integrated_wd", ".3g"), ("checkpoints T", "checkpoints", "d"),
            ("λ switch (fraction of training)", "lambda_switch", ".2f"), ("σ_eval (probe accuracy s.e.)", "sigma_eval", ".3f"),
            ("tokens per parameter", "tokens_per_param", ".3g"),
            ("analysis batch (tokens)", "analysis_batch_tokens", ",d")]
    out = [f"{'regime':40s} {'this run':>10s} {'paper':>10s}"]
    out += [f"{label:40s} {f(knobs[k], spec):>10s} {f(paper[k], spec):>10s}" for label, k, spec in rows]
    bad = flags(knobs, paper)
    out.append("in the paper's regime" if not bad else "outside the paper's regime: " + "; ".join(bad))
    return out
