"""Token classes and the enrichment of a per-token statistic in each class.

Used for the bQ alignment's reading "punctuation / structure tokens align with ⟨bQ⟩, content words
anti-align" (the README of evasilverstein/symmetry-breaking-files; its ``analysis/analysis_bQ_batch.py`` lists
function words, punctuation, digits and frequency classes).

:func:`token_class` puts one token string (the trained BPE's or GPT-2's, leading space included) in one class:

* ``punctuation``: after stripping spaces, every character is Unicode punctuation or a symbol (".", ",", "!",
  "\\"", "'s" is not: it has letters);
* ``function``: the stripped, lower-cased token is one of :data:`FUNCTION_WORDS` (a fixed English list:
  articles, pronouns, prepositions, conjunctions, auxiliary and modal verbs, a few particles);
* ``digit``: the stripped token is all digits;
* ``content``: the stripped token is all letters and not a function word (whole words and word pieces);
* ``other``: everything else (white space, special tokens such as <|endoftext|>, partial UTF-8 bytes, mixed).

:func:`class_enrichment` compares, for each class, the fraction of its tokens with a positive value against
the fraction over all tokens: log2 ratio, Fisher's exact test (two-sided) and the two one-sided
hypergeometric p-values, the class's mean value against the overall mean, a permutation null (class labels
shuffled over the tokens) for both, and the reference's top-K / bottom-K log2 enrichment.
"""
from __future__ import annotations

import math
import unicodedata
from typing import Sequence

import numpy as np

CLASSES = ("punctuation", "function", "content", "digit", "other")

FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no all both either neither such
i me my mine myself you your yours yourself he him his himself she her hers herself it its itself
we us our ours ourselves they them their theirs themselves who whom whose which what where when why how
there here
of in on at to from by with without about above below under over into onto out off up down through across
after before behind between beyond during for near since than toward towards upon within along around
against among past via
and or but nor so yet if because although though while unless until whether as
is am are was were be been being do does did done have has had having
will would shall should can could may might must
not n't 's 're 've 'll 'd 'm too very just only also then
""".split())


def token_class(text: str) -> str:
    """The class of one token string (see the module docstring)."""
    s = text.strip()
    if not s or "\ufffd" in s or (s.startswith("<|") and s.endswith("|>")):
        return "other"
    if all(unicodedata.category(ch)[0] in "PS" for ch in s):
        return "punctuation"
    low = s.lower()
    if low in FUNCTION_WORDS:
        return "function"
    if s.isdigit():
        return "digit"
    if s.isalpha():
        return "content"
    return "other"


def token_classes(tok, vocab_size: int | None = None) -> list[str]:
    """The class of every token id 0..vocab_size−1 of a toolkit tokenizer (its ``token_str``)."""
    n = tok.vocab_size if vocab_size is None else vocab_size
    out = []
    for i in range(n):
        try:
            out.append(token_class(tok.token_str(i)))
        except Exception:            # an id the tokenizer cannot render (padding rows of the embedding)
            out.append("other")
    return out


def _permutation_null(labels: np.ndarray, values: np.ndarray, n_classes: int, n_perm: int, seed: int):
    """(n_perm, n_classes) positive counts and value sums per class with the labels shuffled (seeded)."""
    rng = np.random.default_rng([seed, 3307])
    pos = values > 0
    counts, sums = np.zeros((n_perm, n_classes)), np.zeros((n_perm, n_classes))
    for b in range(n_perm):
        lp = rng.permutation(labels)
        counts[b] = np.bincount(lp[pos], minlength=n_classes)
        sums[b] = np.bincount(lp, weights=values, minlength=n_classes)
    return counts, sums


def class_enrichment(values: Sequence[float], classes: Sequence[str], n_perm: int = 1000, seed: int = 0,
                     top_k: int | None = None) -> dict:
    """Enrichment of positive ``values`` (and of their mean) in each class of ``classes`` (one per value).

    Per class c with n_c tokens of which k_c have value > 0, against N tokens of which K are positive:
    ``frac_positive`` = k_c/n_c, ``log2_enrichment`` = log2((k_c/n_c)/(K/N)) (None when k_c = 0), Fisher's exact
    two-sided p and odds ratio of the 2×2 table (in c / not) × (positive / not), ``p_greater`` =
    P(X ≥ k_c) and ``p_less`` = P(X ≤ k_c) for X hypergeometric(N, K, n_c); ``mean_minus_overall`` = mean of
    the class's values − the overall mean; the permutation null (labels shuffled ``n_perm`` times, seeded):
    its mean and sd of frac_positive − K/N and of mean_minus_overall, and two-sided permutation p-values
    (1 + #|null| ≥ |observed|)/(1 + n_perm). ``top_k`` (default N // 10): log2 of the class's share among the
    K highest (lowest) values over its base rate n_c/N, None for a zero count."""
    from scipy.stats import fisher_exact, hypergeom
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size != len(classes) or v.size == 0:
        raise ValueError("values and classes must be two lists of the same positive length")
    names = sorted(set(classes), key=lambda c: (CLASSES.index(c) if c in CLASSES else len(CLASSES), c))
    lab = np.asarray([names.index(c) for c in classes])
    N, pos = v.size, v > 0
    K = int(pos.sum())
    base = K / N
    mean_all = float(v.mean())
    k_top = max(1, N // 10) if top_k is None else int(top_k)
    order = np.argsort(-v, kind="stable")
    top, bottom = lab[order[:k_top]], lab[order[::-1][:k_top]]
    counts, sums = _permutation_null(lab, v, len(names), n_perm, seed)
    out = {}
    for ci, c in enumerate(names):
        m = lab == ci
        n_c, k_c = int(m.sum()), int((pos & m).sum())
        frac = k_c / n_c
        odds, p_fisher = fisher_exact([[k_c, n_c - k_c], [K - k_c, (N - n_c) - (K - k_c)]])
        diff_mean = float(v[m].mean() - mean_all)
        entry = {"n": n_c, "positive": k_c, "frac_positive": frac, "overall_frac_positive": base,
                 "log2_enrichment": math.log2(frac / base) if k_c and base else None,
                 "odds_ratio": float(odds) if math.isfinite(odds) else None, "p_fisher": float(p_fisher),
                 "p_greater": float(hypergeom.sf(k_c - 1, N, K, n_c)), "p_less": float(hypergeom.cdf(k_c, N, K, n_c)),
                 "mean": float(v[m].mean()), "mean_minus_overall": diff_mean}
        if n_perm:
            null_frac = counts[:, ci] / n_c - base
            null_mean = sums[:, ci] / n_c - mean_all
            obs_frac = frac - base
            entry["null"] = {"n_perm": n_perm, "frac_diff_mean": float(null_frac.mean()),
                             "frac_diff_sd": float(null_frac.std()), "mean_diff_mean": float(null_mean.mean()),
                             "mean_diff_sd": float(null_mean.std()),
                             "p_perm_frac": float((1 + np.sum(np.abs(null_frac) >= abs(obs_frac) - 1e-12)) / (1 + n_perm)),
                             "p_perm_mean": float((1 + np.sum(np.abs(null_mean) >= abs(diff_mean) - 1e-12)) / (1 + n_perm))}
        for side, sel in (("top", top), ("bottom", bottom)):
            cnt = int((sel == ci).sum())
            entry[f"{side}_k_count"] = cnt
            entry[f"{side}_k_log2_enrichment"] = math.log2((cnt / k_top) / (n_c / N)) if cnt else None
        out[c] = entry
    return {"classes": out, "n": N, "positive": K, "top_k": k_top,
            "definitions": {"positive": "value > 0", "p_fisher": "Fisher exact test, two-sided",
                            "p_greater/p_less": "hypergeometric tail of the class's positive count",
                            "null": "class labels permuted over the tokens"}}


def structure_content_direction(enrichment: dict) -> dict:
    """The claimed direction "structure tokens align, content tokens anti-align" read from one
    :func:`class_enrichment` result: punctuation's positive fraction above the overall one and content's below,
    with the one-sided hypergeometric p-values of each part (None when a class is absent)."""
    c = enrichment["classes"]
    p, w = c.get("punctuation"), c.get("content")
    if p is None or w is None:
        return {"holds": None, "reason": "no punctuation or no content tokens"}
    holds = p["frac_positive"] > p["overall_frac_positive"] and w["frac_positive"] < w["overall_frac_positive"]
    return {"holds": bool(holds), "punctuation_frac_diff": p["frac_positive"] - p["overall_frac_positive"],
            "content_frac_diff": w["frac_positive"] - w["overall_frac_positive"],
            "p_punctuation_greater": p["p_greater"], "p_content_less": w["p_less"],
            "significant": bool(holds and p["p_greater"] < 0.05 and w["p_less"] < 0.05)}
