"""FineWeb token shards as a corpus (``corpus=fineweb``; the data format of
evasilverstein/symmetry-breaking-files, its README's "Data Preparation").

A shard is a 256-int32 header followed by uint16 GPT-2 token ids. Header word 0 is the magic number
20240520, word 1 the format version (1), word 2 the number of tokens; the file must be exactly
1024 + 2·n bytes. (A defect of that repository's loader that we do not reproduce: it memory-maps the file from byte 0 and
so reads the header as tokens; here the header is checked and skipped.)

``corpus_path`` names a directory of shards; files with ``train`` in the name form the training split and
files with ``val`` the validation split, each in sorted order and concatenated (a window may cross a
shard boundary). Nothing is copied: the token arrays are memory maps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from training.core.batch import TokenSplit
from training.core.errors import UserError
from training.core.runio import atomic_write

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def write_shard(path: str | Path, tokens) -> Path:
    """Write ``tokens`` (ids < 65536) as one shard, atomically."""
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() > 65535):
        raise UserError("a FineWeb shard holds uint16 token ids (0..65535)")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (MAGIC, VERSION, toks.size)

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(header.tobytes())
            fh.write(toks.astype(np.uint16).tobytes())
    atomic_write(path, write)
    return Path(path)


def read_shard(path: str | Path) -> np.memmap:
    """The tokens of one shard as a read-only uint16 memmap; a bad header or size is a one-line error."""
    path = Path(path)
    try:
        size = path.stat().st_size
        header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    except OSError as e:
        raise UserError(f"cannot read token shard {path} ({e.strerror})") from None
    if header.size < HEADER_INTS:
        raise UserError(f"token shard {path} is corrupt: {size} bytes, shorter than the 1024-byte header")
    if header[0] != MAGIC or header[1] != VERSION:
        raise UserError(f"token shard {path} is corrupt or not a FineWeb shard: header starts {header[0]}, {header[1]} "
                        f"instead of {MAGIC}, {VERSION}; re-create it with experiments/symmetry/prepare_fineweb.py")
    n = int(header[2])
    if n <= 0 or size != HEADER_BYTES + 2 * n:
        raise UserError(f"token shard {path} is corrupt: its header promises {n} tokens ({HEADER_BYTES + 2 * n} bytes) "
                        f"but the file has {size} bytes (truncated download?)")
    return np.memmap(path, dtype=np.uint16, mode="r", offset=HEADER_BYTES, shape=(n,))


class ShardArray:
    """Several shards read as one 1-D token array: ``len`` and integer-array indexing (what the batcher
    uses), one contiguous slice per requested window row."""

    def __init__(self, shards: list[np.memmap]):
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _slice(self, a: int, b: int) -> np.ndarray:
        out, pos = [], a
        while pos < b:
            i = int(np.searchsorted(self.starts, pos, side="right") - 1)
            end = min(b, int(self.starts[i + 1]))
            out.append(np.asarray(self.shards[i][pos - self.starts[i]:end - self.starts[i]]))
            pos = end
        return np.concatenate(out) if len(out) != 1 else out[0]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            a, b, step = idx.indices(len(self))
            return self._slice(a, b)[::step]
        idx = np.asarray(idx)
        if idx.ndim == 0:
            return self._slice(int(idx), int(idx) + 1)[0]
        rows = idx.reshape(-1, idx.shape[-1])
        out = np.empty(rows.shape, dtype=np.uint16)
        for r, row in enumerate(rows):       # windows are contiguous ranges: one slice each
            if np.all(np.diff(row) == 1):
                out[r] = self._slice(int(row[0]), int(row[-1]) + 1)
            else:
                out[r] = [self._slice(int(j), int(j) + 1)[0] for j in row]
        return out.reshape(idx.shape)


def shard_files(corpus_path: str | Path) -> dict[str, list[Path]]:
    root = Path(corpus_path)
    if not root.is_dir():
        raise UserError(f"corpus_path {corpus_path} is not a directory of FineWeb token shards; create one with "
                        "experiments/symmetry/prepare_fineweb.py")
    files = sorted(root.glob("*.bin"))
    split = {"train": [f for f in files if "train" in f.name], "val": [f for f in files if "val" in f.name]}
    for name, fs in split.items():
        if not fs:
            raise UserError(f"{corpus_path} holds no *{name}*.bin token shard (prepare_fineweb.py writes both)")
    return split


def fineweb_identity(corpus_path: str | Path) -> list:
    return [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns]
            for fs in shard_files(corpus_path).values() for f in fs]


def fineweb_splits(cfg):
    """{"train", "val"} TokenSplits over the shards of ``cfg.corpus_path`` (one 'document' per split)."""
    out = {}
    for name, files in shard_files(cfg.corpus_path).items():
        arr = ShardArray([read_shard(f) for f in files])
        out[name] = TokenSplit(arr, np.array([0, len(arr)], dtype=np.int64))
    return out
