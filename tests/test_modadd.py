"""The marker modular-addition task: generator semantics, the leak, schedules, trainer integration."""
import numpy as np
import pytest
import torch

from training.core.config import Config, preset
from training.core.errors import UserError
from training.core.modadd import (ModAddSpec, ModAddTask, generate, leak_prediction, modadd_config, sample_positions)
from training.core.tasks import validate


def _cfg(**kw):
    return validate(modadd_config(preset("test").replace(n_layer=1, d_model=16, n_head=2, attn_only=True, steps=8,
                                                eval_every=4, ckpt_every=4, batch_size=16, lr=1e-3,
                                                modadd_n_eval=32), **kw))


@pytest.mark.parametrize("mode", ["reference", "strict"])
@pytest.mark.parametrize("shared", [True, False])
def test_labels_positions_markers_and_values(mode, shared):
    spec = ModAddSpec(T=16, C=8, V=256, marker_offset=100, mode=mode, value_p=0.5)
    rng = np.random.default_rng(0)
    for m in (1, 2, 3, 4):
        ex = generate(spec, rng, 200, m, shared_positions=shared)
        x, pos, vals = ex.x.numpy(), ex.positions.numpy(), ex.values.numpy()
        assert x.shape == (200, 17) and np.all(x[:, -1] == spec.sep)
        assert np.all((pos >= 1) & (pos <= 14))
        assert np.all(np.diff(pos, axis=1) >= 2) and np.all(np.diff(pos, axis=1) > 0)
        if shared:
            assert np.all(pos == pos[0])
        rows = np.arange(200)[:, None]
        assert np.all(x[rows, pos] == 100 + np.arange(m)[None, :])     # the i-th marker at p_i
        assert np.all(x[rows, pos + 1] == vals) and np.all((vals >= 0) & (vals < 8))
        assert np.array_equal(ex.label.numpy(), vals.sum(1) % 8)
        # used markers appear only at their positions
        assert np.all(np.isin(x[:, :-1], 100 + np.arange(m)).sum(1) == m)


def test_reference_mode_leaks_and_strict_mode_does_not():
    rng = np.random.default_rng(1)
    ref = ModAddSpec(mode="reference")
    strict = ModAddSpec(mode="strict", value_p=0.5)
    n_strict_values, leak_hits, total = 0, 0, 0
    for m in (1, 2, 3, 4):
        e = generate(ref, rng, 500, m)
        # documented behaviour of the reference generator: value tokens only after markers, so the label
        # is the sum of every token below C
        assert torch.equal(leak_prediction(e.x, 8), e.label)
        assert int((e.x[:, :-1] < 8).sum()) == 500 * m
        s = generate(strict, rng, 500, m)
        n_strict_values += int((s.x[:, :-1] < 8).sum()) - 500 * m
        leak_hits += int((leak_prediction(s.x, 8) == s.label).sum())
        total += 500
    # strict mode: value tokens occur as distractors, and the leak predicts at chance (1/C), not 1
    assert n_strict_values > 2000 * 4
    rate = leak_hits / total
    assert abs(rate - 1 / 8) < 4 * np.sqrt((1 / 8) * (7 / 8) / total)


def test_positions_rejection_sampling_is_uniform_over_valid_sets():
    rng = np.random.default_rng(2)
    pos = sample_positions(rng, 8, 3, 3000)        # valid sets in [1, 6] with gaps >= 2: 4 of them
    sets = {tuple(p) for p in pos}
    assert sets == {(1, 3, 5), (1, 3, 6), (1, 4, 6), (2, 4, 6)}
    counts = np.array([np.sum(np.all(pos == np.array(s), axis=1)) for s in sorted(sets)])
    assert np.all(np.abs(counts - 750) < 4 * np.sqrt(3000 * 0.25 * 0.75))


def test_batches_are_deterministic_and_schedules():
    cfg = _cfg(steps=40)
    t1, t2 = ModAddTask(cfg), ModAddTask(cfg)
    a, b = t1.train_example(7, 0), t2.train_example(7, 0)
    assert torch.equal(a.x, b.x) and torch.equal(a.label, b.label) and a.m == b.m
    assert not torch.equal(t1.train_example(8, 0).x, a.x)
    ms = {t1.train_example(s, 0).m for s in range(1, 41)}
    assert ms == {1, 2, 3, 4}                      # mixed: every m occurs
    cur = ModAddTask(_cfg(steps=40, modadd_schedule="curriculum"))
    assert [cur.train_example(s, 0).m for s in range(1, 41)] == [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10
    assert [s for s in range(1, 41) if cur.resets_optimizer(s)] == [11, 21, 31]
    assert not any(ModAddTask(_cfg(steps=40, modadd_schedule="curriculum", modadd_reset_optimizer=False))
                   .resets_optimizer(s) for s in range(1, 41))
    # the eval sets depend on eval_seed only
    assert torch.equal(ModAddTask(_cfg(seed=5)).eval_set(3).x, t1.eval_set(3).x)
    tb = t1.train_batch(3, 0)
    assert torch.all(tb.y[:, :-1] == -100) and torch.equal(tb.y[:, -1], t1.train_example(3, 0).label)


def test_config_validation_and_hash_compatibility():
    with pytest.raises(UserError, match="seq_len"):
        validate(_cfg().replace(seq_len=20))
    with pytest.raises(UserError, match="modadd_m_max"):
        validate(_cfg(modadd_m_max=8))
    with pytest.raises(UserError, match="modadd_mode"):
        validate(_cfg(modadd_mode="loose"))
    with pytest.raises(UserError, match="unknown task"):
        validate(preset("test").replace(task="nope"))
    # the task fields at their defaults leave an LM run's hash alone (runs written before they existed keep it)
    c = preset("test")
    assert c.hash() == c.replace(modadd_classes=8).hash() != _cfg().hash()
    assert _cfg().hash() != _cfg(modadd_classes=5).hash()
    assert Config.from_json(_cfg().to_json()) == _cfg()


def test_trainer_runs_resumes_and_resets_optimizer(tmp_path, monkeypatch):
    from training.studies.common import ensure_run
    from training.core import runio
    cfg = _cfg(steps=8, modadd_schedule="curriculum", modadd_m_max=2, eval_every=2, ckpt_every=2)
    run = tmp_path / "run"
    assert ensure_run(cfg, run) == "completed"
    rows = runio.read_metrics(run)
    assert [r["step"] for r in rows] == [0, 2, 4, 6, 8]
    assert {"acc_m1", "acc_m2", "loss_m1", "acc", "val_loss", "strict_acc_m1"} <= set(rows[-1])
    assert runio.list_checkpoints(run) == [0, 2, 4, 6, 8]
    # the optimizer state was restarted at step 5 (the second stage): AdamW's step counter shows it
    state = runio.load_state(run)
    assert all(int(s["step"]) == 4 for s in state["optimizer"]["state"].values())
    # a run interrupted at step 7 resumes from its step-6 checkpoint to bitwise the same weights
    run2 = tmp_path / "run2"
    orig = ModAddTask.train_batch

    def boom(self, step, micro):
        if step == 7:
            raise KeyboardInterrupt
        return orig(self, step, micro)
    monkeypatch.setattr(ModAddTask, "train_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_run(cfg, run2)
    assert runio.read_status(run2)["state"] == "failed"
    monkeypatch.setattr(ModAddTask, "train_batch", orig)
    assert ensure_run(cfg, run2) == "completed"
    assert [r["step"] for r in runio.read_metrics(run2)] == [0, 2, 4, 6, 8]
    a, _ = runio.load_checkpoint(runio.checkpoint_path(run, 8))
    b, _ = runio.load_checkpoint(runio.checkpoint_path(run2, 8))
    assert all(torch.equal(a[k], b[k]) for k in a)
