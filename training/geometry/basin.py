"""Basin tests (the mini_gpt README's "B-series": skydancerosel/mini_gpt's ``analysis/basin/B1_basin_test.py`` and
``analysis/basin/B6_basin_depth.py``): relaxation, basin depth, drift table,
switching alignment and the dimension of the switching manifold. Every formula of the basin scripts
lives here once.

**Relaxation protocol R.** From given weights, a fresh optimizer built exactly as in training (the
run's optimizer, parameter groups, betas, eps and weight decay) runs ``steps`` updates at a constant
learning rate with the probe weight ``lam``, the run's gradient clip, batches of the run's micro-batch
size and no accumulation. The paper's protocol is 300 steps at lr 6e-4 with λ = 4 (twice its initial
λ = 2); at another preset the steps and the learning rate follow :mod:`training.studies.common`'s scaling
rule and λ is twice the preset's initial λ. Batches come from a stream of their own,
``task.sample_batch([seed, RELAX_TAG, *call_key, i])``: the same seed and key give the same numbers and
no training batch is replayed (training keys are ``[data_seed, step, micro]`` and no run reaches step
RELAX_TAG). The relaxed model is evaluated on the fixed OOD probe set only: p_ood, nll_ood, lm_ood,
and the regime is "probe" when p_ood >= 0.6 and nll_ood <= 2.0, else "lm".

**Perturbation.** W' = W + σ·rms(W)·Z for every trunk matrix W, Z ~ N(0, I) drawn on the CPU from a
torch generator seeded with (seed, step, σ code, trial): a relative perturbation of size σ per
tensor, ‖W' − W‖ ≈ σ·‖W‖ (the convention of mini_gpt's ``B6_basin_depth.py``, not the ε·rms·unit vector of the directional probe
in its ``B1_basin_test.py``, whose relative size is only ~ε/sqrt(n)).

**Basin depth.** D_σ = mean p_ood after perturbation of size σ and relaxation; σ½ is the linear
interpolation of the first σ at which D_σ falls below D_0/2.

**Drift table, switching alignment, manifold dimension.** Pure Gram algebra on the trajectory (see
:mod:`training.geometry.trajectory`): distances between peak and trough checkpoints, the alignment of each
checkpoint-to-checkpoint update with a switching direction, and the spectrum of the cosine Gram of
the switching directions compared with two nulls -- isotropic random directions in the same
dimension (an exact Bartlett draw of their n×n Gram) and displacements of the same trajectory over
the same lags at times without a switch.
"""
from __future__ import annotations

import contextlib
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from training.core import runio
from training.core.batch import Batch
from training.core.config import Config
from training.core.data import LMProbeTask
from training.core.errors import UserError
from training.core.model import trunk_parameters
from training.core.optim import build_optimizer, optimizer_step, set_lr
from training.core.scaling import reheat_defaults, scale_lr, scale_step
from training.core.trainer import autocast_context, forward_backward
from training.geometry.gradients import noise_floor
from training.geometry.stats import pearson
from training.geometry.switching import MANIFEST, SwitchPair, read_manifest, switch_coeffs
from training.geometry.trajectory import Gram, k_at, update_alignment

RELAX_TAG = 0x72656C78          # "relx": relaxation batches use keys [seed, RELAX_TAG, *call_key, i]
PAPER_RELAX_STEPS = 300
PAPER_RELAX_LR = 6e-4
PROBE_P_OOD = 0.6               # regime "probe": p_ood >= PROBE_P_OOD and nll_ood <= PROBE_NLL_OOD
PROBE_NLL_OOD = 2.0
PAPER_SIGMAS = (0.0, 0.01, 0.03, 0.10, 0.30)
SMALL_MODEL_SIGMAS = (0.0, 1.0, 3.0, 10.0)   # test / quick models keep p_ood up to σ ≈ 3 (see basin_depth.py)


# ---------------------------------------------------------------------------- relaxation protocol R
@dataclass(frozen=True)
class RelaxSettings:
    steps: int
    lr: float
    lam: float
    batch_size: int
    grad_clip: float
    p_threshold: float = PROBE_P_OOD
    nll_threshold: float = PROBE_NLL_OOD

    def as_dict(self) -> dict:
        return asdict(self)


def relax_defaults(cfg: Config, steps: int | None = None, lr: float | None = None, lam: float | None = None,
                   p_threshold: float = PROBE_P_OOD, nll_threshold: float = PROBE_NLL_OOD) -> RelaxSettings:
    """Protocol R at the scale of ``cfg``'s preset (the paper's values at ``paper``), with overrides."""
    s = RelaxSettings(steps=scale_step(cfg, PAPER_RELAX_STEPS) if steps is None else int(steps),
                      lr=scale_lr(cfg, PAPER_RELAX_LR) if lr is None else float(lr),
                      lam=float(reheat_defaults(cfg)["lam"]) if lam is None else float(lam),
                      batch_size=cfg.batch_size, grad_clip=cfg.grad_clip,
                      p_threshold=float(p_threshold), nll_threshold=float(nll_threshold))
    if s.steps < 0 or not s.lr > 0 or s.lam < 0:
        raise UserError(f"relaxation needs steps >= 0, lr > 0 and lambda >= 0 (got {s.steps}, {s.lr}, {s.lam})")
    return s


def default_sigmas(cfg: Config) -> tuple[float, ...]:
    """The paper's σ grid at ``paper``; a wider one for the small presets, whose basins are far wider."""
    return PAPER_SIGMAS if cfg.preset == "paper" else SMALL_MODEL_SIGMAS


def relax_batch(task: LMProbeTask, seed: int, call_key: Sequence[int], i: int, batch_size: int) -> Batch:
    """Mini-batch ``i`` of one relaxation: a training-distribution batch from its own seeded stream."""
    return task.sample_batch([int(seed), RELAX_TAG, *[int(k) for k in call_key], int(i)], batch_size=batch_size)


def regime(p_ood: float, nll_ood: float, settings: RelaxSettings) -> str:
    return "probe" if p_ood >= settings.p_threshold and nll_ood <= settings.nll_threshold else "lm"


@torch.no_grad()
def probe_eval(model: torch.nn.Module, task: LMProbeTask, device: torch.device | str, name: str = "probe_ood",
               amp: Callable = contextlib.nullcontext) -> dict[str, float]:
    """p, nll and lm of one fixed probe evaluation set: training's evaluate() restricted to that set."""
    tag = {"probe_in": "in", "probe_ood": "ood"}[name]
    m = task.evaluate(model, torch.device(device), amp, sets=(name,))
    return {"p": m[f"p_{tag}"], "nll": m[f"nll_{tag}"], "lm": m[f"lm_{tag}"]}


def relax(model: torch.nn.Module, cfg: Config, task: LMProbeTask, settings: RelaxSettings, seed: int,
          call_key: Sequence[int], device: torch.device | str = "cpu", trace_every: int = 0) -> dict:
    """Run protocol R on ``model`` in place (it must already be on ``device``) and evaluate it.

    Returns p_ood, nll_ood, lm_ood, the regime, the number of updates done and whether a non-finite
    loss stopped the relaxation early (the offending update is not applied). With ``trace_every`` = k > 0
    the OOD probe set is also evaluated before the first update and after every k-th update and the last
    one (``trace``: [{"step", "p_ood", "nll_ood"}]); evaluation draws no random numbers and restores the
    training mode, so the updates are those of the untraced relaxation.
    """
    if trace_every < 0:
        raise UserError(f"the trace interval must be >= 0 (got {trace_every})")
    device = torch.device(device)
    amp = lambda: autocast_context(cfg, device)  # noqa: E731
    optimizer, spec = build_optimizer(model, cfg.replace(lr=settings.lr), device)
    set_lr(optimizer, settings.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    t0 = time.monotonic()
    done, diverged, last_loss = 0, False, None
    trace: list[dict] = []

    def point(i: int) -> None:
        m = probe_eval(model, task, device, "probe_ood", amp)
        trace.append({"step": i, "p_ood": m["p"], "nll_ood": m["nll"]})

    if trace_every:
        point(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([int(seed), RELAX_TAG, *map(int, call_key)])
                              .generate_state(1, np.uint64)[0] & 0x7FFFFFFFFFFFFFFF))
        model.train()
        for i in range(settings.steps):
            def gradients(i=i) -> dict:
                return forward_backward(
                    model, optimizer, lambda m: relax_batch(task, seed, call_key, i, settings.batch_size).to(device),
                    1, settings.lam, settings.grad_clip, params, amp)

            sums, finite = optimizer_step(optimizer, spec, gradients)
            if not finite:
                diverged = True
                break
            done += 1
            last_loss = float(sums["loss"])
            if trace_every and (done % trace_every == 0 or done == settings.steps):
                point(done)
    optimizer.zero_grad(set_to_none=True)
    m = probe_eval(model, task, device, "probe_ood", amp)
    out = {"p_ood": m["p"], "nll_ood": m["nll"], "lm_ood": m["lm"], "regime": regime(m["p"], m["nll"], settings),
           "steps_done": done, "diverged": diverged, "last_train_loss": last_loss,
           "seconds": round(time.monotonic() - t0, 3)}
    if trace_every:
        out["trace"] = trace
    return out


def load_progress(path: Path, key: dict) -> tuple[list[dict], str | None]:
    """The records of a resumable analysis's progress file when it was written with the same ``key`` (run, protocol,
    seed, device), else none and why (other settings, unreadable)."""
    if not path.exists():
        return [], None
    try:
        prog = runio.read_json(path, "progress file")
        if prog.get("settings") == key:
            return list(prog["records"]), None
        return [], "the progress file was written with other settings; starting over"
    except (UserError, AttributeError, KeyError, TypeError):
        return [], "the progress file is unreadable; starting over"


# ---------------------------------------------------------------------------- B1 recovery, B5 threshold map
PAPER_RECOVERY_STEPS = 1000     # skydancerosel/mini_gpt's B1_basin_test.py: 1000 updates, p_ood every 50
PAPER_RECOVERY_EVERY = 50
# the same file's probe weight: 8.0, twice protocol R's 4.0 (and twice the paper's λ after the switch, 4.0), so the
# raised λ is a raise at every start checkpoint, after the λ switch too
RECOVERY_LAM_OVER_R = 2.0
ESCAPE_THRESHOLD = 0.4          # the same file's B5 map: "escape" = the first evaluation with p_ood > 0.4


def recovery_defaults(cfg: Config, steps: int | None = None, lr: float | None = None, lam: float | None = None,
                      every: int | None = None, threshold: float = PROBE_P_OOD) -> tuple[RelaxSettings, int]:
    """B1's recovery protocol at the scale of ``cfg``'s preset: protocol R's optimizer and learning rate, the raised
    λ of the reference (twice protocol R's λ, i.e. four times the preset's initial λ: 8 at the paper's scale), for
    1000 paper steps with p_ood every 50 (scaled), and the interval."""
    if lam is None:
        lam = RECOVERY_LAM_OVER_R * float(reheat_defaults(cfg)["lam"])
    s = relax_defaults(cfg, scale_step(cfg, PAPER_RECOVERY_STEPS) if steps is None else steps, lr, lam,
                       p_threshold=threshold)
    k = scale_step(cfg, PAPER_RECOVERY_EVERY) if every is None else int(every)
    if k < 1:
        raise UserError(f"the evaluation interval must be >= 1 (got {k})")
    return s, k


def recovery_summary(steps: Sequence[int], p_ood: Sequence[float], threshold: float, sigma: float | None = None,
                     strict: bool = False) -> dict:
    """What a p_ood series that starts at ``steps[0]`` reaches: the start value p0, the maximum and its (first)
    step, the gain max − p0, the first step with p_ood ≥ ``threshold`` (> with ``strict``; None if never; 0 when
    the start is already there) and the final value. With the evaluation noise σ: the gain a series that never
    moves would show, σ·E[max of n normals] over its n evaluations (start included), and the gain above it in σ."""
    s, p = [int(x) for x in steps], [float(x) for x in p_ood]
    if not s or len(s) != len(p):
        raise UserError("a recovery series needs equally many steps and p_ood values, at least one")
    if any(b <= a for a, b in zip(s, s[1:])):
        raise UserError("the steps of a recovery series must increase")
    i_max = int(np.argmax(p))
    hit = next((i for i, v in enumerate(p) if (v > threshold if strict else v >= threshold)), None)
    out = {"start_step": s[0], "start_p_ood": p[0], "max_p_ood": p[i_max], "max_step": s[i_max],
           "gain": p[i_max] - p[0], "threshold": float(threshold), "rule": ">" if strict else ">=",
           "reached": hit is not None, "steps_to_threshold": None if hit is None else s[hit] - s[0],
           "final_p_ood": p[-1], "n_evals": len(p), "noise_std": sigma, "noise_bias": None, "gain_over_bias_sigma": None}
    if sigma is not None and sigma > 0:
        from training.geometry.nulls import reentry_noise_bias
        out["noise_bias"] = reentry_noise_bias(sigma, len(p))
        out["gain_over_bias_sigma"] = (out["gain"] - out["noise_bias"]) / sigma
    return out


def threshold_map(series: Sequence[dict], threshold: float = ESCAPE_THRESHOLD, sigma: float | None = None,
                  target: float = PROBE_P_OOD) -> dict:
    """B5, the learning-rate threshold map: for restarts from one checkpoint at several learning rates (``series``:
    [{"lr", "steps", "p_ood", ...}]), per learning rate the maximum p_ood and its step, the first escape
    (p_ood > ``threshold``) and the first step at ``target`` (≥), beside the noise bias of the maximum; then the
    smallest learning rate that escapes and the largest that does not (the threshold lies between them when the
    escapes are monotone in the learning rate, which ``monotone`` says)."""
    if not series:
        raise UserError("the threshold map needs at least one learning rate")
    rows = []
    for r in sorted(series, key=lambda r: float(r["lr"])):
        esc = recovery_summary(r["steps"], r["p_ood"], threshold, sigma, strict=True)
        tgt = recovery_summary(r["steps"], r["p_ood"], target)
        rows.append({**{k: v for k, v in r.items() if k not in ("steps", "p_ood")}, "lr": float(r["lr"]),
                     "start_p_ood": esc["start_p_ood"], "max_p_ood": esc["max_p_ood"], "max_step": esc["max_step"],
                     "gain": esc["gain"], "escaped": esc["reached"], "first_escape_step": esc["steps_to_threshold"],
                     "first_step_at_target": tgt["steps_to_threshold"], "final_p_ood": esc["final_p_ood"],
                     "n_evals": esc["n_evals"], "noise_bias": esc["noise_bias"],
                     "gain_over_bias_sigma": esc["gain_over_bias_sigma"]})
    esc = [r["lr"] for r in rows if r["escaped"]]
    stay = [r["lr"] for r in rows if not r["escaped"]]
    flags = [r["escaped"] for r in rows]
    return {"threshold": float(threshold), "target": float(target), "noise_std": sigma, "rows": rows,
            "lowest_escaping_lr": min(esc) if esc else None, "highest_non_escaping_lr": max(stay) if stay else None,
            "monotone": flags == sorted(flags)}


# ---------------------------------------------------------------------------- perturbation
def sigma_code(sigma: float) -> int:
    """A stable integer for σ (σ·1e6 rounded): seeds do not depend on the position of σ in a grid."""
    return int(round(float(sigma) * 1_000_000))


def perturbation_seed(seed: int, step: int, sigma: float, trial: int) -> int:
    ss = np.random.SeedSequence([int(seed), int(step), sigma_code(sigma), int(trial)])
    return int(ss.generate_state(1, np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


@torch.no_grad()
def perturb_trunk(model: torch.nn.Module, sigma: float, generator: torch.Generator) -> list[dict]:
    """W ← W + σ·rms(W)·Z for each trunk matrix (canonical order), Z ~ N(0, I) from ``generator`` (CPU).

    σ = 0 leaves the weights untouched. Returns per tensor its name, size and rms(W) before the change.
    """
    if not sigma >= 0:
        raise UserError(f"perturbation sizes must be >= 0 (got {sigma})")
    out = []
    for name, w in trunk_parameters(model):
        rms = float(w.detach().double().pow(2).mean().sqrt())
        out.append({"name": name, "numel": w.numel(), "rms": rms})
        if sigma > 0:
            z = torch.randn(w.shape, generator=generator, dtype=torch.float32)
            w.add_(z.to(w.device, w.dtype), alpha=sigma * rms)
    return out


def sigma_half(sigmas: Sequence[float], means: Sequence[float]) -> float:
    """σ at which the mean p_ood first falls below half its σ = 0 value, interpolated linearly between
    the grid points around that crossing; inf if it never does, 0 if the σ = 0 value is already 0."""
    s, d = np.asarray(sigmas, dtype=float), np.asarray(means, dtype=float)
    if s.ndim != 1 or s.shape != d.shape or len(s) == 0:
        raise UserError("sigma_half needs equally long, non-empty σ and D_σ sequences")
    order = np.argsort(s)
    s, d = s[order], d[order]
    if s[0] != 0.0:
        raise UserError("the σ grid must contain 0 (the unperturbed reference D_0)")
    half = d[0] / 2.0
    if d[0] <= 0:
        return 0.0
    for i in range(1, len(s)):
        if d[i] < half:
            return float(s[i - 1] + (d[i - 1] - half) * (s[i] - s[i - 1]) / (d[i - 1] - d[i]))
    return math.inf


def depth_summary(sigmas: Sequence[float], trials: dict[float, list[dict]]) -> list[dict]:
    """Per σ: D_σ = mean p_ood over the trials, its std (ddof 1) and standard error, the mean nll_ood and
    lm_ood, and the fraction of trials in the probe regime."""
    out = []
    for s in sigmas:
        rows = trials.get(s, [])
        p = np.array([r["p_ood"] for r in rows], dtype=float)
        n = len(rows)
        std = float(p.std(ddof=1)) if n > 1 else None
        out.append({"sigma": float(s), "n_trials": n, "mean_p_ood": float(p.mean()) if n else None,
                    "std_p_ood": std, "sem_p_ood": std / math.sqrt(n) if std is not None else None,
                    "mean_nll_ood": float(np.mean([r["nll_ood"] for r in rows])) if n else None,
                    "mean_lm_ood": float(np.mean([r["lm_ood"] for r in rows])) if n else None,
                    "probe_fraction": float(np.mean([r["regime"] == "probe" for r in rows])) if n else None,
                    "p_ood_trials": p.tolist()})
    return out


CLAIM21_MIN_D0 = 0.05     # below this unperturbed D_0 a checkpoint has no probe basin to keep: no retained fraction


def peak_trough_depth(checkpoints: Sequence[dict], min_d0: float = CLAIM21_MIN_D0) -> dict:
    """Claim 21 (peaks sit in deeper basins than troughs) from basin-depth checkpoints (``{"step", "role",
    "per_sigma": depth_summary(...)}``).

    The σ = 0 relaxation is each checkpoint's baseline: a trial's retained fraction at σ is its p_ood after
    perturbation and relaxation over the checkpoint's D_0, so a checkpoint that merely starts higher is not
    deeper. Per σ > 0 the trials of the peak checkpoints and of the trough checkpoints are pooled (a checkpoint
    holding both roles is left out), and z_σ = (mean R_peaks − mean R_troughs) / sqrt(s²_p/n_p + s²_t/n_t).
    ``second_z`` (the second largest z_σ) ≥ 2 says the peaks keep more of their basin by ≥ 2 SEM at ≥ 2 σ values.
    The raw D_σ differences and σ½ per role are beside it. Trials of one checkpoint share its weights, so the
    SEM is optimistic when few checkpoints carry many trials (``n_checkpoints`` says how many)."""
    groups: dict[str, list[dict]] = {"peak": [], "trough": []}
    dropped = []
    for c in checkpoints:
        r = set(c.get("role", "").split("/"))
        if ("peak" in r) == ("trough" in r):
            continue
        base = next((d for d in c["per_sigma"] if d["sigma"] == 0.0), None)
        d0 = base["mean_p_ood"] if base else None
        if d0 is None or d0 < min_d0:
            dropped.append({"step": c["step"], "D0": d0})
            continue
        groups["peak" if "peak" in r else "trough"].append({**c, "D0": d0})
    out = {"min_D0": min_d0, "dropped": dropped,
           "n_checkpoints": {k: len(v) for k, v in groups.items()},
           "sigma_half": {k: [c.get("sigma_half") for c in v] for k, v in groups.items()},
           "per_sigma": [], "second_z": None, "n_sigma_separated": None, "why_not": None}
    if not groups["peak"] or not groups["trough"]:
        out["why_not"] = (f"{len(groups['peak'])} peak and {len(groups['trough'])} trough checkpoint(s) with an "
                          f"unperturbed D_0 ≥ {min_d0} (a checkpoint holding both roles is left out)")
        return out
    sigmas = sorted({d["sigma"] for c in checkpoints for d in c["per_sigma"] if d["sigma"] > 0})
    zs = []
    for sg in sigmas:
        row = {"sigma": sg}
        for k, cs in groups.items():
            pairs = np.array([(p, c["D0"]) for c in cs for d in c["per_sigma"] if d["sigma"] == sg
                              for p in d["p_ood_trials"]]).reshape(-1, 2)      # (trial p_ood, its D_0)
            raw, ret = pairs[:, 0], pairs[:, 0] / pairs[:, 1]
            row[k] = {"n": len(ret), "retained_mean": float(ret.mean()) if len(ret) else None,
                      "retained_var": float(ret.var(ddof=1)) if len(ret) > 1 else None,
                      "D_mean": float(raw.mean()) if len(raw) else None}
        p, t = row["peak"], row["trough"]
        if p["retained_var"] is None or t["retained_var"] is None:
            row["z"], row["why"] = None, "fewer than 2 trials in a role"
        else:
            sem = math.sqrt(p["retained_var"] / p["n"] + t["retained_var"] / t["n"])
            diff = p["retained_mean"] - t["retained_mean"]
            row["difference"], row["sem"] = diff, sem
            row["z"] = diff / sem if sem > 0 else (math.inf if diff > 0 else -math.inf if diff < 0 else 0.0)
            zs.append(row["z"])
        out["per_sigma"].append(row)
    if len(zs) < 2:
        out["why_not"] = (f"{len(zs)} σ value(s) > 0 with ≥ 2 trials in both roles; the rule needs 2 "
                          "(run basin_depth.py with --n-trials ≥ 2 or more pairs)")
        return out
    z = sorted(zs, reverse=True)
    out["second_z"] = float(z[1])
    out["n_sigma_separated"] = int(sum(x >= 2 for x in zs))
    return out


# ---------------------------------------------------------------------------- switch pairs
def pair_steps(pairs: Sequence[SwitchPair]) -> tuple[list[int], list[int]]:
    """The distinct peak steps and trough steps of ``pairs``, increasing."""
    return sorted({q.peak_step for q in pairs}), sorted({q.trough_step for q in pairs})


def parse_pairs(text: str, checkpoints: Sequence[int], p_ood: dict[int, float]) -> list[SwitchPair]:
    """Pairs given on the command line as ``peak:trough,peak:trough`` (checkpoint steps)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"--pairs must be a comma-separated list of PEAK:TROUGH checkpoint steps (got '{text}')")
    have = set(checkpoints)
    pairs = []
    for item in items:
        m = re.fullmatch(r"(\d+)\s*:\s*(\d+)", item)
        if not m:
            raise UserError(f"--pairs: '{item}' is not PEAK:TROUGH (two checkpoint steps, e.g. 120:160)")
        pk, tr = int(m.group(1)), int(m.group(2))
        if pk == tr:
            raise UserError(f"--pairs: '{item}' has the same peak and trough step")
        missing = [s for s in (pk, tr) if s not in have]
        if missing:
            raise UserError(f"--pairs: no checkpoint at step {missing[0]} (the run has {len(have)} checkpoints, "
                            f"{min(have)}..{max(have)})")
        pp, pt = p_ood.get(pk, math.nan), p_ood.get(tr, math.nan)
        pairs.append(SwitchPair(pk, tr, pp, pt, pp - pt, "fall" if tr > pk else "rise"))
    return pairs


def p_ood_series(metrics: Sequence[dict]) -> dict[int, float]:
    """step -> p_ood of the run's evaluations (a later record of a step wins)."""
    return {int(r["step"]): float(r["p_ood"]) for r in metrics if "step" in r and r.get("p_ood") is not None}


def resolve_pairs(run_dir, checkpoints: Sequence[int], p_ood: dict[int, float],
                  text: str | None) -> tuple[list[SwitchPair], dict]:
    """The switch pairs of an analysis: ``--pairs`` when given, else RUN/oscillation_manifest.json, else none.

    Returns the pairs and a dict with their source, the peak and trough steps (the manifest's own lists,
    which may hold unpaired events) and, when there are no pairs, a note saying why.
    """

    if text is not None:
        pairs = parse_pairs(text, checkpoints, p_ood)
        peaks, troughs = pair_steps(pairs)
        return pairs, {"source": "--pairs", "peaks": peaks, "troughs": troughs}
    if not runio.find_analysis_input(run_dir, MANIFEST, top=True).exists():
        return [], {"source": "none", "peaks": [], "troughs": [],
                    "note": f"no {MANIFEST} in the run directory: run analysis/switching/detect_oscillations.py "
                            "first, or pass --pairs PEAK:TROUGH,..."}
    pairs, m = read_manifest(Path(run_dir), checkpoints)
    info = {"source": MANIFEST, "peaks": [int(s) for s in m.get("peaks", [])],
            "troughs": [int(s) for s in m.get("troughs", [])], "manifest_prominence": m.get("prominence")}
    if not pairs:
        info["note"] = ("the oscillation manifest has no switch pairs: p_ood shows no oscillation above the "
                        f"detection threshold (prominence {m.get('prominence')}); pass --pairs to choose some")
    return pairs, info


def disjoint_pairs(pairs: Sequence[SwitchPair]) -> list[int]:
    """Indices of the pairs that share no checkpoint with another pair chosen before them, taken by
    decreasing amplitude (a greedy maximal set of independent events)."""
    order = sorted(range(len(pairs)), key=lambda i: -(pairs[i].amplitude if math.isfinite(pairs[i].amplitude)
                                                       else -math.inf))
    used: set[int] = set()
    keep = []
    for i in order:
        q = pairs[i]
        if q.peak_step not in used and q.trough_step not in used:
            keep.append(i)
            used |= {q.peak_step, q.trough_step}
    return sorted(keep)


# ---------------------------------------------------------------------------- drift table
def drift_table(gram: Gram, peaks: Sequence[int], troughs: Sequence[int], late: int | None) -> dict:
    """Distances between the peak, trough and late checkpoints (step 2 of mini_gpt's ``analysis/basin/B6_basin_depth.py``), from the Gram.

    within: ‖θ(p_{i+1}) − θ(p_i)‖ for consecutive peaks and likewise for troughs; between: for each
    peak, the distance to the nearest trough in parameter space; centres C_P, C_T = means of the peak
    and trough weights, ‖C_P − C_T‖; ratio = mean between / mean within (pooled); ‖θ_late − C_P‖ and
    ‖θ_late − C_T‖.
    """
    peaks, troughs = sorted(peaks), sorted(troughs)
    if not peaks or not troughs:
        raise UserError("the drift table needs at least one peak and one trough")

    def e(steps):
        return gram.drift_coeffs(list(steps), gram.anchor)

    def dist(a, b):                   # rows of distances ‖θ(a_i) − θ(b_i)‖
        return gram.norms(e(a) - e(b))

    within_p = dist(peaks[1:], peaks[:-1]).tolist() if len(peaks) > 1 else []
    within_t = dist(troughs[1:], troughs[:-1]).tolist() if len(troughs) > 1 else []
    between, nearest = [], []
    for p in peaks:
        d = dist([p] * len(troughs), troughs)
        j = int(np.argmin(d))
        between.append(float(d[j]))
        nearest.append(troughs[j])
    cp, ct = e(peaks).mean(axis=0), e(troughs).mean(axis=0)
    within = within_p + within_t
    out = {"peaks": peaks, "troughs": troughs, "late": late,
           "within_peak": within_p, "within_trough": within_t,
           "between": between, "between_nearest_trough": nearest,
           "mean_within": float(np.mean(within)) if within else None,
           "mean_between": float(np.mean(between)),
           "centre_distance": float(gram.norms((cp - ct)[None])[0])}
    out["ratio_between_within"] = (out["mean_between"] / out["mean_within"]
                                   if out["mean_within"] else None)
    if late is not None:
        el = e([late])[0]
        out["late_to_peak_centre"] = float(gram.norms((el - cp)[None])[0])
        out["late_to_trough_centre"] = float(gram.norms((el - ct)[None])[0])
    return out


# ---------------------------------------------------------------------------- B2 / B3
def switch_alignment(gram: Gram, pairs: Sequence[SwitchPair], steps: Sequence[int],
                     p_ood: dict[int, float]) -> dict:
    """B3: for each switching direction Δ̂ = (θ_peak − θ_trough)/‖·‖ and each pair of consecutive
    checkpoints (t_k, t_{k+1}) of ``steps``: a = cos(θ(t_{k+1}) − θ(t_k), Δ̂) at the midpoint, and
    Δp_ood = p_ood(t_{k+1}) − p_ood(t_k); their Pearson correlation over all intervals and over the
    intervals outside the pair's own span [min(peak, trough), max(peak, trough)] (inside it the update
    is part of Δ̂ by construction). Also the signed cosines between the switching directions.
    """
    steps = list(steps)
    C, norms = switch_coeffs(gram, pairs)
    prev, nxt = np.array(steps[:-1]), np.array(steps[1:])
    dp = np.array([p_ood[b] - p_ood[a] for a, b in zip(prev, nxt)])
    directions = []
    for i, q in enumerate(pairs):
        ua = update_alignment(gram, C[i], steps)
        a = np.asarray(ua["signed_cos"])
        lo, hi = min(q.peak_step, q.trough_step), max(q.peak_step, q.trough_step)
        own = (prev >= lo) & (nxt <= hi)
        directions.append({
            "peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind, "amplitude": q.amplitude,
            "switch_norm": float(norms[i]), "prev_steps": prev.tolist(), "next_steps": nxt.tolist(),
            "mid_steps": ((prev + nxt) / 2).tolist(), "alignments": a.tolist(), "dp_ood": dp.tolist(),
            "own_interval": own.tolist(),
            "corr_alignment_dp_ood": pearson(a, dp),
            "corr_alignment_dp_ood_outside": pearson(a[~own], dp[~own]),
            "mean_abs_alignment": float(np.mean(np.abs(a))),
            "mean_abs_alignment_outside": float(np.mean(np.abs(a[~own]))) if (~own).any() else None,
        })
    cos = gram.inner(C, C) if len(pairs) else np.zeros((0, 0))
    off = np.abs(cos[np.triu_indices(len(pairs), 1)])
    return {"dim": gram.dim, "noise_floor": noise_floor(gram.dim), "steps": steps, "directions": directions,
            "pairwise_cosines": cos.tolist(),
            "mean_abs_pairwise_cos": float(off.mean()) if len(off) else None,
            "max_abs_pairwise_cos": float(off.max()) if len(off) else None}


# ---------------------------------------------------------------------------- B7: manifold dimension
def spectrum_stats(M: np.ndarray) -> dict:
    """Spectrum of an n×n cosine Gram M of unit vectors: eigenvalues (decreasing), explained fractions
    λ_i/Σλ, k95/k99, participation ratio (Σλ)²/Σλ², effective rank exp(−Σ p_i ln p_i) with p = λ/Σλ,
    and the mean / max |cos| over the off-diagonal pairs."""
    M = (np.asarray(M, dtype=float) + np.asarray(M, dtype=float).T) / 2
    n = M.shape[0]
    lam = np.clip(np.linalg.eigvalsh(M)[::-1], 0.0, None)
    p = lam / lam.sum()
    nz = p[p > 0]
    off = np.abs(M[np.triu_indices(n, 1)])
    return {"n": n, "eigenvalues": lam.tolist(), "explained": p.tolist(), "k95": k_at(p, 0.95), "k99": k_at(p, 0.99),
            "participation_ratio": float(lam.sum() ** 2 / np.sum(lam ** 2)),
            "effective_rank": float(np.exp(-np.sum(nz * np.log(nz)))),
            "mean_abs_cos": float(off.mean()) if len(off) else None,
            "max_abs_cos": float(off.max()) if len(off) else None}


def isotropic_cos_gram(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """The n×n cosine Gram of n independent uniformly random directions of R^dim, drawn exactly.

    With X = [x_1 … x_n] a dim×n standard Gaussian matrix and X = QR its QR decomposition, the Gram XᵀX
    equals RᵀR where (Bartlett) R_ii² ~ χ²(dim − i) (i = 0..min(n, dim)−1), R_ij ~ N(0, 1) for j > i,
    all independent; normalising the diagonal gives the cosines. Cost O(n²), independent of dim.
    """
    m = min(n, dim)
    R = np.zeros((m, n))
    for i in range(m):
        R[i, i] = math.sqrt(rng.chisquare(dim - i))
        R[i, i + 1:] = rng.standard_normal(n - i - 1)
    W = R.T @ R
    d = np.sqrt(np.diag(W))
    return W / np.outer(d, d)


def percentile_of(value: float, samples: Sequence[float]) -> float | None:
    """Mid-rank percentile of ``value`` in ``samples``: 100·(#{s < v} + ½·#{s = v})/N."""
    s = np.asarray([x for x in samples if x is not None], dtype=float)
    if value is None or len(s) == 0:
        return None
    return float(100.0 * (np.sum(s < value) + 0.5 * np.sum(s == value)) / len(s))


def null_summary(draws: list[dict], observed: dict) -> dict:
    """Distribution of k95, participation ratio, effective rank and pairwise |cos| over null draws,
    with the observed value's percentile in each, and the mean sorted explained spectrum."""
    out: dict = {"n_samples": len(draws)}
    for key in ("k95", "k99", "participation_ratio", "effective_rank", "mean_abs_cos", "max_abs_cos"):
        v = np.array([d[key] for d in draws if d[key] is not None], dtype=float)
        out[key] = ({"mean": float(v.mean()), "std": float(v.std()),
                     "p05": float(np.percentile(v, 5)), "p50": float(np.percentile(v, 50)),
                     "p95": float(np.percentile(v, 95)),
                     "observed_percentile": percentile_of(observed.get(key), v)} if len(v) else None)
    ex = np.array([d["explained"] for d in draws])
    out["explained_mean"] = ex.mean(axis=0).tolist()
    out["explained_p05"] = np.percentile(ex, 5, axis=0).tolist()
    out["explained_p95"] = np.percentile(ex, 95, axis=0).tolist()
    out["abs_cos_sample"] = np.concatenate([d["_abs_cos"] for d in draws])[:20000].tolist()
    return out


def _stats_with_cos(M: np.ndarray) -> dict:
    s = spectrum_stats(M)
    s["_abs_cos"] = np.abs(M[np.triu_indices(M.shape[0], 1)])
    return s


def isotropic_null(n: int, dim: int, n_samples: int, seed: int) -> dict:
    """Spectra of the cosine Gram of n isotropic random directions in R^dim (exact draws)."""
    rng = np.random.default_rng([int(seed), 0x69736F])
    draws = [_stats_with_cos(isotropic_cos_gram(n, dim, rng)) for _ in range(n_samples)]
    return {"dim": dim, "n": n, "draws": draws}


def _displacement_gram(gram: Gram, intervals: Sequence[tuple[int, int]]) -> np.ndarray:
    """Cosine Gram of the unit displacements θ(b) − θ(a) for (a, b) in ``intervals``."""
    A = gram.drift_coeffs([b for _, b in intervals], gram.anchor) - gram.drift_coeffs([a for a, _ in intervals],
                                                                                      gram.anchor)
    n = gram.norms(A)
    if np.any(n == 0):
        raise UserError("two checkpoints of a null interval are identical; no displacement direction")
    A = A / n[:, None]
    return gram.inner(A, A)


def null_window(steps: Sequence[int], pairs: Sequence[SwitchPair], spec: str) -> tuple[int, int]:
    """The checkpoint window of the trajectory null: 'events' (earliest to latest switch event widened
    by the largest lag on both sides), 'run' (every checkpoint) or 'LO:HI' (steps)."""
    events = [s for q in pairs for s in (q.peak_step, q.trough_step)]
    if spec == "run":
        return min(steps), max(steps)
    if spec == "events":
        lag = max(abs(q.peak_step - q.trough_step) for q in pairs)
        return max(min(steps), min(events) - lag), min(max(steps), max(events) + lag)
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", spec)
    if not m or int(m.group(1)) >= int(m.group(2)):
        raise UserError(f"--null-window must be 'events', 'run' or LO:HI with LO < HI (got '{spec}')")
    return int(m.group(1)), int(m.group(2))


def trajectory_null(gram: Gram, pairs: Sequence[SwitchPair], steps: Sequence[int], n_samples: int, seed: int,
                    window: tuple[int, int]) -> dict:
    """Displacements θ(t + ℓ) − θ(t) of the same trajectory at times without a switch, one per pair with
    the pair's lag ℓ = |peak − trough|, both ends checkpoints inside ``window``.

    Candidate intervals have no end at a switch event (a peak or trough step of any pair); when a lag
    has no such candidate, intervals that are not themselves a switch pair are allowed (recorded per
    lag). Within one draw the intervals are distinct while candidates last (repeats are counted).
    """
    steps = [s for s in steps if window[0] <= s <= window[1]]
    have = set(steps)
    events = {s for q in pairs for s in (q.peak_step, q.trough_step)}
    pair_sets = {frozenset((q.peak_step, q.trough_step)) for q in pairs}
    lags = sorted({abs(q.peak_step - q.trough_step) for q in pairs})
    candidates, rule = {}, {}
    for lag in lags:
        c = [(a, a + lag) for a in steps if a + lag in have and a not in events and a + lag not in events]
        rule[lag] = "no end at a switch event"
        if not c:
            c = [(a, a + lag) for a in steps if a + lag in have and frozenset((a, a + lag)) not in pair_sets]
            rule[lag] = "not a switch pair (no interval avoids every switch event)"
        if not c:
            return {"available": False, "reason": f"no checkpoint interval of lag {lag} in the window {window} "
                                                  "that is not a switch pair", "window": list(window)}
        candidates[lag] = c
    rng = np.random.default_rng([int(seed), 0x7472616A])
    draws, repeats = [], 0
    for _ in range(n_samples):
        chosen: list[tuple[int, int]] = []
        for q in pairs:
            c = candidates[abs(q.peak_step - q.trough_step)]
            free = [iv for iv in c if iv not in chosen]
            pool = free or c
            repeats += 0 if free else 1
            chosen.append(pool[int(rng.integers(len(pool)))])
        try:
            draws.append(_stats_with_cos(_displacement_gram(gram, chosen)))
        except UserError:
            continue
    return {"available": bool(draws), "window": list(window),
            "lags": lags, "candidates_per_lag": {str(k): len(v) for k, v in candidates.items()},
            "rule_per_lag": {str(k): v for k, v in rule.items()}, "repeated_intervals": repeats, "draws": draws}


def shifted_null(gram: Gram, pairs: Sequence[SwitchPair], steps: Sequence[int]) -> dict:
    """The whole pattern of switch pairs moved in time by every non-zero offset that keeps all its
    steps on checkpoints: the same lags, gaps and shared endpoints, at other times of the run."""
    have = set(steps)
    ev = [s for q in pairs for s in (q.peak_step, q.trough_step)]
    offsets = sorted({s - min(ev) for s in steps} - {0})
    draws, used = [], []
    for o in offsets:
        if all(s + o in have for s in ev):
            iv = [(q.trough_step + o, q.peak_step + o) for q in pairs]
            try:
                draws.append(_stats_with_cos(_displacement_gram(gram, iv)))
                used.append(o)
            except UserError:
                continue
    return {"available": bool(draws), "offsets": used, "draws": draws}


def manifold_dimension(gram: Gram, pairs: Sequence[SwitchPair], steps: Sequence[int], n_null: int, seed: int,
                       window: tuple[int, int]) -> dict:
    """B7: is the set of switching directions high-dimensional, compared with what structureless
    directions (isotropic null) and ordinary displacements of the same run (trajectory nulls) give?"""
    if len(pairs) < 2:
        raise UserError("the switching-manifold dimension needs at least 2 switch pairs")
    C, norms = switch_coeffs(gram, pairs)
    M = gram.inner(C, C)
    obs = spectrum_stats(M)
    n = len(pairs)
    iso = isotropic_null(n, gram.dim, n_null, seed)
    traj = trajectory_null(gram, pairs, steps, n_null, seed, window)
    shift = shifted_null(gram, pairs, steps)
    dj = disjoint_pairs(pairs)
    out = {"n_directions": n, "dim": gram.dim,
           "pairs": [{"peak_step": q.peak_step, "trough_step": q.trough_step, "kind": q.kind,
                      "amplitude": q.amplitude} for q in pairs],
           "delta_norms": norms.tolist(), "cos_gram": M.tolist(), "switch": obs,
           "disjoint_pairs": dj,
           "switch_disjoint": spectrum_stats(M[np.ix_(dj, dj)]) if len(dj) >= 2 else None,
           "reference_gram_schmidt_count": n,
           "isotropic_null": null_summary(iso["draws"], obs),
           "trajectory_null": ({k: v for k, v in traj.items() if k != "draws"} |
                               (null_summary(traj["draws"], obs) if traj["available"] else {})),
           "shifted_null": ({k: v for k, v in shift.items() if k != "draws"} |
                            (null_summary(shift["draws"], obs) if shift["available"] else {}))}
    out["verdict"] = verdict(out)
    return out


def verdict(r: dict) -> str:
    """One paragraph answering "is the switching manifold high-dimensional?" from the numbers."""
    s, iso, tr = r["switch"], r["isotropic_null"], r["trajectory_null"]
    n = r["n_directions"]
    parts = [f"{n} switching directions: k95 = {s['k95']} of {n}, participation ratio "
             f"{s['participation_ratio']:.2f}, mean |cos| {s['mean_abs_cos']:.3f} (max {s['max_abs_cos']:.3f})."]
    parts.append(f"Isotropic random directions in D = {r['dim']:,}: k95 {iso['k95']['mean']:.2f}, participation ratio "
                 f"{iso['participation_ratio']['mean']:.2f}, mean |cos| {iso['mean_abs_cos']['mean']:.2g}; the "
                 f"switch k95 sits at percentile {iso['k95']['observed_percentile']:.0f}.")
    if tr.get("available"):
        parts.append(f"Displacements of the same run over the same lags at non-switching times: k95 "
                     f"{tr['k95']['mean']:.2f} (5-95%: {tr['k95']['p05']:.0f}-{tr['k95']['p95']:.0f}), participation "
                     f"ratio {tr['participation_ratio']['mean']:.2f}, mean |cos| {tr['mean_abs_cos']['mean']:.3f}; "
                     f"the switch k95 is at percentile {tr['k95']['observed_percentile']:.0f} and its "
                     f"participation ratio at percentile {tr['participation_ratio']['observed_percentile']:.0f}.")
        hi = tr["participation_ratio"]["observed_percentile"] >= 95
        lo = tr["participation_ratio"]["observed_percentile"] <= 5
        parts.append("The switching directions are more mutually independent than ordinary displacements of this "
                     "trajectory." if hi else "The switching directions are less independent (more concentrated) "
                     "than ordinary displacements of this trajectory." if lo else
                     "The switching directions are about as independent as ordinary displacements of this trajectory "
                     "over the same lags: their dimension is not specific to switching.")
    else:
        parts.append(f"No trajectory null: {tr.get('reason', 'no candidate intervals')}.")
    sh = r["shifted_null"]
    if sh.get("available"):
        pr = sh["participation_ratio"]
        parts.append(f"The same pattern of pairs shifted in time ({sh['n_samples']} offsets): participation ratio "
                     f"{pr['mean']:.2f}, mean |cos| {sh['mean_abs_cos']['mean']:.3f}; the switch participation "
                     f"ratio is at percentile {pr['observed_percentile']:.0f}.")
    parts.append(f"(The reference's Gram-Schmidt count would report {n}: the number of pairs, by construction.)")
    return " ".join(parts)
