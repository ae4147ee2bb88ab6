"""The run directory (README, "The run directory"): atomic writes, the single-writer lock, checkpoints, resume state, metrics.

Layout::

    RUN/config.json        resolved config + provenance
    RUN/status.json        {"state": running|completed|diverged|failed, "step": N, "message": ...}
    RUN/metrics.jsonl      one JSON object per evaluation, appended and flushed live
    RUN/codewords.json     probe codewords; RUN/tokenizer.json for a trained BPE
    RUN/checkpoints/step_000000.safetensors   fp32 weights (the tied head stored once); metadata step, config hash
    RUN/state/resume.pt    optimizer state, RNG states, loss accumulators and elapsed time at the latest checkpoint
    RUN/analysis/          analysis outputs

Every file is written to a temporary name in the same directory, flushed to disk and renamed into
place, so a reader never sees a half-written file.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from training.core.attention_bias import attention_biases
from training.core.config import Config
from training.core.errors import UserError
from training.core.model import TRUNK_SUFFIXES

CKPT_DIR = "checkpoints"
STATE_FILE = "state/resume.pt"
TIED = ("lm_head.weight",)      # stored once, as tok_emb.weight


# ---------------------------------------------------------------------------- atomic writes
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write_fn) -> None:
    """Call ``write_fn(tmp_path)`` then rename tmp_path to ``path`` after flushing it to disk."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_fn(tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(path.parent)
    except OSError as e:
        if e.errno is not None and (e.filename is None or str(e.filename) == str(tmp)):
            # the temporary name means nothing to the user: report the file that could not be written
            raise type(e)(e.errno, e.strerror, str(path)) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats by None so every file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def read_json(path: str | Path, what: str = "file") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is corrupt ({e}); restore it or start a new run") from None


# ---------------------------------------------------------------------------- where a run may be written
def check_out_dir(path: str | Path, what: str = "--out-dir") -> Path:
    """``path`` as a directory to write into: refused in one line when it, or a folder above it, is a file.

    The one check of a run or study directory (training/pilot.py, Trainer, every study's root), made
    before anything is created, so a bad path never gets as far as a traceback in a child process.
    """
    if not str(path).strip():
        raise UserError(f"{what} is empty; give a directory")
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_dir():
            break
        if p.exists() or p.is_symlink():
            kind = "a broken link" if not p.exists() else "a file"
            where = "is" if p == path else f"is inside {p}, which is"
            raise UserError(f"{what} {path} {where} {kind}, not a directory; choose another {what}")
    return path


def run_contents(run_dir: Path) -> list[str]:
    """What of a run ``run_dir`` holds (for messages): config.json, N checkpoints (up to step S), metrics, state.

    Files a run directory gets before its training starts (the pipeline's env/ and .stages/, a study's
    train.log, a trained tokenizer, codewords, the lock) do not count: a directory holding only those
    can be trained into.
    """
    run_dir = Path(run_dir)
    out = []
    if (run_dir / "config.json").exists():
        out.append("config.json")
    steps = list_checkpoints(run_dir) if (run_dir / CKPT_DIR).is_dir() else []
    if steps:
        out.append(f"{len(steps)} checkpoint{'s' if len(steps) > 1 else ''} (up to step {steps[-1]})")
    if (run_dir / "metrics.jsonl").exists():
        out.append("metrics.jsonl")
    if (run_dir / STATE_FILE).exists():
        out.append(STATE_FILE)
    if (run_dir / "status.json").exists():
        out.append("status.json")
    return out


def has_progress(run_dir: Path) -> bool:
    """True when ``run_dir`` holds training results that a restart from step 0 would overwrite: a checkpoint or
    an evaluation after step 0. A run killed before its first resume state has at most its step-0 checkpoint
    and evaluation, which a restart recomputes identically (the initialisation is a function of the seed)."""
    run_dir = Path(run_dir)
    if any(s > 0 for s in list_checkpoints(run_dir)):
        return True
    try:
        return any(isinstance(r, dict) and isinstance(r.get("step"), (int, float)) and r["step"] > 0
                   for r in iter_metrics(run_dir))
    except UserError:           # a corrupt metrics file is something to keep too
        return True


def move_aside(run_dir: Path) -> Path | None:
    """Move everything in ``run_dir`` (but its lock) into a new sibling ``<name>.previous-<time>``; return it.

    This is what ``--overwrite`` does: nothing is deleted, the old run stays a complete run directory
    (analyses work on it), and ``run_dir`` itself stays, locked by the caller, so no other process can
    start writing in between. None when there was nothing to move.
    """
    run_dir = Path(run_dir)
    entries = sorted(p for p in run_dir.iterdir() if p.name != ".lock") if run_dir.is_dir() else []
    if not entries:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = run_dir.with_name(f"{run_dir.name}.previous-{stamp}")
    n = 2
    while dest.exists():
        dest = run_dir.with_name(f"{run_dir.name}.previous-{stamp}-{n}")
        n += 1
    dest.mkdir()
    for p in entries:
        os.rename(p, dest / p.name)
    _fsync_dir(run_dir)
    _fsync_dir(dest)
    return dest


# ---------------------------------------------------------------------------- where analyses write
_ANALYSIS_DIRS: dict[Path, Path] = {}


def redirect_analysis(run_dir: Path, out_dir: Path) -> None:
    """Send this process's analysis outputs of ``run_dir`` (results, figures, caches, the oscillation manifest)
    to ``out_dir`` instead of the run: an analysis ``--out-dir``, e.g. for a run on a read-only disk."""
    _ANALYSIS_DIRS[Path(run_dir).resolve()] = Path(out_dir)


def analysis_dir(run_dir: Path) -> Path:
    """Where the analyses of ``run_dir`` write: RUN/analysis, or the folder given to :func:`redirect_analysis`."""
    return _ANALYSIS_DIRS.get(Path(run_dir).resolve(), Path(run_dir) / "analysis")


def run_output(run_dir: Path, name: str) -> Path:
    """Where an analysis writes a file that lives at the top of the run (RUN/<name>), redirected likewise."""
    out = _ANALYSIS_DIRS.get(Path(run_dir).resolve())
    return out / name if out is not None else Path(run_dir) / name


def find_analysis_input(run_dir: Path, name: str, top: bool = False) -> Path:
    """An earlier analysis's output that another one reads: in the redirected folder when it is there, else in
    the run (RUN/analysis/<name>, or RUN/<name> with ``top``)."""
    out = _ANALYSIS_DIRS.get(Path(run_dir).resolve())
    own = Path(run_dir) / name if top else Path(run_dir) / "analysis" / name
    return out / name if out is not None and (out / name).exists() else own


# ---------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive, non-blocking lock on RUN/.lock, released by the OS even if the process is killed."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.fh = None

    def __enter__(self) -> "RunLock":
        check_out_dir(self.path.parent, "run directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run directory {self.path.parent} is in use by {holder}; wait for it to finish "
                            "or choose another --out-dir") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


# ---------------------------------------------------------------------------- checkpoints
def read_run_config(run_dir: Path) -> Config:
    """The resolved config of the run in ``run_dir`` (its ``config.json``)."""
    d = read_json(Path(run_dir) / "config.json", "run config")
    if not isinstance(d, dict) or not isinstance(d.get("config"), dict):
        raise UserError(f"{run_dir}/config.json is not a run config of this toolkit")
    return Config.from_dict(d["config"])


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:06d}.safetensors"


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, config_hash: str, contents: str = "full",
                    dtype: str = "fp32", shards: bool = False) -> Path:
    """Write the weights of ``step`` (fp32, all tensors, one file: the default and what analyses expect).

    Storage options for long sweeps (Config ckpt_contents / ckpt_dtype / ckpt_shards): ``contents="trunk"``
    keeps only the trunk matrices, ``dtype="bf16"`` halves the bytes (drift analyses refuse it), and
    ``shards=True`` writes block b's tensors to ``step_XXXXXX.blockBB.safetensors`` next to the main file,
    which holds the rest and lists the shards in its metadata; the main file is renamed into place last,
    so a listed checkpoint always has its shards. Non-default options are recorded in the metadata.
    """
    return write_checkpoint(run_dir, step, checkpoint_tensors(model, contents, dtype), config_hash, contents,
                            dtype, shards)


def checkpoint_tensors(model: torch.nn.Module, contents: str = "full", dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """Host copies of the tensors a checkpoint stores (a snapshot: training may go on changing the model)."""
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    state = model.state_dict()
    keep = set(trunk_names_of(state)) if contents == "trunk" else None
    vocab = getattr(model, "vocab_size", None)        # a padded vocabulary is stored without its zero rows
    return {k: (v[:vocab] if k == "tok_emb.weight" and vocab else v).detach().to("cpu", torch_dtype, copy=True).contiguous()
            for k, v in state.items() if k not in TIED and (keep is None or k in keep)}


def write_checkpoint(run_dir: Path, step: int, tensors: dict[str, torch.Tensor], config_hash: str,
                     contents: str = "full", dtype: str = "fp32", shards: bool = False) -> Path:
    tensors = dict(tensors)
    meta = {"step": str(step), "config_hash": config_hash}
    if contents != "full":
        meta["contents"] = contents
    if dtype != "fp32":
        meta["dtype"] = dtype
    path = checkpoint_path(run_dir, step)
    if shards:
        groups = _block_groups(tensors)
        for b in sorted(k for k in groups if k is not None):
            names = groups[b]
            blob = canonical_safetensors(save({k: tensors.pop(k) for k in names}, metadata={**meta, "shard": str(b)}))
            atomic_write(shard_path(path, b), lambda tmp, blob=blob: Path(tmp).write_bytes(blob))
        meta["shards"] = ",".join(str(b) for b in sorted(k for k in groups if k is not None))
    blob = canonical_safetensors(save(tensors, metadata=meta))
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))
    return path


def stream_checkpoint(run_dir: Path, step: int, shapes: dict[str, tuple[int, ...]], fetch, config_hash: str,
                      contents: str = "full") -> Path:
    """Write checkpoint ``step`` one tensor at a time: the same bytes as :func:`write_checkpoint` of the same fp32
    tensors (canonical header, data in name order), without holding them all in memory at once.

    ``shapes``: name -> shape of every tensor; ``fetch(name)`` returns that tensor (any float dtype, converted
    to float32 here), called once per name in sorted order, so the caller can read its source lazily and only
    one tensor (and its fp32 copy) is alive at a time. Written atomically like every checkpoint.
    """
    meta = {"step": str(step), "config_hash": config_hash}
    if contents != "full":
        meta["contents"] = contents
    names = sorted(shapes)
    header: dict[str, Any] = {"__metadata__": meta}
    pos = 0
    for n in names:
        nbytes = 4 * math.prod(int(d) for d in shapes[n])
        header[n] = {"dtype": "F32", "shape": [int(d) for d in shapes[n]], "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = checkpoint_path(run_dir, step)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(len(text).to_bytes(8, "little") + text)
            for n in names:
                t = fetch(n).detach().to("cpu", torch.float32).contiguous()
                if tuple(t.shape) != tuple(shapes[n]):
                    raise ValueError(f"{n}: shape {tuple(t.shape)} but {tuple(shapes[n])} was announced")
                fh.write(memoryview(t.numpy()).cast("B"))
                del t
    atomic_write(path, write)
    return path


def host_copy(obj: Any) -> Any:
    """``obj`` (nested dicts / lists of tensors, e.g. an optimizer state dict) with every tensor copied to the host."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


class BackgroundWriter:
    """Runs write jobs in submission order on one thread, so that saving a checkpoint does not stall training.

    The caller snapshots what it writes (:func:`checkpoint_tensors`, :func:`host_copy`) before submitting.
    At most ``depth`` jobs wait; :meth:`join` waits for all of them and re-raises the first failure (also
    raised by the next :meth:`submit`). Disabled, a job runs at once in the caller's thread.
    """

    def __init__(self, enabled: bool = True, depth: int = 2):
        self.enabled = enabled
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = None

    def _work(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as e:        # kept for the training thread
                self._error = e
            finally:
                self._q.task_done()

    def _check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, job) -> None:
        if not self.enabled:
            job()
            return
        self._check()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="checkpoint-writer", daemon=True)
            self._thread.start()
        self._q.put(job)

    def join(self) -> None:
        if self._thread is not None:
            self._q.join()
        self._check()

    def close(self) -> None:
        """Wait for the pending writes and stop the thread (errors are re-raised by :meth:`join` first)."""
        if self._thread is not None:
            try:
                self._q.join()
            finally:
                self._q.put(None)
                self._thread.join()
                self._thread = None
        self._check()


def trunk_names_of(state: dict) -> list[str]:
    """The trunk tensors (docs/definitions.md) among a state dict's names: per block attention qkv / output, MLP up / down."""
    return [k for k in state if k.startswith("blocks.") and k.split(".", 2)[-1] in TRUNK_SUFFIXES]


def _block_groups(tensors: dict) -> dict[int | None, list[str]]:
    groups: dict[int | None, list[str]] = {}
    for k in tensors:
        b = int(k.split(".")[1]) if k.startswith("blocks.") else None
        groups.setdefault(b, []).append(k)
    return groups


def shard_path(path: Path, block: int) -> Path:
    """The file of block ``block`` of the sharded checkpoint whose main file is ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.block{block:02d}{path.suffix}")


def checkpoint_files(path: str | Path, meta: dict[str, str]) -> list[Path]:
    """The main file and, for a sharded checkpoint, its block files."""
    path = Path(path)
    shards = [int(b) for b in meta.get("shards", "").split(",") if b]
    return [path] + [shard_path(path, b) for b in shards]


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted.

    The library writes the metadata map in a per-process random order; sorting makes equal weights
    give byte-identical files (the data offsets are relative to the end of the header, so unchanged).
    """
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)            # the format pads the header to a multiple of 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def list_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the checkpoints present, in increasing order."""
    d = Path(run_dir) / CKPT_DIR
    steps = []
    for p in d.glob("step_*.safetensors"):
        try:
            steps.append(int(p.stem.split("_")[1]))
        except ValueError:
            continue
    return sorted(steps)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of one checkpoint file, with a clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = {}
        for p in checkpoint_files(path, meta):
            if not p.is_file():
                raise UserError(f"checkpoint {path} lists the shard {p.name}, which is missing")
            tensors.update(load_file(str(p)))
        return tensors, meta
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({e})") from None


def safetensors_index(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...], int, int]]]:
    """(metadata, name -> (dtype code, shape, absolute byte offset, byte length)) of one safetensors file.

    The format is an 8-byte little-endian header length, a JSON header with each tensor's dtype, shape and
    ``data_offsets`` (relative to the end of the header), then the data. The file's size is checked against every
    tensor, so a truncated file is refused before any read. Raises OSError / ValueError / KeyError / TypeError on a
    missing or malformed file (the callers say which file in one line)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if not 0 < n < 100 * 2**20:
            raise ValueError("bad header length")
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        a, b = (int(v) for v in info["data_offsets"])
        if not 0 <= a <= b or 8 + n + b > size:
            raise ValueError(f"{name} ends at byte {8 + n + b} of a {size}-byte file")
        tensors[name] = (str(info["dtype"]), tuple(int(d) for d in info["shape"]), 8 + n + a, b - a)
    return meta, tensors


def pread_exact(fd: int, buf: memoryview, offset: int, what) -> None:
    """Fill ``buf`` from ``fd`` at ``offset``; a short read means the file ended early: UserError(what())."""
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            raise UserError(what())
        done += n


def checkpoint_header(path: str | Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(name -> shape, metadata) of a checkpoint from its headers only (the main file and its shards)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        shapes: dict[str, tuple[int, ...]] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        for p in checkpoint_files(path, meta):
            if not p.is_file():
                raise UserError(f"checkpoint {path} lists the shard {p.name}, which is missing")
            with safe_open(str(p), framework="pt") as f:
                shapes.update({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
        return shapes, meta
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({e})") from None


def check_fits(model: torch.nn.Module, path: str | Path, shapes: dict[str, tuple[int, ...]],
               meta: dict[str, str]) -> None:
    """Refuse, in one line naming the file, the tensor and both shapes, a checkpoint that ``model`` cannot load.

    The one shape check of every weight loader (training's --init-from and resume, every model analysis);
    ``model`` may live on the meta device, so it can run before anything is built or written. A checkpoint
    may hold fewer embedding rows than a model with a padded vocabulary (vocab_multiple): the rest are zero.
    """
    if meta.get("contents") == "trunk":
        raise UserError(f"checkpoint {path} holds the trunk matrices only (ckpt_contents=trunk): it cannot restore "
                        "a whole model (no embeddings, LayerNorms); use a run trained with ckpt_contents=full")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, have in shapes.items():
        if name not in want:
            continue
        w = want[name]
        padded = name == "tok_emb.weight" and len(have) == 2 and have[1] == w[1] and have[0] <= w[0] \
            and have[0] == getattr(model, "vocab_size", w[0])
        if have != w and not padded:
            raise UserError(f"checkpoint {path} does not fit this model: {name} has shape {list(have)} in the file "
                            f"but {list(w)} in the model (a checkpoint of another model size or vocabulary?)")
    missing = [k for k in want if k not in shapes and k not in TIED]
    unexpected = [k for k in shapes if k not in want]
    if missing or unexpected:
        raise UserError(f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})")


def load_weights(model: torch.nn.Module, path: str | Path) -> dict[str, str]:
    """Load a checkpoint into ``model`` after :func:`check_fits`; returns the checkpoint metadata."""
    tensors, meta = load_checkpoint(path)
    check_fits(model, path, {k: tuple(v.shape) for k, v in tensors.items()}, meta)
    emb = getattr(getattr(model, "tok_emb", None), "weight", None)
    if emb is not None and "tok_emb.weight" in tensors and tensors["tok_emb.weight"].shape[0] < emb.shape[0]:
        t = tensors["tok_emb.weight"]             # a model with a padded vocabulary: the extra rows are zero
        tensors["tok_emb.weight"] = torch.cat([t, t.new_zeros(emb.shape[0] - t.shape[0], t.shape[1])])
    model.load_state_dict(tensors, strict=False)
    return meta


# ---------------------------------------------------------------------------- resume state
def save_state(run_dir: Path, state: dict) -> None:
    atomic_write(Path(run_dir) / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path) -> dict | None:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"resume state {path} is corrupt ({type(e).__name__}); the run cannot be resumed exactly") from None


def optimizer_state_path(run_dir: Path, step: int) -> Path:
    """Where a run that keeps optimizer states (``keep_optimizer_states``) stores the one of ``step``."""
    return Path(run_dir) / "state" / f"optimizer_step_{step:06d}.pt"


def find_optimizer_state(checkpoint: str | Path) -> Path:
    """The state file holding the optimizer moments of the step of ``checkpoint`` (for reheating with moments).

    Either the per-checkpoint copy of a run with ``keep_optimizer_states`` or the run's resume state
    when it was written at that step (the last checkpoint of a finished run).
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent.parent
    _, meta = load_checkpoint(checkpoint)
    step = int(meta.get("step", -1))
    kept = optimizer_state_path(run_dir, step)
    if kept.exists():
        return kept
    state = run_dir / STATE_FILE
    if state.exists():
        try:
            saved = torch.load(state, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"resume state {state} is corrupt ({type(e).__name__})") from None
        if int(saved.get("step", -1)) == step:
            return state
    raise UserError(f"no saved optimizer moments for step {step} of {run_dir}: only the last checkpoint's "
                    "(state/resume.pt) is kept unless the run was trained with --set keep_optimizer_states=true")


def load_optimizer_moments(optimizer: torch.optim.Optimizer, state_file: str | Path, step: int, config_hash: str) -> None:
    """Load the moments (per-parameter state) of another run's optimizer; keep this run's hyperparameters."""
    try:
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"optimizer state {state_file} is unreadable ({type(e).__name__})") from None
    if int(saved.get("step", -1)) != step or saved.get("config_hash") != config_hash:
        raise UserError(f"optimizer state {state_file} is of step {saved.get('step')} of another config; it does "
                        f"not belong to the initial weights (step {step})")
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"optimizer state {state_file} does not fit this optimizer ({e})") from None
    for group, hyper in zip(optimizer.param_groups, fresh):
        group.update(hyper)


# ---------------------------------------------------------------------------- metrics and status
def analysis_is_current(run_dir: Path, name: str) -> bool:
    """True when RUN/analysis/<name>.json exists and is newer than RUN/status.json: the run has not moved
    (trained on, resumed, failed) since the analysis was written. The one freshness rule of cached analyses."""
    out, status = Path(run_dir) / "analysis" / f"{name}.json", Path(run_dir) / "status.json"
    return out.exists() and status.exists() and out.stat().st_mtime_ns > status.stat().st_mtime_ns


def append_metrics(run_dir: Path, record: dict) -> None:
    """Append one record to metrics.jsonl and flush it to disk."""
    with open(Path(run_dir) / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(_jsonable(record), allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def iter_metrics(run_dir: Path) -> Iterator[dict]:
    """Records of metrics.jsonl; a torn last line (a killed writer) is skipped; anything else that is not one
    JSON object per line is a one-line UserError naming the file and the line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict):
                raise UserError(f"{path} line {n} is not a JSON object ({raw[:60]!r}); restore the file or "
                                "remove that line") from None
            yield record


def read_metrics(run_dir: Path) -> list[dict]:
    return list(iter_metrics(run_dir))


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Keep only records with step <= last_step (used when resuming from an earlier checkpoint)."""
    keep = [r for r in iter_metrics(run_dir) if r.get("step", -1) <= last_step]
    atomic_write_text(Path(run_dir) / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in keep))


def write_status(run_dir: Path, state: str, step: int, message: str = "") -> None:
    """Write status.json atomically; on a full disk, where no new file can be created, rewrite it in place.

    The in-place rewrite reuses the blocks the old file already has (a status is far smaller than one
    block), so a run stopped by a full disk still says ``failed`` rather than ``running``.
    """
    path = Path(run_dir) / "status.json"
    obj = {"state": state, "step": step, "message": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        atomic_write_json(path, obj)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
            raise
        data = (json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n").encode()
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return None
    status = read_json(path, "status file")
    if not isinstance(status, dict) or not isinstance(status.get("state", ""), str):
        raise UserError(f"status file {path} is not a run status (an object with a state); restore it, or delete "
                        "it and resume the run with --resume")
    return status


# ---------------------------------------------------------------------------- provenance
def provenance() -> dict:
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {
        "git_commit": git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        **numerics(),
    }


def numerics() -> dict:
    """What a run's floating-point results depend on besides the code and the seed.

    A run is bit-for-bit reproducible on the same torch build, CPU vector ISA (torch's CPU capability:
    its kernels round differently with AVX2 and AVX-512) and thread count; across them the rounding
    differs from the first steps on and a long run drifts apart like a different seed (the quick run's
    final p_ood: 0.78 on one machine, 0.94 on an AVX-512 one, 0.58 there with ATEN_CPU_CAPABILITY=avx2).
    """
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = "unknown"
    return {"cpu": cpu, "cpu_capability": capability, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


# ---------------------------------------------------------------------------- attention-bias state
def bias_stats_path(run_dir: Path, step: int) -> Path:
    return checkpoint_path(run_dir, step).with_suffix(".attn_bias.json")


def save_bias_stats(run_dir: Path, step: int, model: torch.nn.Module) -> Path | None:
    """Write the bias state of every layer next to checkpoint ``step`` (nothing for a symmetric model)."""
    biases = attention_biases(model)
    if not biases:
        return None
    path = bias_stats_path(run_dir, step)
    atomic_write_json(path, {"step": step, "layers": [b.stats() for b in biases]})
    return path


def read_bias_stats(run_dir: Path, step: int) -> dict:
    path = bias_stats_path(run_dir, step)
    if not path.exists():
        raise UserError(f"{path} does not exist: checkpoint {step} of {run_dir} has no attention-bias statistics "
                        "(was the run trained with attn_disorder?)")
    return read_json(path, "attention-bias statistics")


def load_bias_stats(run_dir: Path, step: int, model: torch.nn.Module) -> None:
    """Restore the draw counters, sums and last draws saved with checkpoint ``step`` (resume)."""
    biases = attention_biases(model)
    if biases:
        layers = read_bias_stats(run_dir, step)["layers"]
        for b, d in zip(biases, layers):
            b.load_stats(d)
