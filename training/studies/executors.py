"""Where a study's runs train: the local process pool, or one Slurm job per run through ``submitit``.

Every study command has ``--executor local|slurm`` (README, "Sweeps on a cluster"):

* ``local`` (the default) is :func:`training.studies.parallel.run_jobs`: the runs side by side in child
  processes of this command (``--jobs``), each logging to ``<run>/train.log``.
* ``slurm`` submits each run that still has to train as its own Slurm job with submitit (``pip install -e
  .[cluster]``), waits for them, and reports each as it ends. ``--slurm KEY=VALUE`` (repeatable) sets a
  parameter of submitit's SlurmExecutor -- the ``slurm_*`` parameters of its AutoExecutor without the prefix:
  ``partition``, ``time`` (minutes), ``gpus_per_node``, ``cpus_per_task``, ``mem``, ``account``, ``qos``,
  ``ntasks_per_node``, ``setup`` (a shell line run before the job, repeatable), ... -- checked against the
  parameters submitit itself accepts. ``--executor-dir`` is submitit's job folder (default
  ``STUDY/.submitit``): the jobs' pickles, their stdout/stderr (``<job id>_0_log.out`` / ``.err``) and one record
  per run of the job last submitted for it.
* ``submitit-local`` (hidden; the test path) is the same code with submitit's LocalExecutor: each run a real
  job in its own process tree started by submitit, its result or its failure coming back through submitit's
  files exactly as from Slurm. Of the ``--slurm`` options it uses ``time``, ``gpus_per_node``,
  ``ntasks_per_node`` and ``setup``; the others (partition, account, ...) only mean something to Slurm.

A job is one run: ``ensure_run(cfg, run_dir)`` (train, or resume where the run directory stopped). So a study
run again skips the finished runs (it never submits them), waits for a job submitted by an earlier invocation
that is still queued or running (instead of submitting a second one for the same run), and submits the rest:
runs that failed, were cancelled or never started. A job that times out (or is preempted) is requeued by
submitit up to three times and resumes from its last checkpoint. Ctrl-C cancels the jobs this command is
waiting for; a command that dies otherwise (a lost login shell) leaves them queued, and the next invocation
collects them.

A failed job is reported as the local pool reports a failed run -- ``failed: <run>: <last line> (log: <the
job's stderr file>)`` as soon as it is known -- and once every job has ended, one ``error:`` line
(:class:`~training.studies.parallel.JobsFailed`).

A job of several tasks (``--slurm ntasks_per_node=N`` with ``gpus_per_node=N``) trains its run with
DistributedDataParallel over the N tasks, as ``torchrun --nproc_per_node N`` would: each task joins the process
group (submitit's TorchDistributedEnvironment gives RANK / WORLD_SIZE / MASTER_ADDR; ranks take GPU LOCAL_RANK).
"""
from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import re
import shlex
import sys
import time
import traceback
import typing as tp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from training.core.errors import UserError
from training.studies import parallel

EXECUTORS = ("local", "slurm")
TEST_EXECUTOR = "submitit-local"          # submitit's LocalExecutor: the Slurm code path without Slurm (tests)
INSTALL_HINT = "pip install -e .[cluster]"
# Slurm parameters that mean something to submitit's LocalExecutor too (translated to its own names)
LOCAL_KEYS = {"time": "timeout_min", "gpus_per_node": "gpus_per_node", "ntasks_per_node": "tasks_per_node",
              "setup": "setup"}
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "READY"}
LOCAL_TIMEOUT_MIN = 7 * 24 * 60           # submitit's LocalExecutor would stop a job after 2 minutes by default


def add_executor_args(p) -> None:
    """--executor, --slurm, --executor-dir (study_parser adds them to every study command)."""
    p.add_argument("--executor", default="local", choices=EXECUTORS + (TEST_EXECUTOR,),
                   metavar="{local,slurm}",
                   help="local: train the runs in processes of this command (--jobs); slurm: one Slurm job per run "
                        "through submitit (pip install -e .[cluster]; README, 'Sweeps on a cluster'). Default local")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="with --executor slurm: a parameter of submitit's SlurmExecutor (partition, time [minutes], "
                        "gpus_per_node, cpus_per_task, mem, account, qos, ntasks_per_node, setup, ...); repeatable")
    p.add_argument("--executor-dir", metavar="DIR",
                   help="with --executor slurm: submitit's job folder (job pickles, stdout/stderr; default "
                        "STUDY/.submitit)")


def from_args(args) -> int | None | "SubmititExecutor":
    """What ``train_runs`` takes as its ``n_jobs``: ``--jobs`` for the local pool, else a SubmititExecutor.

    Every inconsistent combination is refused here, before anything trains, in one line."""
    kind = getattr(args, "executor", "local") or "local"
    slurm = list(getattr(args, "slurm", None) or [])
    folder = getattr(args, "executor_dir", None)
    jobs = getattr(args, "jobs", None)
    if kind == "local":
        if slurm or folder is not None:
            given = "--slurm" if slurm else "--executor-dir"
            raise UserError(f"{given} is for --executor slurm; the local executor trains the runs in this command's "
                            "processes (--jobs)")
        return jobs
    if jobs is not None:
        raise UserError(f"--jobs is for --executor local; with --executor {kind} every run is its own job "
                        "(Slurm schedules them)")
    return SubmititExecutor.create(kind, slurm, folder)


# ---------------------------------------------------------------------------- submitit
def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor slurm needs submitit, which is not installed: {INSTALL_HINT}") from None
    return submitit


def _sbatch_signature(submitit) -> inspect.Signature:
    from submitit.slurm import slurm as slurm_mod
    return inspect.signature(slurm_mod._make_sbatch_string)


def slurm_parameters(submitit) -> dict[str, inspect.Parameter]:
    """The parameters submitit's SlurmExecutor accepts (those of the sbatch file it writes)."""
    sig = _sbatch_signature(submitit)
    return {k: v for k, v in sig.parameters.items() if k not in ("command", "folder", "map_count")}


def _kinds(annotation) -> set:
    """The plain types an annotation allows (int, float, bool, str, list, dict)."""
    if isinstance(annotation, str):          # postponed annotations: read the names
        names = set(re.findall(r"[A-Za-z_]+", annotation))
        m = {"int": int, "float": float, "bool": bool, "str": str, "List": list, "Sequence": list, "Iterable": list,
             "list": list, "Dict": dict, "dict": dict}
        return {m[n] for n in names if n in m}
    origin = tp.get_origin(annotation)
    if origin is tp.Union:
        return set().union(*(_kinds(a) for a in tp.get_args(annotation)))
    if origin is not None:
        import collections.abc as cabc
        if origin in (list, tuple, cabc.Sequence, cabc.Iterable):
            return {list}
        if origin in (dict, cabc.Mapping):
            return {dict}
        return {origin}
    if annotation is type(None):
        return set()
    return {annotation} if isinstance(annotation, type) else set()


def _convert(key: str, value: str, kinds: set):
    """A --slurm value as the type submitit wants for ``key``."""
    if dict in kinds:
        raise UserError(f"--slurm {key}=...: a mapping cannot be given on the command line")
    if bool in kinds and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if int in kinds:
        try:
            return int(value)
        except ValueError:
            if str not in kinds and bool not in kinds:
                raise UserError(f"--slurm {key}={value}: {key} is a whole number"
                                + (" of minutes" if key == "time" else "")) from None
    if float in kinds:
        try:
            return float(value)
        except ValueError:
            if str not in kinds:
                raise UserError(f"--slurm {key}={value}: {key} is a number") from None
    return value


def parse_slurm_options(items: Sequence[str], submitit) -> dict:
    """``KEY=VALUE`` items -> submitit SlurmExecutor parameters; list-valued keys (setup, srun_args) collect
    every item given for them. Unknown keys and bad values are refused in one line."""
    known = slurm_parameters(submitit)
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key.startswith("slurm_"):                # AutoExecutor's spelling
            key = key[len("slurm_"):]
        if not sep or not key:
            raise UserError(f"--slurm {item}: expected KEY=VALUE (e.g. --slurm partition=gpu)")
        if key not in known:
            close = [k for k in known if k.startswith(key[:3])]
            raise UserError(f"--slurm {key}: not a parameter of submitit's SlurmExecutor"
                            + (f" (did you mean {', '.join(close)}?)" if close else "")
                            + f"; known: {', '.join(sorted(known))}")
        kinds = _kinds(known[key].annotation)
        if list in kinds:
            out.setdefault(key, []).append(value)
        else:
            out[key] = _convert(key, value, kinds)
    try:                                           # submitit's own check of the values (writes nothing)
        _sbatch_signature(submitit).bind(command="true", folder="/tmp", **out)
        from submitit.slurm import slurm as slurm_mod
        slurm_mod._make_sbatch_string(command="true", folder="/tmp", **out)
    except (TypeError, ValueError) as e:
        raise UserError(f"--slurm: submitit refuses these options: {parallel._one_line(e)}") from None
    return out


class RunFailed(Exception):
    """What a job raises for a run that failed: its one-line reason (the traceback is in the job's stderr)."""


@dataclass
class SubmittedRun:
    """The callable a job runs (pickled by submitit): ``fn(item)`` in the job's process, with the run's
    failure in one line at the end of the job's stderr. Checkpointable: on a timeout or preemption submitit
    requeues it, and the run resumes from its last checkpoint."""
    fn: Callable
    item: object
    threads: int | None = None

    def __call__(self):
        import torch
        if self.threads:
            torch.set_num_threads(self.threads)
        dist = None
        try:
            dist = _job_dist(self.item)
            return self.fn(self.item) if dist is None else self.fn(self.item, dist)
        except Exception as e:          # noqa: BLE001 -- one line for the study, the details in the job's stderr
            line = parallel._one_line(e)
            if not isinstance(e, UserError):
                traceback.print_exc(file=sys.stderr)
            print(f"error: {line}", file=sys.stderr, flush=True)
            raise RunFailed(line) from None
        finally:
            if dist is not None:
                from training.core import distributed
                distributed.shutdown(dist)

    def checkpoint(self, *args, **kwargs):
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _job_dist(item):
    """In a job of several tasks: join them into one process group (as torchrun would); None in a one-task job."""
    import submitit
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:                            # not inside a submitit job (called directly)
        return None
    if env.num_tasks <= 1:
        return None
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    from training.core import distributed
    return distributed.from_env(getattr(getattr(item, "cfg", None), "device", "auto"))


def _record_name(label: str, run_dir: Path) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")[:60] or "run"
    return f"{safe}-{hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]}.job"


@dataclass
class SubmititExecutor:
    """Runs as submitit jobs: ``kind`` slurm (SlurmExecutor) or submitit-local (LocalExecutor, the tests'
    path); ``params`` are SlurmExecutor parameters; ``folder`` None = STUDY/.submitit."""
    kind: str
    params: dict = field(default_factory=dict)
    folder: Path | None = None
    poll_s: float | None = None

    @classmethod
    def create(cls, kind: str, slurm: Sequence[str] = (), folder: str | Path | None = None) -> "SubmititExecutor":
        if kind not in ("slurm", TEST_EXECUTOR):
            raise UserError(f"--executor {kind}: expected one of {', '.join(EXECUTORS)}")
        submitit = _import_submitit()
        params = parse_slurm_options(slurm, submitit)
        if kind == "slurm" and submitit.SlurmExecutor.affinity() < 0:
            raise UserError("--executor slurm: no Slurm here (srun not found); run the study from a Slurm login "
                            "node, or without --executor slurm to train here")
        if folder is not None:
            from training.core import runio
            folder = runio.check_out_dir(folder, "--executor-dir")
        return cls(kind, params, Path(folder) if folder is not None else None)

    @property
    def name(self) -> str:
        return self.kind

    def job_folder(self, run_dirs: Sequence[Path]) -> Path:
        if self.folder is not None:
            return Path(self.folder)
        parents = [str(Path(d).resolve().parent) for d in run_dirs]
        return Path(os.path.commonpath(parents)) / ".submitit"

    def _executor(self, submitit, folder: Path, n_runs: int):
        if self.kind == "slurm":
            try:
                ex = submitit.SlurmExecutor(folder=folder)
            except RuntimeError as e:             # no srun on this machine
                raise UserError(f"--executor slurm: {parallel._one_line(e)} (submit from a Slurm login node; "
                                f"without Slurm use --executor local)") from None
            try:
                ex.update_parameters(**self.params)
            except (TypeError, ValueError) as e:
                raise UserError(f"--slurm: submitit refuses these options: {parallel._one_line(e)}") from None
            return ex, None
        ex = submitit.LocalExecutor(folder=folder)
        local = {LOCAL_KEYS[k]: v for k, v in self.params.items() if k in LOCAL_KEYS}
        local.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
        ex.update_parameters(**local)
        tasks = int(local.get("tasks_per_node", 1))
        # the runs share this machine's cores, as the local pool's do
        return ex, max(1, parallel.cpu_count() // max(1, n_runs * tasks))

    def run(self, fn: Callable, items: Sequence, *, label: Callable[[object], str], run_dir: Callable[[object], Path],
            on_start: Callable[[object, str], None] | None = None,
            on_done: Callable[[object, object], None] | None = None, what: str = "runs",
            log: Callable[[str], None] = print, report: Callable[[str], None] | None = None) -> list:
        """``fn(item)`` for every item, each as one job; results in item order; :class:`parallel.JobsFailed`
        (one line) once every job has ended if any failed, each failure reported in one line when known."""
        items = list(items)
        if not items:
            return []
        submitit = _import_submitit()
        report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        folder = self.job_folder([run_dir(it) for it in items])
        try:
            (folder / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--executor-dir {folder}: {parallel._one_line(e)}") from None
        ex, threads = self._executor(submitit, folder, len(items))
        records = [folder / "runs" / _record_name(label(it), run_dir(it)) for it in items]
        jobs: dict[int, object] = {}
        try:
            for i, item in enumerate(items):
                job = _earlier_job(records[i])
                if job is not None:
                    log(f"collect {label(item)}: job {job.job_id} of an earlier invocation is still "
                        f"{_state(job).lower()} (log: {job.paths.stderr})")
                else:
                    try:
                        job = ex.submit(SubmittedRun(fn, item, threads))
                    except Exception as e:       # noqa: BLE001 -- sbatch refused it (bad partition, account, ...)
                        self._cancel(jobs.values())
                        raise UserError(f"submitting {label(item)} failed: {_submit_error(e)}") from None
                    _save_record(records[i], job)
                    if self.kind == TEST_EXECUTOR:   # a local file system: no need to wait 15 s for a lost result
                        job._results_timeout_s = 1
                    if on_start:
                        on_start(item, f"job {job.job_id}; log: {job.paths.stderr}")
                jobs[i] = job
        except KeyboardInterrupt:
            n = self._cancel(jobs.values())
            log(f"interrupted: cancelled {n} job(s); run the same command again to resume")
            raise
        results: dict[int, object] = {}
        failures: list[parallel.JobFailure] = []
        poll = self.poll_s if self.poll_s is not None else (0.5 if self.kind == TEST_EXECUTOR else 15.0)
        pending = set(jobs)
        try:
            while pending:
                for i in sorted(pending):
                    job = jobs[i]
                    if not job.done():
                        continue
                    pending.discard(i)
                    try:
                        results[i] = job.results()[0]
                    except Exception as e:    # noqa: BLE001 -- submitit's FailedJobError / UncompletedJobError
                        f = parallel.JobFailure(items[i], f"{label(items[i])} ({run_dir(items[i])})",
                                                _failure_line(e, job), str(job.paths.stderr))
                        failures.append(f)
                        report(f.line())
                        continue
                    if on_done:
                        on_done(items[i], results[i])
                if pending:
                    time.sleep(poll)
        except KeyboardInterrupt:
            n = self._cancel(jobs[i] for i in pending)
            log(f"interrupted: cancelled {n} job(s); run the same command again to resume")
            raise
        out = [results.get(i) for i in range(len(items))]
        if failures:
            raise parallel.JobsFailed(f"{len(failures)} of {len(items)} {what} failed (one line each above)",
                                      failures, out)
        return out

    @staticmethod
    def _cancel(jobs) -> int:
        n = 0
        for job in jobs:
            try:
                job.cancel(check=False)
                n += 1
            except Exception:             # noqa: BLE001 -- already gone
                pass
        return n


def _state(job) -> str:
    try:
        return str(job.state)
    except Exception:                     # noqa: BLE001
        return "UNKNOWN"


def _earlier_job(record: Path):
    """The job an earlier invocation submitted for this run, if it is still queued or running; else None."""
    try:
        with open(record, "rb") as fh:
            job = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, TypeError):
        return None
    try:
        if job.done(force_check=True):
            return None
    except Exception:                     # noqa: BLE001 -- sacct unavailable etc.: submit anew
        return None
    # UNKNOWN (e.g. a job long gone from sacct) is submitted anew rather than waited for
    return job if _state(job).upper() in ACTIVE_STATES else None


def _save_record(record: Path, job) -> None:
    tmp = record.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(job, fh)
        os.replace(tmp, record)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass                              # only costs the collection of a still-running job by a later invocation


def _submit_error(e: BaseException) -> str:
    text = str(e)
    out = getattr(e, "output", None) or getattr(e, "stderr", None)
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    lines = [ln.strip() for ln in (out or text).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


_RAISED = re.compile(rf"^(?:{re.escape(RunFailed.__module__)}\.)?{RunFailed.__name__}: (.*)$")


def _failure_line(e: BaseException, job) -> str:
    """One line for a failed job: the run's own reason when the job ran it, else what submitit knows."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = _RAISED.match(ln.strip())
        if m:
            return m.group(1)
    last = parallel._last_log_line(str(job.paths.stderr))
    state = _state(job)
    return (f"its job ended without a result (state {state}: killed, timed out or out of memory?)"
            + (f"; last log line: {last}" if last else ""))


def describe(executor) -> str:
    if isinstance(executor, SubmititExecutor):
        opts = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in executor.params.items())
        return f"{executor.kind}" + (f" ({opts})" if opts else "")
    return "local"
