"""Downstream evaluation on small logic puzzles (the kinds listed by evasilverstein/symmetry-breaking-files'
``analysis/eval_logic_puzzles.py``: pattern completion, retrieval near and far, simple inference, negation,
syntax sensitivity), generated here from a seed and scored by likelihood.

Generator: :func:`generate_suite` (seed, items per task) returns :class:`Puzzle` items; item ``i`` of task ``t``
is a pure function of (seed, t, i). Each item is a context, the right continuation and its distractors,
all of one kind (numbers, letters, colours, names, "is"/"are"), so that the candidates differ only in what
the puzzle asks. Every answer is right by construction; the tests re-derive it from the context text.

Tasks (candidates per item, so chance = 1 / candidates):

* ``pattern_numeric`` (4): an arithmetic sequence "5, 8, 11, 14," → " 17".
* ``pattern_alpha`` (4): letters with a constant step "c e g i" → " k".
* ``retrieval_near`` (4): two facts "Mia has a blue kite. Tom has a red ball." then "Tom's ball is" → " red";
  the asked fact is the last one before the question; the other fact's colour is one of the distractors.
* ``retrieval_far`` (4): the same with the asked fact first and ``far_fillers`` neutral sentences between
  the facts and the question.
* ``inference`` (3): "A is taller than B. B is taller than C. The tallest is" → " A" (or the shortest),
  premises in either order.
* ``negation`` (2): "A likes apples. B does not like apples. The one who likes apples is" → " A" (or the one
  who does not), sentences in either order.
* ``syntax`` (2): number agreement across an attractor, "The key to the boxes" → " is" against " are".

Scorer: :func:`score_suite` gives each candidate the sum of its tokens' log-probabilities under the model
given the context (the tokens of ``context`` and of ``candidate`` encoded separately and concatenated, after
an end-of-text token that marks a document start); the item is right when the answer's score is strictly
the highest (a tie is not a win). Contexts longer than the model's window are cut from the left (counted as
``truncated``). The model is any callable ``ids (B, T) -> logits (B, T, V)``: a toolkit checkpoint
(:func:`gpt_logits`) or an imported model. Per task: accuracy, chance, the Wilson 95 % interval and the exact
binomial p-value of "above chance" (scipy); :func:`paired_comparison` compares two models on the same items
(exact McNemar test).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch

TASKS = ("pattern_numeric", "pattern_alpha", "retrieval_near", "retrieval_far", "inference", "negation", "syntax")

_NAMES = ("Tom", "Mia", "Ben", "Lily", "Sam", "Anna", "Max", "Emma", "Jack", "Lucy", "Leo", "Zoe", "Tim", "Ruby",
          "Dan", "Kate")
_COLORS = ("red", "blue", "green", "yellow", "pink", "brown", "black", "white", "orange", "purple", "gray")
_OBJECTS = ("ball", "kite", "hat", "cup", "box", "book", "bag", "car", "boat", "drum", "coat", "bike")
_FOODS = ("apples", "cake", "soup", "milk", "bread", "eggs", "rice", "fish", "cheese", "grapes")
_COMPARE = (("taller", "tallest", "shortest"), ("older", "oldest", "youngest"), ("faster", "fastest", "slowest"))
_NOUNS = ("key", "dog", "girl", "boy", "cat", "tree", "door", "bird", "ball", "book", "cup", "car")
_PREPS = ("to", "near", "by", "behind", "under", "next to")
_FILLERS = ("The sun was warm that day.", "A bird sang in the old tree.", "The grass was wet and green.",
            "Some clouds moved across the sky.", "A dog barked far away.", "The wind blew softly.",
            "The river ran past the hill.", "It was a quiet morning.", "The flowers opened in the light.",
            "A small boat floated on the lake.")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Puzzle:
    task: str
    context: str
    answer: str
    distractors: tuple[str, ...]

    @property
    def candidates(self) -> tuple[str, ...]:
        """The answer first, then the distractors."""
        return (self.answer, *self.distractors)


def _pick(rng: np.random.Generator, pool: Sequence, k: int) -> list:
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def _numeric(rng):
    start, step = int(rng.integers(1, 21)), int(rng.integers(1, 6))
    seq = [start + i * step for i in range(4)]
    nxt = seq[-1] + step
    pool = [nxt + step, nxt - 1, nxt + 1, nxt + 2 * step, seq[-1], nxt + 10]
    wrong = []
    for v in pool:
        if v != nxt and v > 0 and v not in wrong:
            wrong.append(v)
    wrong = [wrong[i] for i in sorted(rng.choice(len(wrong), size=3, replace=False))]
    return ", ".join(map(str, seq)) + ",", f" {nxt}", tuple(f" {v}" for v in wrong)


def _alpha(rng):
    step = int(rng.integers(1, 3))
    start = int(rng.integers(0, 26 - 5 * step))
    idx = [start + i * step for i in range(4)]
    nxt = idx[-1] + step
    pool = [i for i in range(26) if i != nxt and i not in idx]
    wrong = _pick(rng, pool, 3)
    return " ".join(_LETTERS[i] for i in idx), f" {_LETTERS[nxt]}", tuple(f" {_LETTERS[i]}" for i in wrong)


def _retrieval(rng, far: bool, n_fillers: int):
    (a, b), (oa, ob) = _pick(rng, _NAMES, 2), _pick(rng, _OBJECTS, 2)
    ca, cb, *rest = _pick(rng, _COLORS, 4)
    target, other = f"{a} has a {ca} {oa}.", f"{b} has a {cb} {ob}."
    facts = [target, other] if far else [other, target]
    fill = _pick(rng, _FILLERS, n_fillers) if far else []
    context = " ".join(facts + fill + [f"{a}'s {oa} is"])
    return context, f" {ca}", (f" {cb}", *(f" {c}" for c in rest))


def _inference(rng):
    names = _pick(rng, _NAMES, 3)                  # ordered from most to least
    comp, most, least = _COMPARE[int(rng.integers(len(_COMPARE)))]
    premises = [f"{names[0]} is {comp} than {names[1]}.", f"{names[1]} is {comp} than {names[2]}."]
    if rng.integers(2):
        premises.reverse()
    ask_most = bool(rng.integers(2))
    ans = names[0] if ask_most else names[2]
    wrong = [n for n in names if n != ans]
    return " ".join(premises) + f" The {most if ask_most else least} is", f" {ans}", tuple(f" {n}" for n in wrong)


def _negation(rng):
    a, b = _pick(rng, _NAMES, 2)
    food = _FOODS[int(rng.integers(len(_FOODS)))]
    sents = [f"{a} likes {food}.", f"{b} does not like {food}."]
    if rng.integers(2):
        sents.reverse()
    if rng.integers(2):
        return " ".join(sents) + f" The one who likes {food} is", f" {a}", (f" {b}",)
    return " ".join(sents) + f" The one who does not like {food} is", f" {b}", (f" {a}",)


def _syntax(rng):
    head, attractor = _pick(rng, _NOUNS, 2)
    plural_head = bool(rng.integers(2))            # the attractor always has the other number
    h = head + "s" if plural_head else head
    at = attractor if plural_head else attractor + "s"
    prep = _PREPS[int(rng.integers(len(_PREPS)))]
    ans, wrong = (" are", " is") if plural_head else (" is", " are")
    return f"The {h} {prep} the {at}", ans, (wrong,)


def generate_task(task: str, seed: int, n: int, far_fillers: int = 3) -> list[Puzzle]:
    """``n`` items of ``task``; item i is drawn from its own generator seeded by (seed, task index, i)."""
    makers = {"pattern_numeric": _numeric, "pattern_alpha": _alpha,
              "retrieval_near": lambda r: _retrieval(r, False, 0),
              "retrieval_far": lambda r: _retrieval(r, True, far_fillers),
              "inference": _inference, "negation": _negation, "syntax": _syntax}
    if task not in makers:
        raise ValueError(f"unknown puzzle task {task!r}")
    t = TASKS.index(task)
    out = []
    for i in range(n):
        context, answer, wrong = makers[task](np.random.default_rng([seed, 7919, t, i]))
        out.append(Puzzle(task, context, answer, tuple(wrong)))
    return out


def generate_suite(seed: int = 0, n_per_task: int = 50, tasks: Sequence[str] = TASKS,
                   far_fillers: int = 3) -> list[Puzzle]:
    """The puzzle suite: ``n_per_task`` items of each task, in :data:`TASKS` order."""
    return [p for t in tasks for p in generate_task(t, seed, n_per_task, far_fillers)]


# ---------------------------------------------------------------------------- scoring
def gpt_logits(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A toolkit model (eval mode, no gradients) as the scorer's ``ids -> logits`` callable."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def f(ids: torch.Tensor) -> torch.Tensor:
        return model(ids.to(device)).float().cpu()
    return f


def candidate_scores(logits_fn: Callable[[torch.Tensor], torch.Tensor], tok, puzzles: Sequence[Puzzle],
                     max_len: int, batch_size: int = 64, bos: bool = True) -> tuple[list[list[float]], list[bool]]:
    """Per puzzle, the summed log-probability of each candidate (answer first) given the context, and whether
    the context had to be cut from the left to fit ``max_len`` tokens."""
    seqs, spans, owner, trunc = [], [], [], []
    for k, p in enumerate(puzzles):
        ctx = ([tok.eos_id] if bos else []) + list(tok.encode(p.context))
        cut = False
        for cand in p.candidates:
            c = list(tok.encode(cand))
            if not c or len(c) >= max_len:
                raise ValueError(f"candidate {cand!r} has {len(c)} tokens; it must have 1..{max_len - 1}")
            keep = ctx[-(max_len - len(c)):]
            cut = cut or len(keep) < len(ctx)
            seqs.append(keep + c)
            spans.append((len(keep), len(c)))
            owner.append(k)
        trunc.append(cut)
    scores = np.zeros(len(seqs))
    for lo in range(0, len(seqs), batch_size):
        chunk = seqs[lo:lo + batch_size]
        T = max(len(s) for s in chunk)
        ids = torch.zeros((len(chunk), T), dtype=torch.long)
        for j, s in enumerate(chunk):
            ids[j, :len(s)] = torch.as_tensor(s)
        logp = torch.log_softmax(logits_fn(ids).double(), dim=-1)
        for j, s in enumerate(chunk):
            start, n = spans[lo + j]
            pos = torch.arange(start - 1, start - 1 + n)
            scores[lo + j] = float(logp[j, pos, torch.as_tensor(s[start:start + n])].sum())
    out: list[list[float]] = [[] for _ in puzzles]
    for k, v in zip(owner, scores):
        out[k].append(float(v))
    return out, trunc


def wilson_interval(k: int, n: int, level: float = 0.95) -> list[float]:
    from scipy.stats import binomtest
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def score_suite(logits_fn: Callable[[torch.Tensor], torch.Tensor], tok, puzzles: Sequence[Puzzle], max_len: int,
                batch_size: int = 64, bos: bool = True) -> dict:
    """Accuracy per task (and over all items) with its chance level, Wilson 95 % interval and the exact
    one-sided binomial p-value against chance; per item whether it was right (``correct``, in suite order)."""
    from scipy.stats import binomtest
    scores, trunc = candidate_scores(logits_fn, tok, puzzles, max_len, batch_size, bos)
    correct = [bool(s[0] > max(s[1:])) for s in scores]
    ties = [bool(s[0] == max(s[1:])) for s in scores]
    tasks = {}
    for t in dict.fromkeys(p.task for p in puzzles):
        idx = [i for i, p in enumerate(puzzles) if p.task == t]
        n, k = len(idx), sum(correct[i] for i in idx)
        chance = float(np.mean([1.0 / len(puzzles[i].candidates) for i in idx]))
        tasks[t] = {"n": n, "correct": k, "accuracy": k / n, "chance": chance, "ci95": wilson_interval(k, n),
                    "p_above_chance": float(binomtest(k, n, chance, alternative="greater").pvalue),
                    "candidates": len(puzzles[idx[0]].candidates), "ties": sum(ties[i] for i in idx),
                    "truncated": sum(trunc[i] for i in idx),
                    "answer_logprob_mean": float(np.mean([scores[i][0] for i in idx]))}
    n, k = len(puzzles), sum(correct)
    chance = float(np.mean([1.0 / len(p.candidates) for p in puzzles]))
    return {"tasks": tasks,
            "overall": {"n": n, "correct": k, "accuracy": k / n, "chance": chance,
                        "ci95": wilson_interval(k, n),
                        # items of different chance levels: the null is a Poisson-binomial; the binomial with
                        # the mean chance is a close stand-in for the p-value
                        "p_above_chance": float(binomtest(k, n, chance, alternative="greater").pvalue)},
            "correct": correct, "scores": [[round(v, 4) for v in s] for s in scores],
            "definitions": {"score": "sum of the candidate tokens' log-probabilities given the context",
                            "correct": "the answer's score strictly above every distractor's (a tie is wrong)",
                            "chance": "1 / number of candidates", "ci95": "Wilson score interval",
                            "p_above_chance": "exact binomial test, one-sided, against chance"}}


def paired_comparison(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Two models on the same items: accuracy difference b − a and the exact McNemar test (two-sided binomial
    test of the discordant items against 1/2)."""
    from scipy.stats import binomtest
    if len(correct_a) != len(correct_b):
        raise ValueError("the two models were scored on different item lists")
    a_only = sum(1 for x, y in zip(correct_a, correct_b) if x and not y)
    b_only = sum(1 for x, y in zip(correct_a, correct_b) if y and not x)
    n = len(correct_a)
    p = float(binomtest(b_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0
    return {"n": n, "difference": (b_only - a_only) / n if n else None, "a_only": a_only, "b_only": b_only,
            "p_mcnemar": p}


def suite_description(puzzles: Sequence[Puzzle]) -> list[dict]:
    """The first item of each task, for the record."""
    seen, out = set(), []
    for p in puzzles:
        if p.task not in seen:
            seen.add(p.task)
            out.append(asdict(p))
    return out


def evaluate_run(run_dir, step: int | None = None, seed: int = 0, n_per_task: int = 50, far_fillers: int = 3,
                 device: str = "auto", batch_size: int = 64) -> dict:
    """The puzzle suite (``seed``, ``n_per_task``) scored on checkpoint ``step`` (default: the last) of a toolkit
    run, through the run's tokenizer, contexts cut to the model's ``seq_len``."""
    from training.core.devices import resolve_device
    from training.core.errors import UserError
    from training.geometry.analysis_io import open_run
    device = resolve_device(device)
    run = open_run(run_dir)
    step = run.steps[-1] if step is None else step
    if step not in run.steps:
        raise UserError(f"{run.dir} has no checkpoint at step {step} (available {run.steps[0]}..{run.steps[-1]})")
    if n_per_task < 1:
        raise UserError(f"--n-per-task must be at least 1 (got {n_per_task})")
    tok = run.tokenizer()
    model = run.model(step, device=device)
    puzzles = generate_suite(seed, n_per_task, far_fillers=far_fillers)
    res = score_suite(gpt_logits(model), tok, puzzles, run.cfg.seq_len, batch_size)
    res.update(step=step, suite={"seed": seed, "n_per_task": n_per_task, "far_fillers": far_fillers,
                                 "tasks": list(TASKS), "examples": suite_description(puzzles)},
               tokenizer=tok.identity, max_len=run.cfg.seq_len)
    return res
