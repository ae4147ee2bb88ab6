"""The modular-addition study (the skydancerosel/bubble-modadd README; arXiv 2602.10496): runs, analyses,
headline numbers, verdicts.

Runs (ordinary run directories under the study directory, trained side by side on a CPU by
studies.train_runs, resumed where they stopped, skipped when finished):

* ``attn_ref_s<seed>``, ``attn_ref_s<seed+1>`` -- attention-only, reference-mode data, mixed m (two seeds);
* ``mlp_ref_s<seed>``   -- the same with standard blocks (attention + MLP);
* ``attn_strict_s<seed>`` -- attention-only on strict-mode data (the leak removed);
* ``attn_curr_s<seed>``  -- attention-only, curriculum m = 1, 2, 3, 4 with an optimizer restart per stage;
* ``mlp_ref_s<seed+1>``, ``attn_curr_s<seed+1>`` -- second seeds of the standard-block and curriculum arms, so
  that their verdicts are not single-seed;
* ``attn_mul_s<seed>``, ``attn_mul_s<seed+1>`` -- attention-only, reference-mode data, modular *multiplication*
  (``modadd_op = mul``) with C = MUL_CLASSES = 7 (a prime; values 1..6, chance 1/6), for the reference's
  claim that multiplication's execution manifold is 4–6-dimensional, i.e. higher than addition's.

Sizes (``--preset``): ``quick`` (a 2-core CPU; the whole study and its report in minutes), ``reference``
(the reference code's sizes: d 128, 5 layers, 4 heads, batch 128, AdamW 3e-4, 20,000 steps, snapshots
every 500 -- for a GPU), ``test`` (seconds; for the test suite). Every run uses AdamW (β2 0.999, weight
decay 0.01 on all but LayerNorm) at a constant learning rate without clipping, as the reference.

The analyses of :mod:`training.studies.modadd_analysis` write ``RUN/analysis/modadd_<name>.json``; the study adds
``STUDY/analysis/modadd_study.json`` (headline numbers and verdicts) and the report
(:mod:`figures.modadd_report`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from training.core import runio
from training.core.config import Config, preset
from training.core.errors import UserError
from training.core.modadd import ModAddSpec, modadd_config
from training.core.tasks import validate
from training.studies import modadd_analysis as ma
from training.studies.common import RunJob, run_state, train_runs

STUDY = "modadd"
R90_LOW = 3.5              # the README's "≈ 2–3-dimensional": a median r90 at most this counts as low
LEARNED_MARGIN = 0.2       # a run "learned the task" when its final accuracy is at least chance + this
MUL_CLASSES = 7            # C of the multiplication arm: prime, the closest to the addition arms' C = 8
MUL_BAND = (4, 6)          # the reference's claimed execution dimension of modular multiplication
RESULT = "modadd_study"

# The setting of skydancerosel/bubble-modadd's train.py: used at --preset reference.
REFERENCE = dict(n_layer=5, d_model=128, n_head=4, d_ff=512, batch_size=128, lr=3e-4, steps=20_000,
                 ckpt_every=500, eval_every=500, eval_batch_size=512, modadd_n_eval=512)
SIZES = {
    "test": dict(n_layer=1, d_model=16, n_head=2, d_ff=32, batch_size=16, lr=3e-3, steps=24, ckpt_every=4,
                 eval_every=8, eval_batch_size=64, modadd_n_eval=32),
    "quick": dict(n_layer=3, d_model=64, n_head=4, d_ff=256, batch_size=32, lr=1e-3, steps=1600, ckpt_every=40,
                  eval_every=80, eval_batch_size=512, modadd_n_eval=256),
    "reference": REFERENCE,
}
# analysis sizes per preset
ANALYSIS = {
    "test": dict(null_samples=3, comm_checkpoints=2, comm_samples=2, n_mc=2, sae_steps=40, sae_batches=2, probe_n=16,
                 lp_train=128, lp_test=64),
    "quick": dict(null_samples=20, comm_checkpoints=4, comm_samples=3, n_mc=3, sae_steps=500, sae_batches=12,
                  probe_n=128, lp_train=2048, lp_test=1024),
    "reference": dict(null_samples=20, comm_checkpoints=10, comm_samples=9, n_mc=10, sae_steps=2500, sae_batches=40,
                      probe_n=128, lp_train=4096, lp_test=2048),
}
# the commutator series (spikes vs loss fluctuations, (m_A, m_B) cells) and the SAE-latent correlation with m;
# both on the two attention-only seeds
ANALYSIS["test"].update(series_checkpoints=6, series_samples=2, series_surrogates=199, series_perm=199,
                        sae_m_sequences=64, sae_m_perm=199, sae_m_fractions=(0.9,))
ANALYSIS["quick"].update(series_checkpoints=20, series_samples=4, series_surrogates=1000, series_perm=2000,
                         sae_m_sequences=1024, sae_m_perm=1000, sae_m_fractions=(0.9,))
ANALYSIS["reference"].update(series_checkpoints=40, series_samples=8, series_surrogates=1000, series_perm=2000,
                             sae_m_sequences=4096, sae_m_perm=1000, sae_m_fractions=(0.1, 0.4, 0.9))
SERIES_ROLES = ("attn", "attn_seed2")
# Fields the study's protocol sets itself (a --set of them would silently change the design).
PROTOCOL_FIELDS = ("task", "attn_only", "modadd_mode", "modadd_schedule", "modadd_reset_optimizer", "seed", "steps",
                   "seq_len", "modadd_op")


@dataclass(frozen=True)
class RunSpec:
    name: str
    role: str          # attn | attn_seed2 | mlp | mlp_seed2 | strict | curriculum | curriculum_seed2 | mul | mul_seed2
    changes: tuple


def run_specs(seed: int) -> list[RunSpec]:
    """The study's runs. The multiplication arm sets C = MUL_CLASSES unless --set modadd_classes gives every run
    its C (which must then be prime, see validate_modadd)."""
    return _addition_specs(seed) + [
        RunSpec(f"mlp_ref_s{seed + 1}", "mlp_seed2", (("attn_only", False), ("seed", seed + 1))),
        RunSpec(f"attn_curr_s{seed + 1}", "curriculum_seed2", (("attn_only", True), ("seed", seed + 1),
                                                                ("modadd_schedule", "curriculum"))),
    ] + [RunSpec(f"attn_mul_s{s}", role, (("attn_only", True), ("seed", s), ("modadd_op", "mul"),
                                           ("modadd_classes", MUL_CLASSES)))
         for s, role in ((seed, "mul"), (seed + 1, "mul_seed2"))]


def _addition_specs(seed: int) -> list[RunSpec]:
    return [
        RunSpec(f"attn_ref_s{seed}", "attn", (("attn_only", True), ("seed", seed))),
        RunSpec(f"attn_ref_s{seed + 1}", "attn_seed2", (("attn_only", True), ("seed", seed + 1))),
        RunSpec(f"mlp_ref_s{seed}", "mlp", (("attn_only", False), ("seed", seed))),
        RunSpec(f"attn_strict_s{seed}", "strict", (("attn_only", True), ("seed", seed), ("modadd_mode", "strict"))),
        RunSpec(f"attn_curr_s{seed}", "curriculum", (("attn_only", True), ("seed", seed),
                                                     ("modadd_schedule", "curriculum"))),
    ]


def base_config(size: str, overrides: dict | None = None) -> Config:
    if size not in SIZES:
        raise UserError(f"unknown preset '{size}' (choose from {', '.join(SIZES)})")
    cfg = modadd_config(preset("test"), optimizer="adamw", beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01,
                        **SIZES[size], preset=f"modadd_{size}")
    return apply_overrides(cfg, overrides, PROTOCOL_FIELDS, "the modadd study",
                           "use --seed for the seed, --preset for the size")


def apply_overrides(cfg: Config, overrides: dict | None, protocol: Sequence[str], who: str, hint: str) -> Config:
    """``--set`` changes on a modadd study's base config: one error line for a field the study sets itself
    (``protocol``), and the sequence length kept at T + 1 when modadd_T changes."""
    if not overrides:
        return cfg
    bad = sorted(set(overrides) & set(protocol))
    if bad:
        raise UserError(f"--set {', '.join(bad)}=...: {who} sets {'these' if len(bad) > 1 else 'this'} itself ({hint})")
    cfg = cfg.replace(**overrides)
    return cfg.replace(seq_len=cfg.modadd_T + 1) if "modadd_T" in overrides else cfg


def run_configs(size: str, seed: int, overrides: dict | None = None) -> dict[str, tuple[RunSpec, Config]]:
    base = base_config(size, overrides)
    user_c = (overrides or {}).get("modadd_classes")
    out = {}
    for s in run_specs(seed):
        changes = dict(s.changes)
        if user_c is not None and "modadd_classes" in changes:
            changes["modadd_classes"] = user_c
        out[s.name] = (s, validate(base.replace(**changes)))
    return out


# ---------------------------------------------------------------------------- running
def train_all(root: Path, size: str, seed: int, overrides: dict | None = None, progress: bool = False,
              only: list[str] | None = None, log=print, jobs: int | None = None) -> dict:
    """Train (or resume, or skip) the study's runs; side by side on a CPU (studies.train_runs, ``jobs``)."""
    todo = [RunJob(name, cfg.replace(progress=progress), root / name)
            for name, (spec, cfg) in run_configs(size, seed, overrides).items() if not only or spec.role in only]
    done = train_runs(todo, jobs, log=log)        # a failed run: one line each, then a UserError
    return {name: r["seconds"] for name, r in done.items()}


def _analysis_path(run_dir: Path, name: str) -> Path:
    return runio.analysis_dir(run_dir) / f"modadd_{name}.json"


def cached(run_dir: Path, name: str, fn, redo: bool = False):
    """The analysis JSON of a run, computed (and written atomically) when missing or older than the run."""
    path = _analysis_path(run_dir, name)
    if not redo and runio.analysis_is_current(run_dir, path.stem):
        return runio.read_json(path, "analysis result")
    result = fn()
    runio.atomic_write_json(path, result)
    return runio.read_json(path, "analysis result")


def analyse_all(root: Path, size: str, seed: int, redo: bool = False, progress: bool = False, log=print) -> dict:
    """Every analysis of every finished run, then the study's headline numbers and verdicts."""
    a = ANALYSIS[size]
    specs = {s.role: s for s in run_specs(seed)}
    runs = {role: root / s.name for role, s in specs.items()}
    done = {role: d for role, d in runs.items() if run_state(d) == "completed"}
    missing = sorted(set(runs) - set(done))
    if missing:
        log(f"not analysed (not completed): {', '.join(specs[r].name for r in missing)}")
    res: dict = {"runs": {}, "study_dir": str(root), "preset": size, "seed": seed}
    for role, d in done.items():
        t0 = time.monotonic()
        r = {"metrics_final": runio.read_metrics(d)[-1], "config": runio.read_json(d / "config.json")["config"]}
        r["spectra"] = cached(d, "spectra", lambda: ma.spectra(d, null_samples=a["null_samples"], seed=seed), redo)
        r["attention"] = cached(d, "attention", lambda: ma.attention(d, probe_n=a["probe_n"], progress=progress), redo)
        r["linear_probes"] = cached(d, "linear_probes", lambda: ma.linear_probes(
            d, n_train=a["lp_train"], n_test=a["lp_test"], seed=seed), redo)
        r["subspace_distance"] = cached(d, "subspace_distance", lambda: ma.subspace_distance(d), redo)
        if role in ("attn", "mlp"):
            r["commutators"] = cached(d, "commutators", lambda: ma.commutators(
                d, n_checkpoints=a["comm_checkpoints"], samples=a["comm_samples"], n_mc=a["n_mc"], seed=seed,
                progress=progress), redo)
        if role in SERIES_ROLES:
            r["commutator_series"] = cached(d, "commutator_series", lambda: ma.commutator_series(
                d, n_checkpoints=a["series_checkpoints"], samples=a["series_samples"],
                n_surrogates=a["series_surrogates"], n_perm=a["series_perm"], seed=seed, progress=progress), redo)
            r["sae_m"] = cached(d, "sae_m", lambda: ma.sae_latents_m(
                d, fractions=a["sae_m_fractions"], n_sequences=a["sae_m_sequences"],
                sae_steps=a["sae_steps"], n_perm=a["sae_m_perm"], seed=seed, progress=progress), redo)
        if role == "attn":
            r["sae"] = cached(d, "sae", lambda: ma.sae_ablation(d, sae_steps=a["sae_steps"], n_batches=a["sae_batches"],
                                                                 seed=seed, progress=progress), redo)
            if "attn_seed2" in done:
                r["cross"] = cached(d, "cross_subspaces", lambda: ma.cross_subspaces(d, done["attn_seed2"]), redo)
        if role.startswith("curriculum"):
            r["curriculum"] = cached(d, "curriculum", lambda: ma.curriculum(d), redo)
        log(f"analysed {specs[role].name} ({time.monotonic() - t0:.1f} s)")
        res["runs"][role] = r
    res["headline"] = headline(res)
    return res


# ---------------------------------------------------------------------------- headline numbers and verdicts
SEED_CLAIMS = {
    "collapse": "attention weights (W_Q, W_K, W_V, W_O) collapse onto a ≈2–3-dimensional subspace, consistently "
                "across layers and seeds",
    "commutator": "SGD commutators are large in the full space but negligible when projected on the execution "
                  "subspace; nearly all non-commutativity lives outside it",
    "bubbling": "attention 'bubbling': readout attention entropy collapses early in training",
    "mlp": "adding MLPs disrupts the collapse (higher-dimensional dynamics, worse generalisation at equal budget)",
    "curriculum": "under a strict curriculum, accuracy on smaller m degrades as training moves to larger m",
    "mul": "modular multiplication gives a 4–6-dimensional execution manifold, higher than addition's",
    "sae": "SAE latents give small, stage-dependent accuracy drops (largest mid-training) and do not isolate execution",
    "commutator_spikes": "raw commutator norms stay large and frequently spike, even late in training; these spikes "
                         "correlate only weakly with loss fluctuations",
    "sae_m": "a small number of SAE latents correlate with task structure (e.g. marker count m)",
    "commutator_cells": "(the reference's logged heatmaps) the defect D and cos(g_A, g_B) by (m_A, m_B): same-m "
                        "against cross-m pairs",
    "settling": "(the README's commented-out 'distance to the final low-dimensional subspace' tool) the trajectory "
                "enters its final low-dimensional subspace early in training",
}
SETTLE_AT = "0.2"          # the early window: the checkpoint nearest 20 % of training
SETTLE_MARGIN = 0.1        # overlap above the random walk's needed per seed


def _get(d, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


@dataclass
class _Claims:
    """What every claim's verdict reads: the runs' results, their accuracies and the chance level."""
    runs: dict
    acc: dict
    chance: float

    def learned(self, role: str) -> bool:
        """A verdict about how a task is learned needs a model that learned it (against the run's own chance)."""
        a = _get(self.acc, role, "acc")
        return a is not None and a >= self.chance_of(role) + LEARNED_MARGIN

    def chance_of(self, role: str) -> float:
        """Chance accuracy of the run's task: 1/C for addition, 1/(C-1) for multiplication (ModAddSpec.chance)."""
        cfg = _get(self.runs, role, "config") or {}
        return ModAddSpec(C=cfg.get("modadd_classes", 8), op=cfg.get("modadd_op", "add")).chance

    inconclusive = f"inconclusive: the model did not learn the task (accuracy < chance + {LEARNED_MARGIN})"


def _accuracy(runs: dict) -> dict:
    acc = {}
    for role, r in runs.items():
        m = r["metrics_final"]
        other = "strict" if r["config"]["modadd_mode"] == "reference" else "reference"
        acc[role] = {"acc": m.get("acc"), "acc_other_mode": m.get(f"{other}_acc"), "other_mode": other,
                     "per_m": {k: v for k, v in m.items() if k.startswith("acc_m")}}
    return acc


def _leak(c: _Claims) -> dict | None:
    """Whether the reference-trained model leans on the reference generator's label leak."""
    a, chance = c.acc.get("attn"), c.chance
    if not a:
        return None
    uses_leak = a["acc_other_mode"] is not None and a["acc_other_mode"] < chance + 0.1 and (a["acc"] or 0) > chance + 0.2
    return {"chance": chance, "reference_model_on_strict": a["acc_other_mode"], "reference_model_acc": a["acc"],
            "strict_model_acc": _get(c.acc, "strict", "acc"),
            "verdict": ("the reference-trained model relies on the leak: it is at chance on strict data"
                        if uses_leak else "the reference-trained model does not look leak-bound on strict data")}


def _collapse(c: _Claims) -> dict | None:
    """The collapse claim: its numbers and verdict, or None when the study has no result for it."""
    runs, learned, inconclusive = c.runs, c.learned, c.inconclusive
    att = _get(runs, "attn", "spectra", "summary", "attention")
    att2 = _get(runs, "attn_seed2", "spectra", "summary", "attention")
    if att:
        r90s = [att["r90_median"]] + ([att2["r90_median"]] if att2 else [])
        null = att["null_r90_median"]
        low = max(r90s) <= R90_LOW
        below_null = null is not None and max(r90s) < null - 1
        cross = _get(runs, "attn", "cross", "across_runs") or {}
        overlaps = [v["overlap"] for v in cross.values() if v.get("overlap") is not None]
        rand = [v["random_overlap"] for v in cross.values()]
        return {"claim": SEED_CLAIMS["collapse"], "seed_value": "r90 ≈ 2–3 (README); reference fig.1 r90 2.5–6",
                "r90_median_per_seed": r90s, "r90_range": [att["r90_min"], att["r90_max"]],
                "null_r90_median": null, "uncentered_r90_median": att["uncentered_r90_median"],
                "pr_median": att["pr_median"], "erank_median": att["erank_median"],
                "cross_seed_overlap_median": float(np.median(overlaps)) if overlaps else None,
                "cross_seed_random_overlap": float(np.median(rand)) if rand else None,
                "verdict": (inconclusive if not learned("attn") else
                            "confirmed" if low and below_null else
                            "not confirmed" if not low else
                            "not distinguishable from a random walk")
                + (("; the dimension is stable across seeds, the orientation is not (cross-seed overlap at "
                    "the random level)") if overlaps and np.median(overlaps) < 2 * np.median(rand) else "")}
    return None


def _commutator(c: _Claims) -> dict | None:
    """The commutator claim: its numbers and verdict, or None when the study has no result for it."""
    runs, learned, inconclusive = c.runs, c.learned, c.inconclusive
    cs = _get(runs, "attn", "commutators", "summary")
    if cs:
        ratio = [cs["ratio_exec_early"], cs["ratio_exec_late"]]
        enriched = min(ratio) > 1.5
        return {"claim": SEED_CLAIMS["commutator"],
                "seed_value": "ρ_exec 0.012–0.128 vs ρ_rand ≈ 0.0075 (ratio 9.7× early, 2.1× late); '>92 % "
                              "perpendicular' (= 1 − ρ)",
                "rho_exec_range": cs["rho_exec_range"], "rho_rand": cs["rho_rand"],
                "ratio_early_late": ratio, "perp_energy_fraction_min": cs["perp_energy_fraction_min"],
                "D_range": cs["D_range"], "scaled_defect_range": cs["scaled_defect_range"],
                "verdict": (inconclusive if not learned("attn") else
                            "partly confirmed: the projection is small in absolute terms (most energy is "
                            "perpendicular), but it is larger than for a random subspace of the same "
                            "dimension, so the execution subspace is not commutator-free"
                            if enriched else "confirmed: no more commutator in the execution subspace "
                            "than in a random subspace of its dimension")}
    return None


def _bubbling(c: _Claims) -> dict | None:
    """The bubbling claim: its numbers and verdict, or None when the study has no result for it."""
    runs, learned, inconclusive = c.runs, c.learned, c.inconclusive
    at = _get(runs, "attn", "attention")
    if at:
        ent = at["last_layer_entropy"]
        u = at["uniform_entropy"]
        mins = {m: min(v) for m, v in ent.items()}
        finals = {m: v[-1] for m, v in ent.items()}
        first_min_step = {m: at["steps"][int(np.argmin(v))] for m, v in ent.items()}
        slot = at["per_m"][str(at["ms"][-1])][-1]["slot_mass"][-1]
        over = at["override"]["mean"]
        ks = at["override"]["ks"]
        bubbled = min(mins.values()) < 0.5 * u
        return {"claim": SEED_CLAIMS["bubbling"],
                "seed_value": "last-layer readout entropy ≈2.72 (ln 16) → minimum ≈0.40 at step 1000 (m=3,4), "
                              "then ≈0.8–1.6",
                "uniform_entropy": u, "min_entropy_per_m": mins, "final_entropy_per_m": finals,
                "step_of_min_per_m": first_min_step, "final_last_layer_slot_mass_m_max": slot,
                "override_acc_mean": over, "ks": ks,
                "verdict": (inconclusive if not learned("attn") else
                            "confirmed (entropy falls far below uniform)" if bubbled else "not confirmed")
                + ("; in reference mode the readout attends to value tokens, which the leak makes "
                   "sufficient" if slot.get("value", 0) > 0.3 else "")}
    return None


MLP_PAIRS = (("attn", "mlp"), ("attn_seed2", "mlp_seed2"))      # same seed, attention-only vs standard blocks


def _mlp(c: _Claims) -> dict | None:
    """The mlp claim per seed (attention-only vs standard blocks of the same seed): attention-block r90 at least
    1 higher and accuracy at least 0.05 lower, each beside the random-walk null; the verdict says in how many
    seeds each holds."""
    runs, acc = c.runs, c.acc
    att_of = {role: _get(runs, role, "spectra", "summary", "attention") for pair in MLP_PAIRS for role in pair}
    pairs = [(a, m) for a, m in MLP_PAIRS if att_of[a] and att_of[m]]
    if not pairs:
        return None
    r90_a = [att_of[a]["r90_median"] for a, _ in pairs]
    r90_m = [att_of[m]["r90_median"] for _, m in pairs]
    acc_a = [_get(acc, a, "acc") for a, _ in pairs]
    acc_m = [_get(acc, m, "acc") for _, m in pairs]
    higher = [rm >= ra + 1 for ra, rm in zip(r90_a, r90_m)]          # at least one more component
    worse = [(am or 0) <= (aa or 0) - 0.05 for aa, am in zip(acc_a, acc_m)]
    n, kh, kw = len(pairs), sum(higher), sum(worse)
    if not any(c.learned(r) for pair in pairs for r in pair):
        verdict = c.inconclusive
    elif kh == n and kw == n:
        verdict = "confirmed"
    elif kh == n:
        verdict = "partly confirmed (higher-dimensional, not worse)" if kw == 0 else \
            f"partly confirmed (higher-dimensional in every seed, worse in {kw} of {n})"
    elif kw == n:
        verdict = "partly confirmed (worse, not higher-dimensional)" if kh == 0 else \
            f"partly confirmed (worse in every seed, higher-dimensional in {kh} of {n})"
    elif kh == 0 and kw == 0:
        verdict = "not confirmed (differences below 1 component and 0.05 accuracy)"
    else:
        verdict = f"mixed across seeds: higher-dimensional in {kh} of {n}, worse in {kw} of {n}"
    return {"claim": SEED_CLAIMS["mlp"], "seed_value": "claimed, no code or figure in the reference",
            "n_seeds": n, "seeds": [_get(runs, a, "config", "seed") for a, _ in pairs],
            "r90_attention_blocks_attn_only": r90_a, "r90_attention_blocks_standard": r90_m,
            "null_r90_attn_only": [att_of[a]["null_r90_median"] for a, _ in pairs],
            "null_r90_standard": [att_of[m]["null_r90_median"] for _, m in pairs],
            "r90_mlp_blocks_standard": [_get(runs, m, "spectra", "summary", "mlp", "r90_median") for _, m in pairs],
            "acc_attn_only": acc_a, "acc_standard": acc_m, "higher_in": kh, "worse_in": kw,
            "verdict": f"{verdict}; {n} seed(s)"}


def _curriculum(c: _Claims) -> dict | None:
    """The curriculum claim per seed: some smaller m, learned in its own stage (peak >= chance + margin), loses more
    than 0.1 from that peak by the end; the verdict says in how many seeds."""
    per = {role: _get(c.runs, role, "curriculum", "forgetting") for role in ("curriculum", "curriculum_seed2")}
    per = {role: f for role, f in per.items() if f}
    if not per:
        return None
    forgot, learned = [], []
    for role, f in per.items():
        ok = c.chance_of(role) + LEARNED_MARGIN
        learned.append(any((v["peak_in_own_stage"] or 0) >= ok for v in f.values()))
        forgot.append(any(v["drop_from_peak"] is not None and v["drop_from_peak"] > 0.1
                          and (v["peak_in_own_stage"] or 0) >= ok for v in f.values()))
    n, k = len(per), sum(forgot)
    verdict = (c.inconclusive if not any(learned) else "confirmed" if k == n else
               "not confirmed" if k == 0 else f"mixed across seeds: forgetting in {k} of {n}")
    return {"claim": SEED_CLAIMS["curriculum"], "seed_value": "claimed, no result artefact in the reference",
            "n_seeds": n, "forgetting_in": k, "seeds": [_get(c.runs, r, "config", "seed") for r in per],
            "drop_from_peak_per_m": [{m: v["drop_from_peak"] for m, v in f.items()} for f in per.values()],
            "final_acc": [{m: v["final"] for m, v in f.items()} for f in per.values()],
            "verdict": f"{verdict}; {n} seed(s)"}


def _mul(c: _Claims) -> dict | None:
    """Modular multiplication's execution dimension against addition's: the attention blocks' median centred r90
    of every multiplication seed against every addition seed (attention-only, reference data), each beside its
    random-walk null. Confirmed when every multiplication seed is at least 1 component above every addition seed,
    inside the claimed 4–6 and at least 1 below its own null."""
    spec = {role: _get(c.runs, role, "spectra", "summary", "attention") for role in ("mul", "mul_seed2", "attn",
                                                                                   "attn_seed2")}
    mul = [r for r in ("mul", "mul_seed2") if spec[r]]
    add = [r for r in ("attn", "attn_seed2") if spec[r]]
    if not mul or not add:
        return None
    r_mul, r_add = [spec[r]["r90_median"] for r in mul], [spec[r]["r90_median"] for r in add]
    null_mul = [spec[r]["null_r90_median"] for r in mul]
    higher = min(r_mul) >= max(r_add) + 1
    in_band = all(MUL_BAND[0] <= x <= MUL_BAND[1] for x in r_mul)
    below_null = all(nl is not None and x <= nl - 1 for x, nl in zip(r_mul, null_mul))
    if not all(c.learned(r) for r in mul + add):
        verdict = c.inconclusive + " (every multiplication and addition seed must)"
    elif not higher:
        verdict = "not confirmed: multiplication is not at least 1 component above addition in every seed"
    elif not below_null:
        verdict = "not distinguishable from a random walk: higher than addition, but not 1 below its null"
    else:
        verdict = "confirmed" if in_band else f"partly confirmed: higher than addition, outside {MUL_BAND}"
    return {"claim": SEED_CLAIMS["mul"], "seed_value": "4–6-dimensional (claimed in the README, no code or figure)",
            "n_seeds_mul": len(mul), "n_seeds_add": len(add), "classes_mul": _get(c.runs, mul[0], "config",
                                                                                   "modadd_classes"),
            "chance_mul": c.chance_of(mul[0]), "acc_mul": [_get(c.acc, r, "acc") for r in mul],
            "r90_mul_per_seed": r_mul, "r90_add_per_seed": r_add, "null_r90_mul_per_seed": null_mul,
            "null_r90_add_per_seed": [spec[r]["null_r90_median"] for r in add],
            "uncentered_r90_mul_per_seed": [spec[r]["uncentered_r90_median"] for r in mul],
            "pr_mul_per_seed": [spec[r]["pr_median"] for r in mul], "pr_add_per_seed": [spec[r]["pr_median"] for r in add],
            "verdict": f"{verdict}; {len(mul)} multiplication and {len(add)} addition seed(s)"}


def _sae(c: _Claims) -> dict | None:
    """The sae claim: its numbers and verdict, or None when the study has no result for it."""
    runs, learned, inconclusive = c.runs, c.learned, c.inconclusive
    sae = _get(runs, "attn", "sae")
    if sae:
        st = sae["stages"]
        drops = [s["drop_top"] for s in st]
        rnd = [s["drop_random"] for s in st]
        mid_largest = len(st) >= 3 and drops[1] == max(drops)
        return {"claim": SEED_CLAIMS["sae"], "seed_value": "early 0.52→0.49, mid 0.945→0.94, late 1.00→1.00 "
                                                            "(ablation never propagated to the readout)",
                "steps": [s["step"] for s in st], "drop_top": drops, "drop_random": rnd,
                "fvu": [s["fvu"] for s in st], "recon_change": [s["recon_change"] for s in st],
                "verdict": inconclusive if not learned("attn") else (
                            "stage-dependent drops, largest mid-training" if mid_largest else
                            "drops do not peak mid-training") + (
                                "; top-variance latents matter more than random ones"
                                if np.mean(drops) > np.mean(rnd) + 0.02 else
                                "; no larger than ablating random latents")}
    return None


def _settling(c: _Claims) -> dict | None:
    """Distance to the final subspace: the attention blocks' top-3 subspace overlap with the final one at 20 % of
    training, against the random walk with the same step sizes, per seed (attention-only runs)."""
    per = {}
    for role in ("attn", "attn_seed2"):
        s = _get(c.runs, role, "subspace_distance", "summary")
        if s and s.get(SETTLE_AT, {}).get("attention_excess_median") is not None:
            per[role] = s
    if not per:
        return None
    ex = [s[SETTLE_AT]["attention_excess_median"] for s in per.values()]
    n = len(ex)
    if not all(c.learned(role) for role in per):
        verdict = c.inconclusive
    elif n >= 2 and min(ex) >= SETTLE_MARGIN and np.mean(ex) >= 2 * np.std(ex, ddof=1):
        verdict = "confirmed: the early subspace is closer to the final one than a random walk's, in every seed"
    elif np.mean(ex) <= 0 or max(ex) < SETTLE_MARGIN / 2:
        verdict = "not confirmed: no closer to the final subspace than a random walk with the same step sizes"
    else:
        verdict = "inconclusive" + (" (single seed)" if n == 1 else "")
    return {"claim": SEED_CLAIMS["settling"], "seed_value": "no code or number in the reference (a commented-out "
                                                             "README line; its alignment to final is one cosine)",
            "n_seeds": n, "at_fraction": float(SETTLE_AT), "k": next(iter(per.values()))["k"],
            "attention_overlap_median_per_seed": [s[SETTLE_AT]["attention_overlap_median"] for s in per.values()],
            "null_overlap_median_per_seed": [s[SETTLE_AT]["attention_null_overlap_median"] for s in per.values()],
            "excess_per_seed": ex, "margin": SETTLE_MARGIN,
            "trunk_overlap_per_seed": [s[SETTLE_AT]["trunk_overlap"] for s in per.values()],
            "trunk_null_overlap_per_seed": [s[SETTLE_AT]["trunk_null_overlap"] for s in per.values()],
            "settle_fraction_median_per_seed": [s["attention_settle_median"] for s in per.values()],
            "null_settle_fraction_median_per_seed": [s["attention_null_settle_median"] for s in per.values()],
            "verdict": verdict}


WEAK_R = 0.3               # |r| below this is a "weak" correlation (a conventional cut, not tuned to the results)
SMALL_FRACTION = 0.1       # "a small number of latents": at most this fraction of the live latents (at least 1)
STRONG_R = 0.5             # descriptive only: latents with |r| at least this are counted beside the verdict
ALPHA = 0.05


def _per_seed(c: _Claims, *keys) -> dict:
    """role -> the result at ``keys`` for the attention-only seeds that have it."""
    return {role: v for role in SERIES_ROLES if (v := _get(c.runs, role, *keys)) is not None}


def _commutator_spikes(c: _Claims) -> dict | None:
    """D's spikes against loss fluctuations, per attention-only seed, beside the surrogate null."""
    per = {r: s for r, s in _per_seed(c, "commutator_series", "spikes").items()
           if _get(s, "D_vs_loss", "r") is not None}
    if not per:
        return None
    dl = {r: s["D_vs_loss"] for r, s in per.items()}
    weak = [abs(v["r"]) < WEAK_R for v in dl.values()]
    beyond = [v["p_phase"] < ALPHA for v in dl.values()]
    n = len(per)
    if not all(c.learned(r) for r in per):
        verdict = c.inconclusive
    elif all(weak) and not any(beyond):
        verdict = f"confirmed: weak (|r| < {WEAK_R}) and within the surrogate null in every seed"
    elif all(weak):
        verdict = f"confirmed: weak (|r| < {WEAK_R}), though beyond the surrogate null in {sum(beyond)} of {n} seeds"
    elif any(not w and b for w, b in zip(weak, beyond)):
        verdict = (f"not confirmed: D's spikes go with loss fluctuations (|r| ≥ {WEAK_R}, surrogate p < {ALPHA}) in "
                   f"{sum(not w and b for w, b in zip(weak, beyond))} of {n} seeds")
    else:
        verdict = f"inconclusive: |r| ≥ {WEAK_R} in some seed but within the surrogate null (few checkpoints)"
    norm = {r: s["D_vs_inverse_grad_norms"] for r, s in per.items()}
    if verdict != c.inconclusive and any(v["r"] is not None and v["r"] > 0 and v["p_phase"] < ALPHA
                                         for v in norm.values()):
        verdict += "; D's spikes follow dips of the gradient norms (the 1/‖g‖² normalisation)"
    sp = {r: s["spikes"] for r, s in per.items()}
    counts, null_counts = sum(v["count"] for v in sp.values()), sum(v["null_mean_count"] for v in sp.values())
    if verdict != c.inconclusive:
        verdict += (f"; {counts} spikes of D (> {next(iter(per.values()))['factor']:g}× its rolling median) over "
                    f"{sum(v['n'] for v in sp.values())} checkpoints (a Gaussian series with its spectrum: "
                    f"{null_counts:.1f} on average)")
    return {"claim": SEED_CLAIMS["commutator_spikes"],
            "seed_value": "D rises from ≈3 to 10–50 with spikes ≈169 and ≈178 late (reference seed 42); no number for "
                          "the correlation",
            "n_seeds": n, "n_checkpoints": [s["D_vs_loss"]["n"] for s in per.values()],
            "r_D_vs_loss": [v["r"] for v in dl.values()], "p_phase_D_vs_loss": [v["p_phase"] for v in dl.values()],
            "p_shift_D_vs_loss": [v["p_shift"] for v in dl.values()],
            "r_D_vs_inverse_grad_norms": [v["r"] for v in norm.values()],
            "p_phase_D_vs_inverse_grad_norms": [v["p_phase"] for v in norm.values()],
            "r_delta_vs_loss": [s["delta_vs_loss"]["r"] for s in per.values()],
            "p_phase_delta_vs_loss": [s["delta_vs_loss"]["p_phase"] for s in per.values()],
            "r_levels_D_vs_loss": [_get(s, "levels", "levels", "r") for s in per.values()],
            "r_differences_D_vs_loss": [_get(s, "levels", "first_differences", "r") for s in per.values()],
            "p_differences_D_vs_loss": [_get(s, "levels", "verdict_input") for s in per.values()],
            "spike_count": [v["count"] for v in sp.values()],
            "spike_count_second_half": [v["count_second_half"] for v in sp.values()],
            "spike_null_mean_count": [v["null_mean_count"] for v in sp.values()],
            "D_range": [[min(s["D"]), max(s["D"])] for s in per.values()],
            "window": next(iter(per.values()))["window"], "factor": next(iter(per.values()))["factor"],
            "weak_r": WEAK_R, "verdict": verdict}


def _sae_m(c: _Claims) -> dict | None:
    """How many SAE latents correlate with m beyond the family-wise permutation null, per attention-only seed
    (the last SAE stage), beside random directions of the same size."""
    per = {r: st[-1] for r, st in _per_seed(c, "sae_m", "stages").items() if st}
    if not per:
        return None
    n_sig = [s["sae"]["n_significant"] for s in per.values()]
    live = [s["sae"]["n_live"] for s in per.values()]
    small = [1 <= k <= max(1, SMALL_FRACTION * n) for k, n in zip(n_sig, live)]
    frac = [k / n if n else 0.0 for k, n in zip(n_sig, live)]
    rfrac = [s["random"]["n_significant"] / s["random"]["n_live"] if s["random"]["n_live"] else 0.0
             for s in per.values()]
    if not all(c.learned(r) for r in per):
        verdict = c.inconclusive
    elif all(k == 0 for k in n_sig):
        verdict = "not confirmed: no latent correlates with m beyond the family-wise permutation null"
    elif all(small):
        verdict = "confirmed: a few latents correlate with m beyond the family-wise permutation null in every seed"
    elif all(k > max(1, SMALL_FRACTION * n) for k, n in zip(n_sig, live)):
        verdict = (f"not confirmed as 'a small number': {_fmt_counts(n_sig, live)} live latents correlate with m "
                   f"beyond the family-wise null in every seed")
    else:
        verdict = "inconclusive: the seeds disagree"
    if verdict != c.inconclusive and any(k > 0 for k in n_sig):
        verdict += ("; random directions of the same size correlate as often (m is spread over the residual, "
                    "not isolated by the SAE)" if np.mean(rfrac) >= np.mean(frac) else
                    "; more often than random directions of the same size")
    return {"claim": SEED_CLAIMS["sae_m"],
            "seed_value": "no number; the reference's SAE saw m = 4 only, where the correlation is undefined",
            "n_seeds": len(per), "steps": [s["step"] for s in per.values()],
            "n_significant": n_sig, "n_live": live,
            "null_mean_count": [s["sae"]["null_mean_count"] for s in per.values()],
            "max_abs_r": [s["sae"]["max_abs_r"] for s in per.values()], "strong_r": STRONG_R,
            "n_strong": [sum(abs(r) >= STRONG_R for r in s["sae"]["r"] if r is not None) for s in per.values()],
            "random_n_strong": [sum(abs(r) >= STRONG_R for r in s["random"]["r"] if r is not None)
                                for s in per.values()],
            "threshold": [s["sae"]["threshold"] for s in per.values()],
            "top_r": [[t["r"] for t in s["sae"]["top"][:3]] for s in per.values()],
            "random_n_significant": [s["random"]["n_significant"] for s in per.values()],
            "random_n_live": [s["random"]["n_live"] for s in per.values()],
            "random_max_abs_r": [s["random"]["max_abs_r"] for s in per.values()],
            "alpha": next(iter(per.values()))["sae"]["alpha"], "small_fraction": SMALL_FRACTION, "verdict": verdict}


def _fmt_counts(k, n) -> str:
    return ", ".join(f"{a} of {b}" for a, b in zip(k, n))


def _commutator_cells(c: _Claims) -> dict | None:
    """Same-m against cross-m commutator pairs, per attention-only seed, with the within-checkpoint permutation null."""
    per = _per_seed(c, "commutator_series", "cells")
    per = {r: v for r, v in per.items() if _get(v, "same_vs_cross_D", "diff") is not None}
    if not per:
        return None
    d = {r: v["same_vs_cross_D"] for r, v in per.items()}
    g = {r: v["same_vs_cross_grad_cos"] for r, v in per.items()}
    n = len(per)

    def says(tests, what):
        k = sum(t["p_value"] < ALPHA for t in tests.values())
        return f"{what} differs between same-m and cross-m pairs in {k} of {n} seeds (permutation p < {ALPHA})"
    verdict = c.inconclusive if not all(c.learned(r) for r in per) else \
        says(d, "D") + "; " + says(g, "cos(g_A, g_B)")
    return {"claim": SEED_CLAIMS["commutator_cells"], "seed_value": "logged as heatmaps; no number in the README",
            "n_seeds": n, "n_samples": [v["n_samples"] for v in per.values()],
            "empty_cells": [v["empty"] for v in per.values()],
            "D_same_cross": [[t["a"], t["b"]] for t in d.values()], "D_p": [t["p_value"] for t in d.values()],
            "cos_same_cross": [[t["a"], t["b"]] for t in g.values()], "cos_p": [t["p_value"] for t in g.values()],
            "verdict": verdict}


def headline(res: dict) -> dict:
    """Numbers next to the bubble-modadd README's claims, and a plain verdict for each (see the report for the rules)."""
    runs = res["runs"]
    acc = _accuracy(runs)
    c = _Claims(runs, acc, 1.0 / _get(runs, "attn", "config", "modadd_classes", default=8))
    out: dict = {"accuracy": acc, "learned": {role: c.learned(role) for role in runs}}
    for key, claim in (("leak", _leak), ("collapse", _collapse), ("commutator", _commutator), ("bubbling", _bubbling),
                       ("mlp", _mlp), ("curriculum", _curriculum), ("sae", _sae), ("settling", _settling),
                       ("commutator_spikes", _commutator_spikes), ("sae_m", _sae_m),
                       ("commutator_cells", _commutator_cells), ("mul", _mul)):
        value = claim(c)
        if value is not None:
            out[key] = value
    return out
