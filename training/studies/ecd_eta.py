"""Does a higher η make ECD's results concentrate? A seeds × η mini-study of the claim of
evasilverstein/symmetry-breaking-files' README (ECD, De Luca & Silverstein, arXiv 2201.11137): the Liouville measure
concentrates as p(Θ) ∝ (F − F0)^(−ηd/2), so "higher η → tighter concentration → less variance across runs".

Protocol (fixed before any run was looked at; the constants below are the pre-registration):

* Runs: the symmetry study's ECD run on the symmetric model (training/studies/symmetry_study.py, ``ecd`` × ``sym``,
  its ``cpu`` size: per-tensor projection, Δt̂ = 1, F0 = 1, ν = 0, constant rate) with only η and the training
  seed changed: every η of the size × every seed (STUDY/eta<η>_s<seed>). The optimizer state is not kept at the
  checkpoints (the velocity is not analysed here). Δt̂ is held fixed, so the drift per update, Δt̂/√η, shrinks as η
  grows: the arms also differ in how far they travel (reported beside, as the final distance from θ(0)).
* Per run: the final validation loss (the primary quantity), its exponentially weighted mean (α = 0.1, the smoothing
  of that repository's smoothed results; training/geometry/stats.py), and two geometry summaries of the whole
  trajectory: the final distance from the initialisation ‖θ(T) − θ(0)‖ and the row-normalised uncentered-PCA PC1
  (training/geometry/trajectory.py through the symmetry study's :func:`geometry`).
* Per η and quantity: the mean and the across-seed SD.
* Test of "higher η → less spread", per quantity: Spearman's ρ between log η and each run's absolute deviation from
  the median of its η group (the Brown–Forsythe deviations, which remove the groups' different levels); the null
  is "spread unrelated to η": the η labels permuted over the runs (N_PERM draws), one-sided p in each direction.
  Beside it the omnibus Brown–Forsythe test of equal variances (scipy.stats.levene, center="median"), and as an
  effect size the least-squares slope of log SD against log η with a percentile bootstrap 95 % interval (seeds
  resampled within each η group; resamples with a zero SD are left out and counted).
* Verdict (on the primary quantity; the others get the same rule, reported as secondary): **supported** when ρ < 0
  with one-sided permutation p < ALPHA; **contradicted** when ρ > 0 with p < ALPHA in that direction; otherwise
  **not supported** (no trend detectable at this number of seeds). Always stated with the seeds per η.

Sizes: ``cpu`` (the default; 3 η over a decade, 4 seeds, 12 runs of the symmetry study's cpu model, minutes on a
2-core CPU) and ``test`` (a tiny model, 2 η × 3 seeds of 8 steps, for the end-to-end test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from training.core import runio
from training.core.cli import show
from training.core.config import Config
from training.core.errors import UserError
from training.core.tasks import validate
from training.geometry.permutation import permuted_rank_correlations
from training.geometry.stats import EWM_ALPHA, finite, mean_sd, smoothed_curve_summary
from training.studies import symmetry_study as ss
from training.studies.common import markdown_table, run_state
from training.studies.modadd_early import spearman

STUDY = "ecd_eta"
RESULT = "ecd_eta"
ALPHA = 0.05            # one-sided level of the trend test
N_PERM = 20000          # permutations of the η labels
N_BOOT = 2000           # bootstrap resamples of the seeds within each η group
PRIMARY = "final_val_loss"
QUANTITIES = {"final_val_loss": "final validation loss",
              "smoothed_final_val_loss": f"smoothed final validation loss (EWM α = {EWM_ALPHA:g})",
              "drift": "final distance from θ(0)",
              "pc1": "PC1 (row-normalised, whole trajectory)"}

TEST_OVERRIDES = dict(steps=8, eval_every=4, ckpt_every=4, n_layer=1, d_model=32, n_head=2, d_ff=64,
                      n_train_docs=600, n_val_docs=60, bpe_vocab_size=512, n_val_seqs=16, eval_ood_gap=(10, 12),
                      train_gap=(5, 10), eval_in_gap=(5, 10))


@dataclass(frozen=True)
class EtaSize:
    etas: tuple[float, ...]
    seeds: tuple[int, ...]
    overrides: dict = field(default_factory=dict)     # changes to the symmetry study's cpu base config


SIZES = {"cpu": EtaSize((30.0, 100.0, 300.0), (0, 1, 2, 3)),
         "test": EtaSize((30.0, 300.0), (0, 1, 2), TEST_OVERRIDES)}
# Config fields the study sets itself (a --set of them would change the protocol silently).
PROTOCOL_FIELDS = ss.PROTOCOL_FIELDS + ("seed",)


def run_name(eta: float, seed: int) -> str:
    return f"eta{eta:g}_s{seed}"


def parse_numbers(text: str, kind: type, what: str) -> tuple:
    """A comma-separated list of distinct numbers (``--etas``, ``--seeds``)."""
    try:
        vals = tuple(kind(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--{what}: expected comma-separated numbers, got {text!r}") from None
    if not vals or len(set(vals)) != len(vals):
        raise UserError(f"--{what}: expected distinct comma-separated numbers, got {text!r}")
    if what == "etas" and not all(math.isfinite(v) and v > 0 for v in vals):
        raise UserError(f"--etas: every η must be a positive number (got {text!r})")
    return vals


def run_configs(size: str, etas: Sequence[float] | None = None, seeds: Sequence[int] | None = None,
                overrides: dict | None = None) -> dict[str, tuple[float, int, Config]]:
    """name -> (η, seed, config) of every run of the study."""
    if size not in SIZES:
        raise UserError(f"unknown study size '{size}' (choose from {', '.join(SIZES)})")
    s = SIZES[size]
    out = {}
    for seed in (s.seeds if seeds is None else seeds):
        base = ss.run_configs("cpu", seed, ["ecd"], ["sym"], {**s.overrides, **(overrides or {})})["ecd_sym"]
        for eta in (s.etas if etas is None else etas):
            out[run_name(eta, seed)] = (float(eta), int(seed),
                                        validate(base.replace(ecd_eta=float(eta), keep_optimizer_states=False)))
    return out


# ---------------------------------------------------------------------------- per run
def analyse_run(run_dir: Path) -> dict:
    """State, final and smoothed validation loss, geometry summaries and ECD's counters of one run."""
    metrics = runio.read_metrics(run_dir)
    vals = [m["val_loss"] for m in metrics if finite(m.get("val_loss"))]
    last = metrics[-1] if metrics else {}
    geo = ss.geometry(run_dir)
    sm = smoothed_curve_summary(vals)
    return {"state": run_state(run_dir), "final_val_loss": vals[-1] if vals else None,
            "smoothed_final_val_loss": sm["smoothed_final"], "smoothed_min_val_loss": sm["smoothed_min"],
            "drift": geo.get("drift"), "pc1": geo.get("pc1"), "geometry_reason": geo.get("reason"),
            "ecd_skipped_total": last.get("ecd_skipped_total"), "ecd_updates_total": last.get("ecd_updates_total"),
            "ecd_turn_angle_last": last.get("ecd_turn_angle"), "ecd_step_length_last": last.get("ecd_step_length")}


# ---------------------------------------------------------------------------- the statistics
def brown_forsythe_deviations(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """|x − median of its group| for every value of every group."""
    return [np.abs(np.asarray(g, float) - np.median(g)) for g in groups]


def sd_slope(etas: Sequence[float], groups: Sequence[Sequence[float]]) -> float | None:
    """Least-squares slope of log SD (ddof 1) against log η over the groups; None if any SD is 0 or undefined."""
    sds = [np.std(g, ddof=1) if len(g) > 1 else 0.0 for g in groups]
    if len(groups) < 2 or not all(sd > 0 for sd in sds):
        return None
    return float(np.polyfit(np.log(etas), np.log(sds), 1)[0])


def concentration_test(etas: Sequence[float], groups: Sequence[Sequence[float]], n_perm: int = N_PERM,
                       n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """The trend test of the module docstring on values grouped by η (``groups[i]`` the runs at ``etas[i]``)."""
    groups = [[float(v) for v in g if finite(v)] for g in groups]
    per = [{"eta": float(e), **mean_sd(g)} for e, g in zip(etas, groups)]
    out = {"per_eta": per, "rho": None, "p_less": None, "p_greater": None, "bf_statistic": None, "bf_p": None,
           "slope": None, "slope_ci": None, "boot_valid": 0, "n_perm": n_perm, "n_boot": n_boot}
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        return {**out, "verdict": "untestable", "reason": "needs at least 2 η values with at least 2 finite runs each"}
    from scipy.stats import levene
    dev = brown_forsythe_deviations(groups)
    x = np.concatenate([[math.log(e)] * len(g) for e, g in zip(etas, groups)])
    z = np.concatenate(dev)
    rho = spearman(x, z)
    bf = levene(*groups, center="median")
    out.update(bf_statistic=float(bf.statistic) if math.isfinite(bf.statistic) else None,
               bf_p=float(bf.pvalue) if math.isfinite(bf.pvalue) else None, slope=sd_slope(etas, groups))
    rng = np.random.default_rng(seed)
    if rho is None:          # every deviation equal (e.g. all zero): no spread to order
        return {**out, "verdict": "not supported", "reason": "the deviations are all equal"}
    from scipy.stats import rankdata
    perm = np.nan_to_num(permuted_rank_correlations(rankdata(x), rankdata(z), n_perm, rng))
    out.update(rho=rho, p_less=float((1 + np.sum(perm <= rho + 1e-12)) / (n_perm + 1)),
               p_greater=float((1 + np.sum(perm >= rho - 1e-12)) / (n_perm + 1)))
    boots = []
    for _ in range(n_boot):
        b = sd_slope(etas, [np.asarray(g)[rng.integers(0, len(g), len(g))] for g in groups])
        if b is not None:
            boots.append(b)
    out["boot_valid"] = len(boots)
    if boots and len(boots) >= n_boot // 2:
        out["slope_ci"] = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
    out["verdict"] = ("supported" if rho < 0 and out["p_less"] < ALPHA else
                      "contradicted" if rho > 0 and out["p_greater"] < ALPHA else "not supported")
    return out


def analyse(root: Path, runs: dict[str, tuple[float, int, Config]], seed: int = 0,
            log: Callable[[str], None] = print) -> dict:
    """Every run's numbers, the per-η table and the test of each quantity; the claim with its verdict."""
    per_run = {}
    for name, (eta, s, _) in runs.items():
        run_dir = Path(root) / name
        if not (run_dir / "config.json").exists():
            raise UserError(f"run {name} ({run_dir}) has not been trained; run the study without --analyse-only")
        log(f"analysing {name}")
        per_run[name] = {"eta": eta, "seed": s, **analyse_run(run_dir)}
    etas = sorted({r["eta"] for r in per_run.values()})
    seeds = sorted({r["seed"] for r in per_run.values()})
    ok = {n: r for n, r in per_run.items() if r["state"] == "completed"}
    tests = {q: concentration_test(etas, [[r[q] for r in ok.values() if r["eta"] == e] for e in etas], seed=seed)
             for q in QUANTITIES}
    p = tests[PRIMARY]
    n_min = min((d["n"] for d in p["per_eta"]), default=0)
    claim = {"claim": "higher η → tighter concentration → less variance across runs (symmetry-breaking-files README, "
                      "from the Liouville measure p(Θ) ∝ (F − F0)^(−ηd/2))",
             "statistic": "Spearman ρ between log η and each run's |final val loss − its η group's median| "
                          "(Brown–Forsythe deviations); effect size: slope of log SD against log η",
             "null": f"η labels permuted over the runs ({N_PERM} draws; spread unrelated to η), one-sided; beside it "
                     "the Brown–Forsythe test of equal variances",
             "seeds": n_min, "etas": etas,
             "observed": _observed(p), "verdict": p["verdict"]}
    return {"study": STUDY, "runs": per_run, "etas": etas, "seeds": seeds, "tests": tests, "claim": claim,
            "failed_runs": sorted(n for n, r in per_run.items() if r["state"] != "completed"),
            "protocol": {"alpha": ALPHA, "n_perm": N_PERM, "n_boot": N_BOOT, "primary": PRIMARY,
                         "ewm_alpha": EWM_ALPHA, "base": {k: v for k, v in next(iter(runs.values()))[2].to_dict().items()
                                                           if k in ("optimizer", "lr", "ecd_F0", "ecd_nu",
                                                                    "ecd_projection", "steps", "batch_size", "seq_len",
                                                                    "n_layer", "d_model", "attn_disorder")}}}


def _observed(t: dict) -> str:
    sds = ", ".join(f"η {d['eta']:g}: {_f(d['sd'], '.4f')} (n {d['n']})" for d in t["per_eta"])
    if t["rho"] is None:
        return f"across-seed SD {sds}; {t.get('reason', 'no test')}"
    ci = t["slope_ci"]
    return (f"across-seed SD {sds}; ρ {t['rho']:+.3f} (one-sided p {t['p_less']:.3g} for less spread at higher η, "
            f"{t['p_greater']:.3g} for more); Brown–Forsythe p {_f(t['bf_p'], '.3g')}; slope of log SD on log η "
            f"{_f(t['slope'], '+.2f')} [{_f(ci[0] if ci else None, '+.2f')}, {_f(ci[1] if ci else None, '+.2f')}]")


# ---------------------------------------------------------------------------- report
def report_markdown(result: dict, size: str, wall_s: float | None = None, note: str = "") -> str:
    c = result["claim"]
    lines = [f"# ECD η-concentration mini-study ({size} size)", "",
             "The symmetry study's ECD run on the symmetric model (training/studies/ecd_eta.py) with η and the seed "
             f"changed; η {', '.join(f'{e:g}' for e in result['etas'])} × seeds "
             f"{', '.join(map(str, result['seeds']))}. Δt̂ fixed, so the drift per update Δt̂/√η shrinks with η.", ""]
    if wall_s is not None:
        lines += [f"Wall time of this invocation: {wall_s:.0f} s{note}.", ""]
    if result["failed_runs"]:
        lines += [f"Runs left out (not completed): {', '.join(result['failed_runs'])}.", ""]
    lines += ["## Mean ± across-seed SD per η", ""]
    header = ["η", "seeds"] + list(QUANTITIES.values())
    rows = []
    for i, e in enumerate(result["etas"]):
        cells = [result["tests"][q]["per_eta"][i] for q in QUANTITIES]
        rows.append([f"{e:g}", str(cells[0]["n"])] + [f"{_f(d['mean'], '.4f')} ± {_f(d['sd'], '.4f')}" for d in cells])
    lines += [markdown_table(header, rows), "## Is the spread smaller at higher η?", ""]
    rows = []
    for q, label in QUANTITIES.items():
        t = result["tests"][q]
        ci = t["slope_ci"]
        rows.append([label + (" (primary)" if q == PRIMARY else ""), _f(t["rho"], "+.3f"), _f(t["p_less"], ".3g"),
                     _f(t["p_greater"], ".3g"), _f(t["bf_p"], ".3g"),
                     f"{_f(t['slope'], '+.2f')} [{_f(ci[0] if ci else None, '+.2f')}, {_f(ci[1] if ci else None, '+.2f')}]",
                     t["verdict"]])
    lines += [markdown_table(["quantity", "ρ(log η, abs. deviation)", "p (less spread)", "p (more spread)",
                              "Brown–Forsythe p", "slope log SD / log η [95 % CI]", "verdict"], rows),
              f"ρ: Spearman between log η and each run's absolute deviation from its η group's median; p: one-sided, "
              f"from {result['protocol']['n_perm']} permutations of the η labels (null: spread unrelated to η); "
              f"verdict at level {result['protocol']['alpha']:g}. Slope CI: seeds resampled within each η.", "",
              "## Claim", "",
              f"- **{c['claim']}**: {c['observed']}. Statistic: {c['statistic']}. Null: {c['null']}. "
              f"Seeds per η: {c['seeds']}. Verdict: **{c['verdict']}**"
              + (" (a negative result: no smaller spread at higher η was detected at this number of seeds)."
                 if c["verdict"] != "supported" else "."), "",
              "Caveats: a tiny model, a short run on synthetic stories; Δt̂ is held fixed, so higher η also means "
              "smaller steps and less distance travelled (see the distance column): a smaller spread at higher η "
              "could come from moving less, not from the Liouville measure's concentration. A few seeds per η "
              "detect only large differences in spread.", ""]
    return "\n".join(lines)


def _f(v, spec=".3f"):
    return show(v, spec, "–")
