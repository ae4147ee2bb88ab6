"""Data-parallel training under ``torchrun``: process group, the per-rank slice of the global batch.

``torchrun --nproc_per_node N training/pilot.py ...`` starts N copies of the training command with
RANK / WORLD_SIZE / LOCAL_RANK in their environment. :func:`from_env` joins them into one process
group (nccl on CUDA, gloo on the CPU) and returns a :class:`Dist` describing this rank; without those
variables it returns the single-process description, and the trainer then runs exactly the code it
runs without torchrun.

How the N ranks reproduce the single-process run:

* **The same global batch.** Batches are a pure function of (data seed, step, micro-batch), so every
  rank draws the full micro-batch the single process would draw and keeps its contiguous slice of
  ``batch_size / N`` rows. The token counts that normalise the loss (ordinary targets, probe targets)
  are taken from the *full* micro-batch, so rank r back-propagates
  ``N · (Σ_r lm CE / n_lm + λ · Σ_r probe CE / n_probe) / grad_accum``; DistributedDataParallel
  averages the gradients over the N ranks, which makes the update the gradient of exactly the
  single-process loss (summed in a different order: equal within fp32 round-off).
* **One writer.** Rank 0 alone holds the run lock and writes config, metrics, checkpoints, resume
  state and status; the other ranks only read (the tokenizer and codewords rank 0 recorded, the resume
  state on ``--resume``).
* **One state.** All ranks start from the same weights (same seed, or the same checkpoint on resume);
  the averaged gradients, clipping and optimizer step are then identical on every rank. Logged
  training losses are all-reduced; evaluation runs on rank 0 and its numbers are broadcast.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from training.core.errors import UserError
from training.core.losses import IGNORE, token_ce


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ collectives (no-ops alone)
    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def main_first(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0, then on the others (for steps that create files the others then read).

        A UserError on rank 0 is passed to every rank, so all of them stop with the same one-line message
        instead of the others waiting for ever in the next collective.
        """
        if not self.enabled:
            return fn()
        err, out = None, None
        if self.is_main:
            try:
                out = fn()
            except UserError as e:
                err = str(e)
        err = self.broadcast_object(err)
        if err is not None:
            raise UserError(err)
        if not self.is_main:
            out = fn()
        return out

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed on rank 0 only and its result broadcast (a UserError is raised on every rank)."""
        if not self.enabled:
            return fn()
        out, err = None, None
        if self.is_main:
            try:
                out = fn()
            except UserError as e:
                err = str(e)
        out, err = self.broadcast_object((out, err))
        if err is not None:
            raise UserError(err)
        return out

    @contextlib.contextmanager
    def main_context(self, factory: Callable[[], Any]):
        """Enter ``factory()`` (e.g. the run lock) on rank 0 only; a refusal there stops every rank."""
        if not self.enabled:
            with factory():
                yield
            return
        with contextlib.ExitStack() as stack:
            self.on_main(lambda: stack.enter_context(factory()) and None)
            yield

    def slice_rows(self, n: int) -> slice:
        """This rank's contiguous rows of a micro-batch of ``n`` rows."""
        per = n // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


SINGLE = Dist()


def from_env(device_name: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join the torchrun process group described by the environment (or return the single-process Dist)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    import torch.distributed as td
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "mps":
        raise UserError("multi-process training supports --device cuda or cpu, not mps")
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s); "
                            "lower --nproc_per_node")
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return Dist(rank=rank, world=world, local_rank=local)


def shutdown(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_config(cfg, dist: Dist) -> None:
    if dist.enabled and cfg.batch_size % dist.world:
        raise UserError(f"batch_size={cfg.batch_size} does not split evenly over {dist.world} processes; "
                        f"choose a micro-batch that is a multiple of {dist.world}")


def forward_backward_ddp(fwd, ddp_model, optimizer, get_batch, grad_accum: int, lam: float, grad_clip: float,
                         params: list[torch.Tensor], amp, dist: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """The data-parallel counterpart of :func:`training.core.trainer.forward_backward` (same return values).

    ``get_batch(micro)`` returns the *full* micro-batch on the host; this rank moves its row slice to
    ``device`` and normalises by the full batch's counts. Gradients are all-reduced once per step
    (``no_sync`` on all micro-batches but the last). The returned sums are those of the whole global
    batch (all-reduced), so the logged losses equal the single-process ones.
    """
    optimizer.zero_grad(set_to_none=True)
    stats = torch.zeros(4, dtype=torch.float64, device=device)     # loss, lm, probe CE sum, n_probe
    for micro in range(grad_accum):
        full = get_batch(micro)
        valid = full.y != IGNORE
        probe = full.probe_mask & valid
        n_probe_all = int(probe.sum())
        n_lm_only = int((valid & ~probe).sum())
        n_lm_all = n_lm_only if lam != 0 else int(valid.sum())
        rows = dist.slice_rows(full.x.shape[0])
        b = type(full)(full.x[rows], full.y[rows], full.probe_mask[rows]).to(device)
        ctx = _null() if micro == grad_accum - 1 else ddp_model.no_sync()
        with ctx:
            with amp():
                logits = fwd(b.x)
            ce = token_ce(logits, b.y)
            v = b.y != IGNORE
            p = b.probe_mask & v
            lm_mask = (v & ~p) if lam != 0 else v
            lm_part = (ce * lm_mask).sum() / max(1, n_lm_all)
            probe_sum = (ce * p).sum()
            loss_part = lm_part + lam * (probe_sum / max(1, n_probe_all)) if lam != 0 else lm_part
            (loss_part * (dist.world / grad_accum)).backward()
        with torch.no_grad():
            lm_only = lm_part if lam != 0 else (ce * (v & ~p)).sum() / max(1, n_lm_only)
            stats += torch.stack([loss_part.detach(), lm_only.detach(), probe_sum.detach(),
                                  p.sum().to(probe_sum.dtype)]).double()
    dist.all_reduce_sum(stats)
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    return {"loss": stats[0], "lm": stats[1], "probe": stats[2], "probe_n": stats[3].round().long(), "gnorm": gnorm}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
