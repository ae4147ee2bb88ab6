"""The SGD-family control study (arXiv 2602.23696 §5, Tables 8–10; the paper code's ``experiments/sgd_controls/`` in skydancerosel/mini_gpt): protocol and analysis.

Four runs share model, initialisation, data stream (batches are a pure function of (seed, step,
micro-batch)) and schedule, and differ only in the optimizer:

* A ``adamw``          AdamW, decoupled weight decay (the baseline);
* B ``sgd``            plain SGD, L2-coupled decay, A's learning rate and decay;
* C ``sgd_momentum``   SGD with momentum 0.9, L2-coupled decay, 10× A's learning rate, A's decay / 10;
* C′ ``sgdw_nesterov`` Nesterov SGD with decoupled decay (SGDW), 10× A's learning rate, A's decay.

At ``paper`` every value is Table 8's (4,000 steps, warmup 1,500, λ = 2 with the switch to 4 on the last
step, dense checkpoints every 50 steps in [600, 2000] and every 100 in (2000, 4000]). At other presets the
steps follow :func:`training.studies.common.scale_step` and the learning rates and decays keep Table 8's ratios
to the preset's own AdamW values (see :func:`run_configs`).

The geometry of a window is the uncentered PCA of the drifts θ(t) − θ(window start), row-normalised as in
the paper's Tables 9–10 (:func:`training.geometry.trajectory.window_pca`), computed from each run's cached Gram
matrix. A window whose drift is exactly zero somewhere (a run that never left its start) or that has too
few checkpoints gets ``null`` numbers and a ``reason`` instead of an exception, so one degenerate or
diverged run never stops the analysis of the others.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from training.core import runio
from training.core.config import Config, checkpoint_steps, eval_steps, preset
from training.core.errors import UserError
from training.core.regime import effective_integrated_wd
from training.core.runio import read_run_config
from training.core.tasks import validate
from training.geometry.nulls import window_pc1_null
from training.geometry.stats import finite as _finite
from training.geometry.stats import pearson
from training.geometry.trajectory import (
    CheckpointSet,
    cached_gram,
    decomposition,
    lagged_update_alignment,
    pca,
    rolling_pc1,
    shrink_reading,
    window_pca,
)
from training.studies.common import markdown_table, scale_step

STUDY = "sgd_controls"

# ---------------------------------------------------------------------------- the paper's protocol
PAPER_STEPS = 4000                 # length of every control run (C′ was stopped at 2000 in the paper)
PAPER_WARMUP = 1500
PAPER_EVAL_EVERY = 200
PAPER_DENSE = ((600, 2000, 50), (2000, 4000, 100))
PAPER_WINDOW = (600, 2000)         # Tables 9–10 analysis window, anchored at its start
PAPER_STEP_2000 = 2000             # where C′ was stopped: every run is also reported there
PAPER_UPDATE_TS = (1000, 1600, 2200, 3000, 3800)
PAPER_UPDATE_DELTA = 200
ROTATION_DRIFTS = 5                # sub-windows of 5 row-normalised drifts (6 consecutive checkpoints)
COLINEAR_PC1 = 0.95                # direction-agnostic reading: PC1 >= 0.95 and k95 = 1

# Table 10 of the paper: (run, window, kind). A tuple lists explicit steps, a ("range", lo, hi) entry means
# every checkpoint in [lo, hi]. The paper's step 1 (its first checkpoint) is our step 0.
PAPER_TABLE10 = (
    ("A", (0, 200, 400), "matched"),
    ("A", (0, 200, 400, 600), "matched"),
    ("A", (200, 400, 600), "matched"),
    ("C", (2000, 2200, 2400), "matched"),
    ("C", ("range", 1800, 2600), "matched"),
    ("A", ("range", 200, 1000), "standard"),
    ("A", ("range", 600, 2000), "standard"),
    ("C", ("range", 600, 2000), "standard"),
)

# The paper's numbers (arXiv 2602.23696, seed 42), typed once: PC1 as a fraction. Table 9: the SGD-family
# controls over the window [600, 2000] anchored at 600 (run C' was stopped at step 2000: its values are there).
PAPER_TABLE9 = (
    {"run": "A", "optimizer": "AdamW", "final_val_loss": 1.59, "best_p_ood": 0.433, "pc1": 0.615, "k95": 9,
     "drift": 113.7},
    {"run": "B", "optimizer": "SGD (no momentum)", "final_val_loss": 8.12, "best_p_ood": 0.000, "pc1": 1.000, "k95": 1,
     "drift": 40.2},
    {"run": "C", "optimizer": "SGD + momentum", "final_val_loss": 5.10, "best_p_ood": 0.015, "pc1": 1.000, "k95": 1,
     "drift": 54.2},
    {"run": "Cprime", "optimizer": "SGDW + Nesterov", "final_val_loss": 5.25, "best_p_ood": 0.013, "pc1": None,
     "k95": None, "drift": None, "stopped_at": 2000},
)
# Table 10: (PC1, k95, k99, drift) of each window of PAPER_TABLE10, in the same order.
PAPER_TABLE10_VALUES = ((0.774, 2, 2, None), (0.692, 3, 3, 24.9), (0.819, 2, 2, None), (0.981, 1, 2, 0.26),
                        (0.977, 1, 2, 0.60), (0.778, 4, 8, 50.7), (0.615, 9, 19, 113.7), (1.000, 1, 1, 54.2))


def paper_window_label(spec: tuple, sep: str = ",", ellipsis: str = "..") -> str:
    """The paper's name of a Table 10 window: explicit steps with our step 0 as its step 1, a range as lo..hi."""
    if spec and spec[0] == "range":
        return f"[{spec[1]}{ellipsis}{spec[2]}]"
    return "[" + sep.join(str(s or 1) for s in spec) + "]"


def _paper_results() -> dict:
    t9 = [{k: r[k] for k in ("run", "final_val_loss", "best_p_ood", "pc1", "k95", "drift")}
          for r in PAPER_TABLE9 if "stopped_at" not in r]
    t9 += [{"run": r["run"], "val_at_2000": r["final_val_loss"], "p_ood_at_2000": r["best_p_ood"],
            "note": f"stopped at step {r['stopped_at']}"} for r in PAPER_TABLE9 if "stopped_at" in r]
    t10 = [{"run": run, "window": paper_window_label(spec), "pc1": v[0], "k95": v[1], "k99": v[2], "drift": v[3]}
           for (run, spec, _), v in zip(PAPER_TABLE10, PAPER_TABLE10_VALUES)]
    return {"table9": t9, "table10": t10}


PAPER_RESULTS = _paper_results()      # as the study's JSON has always carried them


@dataclass(frozen=True)
class RunSpec:
    key: str              # A | B | C | Cprime
    dirname: str
    optimizer: str        # name in training.core.optim.OPTIMIZERS
    lr_ratio: float       # learning rate / A's
    wd_ratio: float       # weight decay / A's
    momentum: float | None
    nesterov: bool
    wd_type: str          # decoupled | L2
    paper_lr: float
    paper_wd: float
    label: str


RUNS: dict[str, RunSpec] = {s.key: s for s in (
    RunSpec("A", "A_adamw", "adamw", 1.0, 1.0, None, False, "decoupled", 1e-3, 0.5, "A AdamW"),
    RunSpec("B", "B_sgd", "sgd", 1.0, 1.0, 0.0, False, "L2", 1e-3, 0.5, "B SGD"),
    RunSpec("C", "C_sgd_momentum", "sgd_momentum", 10.0, 0.1, 0.9, False, "L2", 1e-2, 0.05, "C SGD+momentum"),
    RunSpec("Cprime", "Cprime_sgdw_nesterov", "sgdw_nesterov", 10.0, 1.0, 0.9, True, "decoupled", 1e-2, 0.5,
            "C' Nesterov SGDW"),
)}

# Config fields the study sets itself; overriding them with --set would silently change the protocol.
PROTOCOL_FIELDS = ("optimizer", "momentum", "steps", "lambda_step", "eval_every", "ckpt_every", "ckpt_dense",
                   "early_stop", "init_from", "init_optimizer")


def parse_runs(text: str) -> list[str]:
    """``A,B,C,Cprime`` (any subset, any order; C' is accepted for Cprime) -> keys in canonical order."""
    names = [t.strip().replace("C'", "Cprime").replace("C′", "Cprime") for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in RUNS]
    if bad or not names:
        raise UserError(f"--runs: unknown run(s) {bad or text!r}; choose from {','.join(RUNS)}")
    return [k for k in RUNS if k in names]


# ---------------------------------------------------------------------------- scaled settings
def scaled_settings(base: Config) -> dict:
    """The shared schedule of the control runs at ``base``'s preset (the paper's values at ``paper``)."""
    steps = scale_step(base, PAPER_STEPS)
    every = scale_step(base, PAPER_EVAL_EVERY)
    dense = tuple((scale_step(base, lo), scale_step(base, hi), scale_step(base, ev)) for lo, hi, ev in PAPER_DENSE)
    return {"steps": steps, "warmup": min(base.warmup, steps), "eval_every": every, "ckpt_every": every,
            "ckpt_dense": dense, "lambda_step": steps,
            "window": [scale_step(base, PAPER_WINDOW[0]), scale_step(base, PAPER_WINDOW[1])],
            "step_2000": scale_step(base, PAPER_STEP_2000),
            "update_delta": scale_step(base, PAPER_UPDATE_DELTA),
            "update_ts": [scale_step(base, t) for t in PAPER_UPDATE_TS]}


# "paper": Table 8's decays (Λ_eff ≈ 1 for A and B, ≈ 10 for C and C′: the decay alone would leave e^(−10) of the
# start, so C and C′ collapse toward the origin); "matched": every SGD-family run's decay set so that its Λ_eff
# equals A's (Table 8's learning rates kept); "trainable": as matched, but at learning rates where SGD trains.
# At the cpu preset "matched" is not enough: Table 8's SGD learning rates (1× and 10× AdamW's) barely move the
# weights, so even at A's Λ_eff the decay of the initialisation dominates every SGD run (decay share 0.99, ‖θ‖ →
# 0.36 ‖θ0‖; experiments/sgd_controls/README.md). "trainable" sets them to TRAINABLE_LR_RATIO × A's (C and C′
# 100× instead of 10×; B 1000×, the same heavy-ball step lr/(1 − momentum) as C's) and then matches Λ_eff: the
# variant in which the optimizer comparison of Tables 9–10 compares optimizers rather than an optimizer with pure
# decay.
DECAY_MODES = ("paper", "matched", "trainable")
TRAINABLE_LR_RATIO = {"B": 1000.0, "C": 100.0, "Cprime": 100.0}   # lr / A's (measured at cpu: the study's README)


def run_configs(base: Config, decay: str = "paper") -> dict[str, Config]:
    """The four run configs: ``base`` (a preset with the study's seed and overrides) with the scaled
    schedule and each optimizer's learning rate and decay as Table 8's ratio to ``base``'s AdamW values;
    with ``decay="matched"`` the SGD-family decays are rescaled to A's Λ_eff, with ``decay="trainable"`` their learning
    rates are raised first (:data:`DECAY_MODES`)."""
    if decay not in DECAY_MODES:
        raise UserError(f"unknown decay protocol '{decay}' (choose from {', '.join(DECAY_MODES)})")
    s = scaled_settings(base)
    out = {}
    for key, spec in RUNS.items():
        ratio = TRAINABLE_LR_RATIO.get(key, spec.lr_ratio) if decay == "trainable" else spec.lr_ratio
        changes = dict(optimizer=spec.optimizer, lr=float(f"{base.lr * ratio:.6g}"),
                       wd=float(f"{base.wd * spec.wd_ratio:.6g}"), steps=s["steps"], warmup=s["warmup"],
                       eval_every=s["eval_every"], ckpt_every=s["ckpt_every"], ckpt_dense=s["ckpt_dense"],
                       lambda_step=s["lambda_step"], early_stop=False)
        if spec.momentum is not None:
            changes["momentum"] = spec.momentum
        out[key] = validate(base.replace(**changes))
    if decay in ("matched", "trainable"):
        target = effective_integrated_wd(out["A"])
        for key in ("B", "C", "Cprime"):
            c = out[key]
            lam = effective_integrated_wd(c)
            if lam > 0:
                out[key] = validate(c.replace(wd=float(f"{c.wd * target / lam:.6g}")))
    return out


def protocol(base: Config, cfgs: dict[str, Config], decay: str = "paper") -> dict:
    """Every scaled setting, per run and shared, beside the paper's value."""
    s = scaled_settings(base)
    a = cfgs["A"]
    shared = {k: getattr(a, k) for k in ("preset", "seed", "effective_data_seed", "steps", "warmup", "lr_floor",
                                         "grad_clip", "batch_size", "grad_accum", "p_probe", "lambda_probe",
                                         "lambda_probe2", "lambda_step", "eval_every", "ckpt_every")}
    shared["ckpt_dense"] = [list(w) for w in a.ckpt_dense]
    shared["n_checkpoints"] = len(checkpoint_steps(a))
    shared["n_evaluations"] = len(eval_steps(a))
    paper_lam = {k: effective_integrated_wd(c) for k, c in run_configs(preset("paper"), decay).items()}
    runs = {}
    for key, cfg in cfgs.items():
        spec = RUNS[key]
        runs[key] = {"dir": spec.dirname, "optimizer": cfg.optimizer, "label": spec.label, "lr": cfg.lr, "wd": cfg.wd,
                     "wd_type": spec.wd_type, "momentum": spec.momentum, "nesterov": spec.nesterov,
                     "betas": [cfg.beta1, cfg.beta2] if cfg.optimizer == "adamw" else None,
                     "eps": cfg.eps if cfg.optimizer == "adamw" else None,
                     "lr_over_A": round(cfg.lr / a.lr, 9), "wd_over_A": round(cfg.wd / a.wd, 9) if a.wd else None,
                     "paper": {"lr": spec.paper_lr, "wd": spec.paper_wd, "momentum": spec.momentum},
                     "steps": cfg.steps, "lambda_eff": effective_integrated_wd(cfg),
                     "paper_lambda_eff": paper_lam[key], "config_hash": cfg.hash()}
    return {
        "decay": decay,
        "decay_protocol": {"paper": "Table 8's weight decays",
                           "matched": "each SGD-family run's weight decay rescaled so that its Λ_eff equals A's",
                           "trainable": "SGD-family learning rates " + ", ".join(
                               f"{k} {v:g}×" for k, v in TRAINABLE_LR_RATIO.items()) + " A's (B: C's heavy-ball step), "
                               "then each weight decay rescaled so that its Λ_eff equals A's"}[decay],
        "scaling": ("steps x preset_steps/10000 (studies.scale_step), rounded, at least 1; learning rates and weight "
                    "decays keep Table 8's ratios to the preset's AdamW lr and wd; warmup is the preset's own "
                    "(clamped to the run length); lambda switches on the last step as in the paper"),
        "shared": shared,
        "paper_shared": {"steps": PAPER_STEPS, "warmup": PAPER_WARMUP, "lr_floor": 0.1, "grad_clip": 1.0,
                         "batch_size": 64, "grad_accum": 2, "p_probe": 0.10, "lambda_probe": 2.0,
                         "lambda_probe2": 4.0, "lambda_step": PAPER_STEPS, "eval_every": PAPER_EVAL_EVERY,
                         "ckpt_dense": [list(w) for w in PAPER_DENSE]},
        "window": s["window"], "paper_window": list(PAPER_WINDOW),
        "step_2000": s["step_2000"],
        "update_alignment": {"delta": s["update_delta"], "ts": s["update_ts"], "paper_delta": PAPER_UPDATE_DELTA,
                             "paper_ts": list(PAPER_UPDATE_TS)},
        "rotation_drifts": ROTATION_DRIFTS,
        "table10_windows": [{"run": r, "paper_window": _window_text(w), "window": _window_text(scale_window_spec(base, w)),
                             "kind": k} for r, w, k in PAPER_TABLE10],
        "runs": runs,
    }


def scale_window_spec(base: Config, spec: tuple) -> tuple:
    if spec and spec[0] == "range":
        return ("range", *(0 if s == 0 else scale_step(base, s) for s in spec[1:]))
    return tuple(0 if s == 0 else scale_step(base, s) for s in spec)


def _window_text(spec: tuple) -> str:
    return f"[{spec[1]}..{spec[2]}]" if spec and spec[0] == "range" else "[" + ",".join(str(s) for s in spec) + "]"


def window_from_spec(spec: tuple, available: Sequence[int]) -> tuple[list[int], list[int]]:
    """(steps of the window, wanted steps that are missing) for an explicit or ``("range", lo, hi)`` spec."""
    if spec and spec[0] == "range":
        return [s for s in available if spec[1] <= s <= spec[2]], []
    wanted = sorted(set(spec))              # a scaled explicit window may repeat a step (tiny presets)
    have = set(available)
    return [s for s in wanted if s in have], [s for s in wanted if s not in have]


# ---------------------------------------------------------------------------- metrics
def eval_record(metrics: Sequence[dict], step: int) -> dict | None:
    return next((m for m in metrics if m.get("step") == step), None)


def run_outcome(metrics: Sequence[dict], step_2000: int) -> dict:
    """Final val loss (the last evaluation), best p_ood, and val / p_ood at the scaled step 2000."""
    vals = [m for m in metrics if _finite(m.get("val_loss"))]
    poods = [m["p_ood"] for m in metrics if _finite(m.get("p_ood"))]
    at = eval_record(metrics, step_2000)
    return {"final_step": vals[-1]["step"] if vals else None,
            "final_val_loss": vals[-1]["val_loss"] if vals else None,
            "best_p_ood": max(poods) if poods else None,
            "val_at_2000": at.get("val_loss") if at else None,
            "p_ood_at_2000": at.get("p_ood") if at else None}


def val_range(metrics: Sequence[dict], lo: int, hi: int) -> list[float] | None:
    vals = [m["val_loss"] for m in metrics if lo <= m.get("step", -1) <= hi and _finite(m.get("val_loss"))]
    return [min(vals), max(vals)] if vals else None


# ---------------------------------------------------------------------------- geometry with reasons
def null_geometry(steps: Sequence[int], reason: str) -> dict:
    return {"steps": list(steps), "pc1": None, "pc1_raw": None, "k95": None, "k99": None, "drift": None,
            "n_drifts": max(0, len(steps) - 1), "reason": reason}


def geometry(gram, steps: Sequence[int]) -> dict:
    """Row-normalised PC1/k95/k99 and the raw PC1 of the drifts from ``steps[0]``, and ‖θ(end) − θ(start)‖.

    Degenerate windows give ``null`` numbers with a ``reason`` (fewer than two checkpoints, a zero drift
    row — the run did not move — or non-finite weights).
    """
    steps = list(steps)
    w = window_pca(gram, steps)
    if w["reason"]:
        return null_geometry(steps, w["reason"])
    g, raw = w["rownorm"], w["raw"]
    return {"steps": steps, "pc1": g["pc1"], "pc1_raw": raw["pc1"], "k95": g["k95"], "k99": g["k99"],
            "drift": g["drift"], "n_drifts": len(steps) - 1, "explained_variance_ratio": g["explained_variance_ratio"],
            "explained_variance_ratio_raw": raw["explained_variance_ratio"], "reason": None}


def backbone_coeffs(gram, steps: Sequence[int]) -> np.ndarray:
    """Span coefficients of the window's row-normalised PC1 (sign: the last drift's coordinate > 0)."""
    return pca(gram, list(steps), steps[0], rownorm=True, k=1).coeffs[0]


def matched_window(steps: Sequence[int], metrics: Sequence[dict], target: float, min_len: int = 3) -> dict:
    """The shortest run of >= ``min_len`` consecutive checkpoints whose val-loss range brackets ``target``.

    The val range of a window is [min, max] of val_loss over the evaluations at steps within
    [first, last]. Among equally short windows the earliest wins (the first passage through the target).
    A run that never brackets the target gets its last ``min_len`` evaluated checkpoints, flagged
    ``never_reached``.
    """
    steps = list(steps)
    best = None
    for n in range(min_len, len(steps) + 1):
        for i in range(0, len(steps) - n + 1):
            r = val_range(metrics, steps[i], steps[i + n - 1])
            if r is not None and r[0] <= target <= r[1]:
                best = (steps[i:i + n], r)
                break
        if best:
            break
    if best:
        return {"window": best[0], "val_range": best[1], "never_reached": False}
    evaluated = {m["step"] for m in metrics if _finite(m.get("val_loss"))}
    tail = [s for s in steps if s in evaluated][-min_len:]
    return {"window": tail, "val_range": val_range(metrics, tail[0], tail[-1]) if tail else None,
            "never_reached": True}


CLAIM17_DRIFTS = 6    # docs/claims.md claim 17: with fewer drifts PC1 and k95 are forced by the row count


def claim17_windows(runs: dict[str, dict], cfgs: dict[str, Config], target: float,
                    drifts: int = CLAIM17_DRIFTS) -> dict:
    """Claim 17's inputs: per run the shortest window of ≥ ``drifts`` + 1 checkpoints whose val loss brackets
    ``target`` (:func:`matched_window`), its row-normalised PC1 beside the window random walk's
    (:func:`training.geometry.nulls.window_pc1_null`), and what the weight decay does over it
    (:func:`decay_columns`: ‖θ(end)‖/‖θ(0)‖ of the run, the window's decay share and the decay-dominated flag)."""
    rows = []
    for key, r in runs.items():
        m = matched_window(r["steps"], r["metrics"], target, min_len=drifts + 1)
        win = m["window"]
        if r["gram"] is None or len(win) < 2:
            null = {"reason": f"{len(win)} checkpoint(s) in the window"}
        else:
            null = window_pc1_null(r["gram"], win)
        dec = decay_columns(cfgs[key], r["ckpts"], r["steps"], win)
        rows.append({"run": key, "optimizer": cfgs[key].optimizer, **m, "n_drifts": max(0, len(win) - 1),
                     **{k: null.get(k) for k in ("pc1", "pc1_raw", "null_pc1", "pc1_minus_null")},
                     "reason": null.get("reason"), "norm_ratio": dec["norm_ratio"],
                     "window_decay_share": dec["window_decay_share"],
                     "window_decay_dominated": dec["window_decay_dominated"]})
    return {"target": target, "min_drifts": drifts, "rows": rows}


def pc1_rotation(gram, steps: Sequence[int], vb: np.ndarray | None, drifts: int = ROTATION_DRIFTS) -> dict:
    """PC1 stability inside the window: sliding sub-windows of ``drifts`` row-normalised drifts (each
    anchored at its own first checkpoint, :func:`training.geometry.trajectory.rolling_pc1`), |cos| between the PC1s of
    consecutive sub-windows and with the whole window's PC1."""
    width = min(drifts + 1, len(steps))
    if width < 3:
        return {"width": width, "reason": f"the window holds {len(steps)} checkpoints; a sub-window needs at least 3"}
    try:
        out = rolling_pc1(gram, width, list(steps), global_coeffs=vb, rownorm=True)
    except UserError as e:
        return {"width": width, "reason": str(e)}
    adj = out["adjacent_abs_cos"]
    out.update({"drifts_per_subwindow": width - 1, "reason": None,
                "mean_adjacent_abs_cos": float(np.mean(adj)) if adj else None,
                "min_adjacent_abs_cos": float(np.min(adj)) if adj else None})
    return out


def update_alignment_at(gram, vb: np.ndarray, ts: Sequence[int], delta: int) -> dict:
    """C(t) = cos(θ(t + Δ) − θ(t), v_b) at each START t where both checkpoints exist (v_b held fixed): the
    lagged alignment of :func:`training.geometry.trajectory.lagged_update_alignment`, indexed by start."""
    lag = lagged_update_alignment(gram, vb, delta, [t + delta for t in ts])
    points = [{"t": t0, "t_plus_delta": t1, "signed_cos": c, "abs_cos": a, "update_norm": n}
              for t0, t1, c, a, n in zip(lag["prev_steps"], lag["steps"], lag["signed_cos"], lag["abs_cos"],
                                         lag["update_norm"])]
    return {"delta": delta, "points": points, "missing_t": [t - delta for t in lag["missing_steps"]]}


def residual_coupling(gram, steps: Sequence[int], vb: np.ndarray, metrics: Sequence[dict],
                      geo: dict) -> dict:
    """On the drifts x(t) = θ(t) − θ(window start): the PC2–6 share of the window's energy (row-normalised
    and raw spectra) and corr(‖r(t)‖, p_ood(t)) with r(t) = x(t) − ⟨x(t), v_b⟩ v_b, over the window's
    evaluated checkpoints (the start itself excluded: its drift is zero by definition)."""
    steps = list(steps)
    d = decomposition(gram, vb, steps[1:], ref=steps[0])
    by_step = {m["step"]: m.get("p_ood") for m in metrics}
    pts = [(s, r, by_step[s]) for s, r in zip(d["steps"], d["residual_norm"]) if _finite(by_step.get(s))]
    corr = pearson([p[1] for p in pts], [p[2] for p in pts])
    reason = None
    if corr is None:
        reason = (f"{len(pts)} evaluated checkpoint(s) in the window" if len(pts) < 3
                  else "p_ood or the residual norm is constant over the window")
    return {"anchor": steps[0], "steps": d["steps"], "residual_norm": d["residual_norm"], "a": d["a"],
            "drift_norm": d["drift_norm"],
            "energy_pc2_6": float(np.sum(geo["explained_variance_ratio"][1:6])),
            "energy_pc2_6_raw": float(np.sum(geo["explained_variance_ratio_raw"][1:6])),
            "corr_steps": [p[0] for p in pts], "corr_residual_norm": [p[1] for p in pts],
            "corr_p_ood": [p[2] for p in pts], "corr_residual_p_ood": corr, "corr_reason": reason}


def decay_columns(cfg: Config, ckpts, steps: Sequence[int], win: Sequence[int]) -> dict:
    """What the weight decay does to a run: Λ_eff (training/core/regime.py) and e^(−Λ_eff), the share of the
    start that the decay alone would leave; the measured ‖θ(end)‖ / ‖θ(0)‖ over the whole run; and whether the
    drift is decay-dominated (‖θ‖ kept < 10 % or ≥ 90 % of the drift along −θ(start); :func:`training.geometry.trajectory.shrink_reading`) over
    the whole run and over the analysis window (the ledger's rule, docs/claims.md claim 16)."""
    lam = effective_integrated_wd(cfg)
    out = {"lambda_eff": lam, "decay_only_norm_ratio": math.exp(-lam), "norm_ratio": None, "shrink_cos": None,
           "decay_share": None, "decay_dominated": None, "window_shrink_cos": None, "window_decay_share": None,
           "window_decay_dominated": None, "decay_reason": None}
    if ckpts is None or len(steps) < 2:
        return {**out, "decay_reason": "fewer than two checkpoints"}
    whole = shrink_reading(ckpts, steps[0], steps[-1])
    out.update(norm_ratio=whole["norm_ratio"], shrink_cos=whole["shrink_cos"], decay_share=whole["decay_share"],
               decay_dominated=whole["decay_dominated"], decay_reason=whole["reason"])
    if len(win) >= 2:
        w = shrink_reading(ckpts, win[0], win[-1])
        out.update(window_shrink_cos=w["shrink_cos"], window_decay_share=w["decay_share"],
                   window_decay_dominated=w["decay_dominated"])
    return out


# ---------------------------------------------------------------------------- the verdict
def verdict(rows: dict[str, dict]) -> dict:
    """The paper code's pre-registered rule (mini_gpt ``experiments/sgd_controls/``) on the window PC1s (row-normalised), applied literally, plus a
    direction-agnostic reading (is each trajectory (nearly) colinear: PC1 >= 0.95 and k95 = 1?)."""
    pc1 = {k: (rows.get(k) or {}).get("pc1") for k in RUNS}
    k95 = {k: (rows.get(k) or {}).get("k95") for k in RUNS}
    a, b, c = pc1["A"], pc1["B"], pc1["C"]
    rule = {"optimizer_induced": "PC1(B) < 0.75 * PC1(A)", "intrinsic": "|PC1(B) - PC1(A)| <= 0.15 * PC1(A)",
            "ambiguous": "otherwise", "bridge": "PC1(C) > PC1(B)"}
    if a is None or b is None:
        outcome, reading = "UNDEFINED", "The rule needs PC1 of runs A and B; at least one is missing or undefined."
    elif b < 0.75 * a:
        outcome = "OPTIMIZER-INDUCED"
        reading = (f"Plain SGD's trajectory is markedly less concentrated on one direction (PC1 {b:.1%}) than "
                   f"AdamW's ({a:.1%}), so by the rule the backbone is optimizer-induced.")
    elif abs(b - a) <= 0.15 * a:
        outcome = "INTRINSIC"
        reading = (f"Plain SGD and AdamW concentrate their drift on one direction to a similar degree (PC1 {b:.1%} "
                   f"vs {a:.1%}), so by the rule the backbone is intrinsic to the objective.")
    else:
        outcome = "AMBIGUOUS"
        more = "more" if b > a else "less"
        reading = (f"Plain SGD's PC1 ({b:.1%}) is {more} concentrated than AdamW's ({a:.1%}) by more than 15 %, which "
                   "the literal rule (written for SGD being LESS colinear) calls ambiguous"
                   + ("; see the direction-agnostic reading." if b > a else "."))
    bridge = None if b is None or c is None else bool(c > b)
    colinear = {}
    for k in RUNS:
        if pc1[k] is None or k95[k] is None:
            colinear[k] = None
        else:
            colinear[k] = bool(pc1[k] >= COLINEAR_PC1 and k95[k] == 1)
    sgd = [colinear[k] for k in ("B", "C", "Cprime") if colinear[k] is not None]
    if colinear["A"] is None or not sgd:
        agnostic, agn_reading = "UNDEFINED", "Needs the window geometry of A and of at least one SGD-family run."
    elif all(sgd) and not colinear["A"]:
        agnostic = "SGD-COLINEAR-ADAMW-NOT"
        agn_reading = (f"SGD-family trajectories are (nearly) colinear (PC1 >= {COLINEAR_PC1:.0%}, k95 = 1) while "
                       f"AdamW's is not (PC1 {a:.1%}, k95 {k95['A']}): the multi-dimensional geometry comes with AdamW.")
    elif not any(sgd) and not colinear["A"]:
        agnostic = "NONE-COLINEAR"
        agn_reading = "Neither AdamW nor the SGD-family runs are colinear in the window."
    elif all(sgd) and colinear["A"]:
        agnostic = "ALL-COLINEAR"
        agn_reading = "AdamW and the SGD-family runs are all (nearly) colinear in the window."
    else:
        agnostic = "MIXED"
        agn_reading = ("Colinear: " + ", ".join(k for k in RUNS if colinear[k]) + "; not colinear: "
                       + ", ".join(k for k in RUNS if colinear[k] is False) + ".")
    above = {k: None if a is None or pc1[k] is None else bool(pc1[k] > a) for k in ("B", "C", "Cprime")}
    if a is not None and [v for v in above.values() if v is not None] and all(v for v in above.values() if v is not None):
        agn_reading += (" Every SGD-family run concentrates more of its drift on PC1 than AdamW ("
                        + ", ".join(f"{k} {pc1[k]:.1%}" for k in above if pc1[k] is not None) + f" vs A {a:.1%}).")
    return {"rule": rule, "inputs": {"pc1": pc1, "k95": k95}, "outcome": outcome, "bridge": bridge,
            "sgd_pc1_above_adamw": above,
            "reading": reading, "colinear": colinear, "colinear_criterion": f"pc1 >= {COLINEAR_PC1} and k95 == 1",
            "direction_agnostic": agnostic, "direction_agnostic_reading": agn_reading,
            "note": ("In the paper PC1(SGD) = 100 % > PC1(AdamW) = 61.5 %: the literal rule calls this AMBIGUOUS, "
                     "although the paper reads it as optimizer-induced; the direction-agnostic reading is the one "
                     "that matches the paper's argument.")}


# ---------------------------------------------------------------------------- Table 9 as Markdown
TABLE9_HEADER = ("run", "state", "final val", "best p_ood", "PC1 %", "PC1 − null (pp)", "k95", "drift",
                 "Λ_eff", "e^(−Λ_eff)", "‖θ_T‖/‖θ_0‖", "decay share", "decay-dominated")


def _cell(v, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table9_markdown(result: dict) -> str:
    """Table 9 of the study as Markdown: the window geometry beside its random-walk null and what the weight decay
    alone does to each run (written to STUDY/analysis/table9.md; figures/make_results.py includes it)."""
    p = result["protocol"]
    sh = p["shared"]
    lo, hi = p["window"]
    rows = []
    for r in result["table9"]:
        pct = (lambda v: None if v is None else 100 * v)
        dom = {True: "yes", False: "no"}.get(r.get("decay_dominated"), "—")
        rows.append([RUNS[r["run"]].label if r["run"] in RUNS else r["run"], r["state"],
                     _cell(r.get("final_val_loss"), ".3f"), _cell(r.get("best_p_ood"), ".3f"), _cell(pct(r.get("pc1")), ".1f"),
                     _cell(pct(r.get("pc1_minus_null")), "+.1f"), _cell(r.get("k95"), "d"), _cell(r.get("drift"), ".3g"),
                     _cell(r.get("lambda_eff"), ".3g"), _cell(r.get("decay_only_norm_ratio"), ".3g"),
                     _cell(r.get("norm_ratio"), ".3f"), _cell(r.get("decay_share"), ".2f"), dom])
    v = result["verdict"]
    text = [f"# SGD-family controls ({sh['preset']} preset, seed {sh['seed']}, {p['decay_protocol']})", "",
            f"{sh['steps']} steps per run; window [{lo}, {hi}] (row-normalised PC1 of the drifts from its start, k95, "
            "drift); PC1 − null: minus the same window of a random walk with the run's own step sizes; Λ_eff = the "
            "run's integrated weight decay, e^(−Λ_eff) what the decay alone would leave of ‖θ_0‖; ‖θ_T‖/‖θ_0‖ and the "
            "decay share (of the drift's squared length along −θ_0) measured on the trunk over the whole run; "
            "decay-dominated: ‖θ_T‖/‖θ_0‖ < 0.1 or decay share ≥ 0.9.", "",
            markdown_table(TABLE9_HEADER, rows),
            f"Literal rule: {v['outcome']}; direction-agnostic reading: {v['direction_agnostic']}. "
            f"{v['direction_agnostic_reading']}"]
    why = [f"- {r['run']}: {r['geometry_reason']}" for r in result["table9"] if r.get("geometry_reason")]
    if why:
        text += ["", "Undefined numbers:", "", *why]
    return "\n".join(text) + "\n"


# ---------------------------------------------------------------------------- the whole analysis
def _trajectory(run_dir: Path, progress: bool):
    """(CheckpointSet, Gram of all checkpoints) or (None, None) when the run has fewer than two checkpoints."""
    if len(runio.list_checkpoints(run_dir)) < 2:
        return None, None
    ckpts = CheckpointSet(run_dir)
    return ckpts, cached_gram(ckpts, progress=progress)


def _guard(fn: Callable[[], dict]) -> dict:
    """Run one Gram-algebra computation; a degenerate input becomes {"reason": ...} instead of an exception."""
    try:
        return fn()
    except UserError as e:
        return {"reason": str(e)}


def analyse(study_dir: Path, base: Config, keys: Sequence[str], progress: bool = False,
            log: Callable[[str], None] = print, decay: str = "paper") -> dict:
    """Every table and curve of the study from the run directories under ``study_dir``."""
    study_dir = Path(study_dir)
    cfgs = run_configs(base, decay)
    s = scaled_settings(base)
    lo, hi = s["window"]
    runs = {}
    for key in keys:
        run_dir = study_dir / RUNS[key].dirname
        status = runio.read_status(run_dir) if (run_dir / "status.json").exists() else None
        state = (status or {}).get("state", "missing")
        if not (run_dir / "config.json").exists():
            raise UserError(f"run {key} ({run_dir}) has not been trained; run the study without --analyse-only")
        if state not in ("completed", "diverged"):
            raise UserError(f"run {key} ({run_dir}) is {state} (step {(status or {}).get('step')}); re-run the study "
                            "command without --analyse-only to resume it")
        if read_run_config(run_dir).hash() != cfgs[key].hash():
            raise UserError(f"{run_dir} holds a run with a different config than this study's (other preset, seed or "
                            "--set?); analyse it with the flags it was trained with")
        metrics = runio.read_metrics(run_dir)
        log(f"analysing run {key} ({state}): {len(metrics)} evaluations")
        ckpts, gram = _trajectory(run_dir, progress)
        runs[key] = {"dir": run_dir, "state": state, "status": status, "metrics": metrics, "gram": gram, "ckpts": ckpts,
                     "steps": list(gram.steps) if gram is not None else runio.list_checkpoints(run_dir)}

    table9, rotation, update, coupling, window_geo = [], {}, {}, {}, {}
    for key, r in runs.items():
        win = [t for t in r["steps"] if lo <= t <= hi]
        geo = geometry(r["gram"], win)
        window_geo[key] = geo
        out = run_outcome(r["metrics"], s["step_2000"])
        null = window_pc1_null(r["gram"], win) if geo["reason"] is None else {}
        table9.append({"run": key, "optimizer": cfgs[key].optimizer, "state": r["state"], **out,
                       "pc1": geo["pc1"], "pc1_raw": geo["pc1_raw"], "k95": geo["k95"], "k99": geo["k99"],
                       "drift": geo["drift"], "window": [lo, hi], "window_steps": win, "geometry_reason": geo["reason"],
                       "pc1_null": null.get("null_pc1"), "pc1_minus_null": null.get("pc1_minus_null"),
                       **decay_columns(cfgs[key], r["ckpts"], r["steps"], win),
                       "status_message": (r["status"] or {}).get("message")})
        if geo["reason"] is None:
            vb = backbone_coeffs(r["gram"], win)
            rotation[key] = _guard(lambda: pc1_rotation(r["gram"], win, vb))
            update[key] = _guard(lambda: {"v_b": f"row-normalised PC1 of [{lo}, {hi}] anchored at {win[0]}",
                                          **update_alignment_at(r["gram"], vb, s["update_ts"], s["update_delta"])})
            coupling[key] = _guard(lambda: residual_coupling(r["gram"], win, vb, r["metrics"], geo))
        else:
            for d in (rotation, update, coupling):
                d[key] = {"reason": geo["reason"]}

    table10 = []
    for key, spec, kind in PAPER_TABLE10:
        if key not in runs:
            continue
        r = runs[key]
        scaled = scale_window_spec(base, spec)
        win, missing = window_from_spec(scaled, r["steps"])
        geo = geometry(r["gram"], win) if not missing else null_geometry(win, f"no checkpoint at step(s) {missing}")
        table10.append({"run": key, "optimizer": cfgs[key].optimizer, "window": win, "window_spec": _window_text(scaled),
                        "paper_window": _window_text(spec), "kind": kind,
                        "val_range": val_range(r["metrics"], win[0], win[-1]) if win else None,
                        **{k: geo[k] for k in ("pc1", "pc1_raw", "k95", "k99", "drift", "n_drifts", "reason")}})

    matched = {"target_source": "final val loss of run C (SGD + momentum)", "min_checkpoints": 3}
    target = next((row["final_val_loss"] for row in table9 if row["run"] == "C"), None)
    matched["target"] = target
    matched["rows"] = []
    if target is None:
        matched["reason"] = "run C is not part of this analysis or has no evaluation"
    else:
        for key, r in runs.items():
            m = matched_window(r["steps"], r["metrics"], target)
            geo = geometry(r["gram"], m["window"])
            matched["rows"].append({"run": key, "optimizer": cfgs[key].optimizer, "kind": "auto-matched", **m,
                                    **{k: geo[k] for k in ("pc1", "pc1_raw", "k95", "k99", "drift", "n_drifts",
                                                           "reason")}})
        matched["claim17"] = claim17_windows(runs, cfgs, target)

    return {"study": STUDY, "study_dir": str(study_dir), "runs_analysed": list(runs),
            "protocol": protocol(base, cfgs, decay), "table9": table9, "table10": table10, "matched": matched,
            "pc1_rotation": rotation, "update_alignment": update, "residual_coupling": coupling,
            "verdict": verdict({row["run"]: row for row in table9}),
            "curves": {key: {f: [m.get(f) for m in r["metrics"]] for f in ("step", "val_loss", "p_ood", "p_in",
                                                                             "train_loss", "lr")}
                       for key, r in runs.items()},
            "paper": PAPER_RESULTS}
