"""The subspace-suppression study: per seed, the preset's run with and without suppression (training/core/control.py),
nothing else changed, and what changes between them.

Arms (per seed, at the same config):

* ``baseline`` -- the preset's run;
* ``suppressed`` -- the same run with g ← g − λ_c·P_S g on the trunk gradient, S one of
  ``online`` (the top-k of recent g_probe − g_LM directions, refreshed every N steps; N = 200 paper steps scaled
  to the preset, the reference's cadence), ``backbone`` / ``switching`` (the top-k backbone directions / the
  switching directions of *that seed's* baseline run, exported by :mod:`training.geometry.directions` once it has
  finished) or a given basis file (the same for every seed). A baseline without switch pairs above the noise
  level has no switching direction: its suppressed arm is recorded as not applicable, with the reason, and not
  trained.

Measured per run (:func:`measure`), each beside its null:

* p_ood oscillation: the switch pairs of the checkpointed p_ood series at the calibrated threshold for the
  evaluation noise σ_eval (:func:`training.geometry.switching.detect_oscillations`), the number above the noise
  level beside the expected number of white-noise peaks at that threshold, the largest amplitude; and the mean
  |p_ood(t) − p_ood(t−1)| over evaluations after the λ switch beside what binomial evaluation noise alone gives,
  √2·√(2/π)·mean σ_t with σ_t = sqrt(p_t(1 − p_t)/n);
* the backbone: PC1 of the uncentred PCA of θ(t) − θ(0) beside the random-walk null's PC1 (same increment norms);
  per seed also |cos(v_b, v_b')| between the two arms' backbones beside the noise floor sqrt(2/(πD)) of two
  random unit vectors;
* final validation loss and p_ood, and (suppressed arm) the mean share of the gradient energy removed.

Across seeds: mean ± sd of each arm and of the paired difference suppressed − baseline.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from training.core import runio
from training.core.config import Config, parse_override
from training.core.errors import UserError
from training.core.model import trunk_size
from training.core.regime import sigma_eval
from training.core.tasks import validate
from training.geometry.directions import KINDS, directions, write_basis
from training.geometry.gradients import noise_floor
from training.geometry.nulls import null_of
from training.geometry.switching import detect_oscillations
from training.geometry.trajectory import CheckpointSet, cached_gram, pca
from training.studies import common as studies

STUDY = "suppression"
MODES = ("online",) + KINDS            # or a basis file
PAPER_EVERY = 200                      # the reference's refresh cadence (skydancerosel/mini_gpt training/control.py)
DEFAULT_K, DEFAULT_BUFFER, DEFAULT_STRENGTH = 3, 50, 1.0
PROTOCOL_FIELDS = ("suppress_strength", "suppress_basis", "suppress_k", "suppress_every", "suppress_buffer")
ARMS = ("baseline", "suppressed")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers (got '{text}')") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must list at least one seed, each once (got '{text}')")
    return seeds


def check_overrides(items: Sequence[str]) -> None:
    studies.refuse_protocol_overrides((parse_override(i)[0] for i in items), PROTOCOL_FIELDS, "suppression",
                                      {f: " (use the study's --basis, --k, --every, --strength)" for f in PROTOCOL_FIELDS})


def protocol(base: Config, mode: str, k: int, every: int | None, strength: float) -> dict:
    return {"preset": base.preset, "mode": mode, "k": k, "strength": strength, "buffer": DEFAULT_BUFFER,
            "every": every if every is not None else studies.scale_step(base, PAPER_EVERY), "steps": base.steps,
            "lambda_step": base.lambda_step}


def seed_dir(root: Path, seed: int) -> Path:
    return Path(root) / f"s{seed}"


def arm_config(base: Config, seed: int, arm: str, p: dict, basis: str = "") -> Config:
    cfg = base.replace(seed=seed)
    if arm == "suppressed":
        cfg = cfg.replace(suppress_strength=p["strength"], suppress_k=p["k"], suppress_every=p["every"],
                          suppress_buffer=max(DEFAULT_BUFFER, p["k"]), suppress_basis=basis)
    return validate(cfg)


def basis_for(root: Path, seed: int, mode: str, k: int, progress: bool = False) -> tuple[str, str | None]:
    """(basis file, None) for the suppressed arm of ``seed``, or ("", reason) when it is not applicable. ``online``
    needs none; a file is used as given; backbone / switching are exported from the seed's finished baseline."""
    if mode == "online":
        return "", None
    if mode not in KINDS:
        return str(Path(mode).resolve()), None
    base_dir = seed_dir(root, seed) / "baseline"
    out = seed_dir(root, seed) / f"{mode}_basis.safetensors"
    if out.exists():
        return str(out.resolve()), None
    try:
        rows, info = directions(base_dir, mode, k if mode == "backbone" else None, progress)
    except UserError as e:
        return "", str(e)
    write_basis(out, rows, info, base_dir)
    return str(out.resolve()), None


def record_path(root: Path) -> Path:
    return Path(root) / "study.json"


def write_record(root: Path, p: dict, seeds: Sequence[int], runs: dict) -> None:
    runio.atomic_write_json(record_path(root), {"study": STUDY, "protocol": p, "seeds": list(seeds), "runs": runs})


def train(base: Config, root: Path, seeds: Sequence[int], p: dict, jobs=None, log=print) -> dict:
    """Train (or resume, or skip) every arm of every seed; returns label -> {state, run_dir, reason}."""
    root = Path(root)
    mode = p["mode"]
    if mode not in MODES:
        basis_file = Path(mode)
        if not basis_file.is_file():
            raise UserError(f"--basis {mode}: no such file (give online, backbone, switching or a basis file)")
        from training.core.control import read_basis_file
        read_basis_file(basis_file, trunk_size(base))          # wrong shape or empty: one line, before training
    runs: dict[str, dict] = {}
    first = [studies.RunJob(f"s{s} baseline", arm_config(base, s, "baseline", p), seed_dir(root, s) / "baseline")
             for s in seeds]
    if mode == "online" or mode not in KINDS:
        basis = basis_for(root, seeds[0], mode, p["k"])[0]
        first += [studies.RunJob(f"s{s} suppressed", arm_config(base, s, "suppressed", p, basis),
                                 seed_dir(root, s) / "suppressed") for s in seeds]
    write_record(root, p, seeds, {j.label: {"run_dir": str(j.dir)} for j in first})
    out = studies.train_runs(first, jobs, log)
    second = []
    if mode in KINDS:          # the basis comes from each seed's finished baseline
        for s in seeds:
            label = f"s{s} suppressed"
            if out.get(f"s{s} baseline", {}).get("state") != "completed":
                runs[label] = {"state": "not applicable", "reason": "its baseline did not complete"}
                continue
            basis, reason = basis_for(root, s, mode, p["k"])
            if reason:
                runs[label] = {"state": "not applicable", "reason": reason}
                log(f"{label}: not applicable ({reason})")
                continue
            second.append(studies.RunJob(label, arm_config(base, s, "suppressed", p, basis),
                                         seed_dir(root, s) / "suppressed"))
        if second:
            out.update(studies.train_runs(second, jobs, log))
    for j in first + second:
        runs[j.label] = {"state": out.get(j.label, {}).get("state"), "run_dir": str(j.dir), "reason": None}
    write_record(root, p, seeds, runs)
    return runs


# ---------------------------------------------------------------------------- measurements
def oscillation(cfg: Config, records: list[dict], steps: Sequence[int]) -> dict:
    series = {int(r["step"]): float(r["p_ood"]) for r in records if r.get("p_ood") is not None}
    xs = [s for s in sorted(series) if s in set(steps)]
    sigma = sigma_eval(cfg)
    out = dict.fromkeys(("n_pairs", "n_pairs_above_noise", "expected_false_peaks", "max_amplitude", "prominence",
                         "mean_abs_change_after_switch", "null_mean_abs_change_after_switch"))
    out["reason"] = None
    if len(xs) < 3 or sigma is None:
        out["reason"] = "fewer than 3 checkpointed p_ood evaluations" if sigma is not None else "the run has no probe"
        return out
    osc = detect_oscillations(xs, [series[s] for s in xs], noise_std=sigma)
    amps = [q.amplitude for q in osc.pairs]
    out.update(n_pairs=len(osc.pairs), n_pairs_above_noise=osc.n_pairs_above_noise,
               expected_false_peaks=osc.threshold.expected_false_peaks, prominence=osc.prominence,
               max_amplitude=max(amps) if amps else 0.0)
    after = [s for s in sorted(series) if s >= cfg.lambda_step]
    if len(after) >= 2:
        p = np.array([series[s] for s in after])
        n = cfg.n_probe_eval
        out["mean_abs_change_after_switch"] = float(np.mean(np.abs(np.diff(p))))
        sig = np.sqrt(np.clip(p * (1 - p), 0, None) / n)
        # the difference of two independent binomial readings: sd √(σ_a² + σ_b²), mean |·| = that × √(2/π)
        out["null_mean_abs_change_after_switch"] = float(np.mean(np.sqrt(sig[1:] ** 2 + sig[:-1] ** 2))
                                                         * math.sqrt(2 / math.pi))
    return out


def measure(run_dir: Path) -> tuple[dict, np.ndarray | None]:
    """The study's numbers of one finished run, and its unit backbone vector (None when it has none)."""
    run_dir = Path(run_dir)
    cfg = runio.read_run_config(run_dir)
    records = runio.read_metrics(run_dir)
    last = next((r for r in reversed(records) if r.get("val_loss") is not None), {})
    out = {"run_dir": str(run_dir), "state": studies.run_state(run_dir), "final_step": last.get("step"),
           "final_val_loss": last.get("val_loss"), "final_p_ood": last.get("p_ood"),
           "removed_share": None, "pc1": None, "null_pc1": None, "pc1_minus_null": None, "backbone_reason": None}
    removed = [r["suppress_removed"] for r in records if r.get("suppress_removed") is not None]
    if removed:
        out["removed_share"] = float(np.mean(removed))
    v = None
    try:
        ck = CheckpointSet(run_dir)
        gram = cached_gram(ck)
        traj, null = pca(gram, k=1), pca(null_of(gram), k=1)
        out.update(pc1=float(traj.explained_variance_ratio[0]), null_pc1=float(null.explained_variance_ratio[0]))
        out["pc1_minus_null"] = out["pc1"] - out["null_pc1"]
        v = ck.materialise(gram, traj.coeffs[0])
        v = v / np.linalg.norm(v)
        steps = ck.steps
    except UserError as e:
        out["backbone_reason"] = str(e)
        steps = runio.list_checkpoints(run_dir)
    out["oscillation"] = oscillation(cfg, records, steps)
    return out, v


SUMMARY_KEYS = (("final_val_loss", "final val loss"), ("final_p_ood", "final p_ood"), ("pc1", "PC1"),
                ("null_pc1", "PC1 null"), ("pc1_minus_null", "PC1 − null"),
                ("oscillation.n_pairs_above_noise", "pairs above noise"),
                ("oscillation.expected_false_peaks", "noise peaks expected"),
                ("oscillation.max_amplitude", "max amplitude"),
                ("oscillation.mean_abs_change_after_switch", "mean abs Δp_ood after the λ switch"),
                ("oscillation.null_mean_abs_change_after_switch", "its noise null"),
                ("removed_share", "share of ‖g‖² removed"))


def _get(row: dict, key: str):
    for part in key.split("."):
        row = (row or {}).get(part)
    return row


def mean_sd(values) -> dict:
    xs = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return {"mean": float(np.mean(xs)) if xs else None, "sd": float(np.std(xs, ddof=1)) if len(xs) > 1 else None,
            "n": len(xs)}


def summarise(root: Path, seeds: Sequence[int], record: dict) -> dict:
    """Per seed and arm the measurements; across seeds mean ± sd per arm and of the paired differences."""
    per_seed = []
    for s in seeds:
        row = {"seed": s}
        vecs = {}
        for arm in ARMS:
            d = seed_dir(root, s) / arm
            info = (record.get("runs") or {}).get(f"s{s} {arm}", {})
            if info.get("state") == "not applicable":
                row[arm] = {"state": "not applicable", "reason": info.get("reason")}
                continue
            if studies.run_state(d) not in ("completed", "diverged"):
                row[arm] = {"state": studies.run_state(d), "reason": "not trained yet (run the study's train command)"}
                continue
            row[arm], vecs[arm] = measure(d)
        if vecs.get("baseline") is not None and vecs.get("suppressed") is not None:
            row["backbone_abs_cos"] = float(abs(vecs["baseline"] @ vecs["suppressed"]))
            row["backbone_cos_noise_floor"] = noise_floor(len(vecs["baseline"]))
        per_seed.append(row)
    agg = {}
    for key, _ in SUMMARY_KEYS + (("backbone_abs_cos", ""),):
        if key == "backbone_abs_cos":
            agg[key] = mean_sd(r.get(key) for r in per_seed)
            continue
        a = {arm: mean_sd(_get(r.get(arm), key) for r in per_seed) for arm in ARMS}
        diffs = [(_get(r.get("suppressed"), key), _get(r.get("baseline"), key)) for r in per_seed]
        a["difference"] = mean_sd(x - y for x, y in diffs if x is not None and y is not None)
        agg[key] = a
    return {"study": STUDY, "study_dir": str(root), "protocol": record.get("protocol"), "seeds": list(seeds),
            "per_seed": per_seed, "across_seeds": agg,
            "nulls": {"pc1": "random-walk null: the run's own checkpoint increment norms in independent directions",
                      "n_pairs_above_noise": "expected_false_peaks: white-noise peaks per series at the threshold",
                      "mean_abs_change_after_switch": "binomial evaluation noise alone, sqrt(2/pi)·sqrt(σ_a²+σ_b²)",
                      "backbone_abs_cos": "sqrt(2/(πD)), two random unit vectors"}}


def _fmt(ms: dict, spec: str = ".3f") -> str:
    if ms["mean"] is None:
        return "—"
    return f"{ms['mean']:{spec}}" + (f" ± {ms['sd']:{spec}}" if ms["sd"] is not None else "") + f" (n={ms['n']})"


def markdown(summary: dict) -> str:
    p = summary["protocol"] or {}
    lines = [f"# Subspace suppression ({p.get('preset')} preset, seeds {', '.join(map(str, summary['seeds']))})", "",
             f"S: {p.get('mode')}, k = {p.get('k')}, λ_c = {p.get('strength')}"
             + (f", refreshed every {p.get('every')} steps" if p.get("mode") == "online" else "")
             + "; mean ± sd across seeds; difference = suppressed − baseline, paired by seed.", "",
             studies.markdown_table(("quantity", "baseline", "suppressed", "difference"),
                                    [[label, *(_fmt(summary["across_seeds"][key][a]) for a in ARMS + ("difference",))]
                                     for key, label in SUMMARY_KEYS])]
    cos = summary["across_seeds"]["backbone_abs_cos"]
    floors = [r.get("backbone_cos_noise_floor") for r in summary["per_seed"] if r.get("backbone_cos_noise_floor")]
    lines += [f"|cos(v_b baseline, v_b suppressed)|: {_fmt(cos)}"
              + (f" (noise floor {floors[0]:.2g})" if floors else ""), ""]
    notes = [f"- seed {r['seed']}, {arm}: {r[arm]['state']} ({r[arm].get('reason')})"
             for r in summary["per_seed"] for arm in ARMS
             if isinstance(r.get(arm), dict) and r[arm].get("state") not in ("completed", "diverged")]
    if notes:
        lines += ["Not measured:", *notes, ""]
    return "\n".join(lines)
