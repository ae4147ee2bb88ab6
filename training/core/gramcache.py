"""The trajectory Gram cache (RUN/analysis/gram/{trunk,blockN}.npz) and the trainer's online Gram.

The cache holds, for the checkpoints it is keyed by, G[i, j] = ⟨θ(i) − θ(anchor), θ(j) − θ(anchor)⟩ over the
trunk (or one block) in float64, with the origin row o[i] = ⟨θ(anchor), θ(i) − θ(anchor)⟩ and ‖θ(anchor)‖²
(see :class:`training.geometry.trajectory.Gram`). A key is ``json.dumps([step, *file_identity(file)])``; the
first key is the anchor. The analyses read it through :func:`training.geometry.trajectory.cached_gram`; the
format (keys, read, write) lives here once, so that the training loop can write it too.

:class:`OnlineGram` (``gram_online``): at every checkpoint the trainer has just written, the new row of every
block's Gram -- the products of the new drift with the drifts of every earlier checkpoint -- is computed in
float64 from float32 copies of the earlier checkpoints' trunk tensors (kept in memory up to
``gram_online_mem_mb``, else re-read from their files), and the caches are rewritten, keyed by the files'
identities. An analysis of the run then finds its Gram without streaming the checkpoints. The arithmetic is
that of the streamed Gram (exact float32 → float64 conversion, the anchor subtracted in float64, float64
products), so the two agree to float64 rounding. Total work over a run of T checkpoints is T²·D/2 products
spread over the checkpoints (row t costs t·D), instead of one pass of T²·D at analysis time.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from training.core import runio
from training.core.config import Config, checkpoint_steps
from training.core.model import trunk_names

_SAMPLES, _SAMPLE_BYTES = 16, 4096


# ---------------------------------------------------------------------------- keys
def file_identity(path: Path) -> list:
    """[mtime_ns, size, fingerprint] of a checkpoint: what a cache computed from it is keyed by.

    mtime and size alone miss a checkpoint replaced by another of the same size with the same mtime (a
    copy with preserved times, a second run's file of the same shape). The fingerprint is a SHA-256 of the
    safetensors header (names, shapes, offsets and metadata: step and config hash) and of 16 slices of 4 KiB
    spread evenly over the data, the last one ending at the end of the file: a few dozen KiB read per file
    however large it is, and a training step changes every weight, so any two checkpoints of a trajectory
    differ in every slice. The shards of a sharded checkpoint are fingerprinted with it.
    """
    path = Path(path)
    h = hashlib.sha256()
    st = os.stat(path)
    files = [path]
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = f.read(n) if 0 < n < 100 * 2**20 else b""
        meta = (json.loads(header).get("__metadata__") or {}) if header else {}
        files += [runio.shard_path(path, int(b)) for b in str(meta.get("shards", "")).split(",") if b]
    except (ValueError, AttributeError):
        pass                       # a corrupt header: the readers refuse the file with its reason
    for p in files:
        size = os.stat(p).st_size
        with open(p, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            start = 8 + n if 0 < 8 + n <= size else 0
            h.update(f.read(start - 8) if start else b"")
            span = max(0, size - start - _SAMPLE_BYTES)
            for k in range(_SAMPLES):
                off = start + (span * k) // (_SAMPLES - 1)
                h.update(os.pread(f.fileno(), _SAMPLE_BYTES, off))
    return [st.st_mtime_ns, st.st_size, h.hexdigest()[:32]]


def run_key(run_dir: Path, step: int) -> str:
    """The cache key of checkpoint ``step`` of a run: its step and :func:`file_identity`."""
    return json.dumps([step, *file_identity(runio.checkpoint_path(run_dir, step))])


def cache_name(block: int | None) -> str:
    return "trunk" if block is None else f"block{block}"


def run_cache_paths(run_dir: Path, block: int | None) -> list[Path]:
    """Where the Gram cache of a run is looked for: the analyses' folder (:func:`runio.analysis_dir`) first,
    then RUN/analysis/gram, where the trainer writes it, when the analyses are redirected elsewhere."""
    own = Path(run_dir) / "analysis" / "gram" / f"{cache_name(block)}.npz"
    first = runio.analysis_dir(run_dir) / "gram" / f"{cache_name(block)}.npz"
    return [first] if first == own else [first, own]


# ---------------------------------------------------------------------------- the file format
def load_cache(path: Path) -> dict | None:
    """The whole cache at ``path`` (keys, dim, G, origin, origin_sq), or None when missing, unreadable or of a
    format without the origin row."""
    if not Path(path).exists():
        return None
    try:
        with np.load(path) as z:
            return {"keys": [str(k) for k in z["keys"]], "dim": int(z["dim"]), "G": z["G"].copy(),
                    "origin": z["origin"].copy(), "origin_sq": float(z["origin_sq"])}
    except (OSError, ValueError, KeyError):
        return None      # unreadable (or of an older format): recomputed and replaced


def read_gram_cache(path: Path, keys: Sequence[str]) -> tuple[np.ndarray, int, np.ndarray, float] | None:
    """(G, dim, origin, origin_sq) over the files keyed ``keys`` (in that order; the first is the anchor) from the
    cache at ``path``: the cached matrix itself, or its exact sub-matrix when the cache covers more files with the
    same anchor. None when the cache is missing, unreadable, of a format without the origin row, or does not cover
    every key (then recompute)."""
    z = load_cache(path)
    if z is None or not z["keys"] or z["keys"][0] != keys[0] or not set(keys) <= set(z["keys"]):
        return None
    pos = {k: i for i, k in enumerate(z["keys"])}
    idx = [pos[k] for k in keys]
    return z["G"][np.ix_(idx, idx)].copy(), z["dim"], z["origin"][idx].copy(), z["origin_sq"]


def write_cache(path: Path, keys: Sequence[str], G: np.ndarray, dim: int, origin: np.ndarray,
                origin_sq: float) -> None:
    """The cache read by :func:`read_gram_cache` (written atomically; replaces what was there)."""
    buf = io.BytesIO()
    np.savez(buf, keys=np.asarray(list(keys)), dim=dim, G=G, origin=origin, origin_sq=origin_sq)
    runio.atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


# ---------------------------------------------------------------------------- the online Gram
_COLS = 8192       # columns converted to float64 at a time (cache-resident operands of the products)


def anchored_products(rows: torch.Tensor, new: torch.Tensor, anchor: torch.Tensor, first_is_anchor: bool,
                      scratch: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(⟨rows_i − anchor, new − anchor⟩ per row, ‖new − anchor‖²) in float64 from float32 1-D / 2-D tensors.

    ``first_is_anchor``: row 0 holds θ(anchor) itself and is not reduced, so its entry is the origin product
    ⟨θ(anchor), new − anchor⟩ (as in the streamed Gram). Differences of float32 values are exact in float64.
    """
    k, m = rows.shape
    out = torch.zeros(k, dtype=torch.float64)
    sq = torch.zeros((), dtype=torch.float64)
    lo = 1 if first_is_anchor else 0
    for a in range(0, m, _COLS):
        c = min(m, a + _COLS) - a
        x = new[a:a + c].double() - anchor[a:a + c].double()
        blk = scratch[:k * c].view(k, c).copy_(rows[:, a:a + c])
        blk[lo:] -= anchor[a:a + c].double()
        out += blk @ x
        sq += x @ x
    return out, float(sq)


def read_trunk(run_dir: Path, step: int, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The trunk tensors ``names`` of checkpoint ``step`` (main file and shards), flattened float32."""
    path = runio.checkpoint_path(run_dir, step)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    out: dict[str, torch.Tensor] = {}
    for p in runio.checkpoint_files(path, meta):
        with safe_open(str(p), framework="pt") as f:
            out.update({n: f.get_tensor(n).reshape(-1) for n in f.keys() if n in names})
    missing = [n for n in names if n not in out or out[n].dtype != torch.float32]
    if missing:
        raise ValueError(f"{path} has no float32 tensor {missing[0]}")
    return out


@contextlib.contextmanager
def _single_threaded():
    """The products on one core when called from the training thread (as the streamed Gram runs them): these
    small matrix-vector products gain nothing from the BLAS's threads, whose spinning costs far more than the
    products on a busy CPU (measured 6x slower with 2 threads on a loaded 2-core machine). From another thread
    (the GPU's checkpoint writer) the process-wide thread count is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def skip_reason(cfg: Config) -> str | None:
    """Why the online Gram cannot run for this config (None: it can)."""
    if cfg.ckpt_dtype != "fp32":
        return (f"checkpoints are stored in {cfg.ckpt_dtype} (ckpt_dtype), which the drift analyses refuse")
    return None


class OnlineGram:
    """Every block's Gram cache kept current while the run writes its checkpoints (Config ``gram_online``).

    State: the covered steps (anchor first) with their keys, and per block b the matrix G[b], the origin row
    and ‖θ(anchor)‖²; the trunk's is their sum. Memory: float32 copies of the trunk of up to ``slots``
    checkpoints (the anchor always; ``mem_bytes`` / (4·D) of them, at most the run's checkpoint count), plus
    one float64 block of slots × 8192 columns. Rows of checkpoints beyond that are re-read from their files.
    """

    def __init__(self, run_dir: Path, cfg: Config, mem_bytes: int, log: Callable[[str], None] | None = None):
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.log = log or (lambda msg: print(f"gram_online: {msg}", file=sys.stderr))
        self.blocks = list(range(cfg.n_layer))
        self.names = {b: trunk_names(cfg, b) for b in self.blocks}
        self.all_names = [n for b in self.blocks for n in self.names[b]]
        self.mem_bytes = mem_bytes
        self.disabled = skip_reason(cfg)
        if self.disabled:
            self.log(f"off: {self.disabled}; the analyses compute the Gram from the checkpoints")
        self._reset()

    # ----- state
    def _reset(self) -> None:
        self.steps: list[int] = []
        self.keys: list[str] = []
        nb = len(self.blocks)
        self.G, self.origin, self.origin_sq = np.zeros((nb, 0, 0)), np.zeros((nb, 0)), np.zeros(nb)
        self.dims = np.zeros(nb, dtype=np.int64)
        self.held: dict[str, torch.Tensor] = {}      # name -> slots × numel float32
        self.slot_of: dict[int, int] = {}            # step -> row of self.held
        self._nslots: int | None = None

    def resume(self, start: int) -> None:
        """Adopt the caches on disk for the checkpoints up to ``start`` whose files they were computed from (the
        rows of checkpoints past it, or of files since rewritten, are dropped; missing rows are added at the next
        checkpoint)."""
        self._reset()
        if self.disabled:
            return
        disk = [s for s in runio.list_checkpoints(self.run_dir) if s <= start]
        caches = [load_cache(Path(self.run_dir) / "analysis" / "gram" / f"{cache_name(b)}.npz") for b in self.blocks]
        if not disk or any(z is None or z["keys"] != caches[0]["keys"] for z in caches):
            return
        want = {run_key(self.run_dir, s): s for s in disk}
        have = caches[0]["keys"]
        if not have or have[0] not in want or want[have[0]] != disk[0]:
            return                                   # another anchor: start over
        idx = [i for i, k in enumerate(have) if k in want]
        self.keys = [have[i] for i in idx]
        self.steps = [want[k] for k in self.keys]
        self.G = np.stack([z["G"][np.ix_(idx, idx)] for z in caches])
        self.origin = np.stack([z["origin"][idx] for z in caches])
        self.origin_sq = np.array([z["origin_sq"] for z in caches])
        self.dims = np.array([z["dim"] for z in caches], dtype=np.int64)
        self.log(f"resumed the Gram cache of {len(self.steps)} checkpoint(s) up to step {start}")

    # ----- one checkpoint
    def update(self, step: int, tensors: dict[str, torch.Tensor] | None = None) -> bool:
        """Checkpoint ``step`` was just written (its trunk tensors in ``tensors``, float32, or None: read from the
        file): add it and any checkpoint up to it not yet covered, then rewrite the caches. Never raises for
        the run's sake: a failure logs its reason, leaves the old caches (which no longer cover the run's files,
        so the analyses compute instead) and turns the online Gram off."""
        if self.disabled:
            return False
        try:
            with _single_threaded():
                self._update(step, tensors)
            return True
        except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:   # not an interrupt
            self.disabled = f"{type(e).__name__}: {e}"
            self.log(f"off from step {step}: {self.disabled}; the analyses compute the Gram from the checkpoints")
            return False

    def _update(self, step: int, tensors: dict[str, torch.Tensor] | None) -> None:
        disk = [s for s in runio.list_checkpoints(self.run_dir) if s <= step]
        if not disk:
            raise ValueError(f"no checkpoint up to step {step} in {self.run_dir}")
        if step in self.steps and self.keys[self.steps.index(step)] != run_key(self.run_dir, step):
            self._drop(self.steps.index(step))          # a checkpoint rewritten since its row was added
        if not self.steps or self.steps[0] != disk[0]:
            self._reset()
        for s in disk:
            if s not in self.steps:
                own = s == step and tensors is not None
                rows = ({n: tensors[n].reshape(-1) for n in self.all_names} if own
                        else read_trunk(self.run_dir, s, self.all_names))
                self._add(s, rows)
        self._write()

    def _drop(self, i: int) -> None:
        keep = [j for j in range(len(self.steps)) if j != i]
        if i == 0:
            self._reset()
            return
        s = self.steps[i]
        self.steps = [self.steps[j] for j in keep]
        self.keys = [self.keys[j] for j in keep]
        self.G = self.G[:, keep][:, :, keep]
        self.origin = self.origin[:, keep]
        self.slot_of.pop(s, None)

    def _slots(self) -> int:
        """How many checkpoints' trunks are kept in memory (fixed once the trunk's size is known)."""
        if self._nslots is None:
            self._nslots = max(1, min(len(checkpoint_steps(self.cfg)), self.mem_bytes // (4 * int(self.dims.sum()))))
            self.log(f"keeping up to {self._nslots} checkpoint(s) of the trunk in memory "
                     f"({self._nslots * 4 * int(self.dims.sum()) / 2**20:.0f} MiB of float32); rows of the others are "
                     "re-read from their files")
        return self._nslots

    def _hold(self, step: int, rows: dict[str, torch.Tensor]) -> None:
        """Keep a float32 copy of ``rows`` in a free slot, if there is one (the anchor always gets slot 0)."""
        free = sorted(set(range(self._slots())) - set(self.slot_of.values()))
        if step in self.slot_of or not free:
            return
        for n in self.all_names:
            if n not in self.held:
                self.held[n] = torch.empty((self._slots(), rows[n].numel()), dtype=torch.float32)
            self.held[n][free[0]].copy_(rows[n])
        self.slot_of[step] = free[0]

    def _add(self, step: int, rows: dict[str, torch.Tensor]) -> None:
        nb = len(self.blocks)
        if not self.steps:                                   # the anchor
            for bi, b in enumerate(self.blocks):
                self.origin_sq[bi] = sum(float(rows[n].double() @ rows[n].double()) for n in self.names[b])
                self.dims[bi] = sum(rows[n].numel() for n in self.names[b])
            self.steps, self.keys = [step], [run_key(self.run_dir, step)]
            self.G, self.origin = np.zeros((nb, 1, 1)), np.zeros((nb, 1))
            self._hold(step, rows)
            return
        if self.steps[0] not in self.slot_of:                # after a resume: the anchor is re-read once
            self._hold(self.steps[0], read_trunk(self.run_dir, self.steps[0], self.all_names))
        row, diag = self._row(rows)
        n = len(self.steps)
        G = np.zeros((nb, n + 1, n + 1))
        G[:, :n, :n] = self.G
        G[:, n, 1:n] = G[:, 1:n, n] = row[:, 1:]
        G[:, n, n] = diag
        self.G = G
        self.origin = np.concatenate([self.origin, row[:, :1]], axis=1)
        self.steps.append(step)
        self.keys.append(run_key(self.run_dir, step))
        self._hold(step, rows)

    def _row(self, rows: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Per block: the products of the new drift with every covered row (the anchor's entry is the origin
        product), and the new drift's squared norm."""
        n, nb = len(self.steps), len(self.blocks)
        out, diag = np.zeros((nb, n)), np.zeros(nb)
        assert self.slot_of[self.steps[0]] == 0
        top = max(self.slot_of.values()) + 1       # slots 0..top-1 (a free one among them gives an ignored entry)
        held = [(i, self.slot_of[s]) for i, s in enumerate(self.steps) if s in self.slot_of]
        rows_at, slots_at = [i for i, _ in held], [k for _, k in held]
        scratch = torch.empty(top * _COLS, dtype=torch.float64)
        for bi, b in enumerate(self.blocks):
            for name in self.names[b]:
                H = self.held[name]
                p, sq = anchored_products(H[:top], rows[name], H[0], True, scratch)
                out[bi, rows_at] += p.numpy()[slots_at]
                diag[bi] += sq
        for i, s in enumerate(self.steps):                    # rows not in memory: re-read from their files
            if s in self.slot_of:
                continue
            other = read_trunk(self.run_dir, s, self.all_names)
            for bi, b in enumerate(self.blocks):
                for name in self.names[b]:
                    p, _ = anchored_products(other[name][None], rows[name], self.held[name][0], False, scratch)
                    out[bi, i] += float(p[0])
            self._hold(s, other)                          # kept for the next checkpoints if a slot is free
        return out, diag

    def _write(self) -> None:
        """Every block's cache, then the trunk's (their sum), keyed by the covered files, anchor first."""
        order = [0] + sorted(range(1, len(self.steps)), key=lambda i: self.steps[i])
        keys = [self.keys[i] for i in order]
        G = self.G[:, order][:, :, order]
        origin = self.origin[:, order]
        base = Path(self.run_dir) / "analysis" / "gram"
        for bi, b in enumerate(self.blocks):
            write_cache(base / f"{cache_name(b)}.npz", keys, G[bi], int(self.dims[bi]), origin[bi],
                        float(self.origin_sq[bi]))
        write_cache(base / f"{cache_name(None)}.npz", keys, G.sum(axis=0), int(self.dims.sum()), origin.sum(axis=0),
                    float(self.origin_sq.sum()))
