"""What the multi-run studies share: running or resuming a run in-process, reheating configs, the
re-entry gain. The paper's protocol scaled to a preset is :mod:`training.core.scaling` (its names are
importable from here too, as every study uses them).

A study writes ordinary run directories (so every analysis script works on each of them) under one
study directory, and resumes by resuming each unfinished run. On a CPU its runs train side by side
(:func:`train_runs`, ``--jobs``).
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from training.core import runio
from training.core.cli import CommandParser
from training.core.config import PRESETS, Config, parse_override, preset
from training.core.errors import UserError
from training.core.runio import read_run_config
from training.core.scaling import (  # noqa: F401 (re-exported)
    PAPER_LR,
    PAPER_REHEAT_LRS,
    PAPER_STEPS,
    preset_lr,
    preset_steps,
    reheat_defaults,
    scale_lr,
    scale_step,
    scale_window,
)
from training.core.tasks import validate
from training.core.trainer import Trainer
from training.studies import executors, parallel

REENTRY_THRESHOLD = 0.6          # "first step with p_ood >= 0.60" of the paper's reheating table


# ---------------------------------------------------------------------------- running
def ensure_run(cfg: Config, run_dir: Path, dist=None) -> str:
    """Train ``cfg`` into ``run_dir``, or resume it there; returns completed | diverged.

    A directory that already holds a different config is an error (runs never silently collide). ``dist``:
    the process group of a data-parallel run (training.core.distributed; None = one process), e.g. the tasks
    of a several-GPU Slurm job (training/studies/executors.py).
    """
    extra = {} if dist is None else {"dist": dist}
    run_dir = Path(run_dir)
    cfg = validate(cfg.replace(out_dir=str(run_dir)))
    if (run_dir / "config.json").exists():
        have = read_run_config(run_dir)
        if have.hash() != cfg.hash():
            raise UserError(f"{run_dir} already holds a run with a different config; remove it or choose another "
                            "study directory")
        return Trainer(have.replace(device=cfg.device, progress=cfg.progress, compile=cfg.compile), run_dir,
                       resume=True, **extra).run()
    return Trainer(cfg, run_dir, resume=False, **extra).run()


@dataclass
class RunJob:
    """One run of a study: a label for messages, its config and its directory; ``identity`` says when a
    finished run in that directory is this one (default: the config hash)."""
    label: str
    cfg: Config
    dir: Path
    identity: Callable[[Config], str] | None = None


def finished_state(cfg: Config, run_dir: Path, identity: Callable[[Config], str] | None = None) -> str | None:
    """completed | diverged when ``run_dir`` holds this very run, finished; None when it still has to train.
    A directory holding a different run is refused, as :func:`ensure_run` would. ``identity`` (default:
    :meth:`Config.hash`) is what must agree between the stored and the wanted config."""
    state = run_state(run_dir)
    if state not in ("completed", "diverged"):
        return None
    key = identity or Config.hash
    if key(read_run_config(run_dir)) != key(validate(cfg.replace(out_dir=str(run_dir)))):
        raise UserError(f"{run_dir} already holds a run with a different config; remove it or choose another "
                        "study directory")
    return state


def _train_job(job: RunJob, dist=None) -> tuple[str, float]:
    t0 = time.monotonic()
    return ensure_run(job.cfg, job.dir, dist), round(time.monotonic() - t0, 2)


def train_runs(jobs: Sequence[RunJob], n_jobs: int | None | executors.SubmititExecutor = None,
               log=print) -> dict[str, dict]:
    """Train (or resume, or skip when finished) every run of ``jobs``; label -> {state, error, seconds}.

    ``n_jobs`` is ``--jobs`` of the local process pool, or a :class:`executors.SubmititExecutor` (``--executor
    slurm``: one Slurm job per run; :func:`executor_from_args` makes either from a study's command line).

    ``n_jobs`` runs train side by side in child processes (training/studies/parallel.py; None = all at once on a CPU,
    up to 4 per core, one at a time on a GPU); each then logs to ``<run>/train.log``. A run that fails does not stop
    the others: it is reported in one line as it happens (its label, the reason, its log, which has the details),
    and once all have ended a one-line UserError (:class:`parallel.JobsFailed`, with the states of every run in
    ``results``) says which failed and how to go on.
    """
    out: dict[str, dict] = {}
    todo = []
    for job in jobs:                 # finished runs are reported here, without starting a process for them
        runio.check_out_dir(job.dir, "run directory")
        state = finished_state(job.cfg, job.dir, job.identity)
        if state:
            log(f"skip {job.label}: already {state} ({job.dir})")
            out[job.label] = {"state": state, "error": None, "seconds": 0.0}
        else:
            todo.append(job)
    if not todo:
        return out
    jobs = todo
    if isinstance(n_jobs, executors.SubmititExecutor):
        return _train_submitit(jobs, n_jobs, log, out)
    n, threads = parallel.plan_jobs(len(jobs), n_jobs, jobs[0].cfg.device)
    if n > 1:
        jobs = [replace(j, cfg=j.cfg.replace(progress=False)) for j in jobs]
        log(f"training {len(jobs)} runs side by side ({n} processes x {threads} thread{'s' if threads > 1 else ''}; "
            f"logs in <run>/train.log)")

    def start(job):
        log(f"train {job.label} -> {job.dir}")

    def done(job, r):
        out[job.label] = {"state": r[0], "error": None, "seconds": r[1]}
        log(f"{job.label}: {r[0]} ({r[1]:.1f} s in this invocation)")

    try:
        parallel.run_jobs(_train_job, jobs, n, threads, log_path=lambda j: j.dir / "train.log", on_start=start,
                          on_done=done, name=lambda j: f"{j.label} ({j.dir})", what="runs")
    except parallel.JobsFailed as e:
        _failed(e, out, "the others resume")
    return out


def _train_submitit(jobs: list[RunJob], executor: executors.SubmititExecutor, log, out: dict) -> dict:
    jobs = [replace(j, cfg=j.cfg.replace(progress=False)) for j in jobs]
    log(f"submitting {len(jobs)} run{'s' if len(jobs) > 1 else ''} as {executors.describe(executor)} jobs, one per "
        f"run (job files in {executor.job_folder([j.dir for j in jobs])})")

    def start(job, where):
        log(f"submitted {job.label} -> {job.dir} ({where})")

    def done(job, r):
        out[job.label] = {"state": r[0], "error": None, "seconds": r[1]}
        log(f"{job.label}: {r[0]} ({r[1]:.1f} s in its job)")

    try:
        executor.run(_train_job, jobs, label=lambda j: j.label, run_dir=lambda j: j.dir, on_start=start,
                     on_done=done, log=log, what="runs")
    except parallel.JobsFailed as e:
        _failed(e, out, "the others are submitted again and resume")
    return out


def _failed(e: parallel.JobsFailed, out: dict, then: str):
    """Record the failed runs in ``out`` and raise the study's one error line, with how to go on."""
    for f in e.failures:
        out[f.item.label] = {"state": "failed", "error": f.message, "seconds": None}
    raise parallel.JobsFailed(f"{e}; fix the cause and run the same command again: finished runs are skipped, {then}",
                              e.failures, out) from None


def executor_from_args(args: argparse.Namespace):
    """``--jobs`` (the local pool) or the submitit executor of ``--executor slurm``, as :func:`train_runs` takes
    it; every inconsistent combination of the flags is refused in one line."""
    return executors.from_args(args)


def add_jobs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", type=int, help="runs trained side by side, one process each (default: all at once on a "
                                            "CPU, up to 4 per core; 1 on a GPU)")


def run_state(run_dir: Path) -> str:
    """completed | diverged | running | failed | missing."""
    status = runio.read_status(Path(run_dir)) if (Path(run_dir) / "status.json").exists() else None
    return (status or {}).get("state", "missing")


# ---------------------------------------------------------------------------- study command lines
def study_parser(doc: str, *, scale: str = "preset", scale_default: str = "quick", scale_help: str | None = None,
                 seed_default: int = 42, seed_help: str | None = None,
                 out_default: str = "runs/<study>_<preset>_s<seed>") -> argparse.ArgumentParser:
    """Options every study command has: the scale it runs at (``--preset``, or ``--size`` for a study with
    sizes of its own), the seed, where it writes, overrides of every run's config, progress bars.

    Each study states its own defaults and choices here; they are part of its help text."""
    first = (doc or "").strip().split("\n\n")[0]
    p = CommandParser(description=first, formatter_class=argparse.RawDescriptionHelpFormatter,
                      epilog=(doc or "").strip()[len(first):].strip() or None)
    p.add_argument(f"--{scale}", default=scale_default,
                   help=scale_help or f"{' | '.join(PRESETS)} (the training presets; default {scale_default})")
    p.add_argument("--seed", type=int, default=seed_default,
                   help=seed_help or f"training seed of every run (default {seed_default}"
                                     + (", the paper's)" if seed_default == 42 else ")"))
    p.add_argument("--out-dir", help=f"study directory (default {out_default})")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a config field of every run (e.g. cache_dir=..., device=cuda); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    executors.add_executor_args(p)
    return p


def refuse_protocol_overrides(keys, protocol_fields: Sequence[str], study: str, hints: dict | None = None) -> None:
    """A ``--set`` of a field the study's protocol fixes would be replaced silently: refuse it in one line."""
    fixed = sorted(set(keys) & set(protocol_fields))
    if fixed:
        hint = (hints or {}).get(fixed[0], "")
        raise UserError(f"--set {', '.join(fixed)}=...: the {study} protocol sets {'these' if len(fixed) > 1 else 'this'} "
                        f"itself{hint}")


def study_base_config(args: argparse.Namespace) -> Config:
    cfg = preset(args.preset).replace(seed=args.seed, progress=not args.no_progress)
    changes = dict(parse_override(item) for item in args.set)
    return cfg.replace(**changes)


def study_dir(args: argparse.Namespace, study: str) -> Path:
    """The study directory (--out-dir, checked by the same rule as a run's, or the default)."""
    return runio.check_out_dir(args.out_dir) if args.out_dir is not None else Path("runs") / f"{study}_{args.preset}_s{args.seed}"


# ---------------------------------------------------------------------------- reheating
def reheat_config(orig: Config, checkpoint: Path, lr: float, steps: int, warmup: int, lam: float,
                  eval_every: int, moments: bool = False, beta2: float | None = None) -> Config:
    """A reheating run: the original config from ``checkpoint``'s weights with a fresh optimizer (or,
    with ``moments``, the optimizer moments saved at that step), constant λ, warmup then cosine to the
    floor over ``steps``, a checkpoint at every evaluation, and a data stream of its own (see
    :attr:`Config.effective_data_seed`): it never replays the original run's batches.
    """
    checkpoint = Path(checkpoint).resolve()
    init_optimizer = str(runio.find_optimizer_state(checkpoint).resolve()) if moments else ""
    return orig.replace(init_from=str(checkpoint), init_optimizer=init_optimizer, lr=lr, steps=steps,
                        warmup=min(warmup, steps), lambda_probe=lam, lambda_probe2=None, lambda_step=0,
                        eval_every=eval_every, ckpt_every=eval_every, ckpt_dense=(), early_stop=False,
                        data_seed=None, keep_optimizer_states=False, optimizer_state_every=0, out_dir="",
                        beta2=orig.beta2 if beta2 is None else beta2)


def reheat_name(step: int, lr: float, moments: bool) -> str:
    return f"ckpt{step:06d}_lr{lr:g}_{'moments' if moments else 'fresh'}"


# ---------------------------------------------------------------------------- re-entry
def reentry(metrics: Sequence[dict], threshold: float = REENTRY_THRESHOLD) -> dict:
    """Re-entry of the probe basin along one reheating run's evaluations.

    p0 = p_ood at the start (step 0, the initial weights), G = max_t p_ood(t) − p0 (the re-entry gain),
    the step of the peak, the first step with p_ood >= ``threshold`` (None if never) and the final value.
    """
    rows = [m for m in metrics if m.get("p_ood") is not None and math.isfinite(m["p_ood"])]
    if not rows or rows[0]["step"] != 0:
        raise UserError("a reheating run needs its step-0 evaluation (the starting point) to measure re-entry")
    p0 = rows[0]["p_ood"]
    peak = max(rows, key=lambda m: m["p_ood"])
    first = next((m["step"] for m in rows if m["p_ood"] >= threshold), None)
    return {"p0": p0, "peak_p_ood": peak["p_ood"], "peak_step": peak["step"], "G": peak["p_ood"] - p0,
            "first_step_at_threshold": first, "threshold": threshold, "final_p_ood": rows[-1]["p_ood"],
            "final_step": rows[-1]["step"], "final_val_loss": rows[-1].get("val_loss")}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table from cells already formatted as text."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
