"""The finite training set of the modular-addition task (modadd_train_size) and its held-out eval split."""
import numpy as np
import pytest
import torch

from training.core.config import preset
from training.core.errors import UserError
from training.core.modadd import ModAddTask, modadd_config
from training.core.tasks import validate


def _cfg(**kw):
    return validate(modadd_config(preset("test").replace(n_layer=1, d_model=16, n_head=2, attn_only=True, steps=8,
                                                eval_every=4, ckpt_every=4, batch_size=16, lr=1e-3,
                                                modadd_n_eval=32), **kw))


def _rows(x):
    return {bytes(r.numpy()) for r in x}


def test_pool_batches_come_from_the_pool_and_default_is_unchanged():
    t = ModAddTask(_cfg(modadd_train_size=50))
    pool = t.train_pool()
    assert sum(len(p.x) for p in pool.values()) == 50 and [len(pool[m].x) for m in (1, 2, 3, 4)] == [13, 13, 12, 12]
    seen = set().union(*(_rows(p.x) for p in pool.values()))
    for s in range(1, 30):
        ex = t.train_example(s, 0)
        assert _rows(ex.x) <= seen
        assert torch.equal(ex.label, ex.values.sum(1) % 8)          # labels stay those of the sequences
    assert {t.train_example(s, 0).m for s in range(1, 40)} == {1, 2, 3, 4}
    # deterministic, and independent of the eval split; the default stream is that of a run without the field
    t2 = ModAddTask(_cfg(modadd_train_size=50))
    assert torch.equal(t2.train_example(5, 0).x, t.train_example(5, 0).x)
    a, b = ModAddTask(_cfg()), ModAddTask(_cfg(modadd_train_size=0))
    assert torch.equal(a.train_example(5, 0).x, b.train_example(5, 0).x)
    assert _cfg().hash() == _cfg(modadd_train_size=0).hash() != _cfg(modadd_train_size=50).hash()
    # the fixed pool holds few distinct sequences: a fresh stream almost never repeats one
    fresh = set().union(*(_rows(a.train_example(s, 0).x) for s in range(1, 30)))
    assert len(fresh) > 400 and len(set().union(*(_rows(t.train_example(s, 0).x) for s in range(1, 30)))) <= 50


def test_eval_split_is_held_out_on_a_small_sequence_space():
    """T = 4, C = 2, vocabulary 8: 2 positions x 2 values x 5^3 distractors = 500 sequences with m = 1, so a pool
    of 300 and 64 eval draws collide often; every collision is dropped and counted."""
    cfg = _cfg(modadd_T=4, seq_len=5, modadd_classes=2, modadd_vocab=8, modadd_marker_offset=4, modadd_m_max=1,
               modadd_n_eval=64, modadd_train_size=300)
    t = ModAddTask(cfg)
    ev = t.eval_set(1)
    raw = ModAddTask(cfg.replace(modadd_train_size=0)).eval_set(1)
    pool = _rows(t.train_pool()[1].x)
    assert not (_rows(ev.x) & pool)
    expect = sum(bytes(r.numpy()) in pool for r in raw.x)
    assert expect > 5 and t.heldout_overlap == expect and len(ev.x) == len(raw.x) - expect
    # evaluation reports the training-set accuracy beside the held-out one
    from training.core.model import GPT
    model = GPT(cfg, t.tok.vocab_size)
    out = t.evaluate(model, torch.device("cpu"))
    assert {"acc", "train_acc", "train_acc_m1", "heldout_overlap"} <= set(out)
    assert out["heldout_overlap"] == expect


def test_bad_train_size():
    with pytest.raises(UserError, match="modadd_train_size"):
        _cfg(modadd_train_size=2)
    with pytest.raises(UserError, match="modadd_train_size"):
        _cfg(modadd_train_size=-1)
