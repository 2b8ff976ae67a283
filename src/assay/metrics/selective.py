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

import numpy as np
import torch

from assay.errors import InputError
from assay.stats import percentile_interval, row_bootstrap_weights


def _arrays(confidence, correct):
    c = confidence.detach().cpu().double().numpy() if isinstance(confidence, torch.Tensor) else np.asarray(confidence, np.float64)
    k = correct.detach().cpu().numpy() if isinstance(correct, torch.Tensor) else np.asarray(correct)
    c, k = c.reshape(-1), k.reshape(-1).astype(np.float64)
    if len(c) != len(k) or len(c) == 0:
        raise InputError(f"{len(c)} confidences for {len(k)} correctness flags; give one of each per row (n > 0)")
    return c, k


class SelectiveTerms:
    """Sorted rows and weighted risk-coverage statistics."""

    def __init__(self, confidence, correct):
        c, k = _arrays(confidence, correct)
        order = np.argsort(-c, kind="stable")
        self.n = len(c)
        self.err = 1.0 - k[order]
        self.oracle_err = np.sort(self.err)  # correct (0) first
        self.order = order

    @staticmethod
    def _curve(w, err):
        cw = np.cumsum(w, axis=1)
        risk = np.cumsum(w * err, axis=1) / np.maximum(cw, 1e-300)
        return cw / cw[:, -1:], risk

    def evaluate(self, w_rows: np.ndarray, target_accuracy: float) -> dict[str, np.ndarray]:
        w = w_rows[:, self.order]
        cov, risk = self._curve(w, self.err)
        total = w.sum(1)
        aurc = (w * risk).sum(1) / total
        # oracle: errors last; rows with equal error are interchangeable, so re-sort weights alike
        w_or = w[:, np.argsort(self.err, kind="stable")]
        _, risk_or = self._curve(w_or, self.oracle_err)
        aurc_or = (w_or * risk_or).sum(1) / total
        ok = (1.0 - risk) >= target_accuracy - 1e-12
        # the largest coverage whose selective accuracy meets the target (0 if none)
        last = np.where(ok.any(1), ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
        cov_at = np.where(last >= 0, np.take_along_axis(cov, np.maximum(last, 0)[:, None], 1)[:, 0], 0.0)
        return {"aurc": aurc, "excess_aurc": aurc - aurc_or, "coverage_at_accuracy": cov_at,
                "risk": 1.0 - (w * (1 - self.err)).sum(1) / total}

    def point(self, target_accuracy: float = 0.99) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.evaluate(np.ones((1, self.n)), target_accuracy).items()}

    def bootstrap(self, target_accuracy=0.99, n_boot=1000, level=0.95, seed=0):
        rng = np.random.default_rng(seed)
        chunks = [self.evaluate(w, target_accuracy) for w in row_bootstrap_weights(self.n, n_boot, rng, max_cells=5_000_000)]
        return {k: tuple(float(v) for v in percentile_interval(np.concatenate([c[k] for c in chunks]), level)) for k in chunks[0]}

    def curves(self, points: int = 100) -> dict[str, list]:
        """Risk-coverage curve of the model and of the oracle, thinned to about ``points`` points."""
        cov, risk = self._curve(np.ones((1, self.n)), self.err)
        _, risk_or = self._curve(np.ones((1, self.n)), self.oracle_err)
        idx = np.unique(np.linspace(0, self.n - 1, min(points, self.n)).astype(int))
        return {"coverage": cov[0, idx].tolist(), "risk": risk[0, idx].tolist(), "oracle_risk": risk_or[0, idx].tolist()}


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
