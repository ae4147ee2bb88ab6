"""Corpora, the token cache, batches and the fixed evaluation sets."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from training.core import data as data_mod
from training.core.config import preset
from training.core.data import _read_documents, load_corpus, token_cache
from training.core.errors import UserError
from training.core.tasks import prepare_task


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return preset("test").replace(cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_synthetic_is_the_offline_default():
    assert preset("test").corpus == preset("quick").corpus == "synthetic"
    assert preset("quick").tokenizer == "bpe"


def test_token_cache_is_built_once_and_keyed_by_tokenizer(cfg, monkeypatch):
    task = prepare_task(cfg)
    train = task.train
    assert isinstance(train.tokens, np.memmap) and train.tokens.dtype == np.uint16
    assert train.n_docs == cfg.n_train_docs and task.val.n_docs == cfg.n_val_docs
    # every document ends with EOS, exactly at the recorded offsets
    ends = train.offsets[1:] - 1
    assert np.all(train.tokens[ends] == task.tok.eos_id)
    assert np.sum(train.tokens == task.tok.eos_id) == train.n_docs
    # a second preparation reads the caches and never touches the corpus
    monkeypatch.setattr(data_mod, "load_corpus", lambda c: (_ for _ in ()).throw(AssertionError("rebuilt")))
    again = prepare_task(cfg)
    assert np.array_equal(np.asarray(again.train.tokens), np.asarray(train.tokens))
    # another tokenizer gives another cache
    monkeypatch.undo()
    other = prepare_task(cfg.replace(bpe_vocab_size=600))
    assert other.tok.identity != task.tok.identity
    assert len(list((data_mod.cache_root(cfg) / "tokens").iterdir())) == 2


def test_the_tokens_decode_to_the_corpus(cfg):
    task = prepare_task(cfg)
    train_docs, _ = load_corpus(cfg)
    a, b = task.train.offsets[3], task.train.offsets[4]
    assert task.tok.decode(task.train.tokens[a:b - 1].tolist()) == train_docs[3]


def test_eval_sets_do_not_depend_on_the_training_seed(cfg):
    a = prepare_task(cfg.replace(seed=1))
    b = prepare_task(cfg.replace(seed=2, data_seed=99))
    c = prepare_task(cfg.replace(eval_seed=7))
    for name in ("val", "probe_in", "probe_ood"):
        assert torch.equal(a.eval_set(name).x, b.eval_set(name).x)
        assert not torch.equal(a.eval_set(name).x, c.eval_set(name).x)
    assert not torch.equal(a.train_batch(1, 0).x, b.train_batch(1, 0).x)
    probe = a.eval_set("probe_ood")
    assert probe.probe_mask.sum(dim=1).eq(1).all()          # every example scored once
    pos = probe.probe_mask.float().argmax(dim=1)
    assert pos.min() >= cfg.eval_ood_gap[0]                  # the answer sits after the long gap
    assert a.eval_set("val").probe_mask.sum() == 0


def test_train_batches_follow_p_probe(cfg):
    task = prepare_task(cfg.replace(batch_size=64, p_probe=0.25))
    rows = sum(int(task.train_batch(s, 0).probe_mask.any(dim=1).sum()) for s in range(1, 21))
    assert 0.18 < rows / (20 * 64) < 0.32
    none = prepare_task(cfg.replace(p_probe=0.0)).train_batch(1, 0)
    assert none.probe_mask.sum() == 0


def test_story_windows_mask_the_padding(cfg):
    task = prepare_task(cfg.replace(window="story", seq_len=256, p_probe=0.0, batch_size=16))
    b = task.train_batch(1, 0)
    lengths = np.diff(task.train.offsets)
    assert lengths.min() < 257                              # some stories are shorter than a window
    for i in range(16):
        ignored = (b.y[i] == -100).nonzero().flatten()
        if len(ignored):
            first = ignored[0].item()
            assert (b.y[i, first:] == -100).all()            # padding only at the end
            assert b.x[i, first].item() == task.tok.eos_id   # the story's own EOS is the last real target
            assert b.y[i, first - 1].item() == task.tok.eos_id


def test_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("First story here.<|endoftext|>Second story.<|endoftext|>")
    (tmp_path / "b.txt").write_text("Para one.\n\nPara two.\n")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "J one"}) + "\n" + json.dumps({"text": "J two"}) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["P one", "P two"]}), tmp_path / "d.parquet")
    assert _read_documents(tmp_path / "a.txt") == ["First story here.", "Second story."]
    assert _read_documents(tmp_path / "b.txt") == ["Para one.", "Para two."]
    assert _read_documents(tmp_path / "c.jsonl") == ["J one", "J two"]
    assert _read_documents(tmp_path / "d.parquet") == ["P one", "P two"]
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        _read_documents(tmp_path / "bad.jsonl")
    cfg = preset("test").replace(corpus="files", corpus_path=str(tmp_path / "c.jsonl"), min_doc_chars=1)
    train, val = load_corpus(cfg)
    assert train == ["J one"] and val == ["J two"]


def test_corrupt_token_cache_is_reported(cfg):
    task = prepare_task(cfg)
    key_dir = [d for d in (data_mod.cache_root(cfg) / "tokens").iterdir()
               if json.loads((d / "meta.json").read_text())["tokenizer"] == task.tok.identity][0]
    data = (key_dir / "val.bin").read_bytes()
    (key_dir / "val.bin").write_bytes(data[:-10])
    try:
        with pytest.raises(UserError, match="is corrupt"):
            token_cache(cfg, task.tok)
    finally:
        (key_dir / "val.bin").write_bytes(data)


def test_tinystories_offline_gives_one_sentence(tmp_path):
    if data_mod._hub_reachable():
        pytest.skip("the Hugging Face hub is reachable from here")
    code = ("import sys; from training.core.cli import run_main; from training.core.config import preset;"
            "from training.core.data import load_corpus;"
            "sys.exit(run_main(lambda: load_corpus(preset('paper').replace(n_train_docs=5, n_val_docs=5))))")
    env = {"HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 2
    assert "TinyStories could not be loaded" in p.stderr and "--set corpus=synthetic" in p.stderr
    assert "Traceback" not in p.stderr


class _RecallModel(torch.nn.Module):
    """A causal stand-in that solves the probe: at position t it predicts the last codeword token among x[:t+1]
    (the key's), plus a position-dependent distractor so that the nll depends on every column."""

    def __init__(self, vocab: int, code_ids):
        super().__init__()
        self.vocab, self.code = vocab, torch.as_tensor(list(code_ids))

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab)
        is_code = torch.isin(x, self.code)
        for b in range(B):
            last = None
            for t in range(T):
                if is_code[b, t]:
                    last = x[b, t]
                logits[b, t, (x[b, t] * 7 + t) % self.vocab] += 1.0
                if last is not None:
                    logits[b, t, last] += 4.0
        return logits


def test_cropped_probe_evaluation_gives_the_same_accuracy_and_nll(cfg):
    """probe_eval_crop evaluates each probe example only up to its answer: for a causal model p and nll are those of
    the full windows, example by example, in fewer columns."""
    from training.core.losses import probe_stats
    full_cfg = cfg.replace(n_probe_eval=24, eval_batch_size=5)
    task_full, task_crop = prepare_task(full_cfg), prepare_task(full_cfg.replace(probe_eval_crop=True))
    model = _RecallModel(task_full.tok.vocab_size, [int(c) for c in task_full.probe.code_ids])
    a = task_full.evaluate(model, torch.device("cpu"), sets=("probe_in", "probe_ood"))
    b = task_crop.evaluate(model, torch.device("cpu"), sets=("probe_in", "probe_ood"))
    for tag in ("in", "ood"):
        assert 0.5 < a[f"p_{tag}"] <= 1 and b[f"p_{tag}"] == a[f"p_{tag}"]
        assert b[f"nll_{tag}"] == pytest.approx(a[f"nll_{tag}"], rel=1e-6)
    s = task_full.eval_set("probe_ood")                # independent: one example at a time, full window
    correct = sum(int(probe_stats(model(s.x[i:i + 1]), s.y[i:i + 1], s.probe_mask[i:i + 1])["correct"])
                  for i in range(len(s.x)))
    assert a["p_ood"] == pytest.approx(correct / len(s.x))
    order, ends = task_crop._probe_batches("probe_in")
    assert sorted(order.tolist()) == list(range(24)) and ends.max() < s.x.shape[1]
    assert torch.all(ends[order][1:] >= ends[order][:-1])
