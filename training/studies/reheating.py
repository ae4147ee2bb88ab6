"""Reheating (arXiv 2602.23696 §6, mini_gpt README finding 5): restart a finished run from one of its checkpoints with a stronger
probe weight and a new warmup-cosine schedule, and measure where the restarted runs go.

Two halves:

* planning and bookkeeping of the reheating runs of a run RUN: they are ordinary run directories
  ``RUN/reheat/<name>/`` (name from :func:`training.studies.common.reheat_name`), built by
  :func:`training.studies.common.reheat_config` -- a fresh optimizer or the optimizer moments saved at that step, and
  a data stream of their own (skydancerosel/mini_gpt's reheating replayed the original batches, a defect
  we do not reproduce);
* their geometry against the ORIGINAL run's backbone. With θ_o the original checkpoints and θ_r(t) those of
  a reheating run (θ_r(0) = θ_o(S), the start checkpoint), every quantity is an inner product of drifts
  from θ_o(0), so one float64 Gram matrix over the union of both sets of checkpoint files (streamed once,
  :class:`training.geometry.trajectory.CheckpointFiles`) gives all of them without forming a T × D matrix:

  - v_b = raw PC1 of the original drifts θ_o(t) − θ_o(0), sign such that a(t_last) > 0 (docs/definitions.md), a span
    vector of those drifts;
  - a(t) = ⟨θ_r(t) − θ_o(0), v_b⟩ and ‖r(t)‖ = ‖θ_r(t) − θ_o(0) − a(t)·v_b‖;
  - moved(t) = ‖θ_r(t) − θ_r(0)‖, how far reheating went, and the share of that displacement along v_b:
    cos_b(t) = (a(t) − a(0)) / moved(t) (its square is the fraction of ‖θ_r(t) − θ_r(0)‖² on v_b).
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.core import runio
from training.core.config import NOT_HASHED, Config
from training.core.errors import UserError
from training.core.runio import read_run_config
from training.core.tasks import validate
from training.geometry.trajectory import (CheckpointFiles, compute_gram, decomposition, gram_from_cache,
                                         held_out_backbone, pca, read_gram_cache, write_gram_cache)
from training.studies import common as studies

REHEAT_DIR = "reheat"

# Fields the reheating protocol sets itself (changed through the command's own flags, not --set).
PROTOCOL_FIELDS = ("lr", "steps", "warmup", "lambda_probe", "lambda_probe2", "lambda_step", "eval_every",
                   "ckpt_every", "ckpt_dense", "init_from", "init_optimizer", "out_dir", "keep_optimizer_states",
                   "optimizer_state_every",
                   "early_stop")

# The paper's numbers (seed 42 unless stated), for side-by-side tables; measured at the `paper` preset.
PAPER_TABLE11 = {  # arXiv 2602.23696 Table 11: from step 10,000 (p_ood 0.16), fresh AdamW, λ 4, 2000 steps
    "source": "arXiv 2602.23696 §6.2 Table 11 (seed 42)",
    "rows": [{"lr": 1e-3, "peak_p_ood": 0.705, "peak_step": 900, "first_step_at_threshold": 600, "final_p_ood": 0.221},
             {"lr": 6e-4, "peak_p_ood": 0.782, "peak_step": 1000, "first_step_at_threshold": 700, "final_p_ood": 0.279},
             {"lr": 3e-4, "peak_p_ood": 0.578, "peak_step": 1500, "first_step_at_threshold": None, "final_p_ood": 0.421}]}
PAPER_REENTRY = {  # mini_gpt README finding 5 "10K runs": re-entry gain G = peak − p0
    "source": "mini_gpt README finding 5 (from step 10,000)",
    "rows": [{"seed": 42, "lr": 6e-4, "p0": 0.077, "peak_p_ood": 0.782, "G": 0.705},
             {"seed": 42, "lr": 1e-3, "p0": 0.073, "peak_p_ood": 0.697, "G": 0.625},
             {"seed": 42, "lr": 3e-4, "p0": 0.072, "peak_p_ood": 0.578, "G": 0.506},
             {"seed": 271, "lr": 6e-4, "p0": 0.197, "peak_p_ood": 0.689, "G": 0.492},
             {"seed": 271, "lr": 1e-3, "p0": 0.197, "peak_p_ood": 0.421, "G": 0.224},
             {"seed": 271, "lr": 3e-4, "p0": 0.196, "peak_p_ood": 0.402, "G": 0.206}]}


# ---------------------------------------------------------------------------- planning
@dataclass
class ReheatSpec:
    """One planned reheating run."""
    name: str
    dir: Path
    cfg: Config
    from_step: int
    lr: float
    moments: bool


def parse_lrs(text: str) -> list[float]:
    try:
        lrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--lrs must be comma-separated numbers such as 1e-3,6e-4 (got '{text}')") from None
    if not lrs or any(not (math.isfinite(x) and x > 0) for x in lrs):
        raise UserError(f"--lrs must be positive learning rates (got '{text}')")
    return list(dict.fromkeys(lrs))


def moment_modes(text: str) -> list[bool]:
    """fresh -> [False], saved -> [True], both -> [False, True]."""
    modes = {"fresh": [False], "saved": [True], "both": [False, True]}
    if text not in modes:
        raise UserError(f"--moments must be fresh, saved or both (got '{text}')")
    return modes[text]


def start_checkpoint(run_dir: Path, steps: Sequence[int], from_step: int | None, status: dict) -> int:
    """The checkpoint step reheating starts from: ``from_step`` if it is a checkpoint, else the last one of a
    finished run (a run still training has no final checkpoint yet)."""
    if from_step is None:
        state = status.get("state", "missing")
        if state not in ("completed", "diverged"):
            raise UserError(f"{run_dir} is not finished (state {state} at step {status.get('step')}); finish it with "
                            f"python training/pilot.py --resume --out-dir {run_dir}, or choose a checkpoint with --from-step")
        from_step = steps[-1]
    if from_step not in steps:
        raise UserError(f"{run_dir} has no checkpoint at step {from_step} (checkpoints: {_step_list(steps)})")
    _, meta = runio.load_checkpoint(runio.checkpoint_path(run_dir, from_step))    # a clear error if corrupt
    if int(meta.get("step", from_step)) != from_step:
        raise UserError(f"checkpoint {runio.checkpoint_path(run_dir, from_step)} says it is of step {meta.get('step')}")
    return from_step


def _step_list(steps: Sequence[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 12 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def _name_suffix(overrides: dict) -> str:
    """What --set changed in the computation, for the run name (fields that do not, e.g. device, are left out)."""
    parts = []
    for k in sorted(overrides):
        if k in NOT_HASHED or k == "progress":
            continue
        v = overrides[k]
        parts.append(re.sub(r"[^A-Za-z0-9.+-]", "", f"{k}-{json.dumps(v) if isinstance(v, (list, tuple)) else v}"))
    return "".join("_" + p for p in parts)


def plan_reheats(run_dir: Path, orig: Config, from_step: int, lrs: Sequence[float], steps: int, warmup: int,
                 lam: float, eval_every: int, modes: Sequence[bool], overrides: dict | None = None) -> list[ReheatSpec]:
    """The reheating runs of (start checkpoint × moments mode × learning rate), not yet trained."""
    overrides = dict(overrides or {})
    studies.refuse_protocol_overrides(overrides, PROTOCOL_FIELDS, "reheating",
                                      {k: " (use --lrs/--steps/--warmup/--lam/--eval-every/--from-step/--moments)"
                                       for k in PROTOCOL_FIELDS})
    if steps < 1 or warmup < 0 or eval_every < 1 or not (math.isfinite(lam) and lam >= 0):
        raise UserError(f"need --steps >= 1, --warmup >= 0, --eval-every >= 1 and --lam >= 0 (got steps {steps}, "
                        f"warmup {warmup}, eval-every {eval_every}, lam {lam})")
    ckpt = runio.checkpoint_path(run_dir, from_step)
    # a run name says what differs from the default protocol, so that runs never collide
    d = studies.reheat_defaults(orig)
    protocol = "".join(f"_{tag}{value:g}" for tag, key, value in (("steps", "steps", steps), ("warmup", "warmup", warmup),
                                                                    ("lam", "lam", lam), ("every", "eval_every", eval_every))
                       if value != d[key])
    out = []
    for moments in modes:
        if moments:
            try:
                runio.find_optimizer_state(ckpt)
            except UserError as e:
                raise UserError(f"{e}; reheat with --moments fresh, or from the last checkpoint") from None
        for lr in lrs:
            cfg = studies.reheat_config(orig, ckpt, lr, steps, warmup, lam, eval_every, moments=moments)
            cfg = validate(cfg.replace(**overrides))
            name = studies.reheat_name(from_step, lr, moments) + protocol + _name_suffix(overrides)
            out.append(ReheatSpec(name, Path(run_dir) / REHEAT_DIR / name, cfg, from_step, lr, moments))
    return out


def _portable(cfg: Config) -> str:
    """Config hash with the start files reduced to their names: equal for the same reheat of a moved run."""
    return cfg.replace(init_from=Path(cfg.init_from).name if cfg.init_from else "",
                       init_optimizer=Path(cfg.init_optimizer).name if cfg.init_optimizer else "").hash()


def train_reheats(specs: Sequence[ReheatSpec], orig_dir: Path, jobs: int | None = None) -> None:
    """Train (or resume) the unfinished runs of ``specs`` with the original run's tokenizer and codewords:
    one after another (``jobs`` = 1) or side by side (:func:`training.studies.common.train_runs`, which also
    skips the finished ones). A finished run counts as this one when its config agrees up to where its start
    files lie (:func:`_portable`). A run that fails stops the command with one line naming it."""
    for spec in specs:
        share_tokenizer(orig_dir, spec.dir)
    studies.train_runs([studies.RunJob(s.name, s.cfg, s.dir, _portable) for s in specs], jobs,
                       log=lambda m: print(m, flush=True))


def share_tokenizer(orig_dir: Path, run_dir: Path) -> None:
    """Give ``run_dir`` the original run's tokenizer and codewords (a run trained there then tokenises and scores
    the probe exactly as the original did)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "codewords.json"):
        src, dst = Path(orig_dir) / name, Path(run_dir) / name
        if src.exists() and not dst.exists():
            runio.atomic_write(dst, lambda tmp, s=src: shutil.copyfile(s, tmp))


# ---------------------------------------------------------------------------- finding reheating runs
@dataclass
class ReheatRun:
    """A reheating run found under RUN/reheat/."""
    name: str
    dir: Path
    cfg: Config
    from_step: int
    state: str
    steps: list[int]        # checkpoint steps

    @property
    def lr(self) -> float:
        return self.cfg.lr

    @property
    def moments(self) -> bool:
        return bool(self.cfg.init_optimizer)


def _start_step(run_dir: Path, cfg: Config) -> int:
    prov = runio.read_json(run_dir / "config.json", "run config").get("provenance", {})
    if prov.get("init_step") is not None:
        return int(prov["init_step"])
    m = re.fullmatch(r"step_(\d+)\.safetensors", Path(cfg.init_from).name)
    if not m:
        raise UserError(f"{run_dir} does not say which checkpoint it started from (init_from {cfg.init_from!r})")
    return int(m.group(1))


def find_reheats(run_dir: Path, from_step: int | None = None) -> tuple[list[ReheatRun], list[dict]]:
    """(finished reheating runs of RUN, those skipped with the reason), ordered by start, moments, lr (high first)."""
    base = Path(run_dir) / REHEAT_DIR
    found, skipped = [], []
    for d in sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []:
        if not (d / "config.json").exists():
            skipped.append({"dir": str(d), "reason": "no config.json"})
            continue
        cfg = read_run_config(d)
        if not cfg.init_from:
            skipped.append({"dir": str(d), "reason": "not started from a checkpoint"})
            continue
        start = _start_step(d, cfg)
        if from_step is not None and start != from_step:
            continue
        state = studies.run_state(d)
        steps = runio.list_checkpoints(d)
        if state not in ("completed", "diverged"):
            skipped.append({"dir": str(d), "reason": f"state {state}; finish it with experiments/reheating/reheat.py"})
            continue
        if not steps or steps[0] != 0:
            skipped.append({"dir": str(d), "reason": "no step-0 checkpoint"})
            continue
        found.append(ReheatRun(d.name, d, cfg, start, state, steps))
    found.sort(key=lambda r: (r.from_step, r.moments, -r.lr, r.name))
    return found, skipped


# ---------------------------------------------------------------------------- the union Gram
def union_files(orig_dir: Path, orig_steps: Sequence[int], runs: Sequence[ReheatRun]):
    """The checkpoint files (original first, its step 0 at position 0) and each run's positions."""
    files = [(Path(orig_dir), s) for s in orig_steps]
    positions = []
    for r in runs:
        positions.append(list(range(len(files), len(files) + len(r.steps))))
        files.extend((r.dir, s) for s in r.steps)
    return files, positions


def union_gram(files, cfg: Config, cache: Path | None = None, progress: bool = False):
    """Gram of drifts from files[0] over all ``files`` (float64, one streaming pass), cached in ``cache``.

    The cache is keyed by every file's (path, mtime, size, content fingerprint) (:func:`read_gram_cache`): a
    Gram of a superset of the files is reused (its sub-matrix), anything else is recomputed and replaces it,
    so a stale value is never returned.
    """
    ck = CheckpointFiles(files, cfg)
    keys = [json.dumps(k) for k in ck.file_key()]
    hit = read_gram_cache(cache, keys) if cache is not None else None
    if hit is not None:
        return gram_from_cache(hit, list(range(len(keys))), None)
    g = compute_gram(ck, anchor=0, progress=progress)
    if cache is not None:
        write_gram_cache(cache, keys, g)
    return g


# ---------------------------------------------------------------------------- geometry
def backbone(gram, orig_positions: Sequence[int]):
    """v_b: raw PC1 of the original drifts from position 0, as span coefficients, and its explained fraction."""
    p = pca(gram, list(orig_positions), ref=0, rownorm=False, k=1)
    return p.coeffs[0], float(p.explained_variance_ratio[0])


def _ratio(x: float, y: float) -> float | None:
    return x / y if y != 0 else None


def run_geometry(gram, v: np.ndarray, positions: Sequence[int], start_position: int) -> dict:
    """a(t), ‖r(t)‖, moved(t) and their summaries for one reheating run (its checkpoints at ``positions``)."""
    positions = list(positions)
    dec = decomposition(gram, v, positions, ref=0)
    a, r = np.asarray(dec["a"]), np.asarray(dec["residual_norm"])
    moved = gram.norms(gram.drift_coeffs(positions, positions[0]))
    da, dr = a - a[0], r - r[0]
    cos_b = np.divide(da, moved, out=np.zeros_like(da), where=moved > 0)
    transverse = np.sqrt(np.maximum(moved ** 2 - da ** 2, 0.0))
    start_gap = float(gram.norms(gram.drift_coeffs([positions[0]], start_position))[0])
    return {
        "a": a.tolist(), "r_norm": r.tolist(), "drift_norm": dec["drift_norm"], "moved": moved.tolist(),
        "moved_along_backbone": da.tolist(), "moved_transverse": transverse.tolist(),
        "moved_cos_backbone": cos_b.tolist(),
        "a0": float(a[0]), "r0": float(r[0]),
        "delta_a": float(da[-1]), "delta_r": float(dr[-1]),
        "max_abs_delta_a": float(np.abs(da).max()), "max_abs_delta_r": float(np.abs(dr).max()),
        "rel_delta_a": _ratio(float(da[-1]), abs(float(a[0]))), "rel_delta_r": _ratio(float(dr[-1]), float(r[0])),
        "rel_max_delta_a": _ratio(float(np.abs(da).max()), abs(float(a[0]))),
        "rel_max_delta_r": _ratio(float(np.abs(dr).max()), float(r[0])),
        "moved_final": float(moved[-1]), "moved_max": float(moved.max()),
        "backbone_fraction_of_move": float(cos_b[-1] ** 2),
        "start_gap": start_gap,
    }


CLAIM20_LIMIT = 0.5       # claims.md: the reheating displacement's share along v_b at most half the run's own


def _share(G: np.ndarray, d: np.ndarray, c: np.ndarray) -> float:
    """cos²(X'd, X'c) from the Gram: the fraction of ‖Xᵀd‖² along the unit direction Xᵀc/‖Xᵀc‖."""
    dd, cc, dc = float(d @ G @ d), float(c @ G @ c), float(d @ G @ c)
    return dc * dc / (dd * cc) if dd > 0 and cc > 0 else 0.0


def same_length_shares(gram, orig_positions: Sequence[int], orig_steps: Sequence[int], length: int) -> dict:
    """The original run's own displacements θ_o(s') − θ_o(s) over about ``length`` steps (s' the checkpoint nearest
    s + length), each with its share along the backbone fitted without it (:func:`held_out_backbone`) and, for
    reference, along the full one (which contains the displacement itself). The null of claim 20: a reheating
    displacement that 'leaves a(t)' must have a much smaller share than the run's ordinary motion over as many
    steps."""
    og = gram.restrict(list(orig_positions))
    G = og.G
    T = len(orig_steps)
    full = pca(og, k=1).coeffs[0]
    rows = []
    for i, s in enumerate(orig_steps[:-1]):
        j = min(range(i + 1, T), key=lambda k: abs(orig_steps[k] - s - length))
        if not 0.5 * length <= orig_steps[j] - s <= 1.5 * length:      # too close to the end for this length
            continue
        d = np.zeros(T)
        d[j], d[i] = 1.0, -1.0
        held = held_out_backbone(og, og.steps[i], og.steps[j])
        rows.append({"start": s, "end": orig_steps[j], "held_out": _share(G, d, held), "full": _share(G, d, full),
                     "norm": math.sqrt(max(float(d @ G @ d), 0.0))})
    shares = [r["held_out"] for r in rows]
    return {"length_steps": length, "segments": rows,
            "median_held_out": float(np.median(shares)) if shares else None,
            "median_full": float(np.median([r["full"] for r in rows])) if rows else None}


def claim20(entries: Sequence[dict], gram, orig_positions: Sequence[int], orig_steps: Sequence[int]) -> dict:
    """Claim 20's reading: per reheating run, its displacement's share along v_b (``backbone_fraction_of_move``)
    over the median share of the original run's same-length displacements; ``largest_ratio`` over the runs is
    the ledger's statistic (every reheating run must leave a(t): ≤ CLAIM20_LIMIT)."""
    by_length = {}
    per_run = []
    for e in entries:
        L = int(e["n_steps"])
        if L not in by_length:
            by_length[L] = same_length_shares(gram, orig_positions, orig_steps, L)
        ref = by_length[L]["median_held_out"]
        per_run.append({"name": e["name"], "share": e["backbone_fraction_of_move"], "length_steps": L,
                        "null_median": ref, "ratio": e["backbone_fraction_of_move"] / ref if ref else None})
    ratios = [r["ratio"] for r in per_run if r["ratio"] is not None]
    return {"runs": per_run, "original": list(by_length.values()), "limit": CLAIM20_LIMIT,
            "largest_ratio": max(ratios) if ratios else None,
            "holds": None if not ratios else max(ratios) <= CLAIM20_LIMIT,
            "random_direction": 1.0 / gram.dim}


def metric_series(run_dir: Path) -> dict:
    rows = [m for m in runio.read_metrics(run_dir)
            if m.get("p_ood") is not None and math.isfinite(m["p_ood"])]
    return {"steps": [m["step"] for m in rows], "p_ood": [m["p_ood"] for m in rows],
            "val_loss": [m.get("val_loss") for m in rows], "rows": rows}


def start_consistency(orig_row: dict | None, reheat_row: dict | None, tol: float = 1e-4) -> dict:
    """The reheating run's step-0 evaluation against the original's at the start step: the same weights on the
    same evaluation sets must give the same numbers. A mismatch means the two were evaluated differently (e.g.
    the original was trained by an older version of the code whose tokenisation or evaluation sets differ),
    so the original's curve and the reheating curves are not on one scale."""
    keys = ("val_loss", "p_in", "p_ood")
    if orig_row is None or reheat_row is None or reheat_row.get("step") != 0:
        return {"consistent": None, "reason": "no evaluation of the original at the start step"}
    out = {f"original_{k}": orig_row.get(k) for k in keys} | {f"reheat_{k}": reheat_row.get(k) for k in keys}
    out["consistent"] = all(orig_row.get(k) is not None and reheat_row.get(k) is not None
                            and abs(orig_row[k] - reheat_row[k]) <= tol * max(1.0, abs(orig_row[k])) for k in keys)
    return out


def table_row(entry: dict) -> dict:
    re_ = entry["reentry"]
    return {"name": entry["name"], "lr": entry["lr"], "moments": entry["moments"], "from_step": entry["from_step"],
            "lam": entry["lam"], "state": entry["state"], "p0": re_["p0"], "peak_p_ood": re_["peak_p_ood"],
            "peak_step": re_["peak_step"], "first_step_at_threshold": re_["first_step_at_threshold"],
            "final_p_ood": re_["final_p_ood"], "final_val_loss": re_["final_val_loss"], "G": re_["G"]}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.2f}%"


def reading(runs: Sequence[dict], dim: int, c20: dict | None = None) -> str:
    """A plain statement of the numbers behind the claim 'reheating perturbs ‖r‖ but leaves a(t) largely
    unchanged': per run the changes of a and ‖r‖ (absolute, in parameter-norm units, and relative to their
    start values) and the share of the displacement along v_b; then how often each comparison goes which
    way. It reports, it does not decide."""
    if not runs:
        return "no reheating runs"
    parts = []
    for g in runs:
        parts.append(f"lr {g['lr']:g} ({'saved moments' if g['moments'] else 'fresh'}, from step {g['from_step']}): "
                     f"Δa = {g['delta_a']:+.4g} ({_pct(g['rel_delta_a'])} of a(0) = {g['a0']:.4g}; largest excursion "
                     f"{g['max_abs_delta_a']:.4g}), Δ‖r‖ = {g['delta_r']:+.4g} ({_pct(g['rel_delta_r'])} of ‖r(0)‖ = "
                     f"{g['r0']:.4g}; largest {g['max_abs_delta_r']:.4g}), displacement ‖θ(end) − θ(0)‖ = "
                     f"{g['moved_final']:.4g} of which {100 * g['backbone_fraction_of_move']:.2f}% of the square "
                     f"lies along v_b")
    n = len(runs)
    both = [e for e in runs if e["rel_delta_a"] is not None and e["rel_delta_r"] is not None]
    rel = sum(abs(e["rel_delta_a"]) < abs(e["rel_delta_r"]) for e in both)
    absolute = sum(abs(e["delta_a"]) < abs(e["delta_r"]) for e in runs)
    excursion = sum(e["max_abs_delta_a"] < e["max_abs_delta_r"] for e in runs)
    share = float(np.mean([e["backbone_fraction_of_move"] for e in runs]))
    summary = (f"|Δa| < |Δ‖r‖| in {absolute} of {n} runs (largest excursions: {excursion} of {n}); relative to their "
               f"start values, |Δa/a(0)| < |Δ‖r‖/‖r(0)‖| in {rel} of {len(both)}. On average {100 * share:.2f}% of "
               f"the squared reheating displacement lies along v_b, against 1/D = {1 / dim:.2g} for a random "
               f"direction (D = {dim})")
    if c20 is not None and c20["original"] and c20["original"][0]["median_held_out"] is not None:
        o = c20["original"][0]
        summary += (f" and a median {100 * o['median_held_out']:.1f}% for the original run's own displacements over "
                    f"{o['length_steps']} steps (backbone fitted without each; {100 * o['median_full']:.1f}% with it). "
                    f"Largest ratio of the two over the reheating runs: {c20['largest_ratio']:.3g} (claim 20 asks for "
                    f"≤ {c20['limit']:g}).")
    else:
        summary += "."
    return "; ".join(parts) + ". " + summary


def geometry(orig_dir: Path, orig_cfg: Config, runs: Sequence[ReheatRun], cache: Path | None = None,
             progress: bool = False) -> dict:
    """Everything of RUN/analysis/reheating.json except the run_dir; see the analysis script for the schema."""
    if not runs:
        raise UserError(f"no finished reheating runs under {Path(orig_dir) / REHEAT_DIR}; train them with "
                        f"python experiments/reheating/reheat.py --run-dir {orig_dir}")
    orig_steps = runio.list_checkpoints(orig_dir)
    if not orig_steps or orig_steps[0] != 0:
        raise UserError(f"{orig_dir} has no step-0 checkpoint (θ(0), the origin of the drifts)")
    if len(orig_steps) < 2:
        raise UserError(f"{orig_dir} has {len(orig_steps)} checkpoint(s); its backbone needs at least 2")
    for r in runs:
        if r.from_step not in orig_steps:
            raise UserError(f"{r.dir} started from step {r.from_step}, which is not a checkpoint of {orig_dir}")
    files, positions = union_files(orig_dir, orig_steps, runs)
    gram = union_gram(files, orig_cfg, cache, progress)
    orig_pos = list(range(len(orig_steps)))
    v, pc1 = backbone(gram, orig_pos)
    dec = decomposition(gram, v, orig_pos, ref=0)
    om = metric_series(orig_dir)
    by_step = dict(zip(om["steps"], om["p_ood"]))
    original = {"dir": str(orig_dir), "steps": orig_steps, "ckpt_steps": orig_steps,
                "p_ood": [by_step.get(s) for s in orig_steps], "a": dec["a"], "r_norm": dec["residual_norm"],
                "drift_norm": dec["drift_norm"], "last_step": orig_steps[-1],
                "eval_steps": om["steps"], "eval_p_ood": om["p_ood"],
                "best_p_ood": max(om["p_ood"]) if om["p_ood"] else None}
    orig_rows = {m["step"]: m for m in om["rows"]}
    entries = []
    for r, pos in zip(runs, positions):
        ms = metric_series(r.dir)
        start_check = start_consistency(orig_rows.get(r.from_step), ms["rows"][0] if ms["rows"] else None)
        start_position = orig_steps.index(r.from_step)
        geo = run_geometry(gram, v, pos, start_position)
        entries.append({"name": r.name, "dir": str(r.dir), "state": r.state, "from_step": r.from_step, "lr": r.lr,
                        "moments": r.moments, "lam": r.cfg.lambda_probe, "warmup": r.cfg.warmup,
                        "n_steps": r.cfg.steps, "beta2": r.cfg.beta2,
                        "steps": ms["steps"], "p_ood": ms["p_ood"], "val_loss": ms["val_loss"],
                        "reentry": studies.reentry(ms["rows"]), "start_check": start_check,
                        "ckpt_steps": r.steps, **geo})
    c20 = claim20(entries, gram, orig_pos, orig_steps)
    return {"original": original,
            "backbone": {"definition": "raw PC1 (uncentered, full spectrum) of the original run's drifts "
                                       "θ_o(t) − θ_o(0) over all its checkpoints, trunk, sign with a(t_last) > 0; "
                                       "a(t) = ⟨θ(t) − θ_o(0), v_b⟩, ‖r(t)‖ = ‖θ(t) − θ_o(0) − a(t) v_b‖",
                         "pc1": pc1, "n_checkpoints": len(orig_steps), "dim": gram.dim},
            "runs": entries, "table": [table_row(e) for e in entries],
            "claim20": c20, "reading": reading(entries, gram.dim, c20),
            "paper": {"table11": PAPER_TABLE11, "reentry": PAPER_REENTRY}}


# ---------------------------------------------------------------------------- controls (claim 19)
# The re-entry gain G = max p_ood − p0 of a reheating run is evidence that reheating re-enters a dormant probe
# basin only beside what it would be without that mechanism (docs/claims.md, claim 19): (i) the bias of a maximum
# over noisy evaluations, (ii) the same reheating with the probe weight unchanged instead of doubled, and (iii) the
# same reheating of a run trained with λ = 0 (no probe basin to return to). All at one learning rate, the paper's
# best reheating rate (6e-4, arXiv 2602.23696 Table 11) scaled to the preset.
CONTROLS_DIR = "reheat_controls"
CONTROL_PAPER_LR = 6e-4
CLAIM19_MARGIN_SIGMAS = 4.0


def lambda0_config(orig: Config) -> Config:
    """The original run's config with the probe weight 0 throughout: the same model, data (probe examples included,
    scored as ordinary tokens), schedule and seed, without the extra weight on the probe's answer."""
    return orig.replace(lambda_probe=0.0, lambda_probe2=None, lambda_step=0, out_dir="")


@dataclass
class ControlPlan:
    """The runs behind claim 19's verdict for one run and start checkpoint."""
    from_step: int
    lr: float
    lam_doubled: float          # the reheating protocol's λ: twice the run's initial probe weight
    lam_unchanged: float        # the run's initial probe weight
    doubled: ReheatSpec         # the paper's protocol at ``lr`` (the pipeline trains it already)
    unchanged: ReheatSpec
    lambda0_dir: Path           # RUN/reheat_controls/lambda0: the λ = 0-trained original
    lambda0_cfg: Config


def plan_controls(run_dir: Path, orig: Config, from_step: int, overrides: dict | None = None,
                  lr: float | None = None) -> ControlPlan:
    d = studies.reheat_defaults(orig)
    lr = studies.scale_lr(orig, CONTROL_PAPER_LR) if lr is None else lr
    lam_unchanged = orig.lambda_probe
    if not lam_unchanged > 0:
        raise UserError(f"{run_dir} was trained with λ = {lam_unchanged:g}: it is itself a λ = 0 run, so its reheating "
                        "has no probe-weight control")
    if abs(d["lam"] - lam_unchanged) <= 1e-12 * lam_unchanged:
        raise UserError(f"the reheating λ {d['lam']:g} equals the run's initial λ: the λ-unchanged control would be "
                        "the same run")
    args = (d["steps"], d["warmup"])
    doubled, = plan_reheats(run_dir, orig, from_step, [lr], *args, d["lam"], d["eval_every"], [False], overrides)
    unchanged, = plan_reheats(run_dir, orig, from_step, [lr], *args, lam_unchanged, d["eval_every"], [False], overrides)
    return ControlPlan(from_step, lr, d["lam"], lam_unchanged, doubled, unchanged,
                       Path(run_dir) / CONTROLS_DIR / "lambda0", validate(lambda0_config(orig)))


def plan_lambda0_reheat(plan: ControlPlan, overrides: dict | None = None) -> ReheatSpec:
    """The λ = 0-trained run's reheating with the protocol of ``plan.doubled`` (its λ included), from the same step."""
    cfg0 = read_run_config(plan.lambda0_dir)
    c = plan.doubled.cfg
    spec, = plan_reheats(plan.lambda0_dir, cfg0, plan.from_step, [plan.lr], c.steps, c.warmup, plan.lam_doubled,
                         c.eval_every, [False], overrides)
    return spec


def control_verdict_inputs(doubled: dict, unchanged: dict, lambda0: dict, sigma: float, n_evals: int) -> dict:
    """Claim 19's statistic from the three re-entry summaries (:func:`training.studies.common.reentry`): G of the
    doubled-λ reheating against the largest control (noise bias, λ unchanged, λ = 0 start), in units of σ_eval."""
    from training.geometry.nulls import reentry_noise_bias
    bias = reentry_noise_bias(sigma, n_evals)
    controls = {"noise_bias": bias, "lambda_unchanged": unchanged["G"], "lambda0_start": lambda0["G"]}
    null = max(controls.values())
    largest = max(controls, key=controls.get)
    return {"G": doubled["G"], "controls": controls, "null": null, "largest_control": largest,
            "effect": doubled["G"] - null, "sigma_eval": sigma, "n_evals": n_evals,
            "G_over_sigma": doubled["G"] / sigma, "null_over_sigma": null / sigma,
            "effect_over_sigma": (doubled["G"] - null) / sigma, "margin_sigmas": CLAIM19_MARGIN_SIGMAS}


def controls_reading(c: dict, lam_doubled: float, lam_unchanged: float) -> str:
    k = c["controls"]
    names = {"noise_bias": "the noise bias", "lambda_unchanged": "the λ-unchanged reheating",
             "lambda0_start": "the reheating of the λ = 0-trained run"}
    return (f"G = {c['G']:+.3f} with λ {lam_doubled:g} against controls: noise bias {k['noise_bias']:+.3f} "
            f"(σ_eval {c['sigma_eval']:.4f} over {c['n_evals']} evaluations), λ unchanged ({lam_unchanged:g}) "
            f"{k['lambda_unchanged']:+.3f}, λ = 0-trained start {k['lambda0_start']:+.3f}. The largest is "
            f"{names[c['largest_control']]}; G exceeds it by {c['effect']:+.3f} = {c['effect_over_sigma']:+.1f} σ_eval "
            f"(claim 19 asks for ≥ {c['margin_sigmas']:g} σ_eval in every seed).")


def train_controls(plan: ControlPlan, orig_dir: Path, jobs: int | None = None,
                   overrides: dict | None = None) -> ReheatSpec:
    """Train (or resume, or skip) the λ-doubled and λ-unchanged reheatings and the λ = 0 original side by side, then
    the λ = 0 original's reheating; returns the latter's spec. Of ``overrides`` only the settings that leave the
    computation alone (device, progress, ...) reach the λ = 0 original, which must mirror the original run."""
    overrides = dict(overrides or {})
    cfg0 = plan.lambda0_cfg.replace(**{k: v for k, v in overrides.items() if k in NOT_HASHED})
    for d in (plan.doubled.dir, plan.unchanged.dir, plan.lambda0_dir):
        share_tokenizer(orig_dir, d)
    studies.train_runs([studies.RunJob(s.name, s.cfg, s.dir, _portable) for s in (plan.doubled, plan.unchanged)]
                       + [studies.RunJob("lambda0", cfg0, plan.lambda0_dir)], jobs, log=lambda m: print(m, flush=True))
    spec0 = plan_lambda0_reheat(plan, overrides)
    train_reheats([spec0], plan.lambda0_dir, jobs)
    return spec0


def controls_result(orig_dir: Path, orig: Config, plan: ControlPlan, spec0: ReheatSpec) -> dict:
    """RUN/analysis/reheat_controls.json (see experiments/reheating/controls.py) from the trained control runs."""
    specs = {"lambda_doubled": plan.doubled, "lambda_unchanged": plan.unchanged, "lambda0_start": spec0}
    metrics = {k: runio.read_metrics(s.dir) for k, s in specs.items()}
    summaries = {k: studies.reentry(m) for k, m in metrics.items()}
    n_evals = sum(1 for m in metrics["lambda_doubled"] if m.get("p_ood") is not None and math.isfinite(m["p_ood"]))
    from training.core.regime import sigma_eval
    sigma = sigma_eval(orig)
    if sigma is None:
        raise UserError(f"{orig_dir} has no probe evaluation: there is no re-entry to control")
    c = control_verdict_inputs(summaries["lambda_doubled"], summaries["lambda_unchanged"], summaries["lambda0_start"],
                               sigma, n_evals)
    p0 = [m["p_ood"] for m in runio.read_metrics(plan.lambda0_dir) if m.get("p_ood") is not None]
    return {"run_dir": str(orig_dir), "from_step": plan.from_step, "lr": plan.lr,
            "lam_doubled": plan.lam_doubled, "lam_unchanged": plan.lam_unchanged,
            "runs": {k: {"dir": str(specs[k].dir), "lam": specs[k].cfg.lambda_probe, **summaries[k]} for k in specs},
            "lambda0_original": {"dir": str(plan.lambda0_dir), "best_p_ood": max(p0) if p0 else None,
                                 "final_p_ood": p0[-1] if p0 else None},
            "claim19": c, "reading": controls_reading(c, plan.lam_doubled, plan.lam_unchanged)}
