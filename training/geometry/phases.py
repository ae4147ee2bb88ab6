"""Phases of the backbone: does the drift direction reorient between phases of training?

arXiv 2602.23696 (abstract, §3.2) says the backbone "reorients gradually across phases, particularly
following objective reweighting" (the λ switch). This module measures that from a run's Gram, beside
what a structureless trajectory gives for the same windows:

* the **backbone of a phase** [start, end]: the raw uncentred PC1 of the drifts θ(t) − θ(start) over the
  window's checkpoints (the window's own displacement, so a later phase is not dominated by the drift it
  inherited), with its explained fraction and |cos| with the run's global backbone;
* the **angle between two phases' backbones**, arccos |cos(v_A, v_B)| in degrees (a PC's sign is a
  convention, so 0°–90°);
* the **rotation curve** ρ(t) = |cos(v_b[0, t], v_b[0, T])|: the backbone of the trajectory up to t (drifts
  from the first checkpoint) against the whole run's, for every checkpoint from the third on.

Every number is in-span algebra on the T × T Gram (exact), and the same functions applied to the run's
random-walk null (:func:`training.geometry.nulls.null_of`: the run's own increment norms, D → ∞) and, when the
Gram carries its origin row and the run's config is given, to its weight-decayed walk, give the null values
for the same windows. For an isotropic walk, windows that do not overlap have orthogonal backbones (90°):
so a small angle between phases is structure, and a reorientation is judged by how far the run's angle sits
*below* the null's, not by its size alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from training.core.errors import UserError
from training.geometry.nulls import null_grams
from training.geometry.trajectory import Gram, cos_span, pca

MIN_WINDOW_CHECKPOINTS = 3        # a window's PC1 from fewer than two drift rows is 1 by construction


@dataclass(frozen=True)
class Window:
    name: str
    start: int
    end: int


def lambda_switch(cfg) -> int | None:
    """The step where the probe weight changes, or None when the run has no switch inside it."""
    if cfg.lambda_probe2 is None or cfg.lambda_probe2 == cfg.lambda_probe or not 0 < cfg.lambda_step < cfg.steps:
        return None
    return int(cfg.lambda_step)


def lr_peak(cfg) -> int | None:
    """The step where the learning rate peaks (end of warmup), or None when it peaks at the start or end."""
    return int(cfg.warmup) if 0 < cfg.warmup < cfg.steps else None


def default_windows(cfg, first: int, last: int, split: str = "lambda") -> list[Window]:
    """The two phases either side of the λ switch (``split="lambda"``) or of the LR peak (``"lr_peak"``);
    empty when the run has no such step strictly inside [first, last]."""
    at = lambda_switch(cfg) if split == "lambda" else lr_peak(cfg)
    label = "λ switch" if split == "lambda" else "LR peak"
    if at is None or not first < at < last:
        return []
    return [Window(f"before the {label}", first, at), Window(f"after the {label}", at, last)]


def parse_window(text: str) -> Window:
    """``START:END`` or ``NAME=START:END`` (steps) -> a Window; bad syntax is one error line."""
    name, _, span = text.rpartition("=")
    try:
        a, b = (int(v) for v in span.split(":"))
    except ValueError:
        raise UserError(f"--window expects START:END or NAME=START:END in steps, got '{text}'") from None
    return Window(name or f"{a}:{b}", a, b)


def window_steps(steps: Sequence[int], w: Window) -> list[int]:
    """The checkpoints inside [start, end]; a window outside the run or reversed is an error."""
    steps = sorted(steps)
    if w.start >= w.end:
        raise UserError(f"window {w.name}: start {w.start} must be before end {w.end}")
    if w.start < steps[0] or w.end > steps[-1]:
        raise UserError(f"window {w.name} [{w.start}, {w.end}] lies outside the run's checkpoints "
                        f"[{steps[0]}, {steps[-1]}]")
    return [s for s in steps if w.start <= s <= w.end]


def _backbone(gram: Gram, steps: list[int]) -> tuple[np.ndarray, float]:
    p = pca(gram, steps, ref=steps[0], k=1)
    return p.coeffs[0], float(p.explained_variance_ratio[0])


def _angle(c: float) -> float:
    return math.degrees(math.acos(min(1.0, abs(c))))


def phase_reading(gram: Gram, windows: Sequence[Window]) -> dict:
    """Backbones of ``windows``, the angle between every pair and the rotation curve, from one Gram (a run's or
    a null's). Windows with fewer than :data:`MIN_WINDOW_CHECKPOINTS` checkpoints are kept with a reason."""
    glob, _ = _backbone(gram, gram.steps)
    rows, vecs = [], {}
    for w in windows:
        ws = window_steps(gram.steps, w)
        row = {"name": w.name, "start": w.start, "end": w.end, "steps": ws, "n_checkpoints": len(ws)}
        if len(ws) < MIN_WINDOW_CHECKPOINTS:
            row.update(pc1=None, abs_cos_global=None,
                       reason=f"{len(ws)} checkpoint(s) in the window; a phase backbone needs {MIN_WINDOW_CHECKPOINTS}")
        else:
            v, share = _backbone(gram, ws)
            vecs[w.name] = v
            row.update(pc1=share, abs_cos_global=abs(cos_span(gram, v, glob)), reason=None)
        rows.append(row)
    pairs = []
    names = [w.name for w in windows]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a in vecs and b in vecs:
                c = abs(cos_span(gram, vecs[a], vecs[b]))
                pairs.append({"between": [a, b], "abs_cos": c, "angle_deg": _angle(c)})
            else:
                pairs.append({"between": [a, b], "abs_cos": None, "angle_deg": None,
                              "reason": "a window has too few checkpoints"})
    rot_steps, rho = [], []
    for k in range(MIN_WINDOW_CHECKPOINTS - 1, len(gram.steps)):
        v, _ = _backbone(gram, gram.steps[:k + 1])
        rot_steps.append(gram.steps[k])
        rho.append(abs(cos_span(gram, v, glob)))
    return {"windows": rows, "pairs": pairs, "rotation": {"steps": rot_steps, "rho": rho}}


def phases_beside_nulls(gram: Gram, windows: Sequence[Window], cfg=None) -> dict:
    """:func:`phase_reading` of the run, of its random-walk null and (with ``cfg`` and an origin row) of its
    weight-decayed walk, over the same steps; and per pair the excess of the null's angle over the run's
    (positive = the run's phases share their direction more than a structureless walk's do)."""
    gram, walk, decayed, why = null_grams(gram, cfg)
    out = {"observed": phase_reading(gram, windows), "random_walk": phase_reading(walk, windows),
           "weight_decayed_walk": phase_reading(decayed, windows) if decayed is not None else None,
           "weight_decayed_reason": why}
    for i, p in enumerate(out["observed"]["pairs"]):
        n = out["random_walk"]["pairs"][i]
        p["random_walk_angle_deg"] = n["angle_deg"]
        p["angle_below_null_deg"] = (n["angle_deg"] - p["angle_deg"]
                                     if p["angle_deg"] is not None and n["angle_deg"] is not None else None)
        if out["weight_decayed_walk"] is not None:
            p["weight_decayed_walk_angle_deg"] = out["weight_decayed_walk"]["pairs"][i]["angle_deg"]
    return out
