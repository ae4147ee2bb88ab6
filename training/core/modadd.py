"""Marker-based modular addition (the task of skydancerosel/bubble-modadd, arXiv 2602.10496; its generator is in
that repository's ``train.py`` / ``helpers.py``).

A sequence has a body of T tokens. m positions p_1 < ... < p_m in [1, T-2] (gaps of at least 2, so a
marker never sits on another marker's value) carry the marker token ``marker_offset + i`` and the next
position p_i + 1 a value token v_i in 0..C-1. Every other slot is a distractor. The label is
(v_1 + ... + v_m) mod C.

With ``modadd_op = mul`` (modular multiplication, the reference's claimed-but-unreleased second task) the label is
(v_1 · v_2 · ... · v_m) mod C. A single value 0 would make the product 0 whatever the others are, so the values
are drawn from the multiplicative group 1..C-1 instead, which is a group only for prime C (validate_modadd
refuses any other C): uniform independent values then give a uniform label on 1..C-1, so chance is 1/(C-1)
(``ModAddSpec.chance``), and token 0 is never a value. The group of a prime C is cyclic of order C-1, so
multiplication mod C is addition mod C-1 after a discrete logarithm: the two tasks differ in the value
embedding a model has to learn, not in the group structure it computes with.

Two modes:

* ``reference`` -- the generator of the reference code: distractors are drawn uniformly from every body
  token except the value tokens and the markers in use. Value tokens therefore occur only right after
  markers, and the label equals the sum of *all* tokens below C (mod C): the task leaks, the markers are
  not needed. This is kept on purpose, as documented behaviour, to reproduce the reference.
* ``strict`` -- each distractor slot holds a uniformly drawn value token with probability
  ``modadd_value_distractor_p`` (else a token of the reference pool), so value tokens also occur away
  from the markers and only the markers say which values count.

Readout (a documented departure from the reference, which puts a C-way classifier on position T-1):
the body is followed by a separator token (id ``modadd_vocab``) and the answer is read through the
model's ordinary LM head at the separator position -- the next-token prediction there is the answer
slot. The loss is the cross-entropy of that one prediction over the whole vocabulary and the accuracy
its argmax. No extra head is needed, so the model is the toolkit's GPT unchanged (``seq_len = T + 1``);
the readout position also never holds a value token, unlike the reference's T-1 slot.

Batches are a pure function of (data seed, step, micro-batch), as for the LM task, so runs resume
exactly. With ``modadd_train_size`` = N > 0 the training data are a fixed set of N sequences (N / |ms| per m,
drawn once from the data seed, in chunks of one position set each); every micro-batch then draws m as
without it and ``batch_size`` sequences of that m's share with replacement, keyed by (data seed, step,
micro). The eval sets become a held-out split: any eval sequence that also occurs in the training set is
dropped (``heldout_overlap`` counts them; at T = 16 practically none), and the evaluation adds the accuracy
on (the first ``modadd_n_eval`` per m of) the training set, ``train_acc`` and ``train_acc_m<m>``, so that
memorisation and generalisation can be told apart. ``mixed`` draws m uniformly per batch; ``curriculum`` trains m = m_min, ..., m_max in blocks of
``modadd_stage_steps`` and, with ``modadd_reset_optimizer``, restarts the optimizer state at every stage
(the reference re-creates AdamW per stage). With ``modadd_shared_positions`` (the reference) the whole
batch shares m and one position set; otherwise positions are drawn per sequence.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.core.batch import Batch
from training.core.errors import UserError

MODES = ("reference", "strict")
OPS = ("add", "mul")
SCHEDULES = ("mixed", "curriculum")
EVAL_CHUNK = 32          # an eval set is drawn in chunks of this size, each with its own position set


# ---------------------------------------------------------------------------- the generator
@dataclass(frozen=True)
class ModAddSpec:
    T: int = 16
    C: int = 8
    V: int = 256
    marker_offset: int = 100
    mode: str = "reference"
    value_p: float = 0.5
    op: str = "add"

    @property
    def value_low(self) -> int:
        """The smallest value token: 0 for addition, 1 for multiplication (values in the group 1..C-1)."""
        return 1 if self.op == "mul" else 0

    @property
    def n_labels(self) -> int:
        return self.C - self.value_low

    @property
    def chance(self) -> float:
        """Chance accuracy: the label is uniform over its n_labels values (a test checks it empirically)."""
        return 1.0 / self.n_labels

    def combine(self, vals: np.ndarray) -> np.ndarray:
        """The label of each row of values (n, m): their sum or product mod C (the product reduced at every factor)."""
        vals = np.asarray(vals, dtype=np.int64)
        if self.op == "add":
            return vals.sum(axis=1) % self.C
        out = np.ones(len(vals), dtype=np.int64)
        for j in range(vals.shape[1]):
            out = out * vals[:, j] % self.C
        return out

    @property
    def sep(self) -> int:
        return self.V

    @property
    def vocab_size(self) -> int:
        return self.V + 1

    def markers(self, m: int) -> np.ndarray:
        return self.marker_offset + np.arange(m)

    def distractor_pool(self, m: int) -> np.ndarray:
        """Body tokens a reference-mode distractor can take: not a value, not one of the m markers in use."""
        ids = np.arange(self.C, self.V)
        return ids[~np.isin(ids, self.markers(m))]

    def max_m(self) -> int:
        return (self.T - 1) // 2       # 2m - 1 <= T - 2 positions with gaps >= 2


def sample_positions(rng: np.random.Generator, T: int, m: int, n: int) -> np.ndarray:
    """(n, m) sorted marker positions in [1, T-2], consecutive ones at least 2 apart (rejection sampling)."""
    out = np.empty((n, m), dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        draw = np.sort(np.stack([rng.choice(T - 2, size=m, replace=False) for _ in todo]) + 1, axis=1)
        ok = np.all(np.diff(draw, axis=1) >= 2, axis=1) if m > 1 else np.ones(len(todo), bool)
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


@dataclass
class ModAddSettings:
    """The task's settings, fields of :class:`training.core.config.Config` (``task=modadd``; checked by
    :func:`validate_modadd`)."""
    modadd_T: int = 16               # body length; the model sees T tokens + a separator (seq_len must be T + 1)
    modadd_classes: int = 8          # C: values and labels are the tokens 0..C-1
    modadd_vocab: int = 256          # body vocabulary; the separator is token id modadd_vocab
    modadd_marker_offset: int = 100  # the i-th marker is token marker_offset + i
    modadd_m_min: int = 1            # marked positions per sequence: m in [m_min, m_max]
    modadd_m_max: int = 4
    modadd_mode: str = "reference"   # reference (label leaks through value tokens) | strict (markers needed)
    modadd_value_distractor_p: float = 0.5   # strict mode: chance that a distractor slot holds a value token
    modadd_schedule: str = "mixed"   # mixed (m uniform per batch) | curriculum (m = m_min..m_max in blocks)
    modadd_stage_steps: int = 0      # curriculum stage length; 0 = steps / number of stages
    modadd_reset_optimizer: bool = True   # curriculum: fresh optimizer state at every stage (as the reference)
    modadd_shared_positions: bool = True  # one position set per batch (reference) or one per sequence
    modadd_n_eval: int = 512         # fixed evaluation sequences per m (seeded by eval_seed)


@dataclass
class ModAddOpSettings:
    """The task's operation, a field added after the published field order (the last group of Config's bases, so
    config.json keeps its order; hashed only when set, so earlier runs keep their hashes)."""
    modadd_op: str = "add"           # add: (v_1 + ... + v_m) mod C | mul: (v_1 ... v_m) mod C, values 1..C-1, C prime


@dataclass
class Example:
    """A batch of task sequences: inputs (n, T+1) ending in the separator, labels, where the markers are."""

    x: torch.Tensor          # (n, T+1) int64
    label: torch.Tensor      # (n,) int64 in 0..C-1
    positions: torch.Tensor  # (n, m) marker positions; values sit at positions + 1
    values: torch.Tensor     # (n, m)
    m: int

    def targets(self) -> torch.Tensor:
        """LM targets (n, T+1): ignored everywhere but the answer slot (the separator position)."""
        y = torch.full_like(self.x, -100)
        y[:, -1] = self.label
        return y

    def batch(self):
        return Batch(self.x, self.targets(), torch.zeros_like(self.x, dtype=torch.bool))

    def slice(self, a: int, b: int) -> "Example":
        return Example(self.x[a:b], self.label[a:b], self.positions[a:b], self.values[a:b], self.m)

    def take(self, idx: torch.Tensor) -> "Example":
        return Example(self.x[idx], self.label[idx], self.positions[idx], self.values[idx], self.m)

    def value_mask(self) -> torch.Tensor:
        """(n, T+1) bool, True at the value slots p_i + 1."""
        mask = torch.zeros_like(self.x, dtype=torch.bool)
        mask.scatter_(1, self.positions + 1, True)
        return mask


def generate(spec: ModAddSpec, rng: np.random.Generator, n: int, m: int, shared_positions: bool = True) -> Example:
    """n sequences with m markers, drawn from ``rng`` in a fixed order (distractors, positions, values)."""
    if not 1 <= m <= spec.max_m():
        raise UserError(f"m={m} markers do not fit a body of T={spec.T} (at most {spec.max_m()})")
    pool = spec.distractor_pool(m)
    body = pool[rng.integers(0, len(pool), size=(n, spec.T))]
    if spec.mode == "strict":
        as_value = rng.random((n, spec.T)) < spec.value_p
        body = np.where(as_value, rng.integers(spec.value_low, spec.C, size=(n, spec.T)), body)
    if shared_positions:
        pos = np.repeat(sample_positions(rng, spec.T, m, 1), n, axis=0)
    else:
        pos = sample_positions(rng, spec.T, m, n)
    vals = rng.integers(spec.value_low, spec.C, size=(n, m))
    rows = np.arange(n)[:, None]
    body[rows, pos] = spec.markers(m)[None, :]
    body[rows, pos + 1] = vals
    x = np.concatenate([body, np.full((n, 1), spec.sep)], axis=1).astype(np.int64)
    label = spec.combine(vals)
    return Example(torch.from_numpy(x), torch.from_numpy(label.astype(np.int64)), torch.from_numpy(pos),
                   torch.from_numpy(vals.astype(np.int64)), m)


def _concat(parts: list[Example], m: int) -> Example:
    return Example(torch.cat([p.x for p in parts]), torch.cat([p.label for p in parts]),
                   torch.cat([p.positions for p in parts]), torch.cat([p.values for p in parts]), m)


def leak_prediction(x: torch.Tensor, C: int, op: str = "add") -> torch.Tensor:
    """The op (sum or product) of every body token that is a value token, mod C: equal to the label in reference
    mode (the leak). Other tokens count as the op's identity (0, 1)."""
    spec = ModAddSpec(C=C, op=op)
    body = x[:, :-1].numpy()
    is_value = (body >= spec.value_low) & (body < C)
    return torch.from_numpy(spec.combine(np.where(is_value, body, spec.value_low)))


# ---------------------------------------------------------------------------- config plumbing
def spec_from_config(cfg, mode: str | None = None) -> ModAddSpec:
    return ModAddSpec(cfg.modadd_T, cfg.modadd_classes, cfg.modadd_vocab, cfg.modadd_marker_offset,
                      mode or cfg.modadd_mode, cfg.modadd_value_distractor_p, cfg.modadd_op)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def validate_modadd(cfg) -> None:
    """One-line errors for impossible task settings (called by Config.validate when task = modadd)."""
    def need(cond, msg):
        if not cond:
            raise UserError(msg)
    need(cfg.modadd_mode in MODES, f"unknown modadd_mode '{cfg.modadd_mode}' (choose from {', '.join(MODES)})")
    need(cfg.modadd_schedule in SCHEDULES,
         f"unknown modadd_schedule '{cfg.modadd_schedule}' (choose from {', '.join(SCHEDULES)})")
    need(cfg.modadd_T >= 4, f"modadd_T must be at least 4 (got {cfg.modadd_T})")
    need(cfg.seq_len == cfg.modadd_T + 1,
         f"seq_len must be modadd_T + 1 = {cfg.modadd_T + 1} (the body plus the separator); got {cfg.seq_len}")
    need(cfg.modadd_classes >= 2, f"modadd_classes must be at least 2 (got {cfg.modadd_classes})")
    need(cfg.modadd_op in OPS, f"unknown modadd_op '{cfg.modadd_op}' (choose from {', '.join(OPS)})")
    need(cfg.modadd_op != "mul" or (is_prime(cfg.modadd_classes) and cfg.modadd_classes >= 3),
         f"modadd_op=mul needs a prime modadd_classes >= 3 (values 1..C-1 form a group only then); got "
         f"{cfg.modadd_classes} (e.g. 5, 7 or 11)")
    need(1 <= cfg.modadd_m_min <= cfg.modadd_m_max <= (cfg.modadd_T - 1) // 2,
         f"need 1 <= modadd_m_min <= modadd_m_max <= {(cfg.modadd_T - 1) // 2} for T={cfg.modadd_T} "
         f"(got {cfg.modadd_m_min}..{cfg.modadd_m_max})")
    need(cfg.modadd_classes <= cfg.modadd_marker_offset
         and cfg.modadd_marker_offset + cfg.modadd_m_max <= cfg.modadd_vocab,
         f"markers {cfg.modadd_marker_offset}..{cfg.modadd_marker_offset + cfg.modadd_m_max - 1} must lie between "
         f"the values 0..{cfg.modadd_classes - 1} and modadd_vocab={cfg.modadd_vocab}")
    need(cfg.modadd_vocab - cfg.modadd_classes - cfg.modadd_m_max >= 1, "modadd_vocab leaves no distractor tokens")
    need(0.0 <= cfg.modadd_value_distractor_p <= 1.0,
         f"modadd_value_distractor_p must be in [0, 1] (got {cfg.modadd_value_distractor_p})")
    need(cfg.modadd_stage_steps >= 0, f"modadd_stage_steps must be >= 0 (got {cfg.modadd_stage_steps})")
    need(cfg.modadd_n_eval > 0, f"modadd_n_eval must be positive (got {cfg.modadd_n_eval})")
    n_ms = cfg.modadd_m_max - cfg.modadd_m_min + 1
    need(cfg.modadd_train_size == 0 or cfg.modadd_train_size >= n_ms,
         f"modadd_train_size must be 0 (fresh sequences) or at least one sequence per m ({n_ms}); "
         f"got {cfg.modadd_train_size}")


def modadd_config(base, **changes):
    """A Config for the task: ``base`` (e.g. ``preset("test")``, for its optimisation fields) with the task switched on.

    Sets task, seq_len = T + 1, a constant learning rate (no warmup, no cosine) and no clipping, as the
    reference (AdamW, constant lr, no clipping).
    """
    cfg = base
    T = changes.get("modadd_T", cfg.modadd_T)
    defaults = dict(task="modadd", seq_len=T + 1, warmup=0, lr_floor=1.0, grad_clip=0.0, grad_accum=1,
                    lambda_probe=1.0, lambda_probe2=None, lambda_step=0, p_probe=0.0, corpus="synthetic",
                    tokenizer="bpe")
    defaults.update(changes)
    return cfg.replace(**defaults)


# ---------------------------------------------------------------------------- the task object
class ModAddTokenizer:
    """What the trainer needs of a tokenizer: the vocabulary size and an identity for the run record."""

    def __init__(self, spec: ModAddSpec):
        self.vocab_size = spec.vocab_size
        self.eos_id = spec.sep
        self.identity = {"kind": "modadd", "vocab": spec.V, "separator": spec.sep, "classes": spec.C,
                         "marker_offset": spec.marker_offset, **({"op": spec.op} if spec.op != "add" else {})}


class ModAddTask:
    """The modular-addition task with the interface the Trainer uses (train_batch, tok) plus its evaluation."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.spec = spec_from_config(cfg)
        self.tok = ModAddTokenizer(self.spec)
        self.ms = list(range(cfg.modadd_m_min, cfg.modadd_m_max + 1))
        self._eval_cache: dict[tuple[int, str], Example] = {}
        self._pool: dict[int, Example] | None = None
        self.heldout_overlap = 0

    # ----- schedules
    @property
    def stage_steps(self) -> int:
        return self.cfg.modadd_stage_steps or max(1, self.cfg.steps // len(self.ms))

    def stage(self, step: int) -> int:
        """Curriculum stage of update ``step`` (1-based): 0 .. len(ms)-1."""
        return min(len(self.ms) - 1, max(0, step - 1) // self.stage_steps)

    def stage_starts(self) -> list[int]:
        """First update of each curriculum stage."""
        return [1 + i * self.stage_steps for i in range(len(self.ms))]

    def resets_optimizer(self, step: int) -> bool:
        """True at the first update of every curriculum stage after the first (with modadd_reset_optimizer)."""
        return (self.cfg.modadd_schedule == "curriculum" and self.cfg.modadd_reset_optimizer
                and step in self.stage_starts()[1:])

    # ----- batches
    def sample(self, key, n: int | None = None, m: int | None = None, step: int | None = None,
               mode: str | None = None) -> Example:
        """A training-distribution batch drawn from a generator seeded with ``key`` (a list of ints).

        m: fixed, else the curriculum's m at ``step``, else uniform over [m_min, m_max] (the first draw).
        """
        rng = np.random.default_rng(key)
        n = self.cfg.batch_size if n is None else n
        if m is None:
            if self.cfg.modadd_schedule == "curriculum" and step is not None:
                m = self.ms[self.stage(step)]
            else:
                m = int(rng.integers(self.ms[0], self.ms[-1] + 1))
        spec = self.spec if mode is None else spec_from_config(self.cfg, mode)
        return generate(spec, rng, n, m, self.cfg.modadd_shared_positions)

    def train_example(self, step: int, micro: int) -> Example:
        if self.cfg.modadd_train_size:
            return self._pool_example([self.cfg.effective_data_seed, step, micro], step)
        return self.sample([self.cfg.effective_data_seed, step, micro], step=step)

    # ----- the finite training set (modadd_train_size > 0)
    def train_pool(self) -> dict[int, Example]:
        """m -> the fixed training sequences with m markers (modadd_train_size / |ms| each, the remainder to
        the smallest m), drawn once from the data seed in chunks of EVAL_CHUNK (one position set per chunk
        with modadd_shared_positions)."""
        if self._pool is None:
            n_all, k = self.cfg.modadd_train_size, len(self.ms)
            self._pool = {}
            for j, m in enumerate(self.ms):
                n = n_all // k + (1 if j < n_all % k else 0)
                rng = np.random.default_rng([self.cfg.effective_data_seed, 17, m])
                parts = [generate(self.spec, rng, min(EVAL_CHUNK, n - a), m, self.cfg.modadd_shared_positions)
                         for a in range(0, n, EVAL_CHUNK)]
                self._pool[m] = _concat(parts, m)
        return self._pool

    def _pool_example(self, key, step: int) -> Example:
        rng = np.random.default_rng(key)
        if self.cfg.modadd_schedule == "curriculum":
            m = self.ms[self.stage(step)]
        else:
            m = int(rng.integers(self.ms[0], self.ms[-1] + 1))
        pool = self.train_pool()[m]
        return pool.take(torch.from_numpy(rng.integers(0, len(pool.x), size=self.cfg.batch_size)))

    def train_batch(self, step: int, micro: int):
        """The micro-batch ``micro`` of update ``step``: a pure function of (data seed, step, micro)."""
        return self.train_example(step, micro).batch()

    def eval_set(self, m: int, mode: str | None = None) -> Example:
        """The fixed evaluation set of m markers (``modadd_n_eval`` sequences, seeded by eval_seed only)."""
        mode = mode or self.cfg.modadd_mode
        if (m, mode) not in self._eval_cache:
            spec = spec_from_config(self.cfg, mode)
            rng = np.random.default_rng([self.cfg.eval_seed, 5, m, MODES.index(mode)])
            parts = [generate(spec, rng, min(EVAL_CHUNK, self.cfg.modadd_n_eval - a), m, True)
                     for a in range(0, self.cfg.modadd_n_eval, EVAL_CHUNK)]
            ex = _concat(parts, m)
            if self.cfg.modadd_train_size and mode == self.cfg.modadd_mode:     # a held-out split
                seen = {bytes(row.numpy()) for row in self.train_pool()[m].x}
                keep = torch.tensor([bytes(row.numpy()) not in seen for row in ex.x], dtype=torch.bool)
                self.heldout_overlap += int((~keep).sum())
                ex = ex.take(torch.nonzero(keep)[:, 0])
            self._eval_cache[(m, mode)] = ex
        return self._eval_cache[(m, mode)]

    # ----- evaluation
    @torch.no_grad()
    def evaluate(self, model, device, amp=contextlib.nullcontext) -> dict:
        """Answer-slot accuracy and loss per m on the run's mode, their means (acc, val_loss), and the
        accuracy on the other mode's sets (``<mode>_acc_m<m>``): a reference-trained model that sums every
        value token fails the strict sets."""
        was = model.training
        model.eval()
        out: dict[str, float] = {}
        try:
            other = [md for md in MODES if md != self.cfg.modadd_mode][0]
            for mode, prefix in ((self.cfg.modadd_mode, ""), (other, f"{other}_")):
                accs, losses = [], []
                for m in self.ms:
                    r = answer_stats(model, self.eval_set(m, mode), device, amp, self.cfg.eval_batch_size)
                    out[f"{prefix}acc_m{m}"] = r["acc"]
                    accs.append(r["acc"])
                    if not prefix:
                        out[f"loss_m{m}"] = r["loss"]
                        losses.append(r["loss"])
                out[f"{prefix}acc"] = float(np.mean(accs))
                if not prefix:
                    out["val_loss"] = float(np.mean(losses))
            if self.cfg.modadd_train_size:
                tr = []
                for m in self.ms:
                    pool = self.train_pool()[m]
                    r = answer_stats(model, pool.slice(0, self.cfg.modadd_n_eval), device, amp,
                                     self.cfg.eval_batch_size)
                    out[f"train_acc_m{m}"] = r["acc"]
                    tr.append(r["acc"])
                out["train_acc"] = float(np.mean(tr))
                out["heldout_overlap"] = self.heldout_overlap
        finally:
            model.train(was)
        return out


def answer_logits(model, x: torch.Tensor) -> torch.Tensor:
    """Logits (n, V) of the answer slot (the prediction at the separator, the last position)."""
    return model(x)[:, -1, :]


@torch.no_grad()
def answer_stats(model, ex: Example, device, amp=contextlib.nullcontext, batch_size: int = 256,
                 logits_fn=None) -> dict:
    """Accuracy (argmax over the whole vocabulary) and mean cross-entropy at the answer slot."""
    logits_fn = logits_fn or (lambda xb: answer_logits(model, xb))
    correct, loss = 0.0, 0.0
    for a in range(0, len(ex.x), batch_size):
        xb, yb = ex.x[a:a + batch_size].to(device), ex.label[a:a + batch_size].to(device)
        with amp():
            lg = logits_fn(xb).float()
        correct += float((lg.argmax(-1) == yb).sum())
        loss += float(F.cross_entropy(lg, yb, reduction="sum"))
    n = max(1, len(ex.x))
    return {"acc": correct / n, "loss": loss / n, "n": len(ex.x)}
