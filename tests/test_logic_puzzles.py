"""The logic-puzzle suite (training/geometry/logic_puzzles.py): a seeded, deterministic generator whose answers
are right by construction (re-derived here from the context text alone), and the likelihood scorer against
models whose logits are set by hand (a bigram table: each candidate's log-likelihood by dense numpy), the
Wilson interval and binomial tails against closed forms, the paired McNemar comparison, and the script on a
tiny run."""
import math
import re

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.core.config import preset
from training.core.model import GPT
from training.geometry.logic_puzzles import (TASKS, candidate_scores, generate_suite, generate_task, gpt_logits,
                                             paired_comparison, score_suite, wilson_interval)

LETTERS = "abcdefghijklmnopqrstuvwxyz"


class ByteTok:
    """Bytes as tokens, 256 = end of text (an independent, trivially inspectable tokenizer)."""
    vocab_size, eos_id, identity = 257, 256, "bytes"

    def encode(self, text):
        return list(text.encode())


def test_generator_is_seeded_and_deterministic():
    a, b = generate_suite(3, 20), generate_suite(3, 20)
    assert a == b and len(a) == 20 * len(TASKS)
    assert [p.task for p in a] == [t for t in TASKS for _ in range(20)]
    assert generate_suite(4, 20) != a
    for t in TASKS:                     # item i does not depend on how many items are drawn
        assert generate_task(t, 3, 7) == generate_task(t, 3, 20)[:7]
    for p in a:
        assert p.answer not in p.distractors and len(set(p.distractors)) == len(p.distractors)
        assert all(c.startswith(" ") for c in p.candidates)


def derive(p):
    """The answer of puzzle ``p`` worked out from its context text, independently of the generator."""
    c = p.context
    if p.task == "pattern_numeric":
        xs = [int(v) for v in re.findall(r"\d+", c)]
        d = xs[1] - xs[0]
        assert all(b - a == d for a, b in zip(xs, xs[1:]))
        return f" {xs[-1] + d}"
    if p.task == "pattern_alpha":
        xs = [LETTERS.index(v) for v in c.split()]
        d = xs[1] - xs[0]
        assert all(b - a == d for a, b in zip(xs, xs[1:]))
        return f" {LETTERS[xs[-1] + d]}"
    if p.task.startswith("retrieval"):
        owner, obj = re.search(r"(\w+)'s (\w+) is$", c).groups()
        return " " + re.search(rf"{owner} has a (\w+) {obj}\.", c).group(1)
    if p.task == "inference":
        pairs = re.findall(r"(\w+) is \w+er than (\w+)\.", c)
        names = {x for pr in pairs for x in pr}
        beaten = {b for _, b in pairs}
        beats = {a for a, _ in pairs}
        top, bottom = (names - beaten).pop(), (names - beats).pop()
        return f" {top}" if re.search(r"The \w+est is$", c) and c.split()[-2] in ("tallest", "oldest", "fastest") \
            else f" {bottom}"
    if p.task == "negation":
        food = re.search(r"likes (\w+)\.", c).group(1)
        likes = re.search(rf"(\w+) likes {food}\.", c).group(1)
        dislikes = re.search(rf"(\w+) does not like {food}\.", c).group(1)
        return f" {dislikes}" if c.endswith(f"does not like {food} is") else f" {likes}"
    if p.task == "syntax":
        head = c.split()[1]
        return " are" if head.endswith("s") else " is"
    raise AssertionError(p.task)


def test_answers_are_right_by_construction():
    suite = generate_suite(11, 60)
    for p in suite:
        assert derive(p) == p.answer, p
    far = [p for p in suite if p.task == "retrieval_far"]
    near = [p for p in suite if p.task == "retrieval_near"]
    # far: the asked fact comes first and fillers separate it from the question; near: it is the last fact
    assert all(len(p.context.split(". ")) == 2 + 3 + 1 for p in far)
    assert all(p.context.split(". ")[1].startswith(p.context.split()[-3].split("'")[0]) for p in near)


def bigram_scores(W, tok, p):
    """Dense numpy: the log-likelihood of each candidate under logits W[previous token]."""
    out = []
    for cand in p.candidates:
        ctx = [tok.eos_id] + tok.encode(p.context)
        seq = ctx + tok.encode(cand)
        lp = W - np.log(np.exp(W - W.max(1, keepdims=True)).sum(1, keepdims=True)) - W.max(1, keepdims=True)
        out.append(sum(lp[seq[i - 1], seq[i]] for i in range(len(ctx), len(seq))))
    return out


def bigram_model(W):
    Wt = torch.as_tensor(W)
    return lambda ids: Wt[ids]


def test_scores_match_a_hand_set_bigram_model_and_truncation_is_harmless_for_it():
    tok = ByteTok()
    W = np.random.default_rng(0).standard_normal((257, 257)) * 2
    suite = generate_suite(2, 6)
    got, trunc = candidate_scores(bigram_model(W), tok, suite, max_len=256, batch_size=5)
    assert not any(trunc)
    for p, g in zip(suite, got):
        np.testing.assert_allclose(g, bigram_scores(W, tok, p), rtol=0, atol=1e-9)
    # a bigram model looks one token back, so cutting the context from the left changes nothing
    short, trunc = candidate_scores(bigram_model(W), tok, suite, max_len=12)
    np.testing.assert_allclose(np.concatenate(short), np.concatenate(got), atol=1e-9)
    need = [max(1 + len(tok.encode(p.context)) + len(tok.encode(c)) for c in p.candidates) > 12 for p in suite]
    assert trunc == need and any(need)
    res = score_suite(bigram_model(W), tok, suite, max_len=256)
    expect = [bigram_scores(W, tok, p) for p in suite]
    assert res["correct"] == [s[0] > max(s[1:]) for s in expect]


def test_known_ranking_accuracy_ties_and_chance():
    tok = ByteTok()
    W = np.zeros((257, 257))
    W[ord(" "), ord("i")] = 10.0                 # after a space, "i" is far more likely than anything else
    suite = generate_suite(5, 40, tasks=("syntax", "pattern_alpha"))
    res = score_suite(bigram_model(W), tok, suite, max_len=256)
    syn = [p for p in suite if p.task == "syntax"]
    k = sum(p.answer == " is" for p in syn)      # " is" wins every syntax item, right exactly when it is the answer
    assert 0 < k < 40
    assert res["tasks"]["syntax"]["correct"] == k and res["tasks"]["syntax"]["chance"] == 0.5
    # every alpha candidate is a space and one letter: " i" wins where it is a candidate, the rest tie (all
    # equally likely), and a tie is not a win
    alpha = [p for p in suite if p.task == "pattern_alpha"]
    with_i = [p for p in alpha if " i" in p.candidates]
    a = res["tasks"]["pattern_alpha"]
    assert a["ties"] == 40 - len(with_i) > 0 and a["chance"] == 0.25
    assert a["correct"] == sum(p.answer == " i" for p in with_i)
    assert res["overall"]["correct"] == k + a["correct"]
    assert res["overall"]["chance"] == pytest.approx((0.5 + 0.25) / 2)


def test_wilson_interval_and_binomial_tail_closed_forms():
    for k, n in ((0, 10), (7, 20), (40, 40), (13, 50)):
        z = 1.959963984540054
        ph = k / n
        mid = (ph + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n))
        np.testing.assert_allclose(wilson_interval(k, n), [mid - half, mid + half], atol=1e-12)
    tok, W = ByteTok(), np.zeros((257, 257))
    W[ord(" "), ord("i")] = 10.0
    suite = generate_suite(1, 30, tasks=("syntax",))
    d = score_suite(bigram_model(W), tok, suite, 256)["tasks"]["syntax"]
    k, n = d["correct"], d["n"]
    tail = sum(math.comb(n, j) for j in range(k, n + 1)) / 2 ** n
    assert d["p_above_chance"] == pytest.approx(tail, rel=1e-10)


def test_padding_in_a_batch_does_not_change_a_gpt_s_scores():
    cfg = preset("test").replace(attention="math")
    torch.manual_seed(0)
    model = GPT(cfg, 257).eval()
    suite = generate_suite(0, 2)
    a, _ = candidate_scores(gpt_logits(model), ByteTok(), suite, cfg.seq_len, batch_size=64)
    b, _ = candidate_scores(gpt_logits(model), ByteTok(), suite, cfg.seq_len, batch_size=1)
    np.testing.assert_allclose(np.concatenate(a), np.concatenate(b), atol=1e-4)


def test_paired_comparison_is_exact_mcnemar():
    r = paired_comparison([1, 1, 0, 0, 1], [0, 1, 1, 1, 1])
    assert (r["a_only"], r["b_only"], r["difference"]) == (1, 2, pytest.approx(0.2)) and r["p_mcnemar"] == 1.0
    r = paired_comparison([0] * 6 + [1] * 4, [1] * 10)
    assert r["b_only"] == 6 and r["p_mcnemar"] == pytest.approx(2 * 0.5 ** 6)
    assert paired_comparison([1, 0], [1, 0])["p_mcnemar"] == 1.0


def test_script_on_a_tiny_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_inprocess(capsys, "analysis/symmetry/eval_logic_puzzles.py", "--run-dir", str(tiny_run),
                                      "--out-dir", str(out), "--n-per-task", "6", "--step", "0")
    assert code == 0, err
    import json
    res = json.loads((out / "logic_puzzles_step0.json").read_text())
    assert res["step"] == 0 and set(res["tasks"]) == set(TASKS) and res["overall"]["n"] == 6 * len(TASKS)
    assert (out / "logic_puzzles_step0.png").exists() and "pattern_numeric" in stdout
    code, _, err = run_inprocess(capsys, "analysis/symmetry/eval_logic_puzzles.py", "--run-dir", str(tiny_run),
                                 "--out-dir", str(out), "--step", "99999")
    assert code == 2 and err.strip().startswith("error:") and len(err.strip().splitlines()) == 1
