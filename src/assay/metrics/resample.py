"""Vectorised bootstrap machinery and multiple-testing corrections shared by the audit metrics.

A row bootstrap draws ``n`` rows with replacement; the number of times each row is drawn is a
``Multinomial(n, 1/n, ..., 1/n)`` vector. Every statistic here is a function of per-row weights
(how often each row was drawn), so a whole batch of resamples is one ``(B, n)`` weight matrix and one
matrix expression, never a Python loop per resample. Weight matrices are built in chunks of
resamples so that memory stays bounded (``max_cells`` entries per chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from assay.stats import Interval


def row_bootstrap_weights(
    n: int, n_boot: int, rng: np.random.Generator, *, max_cells: int = 20_000_000
) -> Iterator[np.ndarray]:
    """Yield ``(b, n)`` float arrays of row-bootstrap counts, ``n_boot`` rows in total.

    Each row of a yielded array is one resample: entry ``i`` says how many times row ``i`` was drawn
    (a multinomial over the rows, i.e. exactly the classic bootstrap).
    """
    chunk = max(1, min(n_boot, max_cells // max(n, 1)))
    done = 0
    uniform = np.full(n, 1.0 / n)
    while done < n_boot:
        b = min(chunk, n_boot - done)
        yield rng.multinomial(n, uniform, size=b).astype(np.float64)
        done += b


def bootstrap_weighted(
    stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int = 0, **kw
) -> np.ndarray:
    """Stack ``stat(weights)`` over all resamples; ``stat`` maps ``(b, n)`` weights to ``(b, ...)``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(stat(w)) for w in row_bootstrap_weights(n, n_boot, rng, **kw)])


def percentile_interval(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval along ``axis``, ignoring NaN resamples (e.g. an empty group)."""
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low = np.nanquantile(samples, a, axis=axis)
            high = np.nanquantile(samples, 1.0 - a, axis=axis)
    return low, high


def interval_of(samples: np.ndarray, level: float = 0.95) -> Interval:
    """Scalar percentile bootstrap :class:`~assay.stats.Interval` from 1-D resampled values."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return Interval(float("nan"), float("nan"), level, "bootstrap")
    low, high = percentile_interval(samples, level)
    return Interval(float(low), float(high), level, "bootstrap")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error control), same order as ``p``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false-discovery-rate control), same order as ``p``."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def two_proportion_z(k1, n1, k2, n2) -> tuple[np.ndarray, np.ndarray]:
    """Pooled two-proportion z statistic of ``k1/n1 - k2/n2`` and its two-sided p-value (vectorised)."""
    from scipy.stats import norm

    k1, n1, k2, n2 = (np.asarray(v, dtype=float) for v in (k1, n1, k2, n2))
    with np.errstate(all="ignore"):
        pooled = (k1 + k2) / (n1 + n2)
        se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (k1 / n1 - k2 / n2) / se
    z = np.where(se > 0, z, 0.0)
    p = 2 * norm.sf(np.abs(z))
    p = np.where((n1 > 0) & (n2 > 0), p, np.nan)
    return z, p


def weighted_bin_sums(weights: np.ndarray, column: np.ndarray, values: np.ndarray, n_columns: int) -> np.ndarray:
    """``out[b, c] = sum_i weights[b, i] * values[i] * [column[i] == c]`` for every resample at once.

    ``column``/``values`` may hold several entries per row (pass ``row`` order flattened with
    ``np.repeat``): ``weights`` is then ``(B, n)`` and ``column``, ``values`` have ``n * r`` entries,
    ``r`` per row in row order.
    """
    from scipy import sparse

    n = weights.shape[1]
    r = len(column) // n
    rows = np.repeat(np.arange(n), r)
    a = sparse.csr_matrix((values, (rows, column)), shape=(n, n_columns))
    return np.asarray((a.T @ weights.T).T)
