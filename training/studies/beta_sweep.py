"""The AdamW β2 sweep (mini_gpt README, findings 3 and 5; in skydancerosel/mini_gpt ``beta2_backbone_analysis.py``,
``beta2_reheating.py`` and ``experiments/beta_sweep/run_beta2_overnight.sh``): what it trains and what it measures.

Protocol (paper values; at another preset every step count goes through :func:`studies.scale_step`).
One run per β2 ∈ {0.99, 0.95, 0.90, 0.80, 0.0} with *nothing else* changed between the runs -- same seed,
same p_probe (the preset's; mini_gpt's ``run_beta2_overnight.sh`` silently trained its sweep at 0.20), same batch: 4,000 steps, the
preset's warmup (clamped to the run), cosine over the 4,000 steps, λ from the preset raised to its second
value at step 4,000 (the last step), evaluation every 200 steps, checkpoints every 200 plus every 50 in
[600, 2000] and every 100 in (2000, 4000].

Per-run measurements (:func:`analyse_run`):

- window geometry on [600, 2000]: uncentered PCA of θ(t) − θ(600) (row-normalised, and raw PC1), k95, k99
  and the drift ‖θ(2000) − θ(600)‖ (:func:`training.geometry.trajectory.window_pca`);
- the run's backbone v_b = raw PC1 of all checkpoints from θ(0) (docs/definitions.md) and the update alignment
  C(t) = cos(θ(t) − θ(t − Δ), v_b) with Δ = 200 at every t where both checkpoints exist; the table's
  |cos(u, v_b)| is the mean of |C(t)| over all such t (and, beside it, over t <= 2000);
- gradient interference cos(g_LM, g_probe) on the trunk at the checkpoints nearest 1,600 and 3,000
  (:func:`training.geometry.gradients.interference`, mean over M seeded batches); the table's value is the mean of
  the two checkpoints' mean cosines.

A run *diverged* when its status says so (a non-finite loss stopped it), when its last evaluation is not
finite, or when its final validation loss is above its initial one (training made the model worse than
its initialisation: the paper's β2 = 0 run ended at val loss ≈ 1.2e8). A diverged run keeps every number
it could produce: checkpoints with non-finite weights are left out of the geometry, and whatever cannot
be computed is null with a reason.

The β2-ablation reheating grid (mini_gpt README finding 5) reuses :func:`studies.reheat_config`: from the checkpoints
of the runs with β2 ∈ {0.95, 0.80} at steps {2000, 4000}, a fresh AdamW with the run's β2, λ doubled,
the reheating learning rates, warmup then cosine, a data stream of its own and the original batch.
"""
from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from training.core import runio
from training.core.cli import show as _fmt
from training.core.config import NOT_HASHED, Config, parse_override
from training.core.errors import UserError
from training.core.runio import read_run_config
from training.core.tasks import validate
from training.geometry.gradients import interference
from training.geometry.nulls import window_pc1_null
from training.geometry.stats import finite as _finite
from training.geometry.trajectory import cached_gram, lagged_update_alignment, pca, window_pca
from training.studies import common as studies
from training.studies import parallel

STUDY = "beta_sweep"
BETA2S = (0.99, 0.95, 0.90, 0.80, 0.0)
REHEAT_BETA2S = (0.95, 0.80)
REHEAT_CKPTS = (2000, 4000)              # paper steps of the 4,000-step sweep runs
PAPER_RUN_STEPS = 4000
PAPER_EVAL_EVERY = 200
PAPER_DENSE = ((600, 2000, 50), (2000, 4000, 100))
PAPER_WINDOW = (600, 2000)
PAPER_DELTA = 200                        # update-alignment lag
PAPER_EARLY_END = 2000                   # the "early" mean |C| is over t <= this
PAPER_INTERFERENCE_STEPS = (1600, 3000)
DEFAULT_INTERFERENCE_BATCHES = 8

# Fields the protocol sets for every run: a --set of one of them would be silently replaced.
PROTOCOL_FIELDS = ("beta2", "steps", "lambda_step", "eval_every", "ckpt_every", "ckpt_dense", "init_from",
                   "init_optimizer")


# ---------------------------------------------------------------------------- names and flags
def beta2_label(beta2: float) -> str:
    return f"{beta2:g}"


def run_dir_name(beta2: float) -> str:
    return f"b2_{beta2_label(beta2)}"


def _numbers(text: str, what: str, kind: type) -> list:
    try:
        values = [kind(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"{what} must be a comma-separated list of numbers (got '{text}')") from None
    if not values:
        raise UserError(f"{what} is empty (got '{text}')")
    if len(set(values)) != len(values):
        raise UserError(f"{what} lists a value twice (got '{text}')")
    return values


def parse_beta2s(text: str, what: str = "--beta2s") -> list[float]:
    values = _numbers(text, what, float)
    bad = [v for v in values if not (0.0 <= v < 1.0)]
    if bad:
        raise UserError(f"{what}: β2 must be in [0, 1) (got {bad[0]:g})")
    return values


def parse_paper_steps(text: str, what: str = "--ckpts") -> list[int]:
    values = _numbers(text, what, int)
    bad = [v for v in values if not (0 < v <= PAPER_RUN_STEPS)]
    if bad:
        raise UserError(f"{what}: checkpoints are paper steps in (0, {PAPER_RUN_STEPS}] (got {bad[0]})")
    return sorted(values)


def parse_paper_lrs(text: str, what: str = "--lrs") -> list[float]:
    values = _numbers(text, what, float)
    bad = [v for v in values if not (v > 0 and math.isfinite(v))]
    if bad:
        raise UserError(f"{what}: learning rates must be positive (got {bad[0]:g})")
    return values


def runtime_overrides(items: Sequence[str]) -> dict:
    """The --set items that only say where runs execute (applied to reheating runs derived from a run's config)."""
    return {k: v for k, v in (parse_override(i) for i in items) if k in NOT_HASHED and k != "out_dir"}


def check_overrides(items: Sequence[str]) -> None:
    """Refuse a --set of a field the protocol fixes (it would be replaced without a word)."""
    studies.refuse_protocol_overrides((parse_override(i)[0] for i in items), PROTOCOL_FIELDS, "β2-sweep",
                                      {"beta2": " (use --beta2s)"})


# ---------------------------------------------------------------------------- protocol
def protocol(cfg: Config) -> dict:
    """The sweep's protocol at the scale of ``cfg``'s preset (paper values at ``paper``)."""
    s = lambda paper_step: studies.scale_step(cfg, paper_step)  # noqa: E731
    steps = s(PAPER_RUN_STEPS)
    return {"preset": cfg.preset, "steps": steps, "warmup": min(cfg.warmup, steps), "lambda_step": steps,
            "eval_every": s(PAPER_EVAL_EVERY), "ckpt_every": s(PAPER_EVAL_EVERY),
            "ckpt_dense": [[s(lo), s(hi), s(every)] for lo, hi, every in PAPER_DENSE],
            "window": list(studies.scale_window(cfg, *PAPER_WINDOW)), "delta": s(PAPER_DELTA),
            "early_end": s(PAPER_EARLY_END), "interference_steps": [s(t) for t in PAPER_INTERFERENCE_STEPS],
            "reheat_ckpts": [s(c) for c in REHEAT_CKPTS], "reheat": studies.reheat_defaults(cfg)}


def sweep_config(base: Config, beta2: float) -> Config:
    """The run of the sweep with this β2: ``base`` (a preset with the user's overrides) plus the protocol."""
    p = protocol(base)
    return validate(base.replace(beta2=float(beta2), steps=p["steps"], warmup=p["warmup"], lambda_step=p["lambda_step"],
                        eval_every=p["eval_every"], ckpt_every=p["ckpt_every"],
                        ckpt_dense=tuple(tuple(w) for w in p["ckpt_dense"])))


def train_sweep(base: Config, beta2s: Sequence[float], root: Path, log: Callable[[str], None] = print,
                jobs: int | None = None) -> list[dict]:
    """Train (or resume, or skip) one run per β2 under ``root`` (side by side on a CPU: studies.train_runs).

    A diverged run is recorded and the sweep goes on; a run that fails for another reason is recorded
    too, the others still run, and a UserError naming the failures is raised at the end.
    """
    root = Path(root)
    write_study_record(root, base, [{"beta2": b, "run_dir": str(root / run_dir_name(b)),
                                     "state": studies.run_state(root / run_dir_name(b))} for b in beta2s])
    try:
        runs, failure = studies.train_runs([studies.RunJob(f"β2 = {beta2_label(b)}", sweep_config(base, b),
                                                           root / run_dir_name(b)) for b in beta2s], jobs, log), None
    except parallel.JobsFailed as e:          # recorded below first, then raised
        runs, failure = e.results, e
    done = [{"beta2": b, "run_dir": str(root / run_dir_name(b)),
             "state": runs.get(f"β2 = {beta2_label(b)}", {}).get("state", studies.run_state(root / run_dir_name(b)))}
            for b in beta2s]
    write_study_record(root, base, done)
    if failure is not None:
        raise failure
    return done


def write_study_record(root: Path, base: Config, runs: list[dict]) -> None:
    """<study>/study.json: the protocol and the runs trained so far (merged with an earlier record)."""
    path = Path(root) / "study.json"
    old = runio.read_json(path, "study record") if path.exists() else {}
    by_beta = {r["beta2"]: r for r in old.get("runs", [])}
    by_beta.update({r["beta2"]: r for r in runs})
    runio.atomic_write_json(path, {"study": STUDY, "preset": base.preset, "seed": base.seed,
                                   "protocol": protocol(base),
                                   "runs": sorted(by_beta.values(), key=lambda r: -r["beta2"])})


def find_runs(root: Path) -> list[tuple[float, Path]]:
    """The sweep's run directories under ``root`` (b2_* with a config.json), by decreasing β2."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"study directory {root} does not exist; train the sweep first (run_study.py train)")
    runs = []
    for d in sorted(root.glob("b2_*")):
        if (d / "config.json").exists():
            runs.append((read_run_config(d).beta2, d))
    return sorted(runs, key=lambda r: -r[0])


def analysis_current(run_dir: Path, name: str = "beta_metrics") -> bool:
    """True when the run's β2 analysis is newer than its status (:func:`training.core.runio.analysis_is_current`)."""
    return runio.analysis_is_current(run_dir, name)


# ---------------------------------------------------------------------------- run outcome
def outcome(run_dir: Path, metrics: list[dict] | None = None, worse_than_start: bool = True) -> dict:
    """State, final and best values of a run from its status.json and metrics.jsonl.

    state: completed | diverged | running | failed | missing (see the module docstring for diverged;
    ``worse_than_start=False`` drops the "final validation loss above the initial one" rule, for runs
    that start from trained weights, such as reheating runs, whose loss may rise a little).
    final_val_loss is null unless the run completed without diverging; last_val_loss is the last
    evaluation's value whatever happened (null if not finite).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        return {"state": "missing", "run_status": "missing", "reason": f"{run_dir} holds no run"}
    status = runio.read_status(run_dir) or {}
    metrics = runio.read_metrics(run_dir) if metrics is None else metrics
    rows = [m for m in metrics if "step" in m]
    run_status = status.get("state", "missing")
    initial = rows[0].get("val_loss") if rows and rows[0]["step"] == 0 else None
    last = rows[-1] if rows else {}
    last_val = last.get("val_loss")
    p_rows = [m for m in rows if _finite(m.get("p_ood"))]
    best = max(p_rows, key=lambda m: m["p_ood"]) if p_rows else None
    reason = None
    if run_status == "diverged":
        reason = status.get("message") or f"non-finite loss at step {status.get('step')}"
    elif run_status == "completed" and not _finite(last_val):
        reason = f"non-finite validation loss at step {last.get('step')}"
    elif worse_than_start and run_status == "completed" and _finite(initial) and last_val > initial:
        reason = (f"final validation loss {last_val:.4g} is above the initial {initial:.4g} "
                  "(training made the model worse than its initialisation)")
    state = "diverged" if reason else run_status
    return {"state": state, "run_status": run_status, "status_step": status.get("step"),
            "status_message": status.get("message"), "diverged_reason": reason,
            "final_step": last.get("step"),
            "final_val_loss": last_val if state == "completed" and _finite(last_val) else None,
            "last_val_loss": last_val if _finite(last_val) else None,
            "initial_val_loss": initial if _finite(initial) else None,
            "best_p_ood": best["p_ood"] if best else None, "best_p_ood_step": best["step"] if best else None,
            "final_p_ood": last.get("p_ood") if _finite(last.get("p_ood")) else None}


# ---------------------------------------------------------------------------- geometry helpers
def finite_steps(gram) -> tuple[list[int], list[int]]:
    """Checkpoints whose drift from the anchor is finite (diagonal of the Gram), and those that are not.

    A checkpoint with a non-finite weight makes its whole row and column of the Gram non-finite, and no
    other entry: the finite ones form an exact Gram of their own.
    """
    d = np.diag(gram.G)
    ok = [s for s, v in zip(gram.steps, d) if np.isfinite(v)]
    bad = [s for s, v in zip(gram.steps, d) if not np.isfinite(v)]
    return ok, bad


def nearest_step(steps: Sequence[int], target: int, tolerance: int) -> int | None:
    """The checkpoint nearest ``target`` (the earlier on a tie), or None if none is within ``tolerance``."""
    if not steps:
        return None
    best = min(steps, key=lambda s: (abs(s - target), s))
    return best if abs(best - target) <= tolerance else None


def mean_abs(values: Sequence[float], steps: Sequence[int], until: int | None = None) -> float | None:
    """Mean of ``values`` over the entries whose step is <= ``until`` (all without it); None if there are none."""
    sel = [abs(v) for v, s in zip(values, steps) if until is None or s <= until]
    return float(np.mean(sel)) if sel else None


# ---------------------------------------------------------------------------- per-run analysis
SUMMARY_KEYS = ("pc1", "pc1_raw", "k95", "k99", "drift", "mean_abs_update_cos", "mean_abs_update_cos_early",
                "interference", "pc1_null", "pc1_minus_null")


class _Summary:
    """The sweep table's values of one run, each None with its reason when it cannot be computed."""

    def __init__(self):
        self.values: dict = {k: None for k in SUMMARY_KEYS}
        self.reasons: dict[str, str] = {}

    def null(self, keys: Sequence[str], why: str) -> None:
        for k in keys:
            if self.values[k] is None:
                self.reasons[k] = why


def _usable_gram(run, progress: bool):
    """The run's Gram over its finite checkpoints (non-finite ones are left out and listed)."""
    # --- checkpoints and their Gram; non-finite checkpoints are left out
    if len(run.steps) >= 2:
        gram_all = cached_gram(run.checkpoints(), None, progress=progress)
        ok, bad = finite_steps(gram_all)
        gram = gram_all.restrict(ok)
    else:
        gram, ok, bad = None, list(run.steps), []
    checkpoints = {"all": list(run.steps), "finite": ok, "non_finite": bad}
    if bad:
        checkpoints["note"] = f"{len(bad)} checkpoint(s) with non-finite weights left out, from step {bad[0]}"
    return gram, ok, checkpoints


def _window_geometry(gram, ok: list[int], lo: int, hi: int, sm: _Summary):
    """The protocol window's PCA (both normalisations) from the usable checkpoints in [lo, hi]."""
    # --- window geometry
    win = [s for s in ok if lo <= s <= hi]
    window: dict = {"requested": [lo, hi], "steps": win}
    if gram is None or len(win) < 2:
        window["reason"] = (f"only {len(win)} usable checkpoint(s) in the window [{lo}, {hi}] "
                            f"(the run's usable checkpoints end at step {ok[-1] if ok else None})")
    else:
        w = window_pca(gram, win)
        if w["reason"]:
            window["reason"] = w["reason"]
        else:
            geo, raw = w["rownorm"], w["raw"]
            window.update(geo)
            window["pc1_raw"] = raw["pc1"]
            window["explained_variance_ratio_raw"] = raw["explained_variance_ratio"]
            window["partial"] = ok[-1] < hi
            if window["partial"]:
                window["note"] = (f"the run's usable checkpoints end at step {ok[-1]}: the window [{lo}, {hi}] "
                                  f"is measured on [{win[0]}, {win[-1]}] only")
            for k in ("pc1", "k95", "k99", "drift"):
                sm.values[k] = window[k]
            sm.values["pc1_raw"] = raw["pc1"]
            # the window's PC1 beside its random-walk null (the same window, the run's own step sizes)
            window["null"] = window_pc1_null(gram, win)
            sm.values["pc1_null"] = window["null"]["null_pc1"]
            sm.values["pc1_minus_null"] = window["null"]["pc1_minus_null"]
    keys = ("pc1", "pc1_raw", "k95", "k99", "drift", "pc1_null", "pc1_minus_null")
    if "reason" in window:
        sm.null(keys, window["reason"])
    elif window.get("partial"):
        for k in keys:
            sm.reasons[k] = window["note"]        # a value, with the caveat beside it
    return window


def _backbone_alignment(gram, ok: list[int], delta: int, early_end: int, sm: _Summary):
    """The whole run's raw backbone and the lagged update alignment with it."""
    # --- backbone of the whole run and lagged update alignment
    backbone: dict = {"steps": ok, "reference_step": ok[0] if ok else None}
    ua: dict = {"delta": delta, "early_end": early_end}
    try:
        if gram is None or len(ok) < 2:
            raise UserError(f"the run has {len(ok)} usable checkpoint(s); the backbone needs at least 2")
        p = pca(gram, ok, ok[0], rownorm=False, k=1)
        v = p.coeffs[0]
        backbone.update({"pc1_raw": float(p.explained_variance_ratio[0]), "k95": p.k95, "k99": p.k99,
                         "explained_variance_ratio": p.explained_variance_ratio.tolist()})
        lagged = lagged_update_alignment(gram, v, delta)
        lagged.pop("missing_steps")
        ua.update(lagged)
        if not ua["steps"]:
            raise UserError(f"no pair of usable checkpoints {delta} steps apart")
        ua["mean_abs_cos"] = mean_abs(ua["abs_cos"], ua["steps"])
        ua["mean_abs_cos_early"] = mean_abs(ua["abs_cos"], ua["steps"], early_end)
        sm.values["mean_abs_update_cos"] = ua["mean_abs_cos"]
        sm.values["mean_abs_update_cos_early"] = ua["mean_abs_cos_early"]
        if ua["mean_abs_cos_early"] is None:
            sm.reasons["mean_abs_update_cos_early"] = f"no update pair ends at or before step {early_end}"
    except UserError as e:
        backbone["reason"] = ua["reason"] = str(e)
        sm.null(("mean_abs_update_cos", "mean_abs_update_cos_early"), str(e))
    return backbone, ua


def _interference(run, ok, targets, delta, n_batches, seed, batch_size, device, progress, diverged: bool, sm: _Summary):
    """Gradient interference at the usable checkpoints nearest the targets, and its table value."""
    # --- gradient interference at the checkpoints nearest the targets (for a diverged run that stopped
    # early, at its usable checkpoint nearest each target, flagged as substituted)
    inter = interference_points(run, ok, targets, delta, n_batches, seed, batch_size, device, progress,
                                fallback=diverged)
    distinct: dict[int, float] = {}
    for pt in inter["points"]:
        if _finite(pt.get("mean_cos")):
            distinct.setdefault(pt["step"], pt["mean_cos"])
    inter["mean_cos"] = float(np.mean(list(distinct.values()))) if distinct else None
    inter["substituted"] = any(pt.get("substituted") for pt in inter["points"])
    notes = [pt["reason"] for pt in inter["points"] if pt.get("reason")]
    sm.values["interference"] = inter["mean_cos"]
    if notes or not distinct:
        sm.reasons["interference"] = "; ".join(notes) or "no target steps"
    return inter


def analyse_run(run, n_batches: int = DEFAULT_INTERFERENCE_BATCHES, seed: int = 0, batch_size: int | None = None,
                device: str = "cpu", progress: bool = False, interference_steps: Sequence[int] | None = None) -> dict:
    """Everything the sweep's table needs from one run (an :class:`analysis_io.Run`), never raising on a
    diverged run: what cannot be computed is None, with its reason in ``summary_reasons``."""
    cfg = run.cfg
    prot = protocol(cfg)
    lo, hi = prot["window"]
    delta, early_end = prot["delta"], prot["early_end"]
    targets = list(prot["interference_steps"] if interference_steps is None else interference_steps)
    metrics = run.metrics()
    out = {"run_dir": str(run.dir), "beta2": cfg.beta2, "preset": cfg.preset,
           "settings": {"n_batches": n_batches, "batch_size": batch_size, "seed": seed, "device": str(device)},
           "protocol": {"window": [lo, hi], "delta": delta, "early_end": early_end, "interference_steps": targets},
           "outcome": outcome(run.dir, metrics)}
    sm = _Summary()
    gram, ok, out["checkpoints"] = _usable_gram(run, progress)
    out["window"] = _window_geometry(gram, ok, lo, hi, sm)
    out["backbone"], out["update_alignment"] = _backbone_alignment(gram, ok, delta, early_end, sm)
    out["interference"] = _interference(run, ok, targets, delta, n_batches, seed, batch_size, device, progress,
                                        out["outcome"]["state"] == "diverged", sm)
    out["summary"] = sm.values
    out["summary_reasons"] = sm.reasons
    return out


def interference_points(run, usable: Sequence[int], targets: Sequence[int], tolerance: int, n_batches: int,
                        seed: int, batch_size: int | None, device: str, progress: bool, fallback: bool = False) -> dict:
    """cos(g_LM, g_probe) at the usable checkpoint nearest each target step (within ``tolerance`` steps).

    With ``fallback`` (a diverged run) a target with no checkpoint within the tolerance uses the nearest
    usable checkpoint anyway, marked ``substituted`` with a note; each checkpoint is measured once, and the
    run's interference is the mean over the distinct checkpoints measured.
    """

    points, done = [], {}
    task = None
    for target in targets:
        step = nearest_step(usable, target, tolerance)
        pt: dict = {"target": int(target), "step": step}
        notes = []
        if step is None and fallback and usable:
            step = nearest_step(usable, target, 1 << 62)
            pt.update(step=step, substituted=True)
            notes.append(f"measured at step {step}, the diverged run's usable checkpoint nearest {target} "
                         f"(none within {tolerance} steps)")
        if step is None:
            last = usable[-1] if usable else None
            pt["reason"] = f"no usable checkpoint within {tolerance} steps of {target} (the last is step {last})"
            points.append(pt)
            continue
        if step not in done:
            if task is None:
                task = run.task()
            model = run.model(step, device=device)
            done[step] = interference(model, task, run.cfg, step, n_batches, seed, batch_size, progress=progress)
            del model
            if str(device).startswith("cuda"):
                torch.cuda.empty_cache()
        res = done[step]
        pt.update({k: v for k, v in res.items() if k != "step"})
        if res["n_finite"] < n_batches:
            notes.append(f"{n_batches - res['n_finite']} of {n_batches} gradient pairs at step {step} are "
                         "non-finite or zero")
        if notes:
            pt["reason"] = "; ".join(notes)
        points.append(pt)
    return {"targets": list(targets), "tolerance": tolerance, "points": points}


# ---------------------------------------------------------------------------- cross-run summary
def summary_row(beta2: float, run_dir: Path) -> dict:
    """One row of the table: the run's outcome and its beta_metrics.json numbers (null if not analysed)."""
    o = outcome(run_dir)
    row = {"beta2": beta2, "state": o["state"], "final_val_loss": o.get("final_val_loss"),
           "val_display": "diverged" if o["state"] == "diverged" else o.get("final_val_loss"),
           "best_p_ood": o.get("best_p_ood"), "last_val_loss": o.get("last_val_loss"),
           "final_step": o.get("final_step"), "diverged_reason": o.get("diverged_reason"),
           **{k: None for k in SUMMARY_KEYS}, "reasons": {}, "run_dir": str(run_dir)}
    path = Path(run_dir) / "analysis" / "beta_metrics.json"
    if not path.exists():
        row["reasons"] = {k: "not analysed yet (beta_summary.py)" for k in SUMMARY_KEYS}
        row["analysis"] = "missing"
        return row
    res = runio.read_json(path, "analysis file")
    row.update({k: res.get("summary", {}).get(k) for k in SUMMARY_KEYS})
    row["reasons"] = res.get("summary_reasons", {})
    row["analysis"] = "current" if analysis_current(run_dir) else "stale (the run changed after its analysis)"
    row["window_partial"] = bool(res.get("window", {}).get("partial"))
    row["interference_substituted"] = bool(res.get("interference", {}).get("substituted"))
    return row


def p_ood_curves(runs: Sequence[tuple[float, Path]]) -> list[dict]:
    curves = []
    for b, d in runs:
        ms = [m for m in runio.read_metrics(d) if "step" in m]
        curves.append({"beta2": b, "steps": [m["step"] for m in ms], "p_ood": [m.get("p_ood") for m in ms],
                       "val_loss": [m.get("val_loss") for m in ms]})
    return curves


TABLE_HEADER = ("β2", "Val loss", "Best p_ood", "PC1 (%)", "PC1 − null (pp)", "k95", "Drift", r"\|cos(u, v_b)\|", "Interference")


def table_cells(row: dict) -> list[str]:
    """The mini_gpt README columns of one row as display strings (a dagger marks a value a divergence cut short:
    a window measured on part of its span, interference measured at the last usable checkpoints)."""
    dag = "†" if row.get("window_partial") else ""
    val = "diverged" if row["state"] == "diverged" else (_fmt(row["final_val_loss"], ".3f") if row["state"] ==
                                                          "completed" else row["state"])
    drift = row["drift"]
    drift_s = "—" if drift is None else (f"{drift:,.0f}" if abs(drift) >= 1000 else f"{drift:.3g}")
    return [beta2_label(row["beta2"]), val, _fmt(row["best_p_ood"], ".3f"),
            _fmt(None if row["pc1"] is None else 100 * row["pc1"], ".1f") + dag,
            _fmt(None if row.get("pc1_minus_null") is None else 100 * row["pc1_minus_null"], "+.1f") + dag,
            _fmt(row["k95"], "d") + dag, drift_s + dag, _fmt(row["mean_abs_update_cos"], ".3f"),
            _fmt(row["interference"], ".3f") + ("†" if row.get("interference_substituted") else "")]


CSV_COLUMNS = ("beta2", "state", "final_val_loss", "val_display", "best_p_ood", "pc1_pct", "pc1_raw_pct",
               "pc1_null_pct", "pc1_minus_null_pp", "k95",
               "k99", "drift", "mean_abs_update_cos", "mean_abs_update_cos_early", "interference", "run_dir")


def csv_text(rows: Sequence[dict]) -> str:
    """The table as CSV; a missing value is an empty cell (never the string 'None')."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        cells = {**r, "pc1_pct": None if r["pc1"] is None else 100 * r["pc1"],
                 "pc1_raw_pct": None if r["pc1_raw"] is None else 100 * r["pc1_raw"],
                 "pc1_null_pct": None if r.get("pc1_null") is None else 100 * r["pc1_null"],
                 "pc1_minus_null_pp": None if r.get("pc1_minus_null") is None else 100 * r["pc1_minus_null"]}
        w.writerow(["" if cells.get(c) is None else cells[c] for c in CSV_COLUMNS])
    return buf.getvalue()


# ---------------------------------------------------------------------------- reheating grid
def reheat_plan(root: Path, beta2s: Sequence[float], paper_ckpts: Sequence[int],
                paper_lrs: Sequence[float] | None) -> list[dict]:
    """Every (β2, checkpoint, lr) reheating run: its config and directory. Checkpoints and learning rates
    are given in the paper's units and scaled to the original run's preset."""
    plan = []
    for b in beta2s:
        run_dir = Path(root) / run_dir_name(b)
        if not (run_dir / "config.json").exists():
            raise UserError(f"no β2 = {beta2_label(b)} run in {root}; train it first (run_study.py train "
                            f"--beta2s {beta2_label(b)})")
        orig = read_run_config(run_dir)
        state = outcome(run_dir)["run_status"]
        if state not in ("completed", "diverged"):
            raise UserError(f"the β2 = {beta2_label(b)} run is {state}; finish it first (run_study.py train)")
        d = studies.reheat_defaults(orig)
        lrs = d["lrs"] if paper_lrs is None else [studies.scale_lr(orig, lr) for lr in paper_lrs]
        have = set(runio.list_checkpoints(run_dir))
        for c in paper_ckpts:
            step = studies.scale_step(orig, c)
            for lr in lrs:
                entry = {"beta2": b, "orig_run": str(run_dir), "ckpt": step, "ckpt_paper": c, "lr": lr,
                         "out_dir": str(run_dir / "reheat" / studies.reheat_name(step, lr, False))}
                if step not in have:
                    entry["skip"] = (f"the β2 = {beta2_label(b)} run has no checkpoint at step {step} "
                                     f"(it stopped at {max(have)})")
                else:
                    entry["cfg"] = studies.reheat_config(orig, runio.checkpoint_path(run_dir, step), lr,
                                                         d["steps"], d["warmup"], d["lam"], d["eval_every"])
                plan.append(entry)
    return plan


_REHEAT_DIR = re.compile(r"^ckpt(\d+)_lr([0-9.eE+-]+)_fresh$")


def reheat_table(runs: Sequence[tuple[float, Path]]) -> list[dict]:
    """Per (β2, checkpoint): every reheating learning rate's re-entry (studies.reentry) and the best one (max G)."""
    groups: dict[tuple[float, int], list[dict]] = {}
    preset_len: dict[float, int] = {}
    for b, run_dir in runs:
        base = Path(run_dir) / "reheat"
        if not base.is_dir():
            continue
        preset_len[b] = studies.preset_steps(read_run_config(Path(run_dir)))
        for d in sorted(base.iterdir()):
            m = _REHEAT_DIR.match(d.name)
            if not m or not (d / "config.json").exists():
                continue
            cfg = read_run_config(d)
            step = int(m.group(1))
            o = outcome(d, worse_than_start=False)
            row = {"lr": cfg.lr, "state": o["state"], "run_dir": str(d)}
            try:
                row.update({k: v for k, v in studies.reentry(runio.read_metrics(d)).items()
                            if k in ("p0", "peak_p_ood", "peak_step", "G", "final_p_ood", "final_step",
                                     "first_step_at_threshold")})
            except UserError as e:
                row.update({"p0": None, "peak_p_ood": None, "peak_step": None, "G": None, "final_p_ood": None,
                            "reason": str(e)})
            groups.setdefault((b, step), []).append(row)
    out = []
    for (b, step), rows in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        rows.sort(key=lambda r: -r["lr"])
        scored = [r for r in rows if _finite(r.get("G"))]
        best = max(scored, key=lambda r: r["G"]) if scored else None
        tied = bool(scored) and len(scored) > 1 and all(abs(r["G"] - best["G"]) <= 1e-12 for r in scored)
        out.append({"beta2": b, "ckpt": step,
                    "ckpt_paper": int(round(step * studies.PAPER_STEPS / preset_len[b])),
                    "best_lr": best["lr"] if best else None, "best_lr_tied": tied,
                    "peak_p_ood": best["peak_p_ood"] if best else None, "G": best["G"] if best else None,
                    "p0": best["p0"] if best else None, "lrs": rows})
    return out


REHEAT_HEADER = ("β2", "Ckpt (paper step)", "Best LR", "p0", "Peak p_ood", "G")


def reheat_cells(entry: dict) -> list[str]:
    lr = "—" if entry["best_lr"] is None else ("any" if entry["best_lr_tied"] else f"{entry['best_lr']:g}")
    g = entry["G"]
    ckpt = str(entry["ckpt"]) if entry["ckpt"] == entry["ckpt_paper"] else f"{entry['ckpt']} ({entry['ckpt_paper']})"
    return [beta2_label(entry["beta2"]), ckpt, lr, _fmt(entry["p0"], ".3f"),
            _fmt(entry["peak_p_ood"], ".3f"), "—" if g is None else f"{g:+.3f}"]
