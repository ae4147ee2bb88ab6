"""The training loop: composite loss, accumulation, clipping, evaluation, checkpoints, exact resumption.

Resumption is exact because every source of randomness is either stateless or saved: batches are a
pure function of (data seed, step, micro-batch) (see :mod:`training.core.data`), the optimizer state, the
torch RNG state and the running loss sums are saved with every checkpoint, and the weights are read
back from the fp32 checkpoint. A run killed at any moment and resumed writes bitwise the same
checkpoints (on the CPU) as one never interrupted.
"""
from __future__ import annotations

import contextlib
import shutil
import signal
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from training.core import control, gramcache, runio, tracking
from training.core.config import Config, checkpoint_steps, eval_steps, keeps_optimizer_state
from training.core.devices import resolve_device  # noqa: F401 (the trainer's device; importable from here too)
from training.core.distributed import SINGLE, Dist, check_config, forward_backward_ddp
from training.core.errors import UserError
from training.core.losses import composite_loss
from training.core.model import GPT, trunk_parameters, trunk_size
from training.core.optim import build_optimizer, lambda_at, lr_at, optimizer_step, set_lr
from training.core.optim import diagnostics as optimizer_diagnostics
from training.core.tasks import prepare_task, validate


# ---------------------------------------------------------------------------- device helpers
def autocast_context(cfg: Config, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------- run setup
def run_name(cfg: Config) -> str:
    """A run-directory name that encodes what usually differs between runs."""
    lam = f"{cfg.lambda_probe:g}" + (f"-{cfg.lambda_after:g}@{cfg.lambda_step}" if cfg.lambda_after != cfg.lambda_probe else "")
    parts = [cfg.preset or "custom", cfg.optimizer, f"lr{cfg.lr:g}", f"wd{cfg.wd:g}"]
    if cfg.optimizer == "adamw":
        parts.append(f"b2{cfg.beta2:g}")
    parts += [f"lam{lam}", f"p{cfg.p_probe:g}", f"s{cfg.seed}"]
    if cfg.init_from:
        parts.append("init-" + Path(cfg.init_from).stem)
    return "_".join(parts)


def build_model(cfg: Config, vocab_size: int, device: torch.device | str = "cpu") -> GPT:
    torch.manual_seed(cfg.seed)
    with torch.device(device):
        return GPT(cfg, vocab_size)


def forward_backward(fwd, optimizer, get_batch, grad_accum: int, lam: float, grad_clip: float,
                     params: list[torch.Tensor], amp, before_clip=None) -> dict[str, torch.Tensor]:
    """Gradients of one optimizer step: accumulate over micro-batches, then clip the global norm.

    Returns detached sums over the micro-batches (loss, lm, probe·n_probe, probe_n) and the
    pre-clipping gradient norm. ``get_batch(micro)`` supplies the micro-batches on the device.
    ``before_clip()``, when given, edits the accumulated gradients before clipping (subspace suppression).
    """
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, torch.Tensor] = {}
    for micro in range(grad_accum):
        b = get_batch(micro)
        with amp():
            logits = fwd(b.x)
        parts = composite_loss(logits, b.y, b.probe_mask, lam)
        (parts.loss / grad_accum).backward()
        for k, v in (("loss", parts.loss), ("lm", parts.lm), ("probe", parts.probe * parts.n_probe),
                     ("probe_n", parts.n_probe)):
            sums[k] = sums[k] + v.detach() if k in sums else v.detach()
    if before_clip is not None:
        before_clip()
    sums["gnorm"] = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    return sums


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise _Interrupted(signal.Signals(signum).name)


# ---------------------------------------------------------------------------- training
class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, resume: bool, dist: Dist = SINGLE, overwrite: bool = False):
        self.cfg, self.run_dir, self.resume, self.overwrite = cfg, Path(run_dir), resume, overwrite
        self.dist = dist         # under torchrun: this rank (training.core.distributed); rank 0 alone writes

    def _precheck(self) -> str | None:
        """The final state of a run that needs no training (resume of a finished run), else None.

        Refuses, before anything is written, every start that would overwrite results: a fresh run into a
        directory that holds one (unless ``overwrite``: then the old content is moved aside), and a resume
        of a run that has results but no resume state to continue them exactly.
        """
        run_dir = self.run_dir
        if self.resume:
            status = runio.read_status(run_dir) or {}
            if status.get("state") in ("completed", "diverged"):
                print(f"run {run_dir} is already {status['state']} at step {status.get('step')}; nothing to do")
                return status["state"]
            if not (run_dir / runio.STATE_FILE).exists() and runio.has_progress(run_dir):
                raise UserError(
                    f"cannot resume {run_dir}: it has {', '.join(runio.run_contents(run_dir))} but no "
                    f"{runio.STATE_FILE}, so it cannot continue exactly; nothing was changed. To train it again from "
                    f"step 0: python training/pilot.py --config {run_dir}/config.json --out-dir {run_dir} --overwrite "
                    "(moves the old content aside), or choose another --out-dir")
            return None
        have = runio.run_contents(run_dir)
        if not have:
            return None
        if self.overwrite:
            dest = runio.move_aside(run_dir)
            print(f"moved the previous content of {run_dir} to {dest}", file=sys.stderr)
            return None
        raise UserError(f"run directory {run_dir} already holds a run ({', '.join(have)}); pass --resume to continue "
                        "it, --overwrite to move it aside and start again, or choose another --out-dir")

    def run(self) -> str:
        """Train (or resume) the run; return the final state: completed or diverged."""
        runio.check_out_dir(self.run_dir)
        created = self.dist.is_main and not self.resume and not self.run_dir.exists()
        with self.dist.main_context(lambda: runio.RunLock(self.run_dir)):
            try:
                done = self.dist.on_main(self._precheck)
                if done is not None:
                    return done
                validate(self.cfg)
                check_config(self.cfg, self.dist)
                self.dist.on_main(lambda: tracking.require(self.cfg.log))   # a missing package stops it here
            except BaseException:
                self._remove_if_unstarted(created)
                raise
            old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM,)}
            try:
                return self._train()
            except _Interrupted as e:
                if self.dist.is_main and getattr(self, "started", False):
                    self._mark_failed(f"interrupted by {e}; resume with --resume")
                raise UserError(f"interrupted by {e}; resume with: python training/pilot.py --resume --out-dir {self.run_dir}")
            except BaseException as e:
                if self.dist.is_main and getattr(self, "started", False):
                    msg = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
                    self._mark_failed(msg + "; resume with --resume")
                self._remove_if_unstarted(created)
                raise
            finally:
                getattr(self, "sinks", tracking.Sinks()).close(failed=True)   # no-op after _finish closed them
                writer = getattr(self, "writer", None)
                if writer is not None:       # pending checkpoint writes finish before the process goes on
                    try:
                        writer.close()
                    except OSError:          # already reported by the training thread (join) or superseded
                        pass
                for s, h in old.items():
                    signal.signal(s, h)

    def _mark_failed(self, message: str) -> None:
        """status.json -> failed; a failure to write it (the disk that stopped the run) must not hide the cause."""
        try:
            runio.write_status(self.run_dir, "failed", getattr(self, "step", 0), message)
        except OSError as e:
            print(f"warning: could not mark {self.run_dir} as failed ({e.strerror}); its status.json still says "
                  "running", file=sys.stderr)

    def _remove_if_unstarted(self, created: bool) -> None:
        """A fresh run that stopped before its config.json was written leaves no directory behind, when this
        process created the directory (everything in it is then this process's own, half-made files)."""
        if created and self.run_dir.is_dir() and not (self.run_dir / "config.json").exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ----- the loop: build, restore or start, then step / record / checkpoint until done
    def _train(self) -> str:
        cfg = self.cfg
        self.step = 0
        self.main = self.dist.is_main                   # rank 0 alone writes the run directory
        init_note = self._build()
        state = runio.load_state(self.run_dir) if self.resume else None
        self.start = self._restore(state) if state is not None else self._begin(init_note)
        if self.main:
            runio.write_status(self.run_dir, "running", self.start)
        self.gram = self._online_gram(state)
        self.started = True          # from here on a failure marks the run failed (before it, nothing was changed)
        self.sinks = tracking.Sinks()                   # TensorBoard / W&B beside metrics.jsonl (rank 0; --log)
        if cfg.log:
            self.dist.on_main(lambda: self.sinks.open(cfg.log, self.run_dir, cfg.to_dict(), None if state is None
                                                      else self.start, runio.read_metrics(self.run_dir)) and None)
        self._wrap_data_parallel()
        self.t0 = time.monotonic()
        self.writer = runio.BackgroundWriter(
            enabled=cfg.async_checkpoints if cfg.async_checkpoints is not None else self.device.type == "cuda")
        self.p_ood_history = self.dist.on_main(lambda: [r["p_ood"] for r in runio.read_metrics(self.run_dir)
                                                        if r.get("p_ood") is not None])
        if state is None:
            self._record(0)
            self._checkpoint(0)

        ckpt_at, eval_at = set(checkpoint_steps(cfg)), set(eval_steps(cfg))
        self.model.train()
        self.bar = tqdm(total=cfg.steps, initial=self.start, desc="train", unit="step", dynamic_ncols=True,
                        disable=not (cfg.progress and self.main and sys.stderr.isatty()))
        for step in range(self.start + 1, cfg.steps + 1):
            self.step = step
            if not self._step(step):
                return self._finish("diverged", step, f"non-finite loss or gradient at step {step}; the last "
                                                      "checkpoint before it is usable")
            self.bar.update(1)
            if step in eval_at:
                self._record(step)
            if step in ckpt_at:
                self._checkpoint(step)
                if self.main:
                    runio.write_status(self.run_dir, "running", step)
            if cfg.early_stop and step in ckpt_at and self._probe_learned():
                return self._finish("completed", step, "early stop: the last 5 p_ood values are >= 0.8")
        return self._finish("completed", cfg.steps, f"finished {cfg.steps} steps in {self._elapsed():.1f} s")

    def _build(self) -> dict:
        """Device, task, model (from ``init_from`` when set), optimizer; return what provenance records of the
        start files. The order is part of the numerics: the model is built under ``manual_seed(seed)``."""
        cfg = self.cfg
        self.device = device = resolve_device(cfg.device)
        self.amp = lambda: autocast_context(cfg, device)
        if cfg.init_from:            # before the task writes a tokenizer: a checkpoint that cannot fit stops here
            shapes, meta = runio.checkpoint_header(cfg.init_from)
            with torch.device("meta"):
                probe = GPT(cfg, shapes.get("tok_emb.weight", (1,))[0])
            runio.check_fits(probe, cfg.init_from, shapes, meta)
        self.task = self.dist.main_first(lambda: prepare_task(cfg, self.run_dir))
        self.model = model = build_model(cfg, self.task.tok.vocab_size, "cpu")
        init_note = {}
        if cfg.init_from:
            meta = runio.load_weights(model, cfg.init_from)
            init_note = {"init_from": str(cfg.init_from), "init_step": meta.get("step")}
        model.to(device)
        self.optimizer, self.spec = build_optimizer(model, cfg, device)
        if cfg.init_optimizer:
            runio.load_optimizer_moments(self.optimizer, cfg.init_optimizer, int(meta.get("step", -1)),
                                         meta.get("config_hash", ""))
            init_note["init_optimizer"] = str(cfg.init_optimizer)
        self.fwd = torch.compile(model) if cfg.compile else model
        self.chash = cfg.hash()
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.suppressor = None
        if control.active(cfg):      # subspace suppression (training/core/control.py)
            if self.dist.enabled:
                raise UserError("subspace suppression (suppress_strength > 0) is not supported under torchrun; "
                                "train in one process")
            self.suppressor = control.Suppressor(cfg, [p for _, p in trunk_parameters(model)])
        return init_note

    def _restore(self, state: dict) -> int:
        """Continue from the resume state: weights, optimizer, RNG and running sums; return its step."""
        if state.get("config_hash") != self.chash:
            raise UserError(f"resume state of {self.run_dir} was written by a different config; start a new run")
        start = int(state["step"])
        if state.get("model") is not None:     # the run stores reduced checkpoints (trunk-only / bf16)
            self.model.load_state_dict(state["model"])
        else:
            runio.load_weights(self.model, runio.checkpoint_path(self.run_dir, start))
        runio.load_bias_stats(self.run_dir, start, self.model)  # disordered attention: draw counters (else no-op)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.acc, self.elapsed0 = dict(state["acc"]), float(state["elapsed_s"])
        if self.suppressor is not None:
            self.suppressor.load_state_dict(state.get("suppression"))
        if self.main:
            runio.truncate_metrics(self.run_dir, start)
            print(f"resuming {self.run_dir} from step {start}")
        return start

    def _begin(self, init_note: dict) -> int:
        """A fresh run: write config.json (and start metrics.jsonl empty); return step 0."""
        self.acc, self.elapsed0 = _new_acc(), 0.0
        if self.suppressor is not None:
            self.suppressor.start()          # a given basis is read (and checked) before anything is written
        if self.main:
            cfg, task = self.cfg, self.task
            runio.atomic_write_json(self.run_dir / "config.json", {
                "config": cfg.to_dict(), "config_hash": self.chash,
                "provenance": {**runio.provenance(), **init_note},
                "vocab_size": task.tok.vocab_size, "tokenizer": task.tok.identity,
                "n_params": self.model.num_params(), "trunk_params": trunk_size(cfg)})
            (self.run_dir / "metrics.jsonl").unlink(missing_ok=True)
        return 0

    def _online_gram(self, state: dict | None) -> gramcache.OnlineGram | None:
        """gram_online: the Gram caches kept current at every checkpoint (rank 0), adopting those of a resumed run."""
        if not (self.cfg.gram_online and self.main):
            return None
        gram = gramcache.OnlineGram(self.run_dir, self.cfg, self.cfg.gram_online_mem_mb * 2**20,
                                    log=lambda msg: print(f"gram_online: {msg}"))
        if state is not None:
            gram.resume(self.start)
        return gram

    def _wrap_data_parallel(self) -> None:
        """Under torchrun, gradients are averaged over the ranks; evaluation keeps the plain model."""
        self.train_fwd, self.ddp = self.fwd, None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None)
            self.train_fwd = torch.compile(self.ddp) if self.cfg.compile else self.ddp

    def _elapsed(self) -> float:
        return self.elapsed0 + time.monotonic() - self.t0

    def _step(self, step: int) -> bool:
        """Update ``step``: learning rate and λ of the schedule, gradients, the optimizer's update, the running
        sums. False (nothing added to the sums) when the loss or the gradient is not finite."""
        cfg, task, optimizer, device = self.cfg, self.task, self.optimizer, self.device
        lr, lam = lr_at(cfg, step), lambda_at(cfg, step)
        if task.resets_optimizer(step):
            optimizer.state.clear()        # a curriculum stage that restarts the optimizer (modadd)
        set_lr(optimizer, lr)
        sup = self.suppressor
        if sup is not None and sup.due(step):
            sup.refresh(self.fwd, task.train_batch(step, 0).to(device), lam, self.amp)

        def gradients() -> dict:
            if self.dist.enabled:       # this rank's slice of the same global batch
                return forward_backward_ddp(self.train_fwd, self.ddp, optimizer, lambda m: task.train_batch(step, m),
                                            cfg.grad_accum, lam, cfg.grad_clip, self.trainable, self.amp, self.dist,
                                            device)
            return forward_backward(self.fwd, optimizer, lambda m: task.train_batch(step, m).to(device),
                                    cfg.grad_accum, lam, cfg.grad_clip, self.trainable, self.amp,
                                    None if sup is None else sup.project)

        sums, finite = optimizer_step(optimizer, self.spec, gradients, cfg.grad_accum)
        if not finite:
            return False
        acc = self.acc
        acc["loss"] += float(sums["loss"])
        acc["lm"] += float(sums["lm"])
        acc["probe"] += float(sums["probe"])
        acc["probe_n"] += int(sums["probe_n"])
        acc["n"] += cfg.grad_accum
        acc["gnorm"] += float(sums["gnorm"])
        acc["steps"] += 1
        return True

    def _record(self, step: int) -> None:
        """Evaluate, append one line to metrics.jsonl (the training means since the last one beside it)."""
        cfg, acc = self.cfg, self.acc
        m = self.dist.on_main(lambda: self.task.evaluate(self.fwd, self.device, self.amp))
        n = max(1, acc["n"])
        rec = {"step": step, "tokens": step * cfg.tokens_per_step, "lr": lr_at(cfg, step) if step else 0.0,
               "lambda": lambda_at(cfg, max(step, 1)),
               "train_loss": acc["loss"] / n if acc["n"] else None,
               "train_lm_loss": acc["lm"] / n if acc["n"] else None,
               "train_probe_loss": acc["probe"] / acc["probe_n"] if acc["probe_n"] else None,
               "grad_norm": acc["gnorm"] / acc["steps"] if acc["steps"] else None,
               **optimizer_diagnostics(self.optimizer, self.spec),   # ECD's drift/turn
               **m, **(self.suppressor.record() if self.suppressor is not None else {}),
               "elapsed_s": round(self._elapsed(), 3)}
        if self.main:
            runio.append_metrics(self.run_dir, rec)
            self.sinks.log(rec)                          # the same record, at evaluation cadence only
            tqdm.write(_format_record(rec), file=sys.stderr)
        acc.update(_new_acc())
        if "p_ood" in m:
            self.p_ood_history.append(m["p_ood"])

    def _probe_learned(self) -> bool:
        """Early stopping's rule: the last five evaluations all have p_ood >= 0.8."""
        return len(self.p_ood_history) >= 5 and min(self.p_ood_history[-5:]) >= 0.8

    def _checkpoint(self, step: int) -> None:
        """Checkpoint ``step`` and the resume state that points at it (in the writer thread on a GPU)."""
        if not self.main:
            return
        cfg, run_dir, model, chash = self.cfg, self.run_dir, self.model, self.chash
        tensors = runio.checkpoint_tensors(model, cfg.ckpt_contents, cfg.ckpt_dtype)
        runio.save_bias_stats(run_dir, step, model)       # disordered attention: <checkpoint>.attn_bias.json
        st = {"step": step, "config_hash": chash, "optimizer": self.optimizer.state_dict(),
              "torch_rng": torch.get_rng_state(),
              "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
              "acc": dict(self.acc), "elapsed_s": self._elapsed()}
        if self.suppressor is not None:
            st["suppression"] = self.suppressor.state_dict()
        if (cfg.ckpt_contents, cfg.ckpt_dtype) != ("full", "fp32"):
            # reduced checkpoints (trunk-only / bf16) cannot restore the run: keep its fp32 weights here
            st["model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if self.writer.enabled:                          # written later by the writer thread: snapshot now
            st = runio.host_copy(st)

        def write() -> None:     # checkpoint first, then the resume state that points at it
            runio.write_checkpoint(run_dir, step, tensors, chash, cfg.ckpt_contents, cfg.ckpt_dtype, cfg.ckpt_shards)
            if self.gram is not None:    # before the resume state: a resume never finds a checkpoint its cache lacks
                self.gram.update(step, tensors)
            runio.save_state(run_dir, st)
            if keeps_optimizer_state(cfg, step):
                runio.atomic_write(runio.optimizer_state_path(run_dir, step), lambda tmp: torch.save(
                    {"step": step, "config_hash": chash, "optimizer": st["optimizer"]}, tmp))
        self.writer.submit(write)

    def _finish(self, state: str, step: int, message: str) -> str:
        """The run ends (completed or diverged): pending checkpoint writes land, then status.json says so."""
        self.bar.close()
        self.writer.join()
        if self.gram is not None:        # a run resumed at its last checkpoint (or switched on then) catches up
            self.gram.update(runio.list_checkpoints(self.run_dir)[-1])
        self.sinks.close()
        if self.main:
            runio.write_status(self.run_dir, state, step, message)
            if state == "diverged":
                print(f"diverged: {message}", file=sys.stderr)
        return state


def _new_acc() -> dict:
    return {"loss": 0.0, "lm": 0.0, "probe": 0.0, "probe_n": 0, "n": 0, "gnorm": 0.0, "steps": 0}


def _format_record(r: dict) -> str:
    def f(k, fmt):
        v = r.get(k)
        return "-" if v is None else format(v, fmt)
    return (f"step {r['step']:>6} | train {f('train_loss', '.3f')} | val {f('val_loss', '.3f')} | "
            f"p_in {f('p_in', '.3f')} | p_ood {f('p_ood', '.3f')} | nll_ood {f('nll_ood', '.2f')} | "
            f"lr {r['lr']:.2e} | lam {r['lambda']:g} | {r['elapsed_s']:.0f}s")
