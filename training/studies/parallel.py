"""Independent runs side by side in child processes (e.g. the learning rates of a reheating grid on a CPU).

Small models use two cores poorly from one process (the quick model trains about 1.7x faster on two threads than on
one, not 2x), so on a CPU several one-thread runs at once finish sooner than the same runs one after another with
all threads each. :func:`run_jobs` runs ``fn(item)`` for each item in up to ``jobs`` child processes:

* by default every run starts at once (up to 4 per core), each with an even share of the cores (at least one
  thread);
* children are started with ``spawn`` (never ``fork`` after torch has started its thread pools) and each gets
  ``threads`` intra-op threads;
* on Linux a child is killed when its parent dies (``PR_SET_PDEATHSIG``), so killing the command never leaves a
  run training on in the background and holding its run-directory lock; the runs resume when the command is run
  again (their writes are atomic);
* a child's stdout and stderr go to a log file of the caller's choice (``log_path(item)``), so the output of
  several runs is not interleaved;
* an item that fails (a :class:`~training.core.errors.UserError`, any other exception, or a child process that
  dies) does not stop the others: its log gets the error (the whole traceback when it is not a UserError), the
  terminal gets one line -- ``failed: <name>: <last line> (log: <file>)`` -- as soon as it is known, and once every
  item has ended :class:`JobsFailed` (a UserError, so the command ends with one ``error:`` line) lists them.

With ``jobs == 1`` everything runs in this process, one item after another, with the same failure handling.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from training.core.errors import UserError


def cpu_count() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                         # not Linux
        return max(1, os.cpu_count() or 1)


def plan_jobs(n_items: int, jobs: int | None, device: str = "cpu") -> tuple[int, int]:
    """(processes, threads per process) for ``n_items`` runs.

    ``jobs`` None = automatic: on a CPU every run at once (up to 4 per core), so that they all finish together
    -- with more runs than cores, two processes followed by a lone one-thread run would leave a core idle at the
    end (3 quick reheats on 2 cores: about 2 x 145 s that way, 3/2 x 145 s all at once); one process on an
    accelerator (several runs on one GPU gain little and share its memory). Threads split the cores evenly.
    """
    if jobs is not None and jobs < 1:
        raise UserError(f"--jobs must be at least 1 (got {jobs})")
    cores = cpu_count()
    if jobs is None:
        jobs = 1 if device not in ("cpu", "auto") or _has_cuda(device) else min(n_items, 4 * cores)
    jobs = max(1, min(jobs, max(1, n_items)))
    return jobs, max(1, cores // jobs)


def _has_cuda(device: str) -> bool:
    if device != "auto":
        return False
    return torch.cuda.is_available()


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)                # PR_SET_PDEATHSIG
    except OSError:                                  # no glibc: the child then outlives a killed parent
        pass


def _child_init(threads: int) -> None:
    _die_with_parent()
    torch.set_num_threads(threads)


@dataclass
class JobFailure:
    """One item that failed: its name, the one-line reason, and the log holding the details (if any)."""
    item: object
    name: str
    message: str
    log: str | None

    def line(self) -> str:
        return f"failed: {self.name}: {self.message}" + (f" (log: {self.log})" if self.log else "")


class JobsFailed(UserError):
    """Some items failed (each reported on its own line when it happened); ``failures`` lists them and
    ``results`` holds the results of the others (None for a failed item)."""

    def __init__(self, message: str, failures: list[JobFailure], results: list):
        super().__init__(message)
        self.failures, self.results = failures, results


class _ChildError(Exception):
    """What a child sends back for a failed item: the one-line reason (always picklable)."""


def _one_line(e: BaseException) -> str:
    if isinstance(e, (UserError, _ChildError)):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename + ': ' if e.filename else ''}{e.strerror}"
    else:
        text = f"{type(e).__name__}: {e}"
    return (text.strip().splitlines() or [type(e).__name__])[0]


def _record_failure(e: BaseException, log: str | None) -> str:
    """Append the failure to the item's log (a traceback for anything but a UserError); return its one line."""
    line = _one_line(e)
    if log is not None:
        try:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as fh:
                if not isinstance(e, UserError):
                    traceback.print_exception(e, file=fh)
                fh.write(f"error: {line}\n")
        except OSError:
            pass                     # the log cannot be written (e.g. a full disk): the line still reaches the terminal
    return line


def _last_log_line(log: str | None) -> str | None:
    try:
        lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return None
    return lines[-1].strip() if lines else None


def _child_call(fn: Callable, item, log: str | None):
    try:
        if log is None:
            return fn(item)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", buffering=1) as fh:
            old = sys.stdout, sys.stderr
            sys.stdout = sys.stderr = fh
            try:
                return fn(item)
            finally:
                sys.stdout, sys.stderr = old
    except Exception as e:          # noqa: BLE001 -- reported per item by the parent
        raise _ChildError(_record_failure(e, log)) from None


def run_jobs(fn: Callable, items: Sequence, jobs: int, threads: int,
             log_path: Callable[[object], str | Path] | None = None,
             on_start: Callable[[object], None] | None = None,
             on_done: Callable[[object, object], None] | None = None,
             name: Callable[[object], str] = str, what: str = "items",
             report: Callable[[str], None] | None = None) -> list:
    """``[fn(item) for item in items]``, in up to ``jobs`` child processes of ``threads`` threads each.

    ``fn`` must be a module-level function (it is pickled by reference). ``on_start(item)`` (when the item is
    handed to the pool; it may wait there for a free process) and ``on_done(item, result)`` (as soon as it has
    finished) run in this process, for progress lines. Results come back in item order.

    A failed item is reported as ``report(failure.line())`` (default: a line on stderr) using ``name(item)``;
    when all items have ended, :class:`JobsFailed` is raised if any failed. With ``jobs == 1`` the items run
    here, and their log (``log_path``) receives only a failure's details.
    """
    items = list(items)
    report = report or (lambda line: print(line, file=sys.stderr, flush=True))
    logs = [str(log_path(item)) if log_path else None for item in items]
    results: dict[int, object] = {}
    failures: list[JobFailure] = []

    def failed(i: int, message: str) -> None:
        f = JobFailure(items[i], name(items[i]), message, logs[i])
        failures.append(f)
        report(f.line())

    if jobs <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            if on_start:
                on_start(item)
            try:
                results[i] = fn(item)
            except Exception as e:           # noqa: BLE001 -- one line here, the details in the log
                failed(i, _record_failure(e, logs[i]))
                continue
            if on_done:
                on_done(item, results[i])
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_child_init,
                                 initargs=(threads,)) as pool:
            futures = {}
            for i, item in enumerate(items):
                if on_start:
                    on_start(item)
                futures[pool.submit(_child_call, fn, item, logs[i])] = i
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)     # report each as it ends
                    for f in sorted(done, key=futures.get):
                        i = futures[f]
                        try:
                            results[i] = f.result()
                        except BrokenProcessPool:
                            last = _last_log_line(logs[i])
                            failed(i, "its process died (killed, or out of memory?)"
                                   + (f"; last log line: {last}" if last else ""))
                            continue
                        except Exception as e:     # noqa: BLE001 -- the child's one line (_ChildError)
                            failed(i, _one_line(e))
                            continue
                        if on_done:
                            on_done(items[i], results[i])
            except BaseException:
                for f in pending:
                    f.cancel()
                _stop_children(pool)
                raise
    out = [results.get(i) for i in range(len(items))]
    if failures:
        raise JobsFailed(f"{len(failures)} of {len(items)} {what} failed (one line each above)", failures, out)
    return out


def _stop_children(pool: ProcessPoolExecutor) -> None:
    """Interrupt the running children (they save their state on SIGINT) so the pool can shut down."""
    for p in list(getattr(pool, "_processes", {}).values()):
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass
