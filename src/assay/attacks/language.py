"""What a language model leaks: membership scores, canary exposure and training-data extraction.

Algorithms on a :class:`~assay.targets.llm.LanguageModelTarget`, usable without the audit layer.

Membership scores (higher = more likely a training text):

- ``loss``: the mean token log-probability (Yeom et al. 2018);
- ``zlib``: minus the ratio of the mean negative log-likelihood to the text's zlib-compressed
  length, so that texts that are "surprisingly easy" for their complexity rank high (Carlini et al.
  2021);
- ``min_k``: Min-K% Prob, the mean of the lowest k% token log-probabilities (Shi et al. 2024);
- ``min_k_plus``: Min-K%++, the same on ``(log p(x_t) - mu_t) / sigma_t`` where ``mu_t`` and
  ``sigma_t`` are the mean and standard deviation of ``log p(z)`` under the model's next-token
  distribution at position ``t`` (Zhang et al. 2024);
- ``reference``: the target's mean log-probability minus a reference model's (the calibration
  LiRA and RMIA apply to classifiers; Carlini et al. 2021 use it to rank extractions).

Exposure (Carlini et al., "The Secret Sharer", 2019): ``log2 |R| - log2 rank(s)``, the rank of the
secret's log-perplexity among all candidates ``R`` of the canary's format; estimated from sampled
candidates when ``R`` is too large to enumerate, with the paper's skew-normal extrapolation when no
sampled candidate beats the secret.
"""

from __future__ import annotations

import difflib
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from assay.data.language import Canary
from assay.errors import InputError
from assay.stats import clopper_pearson
from assay.targets.llm import LanguageModelTarget, TokenLogprobs

MEMBERSHIP_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus", "reference")
LN2 = math.log(2.0)


# --------------------------------------------------------------- membership
def zlib_bytes(text: str) -> int:
    """Length in bytes of the text compressed by zlib (level 9): its "zlib entropy"."""
    return len(zlib.compress(text.encode("utf-8"), 9))


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """The mean of the lowest ``ceil(k * n)`` values (at least one)."""
    if values.size == 0:
        return float("nan")
    m = max(1, math.ceil(k * values.size))
    return float(np.sort(values)[:m].mean())


def min_k_score(lp: TokenLogprobs, k: float = 0.2) -> float:
    return lowest_k_mean(lp.logprobs, k)


def min_k_plus_score(lp: TokenLogprobs, k: float = 0.2) -> float:
    if lp.mean is None or lp.std is None:
        raise InputError("Min-K%++ needs the next-token distribution's mean and std (a local model)")
    z = (lp.logprobs - lp.mean) / np.maximum(lp.std, 1e-6)
    return lowest_k_mean(z, k)


def membership_scores(
    target: LanguageModelTarget,
    texts: Sequence[str],
    *,
    attacks: Sequence[str] = ("loss", "zlib", "min_k", "min_k_plus"),
    k: float = 0.2,
    reference: LanguageModelTarget | None = None,
) -> dict[str, np.ndarray]:
    """One score per text and attack (higher = member). Each text is scored from the start of the
    sequence (the model's BOS token), as a whole."""
    attacks = list(dict.fromkeys(a.strip().lower().replace("-", "_").replace("%", "") for a in attacks))
    unknown = [a for a in attacks if a not in MEMBERSHIP_ATTACKS]
    if unknown:
        raise InputError(f"unknown membership attack(s) {unknown}; choose from {', '.join(MEMBERSHIP_ATTACKS)}")
    if not 0 < k <= 1:
        raise InputError(f"k={k} must be a fraction in (0, 1], e.g. 0.2 for Min-20%")
    if "reference" in attacks and reference is None:
        raise InputError("the reference attack needs a reference model (e.g. the base model before fine-tuning)")
    texts = list(texts)
    scored = target.logprobs([""] * len(texts), texts, stats="min_k_plus" in attacks)
    empty = [i for i, s in enumerate(scored) if s.logprobs.size == 0]
    if empty:
        raise InputError(f"text {empty[0]} has no tokens; drop empty texts")
    loss = np.array([s.logprobs.mean() for s in scored])
    out: dict[str, np.ndarray] = {}
    for a in attacks:
        if a == "loss":
            out[a] = loss
        elif a == "zlib":
            out[a] = np.array([l / zlib_bytes(t) for l, t in zip(loss, texts)])  # -NLL / zlib
        elif a == "min_k":
            out[a] = np.array([min_k_score(s, k) for s in scored])
        elif a == "min_k_plus":
            out[a] = np.array([min_k_plus_score(s, k) for s in scored])
        elif a == "reference":
            ref = reference.logprobs([""] * len(texts), texts)
            out[a] = loss - np.array([s.logprobs.mean() for s in ref])
    return out


# ----------------------------------------------------------------- exposure
@dataclass
class Exposure:
    """A canary's exposure in bits, with an interval, and how it was obtained."""

    canary: Canary
    exposure: float
    low: float
    high: float
    max_exposure: float  # log2 |R|: the secret is the single most likely candidate
    method: str  # "exact", "sampled" or "sampled+skewnorm"
    candidates: int  # candidates scored (besides the secret)
    better: int  # of those, how many are at least as likely as the secret
    secret_log_perplexity: float  # bits
    candidate_log_perplexities: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


def canary_exposure(
    target: LanguageModelTarget,
    canary: Canary,
    *,
    samples: int = 1000,
    max_enumerate: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> Exposure:
    """Exposure of ``canary``'s secret (see the module doc).

    When the candidate space has at most ``max_enumerate`` members every candidate is scored and the
    rank is exact. Otherwise ``samples`` candidates are drawn uniformly (seeded); the fraction ``p``
    of candidates at least as likely as the secret is estimated by the sampled fraction, with a
    Clopper-Pearson interval, and exposure ``= -log2 p``. When no sampled candidate beats the secret,
    the point estimate extrapolates from a skew-normal fit to the sampled log-perplexities (the
    paper's method), kept inside the interval.
    """
    fmt = canary.space
    size = fmt.size
    log2_size = fmt.log2_size
    rng = np.random.default_rng(seed)
    if size <= max_enumerate:
        cands = [c for c in fmt.enumerate() if c != canary.secret]
        method = "exact"
    else:
        if samples < 10:
            raise InputError(f"samples={samples} is too few to estimate a rank; use at least 100")
        cands = fmt.sample(samples, rng)
        method = "sampled"
    # BPE tokenizers attach a space to the word after it: score "... is" + " 493817", as trained
    head, gap = _split_trailing_space(canary.prefix)
    scored = target.logprobs([head] * (len(cands) + 1), [gap + c for c in [canary.secret] + cands])
    bits = np.array([-s.total / LN2 for s in scored])  # log-perplexity in bits
    secret_bits, cand_bits = float(bits[0]), bits[1:]
    better = int((cand_bits <= secret_bits).sum())
    if method == "exact":
        rank = better + 1
        e = log2_size - math.log2(rank)
        return Exposure(canary, e, e, e, log2_size, method, len(cands), better, secret_bits, cand_bits)
    m = len(cands)
    iv = clopper_pearson(better, m, level)
    floor = 1.0 / size  # the secret itself is one of the candidates
    low = -math.log2(max(iv.high, floor))
    high = -math.log2(max(iv.low, floor))
    if better > 0:
        p = max(better / m, floor)
    else:
        p = _skewnorm_cdf(cand_bits, secret_bits)
        method = "sampled+skewnorm"
        p = min(max(p, floor), iv.high)
    e = -math.log2(p)
    return Exposure(canary, e, low, high, log2_size, method, m, better, secret_bits, cand_bits)


def _split_trailing_space(prefix: str) -> tuple[str, str]:
    head = prefix.rstrip()
    return (head, prefix[len(head):]) if head else (prefix, "")


def _skewnorm_cdf(values: np.ndarray, x: float) -> float:
    """P(V <= x) under a skew-normal fitted to ``values`` (Secret Sharer, section 4.3)."""
    from scipy import stats

    if np.ptp(values) == 0:
        return 0.0 if x < values[0] else 1.0
    a, loc, scale = stats.skewnorm.fit(values)
    return float(stats.skewnorm.cdf(x, a, loc, scale))


def greedy_extracts(target: LanguageModelTarget, canaries: Sequence[Canary], *, slack_tokens: int = 4,
                    chat: bool = False) -> list[str]:
    """The greedy continuation of each canary's prefix, as long as its secret plus some slack."""
    lengths = _token_lengths(target, [c.secret for c in canaries])
    outs = []
    for n in sorted(set(lengths)):  # one batch per length keeps max_new_tokens tight
        idx = [i for i, m in enumerate(lengths) if m == n]
        gens = target.generate([_split_trailing_space(canaries[i].prefix)[0] for i in idx],
                               max_new_tokens=n + slack_tokens, chat=chat)
        outs += list(zip(idx, (g.text for g in gens)))
    return [t for _, t in sorted(outs)]


def extracted(canary: Canary, text: str) -> bool:
    """Whether ``text``, generated after the prefix without its trailing white space, starts with
    that white space (if any) and then the secret."""
    gap = _split_trailing_space(canary.prefix)[1]
    return text.startswith(gap + canary.secret) or (not gap and text.lstrip().startswith(canary.secret))


def _token_lengths(target, texts: Sequence[str]) -> list[int]:
    count = getattr(target, "count_tokens", None)
    if callable(count):
        return list(count(texts))
    return [max(1, len(t)) for t in texts]  # a remote model: at most one token per character


# --------------------------------------------------------------- extraction
@dataclass
class SplitDocument:
    prefix: str
    suffix: str
    index: int


def split_documents(target, documents: Sequence[str], prefix_tokens: int, suffix_tokens: int) -> list[SplitDocument]:
    """Each document's first ``prefix_tokens`` tokens and the next ``suffix_tokens`` (tokens of the
    target's tokenizer where it has one, else white-space separated words); documents too short
    for both are left out."""
    out = []
    tok = getattr(target, "tokenizer", None)
    for i, doc in enumerate(documents):
        if tok is not None:
            ids = tok(doc, add_special_tokens=False)["input_ids"]
            if len(ids) < prefix_tokens + suffix_tokens:
                continue
            prefix = tok.decode(ids[:prefix_tokens])
            suffix = tok.decode(ids[prefix_tokens:prefix_tokens + suffix_tokens])
            # decoding can merge at the boundary; keep the split exactly on the document's text
            if not doc.startswith(prefix + suffix):
                full = tok.decode(ids[: prefix_tokens + suffix_tokens])
                if not doc.startswith(full) or not full.startswith(prefix):
                    continue
                suffix = full[len(prefix):]
        else:
            words = doc.split(" ")
            if len(words) < prefix_tokens + suffix_tokens:
                continue
            prefix = " ".join(words[:prefix_tokens]) + " "
            suffix = " ".join(words[prefix_tokens:prefix_tokens + suffix_tokens])
        out.append(SplitDocument(prefix, suffix, i))
    return out


def similarity(generated: str, reference: str) -> float:
    """1 - normalised Levenshtein distance between ``generated`` (cut to the reference's length) and
    ``reference``; 1.0 is a verbatim reproduction."""
    a, b = generated[: len(reference)], reference
    if not b:
        return 1.0 if not a else 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def leaked_segments(generated: str, reference: str, min_run: int = 3) -> list[dict[str, object]]:
    """The generated text as segments, ``mark`` on the runs (of ``min_run`` characters or more) that
    reproduce the reference: what the report highlights."""
    sm = difflib.SequenceMatcher(None, generated, reference, autojunk=False)
    segs: list[dict[str, object]] = []
    pos = 0
    for blk in sm.get_matching_blocks():
        if blk.size < min_run:
            continue
        if blk.a > pos:
            segs.append({"text": generated[pos:blk.a], "mark": False})
        segs.append({"text": generated[blk.a:blk.a + blk.size], "mark": True})
        pos = blk.a + blk.size
    if pos < len(generated):
        segs.append({"text": generated[pos:], "mark": False})
    return segs


def longest_verbatim(text: str, documents: Sequence[str]) -> int:
    """Length in characters of the longest substring of ``text`` that occurs in some document."""
    best = 0
    for d in documents:
        m = difflib.SequenceMatcher(None, text, d, autojunk=False).find_longest_match(0, len(text), 0, len(d))
        best = max(best, m.size)
    return best
