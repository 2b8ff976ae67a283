"""Calibration: does a confidence of 0.8 mean right 80% of the time?

Every metric is computed as a weighted sum over rows so that one function gives the point estimate
(weights all one) and all bootstrap resamples at once (row-count weights, see
:mod:`assay.metrics.resample`).

- ``ece``: top-label expected calibration error, ``sum_b |sum_{i in b} (conf_i - correct_i)| / n``,
  with ``n_bins`` equal-width bins (``strategy="uniform"``) or equal-mass bins (``"quantile"``:
  bins hold the same number of rows; for the bootstrap the bins of the original sample are kept).
- ``classwise_ece``: the binary ECE of each class probability ``p_k`` against ``[y == k]``, averaged
  over classes (Kull et al. 2019).
- ``brier_score``: mean over rows of ``sum_k (p_k - [y == k])^2``.
- ``nll``: mean negative log-likelihood of the true class.
- :func:`fit_temperature`: temperature scaling (Guo et al. 2017), ``softmax(logits / T)`` with ``T``
  fitted by L-BFGS on the NLL (optimised in ``log T`` so that ``T`` stays positive).
"""

from __future__ import annotations

import numpy as np
import torch

from assay.errors import InputError
from assay.metrics.resample import percentile_interval, row_bootstrap_weights, weighted_bin_sums

_EPS = 1e-12


def _check(probs, y) -> tuple[np.ndarray, np.ndarray]:
    p = probs.detach().cpu().double().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs, dtype=np.float64)
    t = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    t = t.reshape(-1).astype(np.int64)
    if p.ndim != 2 or len(p) != len(t):
        raise InputError(f"probabilities have shape {p.shape} for {len(t)} labels; give (n, n_classes) probabilities")
    if len(t) == 0:
        raise InputError("no rows to evaluate calibration on")
    if not np.isfinite(p).all() or p.min() < -1e-6 or np.abs(p.sum(1) - 1).max() > 1e-3:
        raise InputError("scores are not probabilities (rows must be >= 0 and sum to 1); apply softmax to logits first")
    if t.min() < 0 or t.max() >= p.shape[1]:
        raise InputError(f"labels span [{t.min()}, {t.max()}] for {p.shape[1]} classes")
    return p, t


def _uniform_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip((values * n_bins).astype(np.int64), 0, n_bins - 1)


def _quantile_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    bins = np.empty(len(values), np.int64)
    bins[order] = (np.arange(len(values)) * n_bins) // len(values)
    return bins


class CalibrationTerms:
    """Per-row terms of every calibration metric, evaluated for any row weights ``(B, n)``."""

    def __init__(self, probs, y, n_bins: int = 15):
        p, t = _check(probs, y)
        self.n, self.k, self.n_bins = len(t), p.shape[1], int(n_bins)
        conf = p.max(1)
        correct = (p.argmax(1) == t).astype(np.float64)
        self.conf, self.correct = conf, correct
        self.gap = conf - correct
        self.bin_uniform = _uniform_bins(conf, n_bins)
        self.bin_quantile = _quantile_bins(conf, n_bins)
        onehot = np.zeros_like(p)
        onehot[np.arange(self.n), t] = 1.0
        # classwise: one entry per (row, class): bin of p_k within class k's block of bins
        self.cw_col = (np.arange(self.k)[None, :] * n_bins + _uniform_bins(p, n_bins)).reshape(-1)
        self.cw_val = (p - onehot).reshape(-1)
        self.brier = ((p - onehot) ** 2).sum(1)
        self.nll = -np.log(np.clip(p[np.arange(self.n), t], _EPS, 1.0))

    def evaluate(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Metric values for each row of ``w`` (``(B, n)`` row weights)."""
        total = w.sum(1)
        ece_u = np.abs(weighted_bin_sums(w, self.bin_uniform, self.gap, self.n_bins)).sum(1) / total
        ece_q = np.abs(weighted_bin_sums(w, self.bin_quantile, self.gap, self.n_bins)).sum(1) / total
        cw = np.abs(weighted_bin_sums(w, self.cw_col, self.cw_val, self.k * self.n_bins)).sum(1) / (total * self.k)
        return {
            "ece": ece_u, "adaptive_ece": ece_q, "classwise_ece": cw,
            "brier": w @ self.brier / total, "nll": w @ self.nll / total,
            "accuracy": w @ self.correct / total,
        }

    def point(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in self.evaluate(np.ones((1, self.n))).items()}

    def bootstrap(self, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
        rng = np.random.default_rng(seed)
        chunks = [self.evaluate(w) for w in row_bootstrap_weights(self.n, n_boot, rng)]
        out = {}
        for k in chunks[0]:
            lo, hi = percentile_interval(np.concatenate([c[k] for c in chunks]), level)
            out[k] = (float(lo), float(hi))
        return out


def ece(probs, y, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label expected calibration error.

    >>> ece([[0.9, 0.1], [0.9, 0.1]], [0, 1], n_bins=10)  # confident 0.9, right half the time
    0.4
    """
    if strategy not in ("uniform", "quantile"):
        raise InputError(f"strategy={strategy!r}; use 'uniform' (equal width) or 'quantile' (equal mass)")
    v = CalibrationTerms(probs, y, n_bins).point()
    return round(v["ece" if strategy == "uniform" else "adaptive_ece"], 15)


def classwise_ece(probs, y, n_bins: int = 15) -> float:
    return CalibrationTerms(probs, y, n_bins).point()["classwise_ece"]


def brier_score(probs, y) -> float:
    """Multiclass Brier score, ``mean_i sum_k (p_ik - [y_i == k])^2`` (0 best, 2 worst)."""
    return CalibrationTerms(probs, y).point()["brier"]


def nll(probs, y) -> float:
    return CalibrationTerms(probs, y).point()["nll"]


def reliability_diagram(probs, y, n_bins: int = 15) -> dict[str, list]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (empty bins dropped)."""
    t = CalibrationTerms(probs, y, n_bins)
    count = np.bincount(t.bin_uniform, minlength=n_bins)
    conf = np.bincount(t.bin_uniform, weights=t.conf, minlength=n_bins)
    acc = np.bincount(t.bin_uniform, weights=t.correct, minlength=n_bins)
    keep = count > 0
    return {
        "confidence": (conf[keep] / count[keep]).tolist(),
        "accuracy": (acc[keep] / count[keep]).tolist(),
        "count": count[keep].astype(int).tolist(),
        "bin_centre": ((np.arange(n_bins)[keep] + 0.5) / n_bins).tolist(),
    }


def fit_temperature(logits, y, *, max_iter: int = 100) -> float:
    """Temperature ``T > 0`` minimising the NLL of ``softmax(logits / T)`` (L-BFGS on ``log T``).

    >>> z = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]); y = torch.tensor([0, 1, 0, 1])
    >>> fit_temperature(z, y) > 1.0  # overconfident logits are softened
    True
    """
    z = torch.as_tensor(logits).detach().double()
    t = torch.as_tensor(y).long().reshape(-1)
    if z.ndim != 2 or len(z) != len(t):
        raise InputError(f"logits have shape {tuple(z.shape)} for {len(t)} labels; give (n, n_classes) logits")
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), t)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())
