"""Plain-text helpers shared by the text probes and attacks: words, simple features, shifts.

A *word* is a run of letters, digits and underscores, with inner apostrophes (``don't``); everything
between words (spaces, punctuation) is kept as it is when a text is edited, so an edited text differs
from the original only where a word was changed.
"""

from __future__ import annotations

import re

import numpy as np

from assay.errors import InputError

WORD_RE = re.compile(r"\w+(?:'\w+)*")
SHIFTS = ("permute", "noise", "uniform")


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of each word of ``text``."""
    return [m.span() for m in WORD_RE.finditer(text)]


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def replace_span(text: str, span: tuple[int, int], new: str) -> str:
    return text[: span[0]] + new + text[span[1] :]


def text_features(texts) -> dict[str, np.ndarray]:
    """Features of the input alone to slice text data on (never the label):

    ``words``           number of words (binned into quantiles by the slice search)
    ``chars_per_word``  mean word length (long, rare or compound words; code; URLs)
    ``non_ascii``       "yes" when the text has a non-ASCII character (other scripts, emoji, accents)
    """
    counts = np.array([len(words(t)) for t in texts], dtype=np.int64)
    chars = np.array([sum(len(w) for w in words(t)) for t in texts], dtype=np.float64)
    return {
        "words": counts,
        "chars_per_word": np.round(chars / np.maximum(counts, 1), 1),
        "non_ascii": np.array(["yes" if any(ord(c) > 127 for c in t) else "no" for t in texts], dtype=object),
    }


def shifted_texts(texts, kind: str = "permute", *, seed: int = 0) -> np.ndarray:
    """A distribution-shifted copy of ``texts`` to serve as an OOD set for a text model.

    ``permute``  each text's words in a random order (same words, no syntax)
    ``noise``    every letter replaced, with probability 0.3, by a random lowercase letter
    ``uniform``  random-word text: as many words as the original, each drawn uniformly from the
                 vocabulary of all the texts (word salad from the right vocabulary)
    """
    rng = np.random.default_rng(seed)
    if kind == "permute":
        out = []
        for t in texts:
            w = words(t)
            out.append(" ".join(w[i] for i in rng.permutation(len(w))) if w else t)
        return np.array(out, dtype=object)
    if kind == "noise":
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        out = []
        for t in texts:
            chars = np.array(list(t), dtype=object)
            alpha = np.array([c.isalpha() for c in chars], dtype=bool)
            hit = alpha & (rng.random(len(chars)) < 0.3)
            chars[hit] = rng.choice(letters, int(hit.sum()))
            out.append("".join(chars))
        return np.array(out, dtype=object)
    if kind == "uniform":
        per_text = [words(t) for t in texts]
        vocab = sorted({w.lower() for ws in per_text for w in ws})
        if not vocab:
            raise InputError("the texts have no words to draw random-word text from; give an OOD file (--ood)")
        vocab_a = np.array(vocab, dtype=object)
        return np.array([" ".join(rng.choice(vocab_a, max(len(ws), 1))) for ws in per_text], dtype=object)
    raise InputError(f"shift={kind!r}; use {', '.join(SHIFTS)}")
