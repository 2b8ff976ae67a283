"""Selective prediction: if the model may abstain on its least confident inputs, how low does the
risk (error rate) go at each coverage?

Rows are sorted by confidence, most confident first; at coverage ``k/n`` the model answers the top
``k`` rows and the selective risk is their error rate. ``AURC`` is the mean of the risk over the
``n`` coverage levels (Geifman et al. 2019); the oracle orders every correct row before every error,
and ``excess AURC = AURC - oracle AURC`` isolates the quality of the confidence ranking from the
error rate. All statistics take row weights, so bootstrap resamples are computed at once; a row
drawn ``w`` times counts as one block of weight ``w`` at its rank (the within-block risk steps are
approximated by the block's end point).
"""

from __future__ import annotations

from assay.stats import SelectiveTerms  # the weighted statistics (comparisons evaluate them too)

__all__ = ["SelectiveTerms", "aurc", "coverage_at_accuracy", "excess_aurc"]


def aurc(confidence, correct) -> float:
    """Area under the risk-coverage curve (lower is better).

    >>> round(aurc([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 0]), 6)  # mean of risks 0, 0, 1/3, 1/2
    0.208333
    """
    return SelectiveTerms(confidence, correct).point()["aurc"]


def excess_aurc(confidence, correct) -> float:
    """AURC minus the AURC of the oracle ranking (0 = perfect confidence ranking)."""
    return SelectiveTerms(confidence, correct).point()["excess_aurc"]


def coverage_at_accuracy(confidence, correct, target: float = 0.99) -> float:
    """Largest fraction of rows the model can answer while keeping accuracy >= ``target``.

    >>> coverage_at_accuracy([0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1], target=0.99)
    0.5
    """
    return SelectiveTerms(confidence, correct).point(target)["coverage_at_accuracy"]
