"""Confidence intervals used by every metric.

Binomial proportions (accuracy, attack success, TPR at a fixed FPR) use the exact Clopper-Pearson
interval or the Wilson score interval; anything else uses a seeded percentile bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = 0.95
    method: str = "clopper-pearson"


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """Exact two-sided interval for a binomial proportion k/n.

    >>> iv = clopper_pearson(0, 10); round(iv.high, 4)
    0.3085
    """
    if n <= 0:
        return Interval(0.0, 1.0, level, "clopper-pearson")
    a = 1.0 - level
    low = 0.0 if k == 0 else float(_st.beta.ppf(a / 2, k, n - k + 1))
    high = 1.0 if k == n else float(_st.beta.ppf(1 - a / 2, k + 1, n - k))
    return Interval(low, high, level, "clopper-pearson")


def clopper_pearson_one_sided_lower(k, n, level: float = 0.95):
    """One-sided lower confidence bound for k/n (certification, DP auditing); ``k`` (and ``n``) may
    be arrays, then the bounds are an array."""
    k_arr, n_arr = np.asarray(k), np.asarray(n)
    with np.errstate(all="ignore"):
        lo = _st.beta.ppf(1.0 - level, k_arr, np.maximum(n_arr - k_arr + 1, 1))
    out = np.where((k_arr <= 0) | (n_arr <= 0), 0.0, lo)
    return float(out) if out.ndim == 0 else out


def clopper_pearson_one_sided_upper(k, n, level: float = 0.95):
    """One-sided upper confidence bound for k/n; ``k`` (and ``n``) may be arrays."""
    k_arr, n_arr = np.asarray(k), np.asarray(n)
    with np.errstate(all="ignore"):
        hi = _st.beta.ppf(level, k_arr + 1, np.maximum(n_arr - k_arr, 1))
    out = np.where((n_arr <= 0) | (k_arr >= n_arr), 1.0, hi)
    return float(out) if out.ndim == 0 else out


def wilson(k: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval for k/n."""
    if n <= 0:
        return Interval(0.0, 1.0, level, "wilson")
    z = float(_st.norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half), level, "wilson")


def bootstrap(
    statistic,
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap of ``statistic(*resampled_arrays)``; arrays are resampled jointly by row."""
    n = len(arrays[0])
    if n == 0:
        return Interval(float("nan"), float("nan"), level, "bootstrap")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    values = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(float("nan"), float("nan"), level, "bootstrap")
    a = (1 - level) / 2
    return Interval(float(np.quantile(values, a)), float(np.quantile(values, 1 - a)), level, "bootstrap")
