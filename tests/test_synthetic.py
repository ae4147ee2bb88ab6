"""Tests of the built-in synthetic story corpus (training/core/data_synthetic.py)."""
from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from training.core.data_synthetic import MAX_WORDS, MIN_WORDS, generate_stories, iter_stories, tell

# pronoun -> True if it refers to a female character (she/her), False for a male one (he/him/his)
PRONOUN_FEMALE = {"she": True, "her": True, "he": False, "him": False, "his": False}


@pytest.fixture(scope="module")
def stories() -> list[str]:
    return generate_stories(5000, 0)


def test_deterministic_and_seed_dependent():
    a = generate_stories(200, 7)
    assert a == generate_stories(200, 7)
    b = generate_stories(200, 8)
    assert sum(x != y for x, y in zip(a, b)) > 190
    assert len(set(a)) == len(a)


def test_prefix_and_slice_property():
    assert generate_stories(50, 3)[:5] == generate_stories(5, 3)
    assert list(iter_stories(30, 3))[20:] == generate_stories(30, 3)[20:]
    assert tell(3, 17).text == generate_stories(18, 3)[17]
    assert generate_stories(0, 3) == []
    with pytest.raises(ValueError):
        generate_stories(-1, 3)


def test_vocabulary_is_large(stories):
    vocab = {w for s in stories for w in re.split(r"[^a-z]+", s.lower()) if w}
    assert len(vocab) >= 1000, len(vocab)


def test_plain_ascii_no_all_caps_no_digits(stories):
    for s in stories[:2000]:
        assert s.isascii()
        assert not any(ch.isdigit() for ch in s)
        caps = [w for w in re.findall(r"[A-Za-z]+", s) if len(w) >= 2 and w.isupper()]
        assert not caps, (caps, s)


def test_length_and_punctuation(stories):
    counts = [len(s.split()) for s in stories]
    assert min(counts) >= MIN_WORDS and max(counts) <= MAX_WORDS
    assert 110 <= sum(counts) / len(counts) <= 200          # lengths vary inside the range
    assert max(counts) - min(counts) >= 100
    for s in stories:
        assert s[0].isupper()
        assert s[-1] in ".!?" or s[-2:] in ('."', '!"', '?"'), s[-40:]
        assert s.count('"') % 2 == 0, s                      # quotes are balanced
        assert "  " not in s and " ." not in s and " ," not in s


def test_all_arcs_occur():
    arcs = Counter(tell(1, i).arc for i in range(1000))
    assert len(arcs) == 10 and min(arcs.values()) >= 50, arcs


def _pronoun_errors(text: str, cast: dict[str, bool]) -> list[str]:
    """Sentences (outside quoted speech) whose first mention of anyone is a pronoun of the wrong gender.

    The referent is the character of the last such mention that was a name; a pronoun as the first
    mention must match it. Pronouns later in a sentence may refer to someone else and are not checked.
    """
    outside = ". ".join(text.split('"')[0::2])      # drop quoted speech; a quote ends a piece
    errors, referent = [], None
    for piece in re.split(r"[.!?]", outside):
        for tok in re.findall(r"[A-Za-z]+", piece):
            if tok in cast:
                referent = tok
                break
            female = PRONOUN_FEMALE.get(tok.lower())
            if female is not None:
                if referent is None or cast[referent] != female:
                    errors.append(piece.strip())
                break
    return errors


def test_pronoun_checker_catches_swapped_pronouns():
    # The same check on stories with every he/she swapped must fail: the check has teeth.
    swap = {"he": "she", "she": "he", "He": "She", "She": "He", "his": "her", "him": "her", "her": "his",
            "His": "Her", "Her": "His"}
    failed = 0
    for i in range(200):
        st = tell(0, i)
        swapped = re.sub(r"\b(he|she|He|She|his|him|her|His|Her)\b", lambda m: swap[m.group(1)], st.text)
        failed += bool(_pronoun_errors(swapped, st.cast))
    assert failed >= 150


def test_pronouns_agree_with_the_character_referred_to():
    n_checked = 0
    for i in range(3000):
        st = tell(0, i)
        assert st.hero in st.cast and st.hero in st.text.split(".")[0]     # the hero is introduced first
        assert not _pronoun_errors(st.text, st.cast), (st.cast, _pronoun_errors(st.text, st.cast), st.text)
        n_checked += len(re.findall(r"\b(?:He|She)\b", st.text))
    assert n_checked > 3000          # the stories do use pronouns a lot


def test_lost_object_is_the_found_object():
    n = 0
    for i in range(600):
        st = tell(2, i)
        if st.arc != "lost":
            continue
        thing = re.search(r'Where is my ([a-z -]+)\?', st.text).group(1)
        second_half = st.text[len(st.text) // 2:]
        assert f"{thing}" in second_half, (thing, st.text)
        n += 1
    assert n >= 30


def test_speed():
    start = time.perf_counter()
    generate_stories(20_000, 11)
    assert time.perf_counter() - start < 10.0
