"""The symmetry study's control arms read against its README's claims (evasilverstein/symmetry-breaking-files;
arXiv 2601.22257): bQ + bV beside bQ alone, zero-mean bQ beside the default mean, the learned bQ's Noether charge.

Pure functions of the study's summary rows (training/studies/symmetry_study.py builds them and calls these; this
module imports nothing of it, so the study's file stays small):

* :func:`curve_noise` — the null of a loss difference at one seed: the scatter of a run's late validation losses
  about a straight line (what two evaluations of the same run differ by without any effect of the arm; it knows
  nothing of seed-to-seed spread, which needs more seeds);
* :func:`arm_contrasts` — per optimizer, arm − arm of the final and best validation loss beside that null and the
  published difference;
* :func:`arm_claims` — the three claims, each with its statistic, its null, its number of seeds and its verdict;
* :func:`arms_report` — their section of report.md.
"""
from __future__ import annotations

import math

import numpy as np

# (arm, reference arm): "arm − reference"; negative = the arm has the lower loss
CONTRASTS = (("bq_bv", "bq"), ("bq_bv", "sym"), ("bq", "bq_zero"), ("bq_learned", "bq"), ("bq_learned", "sym"))
NULL_K = 2.0           # a difference reads as an effect beyond max(effect, NULL_K × the curve-noise sd)
CHARGE_FACTOR = 10.0   # conserved: the learned arm's charge within this factor of the symmetric arm's rounding level


def curve_noise(val_losses) -> float | None:
    """Residual sd (ddof 2) of the last max(4, n/4) validation losses about their least-squares line; None with
    fewer than 4 finite values."""
    v = np.asarray([x for x in (val_losses or []) if x is not None and math.isfinite(x)], dtype=np.float64)
    m = max(4, v.size // 4)
    if v.size < 4:
        return None
    y = v[-m:]
    t = np.arange(m, dtype=np.float64)
    resid = y - np.polyval(np.polyfit(t, y, 1), t)
    return float(math.sqrt((resid @ resid) / (m - 2)))


def reading(delta: float, null_sd: float | None, effect: float) -> str:
    """lower | higher | no clear effect, against max(effect, NULL_K·null_sd)."""
    thr = max(effect, NULL_K * (null_sd or 0.0))
    return "lower" if delta < -thr else ("higher" if delta > thr else "no clear effect")


def arm_contrasts(rows: list[dict], seed_rows: dict, effect: float) -> list[dict]:
    """Per optimizer and :data:`CONTRASTS` pair whose two runs completed: Δ final and Δ best (arm − reference),
    the null sd √(σ_a² + σ_b²) of :func:`curve_noise`, the reading and the published Δ where there is one."""
    by = {(r["optimizer"], r["arm"]): r for r in rows}
    out = []
    for opt in dict.fromkeys(r["optimizer"] for r in rows):
        for arm, ref in CONTRASTS:
            a, b = by.get((opt, arm)), by.get((opt, ref))
            if not a or not b:
                continue
            c = {"optimizer": opt, "arm": arm, "reference": ref}
            if a["state"] != "completed" or b["state"] != "completed" or a["final_val_loss"] is None \
                    or b["final_val_loss"] is None:
                out.append({**c, "final": None, "reason": f"{arm} {a['state']}, {ref} {b['state']}"})
                continue
            na, nb = a.get("curve_noise"), b.get("curve_noise")
            null = math.sqrt(na * na + nb * nb) if na is not None and nb is not None else None
            d = a["final_val_loss"] - b["final_val_loss"]
            seed = seed_rows.get(opt) or {}
            published = round(seed[arm] - seed[ref], 3) if arm in seed and ref in seed else None
            out.append({**c, "final": d, "best": a["best_val_loss"] - b["best_val_loss"], "null_sd": null,
                        "reading": reading(d, null, effect), "published": published, "reason": None})
    return out


def _readings(contrasts: list[dict], arm: str, ref: str) -> list[dict]:
    return [c for c in contrasts if c["arm"] == arm and c["reference"] == ref and c.get("final") is not None]


def _loss_claim(claim: str, contrasts: list[dict], arm: str, ref: str, n_seeds: int, effect: float,
                extra: str = "") -> dict | None:
    cs = _readings(contrasts, arm, ref)
    if not cs:
        return None
    supports = [c["optimizer"] for c in cs if c["reading"] == "lower"]
    contra = [c["optimizer"] for c in cs if c["reading"] == "higher"]
    flat = [c["optimizer"] for c in cs if c["reading"] == "no clear effect"]
    obs = "; ".join(f"{c['optimizer']} {c['final']:+.3f} final ({c['best']:+.3f} best, null sd "
                    f"{_g(c['null_sd'])}: {c['reading']}"
                    + (f"; published {c['published']:+.3f}" if c["published"] is not None else "") + ")" for c in cs)
    word = "; ".join(f"{w} {', '.join(o)}" for w, o in (("supported by", supports), ("contradicted by", contra),
                                                         ("no clear effect for", flat)) if o)
    return {"claim": claim, "statistic": f"final validation loss, {arm} − {ref}, per optimizer (negative supports)",
            "null": f"no effect: |Δ| within max({effect}, {NULL_K:g} × √(σ_a² + σ_b²)), σ the residual sd of each run's "
                    "late validation losses about a line (evaluation-to-evaluation scatter; seed-to-seed spread "
                    "needs more seeds)",
            "seeds": n_seeds, "observed": obs + extra,
            "verdict": f"{word} at this seed; " + _across(n_seeds), "rows": cs}


def _across(n_seeds: int) -> str:
    return "inconclusive (1 seed)" if n_seeds == 1 else "see the claims ledger for the verdict across seeds"


def _charge_claim(rows: list[dict], n_seeds: int) -> dict | None:
    by = {(r["optimizer"], r["arm"]): r for r in rows}
    key = "ecd_velocity_qk_layer_charge_rel_max"
    learned = [(o, r) for (o, a), r in by.items() if a == "bq_learned" and r.get(key) is not None]
    if not learned:
        return None
    parts, verdicts = [], []
    for o, r in learned:
        sym, rnd = (by.get((o, "sym")) or {}).get(key), (by.get((o, "bq")) or {}).get(key)
        held = sym is not None and r[key] <= CHARGE_FACTOR * sym
        verdicts.append(f"{o}: {'conserved' if held else 'NOT conserved' if sym is not None else 'no null run'}")
        parts.append(f"{o}: max relative layer QK charge {r[key]:.1e} with the learned bQ, {_g(sym, '.1e')} symmetric "
                     f"(the rounding level of a conserved charge), {_g(rnd, '.1e')} with the random bQ; per-head QK "
                     f"charge {_g(r.get('ecd_velocity_qk_charge_rel_max'), '.1e')} (the shared bias couples the heads: "
                     "only their common rotation stays a symmetry)")
    return {"claim": "a learned bQ keeps the symmetry: its Noether charge stays conserved "
                     "(symmetry-breaking-files README: 'if learned, the symmetry persists')",
            "statistic": "max over checkpoints of ‖Σ_h antisym(Θ_Q Π_Qᵀ + Θ_K Π_Kᵀ) + antisym(b_Q π_bᵀ)‖ / (‖Θ‖‖Π‖), Π "
                         "ECD's velocity (global projection, ν = 0; training in float32)",
            "null": f"conserved: within {CHARGE_FACTOR:g}× the same optimizer's symmetric run (float32 rounding); the "
                    "random-bQ run shows a broken charge's size",
            "seeds": n_seeds, "observed": "; ".join(parts),
            "verdict": "; ".join(verdicts) + f" at this seed ({n_seeds} seed{'s' if n_seeds != 1 else ''}; the float64 "
                       "test tests/test_symmetry_arms.py pins J(t) = J(0) to 1e-10)", "rows": [r for _, r in learned]}


def arm_claims(rows: list[dict], contrasts: list[dict], effect: float, n_seeds: int = 1) -> list[dict]:
    """The README's three claims these arms test, each with statistic, null, seeds, observation and verdict."""
    z = {(r["optimizer"], r["arm"]): r.get("bq_z_mean_square") for r in rows}
    zs = [f"{o}: bq {_zs(z[(o, 'bq')])}, bq_zero {_zs(z[(o, 'bq_zero')])}"
          for o in dict.fromkeys(r["optimizer"] for r in rows) if z.get((o, "bq")) and z.get((o, "bq_zero"))]
    zero_extra = (". Alignment z of mean cos²(W_K e, ⟨bQ⟩) per layer (the README: the nonzero mean is needed for "
                  "the alignment structure; bq_zero's ⟨bQ⟩ is the mean of zero-mean draws): "
                  + "; ".join(zs)) if zs else ""
    claims = [_loss_claim("bQ + bV beats bQ alone (symmetry-breaking-files' headline table: ECD 3.847 → 3.347)",
                          contrasts, "bq_bv", "bq", n_seeds, effect),
              _loss_claim("a nonzero bQ mean works better than a zero mean (symmetry-breaking-files README)",
                          contrasts, "bq", "bq_zero", n_seeds, effect, zero_extra),
              _charge_claim(rows, n_seeds)]
    return [c for c in claims if c is not None]


def arms_report(contrasts: list[dict], claims: list[dict]) -> list[str]:
    if not contrasts and not claims:
        return []
    lines = ["", "## Control arms: bQ + bV, zero-mean bQ, learned bQ", "",
             "Final-loss difference arm − reference per optimizer (negative: the arm is lower), the best-loss "
             f"difference, the null sd (√(σ_a² + σ_b²), σ the late-curve residual sd of each run) and the reading "
             f"(an effect needs |Δ| above max(no-clear-effect band, {NULL_K:g} null sd)); symmetry-breaking-files' "
             "published difference where it has one (124M, min single-batch validation loss).", "",
             "| optimizer | contrast | Δ final | Δ best | null sd | reading | published Δ |",
             "|---|---|---|---|---|---|---|"]
    for c in contrasts:
        if c.get("final") is None:
            lines.append(f"| {c['optimizer']} | {c['arm']} − {c['reference']} | – | – | – | {c['reason']} | – |")
            continue
        lines.append(f"| {c['optimizer']} | {c['arm']} − {c['reference']} | {c['final']:+.3f} | {c['best']:+.3f} | "
                     f"{_g(c['null_sd'])} | {c['reading']} | {_g(c['published'], '+.3f')} |")
    lines += ["", "### Claims of the control arms", ""]
    for c in claims:
        lines.append(f"- **{c['claim']}**: {c['observed']}. Statistic: {c['statistic']}. Null: {c['null']}. "
                     f"Seeds: {c['seeds']}. Verdict: {c['verdict']}.")
    return lines


def _zs(values) -> str:
    return ", ".join(f"{v:+.0f}" for v in values)


def _g(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)
