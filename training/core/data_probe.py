"""The long-range key-retrieval probe of the paper (arXiv 2602.23696;
skydancerosel/mini_gpt's ``training/dataset.py``).

A probe sequence plants a *key* sentence ("The secret code is ZEBRA.") in text, then after a gap of
``gap`` tokens a *query* of the paired template ("What is the secret code? ZEBRA"). The model is
scored on predicting the codeword at the end of the query, given the true prefix.

Codewords are upper-case words that are one token *in the query context*: the query with the codeword
tokenises as the query without it followed by exactly one token. The probe mask is derived from
that in-context tokenisation (a defect of skydancerosel/mini_gpt's ``training/dataset.py`` that we do not
reproduce: it used the standalone tokenisation of the bare word, which can differ in length).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from training.core.data_tokenizers import Tokenizer
from training.core.errors import UserError

# Five paired templates: the key at index i goes with the query at index i. The codeword is always the
# last word of the query, with no trailing punctuation.
KEY_TEMPLATES = (
    "The secret code is {}.",
    "Remember the word {}.",
    "The special word is {}.",
    "The password is {}.",
    "The magic word is {}.",
)
QUERY_TEMPLATES = (
    "What is the secret code? {}",
    "What was the word to remember? {}",
    "What is the special word? {}",
    "What is the password? {}",
    "The magic word was {}",
)


@dataclass(frozen=True)
class ProbeTokens:
    """Token ids of every template, ready to splice: key_ids[t][c] and query_ids[t][c] for template t, codeword c."""

    codewords: tuple[str, ...]
    code_ids: np.ndarray               # (n_codewords,) the in-context token id of each codeword
    key_ids: tuple[tuple[tuple[int, ...], ...], ...]
    query_prefix_ids: tuple[tuple[int, ...], ...]   # query without the codeword, per template

    @property
    def max_key_len(self) -> int:
        return max(len(k) for per_t in self.key_ids for k in per_t)

    @property
    def max_query_len(self) -> int:
        return max(len(q) for q in self.query_prefix_ids) + 1


def query_split(tok: Tokenizer, template: int, word: str) -> tuple[list[int], list[int]]:
    """Tokenise a query in context: (ids of the query without the codeword, ids of the codeword part).

    The codeword part is what the full query adds after the longest common prefix with the
    codeword-less query, i.e. exactly the positions the probe scores.
    """
    prefix_text = " " + QUERY_TEMPLATES[template].format("").rstrip()
    prefix = tok.encode(prefix_text)
    full = tok.encode(" " + QUERY_TEMPLATES[template].format(word))
    n = 0
    while n < min(len(prefix), len(full)) and prefix[n] == full[n]:
        n += 1
    return full[:n], full[n:]


def is_codeword_candidate(text: str, min_len: int) -> bool:
    """A token text " WORD": a leading space and an upper-case alphabetic word of at least min_len letters."""
    return (len(text) >= min_len + 1 and text[0] == " " and text[1:].isascii() and text[1:].isalpha()
            and text[1:].isupper())


def single_token_in_context(tok: Tokenizer, word: str) -> int | None:
    """The token id of " word" if it is one token in every query template (and the prefix is unchanged), else None."""
    ids = set()
    for t in range(len(QUERY_TEMPLATES)):
        prefix, code = query_split(tok, t, word)
        if len(code) != 1 or prefix != tok.encode(" " + QUERY_TEMPLATES[t].format("").rstrip()):
            return None
        ids.add(code[0])
    return ids.pop() if len(ids) == 1 else None


def select_codewords(tok: Tokenizer, n: int, seed: int = 42, candidates: list[str] | None = None) -> list[str]:
    """Pick n distinct codewords that are single tokens in context, reproducibly.

    Candidates default to every vocabulary token of the form " WORD" (upper case, >= 4 letters, then
    >= 3 if needed). They are de-duplicated, sorted, shuffled with ``random.Random(seed)`` and the first
    n kept, so the choice does not depend on dictionary order.
    """
    if candidates is None:
        found: set[str] = set()
        for min_len in (4, 3):
            for i in range(tok.vocab_size):
                if i == tok.eos_id:
                    continue
                s = tok.token_str(i)
                if is_codeword_candidate(s, min_len) and single_token_in_context(tok, s[1:]) == i:
                    found.add(s[1:])
            if len(found) >= n:
                break
        candidates = sorted(found)
    else:
        candidates = sorted({w for w in candidates if single_token_in_context(tok, w) is not None})
    if len(candidates) < n:
        raise UserError(f"only {len(candidates)} single-token codewords are available, fewer than n_codewords={n}; "
                        "lower n_codewords")
    random.Random(seed).shuffle(candidates)
    return candidates[:n]


def pseudo_words(n: int, seed: int) -> list[str]:
    """n distinct pronounceable upper-case pseudo-words (CVCVC...), reproducible from seed.

    Used as codewords for a tokenizer trained on the run's corpus, where they are made single tokens.
    """
    rng = random.Random(seed)
    consonants, vowels = "BDFGKLMNPRSTVZ", "AEIOU"
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        length = rng.choice((4, 5, 6))
        w = "".join(rng.choice(consonants if i % 2 == 0 else vowels) for i in range(length))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def build_probe_tokens(tok: Tokenizer, codewords: list[str]) -> ProbeTokens:
    code_ids, keys, prefixes = [], [], []
    for w in codewords:
        cid = single_token_in_context(tok, w)
        if cid is None:
            raise UserError(f"codeword {w!r} is not a single token in context for this tokenizer; "
                            "the codewords.json of this run does not match its tokenizer")
        code_ids.append(cid)
    for t in range(len(KEY_TEMPLATES)):
        keys.append(tuple(tuple(tok.encode(" " + KEY_TEMPLATES[t].format(w))) for w in codewords))
        prefixes.append(tuple(tok.encode(" " + QUERY_TEMPLATES[t].format("").rstrip())))
    return ProbeTokens(tuple(codewords), np.asarray(code_ids, dtype=np.int64), tuple(keys), tuple(prefixes))


def splice_probe(text: np.ndarray, probe: ProbeTokens, rng: np.random.Generator, gap_range: tuple[int, int],
                 prefix_range: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """Plant a key/query pair in ``text`` (a 1-D token array of length L = seq_len + 1).

    Layout: text[:prefix] + key + text[prefix:prefix+gap] + query + text[prefix+gap:], cut to L.
    Returns the new token array and the index (into the array) of the codeword token that ends the
    query; the scored target position is that index − 1 after the input/target shift.
    """
    L = len(text)
    t = int(rng.integers(len(KEY_TEMPLATES)))
    c = int(rng.integers(len(probe.codewords)))
    gap = int(rng.integers(gap_range[0], gap_range[1] + 1))
    key = probe.key_ids[t][c]
    query = probe.query_prefix_ids[t] + (int(probe.code_ids[c]),)
    budget = L - (len(key) + gap + len(query))
    if budget < 3:
        raise ValueError(f"probe with gap {gap} does not fit a window of {L} tokens")
    if prefix_range is None:
        prefix_range = (2, max(3, budget // 3))
    prefix = int(rng.integers(prefix_range[0], min(prefix_range[1], budget - 1) + 1))
    seq = np.concatenate([text[:prefix], key, text[prefix:prefix + gap], query, text[prefix + gap:]])[:L]
    code_pos = prefix + len(key) + gap + len(query) - 1
    return seq.astype(text.dtype, copy=False), code_pos
