"""A difficulty sweep of the marker task over (m_max, C): how learnability and the execution dimension change
with the number of summands and the modulus (issue: "a difficulty sweep over (m, C) as one command").

Protocol:

* One attention-only run per cell of ``GRID[size]`` -- m_max (m drawn uniformly from 1..m_max per batch) × C
  (values and labels 0..C-1) -- on reference-mode data with the modular-addition study's optimiser (AdamW,
  β2 0.999, weight decay 0.01, constant learning rate, no clipping), one seed (``--seed``). Runs are ordinary run
  directories ``m<m_max>_C<C>_s<seed>`` under the sweep directory, trained side by side, skipped when finished.
* Per cell, at the last evaluation: the held-out accuracy (the fixed eval sets, seeded by eval_seed only and
  disjoint in practice from the fresh training draws), pooled over m as k correct of n = |ms| · modadd_n_eval,
  beside its chance level (ModAddSpec.chance: 1/C), the Wilson 95 % interval and the exact one-sided binomial
  p-value against chance; *learned* when the accuracy is at least chance + LEARNED_MARGIN (the study's rule).
* The execution dimension: the median over attention blocks of the centred r90 of the per-block trajectory
  (modadd_analysis.spectra, cached in the run's analysis/), beside the median r90 of the random walk with the same
  step sizes (its null); *below null* when at least 1 component lower. r90 of a run that did not learn describes
  a failed trajectory and is marked so.

Writes ``SWEEP/analysis/modadd_sweep.json`` (every cell, the protocol) and ``SWEEP/sweep.md`` (the table).
"""
from __future__ import annotations

from pathlib import Path

from training.core import runio
from training.core.config import Config, preset
from training.core.errors import UserError
from training.core.modadd import ModAddSpec, modadd_config
from training.core.tasks import validate
from training.geometry.logic_puzzles import wilson_interval
from training.studies import modadd_analysis as ma
from training.studies.common import RunJob, run_state, train_runs
from training.studies.modadd_study import LEARNED_MARGIN, apply_overrides, cached

STUDY = "modadd_sweep"
RESULT = "modadd_sweep"

SIZES = {
    "test": dict(n_layer=1, d_model=16, n_head=2, d_ff=32, batch_size=16, lr=3e-3, steps=16, ckpt_every=4,
                 eval_every=8, eval_batch_size=64, modadd_n_eval=32),
    "quick": dict(n_layer=2, d_model=32, n_head=2, d_ff=128, batch_size=32, lr=2e-3, steps=1500, ckpt_every=50,
                  eval_every=100, eval_batch_size=512, modadd_n_eval=256),
}
GRID = {"test": dict(m_max=(1, 2), classes=(5, 8)),
        "quick": dict(m_max=(2, 3, 4), classes=(5, 8, 11))}
NULL_SAMPLES = {"test": 3, "quick": 20}
TASK = dict(attn_only=True, modadd_mode="reference", modadd_schedule="mixed", modadd_m_min=1)
PROTOCOL_FIELDS = ("task", "attn_only", "modadd_mode", "modadd_schedule", "modadd_m_min", "modadd_m_max",
                   "modadd_classes", "modadd_op", "seed", "steps", "seq_len")


def base_config(size: str, overrides: dict | None = None) -> Config:
    if size not in SIZES:
        raise UserError(f"unknown preset '{size}' (choose from {', '.join(SIZES)})")
    cfg = modadd_config(preset("test"), optimizer="adamw", beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01, **TASK,
                        **SIZES[size], preset=f"modadd_sweep_{size}")
    return apply_overrides(cfg, overrides, PROTOCOL_FIELDS, "the difficulty sweep",
                           "the grid is m_max x C; use --preset for the size, --seed for the seed")


def run_name(m_max: int, C: int, seed: int) -> str:
    return f"m{m_max}_C{C}_s{seed}"


def run_configs(size: str, seed: int, overrides: dict | None = None) -> dict[str, Config]:
    base, g = base_config(size, overrides), GRID[size]
    return {run_name(mm, C, seed): validate(base.replace(modadd_m_max=mm, modadd_classes=C, seed=seed))
            for mm in g["m_max"] for C in g["classes"]}


def train_all(root: Path, size: str, seed: int, overrides: dict | None = None, progress: bool = False, log=print,
              jobs=None) -> dict:
    todo = [RunJob(name, cfg.replace(progress=progress), root / name)
            for name, cfg in run_configs(size, seed, overrides).items()]
    return {name: r["seconds"] for name, r in train_runs(todo, jobs, log=log).items()}


# ---------------------------------------------------------------------------- per cell
def heldout_accuracy(final: dict, ms, n_per_m: int, chance: float) -> dict:
    """Pooled held-out accuracy of the last evaluation (``acc_m<m>`` on n_per_m sequences each) with its chance
    level, Wilson 95 % interval and the exact one-sided binomial p-value of 'above chance'."""
    from scipy.stats import binomtest
    k = sum(int(round(final[f"acc_m{m}"] * n_per_m)) for m in ms)
    n = n_per_m * len(ms)
    return {"k": k, "n": n, "acc": k / n, "chance": chance, "ci95": wilson_interval(k, n),
            "p_above_chance": float(binomtest(k, n, chance, alternative="greater").pvalue),
            "learned": k / n >= chance + LEARNED_MARGIN}


def cell(run_dir: Path, null_samples: int, seed: int, redo: bool = False) -> dict:
    """One finished run's row: its (m_max, C), held-out accuracy beside chance, and r90 beside its null."""
    cfg = runio.read_json(run_dir / "config.json")["config"]
    ms = list(range(cfg["modadd_m_min"], cfg["modadd_m_max"] + 1))
    chance = ModAddSpec(C=cfg["modadd_classes"], op=cfg.get("modadd_op", "add")).chance
    final = runio.read_metrics(run_dir)[-1]
    acc = heldout_accuracy(final, ms, cfg["modadd_n_eval"], chance)
    sp = cached(run_dir, "spectra", lambda: ma.spectra(run_dir, null_samples=null_samples, seed=seed), redo)
    att = sp["summary"]["attention"]
    r90, null = att["r90_median"], att["null_r90_median"]
    return {"run": run_dir.name, "m_max": cfg["modadd_m_max"], "classes": cfg["modadd_classes"], **acc,
            "per_m": {str(m): final[f"acc_m{m}"] for m in ms},
            "r90_median": r90, "null_r90_median": null, "pr_median": att["pr_median"],
            "below_null": null is not None and r90 <= null - 1}


def analyse_all(root: Path, size: str, seed: int, overrides: dict | None = None, redo: bool = False,
                log=print) -> dict:
    names = list(run_configs(size, seed, overrides))
    done = [n for n in names if run_state(root / n) == "completed"]
    if len(done) < len(names):
        log(f"not analysed (not completed): {', '.join(n for n in names if n not in done)}")
    cells = [cell(root / n, NULL_SAMPLES[size], seed, redo) for n in done]
    return {"preset": size, "seed": seed, "cells": cells, "summary": summary(cells),
            "protocol": {"grid": {k: list(v) for k, v in GRID[size].items()}, "sizes": SIZES[size], **TASK,
                         "null_samples": NULL_SAMPLES[size], "learned_margin": LEARNED_MARGIN, "seeds": 1}}


def summary(cells: list[dict]) -> dict:
    learned = [c for c in cells if c["learned"]]
    return {"n_cells": len(cells), "n_learned": len(learned), "n_seeds": 1,
            "n_below_null_learned": sum(c["below_null"] for c in learned),
            "statement": (f"{len(learned)} of {len(cells)} cells learned the task (accuracy ≥ chance + {LEARNED_MARGIN}); "
                          f"of those, {sum(c['below_null'] for c in learned)} have an attention r90 at least 1 below "
                          "the random-walk null; one seed per cell, so differences between neighbouring cells are "
                          "indicative only")}


def markdown(res: dict) -> str:
    """The sweep's table (one row per cell) and its one-sentence summary."""
    L = [f"# Difficulty sweep over (m_max, C) ({res['preset']}, seed {res['seed']})", "",
         "Attention-only models, reference-mode marker modular addition, m uniform in 1..m_max; held-out accuracy "
         "at the last evaluation, pooled over m, with its chance level (1/C), Wilson 95 % interval and the exact "
         "one-sided binomial p-value against chance; the execution dimension is the median centred r90 of the "
         "attention blocks beside the random walk with the same step sizes (training/studies/modadd_sweep.py). "
         "One seed per cell.", "",
         "| m_max | C | chance | held-out acc [95 % CI] | p (above chance) | learned | r90 | null r90 | below null |",
         "|---|---|---|---|---|---|---|---|---|"]
    for c in res["cells"]:
        lo, hi = c["ci95"]
        L.append(f"| {c['m_max']} | {c['classes']} | {c['chance']:.3f} | {c['acc']:.3f} [{lo:.3f}, {hi:.3f}] | "
                 f"{_p(c['p_above_chance'])} | {'yes' if c['learned'] else 'no'} | {c['r90_median']:g} | "
                 f"{'n/a' if c['null_r90_median'] is None else format(c['null_r90_median'], '.3g')} | "
                 f"{'yes' if c['below_null'] else 'no'}{'' if c['learned'] else ' (not learned)'} |")
    L += ["", res["summary"]["statement"] + ".", ""]
    return "\n".join(L)


def _p(p: float) -> str:
    return "< 1e-12" if p < 1e-12 else f"{p:.2g}"


def write_outputs(res: dict, root: Path) -> Path:
    runio.atomic_write_json(root / "analysis" / f"{RESULT}.json", res)
    path = root / "sweep.md"
    runio.atomic_write_text(path, markdown(res))
    return path

