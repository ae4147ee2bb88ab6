"""Modular multiplication (modadd_op = mul): labels against Python's integer product, the chance level against the
label distribution, the leak, and the one-line errors."""
import math

import numpy as np
import pytest
import torch

from training.core.config import preset
from training.core.errors import UserError
from training.core.modadd import ModAddSpec, ModAddTask, generate, is_prime, leak_prediction, modadd_config
from training.core.tasks import validate


def test_hand_set_products():
    spec = ModAddSpec(C=7, op="mul")
    vals = np.array([[3, 5, 6], [2, 4, 1], [6, 6, 6], [1, 1, 1]])
    # 3*5*6 = 90 = 12*7 + 6; 2*4*1 = 8 = 7 + 1; 216 = 30*7 + 6; 1
    assert spec.combine(vals).tolist() == [6, 1, 6, 1]
    assert ModAddSpec(C=7).combine(vals).tolist() == [0, 0, 4, 3]        # the sums 14, 7, 18, 3 mod 7


@pytest.mark.parametrize("mode", ["reference", "strict"])
def test_mul_labels_are_the_integer_product(mode):
    spec = ModAddSpec(T=16, C=11, mode=mode, op="mul")
    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 4, 7):
        ex = generate(spec, rng, 300, m)
        vals = ex.values.numpy()
        assert vals.min() >= 1 and vals.max() <= 10                     # the group 1..C-1: no zero value
        assert ex.label.tolist() == [math.prod(int(v) for v in row) % 11 for row in vals]
        rows = np.arange(300)[:, None]
        assert np.all(ex.x.numpy()[rows, ex.positions.numpy() + 1] == vals)
        assert not np.any(ex.x.numpy()[:, :-1] == 0)                   # token 0 never occurs in the body


@pytest.mark.parametrize("C, op", [(7, "mul"), (11, "mul"), (8, "add")])
def test_chance_level_matches_the_label_distribution(C, op):
    spec = ModAddSpec(C=C, op=op)
    n_labels = C - 1 if op == "mul" else C
    assert spec.chance == pytest.approx(1 / n_labels)
    rng = np.random.default_rng(1)
    for m in (1, 2, 4):
        labels = generate(spec, rng, 6000, m).label.numpy()
        freq = np.bincount(labels, minlength=C) / len(labels)
        support = np.arange(1, C) if op == "mul" else np.arange(C)
        assert set(np.unique(labels)) == set(support)
        # every label within 5 binomial sd of the chance level (uniform over the support)
        sd = math.sqrt(spec.chance * (1 - spec.chance) / len(labels))
        assert np.all(np.abs(freq[support] - spec.chance) < 5 * sd)
        # the accuracy of always answering the most frequent label is the chance level, up to sampling noise
        assert freq.max() < spec.chance + 5 * sd


def test_the_leak_follows_the_op():
    rng = np.random.default_rng(2)
    ref, strict = ModAddSpec(C=7, op="mul"), ModAddSpec(C=7, mode="strict", op="mul")
    hits, total = 0, 0
    for m in (1, 2, 3, 4):
        e = generate(ref, rng, 400, m)
        assert torch.equal(leak_prediction(e.x, 7, "mul"), e.label)     # reference mode: the product of all values
        if m > 1:                                                      # the additive leak is not the label
            assert not torch.equal(leak_prediction(e.x, 7), e.label)
        s = generate(strict, rng, 400, m)
        hits += int((leak_prediction(s.x, 7, "mul") == s.label).sum())
        total += 400
    rate, p = hits / total, 1 / 6
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / total)           # strict mode: the leak is at chance


def test_is_prime():
    assert [n for n in range(30) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def _cfg(**kw):
    return validate(modadd_config(preset("test").replace(n_layer=1, d_model=16, n_head=2, attn_only=True, steps=8,
                                                         eval_every=4, ckpt_every=4, batch_size=16,
                                                         modadd_n_eval=32), **kw))


@pytest.mark.parametrize("kw, message", [
    (dict(modadd_op="mul"), "modadd_op=mul needs a prime modadd_classes >= 3 .* got 8"),
    (dict(modadd_op="mul", modadd_classes=9), "got 9"),
    (dict(modadd_op="mul", modadd_classes=2), "got 2"),
    (dict(modadd_op="sub"), "unknown modadd_op 'sub'"),
])
def test_bad_op_settings_are_one_line_errors(kw, message):
    with pytest.raises(UserError, match=message):
        _cfg(**kw)


def test_task_and_hash():
    cfg = _cfg(modadd_op="mul", modadd_classes=7)
    task = ModAddTask(cfg)
    ex = task.eval_set(3)
    assert ex.label.min() >= 1 and ex.label.tolist() == [math.prod(r) % 7 for r in ex.values.tolist()]
    assert task.tok.identity["op"] == "mul"
    assert cfg.hash() != _cfg(modadd_classes=7).hash()


# ---------------------------------------------------------------------------- the study's per-seed verdicts
def _run(acc, r90=None, null=None, C=8, op="add", seed=0, forgetting=None):
    r = {"config": {"modadd_classes": C, "modadd_op": op, "modadd_mode": "reference", "seed": seed},
         "metrics_final": {"acc": acc, "strict_acc": 1 / C}}
    if r90 is not None:
        r["spectra"] = {"summary": {"attention": {"r90_median": r90, "null_r90_median": null, "uncentered_r90_median": 2,
                                                  "pr_median": 1.5, "r90_min": 2, "r90_max": 4, "erank_median": 2}}}
    if forgetting is not None:
        r["curriculum"] = {"forgetting": {str(m): {"peak_in_own_stage": p, "final": f, "drop_from_peak": p - f}
                                          for m, (p, f) in forgetting.items()}}
    return r


def test_mul_verdict_per_seed():
    from training.studies.modadd_study import headline
    add = {"attn": _run(0.7, 3, 5.5), "attn_seed2": _run(0.7, 3, 5.5, seed=1)}
    mul = lambda a, b, acc=0.6: {"mul": _run(acc, a, 8, C=7, op="mul"), "mul_seed2": _run(acc, b, 8, C=7, op="mul", seed=1)}
    h = headline({"runs": {**add, **mul(5, 4)}})["mul"]
    assert h["verdict"].startswith("confirmed") and h["n_seeds_mul"] == 2 and h["chance_mul"] == pytest.approx(1 / 6)
    assert h["r90_mul_per_seed"] == [5, 4] and h["null_r90_mul_per_seed"] == [8, 8] and h["r90_add_per_seed"] == [3, 3]
    assert headline({"runs": {**add, **mul(5, 3.5)}})["mul"]["verdict"].startswith("not confirmed")   # one seed not 1 above
    assert headline({"runs": {**add, **mul(7.5, 7.5)}})["mul"]["verdict"].startswith("not distinguishable")
    assert headline({"runs": {**add, **mul(6, 7)}})["mul"]["verdict"].startswith("partly")   # exactly 1 below: counts
    assert headline({"runs": {**add, **mul(6.5, 6.5)}})["mul"]["verdict"].startswith("partly confirmed")   # outside 4-6
    # 0.35 is learned at chance 1/6 (0.167 + 0.2) but would not be at 1/C = 1/7 + ... -> uses the run's own chance
    assert headline({"runs": {**add, **mul(5, 5, acc=0.37)}})["mul"]["verdict"].startswith("confirmed")
    assert headline({"runs": {**add, **mul(5, 5, acc=0.3)}})["mul"]["verdict"].startswith("inconclusive")


def test_mlp_and_curriculum_verdicts_count_seeds():
    from training.studies.modadd_study import headline
    base = {"attn": _run(0.7, 3, 5), "attn_seed2": _run(0.7, 3, 5, seed=1)}
    both = headline({"runs": {**base, "mlp": _run(0.6, 4, 6), "mlp_seed2": _run(0.6, 4.5, 6, seed=1)}})["mlp"]
    assert both["verdict"] == "confirmed; 2 seed(s)" and both["higher_in"] == 2 and both["worse_in"] == 2
    mixed = headline({"runs": {**base, "mlp": _run(0.6, 4, 6), "mlp_seed2": _run(0.7, 3, 6, seed=1)}})["mlp"]
    assert mixed["verdict"] == "mixed across seeds: higher-dimensional in 1 of 2, worse in 1 of 2; 2 seed(s)"
    one = headline({"runs": {**base, "mlp": _run(0.68, 3.5, 6)}})["mlp"]
    assert one["n_seeds"] == 1 and one["verdict"].startswith("not confirmed") and one["verdict"].endswith("1 seed(s)")
    forgets = {1: (0.9, 0.2), 2: (0.8, 0.75)}
    keeps = {1: (0.9, 0.85), 2: (0.8, 0.75)}
    cur = lambda a, b: headline({"runs": {**base, "curriculum": _run(0.5, forgetting=a),
                                           "curriculum_seed2": _run(0.5, seed=1, forgetting=b)}})["curriculum"]
    assert cur(forgets, forgets)["verdict"] == "confirmed; 2 seed(s)"
    assert cur(forgets, keeps)["verdict"] == "mixed across seeds: forgetting in 1 of 2; 2 seed(s)"
    assert cur(keeps, keeps)["verdict"] == "not confirmed; 2 seed(s)"
    assert cur(forgets, keeps)["drop_from_peak_per_m"][0]["1"] == pytest.approx(0.7)
