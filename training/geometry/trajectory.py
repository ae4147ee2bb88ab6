"""Trajectory geometry from checkpoints: streaming Gram matrix, exact uncentered PCA, the backbone.

Everything here rests on one observation. Let x_t = θ(t) − θ(anchor) for the T checkpoints of a run
(restricted to the trunk or one block). Any drift matrix the analyses need -- any reference step,
window, stride, row normalisation -- is A·X for a small coefficient matrix A (rows e_t − e_ref,
scaled), so its PCA is the eigen-decomposition of A·G·Aᵀ with G = X·Xᵀ the T×T Gram matrix, and its
principal directions are v = Xᵀ·Aᵀ·u/σ: vectors *in the span of the checkpoints*, represented by their
T coefficients c (v = Xᵀc). Inner products between such vectors are cᵀGc'. Backbone coordinates,
residual norms, update alignment, rolling-window stability and switching directions are therefore
T×T algebra once G is known.

G is accumulated in float64 in one streaming pass over parameter chunks (plain reads at the tensor
offsets of the safetensors files), so peak memory is T × chunk, never T × D. Directions are materialised
as D-vectors (a second pass) only where a gradient must be paired with them
(:meth:`CheckpointSet.materialise`).
"""
from __future__ import annotations

import itertools
import math
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from training.core import gramcache, runio
from training.core.devices import resolve_device
from training.core.errors import UserError
from training.core.gramcache import file_identity, read_gram_cache   # the cache format lives in the core
from training.core.model import trunk_names
from training.core.runio import read_run_config

DEFAULT_CHUNK_BYTES = 64 * 2**20      # per chunk of the T × c float32 block read from the checkpoints


# ---------------------------------------------------------------------------- checkpoint access
class CheckpointSet:
    """Lazy, memory-mapped reads of a run's trunk (or one block) in the canonical parameter order."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise UserError(f"run directory {self.run_dir} does not exist")
        self.cfg = read_run_config(self.run_dir)
        self.steps = runio.list_checkpoints(self.run_dir)
        if len(self.steps) < 2:
            raise UserError(f"{self.run_dir} has {len(self.steps)} checkpoint(s); trajectory analyses need at least 2")
        self._shapes: dict[str, tuple[int, ...]] | None = None
        self.header(self.steps[0], blocks=())       # refuses reduced-precision checkpoints at once

    def names(self, block: int | None = None) -> list[str]:
        return trunk_names(self.cfg, block)

    def _main_path(self, step: int) -> Path:
        return runio.checkpoint_path(self.run_dir, step)

    def _index(self, path: Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...], int, int]]]:
        """:func:`training.core.runio.safetensors_index` of one file, parsed once per file."""
        cache = self.__dict__.setdefault("_index_cache", {})
        if path not in cache:
            try:
                cache[path] = runio.safetensors_index(path)
            except FileNotFoundError:
                raise UserError(f"checkpoint {path} is missing") from None
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"checkpoint {path} is corrupt or truncated ({e})") from None
        return cache[path]

    def _shards(self, step: int) -> set[int]:
        """Blocks stored in files of their own (ckpt_shards), from the main file's metadata."""
        meta = self._index(self._main_path(step))[0]
        return {int(b) for b in meta.get("shards", "").split(",") if b}

    def header(self, step: int, blocks=None) -> dict[str, tuple[int, ...]]:
        """Shapes of the tensors of checkpoint ``step``, refusing a precision below fp32.

        ``blocks``: for a checkpoint sharded by block, the shard files to read besides the main file
        (None = all), so a per-block analysis opens only its block's files. This is the one gate of the
        trajectory analyses: reduced-precision checkpoints (ckpt_dtype=bf16) are refused with the reason;
        trunk-only checkpoints (ckpt_contents=trunk) pass.
        """
        main = self._main_path(step)
        meta, tensors = self._index(main)
        info = dict(tensors)
        shards = self._shards(step)
        for b in sorted(shards if blocks is None else shards & set(blocks)):
            info.update(self._index(runio.shard_path(main, b))[1])
        low = sorted({v[0] for n, v in info.items() if n.startswith("blocks.") and v[0] != "F32"})
        if meta.get("dtype", "fp32") != "fp32" or low:
            raise UserError(
                f"{self._describe(step)} is stored in {meta.get('dtype') or low[0]} (ckpt_dtype): drift analyses "
                "need fp32 weights, because bf16 keeps 8 significant bits (relative spacing 2^-8 = 0.4%) and a "
                "training step moves a weight by far less, so drifts and their PCA would be rounding noise; "
                "retrain with ckpt_dtype=fp32")
        return {n: v[1] for n, v in info.items()}

    def shapes(self, block: int | None = None) -> dict[str, tuple[int, ...]]:
        """Tensor shapes (read from the first checkpoint; for sharded checkpoints only the files ``block`` needs)."""
        first = self.steps[0]
        if self._shapes is None:
            self._shapes = self.header(first, blocks=())
            self._loaded_blocks: set[int] = set()
        want = set(range(self.cfg.n_layer)) if block is None else {block}
        todo = (want & self._shards(first)) - self._loaded_blocks
        if todo:
            self._shapes.update(self.header(first, blocks=todo))
            self._loaded_blocks |= todo
        missing = [n for n in self.names(block) if n not in self._shapes]
        if missing:
            raise UserError(f"checkpoints of {self.run_dir} lack trunk tensors such as {missing[0]}")
        return self._shapes

    def dim(self, block: int | None = None) -> int:
        shapes = self.shapes(block)
        return int(sum(np.prod(shapes[n]) for n in self.names(block)))

    def chunks(self, block: int | None, max_elems: int) -> list[tuple[str, int, int]]:
        """(tensor name, first row, end row) pieces of at most ~max_elems elements, in canonical order."""
        out = []
        for n in self.names(block):
            shape = self.shapes(block)[n]
            rows, cols = shape[0], int(np.prod(shape[1:])) if len(shape) > 1 else 1
            per = max(1, max_elems // cols)
            out.extend((n, a, min(rows, a + per)) for a in range(0, rows, per))
        return out

    def _file_of(self, step: int, name: str) -> Path:
        """The file of ``step`` that holds ``name`` (for a checkpoint sharded by block: that block's file)."""
        path = self._main_path(step)
        if name.startswith("blocks.") and int(name.split(".")[1]) in self._shards(step):
            path = runio.shard_path(path, int(name.split(".")[1]))
        return path

    def read_rows(self, steps: Sequence[int], block: int | None, max_elems: int,
                  ring: int = 0) -> Iterator[np.ndarray]:
        """For each chunk, the len(steps) × c float32 matrix of parameter values (rows in ``steps`` order).

        Rows are read with ``os.preadv`` straight into the output at the byte offsets of the safetensors
        header: plain reads release the GIL while they wait for the disk (memory-mapped page faults inside
        the safetensors binding do not), so a reading thread overlaps the arithmetic of the Gram, and no
        mapped pages stay resident. The precision gate with its reason is :meth:`header`.

        ``ring`` > 0: the chunks are views into ``ring`` buffers used in turn, so that reading does not
        fault in (and zero) fresh pages for every chunk -- that costs more than the copy itself. A chunk is
        then valid only until ``ring`` further chunks have been produced (see :func:`stream_rows`).
        """
        pieces: dict[str, list[tuple[int, int]]] = {}
        for name, a, b in self.chunks(block, max_elems):
            pieces.setdefault(name, []).append((a, b))
        shapes = self.shapes(block)
        largest = max((b - a) * int(np.prod(shapes[n][1:])) for n, rs in pieces.items() for a, b in rs)
        buffers = [np.empty(len(steps) * largest, dtype=np.float32) for _ in range(ring)]
        produced = 0
        for name, ranges in pieces.items():
            per_row = int(np.prod(self.shapes(block)[name][1:]))
            where = []
            for s in steps:
                path = self._file_of(s, name)
                dtype, shape, offset, nbytes = self._index(path)[1].get(name, (None, None, 0, 0))
                want = self.shapes(block)[name]
                if dtype != "F32" or shape != want or nbytes != 4 * int(np.prod(shape)):
                    found = "has no such tensor" if dtype is None else f"holds it as {dtype} of shape {tuple(shape)}"
                    raise UserError(f"{self._describe(s)} ({path}) does not fit: {name} should be float32 of shape "
                                    f"{tuple(want)} like the run's other checkpoints, but the file {found}")
                where.append((s, path, offset))
            fds = []
            try:
                for s, path, _ in where:
                    fds.append(os.open(path, os.O_RDONLY))
                    if hasattr(os, "posix_fadvise"):
                        os.posix_fadvise(fds[-1], 0, 0, os.POSIX_FADV_SEQUENTIAL)
                for a, b in ranges:
                    shape = (len(steps), (b - a) * per_row)
                    if ring:
                        rows = buffers[produced % ring][:shape[0] * shape[1]].reshape(shape)
                        produced += 1
                    else:
                        rows = np.empty(shape, dtype=np.float32)
                    for i, (fd, (s, path, off)) in enumerate(zip(fds, where)):
                        runio.pread_exact(fd, memoryview(rows[i]).cast("B"), off + 4 * a * per_row,
                                     lambda: f"cannot read {name} from {self._describe(s)} (file truncated)")
                    yield rows
            except OSError as e:
                raise UserError(f"cannot read {name} from checkpoint {e.filename or ''} ({e.strerror})") from None
            finally:
                for fd in fds:
                    os.close(fd)

    def _describe(self, step: int) -> str:
        return f"checkpoint step {step} of {self.run_dir}"

    def vector(self, step: int, block: int | None = None) -> np.ndarray:
        """θ(step) restricted to the trunk / block, as one float64 vector."""
        return np.concatenate([c[0] for c in self.read_rows([step], block, 1 << 24)]).astype(np.float64)

    def materialise(self, gram: "Gram", coeffs: np.ndarray, max_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
        """D × m matrix Xᵀ·coeffs: span coefficients (T × m, over gram.steps) turned into parameter-space vectors."""
        coeffs = np.asarray(coeffs, dtype=np.float64)
        squeeze = coeffs.ndim == 1
        coeffs = coeffs.reshape(len(gram.steps), -1)
        # x_t = θ_t − θ_anchor, so Xᵀc = Θᵀc − θ_anchor·Σc
        weights = coeffs.copy()
        weights[gram.steps.index(gram.anchor)] -= coeffs.sum(axis=0)
        out = np.empty((self.dim(gram.block), coeffs.shape[1]))
        pos = 0
        w = torch.from_numpy(weights)
        for rows in self.read_rows(gram.steps, gram.block, _elems(max_bytes, len(gram.steps))):
            for blk in _float64_blocks(rows):
                c = blk.shape[1]
                out[pos:pos + c] = (blk.T @ w).numpy()
                pos += c
        return out[:, 0] if squeeze else out


class CheckpointFiles(CheckpointSet):
    """A :class:`CheckpointSet` over an explicit list of checkpoint files, possibly of several runs.

    The files are given as (run directory, step) pairs and must share one model shape (e.g. a run and
    the runs started from its checkpoints). Its ``steps`` are the *positions* 0..N−1 in that list, so
    :func:`compute_gram`, :class:`Gram` and :func:`pca` work on it unchanged, with positions in place
    of steps; ``files[i]`` says which checkpoint position i is.
    """

    def __init__(self, files: Sequence[tuple[str | Path, int]], cfg=None):
        self.files = [(Path(d), int(s)) for d, s in files]
        if len(self.files) < 2:
            raise UserError(f"a trajectory analysis needs at least 2 checkpoints (got {len(self.files)})")
        for d, s in self.files:
            if not runio.checkpoint_path(d, s).is_file():
                raise UserError(f"checkpoint {runio.checkpoint_path(d, s)} does not exist")
        self.run_dir = self.files[0][0]
        self.cfg = read_run_config(self.run_dir) if cfg is None else cfg
        self.steps = list(range(len(self.files)))
        self._shapes = None
        want = {n: self.shapes()[n] for n in self.names()}
        for i in range(1, len(self.files)):       # headers only: cheap, and a clear error instead of a bad row
            shapes = self.header(i)
            have = {n: shapes[n] for n in want if n in shapes}
            if have != want:
                raise UserError(f"checkpoint {self.path(i)} does not have the model shape of {self.path(0)}; "
                                "only runs of one architecture can share a trajectory analysis")

    def path(self, i: int) -> Path:
        d, s = self.files[i]
        return runio.checkpoint_path(d, s)

    def file_key(self) -> list[list]:
        """(path, mtime_ns, size, content fingerprint) of every file, in order: the key of a cache of anything
        computed from them (see :func:`file_identity`)."""
        return [[str(self.path(i).resolve()), *file_identity(self.path(i))] for i in self.steps]

    def _describe(self, i: int) -> str:
        return f"checkpoint {self.path(i)}"

    def _main_path(self, i: int) -> Path:
        return self.path(i)


def stream_rows(ckpts: CheckpointSet, steps: Sequence[int], block: int | None, max_elems: int,
                depth: int = 2) -> Iterator[np.ndarray]:
    """:meth:`CheckpointSet.read_rows` read ``depth`` chunks ahead by a background thread, into reused buffers.

    A chunk stays valid until the consumer asks for the next one: with ``depth`` chunks queued and one being
    read, ``depth + 2`` buffers are the fewest that never overwrite the chunk in the consumer's hands.
    """
    return prefetch(ckpts.read_rows(steps, block, max_elems, ring=depth + 2), depth)


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``items`` with the next ``depth`` produced by a background thread.

    Reading checkpoint slices (page faults, copies) and the float64 products both release the GIL, so
    with a cold page cache the disk reads overlap the arithmetic instead of adding to it.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:       # re-raised in the consumer
            q.put(e)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():          # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.01)


def _elems(max_bytes: int, n_rows: int) -> int:
    return max(1024, max_bytes // (4 * max(1, n_rows)))


_BLOCK = 8192      # columns converted to float64 at a time: cache-resident operands for the products (measured
                   # best of 4k-32k with 2 strips on the paper trunk, 51 checkpoints)


def _float64_blocks(rows: np.ndarray, anchor_row: int | None = None, every: int = 1, first: int = 0,
                    out: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Column blocks of a float32 chunk as float64 tensors, optionally minus the anchor row (exact in float64).

    ``every``/``first``: only blocks first, first + every, ... (one worker's share). ``out``: a float64
    buffer of at least T × _BLOCK elements to convert into (no fresh pages per block); each yielded
    block is then valid until the next one.
    """
    x = torch.from_numpy(rows)
    for a in range(first * _BLOCK, x.shape[1], every * _BLOCK):
        src = x[:, a:a + _BLOCK]
        if out is None:
            blk = src.double()
        else:
            blk = out[:src.numel()].view(src.shape).copy_(src)
        if anchor_row is not None:
            _anchor(blk, anchor_row)
        yield blk


def _anchor(blk: torch.Tensor, anchor_row: int) -> None:
    """Rows minus the anchor row, in place, except the anchor row itself, which keeps θ(anchor): the product then
    also gives ⟨θ(anchor), x(s)⟩ and ‖θ(anchor)‖² (the origin row of :class:`Gram`) at no extra read. Every
    other entry of the product is the same arithmetic as with a zero anchor row."""
    a = blk[anchor_row].clone()
    blk.sub_(a)
    blk[anchor_row].copy_(a)


# ---------------------------------------------------------------------------- the Gram matrix
@dataclass
class Gram:
    """G[i, j] = ⟨θ(steps[i]) − θ(anchor), θ(steps[j]) − θ(anchor)⟩ over the trunk or one block.

    ``origin`` (when the Gram was streamed from checkpoints): o[i] = ⟨θ(anchor), θ(steps[i]) − θ(anchor)⟩ (0 at
    the anchor) and ``origin_sq`` = ‖θ(anchor)‖²; with them ‖θ(t)‖ and the drift's share along −θ̂(anchor) (the
    weight-decay diagnostics, :mod:`training.geometry.nulls`) are T-vector algebra too. None for a null's Gram.
    """

    steps: list[int]
    anchor: int
    block: int | None
    dim: int
    G: np.ndarray
    origin: np.ndarray | None = None
    origin_sq: float | None = None

    def index(self, steps: Sequence[int]) -> list[int]:
        pos = {s: i for i, s in enumerate(self.steps)}
        missing = [s for s in steps if s not in pos]
        if missing:
            raise UserError(f"step(s) {missing[:5]} are not among the checkpoints of this analysis")
        return [pos[s] for s in steps]

    def restrict(self, steps: Sequence[int]) -> "Gram":
        """The Gram of a subset of the steps (same anchor, which must be among them): a sub-matrix, exact."""
        steps = list(steps)
        if self.anchor not in steps:
            raise ValueError("a restricted Gram must keep its anchor step")
        idx = self.index(steps)
        origin = None if self.origin is None else self.origin[idx].copy()
        return Gram(steps, self.anchor, self.block, self.dim, self.G[np.ix_(idx, idx)].copy(), origin,
                    self.origin_sq)

    def drift_coeffs(self, steps: Sequence[int], ref: int) -> np.ndarray:
        """A (len(steps) × T): row i selects x(steps[i]) − x(ref), the drift from ``ref``."""
        A = np.zeros((len(steps), len(self.steps)))
        A[np.arange(len(steps)), self.index(steps)] += 1.0
        A[:, self.index([ref])[0]] -= 1.0
        return A

    def inner(self, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
        """Inner products of span vectors given by coefficients (… × T)."""
        return c1 @ self.G @ np.swapaxes(c2, -1, -2) if c2.ndim > 1 else c1 @ self.G @ c2

    def norms(self, coeffs: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(np.einsum("it,tu,iu->i", coeffs, self.G, coeffs), 0.0))

    def has_origin(self) -> bool:
        return self.origin is not None and self.origin_sq is not None

    def reanchored_origin(self, A: np.ndarray, ref: int) -> tuple[np.ndarray, float] | None:
        """The origin row of the drifts ``A`` (coefficient rows, e.g. :meth:`drift_coeffs`) from ``ref``:
        (⟨θ(ref), A_i⟩ per row, ‖θ(ref)‖²), with θ(ref) = θ(anchor) + x(ref); None without an origin."""
        if not self.has_origin():
            return None
        e = np.zeros(len(self.steps))
        e[self.index([ref])[0]] = 1.0
        o = A @ self.origin + A @ self.G @ e
        sq = self.origin_sq + 2.0 * float(self.origin @ e) + float(e @ self.G @ e)
        return o, sq

    def split_origin(self, ai: int) -> "Gram":
        """Move the raw anchor row that the streamed product leaves at index ``ai`` into ``origin``."""
        self.origin, self.origin_sq = self.G[ai].copy(), float(self.G[ai, ai])
        self.origin[ai] = 0.0
        self.G[ai, :] = 0.0
        self.G[:, ai] = 0.0
        return self


def compute_gram(ckpts: CheckpointSet, steps: Sequence[int] | None = None, block: int | None = None,
                 anchor: int | None = None, max_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = False,
                 device: str | torch.device = "cpu") -> Gram:
    """Stream the checkpoints once and accumulate G in float64 (memory: T × chunk, not T × D).

    ``device``: where the float64 products run ("cpu", "cuda", or "auto" = cuda when present). On a GPU
    each float32 chunk is copied over once and converted, anchored and multiplied there (still float64).
    """
    steps = list(ckpts.steps if steps is None else steps)
    anchor = steps[0] if anchor is None else anchor
    if anchor not in steps:
        steps = [anchor] + steps
    T = len(steps)
    G = np.zeros((T, T))
    ai = steps.index(anchor)
    chunks = stream_rows(ckpts, steps, block, _elems(max_bytes, T))
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, total=len(ckpts.chunks(block, _elems(max_bytes, T))), desc="gram", unit="chunk",
                      disable=None)
    dev = resolve_device(device)
    G[:] = _gram_on_device(chunks, T, ai, dev) if dev.type != "cpu" else _gram_on_cpu(chunks, T, ai)
    return Gram(steps, anchor, block, ckpts.dim(block), G).split_origin(ai)


def _gram_on_cpu(chunks: Iterator[np.ndarray], T: int, anchor_row: int) -> np.ndarray:
    """Σ over chunks of X_c·X_cᵀ in float64, on the CPU's cores.

    Each float32 chunk is cut into cache-sized column blocks, converted to float64 (and anchored) per
    block, which halves the memory traffic of converting a whole chunk. The blocks are shared among
    worker threads, each running the products single-threaded into an accumulator of its own (block i
    to worker i mod n, summed in worker order: the same result on every run with the same n). Threads
    instead of the BLAS's own parallelism because this shape (T × 8k blocks, T ≈ 50) parallelises badly
    inside one product, and an idle BLAS thread spins on the core that the reading thread needs.
    G is symmetric: each strip of rows is multiplied only with itself and the rows below it (the upper
    triangle: 3/4 of the products for 2 strips; more strips make the products smaller and slower, so 2
    measured fastest at T = 51), mirrored at the end.
    """
    strips = _row_strips(T)
    n = max(1, torch.get_num_threads())
    acc = [torch.zeros(T, T, dtype=torch.float64) for _ in range(n)]
    scratch = [torch.empty(T * _BLOCK, dtype=torch.float64) for _ in range(n)]

    def work(w: int, rows: np.ndarray) -> None:
        Gw = acc[w]
        for blk in _float64_blocks(rows, anchor_row, every=n, first=w, out=scratch[w]):
            for a, b in strips:
                Gw[a:b, a:].addmm_(blk[a:b], blk[a:].T)

    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            for rows in chunks:
                for f in [pool.submit(work, w, rows) for w in range(n)]:
                    f.result()
    finally:
        torch.set_num_threads(n)
    G = sum(acc[1:], acc[0].clone()).numpy()
    return np.triu(G) + np.triu(G, 1).T


def _row_strips(T: int, n: int = 2) -> list[tuple[int, int]]:
    """``n`` row ranges of about equal size covering 0..T (one range for a small T)."""
    n = n if T >= 16 else 1
    cuts = [round(i * T / n) for i in range(n + 1)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]


_GPU_COLS = 1 << 20        # columns per float64 product on an accelerator (T × 2^20 × 8 bytes)


def _gram_on_device(chunks: Iterator[np.ndarray], T: int, anchor_row: int, device: torch.device) -> np.ndarray:
    """G accumulated in float64 on ``device`` from float32 T × c chunks (the accelerator path of compute_gram)."""
    G = torch.zeros(T, T, dtype=torch.float64, device=device)
    for rows in chunks:
        x = torch.from_numpy(rows).to(device)      # one host->device copy per chunk (float32)
        for a in range(0, x.shape[1], _GPU_COLS):
            blk = x[:, a:a + _GPU_COLS].double()
            _anchor(blk, anchor_row)
            G.addmm_(blk, blk.T)
    return G.cpu().numpy()


def write_gram_cache(path: Path, keys: Sequence[str], gram: "Gram") -> None:
    """:func:`training.core.gramcache.write_cache` of a streamed Gram (atomic; replaces what was there)."""
    if not gram.has_origin():
        raise ValueError("only a streamed Gram (with its origin row) is cached")
    gramcache.write_cache(path, keys, gram.G, gram.dim, gram.origin, gram.origin_sq)


def gram_from_cache(hit: tuple, steps: Sequence[int], block: int | None) -> "Gram":
    G, dim, origin, origin_sq = hit
    return Gram(list(steps), steps[0], block, dim, G, origin, origin_sq)


def cached_gram(ckpts: CheckpointSet, block: int | None = None, progress: bool = False,
                max_bytes: int = DEFAULT_CHUNK_BYTES, compute: bool = True, device: str = "cpu") -> Gram | None:
    """The Gram of all checkpoints anchored at the first, cached in RUN/analysis/gram/ (keyed by each file's
    step and content identity, :func:`~training.core.gramcache.file_identity`; a cache of more checkpoints is
    reused exactly). A cache written during training (``gram_online``, :class:`training.core.gramcache.OnlineGram`)
    is read the same way; with the analyses redirected (``--out-dir``) it is also looked for in the run.

    With ``compute=False`` a missing or stale cache gives None instead of a computation.
    """
    keys = [gramcache.run_key(ckpts.run_dir, s) for s in ckpts.steps]
    paths = gramcache.run_cache_paths(ckpts.run_dir, block)
    for path in paths:
        hit = read_gram_cache(path, keys)
        if hit is not None:
            return gram_from_cache(hit, ckpts.steps, block)
    if not compute:
        return None
    g = compute_gram(ckpts, block=block, max_bytes=max_bytes, progress=progress, device=device)
    write_gram_cache(paths[0], keys, g)
    return g


# ---------------------------------------------------------------------------- PCA in the span
@dataclass
class PCA:
    """Uncentered PCA of a drift matrix A·X (rows optionally normalised)."""

    steps: list[int]                 # rows of the drift matrix
    reference_step: int
    rownorm: bool
    singular_values: np.ndarray      # full spectrum (rank ≤ rows)
    explained_variance_ratio: np.ndarray
    coeffs: np.ndarray               # (k × T) span coefficients of the principal directions (unit norm)
    row_coeffs: np.ndarray           # (rows × T) coefficients of the (normalised) drift rows
    scores: np.ndarray = field(repr=False, default=None)   # (rows × k) ⟨row, v_k⟩

    @property
    def k95(self) -> int:
        return k_at(self.explained_variance_ratio, 0.95)

    @property
    def k99(self) -> int:
        return k_at(self.explained_variance_ratio, 0.99)

    def summary(self) -> dict:
        return {"steps": list(self.steps), "reference_step": self.reference_step, "rownorm": self.rownorm,
                "singular_values": self.singular_values.tolist(),
                "explained_variance_ratio": self.explained_variance_ratio.tolist(),
                "pc1": float(self.explained_variance_ratio[0]), "k95": self.k95, "k99": self.k99}


def k_at(evr: np.ndarray, level: float) -> int:
    """Smallest k whose cumulative explained fraction reaches ``level`` (tolerant to round-off)."""
    cum = np.cumsum(evr)
    return int(min(len(evr), np.searchsorted(cum, level - 1e-12) + 1))


def pca(gram: Gram, steps: Sequence[int] | None = None, ref: int | None = None, rownorm: bool = False,
        k: int = 10) -> PCA:
    """Exact uncentered PCA of the drifts x(steps) − x(ref) (ref excluded from the rows)."""
    ref = gram.anchor if ref is None else ref
    steps = [s for s in (gram.steps if steps is None else steps) if s != ref]
    if not steps:
        raise UserError("PCA needs at least one checkpoint besides the reference step")
    A = gram.drift_coeffs(steps, ref)
    if rownorm:
        n = gram.norms(A)
        if np.any(n == 0):
            raise UserError(f"a drift row is exactly zero (steps {[s for s, v in zip(steps, n) if v == 0]}); "
                            "row normalisation is undefined")
        A = A / n[:, None]
    K = A @ gram.G @ A.T
    lam, U = np.linalg.eigh((K + K.T) / 2)
    order = np.argsort(lam)[::-1]
    lam, U = np.clip(lam[order], 0.0, None), U[:, order]
    total = lam.sum()
    if total <= 0:
        raise UserError("the drift matrix is zero: the checkpoints are identical")
    sv = np.sqrt(lam)
    k = min(k, int(np.sum(sv > sv[0] * 1e-12)))
    coeffs = (A.T @ U[:, :k] / sv[:k]).T          # v_j = Xᵀ Aᵀ u_j / σ_j
    scores = U[:, :k] * sv[:k]                    # ⟨row_i, v_j⟩ = σ_j u_ij
    # sign convention: the last row's coordinate on each component is positive
    signs = np.where(scores[-1] < 0, -1.0, 1.0)
    return PCA(list(steps), ref, rownorm, sv, lam / total, coeffs * signs[:, None], A, scores * signs)


def centred_pca(gram: Gram, steps: Sequence[int] | None = None, ref: int | None = None) -> dict:
    """Ordinary (centred) PCA of the same drift rows as :func:`pca`, for arXiv 2602.23696's Remark 1: the
    eigenvalues of H·K·H (K the rows' Gram, H = I − 11ᵀ/n) over the full spectrum, the share of the rows'
    energy that centring removes (n‖x̄‖² / Σ‖x_i‖², the mean drift), and |cos| between the centred and the
    uncentred PC1."""
    ref = gram.anchor if ref is None else ref
    steps = [s for s in (gram.steps if steps is None else steps) if s != ref]
    if len(steps) < 2:
        raise UserError("centred PCA needs at least two checkpoints besides the reference step")
    A = gram.drift_coeffs(steps, ref)
    n = len(steps)
    H = np.eye(n) - 1.0 / n
    K = A @ gram.G @ A.T
    Kc = H @ K @ H
    lam, U = np.linalg.eigh((Kc + Kc.T) / 2)
    order = np.argsort(lam)[::-1]
    lam, U = np.clip(lam[order], 0.0, None), U[:, order]
    total, energy = lam.sum(), float(np.trace(K))
    if total <= 0 or energy <= 0:
        raise UserError("the centred drift matrix is zero: every checkpoint sits at the mean drift")
    evr = lam / total
    c_centred = (H @ A).T @ U[:, 0]                # v = X_cᵀ u / σ, up to the norm that cos_span divides out
    c_raw = pca(gram, steps, ref, k=1).coeffs[0]
    mean_row = A.mean(axis=0)
    return {"explained_variance_ratio": evr.tolist(), "pc1": float(evr[0]), "k95": k_at(evr, 0.95),
            "k99": k_at(evr, 0.99), "mean_drift_share": float(n * gram.inner(mean_row, mean_row) / energy),
            "abs_cos_pc1_uncentred": abs(cos_span(gram, c_centred, c_raw))}


# ---------------------------------------------------------------------------- backbone quantities
def held_out_backbone(gram: Gram, start: int, end: int) -> np.ndarray:
    """Span coefficients of the backbone fitted without the interval [start, end]: PC1 of the drifts
    x'(t) = x(t) − 1[t ≥ end]·(x(end) − x(start)), the trajectory with that interval's displacement removed.

    A backbone fitted on every checkpoint contains that interval's displacement x(end) − x(start) itself,
    which favours cos(U, v_b) over cos(G, v_b) by construction (claim 7's replay), and the same holds for the
    run's own displacements used as a reference (claim 20); the held-out one does not. With X the drift rows
    and A = I − m (e_end − e_start)ᵀ, X' = A·X, so the Gram is A·G·Aᵀ and v' = X'ᵀc' = Xᵀ(Aᵀc')."""
    i, j = gram.index([start, end])
    A = np.eye(len(gram.steps))
    m = np.array([s >= end for s in gram.steps], dtype=float)
    A[:, j] -= m
    A[:, i] += m
    held = replace(gram, G=A @ gram.G @ A.T, origin=None, origin_sq=None)
    return A.T @ pca(held, k=1).coeffs[0]


def decomposition(gram: Gram, v_coeffs: np.ndarray, steps: Sequence[int] | None = None,
                  ref: int | None = None) -> dict[str, list[float]]:
    """a(t) = ⟨x(t) − x(ref), v⟩, ‖r(t)‖, ‖x(t) − x(ref)‖ and f_b(t) = a²/‖x‖² for a unit span vector v."""
    ref = gram.anchor if ref is None else ref
    steps = list(gram.steps if steps is None else steps)
    A = gram.drift_coeffs(steps, ref)
    a = gram.inner(A, v_coeffs)
    norm2 = np.einsum("it,tu,iu->i", A, gram.G, A)
    r = np.sqrt(np.maximum(norm2 - a ** 2, 0.0))
    fb = np.divide(a ** 2, norm2, out=np.zeros_like(a), where=norm2 > 0)
    return {"steps": steps, "a": a.tolist(), "residual_norm": r.tolist(), "drift_norm": np.sqrt(norm2).tolist(),
            "backbone_fraction": fb.tolist()}


def _window(gram: Gram, steps: list[int], rownorm: bool) -> tuple[dict, np.ndarray]:
    if len(steps) < 2:
        raise UserError(f"a window needs at least two checkpoints (got {steps})")
    p = pca(gram, steps, steps[0], rownorm=rownorm, k=1)
    drift = float(gram.norms(gram.drift_coeffs([steps[-1]], steps[0]))[0])
    return ({"steps": steps, "anchor": steps[0], "rownorm": rownorm, "pc1": float(p.explained_variance_ratio[0]),
             "k95": p.k95, "k99": p.k99, "drift": drift,
             "explained_variance_ratio": p.explained_variance_ratio.tolist()}, p.coeffs[0])


def window_geometry(gram: Gram, steps: Sequence[int], rownorm: bool = True) -> dict:
    """Uncentered PCA of the drifts θ(t) − θ(steps[0]) for t in ``steps[1:]`` (the window's anchor is its
    first step, as in the paper's Tables 9–10), with PC1, k95, k99 and the drift ‖θ(end) − θ(start)‖.

    ``gram`` is a :class:`Gram` holding every step of the window (e.g. the run's cached Gram); the numbers
    are exact (full spectrum).
    """
    return _window(gram, list(steps), rownorm)[0]


def window_pca(gram: Gram | None, steps: Sequence[int]) -> dict:
    """The window's PCA in both normalisations, or the reason it has none: the one rule behind every study's
    window table.

    Returns ``{"steps", "n_drifts", "reason": None, "drift", "rownorm": {...}, "raw": {...}, "backbone":
    {"rownorm": c, "raw": c}}`` with each normalisation's :func:`window_geometry` numbers and PC1's span
    coefficients (sign as :func:`pca` fixes it), or ``{"steps", "n_drifts", "reason": "..."}`` when there is
    no trajectory, fewer than two checkpoints, a non-finite weight, or a zero drift row (the run did not move,
    so row normalisation is undefined). The backbone's normalisation is therefore explicit at every use.
    """
    steps = list(steps)
    out = {"steps": steps, "n_drifts": max(0, len(steps) - 1)}
    if gram is None:
        return {**out, "reason": "the run has no usable trajectory (fewer than two checkpoints)"}
    if len(steps) < 2:
        return {**out, "reason": f"the window holds {len(steps)} checkpoint(s); at least 2 are needed"}
    idx = gram.index(steps)
    if not np.all(np.isfinite(gram.G[np.ix_(idx, idx)])):
        return {**out, "reason": "the checkpoints hold non-finite weights"}
    norms = gram.norms(gram.drift_coeffs(steps[1:], steps[0]))
    zero = [s for s, n in zip(steps[1:], norms) if not n > 0]
    if zero:
        return {**out, "reason": f"the drift from step {steps[0]} is exactly zero at step(s) {zero}: the run did not "
                                 "move, so row normalisation is undefined"}
    (row, row_pc1), (raw, raw_pc1) = _window(gram, steps, True), _window(gram, steps, False)
    return {**out, "reason": None, "drift": row["drift"], "rownorm": row, "raw": raw,
            "backbone": {"rownorm": row_pc1, "raw": raw_pc1}}


def pair_alignment(gram: Gram, v_coeffs: np.ndarray, prev_steps: Sequence[int], steps: Sequence[int]) -> dict[str, list]:
    """cos(θ(t) − θ(t_prev), v) for each pair (t_prev, t) of ``zip(prev_steps, steps)``: the one
    computation behind every update alignment (consecutive checkpoints, or a fixed lag Δ).

    Convention: an update is indexed by its END step t (C(t) = cos(θ(t) − θ(t − Δ), v)); callers that
    index by the start relabel, they do not recompute."""
    prev_steps, steps = list(prev_steps), list(steps)
    if not steps:
        return {"steps": [], "prev_steps": [], "signed_cos": [], "abs_cos": [], "update_norm": []}
    A = np.zeros((len(steps), len(gram.steps)))
    A[np.arange(len(steps)), gram.index(steps)] += 1.0
    A[np.arange(len(steps)), gram.index(prev_steps)] -= 1.0     # rows e_t − e_prev
    n = gram.norms(A)
    v_norm = float(np.sqrt(gram.inner(v_coeffs, v_coeffs)))
    cos = np.divide(gram.inner(A, v_coeffs), n * v_norm, out=np.zeros(len(n)), where=n > 0)
    return {"steps": steps, "prev_steps": prev_steps, "signed_cos": cos.tolist(),
            "abs_cos": np.abs(cos).tolist(), "update_norm": n.tolist()}


def update_alignment(gram: Gram, v_coeffs: np.ndarray, steps: Sequence[int] | None = None) -> dict[str, list]:
    """C(t) = cos(θ(t) − θ(t_prev), v) for consecutive checkpoints in ``steps``."""
    steps = list(gram.steps if steps is None else steps)
    return pair_alignment(gram, v_coeffs, steps[:-1], steps[1:])


def lagged_update_alignment(gram: Gram, v_coeffs: np.ndarray, delta: int,
                            steps: Sequence[int] | None = None) -> dict[str, list]:
    """C(t) = cos(θ(t) − θ(t − Δ), v) at every end step t of ``steps`` (default: every checkpoint) for
    which both checkpoints exist; ``missing_steps`` lists the requested ends that lack one of them."""
    have = set(gram.steps)
    wanted = list(gram.steps if steps is None else steps)
    ends = [t for t in wanted if t in have and t - delta in have]
    out = pair_alignment(gram, v_coeffs, [t - delta for t in ends], ends)
    found = set(ends)
    return {"delta": delta, **out, "missing_steps": [t for t in wanted if t not in found]}


INCOHERENCE_MAX_LAG = 5


def increment_coherence(gram: Gram, steps: Sequence[int] | None = None, max_lag: int = INCOHERENCE_MAX_LAG) -> dict:
    """ρ(ℓ) = mean_i cos(u_i, u_{i+ℓ}) of the increments u_i = θ(t_{i+1}) − θ(t_i) between consecutive ``steps``,
    for ℓ = 1 … min(max_lag, n − 1), n the number of increments; ℓ counts analysed intervals, not optimizer steps.

    A walk of independent isotropic increments has ρ(ℓ) = 0 (in D → ∞; ± 1/√D at finite D); increments that keep
    a common direction (a persistent drift, or weight decay pulling every step along −θ(0)) give ρ > 0, and
    steps that undo each other ρ < 0. Increments of zero norm are left out of the means; a lag with none left
    is None. Also ``n_increments`` and ``rho_mean``, the mean over the lags.
    """
    steps = list(gram.steps if steps is None else steps)
    n = len(steps) - 1
    lags = list(range(1, min(int(max_lag), n - 1) + 1)) if n >= 2 else []
    if not lags:
        return {"lags": [], "rho": [], "rho_mean": None, "n_increments": max(n, 0)}
    A = np.zeros((n, len(gram.steps)))
    A[np.arange(n), gram.index(steps[1:])] += 1.0
    A[np.arange(n), gram.index(steps[:-1])] -= 1.0
    Q = gram.inner(A, A)
    norm = np.sqrt(np.maximum(np.diag(Q), 0.0))
    ok = norm > 0
    cos = np.divide(Q, np.outer(norm, norm), out=np.full_like(Q, np.nan), where=np.outer(ok, ok))
    rho = []
    for lag in lags:
        d = np.diagonal(cos, offset=lag)
        d = d[np.isfinite(d)]
        rho.append(float(d.mean()) if d.size else None)
    finite = [r for r in rho if r is not None]
    return {"lags": lags, "rho": rho, "rho_mean": float(np.mean(finite)) if finite else None, "n_increments": n}


def sign_flip_step(steps: Sequence[int], signed_cos: Sequence[float], min_run: int | None = None) -> int | None:
    """The first step after which the signed alignment stays negative (None if it never flips); with ``min_run``,
    the first step that starts ``min_run`` consecutive negative values instead (the claims ledger's t*, which one
    negative last value cannot produce)."""
    c = np.asarray(signed_cos)
    for i in range(len(c)):
        tail = c[i:] if min_run is None else c[i:i + min_run]
        if c[i] < 0 and np.all(tail < 0) and (min_run is None or len(tail) == min_run):
            return int(steps[i])
    return None


def cos_span(gram: Gram, c1: np.ndarray, c2: np.ndarray) -> float:
    n1, n2 = np.sqrt(gram.inner(c1, c1)), np.sqrt(gram.inner(c2, c2))
    return float(gram.inner(c1, c2) / (n1 * n2)) if n1 > 0 and n2 > 0 else 0.0


def rolling_pc1(gram: Gram, width: int, steps: Sequence[int] | None = None, global_coeffs: np.ndarray | None = None,
                rownorm: bool = True, from_init: bool = False) -> dict[str, list]:
    """PC1 of each window of ``width`` consecutive checkpoints: of the drifts from the window start (default),
    or, ``from_init``, of the window's drifts from the Gram's anchor (the initialisation; the window construction
    of the mini_gpt code, which a random walk already makes stable to |cos| ≈ 0.997: training.geometry.nulls).

    Reports |cos| between adjacent windows' PC1 and, given ``global_coeffs``, |cos| with the global backbone.
    """
    steps = list(gram.steps if steps is None else steps)
    if width < 2 or width > len(steps):
        raise UserError(f"window width {width} must be between 2 and the number of checkpoints ({len(steps)})")
    vs, starts, pc1 = [], [], []
    for i in range(0, len(steps) - width + 1):
        w = steps[i:i + width]
        p = pca(gram, w, ref=gram.anchor if from_init else w[0], rownorm=rownorm, k=1)
        vs.append(p.coeffs[0])
        starts.append(w[0])
        pc1.append(float(p.explained_variance_ratio[0]))
    adjacent = [abs(cos_span(gram, vs[i], vs[i + 1])) for i in range(len(vs) - 1)]
    out = {"window_start": starts, "width": width, "from_init": from_init, "rownorm": rownorm, "pc1": pc1,
           "adjacent_abs_cos": adjacent}
    if global_coeffs is not None:
        out["global_abs_cos"] = [abs(cos_span(gram, v, global_coeffs)) for v in vs]
    return out


# The claims ledger's rule for a decay-dominated trajectory (docs/claims.md, claim 16): the weights kept less than
# a tenth of their norm, or at least 90 % of the drift's squared length lies along the shrink of the start.
DECAY_DOMINATED_NORM_RATIO = 0.1
DECAY_DOMINATED_SHARE = 0.9


def shrink_reading(ckpts: CheckpointSet, start: int, end: int) -> dict:
    """Is the drift from ``start`` to ``end`` the weight decay shrinking the start? The trunk's weight norms and
    the share of the drift along −θ(start).

    ``norm_start``, ``norm_end``, ``norm_ratio`` = ‖θ(end)‖ / ‖θ(start)‖, ``shrink_cos`` = cos(θ(end) − θ(start),
    −θ(start)), ``decay_share`` = max(shrink_cos, 0)² (the share of ‖θ(end) − θ(start)‖² along −θ̂(start)) and
    ``decay_dominated``: norm_ratio < 0.1 or decay_share ≥ 0.9. A trajectory that decay dominates is nearly one
    line toward the origin, so its PC1 is close to 1 whatever the gradients do. None values with a ``reason``
    when a norm is zero or not finite.
    """
    a, b = ckpts.vector(start), ckpts.vector(end)
    d = b - a

    def dot(x, y):      # exactly rounded, so the numbers do not depend on how BLAS splits the sum
        step = 1 << 20
        return math.fsum(itertools.chain.from_iterable((x[i:i + step] * y[i:i + step]).tolist()
                                                       for i in range(0, x.size, step)))
    na, nb, nd = (math.sqrt(dot(v, v)) for v in (a, b, d))
    out = {"start": int(start), "end": int(end), "norm_start": na, "norm_end": nb}
    if not (np.isfinite([na, nb, nd]).all() and na > 0 and nd > 0):
        return {**out, "norm_ratio": None, "shrink_cos": None, "decay_share": None, "decay_dominated": None,
                "reason": "non-finite weights or no drift between the two checkpoints"}
    cos = -dot(a, d) / (na * nd)
    share = max(cos, 0.0) ** 2
    return {**out, "norm_ratio": nb / na, "shrink_cos": cos, "decay_share": share,
            "decay_dominated": bool(nb / na < DECAY_DOMINATED_NORM_RATIO or share >= DECAY_DOMINATED_SHARE),
            "reason": None}


def random_walk_null(increment_norms: Sequence[float], dim: int, n_samples: int = 20, seed: int = 0,
                     rownorm: bool = False, centered: bool = False) -> dict:
    """PC1 and k95 (and k90) of a trajectory with the same per-interval step sizes in isotropic random directions.

    ``centered``: PCA of the mean-centred positions (the starting point included as a row) instead of
    the uncentered drifts.

    The increments' inner products are those of independent uniform directions in R^dim: their Gram
    matrix is drawn exactly as a Wishart(dim, I) matrix normalised to unit diagonal, so no D-dimensional
    vector is ever formed. The drift rows are the cumulative sums of the increments.
    """
    from scipy.stats import wishart
    n = np.asarray(increment_norms, dtype=np.float64)
    T = len(n)
    if T < 1:
        raise UserError("the random-walk null needs at least one increment")
    rng = np.random.default_rng(seed)
    L = np.tril(np.ones((T, T)))
    if centered:       # rows: the start (0) and the T positions, minus their mean
        L = np.vstack([np.zeros((1, T)), L])
        L = L - L.mean(axis=0, keepdims=True)
    pc1, k95, k90 = [], [], []
    for _ in range(n_samples):
        W = wishart(df=dim, scale=np.eye(T)).rvs(random_state=rng) if T > 1 else np.array([[float(dim)]])
        W = np.atleast_2d(W)
        d = np.sqrt(np.diag(W))
        C = W / np.outer(d, d)
        inc = n[:, None] * C * n[None, :]
        K = L @ inc @ L.T
        if rownorm:
            s = np.sqrt(np.diag(K))
            K = K / np.outer(s, s)
        lam = np.clip(np.linalg.eigvalsh((K + K.T) / 2)[::-1], 0, None)
        evr = lam / lam.sum()
        pc1.append(float(evr[0]))
        k95.append(k_at(evr, 0.95))
        k90.append(k_at(evr, 0.90))
    return {"pc1": float(np.mean(pc1)), "pc1_std": float(np.std(pc1)), "k95": float(np.mean(k95)),
            "k95_std": float(np.std(k95)), "k90": float(np.mean(k90)), "k90_std": float(np.std(k90)),
            "n_samples": n_samples, "seed": seed, "rownorm": rownorm, "centered": centered}


def increment_norms(gram: Gram, steps: Sequence[int] | None = None) -> np.ndarray:
    steps = list(gram.steps if steps is None else steps)
    A = gram.drift_coeffs(steps[1:], steps[0])
    A[1:] -= gram.drift_coeffs(steps[1:-1], steps[0])
    return gram.norms(A)


def select_steps(steps: Sequence[int], stride: int | None = None, start: int | None = None,
                 end: int | None = None) -> list[int]:
    """Checkpoint steps in [start, end] whose step is a multiple of ``stride`` (first and last always kept)."""
    if stride is not None and stride < 1:
        raise UserError(f"--stride must be a positive number of steps (got {stride})")
    s = [x for x in steps if (start is None or x >= start) and (end is None or x <= end)]
    if not s:
        raise UserError(f"no checkpoint in the window [{start}, {end}]")
    if stride:
        s = [x for i, x in enumerate(s) if x % stride == 0 or i in (0, len(s) - 1)]
    return s
