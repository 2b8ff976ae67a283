"""Calibration: does a confidence of 0.8 mean right 80% of the time?

Every metric is computed as a weighted sum over rows so that one function gives the point estimate
(weights all one) and all bootstrap resamples at once (row-count weights, see
:mod:`assay.stats`).

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
from assay.stats import percentile_interval, row_bootstrap_weights, weighted_bin_sums

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


BINNED = ("ece", "adaptive_ece", "classwise_ece")  # the statistics biased upward under resampling


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
        """Percentile intervals; the binned ECEs' intervals are shifted by the bootstrap's own bias.

        A binned ECE sums absolute values of noisy bin gaps, so resampling inflates it: with few rows
        per bin the whole bootstrap distribution can lie above the estimate. Its interval is therefore
        moved down by the bootstrap bias (mean of the resamples minus the estimate), which keeps its
        width and makes it hold the estimate: ``[q_lo - b, q_hi - b]``, floored at 0."""
        rng = np.random.default_rng(seed)
        chunks = [self.evaluate(w) for w in row_bootstrap_weights(self.n, n_boot, rng)]
        point = self.point()
        out = {}
        for k in chunks[0]:
            samples = np.concatenate([c[k] for c in chunks])
            lo, hi = percentile_interval(samples, level)
            if k in BINNED:
                bias = float(np.nanmean(samples)) - point[k]
                lo, hi = max(0.0, lo - bias), max(0.0, hi - bias)
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


T_RANGE = (0.05, 20.0)  # temperatures outside this range say "degenerate", not "calibrate by this much"


def fit_temperature(logits, y) -> float:
    """Temperature ``T`` in :data:`T_RANGE` minimising the NLL of ``softmax(logits / T)``.

    On data the model classifies entirely correctly the NLL falls forever as ``T -> 0``; the
    fit then stops at the range's low end (callers treat that as "not identifiable").

    >>> z = torch.tensor([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [0.0, 4.0]]); y = torch.tensor([0, 1, 0, 1])
    >>> fit_temperature(z, y) > 1.0  # overconfident logits are softened
    True
    """
    z = torch.as_tensor(logits).detach().double()
    t = torch.as_tensor(y).long().reshape(-1)
    if z.ndim != 2 or len(z) != len(t):
        raise InputError(f"logits have shape {tuple(z.shape)} for {len(t)} labels; give (n, n_classes) logits")
    return float(fit_temperatures(z, t, np.ones((1, len(t))))[0])


def fit_temperatures(logits, y, weights: np.ndarray, iters: int = 50) -> np.ndarray:
    """Temperatures minimising the weighted NLL, one per row of ``weights`` ``(B, n)``, all at once.

    The NLL is convex in the inverse temperature ``b = 1/T``: ``f(b) = sum_i w_i (logsumexp(b z_i)
    - b z_iy)`` with ``f' = sum w (E_p[z] - z_y)`` and ``f'' = sum w Var_p[z] >= 0`` under
    ``p = softmax(b z)``, so damped Newton steps on ``b`` converge from ``b = 1`` for every
    resample together (the bootstrap of :func:`fit_temperature`)."""
    z = torch.as_tensor(logits).detach().double()
    t = torch.as_tensor(y).long().reshape(-1)
    w = torch.as_tensor(weights, dtype=torch.float64)
    z_y = z.gather(1, t[:, None]).squeeze(1)  # (n,)
    b_lo, b_hi = 1.0 / T_RANGE[1], 1.0 / T_RANGE[0]
    b = torch.ones(w.shape[0], dtype=torch.float64)
    for _ in range(iters):
        p = torch.softmax(b[:, None, None] * z[None], dim=2)  # (B, n, C)
        mean = (p * z[None]).sum(2)
        var = (p * z[None] ** 2).sum(2) - mean**2
        grad = (w * (mean - z_y[None])).sum(1)
        hess = (w * var).sum(1).clamp_min(1e-300)
        b_new = (b - grad / hess).clamp(b_lo, b_hi)  # convex: a clamped Newton step keeps descending
        if torch.allclose(b_new, b, rtol=1e-10, atol=1e-12):
            b = b_new
            break
        b = b_new
    return (1.0 / b).numpy()


def temperature_interval(logits, y, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the fitted temperature (rows resampled)."""
    n = len(torch.as_tensor(y))
    rng = np.random.default_rng(seed)
    # B x n x C doubles per Newton step: chunks of at most ~2M cells
    c = torch.as_tensor(logits).shape[1]
    temps = np.concatenate([fit_temperatures(logits, y, w)
                            for w in row_bootstrap_weights(n, n_boot, rng, max_cells=max(n, 2_000_000 // max(c, 1)))])
    low, high = percentile_interval(temps, level)
    return float(low), float(high)
