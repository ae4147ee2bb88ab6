"""Run configuration: one dataclass, eight presets, JSON round trip and validation.

Every knob of a training run lives in :class:`Config`. A run directory stores the resolved config in
``config.json``; :func:`Config.from_dict` reads it back exactly. :meth:`Config.validate` rejects
impossible settings with a one-line :class:`~training.core.errors.UserError`.

Presets (:data:`PRESETS`; README, "Training"):

* ``test``  -- a few-thousand-parameter model for unit and end-to-end tests (seconds on a CPU);
* ``quick`` -- the embedded offline default: synthetic stories, a trained byte-level BPE, a small
  model whose whole pipeline takes a few minutes on a laptop CPU, with the paper's dimensionless knobs
  (integrated weight decay, λ-switch position, checkpoints, probe-eval noise; docs/regime.md);
* ``cpu``   -- the most faithful CPU analogue of the paper (the same knobs, the paper's tokens per
  parameter), for the three-seed claims runs (scripts/run_seeds.sh);
* ``paper`` -- the setup of the paper (arXiv 2602.23696, Table 1; skydancerosel/mini_gpt's
  ``scripts/run_seed.sh``): 8 layers, d_model 512, GPT-2 BPE, TinyStories, AdamW(0.9, 0.95), 10,000 steps;
* ``124m``, ``355m``, ``774m``, ``1.3b`` -- the GPT-2 model sizes of the symmetry-breaking study
  (evasilverstein/symmetry-breaking-files) on FineWeb token shards (``corpus=fineweb``), ECD, 500M tokens.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from training.core.attention_bias import AttentionBiasSettings, BreakingSettings
from training.core.control import SuppressionSettings
from training.core.ecd import ECDSettings
from training.core.errors import UserError
from training.core.modadd import ModAddOpSettings, ModAddSettings

CORPORA = ("synthetic", "tinystories", "files", "fineweb")
TOKENIZERS = ("gpt2", "bpe")
WINDOWS = ("story", "packed")
ATTENTION = ("sdpa", "math")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
LOG_SINKS = ("tensorboard", "wandb")   # experiment-tracking sinks beside metrics.jsonl (training/core/tracking.py)

# Fields that do not change what is computed (where it runs, where it is written); they are left
# out of the config hash so that a run can be resumed on another device or from a moved directory.
NOT_HASHED = ("out_dir", "device", "compile", "cache_dir", "progress", "ckpt_contents", "ckpt_dtype", "ckpt_shards",
              "async_checkpoints", "optimizer_state_every", "log", "gram_online", "gram_online_mem_mb")
CKPT_CONTENTS = ("full", "trunk")
CKPT_DTYPES = ("fp32", "bf16")


# ---------------------------------------------------------------------------- the config, group by group
# Config below is assembled from these groups. Those declared in this module are the core's settings; the
# task-, optimizer- and attention-bias-specific ones are declared (and checked) by their own modules.
# A dataclass collects its bases' fields from the last base to the first, so Config's bases are listed
# in reverse: its fields, config.json and the config hash keep the order of the groups as read here.
@dataclass
class ModelSettings:
    """The GPT: depth, width, heads, context, dropout, attention kernel, initialisation (docs/definitions.md)."""
    n_layer: int = 8
    d_model: int = 512
    n_head: int = 16
    d_ff: int = 2048
    seq_len: int = 256
    dropout: float = 0.0
    attn_only: bool = False          # blocks without an MLP (no dead parameters)
    attention: str = "sdpa"          # "sdpa" for training, "math" for forward-mode / 2nd-order analyses
    init_std: float = 0.02


@dataclass
class DataSettings:
    """The corpus and its tokenizer (training/core/data.py)."""
    corpus: str = "tinystories"      # synthetic | tinystories | files | fineweb
    corpus_path: str = ""            # files: a .txt, .jsonl or .parquet file (or a directory of them); fineweb: the shards
    corpus_seed: int = 0             # synthetic corpus generation seed
    n_train_docs: int = 200_000      # stories used for training (first N, as mini_gpt)
    n_val_docs: int = 5_000          # held-out stories used for val_loss
    min_doc_chars: int = 40
    tokenizer: str = "gpt2"          # gpt2 (tiktoken) | bpe (byte-level BPE trained on this corpus)
    bpe_vocab_size: int = 4096
    window: str = "story"            # story: one story per window, EOS-padded; packed: contiguous token stream
    cache_dir: str = ""              # token cache; "" = <repo>/.cache


@dataclass
class ProbeSettings:
    """The key-retrieval probe embedded in the stories, and its fixed evaluation sets (training/core/data_probe.py)."""
    p_probe: float = 0.10
    n_codewords: int = 512
    codeword_seed: int = 42
    train_gap: tuple[int, int] = (5, 30)
    eval_in_gap: tuple[int, int] = (5, 30)
    eval_ood_gap: tuple[int, int] = (80, 200)
    n_probe_eval: int = 2000         # examples in each fixed probe evaluation set
    eval_seed: int = 1234            # seeds the fixed eval sets; independent of the training seed


@dataclass
class TaskSettings:
    """Which task the trainer runs (the task table: training/core/tasks.py)."""
    task: str = "lm_probe"


@dataclass
class OptimisationSettings:
    """The optimizer (training/core/optim.py) and its schedule: warmup, cosine to a floor, batches, clipping."""
    optimizer: str = "adamw"
    lr: float = 1e-3
    wd: float = 0.5
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    momentum: float = 0.9            # SGD variants with momentum
    warmup: int = 1500
    steps: int = 10_000
    lr_floor: float = 0.1            # cosine clamped at this fraction of the peak
    batch_size: int = 64             # micro-batch (sequences)
    grad_accum: int = 2
    grad_clip: float = 1.0           # global norm; 0 disables


@dataclass
class SOAPSettings:
    """SOAP's one setting of its own (pytorch-optimizer's SOAP, built in training/core/optim.py)."""
    soap_precondition_frequency: int = 10


@dataclass
class LossSettings:
    """The composite loss L_LM + λ·L_probe, λ stepping from lambda_probe to lambda_probe2 at lambda_step."""
    lambda_probe: float = 2.0
    lambda_probe2: Optional[float] = 4.0   # None = same as lambda_probe
    lambda_step: int = 4000


@dataclass
class EvaluationSettings:
    """When to evaluate and checkpoint, and the evaluation sets' sizes."""
    eval_every: int = 200
    ckpt_every: int = 200
    ckpt_dense: tuple[tuple[int, int, int], ...] = ()   # extra (from, to, every) checkpoint windows
    n_val_seqs: int = 1280           # fixed validation windows for val_loss
    eval_batch_size: int = 128
    # Probe sets evaluated up to each example's answer only (a causal model's p and nll are the same; lm_in/lm_ood
    # become the LM loss on the tokens before the answer), in batches of similar length: 2-3x cheaper on CPU presets
    probe_eval_crop: bool = False
    early_stop: bool = False         # stop once the last 5 p_ood values are all >= 0.8 (off by default)


@dataclass
class RunSettings:
    """Seeds, the start files of a run, checkpoint storage, where it runs and is written."""
    seed: int = 42
    data_seed: Optional[int] = None  # seeds the training data stream; None = seed
    init_from: str = ""              # start from these weights with a fresh optimizer (reheating)
    init_optimizer: str = ""         # with init_from: also load the optimizer moments from this state file
    keep_optimizer_states: bool = False   # also write state/optimizer_step_XXXXXX.pt at every checkpoint
    # checkpoint storage for long sweeps (runio.save_checkpoint); the resume state then keeps full fp32 weights
    ckpt_contents: str = "full"      # full | trunk (the trunk matrices only: trajectory analyses, not model ones)
    ckpt_dtype: str = "fp32"         # fp32 | bf16 (half the bytes; drift analyses refuse it: below bf16 resolution)
    ckpt_shards: bool = False        # one file per block (+ one for the rest) so per-block analyses read only theirs
    async_checkpoints: Optional[bool] = None   # write checkpoints on a background thread; None = on CUDA only
    device: str = "auto"
    precision: str = "auto"          # auto = bf16 autocast on CUDA, fp32 elsewhere
    compile: bool = False
    vocab_multiple: int = 1          # pad the embedding / head rows to a multiple of this (64 on GPUs); logits are
                                     # sliced back to the real vocabulary, so the loss is that of the unpadded model
    progress: bool = True
    out_dir: str = ""
    preset: str = ""
    # with keep_optimizer_states off: keep the optimizer state only at checkpoints whose step is a positive multiple
    # of this (0: none); the replay test of claim 7 (analysis/backbone/integration_test.py) starts from them and
    # from step 0, which needs no saved state. Last of the fields: config.json keeps the published order before it
    optimizer_state_every: int = 0
    # experiment-tracking sinks fed from the records of metrics.jsonl (LOG_SINKS; --log): where the numbers are also
    # shown, not what is computed (NOT_HASHED); added after optimizer_state_every so config.json's order stays
    log: tuple[str, ...] = ()
    # task=modadd: 0 = a fresh sequence for every training example (the reference); N > 0 = a fixed training set of
    # N sequences from which batches are drawn, the eval sets then a held-out split (training/core/modadd.py)
    modadd_train_size: int = 0


@dataclass
class GramSettings:
    """The trajectory Gram cache written while training (training/core/gramcache.py): what is stored beside the
    run, not what is computed (NOT_HASHED). Declared after the symmetry-breaking settings, so config.json's order stays."""
    gram_online: bool = False        # at each checkpoint add its row to every block's Gram cache (RUN/analysis/gram)
    gram_online_mem_mb: int = 6144   # float32 trunk copies kept for it (at most this); rows beyond are re-read


@dataclass
class Config(ModAddOpSettings, GramSettings, BreakingSettings, SuppressionSettings, RunSettings, EvaluationSettings, LossSettings, AttentionBiasSettings, SOAPSettings, ECDSettings,
             OptimisationSettings, ModAddSettings, TaskSettings, ProbeSettings, DataSettings, ModelSettings):
    """Every knob of a training run: model, data, probe, task, modadd, optimisation, ECD, SOAP, attention
    biases, loss, evaluation, run, subspace suppression (the groups above and in training/core/modadd.py, ecd.py,
    attention_bias.py, control.py; suppression's fields, then the learned-bQ / MLP-activation controls of
    attention_bias.py's BreakingSettings, the online Gram's and modadd_op come last, after the published order)."""

    # ------------------------------------------------------------------ derived values
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def lambda_after(self) -> float:
        return self.lambda_probe if self.lambda_probe2 is None else self.lambda_probe2

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.seq_len

    @property
    def effective_data_seed(self) -> int:
        """Seed of the training data stream.

        A run started from another run's weights (``init_from``, reheating) must not replay the original
        run's batches, so without an explicit ``data_seed`` its stream is keyed by (seed, checkpoint file)
        instead of by the seed alone.
        """
        if self.data_seed is not None:
            return self.data_seed
        if self.init_from:
            key = f"{self.seed}:{Path(self.init_from).parent.parent.name}/{Path(self.init_from).name}"
            return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF
        return self.seed

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = json.loads(json.dumps(v))   # nested tuples -> lists
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        if not isinstance(d, dict):
            raise UserError(f"a config must be an object of field: value pairs, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown config field(s): {', '.join(unknown)}")
        kwargs = {k: _coerce(k, v) for k, v in d.items()}
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"config is not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(d, dict):
            raise UserError("config JSON must be an object of field: value pairs")
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def hash(self) -> str:
        """Short hash of everything that determines the computation (not where it runs or is written)."""
        d = {k: v for k, v in self.to_dict().items() if k not in NOT_HASHED
             and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ validation
    def check_fields(self) -> "Config":
        """The config's own checks: raise UserError with a one-line message for the first impossible setting of
        a core field; return self. The optimizer's, the attention biases' and the task's settings are checked by
        their modules; :func:`training.core.tasks.validate` runs all of them and is what callers use."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        for name in ("n_layer", "d_model", "n_head", "d_ff", "seq_len", "steps", "batch_size", "grad_accum",
                     "eval_every", "ckpt_every", "n_val_seqs", "eval_batch_size", "n_codewords", "n_probe_eval",
                     "n_train_docs", "n_val_docs", "bpe_vocab_size"):
            need(getattr(self, name) > 0, f"{name} must be a positive integer (got {getattr(self, name)})")
        need(self.d_model % self.n_head == 0,
             f"n_head={self.n_head} does not divide d_model={self.d_model}")
        need(self.corpus in CORPORA, f"unknown corpus '{self.corpus}' (choose from {', '.join(CORPORA)})")
        need(self.tokenizer in TOKENIZERS, f"unknown tokenizer '{self.tokenizer}' (choose from {', '.join(TOKENIZERS)})")
        need(self.window in WINDOWS, f"unknown window '{self.window}' (choose from {', '.join(WINDOWS)})")
        need(self.attention in ATTENTION, f"unknown attention '{self.attention}' (choose from {', '.join(ATTENTION)})")
        need(self.device in DEVICES, f"unknown device '{self.device}' (choose from {', '.join(DEVICES)})")
        need(self.precision in PRECISIONS, f"unknown precision '{self.precision}' (choose from {', '.join(PRECISIONS)})")
        need(self.ckpt_contents in CKPT_CONTENTS,
             f"unknown ckpt_contents '{self.ckpt_contents}' (choose from {', '.join(CKPT_CONTENTS)})")
        need(self.ckpt_dtype in CKPT_DTYPES, f"unknown ckpt_dtype '{self.ckpt_dtype}' (choose from {', '.join(CKPT_DTYPES)})")
        need(self.gram_online_mem_mb >= 0, f"gram_online_mem_mb must be >= 0 (MiB; got {self.gram_online_mem_mb})")
        need(self.vocab_multiple >= 1, f"vocab_multiple must be a positive integer (got {self.vocab_multiple})")
        need(self.corpus != "files" or bool(self.corpus_path), "corpus=files needs corpus_path (a .txt, .jsonl or .parquet file)")
        need(self.corpus != "fineweb" or (bool(self.corpus_path) and self.tokenizer == "gpt2"),
             "corpus=fineweb needs corpus_path (a directory of *_train_*.bin / *_val_*.bin token shards) and tokenizer=gpt2")
        need(self.tokenizer != "bpe" or self.bpe_vocab_size >= 512,
             f"bpe_vocab_size must be at least 512 (got {self.bpe_vocab_size})")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1) (got {self.dropout})")
        need(self.init_std > 0, f"init_std must be positive (got {self.init_std})")
        need(self.lr > 0, f"lr must be positive (got {self.lr})")
        need(self.wd >= 0, f"wd must be >= 0 (got {self.wd})")
        need(0.0 <= self.beta1 < 1.0, f"beta1 must be in [0, 1) (got {self.beta1})")
        need(0.0 <= self.beta2 < 1.0, f"beta2 must be in [0, 1) (got {self.beta2})")
        need(self.eps > 0, f"eps must be positive (got {self.eps})")
        need(0.0 <= self.momentum < 1.0, f"momentum must be in [0, 1) (got {self.momentum})")
        need(0 <= self.warmup <= self.steps, f"warmup must be in [0, steps={self.steps}] (got {self.warmup})")
        need(0.0 <= self.lr_floor <= 1.0, f"lr_floor must be in [0, 1] (got {self.lr_floor})")
        need(self.grad_clip >= 0, f"grad_clip must be >= 0 (got {self.grad_clip})")
        need(0.0 <= self.p_probe <= 1.0, f"p_probe must be in [0, 1] (got {self.p_probe})")
        need(self.lambda_probe >= 0 and self.lambda_after >= 0, "lambda_probe and lambda_probe2 must be >= 0")
        need(0 <= self.lambda_step <= self.steps,
             f"lambda_step={self.lambda_step} is outside the run's steps [0, {self.steps}]")
        for name in ("train_gap", "eval_in_gap", "eval_ood_gap") if self.task == "lm_probe" else ():
            lo, hi = getattr(self, name)
            need(0 <= lo <= hi, f"{name} must be (lo, hi) with 0 <= lo <= hi (got ({lo}, {hi}))")
            # key (<= 8 tokens) + gap + query (<= 8 tokens) + a short prefix must fit in one window
            need(hi + _PROBE_OVERHEAD <= self.seq_len,
                 f"{name} up to {hi} cannot fit seq_len={self.seq_len}: need seq_len >= {hi + _PROBE_OVERHEAD}")
        need(not self.init_optimizer or bool(self.init_from),
             "init_optimizer (saved optimizer moments) needs init_from (the weights of the same step)")
        for w in self.ckpt_dense:
            need(len(w) == 3 and 0 <= w[0] <= w[1] and w[2] > 0,
                 f"ckpt_dense window {tuple(w)} must be (from, to, every) with from <= to and every > 0")
        bad = [s for s in self.log if s not in LOG_SINKS]
        need(not bad, f"unknown log sink '{bad[0] if bad else ''}' (choose from {', '.join(LOG_SINKS)})")
        need(len(set(self.log)) == len(self.log), f"log names a sink twice ({', '.join(self.log)})")
        need(self.optimizer_state_every >= 0,
             f"optimizer_state_every must be >= 0 (0: keep no optimizer states; got {self.optimizer_state_every})")
        return self


# Probe sequence budget beyond the gap: the longest key and query template (<= 12 tokens each with a
# byte-level BPE on plain English) plus at least a 2-token prefix and one target.
_PROBE_OVERHEAD = 28


_HINTS = typing.get_type_hints(Config)


def _coerce(name: str, value: Any) -> Any:
    """Turn a JSON value (from config.json or ``--set``) into the dataclass field's Python type (lists -> tuples).

    Every value a field cannot hold is a one-line UserError naming the field, the expected type and the
    value: null for a field that is not optional, a bool where a number is expected (JSON ``true`` is not
    1), a string that is not a number, a list of the wrong length or with non-integer items. A valid value
    gives exactly the Python value it gave before these checks, so config.json and the config hash of
    every valid config are unchanged.
    """
    t = _HINTS[name]
    optional = typing.get_origin(t) is typing.Union and type(None) in typing.get_args(t)
    if optional:
        t = next(a for a in typing.get_args(t) if a is not type(None))
    if value is None:
        if optional:
            return None
        raise UserError(f"config field {name} cannot be null (it expects {_type_name(t)})")
    if typing.get_origin(t) is tuple:
        args = typing.get_args(t)
        if args == (str, Ellipsis):                          # tuple[str, ...]: names, e.g. log ("a,b" or a list)
            items = value.split(",") if isinstance(value, str) else _as_list(name, value, t)
            if not all(isinstance(x, str) for x in items):
                raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}")
            return tuple(x.strip() for x in items if x.strip())
        if len(args) == 2 and args[1] is Ellipsis:          # tuple[tuple[int, ...], ...]: e.g. ckpt_dense
            item_t = args[0]
            items = _as_list(name, value, t)
            return tuple(_int_tuple(name, item, typing.get_args(item_t), t) for item in items)
        return _int_tuple(name, value, args, t)
    try:
        if t is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
                return bool(value)
            raise ValueError(value)
        if t is int:
            if isinstance(value, bool) or isinstance(value, (list, dict)):
                raise ValueError(value)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if t is float:
            if isinstance(value, bool) or isinstance(value, (list, dict)):
                raise ValueError(value)
            return float(value)
        if t is str:
            if isinstance(value, (bool, list, dict)):
                raise ValueError(value)
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}") from None
    return value


def _type_name(t: Any) -> str:
    if typing.get_origin(t) is tuple:
        args = typing.get_args(t)
        if args == (str, Ellipsis):
            return "a list of names (or one comma-separated string)"
        if len(args) == 2 and args[1] is Ellipsis:
            inner = typing.get_args(args[0])
            return f"a list of [{', '.join('int' for _ in inner)}] lists"
        return f"a list of {len(args)} integers"
    return getattr(t, "__name__", str(t))


def _as_list(name: str, value: Any, t: Any) -> list:
    if not isinstance(value, (list, tuple)):
        raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}")
    return list(value)


def _int_tuple(name: str, value: Any, args: tuple, t: Any) -> tuple[int, ...]:
    """A fixed-length tuple of integers (``args`` its element types) from a JSON list."""
    items = _as_list(name, value, t)
    if len(items) != len(args):
        raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}")
    out = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float, str)):
            raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}")
        try:
            f = float(x)
            if not f.is_integer():
                raise ValueError(x)
            out.append(int(f) if not isinstance(x, int) else x)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"config field {name} expects {_type_name(t)}, got {value!r}") from None
    return tuple(out)


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key=value`` (a command-line ``--set``) into a typed (field, value) pair."""
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip().replace("-", "_")
    known = {f.name for f in dataclasses.fields(Config)}
    if key not in known:
        raise UserError(f"--set: unknown config field '{key}'")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if raw.lower() in ("none", "null"):
        value = None
    return key, _coerce(key, value)


# ---------------------------------------------------------------------------- presets
def _paper() -> Config:
    # The dataclass defaults are the paper's values (arXiv 2602.23696 Table 1, mini_gpt scripts/run_seed.sh).
    # Optimizer states at four checkpoints (and step 0) for the replay test of claim 7: 4 × 2 moments of 25M floats.
    return Config(preset="paper", optimizer_state_every=2000)


def _quick() -> Config:
    # The paper's dimensionless knobs at the size of a laptop demo (docs/regime.md, candidate r1_small): Λ = wd·Σlr
    # = 2.56 (wd solved for this schedule), λ switch at 40 %, 31 checkpoints, 1,200 probe-eval examples (σ_eval
    # 0.014) evaluated up to the answer, probe gaps in the paper's proportion to the 128-token context. The whole
    # pipeline takes a few minutes on 2 CPU cores. Evaluation batches of 32 (not 64): the same numbers up to float
    # rounding, evaluated about a quarter faster on a CPU (less padding per cropped batch, smaller logits).
    return Config(
        preset="quick",
        n_layer=3, d_model=64, n_head=4, d_ff=256, seq_len=128,
        corpus="synthetic", n_train_docs=20_000, n_val_docs=1_000, tokenizer="bpe", bpe_vocab_size=2048,
        window="packed",
        p_probe=0.25, n_codewords=64, train_gap=(3, 15), eval_in_gap=(3, 15), eval_ood_gap=(40, 100),
        n_probe_eval=1200, probe_eval_crop=True,
        lr=3e-3, wd=2.775, warmup=50, steps=600, batch_size=24, grad_accum=1,
        lambda_probe=1.0, lambda_probe2=2.0, lambda_step=240,
        eval_every=20, ckpt_every=20, n_val_seqs=192, eval_batch_size=32, optimizer_state_every=120,
    )


def _cpu() -> Config:
    # The most faithful CPU analogue of the paper's run (docs/regime.md, candidate r3_d96): the knobs of `quick`
    # with the paper's 6.4 tokens per parameter (d_model 96, 1,200 steps) and 41 checkpoints; three seeds of the
    # whole pipeline plus the ledger in well under an hour on 2 cores (scripts/run_seeds.sh, make demo-seeds).
    return _quick().replace(
        preset="cpu", d_model=96, d_ff=384, steps=1200, warmup=100, wd=1.388, lambda_step=480,
        eval_every=30, ckpt_every=30, optimizer_state_every=240)


def _test() -> Config:
    return Config(
        preset="test",
        n_layer=2, d_model=32, n_head=2, d_ff=64, seq_len=64,
        corpus="synthetic", n_train_docs=600, n_val_docs=60, tokenizer="bpe", bpe_vocab_size=512,
        window="packed",
        p_probe=0.25, n_codewords=16, eval_ood_gap=(30, 34), n_probe_eval=32,
        lr=3e-3, wd=0.1, warmup=4, steps=20, batch_size=8, grad_accum=2,
        lambda_probe=1.0, lambda_probe2=2.0, lambda_step=10,
        eval_every=5, ckpt_every=5, n_val_seqs=16, eval_batch_size=16, progress=False,
    )


def _gpt2_size(name: str, n_layer: int, n_head: int, d_model: int):
    """The model sizes of evasilverstein/symmetry-breaking-files (GPT-2 shapes) on FineWeb token shards, with
    the schedule of its runs: context 512, 8 sequences per update, constant learning rate, no clipping, no probe,
    ECD (Δt̂ 1, η 100, F0 2), 122,070 updates (500M tokens); corpus_path must point at the shards
    (prepare_fineweb.py)."""
    def build() -> Config:
        return Config(preset=name, n_layer=n_layer, n_head=n_head, d_model=d_model, d_ff=4 * d_model, seq_len=512,
                      corpus="fineweb", corpus_path="data/fineweb10B", tokenizer="gpt2", window="packed",
                      p_probe=0.0, lambda_probe=0.0, lambda_probe2=None, lambda_step=0,
                      train_gap=(5, 30), eval_in_gap=(5, 30), eval_ood_gap=(80, 200), n_probe_eval=8,
                      optimizer="ecd", lr=1.0, wd=0.0, warmup=0, lr_floor=1.0, grad_clip=0.0,
                      steps=122_070, batch_size=8, grad_accum=1, eval_every=1000, ckpt_every=1000,
                      n_val_seqs=64, eval_batch_size=8)
    return build


PRESETS = {"test": _test, "quick": _quick, "cpu": _cpu, "paper": _paper,
           "124m": _gpt2_size("124m", 12, 12, 768), "355m": _gpt2_size("355m", 24, 16, 1024),
           "774m": _gpt2_size("774m", 36, 20, 1280), "1.3b": _gpt2_size("1.3b", 48, 25, 1600)}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]()


def checkpoint_steps(cfg: Config) -> list[int]:
    """All steps at which a checkpoint is written: 0, every ckpt_every, dense windows, the last step."""
    steps = set(range(0, cfg.steps + 1, cfg.ckpt_every))
    for lo, hi, every in cfg.ckpt_dense:
        steps.update(s for s in range(lo, min(hi, cfg.steps) + 1, every))
    steps.add(cfg.steps)
    return sorted(steps)


def keeps_optimizer_state(cfg: Config, step: int) -> bool:
    """Whether checkpoint ``step`` also writes the optimizer moments (state/optimizer_step_XXXXXX.pt)."""
    every = cfg.optimizer_state_every
    return cfg.keep_optimizer_states or (every > 0 and step > 0 and step % every == 0)


def eval_steps(cfg: Config) -> list[int]:
    """Steps with an evaluation: 0, every eval_every, and the last step."""
    return sorted(set(range(0, cfg.steps + 1, cfg.eval_every)) | {cfg.steps})


# Fields added after runs had been published (the task, modular addition, ECD/SOAP, attention disorder,
# vocabulary padding, subspace suppression): hashed only when they differ from their defaults, so earlier runs keep their hashes.
_LATER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)
                   if f.name in ("task", "vocab_multiple", "probe_eval_crop", "mlp_act")
                   or f.name.startswith(("modadd_", "ecd_", "soap_", "attn_disorder", "attn_b", "suppress_"))}
