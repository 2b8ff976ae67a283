"""Black-box attacks on text classifiers by character and word edits, under a hard query budget.

:func:`greedy_text_attack` is a DeepWordBug-style greedy search (Gao et al., 2018):

1. **Rank words** by how much the true class's probability drops when the word is removed
   (leave-one-out: one query per candidate word).
2. **Edit the most important words first**, one word per step: score a few edited copies of the
   current text in one batch and keep the copy that lowers the true class's probability most (a step
   that lowers nothing changes nothing). Stop as soon as the predicted label differs from the true one.

Two edit families:

``char``  DeepWordBug's four character edits of the word: swap two neighbouring letters, substitute,
          delete or insert a letter (``candidates_per_word = 4`` is one of each; more cycle through them).
``word``  word-level bugs that leave the word readable (TextBugger's): split it with a space
          (``gre at``), swap one letter for a look-alike symbol (``g00d``: o→0, l→1, e→3, a→@, s→$ ...),
          and, where a ``synonyms`` table is given, replace it by one of its synonyms. Words are never
          deleted or swapped for arbitrary words: that changes what the text says, so a flipped label
          would not be a model error.

Constraints, as in DeepWordBug: stopwords are never edited, no word is edited twice, and the summed
Levenshtein distance of the edits (an upper bound on the text's) stays within ``max_edit_distance``
(30, DeepWordBug's). ``max_words`` caps how many words may change.

Budget: every text sent to ``scores_fn`` is one query. ``max_queries`` caps each sample, counting
the clean query; ``query_budget`` caps the call; a ``scores_fn`` that raises
:class:`~assay.errors.BudgetExceeded` (a target's hard budget) stops the attack, which returns what
it has. No batch is ever sent that would pass either cap: batches are cut to fit first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from assay.data.text import WORD_RE
from assay.errors import BudgetExceeded, InputError

EDITS = ("char", "word")
CHAR_EDITS = ("swap", "substitute", "delete", "insert")
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))

# Function words never edited (changing them rarely carries meaning, and DeepWordBug skips them too).
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves
""".split())


@dataclass
class TextAttackResult:
    """Outcome per sample: ``success`` (the label differs from ``y`` on ``texts_adv``; points already
    misclassified count as successes with no edit and are never attacked), ``queries`` (texts scored,
    the clean one included unless clean scores were given), ``words_changed`` and ``edit_distance``
    (summed Levenshtein distance of the edits), ``pred_adv`` (the label on ``texts_adv``),
    ``stopped`` (the budget ended the sample's search early)."""

    texts_adv: list[str]
    success: torch.Tensor
    queries: torch.Tensor
    words_changed: torch.Tensor
    edit_distance: torch.Tensor
    pred_adv: torch.Tensor
    clean_wrong: torch.Tensor
    stopped: torch.Tensor
    attack: str = ""
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Tensors, texts and flags for a checkpointed unit of work (see ProbeContext.unit)."""
        return {"texts_adv": list(self.texts_adv), "success": self.success, "queries": self.queries,
                "words_changed": self.words_changed, "edit_distance": self.edit_distance,
                "pred_adv": self.pred_adv, "clean_wrong": self.clean_wrong, "stopped": self.stopped,
                "attack": self.attack, "budget_exhausted": bool(self.info.get("budget_exhausted", False))}

    @property
    def success_rate(self) -> float:
        """Successes among the samples the model got right (the attack success rate)."""
        attacked = ~self.clean_wrong
        return float(self.success[attacked].float().mean()) if attacked.any() else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return 1.0 - float(self.success.float().mean()) if len(self.success) else float("nan")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between two short strings."""
    if a == b:
        return 0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


LOOKALIKES = {"o": "0", "l": "1", "i": "1", "e": "3", "a": "@", "s": "$", "t": "7", "b": "8", "g": "9", "z": "2"}


def word_bugs(word: str, n: int, rng: np.random.Generator, synonyms: dict[str, list[str]] | None = None) -> list[str]:
    """Up to ``n`` readable variants of ``word``: its synonyms from ``synonyms`` (lower-case keys) first,
    then alternately a split at a random inner position and one look-alike symbol."""
    out = [s for s in (synonyms or {}).get(word.lower(), []) if s and s != word][:n]
    spots = [i for i, c in enumerate(word) if c.lower() in LOOKALIKES]
    for k in range(2 * n):  # some draws repeat or do not apply: try a few more than needed
        if len(out) >= n:
            break
        if k % 2 == 0 and len(word) >= 2:
            i = int(rng.integers(1, len(word)))
            new = word[:i] + " " + word[i:]
        elif spots:
            i = int(spots[int(rng.integers(0, len(spots)))])
            new = word[:i] + LOOKALIKES[word[i].lower()] + word[i + 1 :]
        else:
            continue
        if new != word and new not in out:
            out.append(new)
    return out


def char_edits(word: str, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` edited copies of ``word``, cycling through swap, substitute, delete and insert at random
    positions (edits impossible on a word this short are skipped; duplicates and no-ops dropped)."""
    out: list[str] = []
    for k in range(n):
        kind = CHAR_EDITS[k % 4]
        L = len(word)
        if kind == "swap" and L >= 2:
            i = int(rng.integers(0, L - 1))
            new = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        elif kind == "substitute" and L >= 1:
            i = int(rng.integers(0, L))
            new = word[:i] + str(rng.choice(LETTERS)) + word[i + 1 :]
        elif kind == "delete" and L >= 2:
            i = int(rng.integers(0, L))
            new = word[:i] + word[i + 1 :]
        elif kind == "insert":
            i = int(rng.integers(0, L + 1))
            new = word[:i] + str(rng.choice(LETTERS)) + word[i:]
        else:
            continue
        if new != word and new not in out:
            out.append(new)
    return out


class _Text:
    """A text as alternating gaps and words, so one word can be edited or removed in place."""

    def __init__(self, text: str):
        self.gaps: list[str] = []
        self.words: list[str] = []
        pos = 0
        for m in WORD_RE.finditer(text):
            self.gaps.append(text[pos : m.start()])
            self.words.append(m.group())
            pos = m.end()
        self.tail = text[pos:]

    def render(self, i: int | None = None, new: str | None = None) -> str:
        """The text, with word ``i`` replaced by ``new`` ("" removes it and one adjoining space)."""
        parts = []
        for j, (g, w) in enumerate(zip(self.gaps, self.words)):
            if j == i:
                if new == "" and j > 0 and g.endswith(" "):
                    g = g[:-1]
                parts.append(g + new)
            else:
                parts.append(g + w)
        return "".join(parts) + self.tail


def _probs(scores: torch.Tensor, output: str) -> torch.Tensor:
    s = scores.double()
    return torch.softmax(s, dim=1) if output == "logits" else s


def greedy_text_attack(
    scores_fn: Callable[[list[str]], torch.Tensor],
    texts: Sequence[str],
    y: torch.Tensor,
    *,
    edits: str = "char",
    max_queries: int = 500,
    max_edit_distance: int = 30,
    max_words: float | int | None = None,
    candidates_per_word: int = 4,
    stopwords: frozenset[str] | set[str] | None = STOPWORDS,
    synonyms: dict[str, list[str]] | None = None,
    output: str = "logits",
    clean_scores: torch.Tensor | None = None,
    query_budget: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TextAttackResult:
    """Untargeted greedy attack on a text classifier by character (``edits="char"``) or word edits.

    Parameters
    ----------
    scores_fn : maps a list of strings to per-class scores ``(N, K)`` (e.g. ``Target.scores``);
        may raise :class:`BudgetExceeded`.
    texts, y : the texts and their true labels.
    edits : ``"char"`` (DeepWordBug's character edits) or ``"word"`` (readable word-level bugs).
    max_queries : texts scored per sample, all included (clean, ranking, search).
    max_edit_distance : cap on the summed Levenshtein distance of the edits per text (30 in DeepWordBug).
    max_words : cap on edited words per text: a count (int >= 1), a fraction of its words (float
        in (0, 1)), or None for no cap beyond the edit distance.
    candidates_per_word : edited copies scored per step (4: one of each character edit).
    stopwords : words (lower case) never edited; None edits every word.
    synonyms : word mode: a table ``{"word": ["synonym", ...]}`` (lower-case keys) of replacements
        the caller vouches for as meaning-preserving.
    output : ``"logits"`` or ``"probs"``: what ``scores_fn`` returns.
    clean_scores : the model's scores on ``texts`` if already known (saves one query per text).
    query_budget : hard cap on the texts sent to ``scores_fn`` in this call.
    seed : seeds every random choice.

    Returns
    -------
    :class:`TextAttackResult`; ``info["budget_exhausted"]`` when ``query_budget`` or the target's
    budget ended some search early (robust accuracy is then an upper bound).

    Example
    -------
    >>> res = greedy_text_attack(target.scores, ["a fine film"], torch.tensor([1]))  # doctest: +SKIP
    >>> res.texts_adv[0], bool(res.success[0])                                        # doctest: +SKIP
    """
    if edits not in EDITS:
        raise InputError(f"edits={edits!r}; use one of {', '.join(EDITS)}")
    texts = [str(t) for t in texts]
    n = len(texts)
    y = torch.as_tensor(y).long().reshape(-1)
    if len(y) != n:
        raise InputError(f"{n} texts but {len(y)} labels; give one label per text")
    if max_queries < 1:
        raise InputError(f"max_queries must be >= 1, got {max_queries}")
    if max_edit_distance < 1:
        raise InputError(f"max_edit_distance must be >= 1, got {max_edit_distance}")
    if candidates_per_word < 1:
        raise InputError(f"candidates_per_word must be >= 1, got {candidates_per_word}")
    if max_words is not None and (max_words <= 0 or (isinstance(max_words, float) and max_words > 1 and not float(max_words).is_integer())):
        raise InputError(f"max_words={max_words}; give a count >= 1, a fraction in (0, 1], or None")
    if output not in ("logits", "probs"):
        raise InputError(f"output={output!r}; use 'logits' or 'probs'")
    if query_budget is not None and query_budget < 0:
        raise InputError(f"query_budget must be >= 0, got {query_budget}")
    stop = frozenset(w.lower() for w in (stopwords or ()))
    rng = np.random.default_rng(seed)

    queries = torch.zeros(n, dtype=torch.long)
    state = {"used": 0, "exhausted": False}
    success = torch.zeros(n, dtype=torch.bool)
    stopped = torch.zeros(n, dtype=torch.bool)
    pred = torch.full((n,), -1, dtype=torch.long)
    adv = list(texts)
    words_changed = torch.zeros(n, dtype=torch.long)
    distance = torch.zeros(n, dtype=torch.long)

    def ask(requests: list[tuple[int, list[str]]]) -> dict[int, torch.Tensor]:
        """Scores for each sample's texts, cut to its allowance and the call's budget; samples that
        get fewer texts than they asked for are marked stopped."""
        room = None if query_budget is None else query_budget - state["used"]
        batch, owners = [], []
        for i, ts in requests:
            allow = min(len(ts), max_queries - int(queries[i]))
            if room is not None:
                allow = min(allow, room - len(batch))
            if allow < len(ts):
                stopped[i] = True
                if room is not None and allow < min(len(ts), max_queries - int(queries[i])):
                    state["exhausted"] = True
            if allow <= 0:
                continue
            batch += ts[:allow]
            owners += [i] * allow
        if not batch:
            return {}
        try:
            s = scores_fn(batch)
        except BudgetExceeded:
            state["exhausted"] = True
            for i, _ in requests:
                stopped[i] = True
            return {}
        state["used"] += len(batch)
        out: dict[int, list[torch.Tensor]] = {}
        p = _probs(torch.as_tensor(s), output)
        for row, i in zip(p, owners):
            queries[i] += 1
            out.setdefault(i, []).append(row)
        return {i: torch.stack(rows) for i, rows in out.items()}

    # --- clean predictions: points already misclassified are successes, never attacked
    if clean_scores is not None:
        p0 = _probs(torch.as_tensor(clean_scores), output)
        if p0.shape[0] != n:
            raise InputError(f"clean_scores has {p0.shape[0]} rows for {n} texts")
    else:
        got = ask([(i, [texts[i]]) for i in range(n)])
        if len(got) < n:  # the budget did not cover even the clean pass: nothing more can be done
            return _result(adv, success, queries, words_changed, distance, pred, stopped, state, edits, n, y, got)
        p0 = torch.cat([got[i] for i in range(n)])
    pred[:] = p0.argmax(1)
    clean_wrong = pred != y
    success |= clean_wrong
    cur_p = p0[torch.arange(n), y].clone()  # the true class's probability on the current text

    parsed = [_Text(t) for t in texts]
    editable = [[j for j, w in enumerate(tx.words) if w.lower() not in stop] for tx in parsed]
    if max_words is None:
        word_cap = [len(tx.words) for tx in parsed]
    elif isinstance(max_words, float) and max_words <= 1:
        word_cap = [max(1, math.floor(max_words * len(tx.words))) for tx in parsed]
    else:
        word_cap = [int(max_words)] * n
    syn = {str(k).lower(): [str(v) for v in vs] for k, vs in (synonyms or {}).items()}
    active = [i for i in range(n) if not success[i] and editable[i]]

    # --- 1. leave-one-out word importance, one batch for every sample
    got = ask([(i, [parsed[i].render(j, "") for j in editable[i]]) for i in active])
    order: dict[int, list[int]] = {}
    for i in active:
        ranked = editable[i]
        if i in got:
            drop = cur_p[i] - got[i][:, y[i]]
            k = len(drop)
            ranked = [editable[i][j] for j in torch.argsort(-drop, stable=True).tolist()] + editable[i][k:]
        order[i] = ranked  # a removal that flips the label is not itself an edit: it only ranks the word
    active = [i for i in active if not stopped[i]]

    # --- 2. greedy edits, most important word first; every active sample advances one word per round
    current = {i: list(parsed[i].words) for i in active}
    step = {i: 0 for i in active}
    total = len(active)
    while active:
        requests, cands = [], {}
        for i in list(active):
            tx, words_i = parsed[i], current[i]
            cand: list[tuple[int, str, int]] = []
            while step[i] < len(order[i]) and not cand:
                j = order[i][step[i]]
                step[i] += 1
                old = tx.words[j]
                if edits == "char":
                    news = char_edits(old, candidates_per_word, rng)
                else:
                    news = word_bugs(old, candidates_per_word, rng, syn)
                for new in news:
                    d = levenshtein(old, new)
                    if distance[i] + d <= max_edit_distance:
                        cand.append((j, str(new), d))
            if not cand:
                active.remove(i)
                continue
            base = _Text.__new__(_Text)
            base.gaps, base.words, base.tail = tx.gaps, words_i, tx.tail
            cands[i] = cand
            requests.append((i, [base.render(j, new) for j, new, _ in cand]))
        if not requests:
            break
        got = ask(requests)
        for i, _ in requests:
            if i not in got:
                active.remove(i)
                continue
            p = got[i]
            labels = p.argmax(1)
            pt = p[torch.arange(len(p)), y[i]]
            flipped = torch.nonzero(labels != y[i]).flatten()
            best = int(flipped[torch.argmin(pt[flipped])]) if len(flipped) else int(torch.argmin(pt))
            if len(flipped) or pt[best] < cur_p[i]:
                j, new, d = cands[i][best]
                current[i][j] = new
                words_changed[i] += 1
                distance[i] += d
                cur_p[i] = pt[best]
                pred[i] = int(labels[best])
                base = _Text.__new__(_Text)
                base.gaps, base.words, base.tail = parsed[i].gaps, current[i], parsed[i].tail
                adv[i] = base.render()
            if len(flipped):
                success[i] = True
            if success[i] or stopped[i] or words_changed[i] >= word_cap[i] or int(queries[i]) >= max_queries:
                active.remove(i)
        if progress is not None:
            progress(total - len(active), total)
    res = _result(adv, success, queries, words_changed, distance, pred, stopped, state, edits, n, y, None)
    res.clean_wrong = clean_wrong
    return res


def _result(adv, success, queries, words_changed, distance, pred, stopped, state, edits, n, y, partial):
    if partial is not None:  # the clean pass was cut short: only the answered points are known
        for i, p in partial.items():
            pred[i] = int(p.argmax(1)[0])
        success = pred.ne(y) & pred.ge(0)
    return TextAttackResult(
        texts_adv=adv, success=success, queries=queries, words_changed=words_changed, edit_distance=distance,
        pred_adv=pred, clean_wrong=success.clone() if partial is not None else torch.zeros(n, dtype=torch.bool),
        stopped=stopped, attack=f"greedy-{edits}",
        info={"budget_exhausted": state["exhausted"], "total_queries": state["used"]},
    )
