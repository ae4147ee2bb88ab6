"""Reading foreign checkpoints one tensor at a time.

A :class:`TensorSource` is one checkpoint: its tensor names and shapes (from the file headers, nothing
loaded) and :meth:`TensorSource.get` for one tensor. safetensors files (a Hugging Face save, a shard set with
its index) are opened with ``safe_open`` and read tensor by tensor; PyTorch files (``torch.save`` of a
state dict, or of a dict wrapping one such as the reference mini_gpt code's ``{"step", "model_state_dict"}``)
are opened with ``torch.load(mmap=True, weights_only=True)``, so a tensor's bytes are read from the page
cache when it is used and never all at once. A file in torch's legacy (pre-1.6, non-zip) format cannot be
memory-mapped and is loaded whole (one line on stderr says so).

Hugging Face checkpoints (a local ``save_pretrained`` directory, or a hub id and revision) are resolved
through ``transformers``: its ``AutoConfig`` reads the architecture, and its ``cached_file`` finds the weight
files in the directory or the local hub cache (downloading them when online).
"""
from __future__ import annotations

import json
import os
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch

from training.core import runio
from training.core.errors import UserError

WRAPPER_KEYS = ("model_state_dict", "state_dict", "model", "module", "weights", "params")
STEP_KEYS = ("step", "global_step", "iteration", "iter")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class TensorSource:
    """One checkpoint's tensors: ``shapes`` (name -> shape), ``dtypes`` (name -> str), ``get(name)``."""

    what: str
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    step: int | None = None        # a step recorded inside the checkpoint (the reference code's "step")

    def get(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        pass


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


class SafetensorsSource(TensorSource):
    """safetensors files read by plain ``pread`` at the offsets of their headers (as the toolkit's own trajectory
    reader does): one tensor's bytes in memory at a time, and no mapped pages that stay resident."""

    def __init__(self, files: list[Path], what: str):
        self.what, self.shapes, self.dtypes, self._where = what, {}, {}, {}
        for path in files:
            try:
                for k, (code, shape, offset, nbytes) in runio.safetensors_index(path)[1].items():
                    self.shapes[k] = shape
                    self.dtypes[k] = str(_ST_DTYPES[code]).replace("torch.", "") if code in _ST_DTYPES else code
                    self._where[k] = (path, offset, nbytes, code)
            except FileNotFoundError:
                raise UserError(f"{what}: {path} does not exist") from None
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"{what} ({path}) is corrupt or truncated ({e})") from None

    def get(self, name: str) -> torch.Tensor:
        path, offset, nbytes, code = self._where[name]
        dtype = _ST_DTYPES.get(code)
        if dtype is None:
            raise UserError(f"{self.what}: {name} has the unsupported dtype {self.dtypes[name]}")
        buf = bytearray(nbytes)
        with open(path, "rb") as f:
            runio.pread_exact(f.fileno(), memoryview(buf), offset,
                              lambda: f"{self.what}: cannot read {name} from {path} (file truncated)")
        if nbytes == 0:
            return torch.empty(self.shapes[name], dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype).reshape(self.shapes[name])


class TorchSource(TensorSource):
    """A ``torch.save`` file: a state dict, or a dict wrapping one (``model_state_dict``, ``state_dict``, ``model``)."""

    def __init__(self, path: Path, what: str, trust_pickle: bool = False):
        self.what = what
        obj = _torch_load(path, what, trust_pickle)
        state, self.step = unwrap_state_dict(obj, what)
        self._state = state
        self.shapes = {k: tuple(v.shape) for k, v in state.items()}
        self.dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in state.items()}

    def get(self, name: str) -> torch.Tensor:
        return self._state[name]

    def close(self) -> None:
        self._state = {}


def _torch_load(path: Path, what: str, trust_pickle: bool):
    kw = {"map_location": "cpu", "weights_only": not trust_pickle}
    try:
        if zipfile.is_zipfile(path):
            return torch.load(path, mmap=True, **kw)
        print(f"note: {what} is in torch's legacy serialisation format, which cannot be memory-mapped: it is "
              "loaded whole", file=sys.stderr)
        return torch.load(path, **kw)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} holds Python objects besides tensors, which torch.load(weights_only=True) refuses "
                        f"({first[:160]}); re-save its state_dict, or pass --trust-pickle if you trust the file") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} is not a readable PyTorch checkpoint ({first[:200]})") from None


def unwrap_state_dict(obj, what: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """(state dict, step recorded in the file or None) of a loaded checkpoint object."""
    step = None
    for _ in range(3):                     # e.g. {"model": {"state_dict": {...}}}: at most a few levels
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for k, v in obj.items() if isinstance(k, str)) \
                and any(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, step
        for k in STEP_KEYS:
            if step is None and isinstance(obj.get(k), int) and not isinstance(obj.get(k), bool):
                step = int(obj[k])
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
    raise UserError(f"{what} is not a state dict nor a dict wrapping one under {', '.join(WRAPPER_KEYS[:3])} "
                    f"(it holds {keys})")


def open_file(path: Path, trust_pickle: bool = False) -> TensorSource:
    what = f"checkpoint {path}"
    if not path.is_file():
        raise UserError(f"{what} does not exist")
    if path.suffix == ".safetensors":
        return SafetensorsSource([path], what)
    return TorchSource(path, what, trust_pickle)


# ---------------------------------------------------------------------------- steps from names
_STEP_RE = re.compile(r"(?:step|ckpt|checkpoint|iter|iteration|global_step)[_\-=]?(\d+)", re.IGNORECASE)


def step_of_name(name: str) -> int | None:
    """The training step in a file or revision name: ``ckpt_000200.pt`` -> 200, ``step1000`` -> 1000, else the
    last number in the name (``model-300.pt`` -> 300); None when it holds no number."""
    stem = name
    for suffix in CHECKPOINT_SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    m = _STEP_RE.findall(stem)
    if m:
        return int(m[-1])
    nums = re.findall(r"\d+", stem)
    return int(nums[-1]) if nums else None


def checkpoint_files(directory: Path) -> list[Path]:
    """The checkpoint files of a directory (by suffix), sorted by name."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES
                  and not p.name.startswith("."))


# ---------------------------------------------------------------------------- Hugging Face
HF_WEIGHTS = (("model.safetensors.index.json", "safetensors"), ("model.safetensors", "safetensors"),
              ("pytorch_model.bin.index.json", "torch"), ("pytorch_model.bin", "torch"))


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("importing Hugging Face checkpoints needs transformers: pip install -e .[hf]") from None
    return transformers


def is_hub_id(text: str) -> bool:
    """``owner/name`` (the shape of a hub model id) that is not an existing path."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", text)) and not Path(text).exists()


def _hub_error(e: Exception, where: str, repo: str = "REPO", revision: str | None = None) -> UserError:
    text = " ".join(str(e).split())
    if "couldn't connect" in text.lower() or "offline" in text.lower() or "cannot find the requested files" in text.lower():
        why = "it is not in the local Hugging Face cache and the hub cannot be reached (offline or unreachable)"
    elif "not a valid git identifier" in text or "revision" in text.lower() and "not" in text.lower():
        why = "no such revision"
    else:
        why = text[:200]
    rev = f" --revision {revision}" if revision else ""
    return UserError(f"{where}: {why}; download or cache it first (e.g. `hf download {repo}{rev}`, or transformers' "
                     "from_pretrained while online), or give the local directory")


def hf_config(src: str, revision: str | None, where: str):
    """The transformers config of a checkpoint (local directory or hub id at ``revision``)."""
    transformers = _transformers()
    try:
        return transformers.AutoConfig.from_pretrained(src, revision=revision)
    except ValueError as e:          # a config.json whose model_type transformers does not know
        raise UserError(f"{where}: unknown architecture ({' '.join(str(e).split())[:200]})") from None
    except OSError as e:
        if Path(src).is_dir():
            raise UserError(f"{where} is not a Hugging Face checkpoint directory (no readable config.json)") from None
        raise _hub_error(e, where, src, revision) from None


def hf_source(src: str, revision: str | None, where: str, trust_pickle: bool = False) -> TensorSource:
    """The weights of one Hugging Face checkpoint, resolved by transformers' ``cached_file`` (a local directory,
    or the hub cache / hub at ``revision``), read tensor by tensor."""
    from transformers.utils import cached_file
    for filename, kind in HF_WEIGHTS:
        try:
            found = cached_file(src, filename, revision=revision, _raise_exceptions_for_missing_entries=False)
        except OSError as e:
            raise _hub_error(e, where, src, revision) from None
        if found is None:
            continue
        found = Path(found)
        if filename.endswith(".index.json"):
            try:
                index = json.loads(found.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise UserError(f"{where}: {filename} is not a shard index ({e})") from None
            files = []
            for shard in dict.fromkeys(index.values()):
                try:
                    p = cached_file(src, shard, revision=revision)
                except OSError as e:
                    raise _hub_error(e, f"{where} (shard {shard})", src, revision) from None
                files.append(Path(p))
        else:
            files = [found]
        if kind == "safetensors":
            return SafetensorsSource(files, where)
        return _MergedTorch([TorchSource(p, f"{where} ({p.name})", trust_pickle) for p in files], where)
    if not Path(src).is_dir():
        raise _hub_error(OSError("couldn't connect or find the weights in the cached files"), where, src, revision)
    raise UserError(f"{where} has no weights (none of {', '.join(f for f, _ in HF_WEIGHTS)})")


class _MergedTorch(TensorSource):
    def __init__(self, parts: list[TorchSource], what: str):
        self.what, self.parts = what, parts
        self.shapes, self.dtypes, self._where = {}, {}, {}
        for p in parts:
            self.shapes.update(p.shapes)
            self.dtypes.update(p.dtypes)
            self._where.update({k: p for k in p.shapes})

    def get(self, name: str) -> torch.Tensor:
        return self._where[name].get(name)

    def close(self) -> None:
        for p in self.parts:
            p.close()


def hf_dims(config) -> dict:
    """n_layer, d_model, n_head, d_ff, seq_len of a transformers config (for the run's config.json)."""
    def first(*names, default=None):
        for n in names:
            v = getattr(config, n, None)
            if v is not None:
                return v
        return default
    d = first("n_embd", "hidden_size", "d_model")
    return {"n_layer": first("n_layer", "num_hidden_layers"), "d_model": d,
            "n_head": first("n_head", "num_attention_heads"),
            "d_ff": first("n_inner", "intermediate_size", default=4 * d if d else None),
            "seq_len": first("n_positions", "max_position_embeddings")}


def environment_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
