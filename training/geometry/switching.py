"""Switching between the LM and the probe objective: oscillations of p_ood and their geometry.

Four pieces, each defined once here (arXiv 2602.23696 §7; in skydancerosel/mini_gpt, ``analysis/switching/detect_oscillations.py``,
``analysis/basin/eval_noise.py``, ``analysis/switching/switching_alignment.py`` and ``analysis/backbone/update_alignment.py``):

* **Oscillations.** Peaks and troughs of the OOD probe accuracy series p_ood(t), found with
  ``scipy.signal.find_peaks`` on p and on −p with a prominence threshold h, and the *switch pairs*
  (peak, adjacent trough) built from them (:func:`detect_oscillations`).
* **Noise calibration of h.** A threshold that is a fixed multiple of the evaluation noise σ is not a
  fixed false-alarm rate: on a structureless series the number of noise peaks that clear h = k·σ
  grows at least in proportion to the series length (white noise, k = 2: about 2.9 peaks in 30
  points, 5.2 in 50). :func:`expected_false_peaks` measures that number by simulation and
  :func:`calibrated_multiplier` picks the smallest k that keeps it at or below a target
  (:data:`FALSE_PEAK_TARGET` per series); with a noise estimate σ the default threshold is
  h = calibrated_multiplier(len(series))·σ (:func:`resolve_threshold`), and the old fixed
  :data:`DEFAULT_PROMINENCE` is left only for series without one.
* **Switching directions** v_sw = (θ_peak − θ_trough)/‖θ_peak − θ_trough‖ (trunk or one block). Both
  checkpoints are in the span of the trajectory, so v_sw is a coefficient vector over ``gram.steps``
  (:func:`switch_coeffs`), and its alignment with the backbone, its capture by the trajectory PCs and
  the cosines between events are T×T algebra on the Gram matrix (:func:`switching_geometry`).
* **Evaluation noise.** The bootstrap standard deviation of p_ood at a checkpoint, from resampling
  the OOD probe examples' per-example correctness with replacement (:func:`bootstrap_std`).
* **Per-layer logit lens.** The final LayerNorm and the tied head applied to the residual stream
  after the embedding and after every block, read out at the probe positions of an evaluation set
  (:func:`probe_readout`). The read-out after the last block is the model's own output, so its
  accuracy is p_ood exactly; the same function therefore also gives the per-example correctness that
  the bootstrap resamples.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from training.core import runio
from training.core.batch import Batch
from training.core.errors import UserError
from training.core.losses import IGNORE
from training.geometry.trajectory import PCA, Gram

DEFAULT_PROMINENCE = 0.03   # mini_gpt's fixed threshold: ONLY when p_ood has no noise estimate (uncalibrated)
FALSE_PEAK_TARGET = 0.2     # with a noise estimate σ: at most this many white-noise peaks per series are expected at h
MULTIPLIER_GRID = tuple(2.0 + 0.25 * i for i in range(25))   # candidate k of h = k·σ: 2, 2.25, …, 8
NULL_SIMULATIONS = 4000     # white-noise series per length in expected_false_peaks (MC error ≈ sqrt(E/4000))
MANIFEST = "oscillation_manifest.json"
PAIRING_RULE = ("each peak is paired with the nearest trough after it and before the next peak ('fall') and with "
                "the nearest trough before it and after the previous peak ('rise'); v_sw points from the trough "
                "to the peak in both cases")


# ---------------------------------------------------------------------------- oscillations
@dataclass
class SwitchPair:
    peak_step: int
    trough_step: int
    peak_p_ood: float
    trough_p_ood: float
    amplitude: float        # peak_p_ood − trough_p_ood (> 0)
    kind: str               # "fall": the trough follows the peak; "rise": it precedes it
    # amplitude < the noise-level amplitude k*·σ of the series (see Threshold); None without a noise estimate
    at_noise_level: bool | None = None


# ---------------------------------------------------------------------------- noise calibration
@lru_cache(maxsize=64)
def _null_prominences(n_points: int, n_sim: int, seed: int) -> np.ndarray:
    """Sorted prominences of every local maximum in ``n_sim`` series of ``n_points`` i.i.d. N(0, 1) values.

    The prominence of a local maximum depends on the series only, not on the threshold, so
    find_peaks at threshold k keeps exactly the maxima listed here with prominence ≥ k: one
    simulation per (length, n_sim, seed) answers every k, and the counts are exactly non-increasing
    in k (the same noise is reused).
    """
    from scipy.signal import find_peaks
    if n_points < 3:                       # end points are never peaks: nothing to find
        out = np.zeros(0)
    else:
        x = np.random.default_rng(seed).standard_normal((n_sim, n_points))
        out = np.sort(np.concatenate([find_peaks(row, prominence=0.0)[1]["prominences"] for row in x]))
    out.setflags(write=False)
    return out


def expected_false_peaks(n_points: int, multiplier: float, n_sim: int = NULL_SIMULATIONS, seed: int = 0) -> float:
    """Expected number of peaks that ``scipy.signal.find_peaks(x, prominence=multiplier)`` reports on a
    series x of ``n_points`` i.i.d. standard normal values: the false-alarm count, per series, of a
    threshold h = multiplier·σ applied to pure evaluation noise of standard deviation σ.

    Estimated by Monte Carlo over ``n_sim`` series drawn from ``numpy.random.default_rng(seed)``, so it
    is deterministic for given arguments (standard error ≈ sqrt(value/n_sim)); the simulation for a
    length is cached. Troughs (peaks of −x) have the same expectation by symmetry. At a fixed
    multiplier the count grows at least in proportion to ``n_points`` (every stretch of the series
    has its own chances to throw up a bump, and longer series also reach deeper bases, e.g. k = 3:
    0.95 peaks in 30 points, 1.96 in 50, 9.4 in 200), which is why a fixed σ-multiple is not a
    fixed error rate.
    """
    n_points, n_sim = int(n_points), int(n_sim)
    if n_points < 0 or n_sim < 1:
        raise UserError(f"expected_false_peaks needs n_points >= 0 and n_sim >= 1 (got {n_points}, {n_sim})")
    if not multiplier > 0:
        raise UserError(f"the noise multiplier must be > 0 (got {multiplier})")
    prom = _null_prominences(n_points, n_sim, int(seed))
    return float(len(prom) - np.searchsorted(prom, float(multiplier), side="left")) / n_sim


def calibrated_multiplier(n_points: int, target: float = FALSE_PEAK_TARGET, grid: Sequence[float] = MULTIPLIER_GRID,
                          n_sim: int = NULL_SIMULATIONS, seed: int = 0) -> float:
    """The smallest k of ``grid`` (default 2, 2.25, …, 8) with ``expected_false_peaks(n_points, k) <= target``.

    Used as h = k·σ, it holds the expected number of noise peaks in a structureless series of this
    length at ``target`` or below, whatever the length: k rises with the length instead of staying at
    a fixed 2 or 3 (white noise, target 0.2: k = 3.5 for 20 points, 4 for 30, 4.5 for 50, 5 for 100).
    If no grid value meets the target the largest one is returned.
    """
    if not target > 0:
        raise UserError(f"the false-peak target must be > 0 (got {target})")
    ks = sorted(float(k) for k in grid)
    if not ks or ks[0] <= 0:
        raise UserError("the multiplier grid must be non-empty and positive")
    for k in ks:
        if expected_false_peaks(n_points, k, n_sim, seed) <= target:
            return k
    return ks[-1]


@dataclass
class Threshold:
    """The prominence threshold h of one series and how it relates to the evaluation noise σ.

    rule: "explicit prominence", "explicit multiplier", "calibrated" (h = k*·σ) or "fixed default (no
    noise estimate)". With σ known, ``noise_multiplier`` = h/σ, ``expected_false_peaks`` the expected
    white-noise peaks per series of this length at h, and ``noise_level_amplitude`` = k*·σ with k* =
    calibrated_multiplier(n_points, target), the smallest swing that pure noise of this σ and length
    clears no more than ``target`` times per series: a pair whose amplitude is below it is
    ``at_noise_level``. Without σ these are None.
    """

    prominence: float
    rule: str
    n_points: int | None
    noise_std: float | None = None
    noise_multiplier: float | None = None
    calibrated_multiplier: float | None = None
    false_peak_target: float | None = None
    expected_false_peaks: float | None = None
    noise_level_amplitude: float | None = None


def resolve_threshold(n_points: int, noise_std: float | None = None, prominence: float | None = None,
                      multiplier: float | None = None, target: float = FALSE_PEAK_TARGET) -> Threshold:
    """The threshold h for a series of ``n_points``: an explicit ``prominence`` wins; else, with a noise
    estimate ``noise_std`` > 0, h = ``multiplier``·σ when a multiplier is given and
    calibrated_multiplier(n_points, target)·σ when not; else the uncalibrated :data:`DEFAULT_PROMINENCE`."""
    if prominence is not None and not prominence > 0:
        raise UserError(f"the prominence threshold must be > 0 (got {prominence})")
    if multiplier is not None and not multiplier > 0:
        raise UserError(f"the noise multiplier must be > 0 (got {multiplier})")
    sigma = float(noise_std) if noise_std is not None and noise_std > 0 else None
    if sigma is None:
        if prominence is not None:
            return Threshold(float(prominence), "explicit prominence", n_points)
        if multiplier is not None:
            raise UserError("a noise multiplier needs a noise estimate of p_ood (> 0); give a prominence instead")
        return Threshold(DEFAULT_PROMINENCE, "fixed default (no noise estimate; not calibrated)", n_points)
    k_star = calibrated_multiplier(n_points, target)
    if prominence is not None:
        h, rule = float(prominence), "explicit prominence"
    elif multiplier is not None:
        h, rule = float(multiplier) * sigma, "explicit multiplier"
    else:
        h, rule = k_star * sigma, "calibrated"
    return Threshold(h, rule, n_points, sigma, h / sigma, k_star, float(target),
                     expected_false_peaks(n_points, h / sigma), k_star * sigma)


# ---------------------------------------------------------------------------- oscillations
@dataclass
class Oscillations:
    peaks: list[int]                 # steps of the peaks, increasing
    troughs: list[int]               # steps of the troughs, increasing
    peak_prominences: list[float]
    trough_prominences: list[float]
    pairs: list[SwitchPair]
    prominence: float                # the threshold h used
    threshold: Threshold | None = None

    @property
    def n_pairs_above_noise(self) -> int | None:
        """Pairs whose amplitude reaches the noise-level amplitude; None without a noise estimate."""
        if self.threshold is None or self.threshold.noise_level_amplitude is None:
            return None
        return sum(1 for q in self.pairs if not q.at_noise_level)


def detect_oscillations(steps: Sequence[int], p_ood: Sequence[float], prominence: float | None = None, *,
                        noise_std: float | None = None, noise_multiplier: float | None = None,
                        target: float = FALSE_PEAK_TARGET) -> Oscillations:
    """Peaks, troughs and switch pairs of the series p_ood(steps).

    A peak is a local maximum of p whose topographic prominence (``scipy.signal.find_peaks``: its
    height above the higher of the two lowest points separating it from higher ground on either side,
    or from the ends of the series) is at least h; a trough is the same for −p. End points are never
    peaks or troughs; a plateau counts once (its middle sample). Pairs follow :data:`PAIRING_RULE`: a
    peak gives at most one 'fall' and one 'rise' pair, a trough between two peaks belongs to two
    pairs, and a monotone or flat series gives none.

    h is chosen by :func:`resolve_threshold`: ``prominence`` if given; else, when the evaluation noise
    σ = ``noise_std`` is known, ``noise_multiplier``·σ or by default calibrated_multiplier(len(p))·σ
    (at most ``target`` white-noise peaks per series); else the fixed, uncalibrated 0.03. With σ known
    every pair's ``at_noise_level`` says whether its amplitude is below the noise-level amplitude.
    """
    from scipy.signal import find_peaks
    s = np.asarray(steps, dtype=np.int64)
    p = np.asarray(p_ood, dtype=np.float64)
    if s.ndim != 1 or s.shape != p.shape:
        raise UserError(f"steps and p_ood must be 1-D series of equal length (got {s.shape} and {p.shape})")
    if len(s) > 1 and np.any(np.diff(s) <= 0):
        raise UserError("the steps of the p_ood series must be strictly increasing")
    if not np.all(np.isfinite(p)):
        raise UserError("the p_ood series has non-finite values")
    thr = resolve_threshold(len(p), noise_std, prominence, noise_multiplier, target)
    prominence = thr.prominence
    floor = thr.noise_level_amplitude
    pk, pk_props = find_peaks(p, prominence=prominence)
    tr, tr_props = find_peaks(-p, prominence=prominence)
    pairs: list[SwitchPair] = []
    for j, i in enumerate(pk):
        prev_peak = pk[j - 1] if j > 0 else -1
        next_peak = pk[j + 1] if j + 1 < len(pk) else len(p)
        before = tr[(tr > prev_peak) & (tr < i)]
        after = tr[(tr > i) & (tr < next_peak)]
        for kind, chosen in (("fall", after[:1]), ("rise", before[-1:])):
            for t in chosen:
                amp = float(p[i] - p[t])
                pairs.append(SwitchPair(int(s[i]), int(s[t]), float(p[i]), float(p[t]), amp, kind,
                                        None if floor is None else bool(amp < floor)))
    pairs.sort(key=lambda q: (q.peak_step, q.trough_step))
    return Oscillations([int(s[i]) for i in pk], [int(s[i]) for i in tr],
                        pk_props["prominences"].tolist(), tr_props["prominences"].tolist(), pairs, float(prominence),
                        thr)


def manifest_dict(osc: Oscillations, settings: dict) -> dict:
    """The JSON form of RUN/oscillation_manifest.json.

    Besides the pairs, extrema and the threshold ``prominence`` h, it records the noise calibration
    (None where no noise estimate exists): ``noise_std`` σ, ``noise_multiplier`` h/σ,
    ``expected_false_peaks`` (white-noise peaks per series expected at h for this series length),
    ``calibrated_multiplier`` k* and ``false_peak_target``, ``noise_level_amplitude`` k*·σ, per pair
    ``at_noise_level`` (amplitude < k*·σ) and ``n_pairs_above_noise`` (pairs with amplitude ≥ k*·σ),
    the count to use for "is there any oscillation above noise".
    """
    t = osc.threshold or Threshold(osc.prominence, "unrecorded", None)
    return {"pairs": [asdict(q) for q in osc.pairs], "peaks": osc.peaks, "troughs": osc.troughs,
            "peak_prominences": osc.peak_prominences, "trough_prominences": osc.trough_prominences,
            "prominence": osc.prominence, "threshold_rule": t.rule, "n_points": t.n_points,
            "noise_std": t.noise_std, "noise_multiplier": t.noise_multiplier,
            "calibrated_multiplier": t.calibrated_multiplier, "false_peak_target": t.false_peak_target,
            "expected_false_peaks": t.expected_false_peaks, "noise_level_amplitude": t.noise_level_amplitude,
            "n_pairs_above_noise": osc.n_pairs_above_noise, "settings": settings}


def read_manifest(run_dir: Path, checkpoint_steps: Sequence[int]) -> tuple[list[SwitchPair], dict]:
    """The switch pairs of RUN/oscillation_manifest.json, checked against the run's checkpoints."""
    path = runio.find_analysis_input(run_dir, MANIFEST, top=True)
    if not path.exists():
        raise UserError(f"{path} does not exist: run analysis/switching/detect_oscillations.py --run-dir {run_dir} "
                        "first")
    m = runio.read_json(path, "oscillation manifest")
    try:
        pairs = [SwitchPair(int(q["peak_step"]), int(q["trough_step"]), float(q["peak_p_ood"]),
                            float(q["trough_p_ood"]), float(q["amplitude"]), str(q.get("kind", "")),
                            None if q.get("at_noise_level") is None else bool(q["at_noise_level"]))
                 for q in m["pairs"]]
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} is not an oscillation manifest; run detect_oscillations.py again") from None
    have = set(checkpoint_steps)
    stale = [(q.peak_step, q.trough_step) for q in pairs if q.peak_step not in have or q.trough_step not in have]
    if stale:
        raise UserError(f"{path} names steps without a checkpoint (pair {stale[0]}); run detect_oscillations.py again")
    return pairs, m


# ---------------------------------------------------------------------------- switching directions
def switch_coeffs(gram: Gram, pairs: Sequence[SwitchPair]) -> tuple[np.ndarray, np.ndarray]:
    """(P × T) span coefficients of the unit switching directions v_sw = (θ_peak − θ_trough)/‖·‖,
    and the P norms ‖θ_peak − θ_trough‖."""
    if not pairs:
        return np.zeros((0, len(gram.steps))), np.zeros(0)
    C = np.stack([gram.drift_coeffs([q.peak_step], q.trough_step)[0] for q in pairs])
    n = gram.norms(C)
    if np.any(n == 0):
        q = pairs[int(np.argmin(n))]
        raise UserError(f"checkpoints {q.peak_step} and {q.trough_step} are identical here: no switching direction")
    return C / n[:, None], n


def switching_geometry(gram: Gram, pairs: Sequence[SwitchPair], traj: PCA, k_max: int = 6) -> dict:
    """Backbone alignment, PC capture and mutual cosines of the switching directions.

    With v_1 = v_b, v_2, v_3, … the unit principal directions of the uncentered trajectory PCA
    ``traj`` (computed on the same Gram) and v_sw a unit switching direction:

    * c = cos(v_sw, v_b) = ⟨v_sw, v_b⟩ (signed: v_sw points to the peak, v_b has a(t_last) > 0);
      c² is the backbone share of ‖v_sw‖², 1 − c² the transverse share (paper Eq. 32).
    * capture E_2:k = Σ_{j=2..k} ⟨v_sw, v_j⟩², the fraction of ‖v_sw‖² in PCs 2..k, k = 2..k_max.
    * capture_transverse E⊥_2:k = Σ_{j=2..k} ⟨v̂⊥, v_j⟩² with v̂⊥ = (v_sw − c v_b)/‖v_sw − c v_b‖
      (paper Eq. 33; ``pc2_to_pc6`` is its E_2:6). Since v_j ⊥ v_b for j ≥ 2 this is E_2:k / (1 − c²).
    * pairwise |cos(v_sw,a, v_sw,b)| between events. Two pairs that share a checkpoint (a peak's rise
      and fall pairs) are not independent events, so the summary uses only disjoint pairs.

    PCs beyond the rank of the drift matrix capture nothing of a vector in the span, so E_2:k for
    k > rank equals E_2:rank. The summary means are over pairs, of E_2:k_max.
    """
    if k_max < 2:
        raise UserError(f"k_max must be >= 2 (got {k_max})")
    C, norms = switch_coeffs(gram, pairs)
    proj = gram.inner(C, traj.coeffs[:k_max])                       # P × k: ⟨v_sw, v_j⟩
    proj = np.pad(proj, ((0, 0), (0, k_max - proj.shape[1])))
    c = proj[:, 0]
    cum = np.cumsum(proj[:, 1:] ** 2, axis=1)                       # E_2:k for k = 2..k_max
    trans = 1.0 - c ** 2
    cum_perp = np.divide(cum, trans[:, None], out=np.zeros_like(cum), where=trans[:, None] > 1e-12)
    cos = np.abs(gram.inner(C, C))
    members = [{q.peak_step, q.trough_step} for q in pairs]
    disjoint = [cos[a, b] for a in range(len(pairs)) for b in range(a + 1, len(pairs)) if not members[a] & members[b]]
    ks = range(2, k_max + 1)
    per_pair = [{
        "peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind, "switch_norm": float(norms[i]),
        "cos_backbone": float(c[i]), "abs_cos_backbone": float(abs(c[i])),
        "backbone_share": float(c[i] ** 2), "transverse_share": float(trans[i]),
        "capture": {f"pc2_to_pc{k}": float(cum[i, k - 2]) for k in ks},
        "capture_transverse": {f"pc2_to_pc{k}": float(cum_perp[i, k - 2]) for k in ks},
    } for i, q in enumerate(pairs)]
    return {
        "dim": gram.dim, "k_max": k_max, "n_components": int(traj.coeffs.shape[0]),
        "explained_variance_ratio": traj.explained_variance_ratio[:k_max].tolist(),
        "pairs": per_pair,
        "pairwise_abs_cos": cos.tolist(),
        "summary": {
            "mean_abs_cos_backbone": _mean(np.abs(c)),
            "mean_backbone_share": _mean(c ** 2),
            "mean_capture": _mean(cum[:, -1]),
            "mean_capture_transverse": _mean(cum_perp[:, -1]),
            "n_disjoint_event_pairs": len(disjoint),
            "mean_abs_cos_between_events": _mean(disjoint),
            "max_abs_cos_between_events": float(max(disjoint)) if disjoint else None,
        },
    }


def _mean(x) -> float | None:
    return float(np.mean(x)) if len(x) else None


SWITCH_PERCENTILES = (0.05, 0.95)     # claims 12 and 13: below the same-lag null's 5th / above its 95th percentile


def same_lag_null(gram: Gram, pair: SwitchPair, traj: PCA, k_max: int = 6) -> dict:
    """The switching statistics of a pair beside those of every displacement of the trajectory over the same
    number of checkpoints (the same-lag null): |cos(x(s') − x(s), v_b)| and E⊥_2:k_max for all index pairs
    (s, s') with s' − s = the pair's lag, the pair itself left out, and the pair's percentile rank in each
    (the fraction of null displacements with a smaller value). A switch pair is "transverse" (claim 12) only
    if it is less aligned with v_b than ordinary displacements of that length, and "captured by PCs 2..6"
    (claim 13) only if more than they are."""
    steps = gram.steps
    i, j = sorted(steps.index(s) for s in (pair.peak_step, pair.trough_step))
    lag = j - i
    fake = [SwitchPair(steps[a + lag], steps[a], 0.0, 0.0, 0.0, "null") for a in range(len(steps) - lag)
            if (a, a + lag) != (i, j) and steps[a] != steps[a + lag]]
    own = switching_geometry(gram, [pair], traj, k_max)["pairs"][0]
    key = f"pc2_to_pc{k_max}"
    if not fake:
        return {"lag": lag, "n_null": 0, "abs_cos_percentile": None, "capture_percentile": None}
    null = switching_geometry(gram, fake, traj, k_max)["pairs"]
    cos_null = np.array([q["abs_cos_backbone"] for q in null])
    cap_null = np.array([q["capture_transverse"][key] for q in null])
    return {"lag": lag, "n_null": len(fake), "abs_cos": own["abs_cos_backbone"],
            "capture": own["capture_transverse"][key],
            "null_abs_cos_quantiles": np.quantile(cos_null, SWITCH_PERCENTILES).tolist(),
            "null_capture_quantiles": np.quantile(cap_null, SWITCH_PERCENTILES).tolist(),
            "abs_cos_percentile": float(np.mean(cos_null < own["abs_cos_backbone"])),
            "capture_percentile": float(np.mean(cap_null < own["capture_transverse"][key]))}


def switching_nulls(gram: Gram, random_walk: Gram, pairs: Sequence[SwitchPair], traj: PCA, traj_rw: PCA,
                    k_max: int = 6) -> dict:
    """Claims 12 and 13 for the pairs above the noise level (all pairs where the manifest has no noise estimate):
    per pair the same-lag null of :func:`same_lag_null` and the same statistics of the D → ∞ random walk with the
    run's increments at the pair's position (``random_walk``, its PCA ``traj_rw``); the medians over pairs of the
    percentile ranks are the ledger's inputs (claim 12: ≤ 0.05, claim 13: ≥ 0.95)."""
    used = [q for q in pairs if not q.at_noise_level]
    rows = []
    key = f"pc2_to_pc{k_max}"
    for q in used:
        rw = switching_geometry(random_walk, [q], traj_rw, k_max)["pairs"][0]
        rows.append({"peak_step": q.peak_step, "trough_step": q.trough_step, **same_lag_null(gram, q, traj, k_max),
                     "random_walk_abs_cos": rw["abs_cos_backbone"], "random_walk_capture": rw["capture_transverse"][key]})

    def med(k):
        xs = [r[k] for r in rows if r.get(k) is not None]
        return float(np.median(xs)) if xs else None
    why = None if rows else (f"no switch pair above the noise level ({len(pairs)} at it)" if pairs else "no switch pairs")
    return {"pairs": rows, "n_pairs": len(rows), "n_pairs_at_noise_level": len(pairs) - len(used),
            "percentiles": list(SWITCH_PERCENTILES),
            "claim12": {"median_abs_cos_percentile": med("abs_cos_percentile"), "median_abs_cos": med("abs_cos"),
                        "median_random_walk_abs_cos": med("random_walk_abs_cos"), "why_not": why},
            "claim13": {"median_capture_percentile": med("capture_percentile"), "median_capture": med("capture"),
                        "median_random_walk_capture": med("random_walk_capture"), "why_not": why}}


# ---------------------------------------------------------------------------- oscillation tiers
TIER_CUTS = (("A", 3.0), ("B", 2.0))   # skydancerosel/mini_gpt detect_oscillations.py: K_A = 3, K_B = 2 (δ in σ_eval)


def load_eval_noise(run_dir: Path) -> tuple[Path, dict | None, float | None]:
    """RUN/analysis/eval_noise.json (analysis/basin/eval_noise.py): its path, its contents and σ_eval = its
    mean_std; (path, None, None) when the file is missing, a one-line error when it has no mean_std."""
    path = runio.find_analysis_input(Path(run_dir), "eval_noise.json")
    if not path.exists():
        return path, None, None
    noise = runio.read_json(path, "eval-noise file")
    try:
        sigma = float(noise["mean_std"])
    except (KeyError, TypeError, ValueError):
        raise UserError(f"{path} has no mean_std; run analysis/basin/eval_noise.py again") from None
    return path, noise, sigma


def eval_noise_std(run_dir: Path) -> tuple[float | None, str]:
    """σ_eval = mean_std of RUN/analysis/eval_noise.json (analysis/basin/eval_noise.py), or None with the reason."""
    path, noise, sigma = load_eval_noise(run_dir)
    if noise is None:
        return None, f"no {path} (run analysis/basin/eval_noise.py --run-dir {run_dir})"
    if not sigma > 0:
        return None, f"{path} gives σ_eval = {sigma} (p_ood at 0 or 1 where it was measured); no noise unit"
    return sigma, str(path)


def tier_of(z: float) -> str:
    """A (δ ≥ 3σ), B (2σ ≤ δ < 3σ) or C (δ < 2σ), the cut-offs of :data:`TIER_CUTS`."""
    for name, cut in TIER_CUTS:
        if z >= cut:
            return name
    return "C"


def oscillation_tiers(pairs: Sequence[SwitchPair], sigma: float, n_points: int) -> dict:
    """Each switch pair's amplitude δ = p(peak) − p(trough) in units of the evaluation noise σ, its tier, the
    counts per tier, and beside them the null: the white-noise peaks per series of ``n_points`` evaluations
    that clear a prominence of 2σ and of 3σ (:func:`expected_false_peaks`), i.e. how many tier-B and tier-A
    events pure noise would give, and the calibrated noise-level amplitude k*·σ (at most
    :data:`FALSE_PEAK_TARGET` noise peaks per series). δ is a peak-to-trough difference, not a prominence, so
    the null counts are a guide, not an exact false-alarm rate of the tiers."""
    if not sigma > 0:
        raise UserError(f"the tiers need an evaluation noise σ > 0 (got {sigma})")
    rows = []
    for q in pairs:
        z = q.amplitude / sigma
        rows.append({"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind, "delta": q.amplitude,
                     "delta_sigma": z, "tier": tier_of(z), "at_noise_level": q.at_noise_level})
    k_star = calibrated_multiplier(n_points) if n_points >= 3 else None
    return {"sigma": float(sigma), "n_points": int(n_points), "cuts": {k: v for k, v in TIER_CUTS},
            "cuts_source": "skydancerosel/mini_gpt analysis/switching/detect_oscillations.py (K_A = 3, K_B = 2)",
            "pairs": rows, "counts": {t: sum(r["tier"] == t for r in rows) for t in ("A", "B", "C")},
            "null": {"expected_noise_peaks_2sigma": expected_false_peaks(n_points, 2.0),
                     "expected_noise_peaks_3sigma": expected_false_peaks(n_points, 3.0),
                     "calibrated_multiplier": k_star,
                     "noise_level_amplitude": None if k_star is None else k_star * sigma}}


# ---------------------------------------------------------------------------- evaluation noise
def bootstrap_std(correct: np.ndarray, n_boot: int, rng: np.random.Generator) -> float:
    """Standard deviation (ddof = 1) of mean(correct[idx]) over ``n_boot`` resamples idx of the n
    examples drawn with replacement; ≈ sqrt(p(1 − p)/n) for a binomial accuracy p."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 1 or len(correct) == 0:
        raise UserError("the bootstrap needs a non-empty 1-D array of per-example correctness")
    if n_boot < 2:
        raise UserError(f"--n-boot must be >= 2 (got {n_boot})")
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    return float(correct[idx].mean(axis=1).std(ddof=1))


# ---------------------------------------------------------------------------- logit lens
@dataclass
class ProbeReadout:
    """Per layer (embedding output, then each block's output) and per scored example of an eval set."""

    layers: list[str]
    correct: np.ndarray       # (L + 1, n) bool: greedy prediction right at every probe position
    p_codeword: np.ndarray    # (L + 1, n) softmax probability of the target, averaged over its probe positions

    @property
    def accuracy(self) -> np.ndarray:
        return self.correct.mean(axis=1)

    @property
    def mean_p_codeword(self) -> np.ndarray:
        return self.p_codeword.mean(axis=1)


def residual_stream(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """([h_0, h_1, …, h_L], logits) of one forward pass: h_0 the embedding output entering block 0,
    h_ℓ the output of block ℓ−1, captured with hooks so that the model's own forward is what runs."""
    hidden: list[torch.Tensor] = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: hidden.append(args[0]))]
    hooks += [b.register_forward_hook(lambda m, args, out: hidden.append(out)) for b in model.blocks]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return hidden, logits


def lens_logits(model: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """The logit lens: the final LayerNorm and the (tied) head applied to residual-stream states h."""
    return model.lm_head(model.ln_f(h))


@torch.no_grad()
def probe_readout(model: torch.nn.Module, batch: Batch, batch_size: int,
                  device: torch.device | str = "cpu") -> ProbeReadout:
    """Logit-lens read-out of the codeword at every layer, on the probe positions of ``batch``.

    For layer ℓ and example i with probe positions P_i (targets y, probe mask, not ignored):
    correct[ℓ, i] = [argmax lens_logits(h_ℓ)[p] = y_p for all p ∈ P_i] and p_codeword[ℓ, i] =
    mean_{p ∈ P_i} softmax(lens_logits(h_ℓ)[p])[y_p]; examples without a scored position are left out,
    as in :func:`training.core.losses.probe_stats`. The last layer is the model's output, so
    ``accuracy[-1]`` is the p_ood that training logs (for the 'probe_ood' set).
    """
    was_training = model.training
    model.eval()
    n_layers = len(model.blocks) + 1
    correct, prob = [[] for _ in range(n_layers)], [[] for _ in range(n_layers)]
    try:
        for a in range(0, len(batch.x), batch_size):
            b = Batch(batch.x[a:a + batch_size], batch.y[a:a + batch_size],
                      batch.probe_mask[a:a + batch_size]).to(torch.device(device))
            probe = b.probe_mask & (b.y != IGNORE)
            rows, cols = probe.nonzero(as_tuple=True)
            if len(rows) == 0:
                continue
            hidden, _ = residual_stream(model, b.x)
            target = b.y[rows, cols]
            n_pos = torch.bincount(rows, minlength=len(b.x))
            scored = n_pos > 0
            for layer, h in enumerate(hidden):
                z = lens_logits(model, h[rows, cols]).float()
                hit = (z.argmax(-1) == target).double()
                p = torch.softmax(z, dim=-1).gather(1, target[:, None])[:, 0].double()
                n_hit = torch.bincount(rows, weights=hit, minlength=len(b.x))
                p_sum = torch.bincount(rows, weights=p, minlength=len(b.x))
                correct[layer].append((n_hit == n_pos)[scored].cpu().numpy())
                prob[layer].append((p_sum[scored] / n_pos[scored]).cpu().numpy())
    finally:
        model.train(was_training)
    if not correct[0]:
        raise UserError("the evaluation set has no scored probe position")
    layers = ["embed"] + [f"block_{i}" for i in range(n_layers - 1)]
    return ProbeReadout(layers, np.stack([np.concatenate(c) for c in correct]),
                        np.stack([np.concatenate(p) for p in prob]))
