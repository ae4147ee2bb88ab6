"""The regime calibration: does a configuration sit in the paper's regime, and does it still train?

A candidate configuration is judged on two sets of facts, both read from an ordinary run directory:

* its dimensionless knobs beside the paper's (:mod:`training.core.regime`: Λ = wd·Σlr, checkpoints,
  λ-switch position, σ_eval, tokens per parameter), plus the probe's geometry relative to the context
  (gaps as fractions of ``seq_len``; probes per token), which the paper fixes at 256 tokens of context;
* its outcome (:func:`outcome`): the validation loss falls by more than half from its value at step 0;
  the probe is *learned* (the in-distribution accuracy p_in ends at or above :data:`LEARNED_P_IN`) and
  *contested* (after the λ switch the OOD accuracy p_ood is neither ignored nor solved: its mean lies in
  [:data:`CONTESTED_LO`, :data:`CONTESTED_HI`]); and whether p_ood oscillates beyond evaluation noise
  (peaks and troughs of prominence ≥ 2 σ_eval, σ_eval the binomial standard error at p = 0.5, by the
  pipeline's own detector :func:`training.geometry.switching.detect_oscillations`).

The thresholds are fixed here once, before any candidate was run; they are not tuned to a result.
``experiments/regime/calibrate.py`` trains the candidates and writes ``docs/regime.md`` from these records.
"""
from __future__ import annotations

import math
from pathlib import Path

from training.core import runio
from training.core.config import Config, preset
from training.core.regime import flags, paper_regime, regime
from training.geometry.switching import detect_oscillations

LEARNED_P_IN = 0.5       # final p_in at or above this: the probe is learned (chance is 1/n_codewords)
CONTESTED_LO = 0.10      # mean p_ood after the λ switch inside [LO, HI]: neither ignored nor solved
CONTESTED_HI = 0.90
LOSS_FALL = 0.5          # the validation loss must end below (1 − LOSS_FALL) × its step-0 value
NOISE_K = 2.0            # oscillation threshold: NOISE_K × σ_eval (as the pipeline's 2 × bootstrap std)


def probe_geometry(cfg: Config) -> dict:
    """The probe's gaps as fractions of the context and its density (probes per 1,000 tokens)."""
    L = cfg.seq_len
    return {"train_gap_frac": [g / L for g in cfg.train_gap], "ood_gap_frac": [g / L for g in cfg.eval_ood_gap],
            "probes_per_1k_tokens": 1000 * cfg.p_probe / L}


def count_params(run_dir: Path) -> int | None:
    """Parameters of the run's model, read from its step-0 checkpoint (None when there is none)."""
    from safetensors import safe_open
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*.safetensors"))
    if not ckpts:
        return None
    with safe_open(str(ckpts[0]), framework="pt") as f:
        return int(sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def outcome(cfg: Config, records: list[dict]) -> dict:
    """The outcome of a finished run from its metrics records (see the module docstring for the rules)."""
    evals = [r for r in records if r.get("val_loss") is not None]
    if not evals:
        return {"trained": False, "reason": "no evaluation records"}
    first, last = evals[0], evals[-1]
    v0, v1 = float(first["val_loss"]), float(last["val_loss"])
    out = {"steps_done": int(last["step"]), "val_loss_0": v0, "val_loss_end": v1,
           "val_loss_fall": 1 - v1 / v0 if v0 > 0 else None, "wall_s": last.get("elapsed_s")}
    out["loss_falls"] = bool(v0 > 0 and v1 < (1 - LOSS_FALL) * v0)
    if cfg.task != "lm_probe" or not cfg.p_probe:
        return {**out, "probe": "no probe"}
    p_in = [float(r["p_in"]) for r in evals if r.get("p_in") is not None]
    switch = cfg.lambda_step if cfg.lambda_after != cfg.lambda_probe else cfg.steps // 2
    after = [(int(r["step"]), float(r["p_ood"])) for r in evals if r.get("p_ood") is not None and r["step"] >= switch]
    series = [(int(r["step"]), float(r["p_ood"])) for r in evals if r.get("p_ood") is not None]
    mean_after = sum(p for _, p in after) / len(after) if after else None
    out.update({"p_in_end": p_in[-1] if p_in else None, "p_in_max": max(p_in) if p_in else None,
                "p_ood_end": series[-1][1] if series else None,
                "p_ood_max": max(p for _, p in series) if series else None,
                "p_ood_mean_after_switch": mean_after,
                "p_ood_range_after_switch": (max(p for _, p in after) - min(p for _, p in after)) if after else None})
    out["probe_learned"] = bool(p_in and p_in[-1] >= LEARNED_P_IN)
    out["probe_contested"] = bool(mean_after is not None and CONTESTED_LO <= mean_after <= CONTESTED_HI)
    sigma = 0.5 / math.sqrt(cfg.n_probe_eval)
    h = NOISE_K * sigma
    osc = detect_oscillations([s for s, _ in series], [p for _, p in series], prominence=h) if len(series) > 2 else None
    out["oscillation_threshold"] = h
    out["oscillation_pairs"] = len(osc.pairs) if osc else 0
    out["oscillation_peaks"] = len(osc.peaks) if osc else 0
    out["max_swing"] = max((q.amplitude for q in osc.pairs), default=0.0) if osc else 0.0
    return out


def assess(run_dir: Path) -> dict:
    """Knobs, flags, probe geometry and outcome of the run in ``run_dir`` (finished or not)."""
    run_dir = Path(run_dir)
    cfg = runio.read_run_config(run_dir)
    n = count_params(run_dir)
    knobs = {**regime(cfg, n_params=n), "analysis_batch_tokens": None}   # a pipeline setting, not the run's
    paper = paper_regime()
    res = {"knobs": knobs, "flags": flags(knobs, paper), "n_params": n, "probe_geometry": probe_geometry(cfg),
           "outcome": outcome(cfg, runio.read_metrics(run_dir)) if (run_dir / "metrics.jsonl").exists() else None}
    res["trains"] = bool(res["outcome"] and res["outcome"].get("loss_falls") and res["outcome"].get("probe_learned")
                         and res["outcome"].get("probe_contested"))
    return res


def paper_probe_geometry() -> dict:
    return probe_geometry(preset("paper"))
