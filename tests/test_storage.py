"""Checkpoint storage options: trunk-only, bf16 (refused by drift analyses), sharded by block; resume with them."""
import shutil

import numpy as np
import pytest
import torch

from conftest import run_inprocess
from training.core import runio
from training.geometry.analysis_io import open_run
from training.core.config import preset
from training.core.errors import UserError
from training.core.model import GPT, trunk_names
from training.geometry.trajectory import CheckpointSet, compute_gram
from training.core.tasks import validate


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """A normal run (full fp32 checkpoints) of the test preset, trained in this process."""
    from training.core.trainer import Trainer
    base = tmp_path_factory.mktemp("storage")
    cfg = preset("test").replace(device="cpu", cache_dir=str(base / "cache"), progress=False)
    run = base / "ref"
    assert Trainer(cfg.replace(out_dir=str(run)), run, resume=False).run() == "completed"
    return run, cfg


def rewrite(ref_run, dst, **opts):
    """A copy of ``ref_run`` whose checkpoints are re-saved with the storage options ``opts``."""
    cfg = runio.read_json(ref_run / "config.json")
    dst.mkdir(parents=True)
    shutil.copy(ref_run / "config.json", dst / "config.json")
    from training.core.config import Config
    c = Config.from_dict(cfg["config"])
    tensors = runio.load_checkpoint(runio.checkpoint_path(ref_run, 0))[0]
    model = GPT(c, tensors["tok_emb.weight"].shape[0])
    for s in runio.list_checkpoints(ref_run):
        runio.load_weights(model, runio.checkpoint_path(ref_run, s))
        runio.save_checkpoint(dst, s, model, cfg["config_hash"], **opts)
    return dst


def test_trunk_only_checkpoints_serve_trajectory_analyses(ref, tmp_path):
    run, cfg = ref
    trunk = rewrite(run, tmp_path / "trunk", contents="trunk")
    tensors, meta = runio.load_checkpoint(runio.checkpoint_path(trunk, 10))
    assert sorted(tensors) == sorted(trunk_names(cfg)) and meta["contents"] == "trunk"
    assert runio.checkpoint_path(trunk, 10).stat().st_size < runio.checkpoint_path(run, 10).stat().st_size
    np.testing.assert_array_equal(compute_gram(CheckpointSet(trunk)).G, compute_gram(CheckpointSet(run)).G)
    # ... and are refused, with the reason, where the whole model is needed
    with pytest.raises(UserError, match="trunk-only checkpoints .* needs the whole model"):
        open_run(trunk).model(10)
    with pytest.raises(UserError, match="trunk matrices only"):
        runio.load_weights(GPT(cfg, runio.read_json(run / "config.json")["vocab_size"]),
                           runio.checkpoint_path(trunk, 10))


def test_bf16_checkpoints_are_refused_by_drift_analyses(ref, tmp_path, capsys):
    run, cfg = ref
    half = rewrite(run, tmp_path / "bf16", dtype="bf16")
    tensors, meta = runio.load_checkpoint(runio.checkpoint_path(half, 5))
    assert meta["dtype"] == "bf16" and all(t.dtype == torch.bfloat16 for t in tensors.values())
    with pytest.raises(UserError, match="bf16 .*8 significant bits.*rounding noise"):
        CheckpointSet(half)
    code, out, err = run_inprocess(capsys, "analysis/backbone/trajectory_pca.py", "--run-dir", str(half))
    assert code == 2 and err.count("\n") == 1 and "ckpt_dtype=fp32" in err
    # why: a late checkpoint-to-checkpoint update (what update alignment measures) is badly resolved in bf16
    w0 = runio.load_checkpoint(runio.checkpoint_path(run, 15))[0]["blocks.0.mlp.w_up.weight"]
    w5 = runio.load_checkpoint(runio.checkpoint_path(run, 20))[0]["blocks.0.mlp.w_up.weight"]
    rel = ((w5.bfloat16().float() - w0.bfloat16().float()) - (w5 - w0)).norm() / (w5 - w0).norm()
    assert rel > 0.05              # bf16 storage changes the measured update by more than 5 %
    # a model analysis may still use bf16 weights (cast back to fp32)
    m = open_run(half).model(5)
    assert m.tok_emb.weight.dtype == torch.float32


def test_sharded_checkpoints_read_per_block(ref, tmp_path):
    run, cfg = ref
    sh = rewrite(run, tmp_path / "sharded", shards=True)
    assert runio.list_checkpoints(sh) == runio.list_checkpoints(run)
    main = runio.checkpoint_path(sh, 20)
    assert runio.shard_path(main, 1).is_file() and runio.shard_path(main, 0).name == "step_000020.block00.safetensors"
    a, b = runio.load_checkpoint(main)[0], runio.load_checkpoint(runio.checkpoint_path(run, 20))[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    whole, shards = CheckpointSet(run), CheckpointSet(sh)
    for blk in range(cfg.n_layer):
        np.testing.assert_array_equal(compute_gram(shards, block=blk).G, compute_gram(whole, block=blk).G)
    np.testing.assert_array_equal(compute_gram(shards).G, compute_gram(whole).G)
    # a per-block analysis opens only its block's files: remove block 1's shards and block 0 still works
    for s in runio.list_checkpoints(sh):
        runio.shard_path(runio.checkpoint_path(sh, s), 1).unlink()
    np.testing.assert_array_equal(compute_gram(CheckpointSet(sh), block=0).G, compute_gram(whole, block=0).G)
    with pytest.raises(UserError, match="block01.*missing"):
        runio.load_checkpoint(main)


def test_reduced_checkpoints_resume_exactly(ref, tmp_path, monkeypatch):
    """A run with trunk-only bf16 sharded checkpoints, interrupted and resumed, ends where the normal run ends."""
    import training.core.trainer as tr
    run, cfg = ref
    red = tmp_path / "reduced"
    rcfg = cfg.replace(out_dir=str(red), ckpt_contents="trunk", ckpt_dtype="bf16", ckpt_shards=True)
    assert rcfg.hash() == cfg.hash()                    # storage does not change what is computed
    real = tr.lambda_at

    def interrupt_at_13(c, step):
        if step == 13:
            raise KeyboardInterrupt
        return real(c, step)
    monkeypatch.setattr(tr, "lambda_at", interrupt_at_13)
    with pytest.raises(KeyboardInterrupt):
        tr.Trainer(rcfg, red, resume=False).run()
    assert runio.read_status(red)["state"] == "failed" and runio.list_checkpoints(red) == [0, 5, 10]
    monkeypatch.setattr(tr, "lambda_at", real)
    assert tr.Trainer(rcfg, red, resume=True).run() == "completed"
    final = runio.load_state(red)["model"]
    want = runio.load_checkpoint(runio.checkpoint_path(run, 20))[0]
    for k, v in want.items():
        assert torch.equal(final[k], v), k
    got = runio.load_checkpoint(runio.checkpoint_path(red, 20))[0]
    assert sorted(got) == sorted(trunk_names(cfg))
    assert all(torch.equal(got[k], want[k].bfloat16()) for k in got)
    assert [r["val_loss"] for r in runio.read_metrics(red)] == [r["val_loss"] for r in runio.read_metrics(run)]


def test_storage_fields_are_validated():
    with pytest.raises(UserError, match="ckpt_dtype"):
        validate(preset("test").replace(ckpt_dtype="fp16"))
    with pytest.raises(UserError, match="ckpt_contents"):
        validate(preset("test").replace(ckpt_contents="half"))


def test_background_checkpoint_writes_give_identical_files(ref, tmp_path):
    from training.core.trainer import Trainer
    run, cfg = ref
    bg = tmp_path / "async"
    assert Trainer(cfg.replace(out_dir=str(bg), async_checkpoints=True), bg, resume=False).run() == "completed"
    assert runio.list_checkpoints(bg) == runio.list_checkpoints(run)
    for s in runio.list_checkpoints(run):
        assert runio.checkpoint_path(bg, s).read_bytes() == runio.checkpoint_path(run, s).read_bytes(), s
    a, b = runio.load_state(bg), runio.load_state(run)
    assert a["step"] == b["step"] == 20 and a["acc"] == b["acc"]
    for (k1, v1), (k2, v2) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(v1[n], v2[n]) for n in v1)
    assert runio.read_status(bg)["state"] == "completed"


def test_background_writer_order_and_errors(tmp_path):
    w = runio.BackgroundWriter(enabled=True)
    out = []
    for i in range(5):
        w.submit(lambda i=i: out.append(i))
    w.join()
    assert out == [0, 1, 2, 3, 4]

    def fail():
        raise OSError("disk full")
    w.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        w.join()
    w.submit(lambda: out.append(5))           # the writer goes on after the error was reported
    w.close()
    assert out[-1] == 5


def test_padded_vocabulary_leaves_the_loss_unchanged():
    from training.core.losses import composite_loss
    cfg = preset("test")
    torch.manual_seed(0)
    plain = GPT(cfg, 600)
    torch.manual_seed(0)
    padded = GPT(cfg.replace(vocab_multiple=64), 600)
    assert padded.tok_emb.weight.shape[0] == 640 and padded.num_params() == plain.num_params()
    a, b = plain.state_dict(), padded.state_dict()
    for k in a:      # the real rows draw exactly the unpadded model's initialisation; the extra rows are zero
        assert torch.equal(b[k][:a[k].shape[0]], a[k]), k
    assert not padded.tok_emb.weight[600:].any()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 600, (4, cfg.seq_len), generator=g)
    y = torch.randint(0, 600, (4, cfg.seq_len), generator=g)
    mask = torch.rand(4, cfg.seq_len, generator=g) < 0.1
    la, lb = plain(x), padded(x)
    assert lb.shape == la.shape == (4, cfg.seq_len, 600)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-5)
    ca, cb = composite_loss(la, y, mask, 2.0).loss, composite_loss(lb, y, mask, 2.0).loss
    torch.testing.assert_close(cb, ca, rtol=1e-6, atol=1e-6)
    ca.backward()
    cb.backward()
    torch.testing.assert_close(padded.tok_emb.weight.grad[:600], plain.tok_emb.weight.grad, rtol=1e-5, atol=1e-7)
    assert not padded.tok_emb.weight.grad[600:].any()      # no gradient: the extra rows stay zero


def test_padded_vocabulary_run_matches_and_stores_unpadded(ref, tmp_path):
    from training.core.trainer import Trainer
    run, cfg = ref
    pad = tmp_path / "pad"
    assert Trainer(cfg.replace(out_dir=str(pad), vocab_multiple=64), pad, resume=False).run() == "completed"
    for s in (0, 20):
        a = runio.load_checkpoint(runio.checkpoint_path(run, s))[0]
        b = runio.load_checkpoint(runio.checkpoint_path(pad, s))[0]
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-6, msg=k)
    for r1, r2 in zip(runio.read_metrics(run), runio.read_metrics(pad)):
        assert r2["val_loss"] == pytest.approx(r1["val_loss"], rel=1e-5)
    m = open_run(pad).model(20)          # an analysis rebuilds the padded model from the unpadded file
    assert m.tok_emb.weight.shape[0] % 64 == 0 and not m.tok_emb.weight[m.vocab_size:].any()
