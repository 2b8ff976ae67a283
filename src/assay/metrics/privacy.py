"""How strong is a membership attack? ROC, AUC, TPR at low FPR with exact intervals, advantage,
an empirical epsilon lower bound and per-record exposure.

Scores follow the convention of :mod:`assay.attacks.privacy.membership`: higher = member. A record
is predicted "member" when its score is ``>= threshold``.

Reading the numbers (Carlini et al. 2022): an attack that is right on average (AUC) may be useless
on any individual, and one with AUC close to 0.5 may still pick out a few records with certainty.
The number that matters is the TPR at a low FPR (0.1% or below): the fraction of members
identified while almost never accusing a non-member. Measuring an FPR of ``f`` needs at least
``1/f`` non-members; below that the metric is reported as *not estimable*, never as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as _st

from assay.errors import InputError
from assay.stats import clopper_pearson, clopper_pearson_one_sided_upper


def _prepare(scores, is_member) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).reshape(-1)
    m = np.asarray(is_member.detach().cpu() if isinstance(is_member, torch.Tensor) else is_member).astype(bool).reshape(-1)
    if s.shape != m.shape:
        raise InputError(f"{s.size} scores but {m.size} membership labels; give one label per score")
    if not np.isfinite(s).all():
        raise InputError("membership scores contain NaN or inf; check the attack's inputs")
    if m.all() or not m.any():
        raise InputError(
            "membership labels are all one class; the evaluation needs both members and non-members"
        )
    return s, m


@dataclass(frozen=True)
class Roc:
    """ROC points for decreasing thresholds (``fpr[0] = tpr[0] = 0`` at ``threshold = inf``)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    tp: np.ndarray  # true positives at each threshold
    fp: np.ndarray
    n_members: int
    n_nonmembers: int


def roc(scores, is_member) -> Roc:
    """Every distinct operating point of the attack (one per distinct score), like
    ``sklearn.metrics.roc_curve(is_member, scores, drop_intermediate=False)``.

    Example
    -------
    >>> r = roc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]); r.tpr.tolist(), r.fpr.tolist()
    ([0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5, 1.0])
    """
    s, m = _prepare(scores, is_member)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, m_sorted = s[order], m[order]
    # the last index of each run of equal scores: one operating point per distinct score
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.r_[0, np.cumsum(m_sorted)[distinct]]
    fp = np.r_[0, np.cumsum(~m_sorted)[distinct]]
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return Roc(fp / n_neg, tp / n_pos, thresholds, tp.astype(np.int64), fp.astype(np.int64), n_pos, n_neg)


def auc(scores, is_member) -> float:
    """Area under the ROC curve (ties count one half), equal to ``roc_auc_score``."""
    r = roc(scores, is_member)
    return float(np.trapezoid(r.tpr, r.fpr))


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at a target FPR with an exact interval.

    ``estimable`` is False when there are fewer than ``1/fpr`` non-members: no threshold has a
    measurable FPR in ``(0, fpr]`` and ``value`` is NaN. ``fpr_achieved`` is the FPR the chosen
    threshold actually has on the data (``<= fpr``).
    """

    fpr: float
    value: float
    low: float
    high: float
    threshold: float
    fpr_achieved: float
    true_positives: int
    n_members: int
    n_nonmembers: int
    estimable: bool
    note: str = ""


def tpr_at_fpr(scores, is_member, fpr: float, level: float = 0.95) -> TprAtFpr:
    """TPR at the loosest threshold whose empirical FPR is ``<= fpr``, with a Clopper-Pearson
    interval on the TPR (``true_positives`` out of ``n_members``).

    The interval covers the sampling of members for a fixed threshold; the threshold itself is
    set on the same non-members, so at very low FPR read it together with ``fpr_achieved``.
    ``fpr=0`` gives the TPR at zero false positives (threshold above every non-member).

    Parameters
    ----------
    scores : (N,) membership scores, higher = member.
    is_member : (N,) bool.
    fpr : target false-positive rate in [0, 1).
    level : confidence level of the interval.

    Example
    -------
    >>> r = tpr_at_fpr([5, 4, 3, 2, 1, 0], [1, 1, 0, 1, 0, 0], fpr=0.0); r.value, r.true_positives
    (0.6666666666666666, 2)
    """
    if not 0.0 <= fpr < 1.0:
        raise InputError(f"fpr={fpr} must be in [0, 1); e.g. 0.001 for 0.1%")
    r = roc(scores, is_member)
    allowed = math.floor(fpr * r.n_nonmembers + 1e-9)
    if fpr > 0 and allowed < 1:
        need = math.ceil(1.0 / fpr)
        return TprAtFpr(fpr, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), 0,
                        r.n_members, r.n_nonmembers, False,
                        f"not estimable: {r.n_nonmembers} non-members, need at least {need} for FPR {fpr:g}")
    ok = np.nonzero(r.fp <= allowed)[0]
    i = ok[np.argmax(r.tp[ok])]  # fp and tp are non-decreasing: the last admissible point
    tp = int(r.tp[i])
    iv = clopper_pearson(tp, r.n_members, level)
    return TprAtFpr(fpr, tp / r.n_members, iv.low, iv.high, float(r.thresholds[i]), float(r.fpr[i]), tp,
                    r.n_members, r.n_nonmembers, True)


def membership_advantage(scores, is_member) -> float:
    """``max_t (TPR(t) - FPR(t))`` (Yeom et al. 2018), in [0, 1]."""
    r = roc(scores, is_member)
    return float(np.max(r.tpr - r.fpr))


@dataclass(frozen=True)
class EpsilonBound:
    """An empirical lower bound on the differential-privacy epsilon the attack demonstrates."""

    epsilon: float
    threshold: float
    tpr: float
    fpr: float
    delta: float
    level: float
    method: str


def epsilon_lower_bound(
    scores,
    is_member,
    *,
    delta: float = 0.0,
    level: float = 0.95,
    select: str = "split",
    seed: int = 0,
) -> EpsilonBound:
    """Empirical epsilon lower bound (Jagielski et al. 2020; Nasr et al. 2021).

    Any (epsilon, delta)-DP training satisfies, for every test, ``FPR + e^eps * FNR >= 1 - delta``
    and ``FNR + e^eps * FPR >= 1 - delta``. So with upper confidence bounds on FPR and FNR at a
    threshold, ``eps >= max(log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi))``
    holds with confidence ``level`` (Clopper-Pearson, the two rates split Bonferroni-style).

    ``select="split"`` (default) chooses the threshold on a random half of the records and
    evaluates the bound on the other half, so the confidence statement survives the choice;
    ``select="best"`` maximises over all thresholds on all records (optimistic: the level no
    longer holds exactly). Caveat: records share one trained model, so their outcomes are not
    independent draws as a formal DP audit assumes; read the number as evidence of leakage, not
    as an audit certificate.

    Example
    -------
    >>> s = [1.0] * 50 + [0.0] * 50; m = [True] * 50 + [False] * 50
    >>> epsilon_lower_bound(s, m, select="best").epsilon > 2
    True
    """
    s, m = _prepare(scores, is_member)
    if select not in ("split", "best"):
        raise InputError(f"unknown threshold selection {select!r}; use split or best")
    if select == "split":
        b = split_half_epsilon_bound(s, m, delta=delta, level=level, seed=seed)
        return EpsilonBound(b.epsilon, b.threshold, b.tpr, b.fpr, delta, level, "split")
    r = roc(s, m)
    each = 1 - (1 - level) / 2  # two rates, Bonferroni
    e = epsilon_from_rates(clopper_pearson_one_sided_upper(r.fp, r.n_nonmembers, each), clopper_pearson_one_sided_upper(r.n_members - r.tp, r.n_members, each), delta)
    i = int(np.argmax(e))
    return EpsilonBound(float(e[i]), float(r.thresholds[i]), float(r.tpr[i]), float(r.fpr[i]), delta, level, "best")


def exposure(scores, is_member) -> np.ndarray:
    """Per-record risk: the FPR an attacker accepts to flag this record, i.e. the fraction of
    non-members scoring at least as high (low = exposed: the record stands out from every
    non-member). Computed for every record, members and non-members alike."""
    s, m = _prepare(scores, is_member)
    neg = np.sort(s[~m])
    return (neg.size - np.searchsorted(neg, s, side="left")) / neg.size


# ------------------------------------------------------------------------------ the bounds
# ------------------------------------------------- the DP-audit bounds (also behind epsilon_lower_bound)
def epsilon_from_rates(fpr: np.ndarray | float, fnr: np.ndarray | float, delta: float = 0.0) -> np.ndarray:
    """``max(log((1 - delta - fpr) / fnr), log((1 - delta - fnr) / fpr), 0)`` elementwise.

    With upper confidence bounds for ``fpr``/``fnr`` this is a lower confidence bound on epsilon.

    >>> round(float(epsilon_from_rates(0.01, 0.5)), 4)  # log(0.5 / 0.01) beats log(0.99 / 0.5)
    3.912
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr, 0, None)) - np.log(fnr)
        b = np.log(np.clip(1 - delta - fnr, 0, None)) - np.log(fpr)
    e = np.fmax(np.where(np.isnan(a), -np.inf, a), np.where(np.isnan(b), -np.inf, b))
    return np.maximum(e, 0.0)


def _counts(scores: np.ndarray, member: np.ndarray):
    """For every threshold ``t`` (score >= t means "member"): (thresholds, fp, fn, n_pos, n_neg)."""
    r = roc(scores, member)
    return r.thresholds, r.fp, r.n_members - r.tp, r.n_members, r.n_nonmembers


def roc_points(scores, member, max_points: int = 200) -> tuple[list[float], list[float]]:
    """(FPR, TPR) of :func:`roc`, thinned to about ``max_points`` for plotting."""
    r = roc(scores, member)
    fpr, tpr = r.fpr, r.tpr
    if fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).round().astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr.tolist(), tpr.tolist()


@dataclass
class SplitHalfBound:
    """Empirical epsilon lower bound at one threshold with the rates behind it."""

    epsilon: float
    level: float
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    tpr_high: float
    fpr_low: float
    fpr_high: float
    n_members: int  # member trials the bound was evaluated on
    n_nonmembers: int
    trials: int  # all trials (both halves)
    method: str = "clopper-pearson, threshold chosen on a held-out half"


def split_half_epsilon_bound(scores, member, *, delta: float = 0.0, level: float = 0.95, seed: int = 0) -> SplitHalfBound:
    """Lower confidence bound on epsilon from membership scores of independent trials (module doc).

    The trials are split into two stratified random halves: the threshold maximising the bound on
    the first half is applied to the second, where one-sided Clopper-Pearson bounds at
    ``1 - (1 - level) / 2`` each give FPR_hi and FNR_hi, so the result holds with probability
    ``level`` over the second half's trials.

    Example
    -------
    >>> s = np.r_[np.ones(200), np.zeros(200)]; m = s > 0.5
    >>> round(split_half_epsilon_bound(s, m).epsilon, 2)  # 100 vs 100 separated: log(0.964 / 0.0362)
    3.28
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(member, dtype=bool).reshape(-1)
    if s.size != m.size:
        raise InputError(f"{s.size} scores but {m.size} membership flags")
    if not np.isfinite(s).all():
        s = np.nan_to_num(s, nan=-np.inf, posinf=1e300, neginf=-1e300)
    if not 0 < level < 1 or not 0 <= delta < 1:
        raise InputError("confidence must lie in (0, 1) and delta in [0, 1)")
    rng = np.random.default_rng(seed)
    first = np.zeros(s.size, dtype=bool)
    for cls in (True, False):  # stratified so both halves hold members and non-members
        idx = np.flatnonzero(m == cls)
        if idx.size < 2:
            raise InputError("the audit needs at least 2 member and 2 non-member trials; add canaries or models")
        first[rng.permutation(idx)[: idx.size // 2]] = True
    each = 1 - (1 - level) / 2
    th, fp, fn, n_pos, n_neg = _counts(s[first], m[first])
    e = epsilon_from_rates(clopper_pearson_one_sided_upper(fp, n_neg, each), clopper_pearson_one_sided_upper(fn, n_pos, each), delta)
    t = float(th[int(np.argmax(e))])
    s2, m2 = s[~first], m[~first]
    guess = s2 >= t
    tp, fp2 = int((guess & m2).sum()), int((guess & ~m2).sum())
    n_pos2, n_neg2 = int(m2.sum()), int((~m2).sum())
    fpr_hi = clopper_pearson_one_sided_upper(fp2, n_neg2, each)
    fnr_hi = clopper_pearson_one_sided_upper(n_pos2 - tp, n_pos2, each)
    eps = float(epsilon_from_rates(fpr_hi, fnr_hi, delta))
    tpr_iv, fpr_iv = clopper_pearson(tp, n_pos2, level), clopper_pearson(fp2, n_neg2, level)
    return SplitHalfBound(eps, level, t, tp / n_pos2, fp2 / n_neg2, tpr_iv.low, tpr_iv.high, fpr_iv.low,
                        fpr_iv.high, n_pos2, n_neg2, int(s.size))


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """P-value of ``v`` correct guesses out of ``r`` among ``m`` randomised examples under the null
    hypothesis "the mechanism is (eps, delta)-DP" (Steinke, Nasr & Jagielski 2023, Thm 5.2)::

        P[Binom(r, q) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Binom(r, q) < v] / i,
        q = e^eps / (1 + e^eps)
    """
    if not 0 <= v <= r <= m:
        raise InputError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(_st.binom.sf(v - 1, r, q))
    if delta > 0 and v > 0:
        pmf = _st.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
        alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
        tail += 2 * m * delta * alpha
    return min(tail, 1.0)


def _one_run_eps(m: int, r: int, v: int, delta: float, beta: float) -> float:
    """Largest eps whose null hypothesis is still rejected at ``beta`` (p <= beta); 0 if none."""
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi < 64 and one_run_p_value(m, r, v, hi, delta) <= beta:
        lo, hi = hi, 2 * hi
    for _ in range(50):  # p-value grows with eps: bisect the crossing
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class OneRunBound:
    epsilon: float
    level: float
    k: int  # guesses per side
    guesses: int
    correct: int
    examples: int
    method: str = "Steinke-Nasr-Jagielski 2023, Bonferroni over the k grid"


def one_run_lower_bound(scores, member, *, delta: float = 0.0, level: float = 0.95,
                        k_fractions: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5), seed: int = 0
                        ) -> OneRunBound:
    """Epsilon lower bound from guessing the top-k as members and the bottom-k as non-members.

    ``k = fraction * m / 2`` for each fraction in ``k_fractions`` (m = number of trials, each an
    example included with probability 1/2); each k is tested at ``(1 - level) / len(k_fractions)``
    (Bonferroni), and the largest resulting epsilon is returned. Ties are broken at random (seeded).

    Example
    -------
    >>> s = np.r_[np.ones(500), np.zeros(500)]; m = s > 0.5
    >>> b = one_run_lower_bound(s, m); (b.correct == b.guesses, round(b.epsilon, 2))
    (True, 4.64)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mem = np.asarray(member, dtype=bool).reshape(-1)
    n = s.size
    if n != mem.size or n < 2:
        raise InputError("one-run bound: give as many membership flags as scores, at least 2")
    if not 0 < level < 1 or not 0 <= delta < 1:
        raise InputError("confidence must lie in (0, 1) and delta in [0, 1)")
    s = np.nan_to_num(s, nan=-np.inf)
    order = np.lexsort((np.random.default_rng(seed).random(n), -s))  # descending score, random ties
    ranked = mem[order]
    beta = (1 - level) / len(k_fractions)
    best = OneRunBound(0.0, level, 0, 0, 0, n)
    for f in k_fractions:
        k = max(1, min(n // 2, int(round(f * n / 2))))
        v = int(ranked[:k].sum() + (~ranked[n - k :]).sum())
        eps = _one_run_eps(n, 2 * k, v, delta, beta)
        if eps > best.epsilon or best.k == 0:
            best = OneRunBound(eps, level, k, 2 * k, v, n)
    return best
