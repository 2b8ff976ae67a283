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

from assay.errors import InputError
# the split-half bound and the rate formula are shared with the DP-auditing module
from assay.attacks.privacy_audit import _cp_upper, epsilon_from_rates
from assay.attacks.privacy_audit import epsilon_lower_bound as _split_half_bound
from assay.stats import clopper_pearson


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
        b = _split_half_bound(s, m, delta=delta, level=level, seed=seed)
        return EpsilonBound(b.epsilon, b.threshold, b.tpr, b.fpr, delta, level, "split")
    r = roc(s, m)
    each = 1 - (1 - level) / 2  # two rates, Bonferroni
    e = epsilon_from_rates(_cp_upper(r.fp, r.n_nonmembers, each), _cp_upper(r.n_members - r.tp, r.n_members, each), delta)
    i = int(np.argmax(e))
    return EpsilonBound(float(e[i]), float(r.thresholds[i]), float(r.tpr[i]), float(r.fpr[i]), delta, level, "best")


def exposure(scores, is_member) -> np.ndarray:
    """Per-record risk: the FPR an attacker accepts to flag this record, i.e. the fraction of
    non-members scoring at least as high (low = exposed: the record stands out from every
    non-member). Computed for every record, members and non-members alike."""
    s, m = _prepare(scores, is_member)
    neg = np.sort(s[~m])
    return (neg.size - np.searchsorted(neg, s, side="left")) / neg.size
