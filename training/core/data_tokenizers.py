"""Tokenizers: GPT-2 BPE through tiktoken, and a byte-level BPE trained on the run's own corpus.

Both expose the same small interface (:class:`Tokenizer`): ``encode``, ``encode_batch``, ``decode``,
``token_str``, ``vocab_size``, ``eos_id`` and an ``identity`` string that keys the token cache.

The trained BPE (``tokenizers`` library) is byte-level with the GPT-2 pre-tokenisation rule, so a
space-prefixed word such as " ZEBRA" is one pre-token. Probe codewords must be single tokens in the
query context; for the trained BPE they are made so by :func:`add_word_tokens`, which appends merges
(lowest priority, after all merges learned from the corpus) that join each codeword's pieces into
one token. The corpus' own tokenisation is unchanged by this.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from training.core.errors import UserError
from training.core.runio import atomic_write_text

EOS = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50_257


class Tokenizer:
    """Common interface. Subclasses set name, vocab_size, eos_id, identity."""

    name: str
    vocab_size: int
    eos_id: int
    identity: str

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def token_str(self, token_id: int) -> str:
        """The text of one token (may be a partial UTF-8 sequence rendered with replacement characters)."""
        return self.decode([token_id])


class TiktokenTokenizer(Tokenizer):
    """GPT-2 BPE through tiktoken. ``encoding`` may be given directly (tests use a small one)."""

    def __init__(self, encoding=None):
        if encoding is None:
            encoding = load_gpt2_encoding()
        self.enc = encoding
        self.name = encoding.name
        self.eos_id = encoding.eot_token
        self.vocab_size = encoding.n_vocab
        self.identity = f"tiktoken:{encoding.name}:{encoding.n_vocab}"

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.enc.encode_ordinary_batch(list(texts), num_threads=4)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def token_str(self, token_id: int) -> str:
        return self.enc.decode_single_token_bytes(token_id).decode("utf-8", errors="replace")


def load_gpt2_encoding():
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:   # tiktoken downloads its vocabulary on first use; offline this fails
        raise UserError(
            "the gpt2 tokenizer needs tiktoken's vocabulary file, which is neither cached nor downloadable here "
            f"({type(e).__name__}); run once with network access (or set TIKTOKEN_CACHE_DIR to a cache that has it), "
            "or use the offline tokenizer with --set tokenizer=bpe") from None


class BPETokenizer(Tokenizer):
    """A byte-level BPE from the ``tokenizers`` library (trained here or loaded from tokenizer.json)."""

    def __init__(self, tok):
        self.tok = tok
        self.name = "bpe"
        self.vocab_size = tok.get_vocab_size()
        eos = tok.token_to_id(EOS)
        if eos is None:
            raise UserError(f"tokenizer has no {EOS} token; it was not made by this toolkit")
        self.eos_id = eos
        self.identity = "bpe:" + hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as e:
            raise UserError(f"cannot read tokenizer {path}: {e}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.tok.to_str())

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)


def train_bpe(texts: Iterable[str], vocab_size: int) -> BPETokenizer:
    """Train a byte-level BPE (GPT-2 pre-tokenisation, an end-of-text token) deterministically.

    The ``tokenizers`` library's BpeTrainer breaks ties between equally frequent pairs by hash-map
    order, so two trainings on the same corpus can differ (huggingface/tokenizers issue 1794). The merge
    loop here is the textbook one with ties broken by the pair's text, so the tokenizer is a function of
    the corpus alone; pre-tokenisation, the byte alphabet and encoding are the library's.
    """

    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    counts = pretoken_counts(texts, pre)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {EOS: 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    words = [list(w) for w in sorted(counts)]
    freq = [counts[w] for w in sorted(counts)]
    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for pair in zip(w, w[1:]):
            pair_count[pair] += freq[i]
            where[pair].add(i)
    # max-heap on (count, smallest pair text first) with lazy deletion of stale entries
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(vocab) < vocab_size and heap:
        neg, (left, right) = heapq.heappop(heap)
        n = pair_count.get((left, right), 0)
        if n != -neg:
            if n > 0:
                heapq.heappush(heap, (-n, (left, right)))
            continue
        if n < 2:
            break
        joined = left + right
        merges.append((left, right))
        vocab.setdefault(joined, len(vocab))
        for i in sorted(where.pop((left, right), ())):
            w, f = words[i], freq[i]
            for pair in zip(w, w[1:]):           # remove this word's old pairs
                pair_count[pair] -= f
                if pair_count[pair] <= 0:
                    del pair_count[pair]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == left and w[j + 1] == right:
                    out.append(joined)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for pair in zip(out, out[1:]):       # and add the new ones
                pair_count[pair] += f
                where[pair].add(i)
                heapq.heappush(heap, (-pair_count[pair], pair))
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])
    return BPETokenizer(tok)


def pretoken_counts(texts: Iterable[str], pre) -> dict[str, int]:
    """Counts of the pre-tokens of ``texts`` under the GPT-2 byte-level rule, without pre-tokenising every text.

    No pre-token of that rule spans a non-space character followed by whitespace, so a text splits into
    segments "whitespace run + non-space run" that pre-tokenise independently; only the distinct
    segments (a few thousand for a story corpus) go through the library's pre-tokenizer.
    """
    segments: Counter = Counter()
    for text in texts:
        segments.update(_SEGMENT.findall(text))
    counts: Counter = Counter()
    for seg, n in segments.items():
        for piece, _ in pre.pre_tokenize_str(seg):
            counts[piece] += n
    return counts


_SEGMENT = re.compile(r"\s*\S+|\s+")


def add_word_tokens(tokenizer: BPETokenizer, words: Sequence[str]) -> BPETokenizer:
    """Return a copy of ``tokenizer`` in which each " WORD" is one token.

    Each word's current pieces are joined left to right by merges appended after the learned ones,
    so they fire only once every learned merge has been applied: text without these words is
    tokenised exactly as before.
    """
    from tokenizers import Tokenizer as HFTokenizer

    spec = json.loads(tokenizer.tok.to_str())
    model = spec["model"]
    vocab: dict[str, int] = model["vocab"]
    merges: list = model["merges"]
    as_lists = bool(merges) and isinstance(merges[0], list)
    existing = {tuple(m) if as_lists else tuple(m.split(" ", 1)) for m in merges}
    next_id = 1 + max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))])
    for word in words:
        pieces = tokenizer.tok.encode(" " + word, add_special_tokens=False).tokens
        left = pieces[0]
        for right in pieces[1:]:
            joined = left + right
            if joined not in vocab:
                vocab[joined] = next_id
                next_id += 1
            if (left, right) not in existing:
                merges.append([left, right] if as_lists else f"{left} {right}")
                existing.add((left, right))
            left = joined
    out = BPETokenizer(HFTokenizer.from_str(json.dumps(spec)))
    for word in words:
        if len(out.encode(" " + word)) != 1:
            raise RuntimeError(f"codeword {word!r} did not become a single token")
    return out


def gpt2_tokenizer() -> TiktokenTokenizer:
    return TiktokenTokenizer()
