"""Do early low-dimensional diagnostics predict success? (the open question of skydancerosel/bubble-modadd's
README: "Can early-training low-dimensional diagnostics (e.g., subspace distance or effective rank) reliably
predict eventual grokking success?").

Protocol (stated before any run was looked at; the constants below are the pre-registration):

* Runs: attention-only models on the marker modular-addition task (reference mode, m = 1..M_MAX) trained on a
  *finite* training set of N sequences (``modadd_train_size``) -- the knob that changes success -- for every N
  of ``TRAIN_SIZES`` and every seed of ``SEEDS``; the eval sets are a held-out split (training sequences
  removed) and every evaluation also scores (part of) the training set. AdamW at a constant rate with weight
  decay WD, as in the grokking literature's finite-data regime.
* Early window: the checkpoints up to the one nearest EARLY = 15 % of training (10 % and 20 % reported beside).
  Diagnostics there, per run:
  - ``overlap_to_final``: median over the attention blocks of the overlap between the top-3 subspace of the drifts
    so far and the final top-3 subspace (training/geometry/subspace_distance.py; it uses the final checkpoint,
    so it is a diagnostic of the trajectory, not a causal forecast) and ``overlap_excess``, the same minus the
    random walk's with the same step sizes;
  - ``erank_early`` and ``r90_early``: median over the attention blocks of the singular-value effective rank and
    of r90 of the centred trajectory of the early checkpoints only (training/geometry/exec_subspace.py; causal);
  - ``heldout_acc_early``: the held-out accuracy at that time -- a baseline predictor that needs no geometry:
    a diagnostic that predicts no better than it adds nothing.
* Outcomes: ``final_heldout_acc`` (mean over m at the last evaluation) and a grokking-like transition, defined
  as: the training accuracy first reaches FIT_ACC at t_fit, the held-out accuracy then trails it by at least
  GAP, and afterwards the held-out accuracy rises by at least JUMP within at most JUMP_WINDOW of training.
* Statistics: Spearman's ρ between each diagnostic and each outcome over all runs, a percentile bootstrap 95 %
  CI (BOOT resamples of runs), the Fisher-z CI with the Fieller–Hartley–Pearson variance 1.06 / (n − 3), and two
  nulls: a permutation p-value (outcomes shuffled over all runs: no association at all) and a stratified one
  (shuffled within each N: no association beyond what the knob N explains), with the mean within-N ρ.
* Verdict per diagnostic (on final held-out accuracy, the bootstrap CI): **predictive** when the CI excludes 0
  and |ρ| ≥ 0.5; **not predictive** when the CI lies inside (−0.3, 0.3); otherwise **inconclusive**. Beside it,
  "beyond the knob" when the stratified permutation p < 0.05, else "not beyond the knob".
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from training.core import runio
from training.core.config import Config, preset
from training.core.errors import UserError
from training.core.modadd import modadd_config
from training.core.tasks import validate
from training.geometry.exec_subspace import block_slices, read_block_snapshots, spectrum
from training.geometry.permutation import permuted_rank_correlations, row_correlations
from training.studies import modadd_analysis as ma
from training.studies.common import RunJob, run_state, train_runs

STUDY = "modadd_early"
RESULT = "modadd_early"

# ---------------------------------------------------------------------------- the pre-registered constants
EARLY = 0.15
EARLY_ALSO = (0.1, 0.2)
FIT_ACC = 0.9            # the training set counts as fitted at this accuracy
GAP = 0.3                # ... with the held-out accuracy at least this much lower then
JUMP = 0.3               # a later rise of the held-out accuracy by at least this ...
JUMP_WINDOW = 0.1        # ... within at most this fraction of training
PREDICTIVE_RHO = 0.5     # |ρ| needed (with a CI excluding 0) for "predictive"
NULL_BAND = 0.3          # a CI inside (−0.3, 0.3) reads "not predictive"
BOOT = 2000
PERMUTATIONS = 5000
ALPHA = 0.05

DIAGNOSTICS = ("overlap_to_final", "overlap_excess", "erank_early", "r90_early", "heldout_acc_early")
OUTCOMES = ("final_heldout_acc", "grokked")

# quick: the CPU size (a 2-core machine, minutes); test: seconds, for the tests
SIZES = {
    "test": dict(n_layer=1, d_model=16, n_head=2, d_ff=32, batch_size=16, lr=3e-3, steps=30, ckpt_every=2,
                 eval_every=2, eval_batch_size=64, modadd_n_eval=32),
    "quick": dict(n_layer=2, d_model=32, n_head=2, d_ff=128, batch_size=32, lr=2e-3, steps=1200, ckpt_every=30,
                  eval_every=30, eval_batch_size=512, modadd_n_eval=128),
}
GRID = {"test": dict(train_sizes=(16, 64), seeds=(0, 1, 2)),
        "quick": dict(train_sizes=(64, 256, 1024, 4096), seeds=(0, 1, 2, 3))}
TASK = dict(modadd_m_min=1, modadd_m_max=2, modadd_mode="reference", attn_only=True)
WD = 0.5
PROTOCOL_FIELDS = ("task", "attn_only", "modadd_mode", "modadd_schedule", "modadd_train_size", "seed", "steps",
                   "seq_len", "modadd_m_min", "modadd_m_max", "wd")


def base_config(size: str, overrides: dict | None = None) -> Config:
    if size not in SIZES:
        raise UserError(f"unknown preset '{size}' (choose from {', '.join(SIZES)})")
    cfg = modadd_config(preset("test"), optimizer="adamw", beta1=0.9, beta2=0.999, eps=1e-8, wd=WD, **TASK,
                        **SIZES[size], preset=f"modadd_early_{size}")
    if overrides:
        bad = sorted(set(overrides) & set(PROTOCOL_FIELDS))
        if bad:
            raise UserError(f"--set {', '.join(bad)}=...: the early-diagnostics study sets "
                            f"{'these' if len(bad) > 1 else 'this'} itself (use --preset for the size)")
        cfg = cfg.replace(**overrides)
        if "modadd_T" in overrides:
            cfg = cfg.replace(seq_len=cfg.modadd_T + 1)
    return cfg


def run_configs(size: str, overrides: dict | None = None) -> dict[str, Config]:
    base = base_config(size, overrides)
    g = GRID[size]
    return {f"n{n}_s{s}": validate(base.replace(modadd_train_size=n, seed=s))
            for n in g["train_sizes"] for s in g["seeds"]}


def train_all(root: Path, size: str, overrides: dict | None = None, progress: bool = False, log=print,
              jobs=None) -> dict:
    todo = [RunJob(name, cfg.replace(progress=progress), root / name) for name, cfg in run_configs(size, overrides).items()]
    done = train_runs(todo, jobs, log=log)
    return {name: r["seconds"] for name, r in done.items()}


# ---------------------------------------------------------------------------- per-run diagnostics and outcomes
def nearest(steps: Sequence[int], fraction: float) -> int:
    """Index of the step nearest ``fraction`` of the way from steps[0] to steps[-1]."""
    target = steps[0] + fraction * (steps[-1] - steps[0])
    return int(np.argmin([abs(s - target) for s in steps]))


def grokking(rows: Sequence[dict], total_steps: int) -> dict:
    """The grokking-like transition of one run's metrics (rows with step, acc, train_acc), by the rule above."""
    steps = [r["step"] for r in rows]
    test = [r.get("acc") for r in rows]
    train = [r.get("train_acc") for r in rows]
    fit = next((i for i, a in enumerate(train) if a is not None and a >= FIT_ACC), None)
    out = {"fit_step": None if fit is None else steps[fit], "gap_at_fit": None, "jump": None, "jump_start": None,
           "jump_end": None, "grokked": False}
    if fit is None:
        return out
    out["gap_at_fit"] = train[fit] - test[fit]
    window = JUMP_WINDOW * total_steps
    best = (0.0, None, None)
    for i in range(fit, len(rows)):
        for j in range(i + 1, len(rows)):
            if steps[j] - steps[i] > window + 1e-9:
                break
            if test[j] - test[i] > best[0]:
                best = (test[j] - test[i], steps[i], steps[j])
    out["jump"], out["jump_start"], out["jump_end"] = best
    out["grokked"] = bool(out["gap_at_fit"] >= GAP and best[0] >= JUMP)
    return out


def run_record(run_dir: Path, sd: dict) -> dict:
    """Diagnostics at the early fractions and the outcomes of one finished run (``sd``: its subspace distance)."""
    cfg = runio.read_run_config(run_dir)
    rows = runio.read_metrics(run_dir)
    steps = sd["steps"]
    blocks = [b for b in block_slices(cfg) if b.kind in ("WQ", "WK", "WV", "WO")]
    snaps = read_block_snapshots(run_dir, steps, blocks)
    rec: dict = {"train_size": cfg.modadd_train_size, "seed": cfg.seed, "early": {}}
    for f in (EARLY, *EARLY_ALSO):
        i = nearest(steps, f)
        upto = i + 1                                               # snapshots steps[0..i]
        sp = [spectrum(snaps[b.label][:upto], True) for b in blocks] if upto >= 3 else []
        ov = [sd["blocks"][b.label]["run"]["overlap"][i - 1] for b in blocks if "run" in sd["blocks"][b.label]] if i >= 1 else []
        nv = [sd["blocks"][b.label]["null"]["overlap"][i - 1] for b in blocks if "run" in sd["blocks"][b.label]] if i >= 1 else []
        er = [s["erank"] for s in sp if s.get("erank") is not None]
        r9 = [s["r90"] for s in sp if s.get("r90") is not None]
        ev = min(rows, key=lambda r: abs(r["step"] - steps[i]))
        rec["early"][f"{f:g}"] = {
            "step": steps[i], "checkpoints": upto,
            "overlap_to_final": float(np.median(ov)) if ov else None,
            "overlap_excess": float(np.median(np.subtract(ov, nv))) if ov else None,
            "erank_early": float(np.median(er)) if er else None,
            "r90_early": float(np.median(r9)) if r9 else None,
            "heldout_acc_early": ev.get("acc"), "eval_step": ev["step"]}
    g = grokking(rows, cfg.steps)
    rec["final_heldout_acc"] = rows[-1].get("acc")
    rec["final_train_acc"] = rows[-1].get("train_acc")
    rec["grokked"] = g["grokked"]
    rec["grokking"] = g
    rec["heldout_overlap"] = rows[-1].get("heldout_overlap")
    return rec


# ---------------------------------------------------------------------------- rank correlation with intervals and nulls
def spearman(x, y) -> float | None:
    """Spearman's ρ (average ranks for ties); None when either variable is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    from scipy.stats import rankdata
    rx, ry = rankdata(x), rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def fisher_ci(rho: float, n: int, level: float = 0.95) -> list[float] | None:
    """Fisher-z interval for Spearman's ρ with the Fieller–Hartley–Pearson variance 1.06 / (n − 3)."""
    if rho is None or n <= 3:
        return None
    from scipy.stats import norm
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    h = norm.ppf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
    return [math.tanh(z - h), math.tanh(z + h)]


def rank_correlation(x, y, groups=None, n_boot: int = BOOT, n_perm: int = PERMUTATIONS, seed: int = 0) -> dict:
    """ρ, its bootstrap and Fisher-z 95 % CIs, the permutation p-value, and (with ``groups``) the stratified
    permutation p-value (y shuffled within each group; statistic: the mean within-group ρ) and that mean."""
    from scipy.stats import rankdata
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    g = None if groups is None else np.asarray(groups)[ok]
    n = len(x)
    rho = spearman(x, y) if n >= 3 else None
    out = {"n": int(n), "rho": rho, "bootstrap_ci": None, "fisher_ci": fisher_ci(rho, n), "perm_p": None,
           "stratified_perm_p": None, "within_group_rho_mean": None, "n_boot": n_boot, "n_perm": n_perm}
    if rho is None:
        out["reason"] = "fewer than 3 runs or a constant variable"
        return out
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        idx = rng.integers(0, n, (n_boot, n))
        boots = row_correlations(rankdata(x[idx], axis=1), rankdata(y[idx], axis=1))
        boots = boots[np.isfinite(boots)]
        if len(boots) >= max(1, n_boot // 2):
            out["bootstrap_ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
            out["bootstrap_valid"] = int(len(boots))
    rx, ry = rankdata(x), rankdata(y)
    if n_perm > 0:
        perm = np.nan_to_num(permuted_rank_correlations(rx, ry, n_perm, rng))
        out["perm_p"] = float((1 + np.sum(np.abs(perm) >= abs(rho) - 1e-12)) / (n_perm + 1))
    if g is not None and len(set(g.tolist())) > 1:
        levels = [v for v in sorted(set(g.tolist())) if np.sum(g == v) >= 3]
        obs, sims = [], []
        for v in levels:
            m = g == v
            r = spearman(x[m], y[m])
            if r is None:
                continue
            obs.append(r)
            if n_perm > 0:
                sims.append(np.nan_to_num(permuted_rank_correlations(rankdata(x[m]), rankdata(y[m]), n_perm, rng)))
        if obs:
            out["within_group_rho_mean"] = float(np.mean(obs))
            if sims:
                sim = np.mean(sims, axis=0)
                out["stratified_perm_p"] = float((1 + np.sum(np.abs(sim) >= abs(np.mean(obs)) - 1e-12)) / (n_perm + 1))
    return out


def verdict(corr: dict) -> str:
    """The pre-registered rule on the bootstrap CI of ρ (see the module docstring)."""
    ci, rho = corr.get("bootstrap_ci"), corr.get("rho")
    if rho is None or ci is None:
        return "not applicable: " + corr.get("reason", "no interval")
    if (ci[0] > 0 or ci[1] < 0) and abs(rho) >= PREDICTIVE_RHO:
        v = "predictive"
    elif -NULL_BAND < ci[0] and ci[1] < NULL_BAND:
        v = "not predictive"
    else:
        v = "inconclusive"
    sp = corr.get("stratified_perm_p")
    if sp is not None:
        v += "; beyond the knob" if sp < ALPHA else "; not beyond the knob (within-N association not significant)"
    return v


# ---------------------------------------------------------------------------- the study's analysis
def analyse_all(root: Path, size: str, overrides: dict | None = None, redo: bool = False, log=print, seed: int = 0) -> dict:
    names = list(run_configs(size, overrides))
    done = [n for n in names if run_state(root / n) == "completed"]
    missing = [n for n in names if n not in done]
    if missing:
        log(f"not analysed (not completed): {', '.join(missing)}")
    from training.studies.modadd_study import cached
    records = {}
    for n in done:
        t0 = time.monotonic()
        d = root / n
        sd = cached(d, "subspace_distance", lambda: ma.subspace_distance(d), redo)
        records[n] = run_record(d, sd)
        log(f"analysed {n} ({time.monotonic() - t0:.1f} s)")
    res = {"preset": size, "study_dir": str(root), "runs": records, "protocol": protocol(size)}
    res["correlations"] = correlate(records, seed=seed)
    res["verdicts"] = {f"{f}|{d}": verdict(c) for f, per in res["correlations"].items()
                       for d, c in per.get("final_heldout_acc", {}).items()}
    res["grokked_runs"] = sorted(n for n, r in records.items() if r["grokked"])
    return res


def correlate(records: dict, seed: int = 0) -> dict:
    """fraction -> outcome -> diagnostic -> :func:`rank_correlation` over the runs."""
    names = sorted(records)
    groups = [records[n]["train_size"] for n in names]
    out: dict = {}
    for f in (EARLY, *EARLY_ALSO):
        key = f"{f:g}"
        per: dict = {}
        for outcome in OUTCOMES:
            y = [float(records[n][outcome]) if records[n][outcome] is not None else np.nan for n in names]
            per[outcome] = {}
            for i, dname in enumerate(DIAGNOSTICS):
                x = [records[n]["early"][key][dname] for n in names]
                x = [np.nan if v is None else float(v) for v in x]
                per[outcome][dname] = rank_correlation(x, y, groups, seed=seed + 17 * i)
        out[key] = per
    return out


def protocol(size: str) -> dict:
    return {"sizes": SIZES[size], "grid": {k: list(v) for k, v in GRID[size].items()}, "task": TASK, "wd": WD,
            "early": EARLY, "early_also": list(EARLY_ALSO), "fit_acc": FIT_ACC, "gap": GAP, "jump": JUMP,
            "jump_window": JUMP_WINDOW, "predictive_rho": PREDICTIVE_RHO, "null_band": NULL_BAND, "bootstrap": BOOT,
            "permutations": PERMUTATIONS, "alpha": ALPHA, "diagnostics": list(DIAGNOSTICS), "outcomes": list(OUTCOMES),
            "verdict_rule": "predictive: bootstrap 95 % CI of Spearman ρ excludes 0 and |ρ| ≥ 0.5; not predictive: "
                            "the CI lies inside (−0.3, 0.3); otherwise inconclusive. 'beyond the knob': the "
                            "permutation test within each training-set size gives p < 0.05."}
