"""Probe masks on hand-made sequences, for the tiktoken (GPT-2) and the trained-BPE code paths."""
import numpy as np
import pytest
import torch

from conftest import mini_tiktoken
from training.core.data_probe import (KEY_TEMPLATES, QUERY_TEMPLATES, build_probe_tokens, pseudo_words, query_split,
                                 select_codewords, splice_probe)
from training.core.data_tokenizers import TiktokenTokenizer, add_word_tokens, train_bpe
from training.core.errors import UserError

TEXT = ("Once upon a time a little girl named Lily found a red ball in the park. She was happy. "
        "Her friend Tom came to play and they laughed all day. ") * 20


@pytest.fixture(scope="module")
def tik():
    return TiktokenTokenizer(mini_tiktoken())


@pytest.fixture(scope="module")
def bpe():
    tok = train_bpe([TEXT, "The dog ran to the house."] * 5, vocab_size=400)
    return add_word_tokens(tok, ["ZEBRA", "MANGO", "KIRO"])


def _check_layout(tok, words):
    probe = build_probe_tokens(tok, words)
    text = np.asarray(tok.encode(TEXT)[:120], dtype=np.int64)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        seq, code_pos = splice_probe(text.copy(), probe, rng, (5, 30))
        # redo the draws to know what was planted
        r = np.random.default_rng(seed)
        t, c, gap = int(r.integers(5)), int(r.integers(len(words))), int(r.integers(5, 31))
        key, qprefix = probe.key_ids[t][c], probe.query_prefix_ids[t]
        prefix = code_pos - (len(key) + gap + len(qprefix))
        assert len(seq) == len(text)
        assert list(seq[:prefix]) == list(text[:prefix])
        assert list(seq[prefix:prefix + len(key)]) == list(key)
        assert list(seq[prefix + len(key):prefix + len(key) + gap]) == list(text[prefix:prefix + gap])
        q0 = prefix + len(key) + gap
        assert list(seq[q0:code_pos]) == list(qprefix)
        assert seq[code_pos] == probe.code_ids[c]
        assert tok.decode([int(seq[code_pos])]) == " " + words[c]
        assert list(seq[code_pos + 1:]) == list(text[prefix + gap:prefix + gap + len(seq) - code_pos - 1])
        decoded = tok.decode(seq.tolist())
        assert KEY_TEMPLATES[t].format(words[c]) in decoded
        assert QUERY_TEMPLATES[t].format(words[c]) in decoded


def test_layout_tiktoken_path(tik):
    _check_layout(tik, ["ZEBRA", "MANGO"])


def test_layout_trained_bpe_path(bpe):
    _check_layout(bpe, ["ZEBRA", "MANGO", "KIRO"])


def test_mask_uses_in_context_tokenisation(tik):
    # Bare "ZEBRA" (no space) is 5 byte tokens in this encoding; in the query it is the single token " ZEBRA".
    assert len(tik.encode("ZEBRA")) == 5
    prefix, code = query_split(tik, 0, "ZEBRA")
    assert code == tik.encode(" ZEBRA") and len(code) == 1
    assert tik.decode(prefix + code) == " " + QUERY_TEMPLATES[0].format("ZEBRA")


def test_batch_mask_marks_exactly_the_codeword_target(bpe):
    from training.core.batch import TokenSplit
    from training.core.data import LMProbeTask
    from training.core.config import preset
    ids = np.asarray(bpe.encode(TEXT) * 3, dtype=np.uint16)
    split = TokenSplit(ids, np.asarray([0, len(ids)]))
    cfg = preset("test").replace(p_probe=1.0, window="packed", batch_size=6, seq_len=128)
    task = LMProbeTask(cfg, bpe, {"train": split, "val": split}, ["ZEBRA", "MANGO", "KIRO"])
    b = task.train_batch(step=3, micro=1)
    code_ids = set(task.probe.code_ids.tolist())
    assert b.probe_mask.sum(dim=1).tolist() == [1] * 6
    for i in range(6):
        (pos,) = torch.nonzero(b.probe_mask[i]).flatten().tolist()
        assert b.y[i, pos].item() in code_ids
        assert b.x[i, pos + 1].item() == b.y[i, pos].item()
        # the input at the scored position is the last token of the query prefix ("?" or "was")
        assert bpe.decode([b.x[i, pos].item()]).strip() in ("?", "was")
    # same (seed, step, micro) -> same batch; another step -> another batch
    again = task.train_batch(step=3, micro=1)
    assert torch.equal(again.x, b.x) and torch.equal(again.probe_mask, b.probe_mask)
    assert not torch.equal(task.train_batch(step=4, micro=1).x, b.x)


def test_codeword_selection_is_seeded_and_single_token(tik):
    # the vocabulary scan finds every upper-case " WORD" token of >= 4 letters (prefix tokens included)
    assert sorted(select_codewords(tik, 4, seed=42)) == ["MANG", "MANGO", "ZEBR", "ZEBRA"]
    words = select_codewords(tik, 2, seed=42)
    assert select_codewords(tik, 2, seed=42) == words
    assert select_codewords(tik, 2, seed=7) != words or select_codewords(tik, 2, seed=8) != words
    # if >= 4 letters are too few, 3-letter words are admitted too
    assert sorted(select_codewords(tik, 6, seed=42)) == ["MAN", "MANG", "MANGO", "ZEB", "ZEBR", "ZEBRA"]
    with pytest.raises(UserError, match="only 6 single-token codewords"):
        select_codewords(tik, 7, seed=42)
    with pytest.raises(UserError, match="not a single token"):
        build_probe_tokens(tik, ["LEMON"])


def test_pseudo_words_distinct_and_reproducible():
    a = pseudo_words(300, 42)
    assert a == pseudo_words(300, 42) and len(set(a)) == 300
    assert all(w.isupper() and w.isalpha() for w in a)
    assert a != pseudo_words(300, 43)


def test_add_word_tokens_leaves_corpus_tokenisation_unchanged():
    base = train_bpe([TEXT] * 5, vocab_size=350)
    extended = add_word_tokens(base, pseudo_words(20, 1))
    assert extended.encode(TEXT) == base.encode(TEXT)
    assert extended.vocab_size > base.vocab_size
    assert all(len(extended.encode(" " + w)) == 1 for w in pseudo_words(20, 1))


def test_bpe_training_is_deterministic_and_lossless():
    from collections import Counter

    from tokenizers import pre_tokenizers

    from training.core.data_tokenizers import pretoken_counts
    texts = [TEXT, "  Two  spaces\n\nand newlines\t tab. ", "end with space ", "\n lead", "x  ,  y!!  z\n"] * 3
    a, b = train_bpe(texts, 400), train_bpe(texts, 400)
    assert a.tok.to_str() == b.tok.to_str()          # the library's own trainer breaks ties by hash order
    assert all(a.decode(a.encode(t)) == t for t in texts)
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    assert pretoken_counts(texts, pre) == Counter(p for t in texts for p, _ in pre.pre_tokenize_str(t))
