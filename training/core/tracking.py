"""Experiment tracking: TensorBoard and W&B as optional sinks beside metrics.jsonl (``--log tensorboard,wandb``).

metrics.jsonl stays the source of truth: a sink receives exactly the records appended to it (their numbers; None
and text left out), at evaluation cadence, in the training process, from rank 0 alone, so the training step itself
never waits on a sink. Where the files go:

* TensorBoard: RUN/tensorboard/ (``tensorboard --logdir runs``), one scalar per record key at the record's step;
* W&B: RUN/wandb/ -- offline (``wandb sync RUN/wandb/offline-run-*`` uploads it later) unless WANDB_MODE says
  otherwise or WANDB_API_KEY is set; the run's id is kept in RUN/wandb/run-id, so a resumed run continues it.

Resuming from step S: the records after S that the stopped session had logged are computed again, so TensorBoard
is reopened with ``purge_step=S+1`` (its readers drop the stale events from S+1 on); W&B continues the same run and
drops (with a warning, when synced) the steps it already has: they keep the first session's values, which an exact
resume recomputes but for ``elapsed_s``. A sink that has no log
of the run yet (enabled only at the resume) is first given the records up to S from metrics.jsonl.

:func:`log_summary` lets a study or an analysis log its headline numbers to the same sinks.
"""
from __future__ import annotations

import math
import os
import secrets
from pathlib import Path
from typing import Iterable, Protocol

from training.core.config import LOG_SINKS
from training.core.errors import UserError

INSTALL = "pip install -e '.[tracking]'"
_PACKAGES = {"tensorboard": ("tensorboard", "torch.utils.tensorboard"), "wandb": ("wandb", "wandb")}


class Sink(Protocol):
    def log(self, record: dict) -> None: ...           # one metrics.jsonl record (its "step" is the x axis)
    def summary(self, values: dict, step: int) -> None: ...
    def close(self, failed: bool = False) -> None: ...


def parse_flag(values: Iterable[str]) -> tuple[str, ...]:
    """``--log`` values (repeatable, each possibly comma-separated; ``none`` = no sink) -> the config's ``log``."""
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    return () if names == ("none",) else names


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a record, but its step: None, text, booleans and non-finite values are left out."""
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def require(names: Iterable[str]) -> None:
    """Import the packages of the sinks ``names`` now, before anything is trained: a missing one is one line."""
    import importlib
    for name in names:
        if name not in LOG_SINKS:
            raise UserError(f"unknown log sink '{name}' (choose from {', '.join(LOG_SINKS)})")
        package, module = _PACKAGES[name]
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise UserError(f"--log {name} needs the {package} package, which is not importable here ({e}); install "
                            f"the tracking extra: {INSTALL}") from None


class TensorBoardSink:
    def __init__(self, run_dir: Path, purge_from: int | None = None):
        """``purge_from``: the first step this session logs; older events of a stopped session from there on are
        stale (hidden by TensorBoard's readers). None: nothing is stale (a summary added to the log)."""
        require(["tensorboard"])
        from torch.utils.tensorboard import SummaryWriter
        self.logdir = Path(run_dir) / "tensorboard"
        self.fresh = not any(self.logdir.glob("events.out.tfevents.*"))
        self.writer = SummaryWriter(str(self.logdir), purge_step=None if self.fresh else purge_from)

    def log(self, record: dict) -> None:
        for k, v in scalars(record).items():
            self.writer.add_scalar(k, v, global_step=int(record["step"]))
        self.writer.flush()

    def summary(self, values: dict, step: int) -> None:
        self.log({"step": step, **{f"summary/{k}": v for k, v in values.items()}})

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class WandbSink:
    def __init__(self, run_dir: Path, name: str, config: dict | None = None):
        require(["wandb"])
        import wandb
        root = Path(run_dir) / "wandb"
        id_file = root / "run-id"
        self.fresh = not id_file.exists()
        run_id = secrets.token_hex(4) if self.fresh else id_file.read_text().strip()
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        root.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(dir=str(run_dir), mode=mode, id=run_id, resume="allow", name=name, config=config,
                                  project=os.environ.get("WANDB_PROJECT", "trajectory-geometry"),
                                  settings=wandb.Settings(console="off"))
        except Exception as e:             # wandb's own errors (no login, no network, a bad setting): one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--log wandb: W&B did not start in {mode} mode ({first}); set WANDB_MODE=offline to "
                            "log offline") from None
        if self.fresh:
            from training.core.runio import atomic_write_text
            atomic_write_text(id_file, run_id + "\n")

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=int(record["step"]))

    def summary(self, values: dict, step: int) -> None:
        for k, v in scalars(values).items():
            self.run.summary[k] = v

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class Sinks:
    """The sinks of one run: none, or those of ``cfg.log``, fed the same records as metrics.jsonl."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    def open(self, names: Iterable[str], run_dir: Path, config: dict | None = None, start: int | None = None,
             history: Iterable[dict] = ()) -> "Sinks":
        """Open the sinks ``names`` of the run in ``run_dir``; ``start`` is the step a resume continues from (None
        for a fresh run) and ``history`` the records of metrics.jsonl up to it (given to a sink with no log yet)."""
        history = list(history) if start is not None else []
        return self._open(names, run_dir, config, 0 if start is None else start + 1, history)

    def _open(self, names, run_dir, config, purge_from, history) -> "Sinks":
        try:
            for name in names:
                sink = (TensorBoardSink(run_dir, purge_from) if name == "tensorboard"
                        else WandbSink(run_dir, Path(run_dir).resolve().name, config))
                self.sinks.append(sink)
                if sink.fresh:
                    for r in history:
                        sink.log(r)
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def log(self, record: dict) -> None:
        for s in self.sinks:
            s.log(record)

    def summary(self, values: dict, step: int = 0) -> None:
        for s in self.sinks:
            s.summary(values, step)

    def close(self, failed: bool = False) -> None:
        sinks, self.sinks = self.sinks, []
        for s in sinks:
            s.close(failed)


def log_summary(run_dir: str | Path, names: Iterable[str], values: dict, step: int | None = None) -> None:
    """Log a study's or an analysis's headline numbers ``{name: number}`` of the run in ``run_dir`` to the sinks
    ``names``: TensorBoard scalars ``summary/<name>`` at ``step`` (default: the run's last recorded step), W&B run
    summary keys of the run's W&B run (its id from RUN/wandb/run-id). A no-op without sinks."""
    names = list(names)
    if not names:
        return
    if step is None:
        from training.core.runio import iter_metrics
        step = max((int(r["step"]) for r in iter_metrics(Path(run_dir)) if isinstance(r.get("step"), int)), default=0)
    sinks = Sinks()._open(names, Path(run_dir), None, None, ())       # appended: nothing of the log is stale
    try:
        sinks.summary(values, step)
    finally:
        sinks.close()
