"""The statistics every metric uses, in one place.

Binomial proportions (accuracy, attack success, TPR at a fixed FPR) use the exact Clopper-Pearson
interval or the Wilson score interval; anything else uses a seeded percentile bootstrap, every one
honouring ``level``. Vectorised bootstraps (:func:`row_bootstrap_weights`): a row bootstrap draws
``n`` rows with replacement; how often each row is drawn is a ``Multinomial(n, 1/n, ..., 1/n)``
vector, so a whole batch of resamples is one ``(B, n)`` weight matrix and one matrix expression,
never a Python loop per resample (built in chunks of at most ``max_cells`` entries). Multiple
testing: Holm (family-wise) and Benjamini-Hochberg (false discovery rate). Paired binary outcomes:
the exact McNemar test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from assay.errors import InputError


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
    return interval_of(values, level)


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


def mcnemar_exact(b: int, c: int, alternative: str = "two-sided") -> float:
    """Exact McNemar test on paired binary outcomes: ``b`` pairs where only the second succeeded,
    ``c`` where only the first did; under the null each discordant pair is a fair coin.
    ``alternative="greater"`` tests that the second succeeds more often.

    >>> mcnemar_exact(5, 0, "greater")
    0.03125
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be >= 0")
    n = b + c
    if n == 0:
        return 1.0
    if alternative == "greater":
        return float(_st.binom.sf(b - 1, n, 0.5))
    if alternative != "two-sided":
        raise ValueError(f"alternative={alternative!r} must be 'two-sided' or 'greater'")
    return float(min(1.0, 2 * _st.binom.cdf(min(b, c), n, 0.5)))


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


def binomial_test(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test of ``k`` successes in ``n`` trials against rate ``p`` (1.0 when
    ``n`` is 0).

    >>> round(binomial_test(9, 10), 4)
    0.0215
    """
    if n <= 0:
        return 1.0
    return float(_st.binomtest(int(k), int(n), p).pvalue)


def paired_test(diffs: np.ndarray, method: str = "wilcoxon") -> float:
    """Two-sided p-value that paired differences are centred on zero: the Wilcoxon signed-rank test,
    or the sign test (an exact binomial test on the signs; for 0/1 outcomes this is McNemar's exact
    test). Zero differences carry no information and are dropped; with none left, 1.0."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return 1.0
    if method == "sign":
        return binomial_test(int((d > 0).sum()), int(d.size))
    if method != "wilcoxon":
        raise ValueError(f"paired test {method!r}: use 'wilcoxon' or 'sign'")
    return float(_st.wilcoxon(d).pvalue)


# ------------------------------------------------------------------ paired comparisons
def mcnemar_outcomes(baseline, candidate) -> dict[str, float]:
    """McNemar's exact test (:func:`mcnemar_exact`) of two paired binary outcome vectors (one pair per row).

    Only the discordant rows carry information: ``lost`` (baseline 1, candidate 0) and ``gained``
    (baseline 0, candidate 1). Under "no change" each discordant row is lost or gained with
    probability 1/2, so the two-sided p-value is ``2 * P(Binomial(lost + gained, 1/2) <= min)``,
    capped at 1 (the same as ``statsmodels.stats.contingency_tables.mcnemar(exact=True)``).

    >>> r = mcnemar_outcomes([1, 1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 0]); r["lost"], round(r["p"], 4)
    (6, 0.0312)
    """
    a = np.asarray(baseline).astype(bool).reshape(-1)
    b = np.asarray(candidate).astype(bool).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length: {a.size} and {b.size}")
    lost, gained = int((a & ~b).sum()), int((~a & b).sum())
    return {"lost": lost, "gained": gained, "n": int(a.size), "p": mcnemar_exact(gained, lost)}


def index_bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row-bootstrap counts drawn as ``n`` row indices per resample (``rng.integers(0, n, (B, n))``),
    the way ``scipy.stats.bootstrap`` draws them; the same distribution as
    :func:`row_bootstrap_weights`, for cross-checks against scipy on identical resamples."""
    idx = rng.integers(0, n, (n_boot, n))
    yield np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


@dataclass(frozen=True)
class PairedDelta:
    """A difference ``candidate - baseline`` with its paired bootstrap distribution summarised."""

    estimate: float
    low: float
    high: float
    se: float
    p: float
    level: float
    n_boot: int


def paired_bootstrap(delta: Callable[[np.ndarray], np.ndarray], n: int, *, n_boot: int = 2000,
                     level: float = 0.95, seed: int = 0, weights: Iterator[np.ndarray] | None = None) -> PairedDelta:
    """Paired percentile bootstrap of a difference between two models measured on the same ``n`` rows.

    ``delta(w)`` maps ``(B, n)`` row weights to the ``B`` differences ``stat_candidate(w) -
    stat_baseline(w)``: both models see the very same resampled rows, so what the rows have in common
    cancels out of the interval. The p-value of "no difference" is the two-sided bootstrap tail
    ``2 * min(P*(delta <= 0), P*(delta >= 0))`` with the ``(k + 1) / (B + 1)`` correction, which is
    below ``1 - level`` about when the percentile interval excludes 0. ``weights`` replaces the
    multinomial resamples (e.g. :func:`index_bootstrap_weights`).
    """
    point = float(np.asarray(delta(np.ones((1, n))), dtype=float).reshape(-1)[0])
    rng = np.random.default_rng(seed)
    chunks = weights if weights is not None else row_bootstrap_weights(n, n_boot, rng)
    samples = np.concatenate([np.asarray(delta(w), dtype=float).reshape(-1) for w in chunks])
    samples = samples[np.isfinite(samples)]
    if samples.size == 0 or point != point:
        return PairedDelta(point, float("nan"), float("nan"), float("nan"), float("nan"), level, 0)
    low, high = percentile_interval(samples, level)
    b = samples.size
    tail = min((np.sum(samples <= 0) + 1) / (b + 1), (np.sum(samples >= 0) + 1) / (b + 1))
    p = 1.0 if np.all(samples == 0) else min(1.0, 2.0 * float(tail))
    se = float(samples.std(ddof=1)) if b > 1 else 0.0
    return PairedDelta(point, float(low), float(high), se, p, level, int(b))


def unpaired_delta(a: float, a_low: float | None, a_high: float | None, b: float, b_low: float | None,
                   b_high: float | None, level: float = 0.95, a_level: float = 0.95, b_level: float = 0.95) -> PairedDelta:
    """``b - a`` from two independently reported intervals: each interval's half-width is read as
    ``z * se`` (normal approximation), the standard errors add in quadrature, and the p-value is the
    two-sided z test. Conservative when the two figures share their rows (a paired design would
    cancel what they have in common). NaN interval and p-value when either interval is missing."""
    if None in (a_low, a_high, b_low, b_high) or not all(np.isfinite([a, b, a_low, a_high, b_low, b_high])):
        return PairedDelta(b - a, float("nan"), float("nan"), float("nan"), float("nan"), level, 0)
    se_a = (a_high - a_low) / (2 * float(_st.norm.ppf(0.5 + a_level / 2)))
    se_b = (b_high - b_low) / (2 * float(_st.norm.ppf(0.5 + b_level / 2)))
    se = math.hypot(se_a, se_b)
    d = b - a
    z = float(_st.norm.ppf(0.5 + level / 2))
    if se == 0:
        return PairedDelta(d, d, d, 0.0, 1.0 if d == 0 else 0.0, level, 0)
    return PairedDelta(d, d - z * se, d + z * se, se, float(2 * _st.norm.sf(abs(d) / se)), level, 0)


def mcnemar_mde(n: int, discordant: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest change in a paired proportion that McNemar's test detects with ``power`` at two-sided
    ``alpha`` on ``n`` pairs (Connor 1987's normal approximation: ``n = (z_a sqrt(p_d) + z_b
    sqrt(p_d - d^2))^2 / d^2``, solved for ``d``).

    ``discordant`` is the observed share of discordant pairs; a change of ``d`` needs at least ``d``
    of them, so ``p_d = max(discordant, d)``: with no discordance seen (identical outcomes) the answer
    is the change that moves ``d * n`` rows one way, about ``(z_a + z_b)^2 / n``.

    >>> round(mcnemar_mde(200, 0.0), 3), round(mcnemar_mde(200, 0.2), 3)
    (0.039, 0.088)
    """
    if n <= 0:
        return float("nan")
    za = float(_st.norm.ppf(1 - alpha / 2))

    def achieved(d: float) -> float:
        pd = max(discordant, d)
        return float(_st.norm.cdf((d * math.sqrt(n) - za * math.sqrt(pd)) / math.sqrt(max(pd - d * d, 1e-300))))

    if achieved(1.0 - 1e-12) < power:
        return float("nan")
    lo, hi = 0.0, 1.0
    for _ in range(60):  # power rises with d: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if achieved(mid) < power else (lo, mid)
    return hi


def normal_mde(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference a two-sided z test at ``alpha`` detects with ``power`` when the difference's
    standard error is ``se``: ``(z_(1 - alpha/2) + z_power) * se``."""
    return (float(_st.norm.ppf(1 - alpha / 2)) + float(_st.norm.ppf(power))) * se


# ------------------------------------------------------------------ selective prediction
def _selective_arrays(confidence, correct):
    as_np = lambda v: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)  # noqa: E731
    c, k = as_np(confidence).astype(np.float64).reshape(-1), as_np(correct).reshape(-1).astype(np.float64)
    if len(c) != len(k) or len(c) == 0:
        raise InputError(f"{len(c)} confidences for {len(k)} correctness flags; give one of each per row (n > 0)")
    return c, k


class SelectiveTerms:
    """Selective prediction's weighted risk-coverage statistics (:mod:`assay.metrics.selective`):
    rows sorted by confidence, AURC, excess AURC over the oracle ranking and coverage at a target
    accuracy, for a batch of row weights at once."""

    def __init__(self, confidence, correct):
        c, k = _selective_arrays(confidence, correct)
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
