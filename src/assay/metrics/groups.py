"""Metrics disaggregated by sensitive group, with vectorised bootstrap intervals and gap tests.

:class:`GroupMetrics` is the one general object (the shape of Fairlearn's ``MetricFrame``); the named
fairness criteria (:func:`demographic_parity_difference`, :func:`equalized_odds_difference`, ...) are
thin helpers over it, and return the same numbers as Fairlearn on the same inputs.

How the bootstrap stays vectorised
----------------------------------
Every built-in label metric (accuracy, selection rate, TPR, FPR, FNR, TNR, PPV, count) is a ratio of
sums of five per-group confusion cells: true positive, false negative, false positive, and the two
kinds of true negative (correct, or wrong between two non-positive classes). A row bootstrap (draw
``n`` rows with replacement) therefore only changes the ``G x 5`` cell counts, and the cell counts of
a row bootstrap are exactly ``Multinomial(n, observed cell frequencies)``. All resamples are drawn at
once with ``numpy.random.Generator.multinomial(n, p, size=n_boot)``: no Python loop per resample and
cost independent of ``n``. When score metrics (calibration error, log loss) are requested, each
resample is instead a vector of per-row multinomial counts (chunked, see
:mod:`assay.stats`) and every statistic is a weighted sum: the same resamples drive the
label and the score metrics. User-supplied metric callables are bootstrapped by re-indexing rows,
one resample at a time (the only slow path; documented in docs/fairness.md).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import InputError
from assay.stats import holm, percentile_interval, row_bootstrap_weights, two_proportion_z

# confusion cells per group (positive class = ``pos_label``; "negative" = every other class)
TP, FN, FP, TN_RIGHT, TN_WRONG = range(5)
N_CELLS = 5

# proportion metrics as (numerator, denominator) over cell counts c[..., 5]
_PROPORTIONS: dict[str, tuple[Callable, Callable]] = {
    "accuracy": (lambda c: c[..., TP] + c[..., TN_RIGHT], lambda c: c.sum(-1)),
    "selection_rate": (lambda c: c[..., TP] + c[..., FP], lambda c: c.sum(-1)),
    "tpr": (lambda c: c[..., TP], lambda c: c[..., TP] + c[..., FN]),
    "fnr": (lambda c: c[..., FN], lambda c: c[..., TP] + c[..., FN]),
    "fpr": (lambda c: c[..., FP], lambda c: c[..., FP] + c[..., TN_RIGHT] + c[..., TN_WRONG]),
    "tnr": (lambda c: c[..., TN_RIGHT] + c[..., TN_WRONG], lambda c: c[..., FP] + c[..., TN_RIGHT] + c[..., TN_WRONG]),
    "ppv": (lambda c: c[..., TP], lambda c: c[..., TP] + c[..., FP]),
    "error_rate": (lambda c: c[..., FN] + c[..., FP] + c[..., TN_WRONG], lambda c: c.sum(-1)),
}
_SCORE_METRICS = ("calibration_error", "log_loss")
ALIASES = {
    "recall": "tpr", "true_positive_rate": "tpr", "false_positive_rate": "fpr",
    "false_negative_rate": "fnr", "true_negative_rate": "tnr", "precision": "ppv",
    "accuracy_score": "accuracy", "ece": "calibration_error", "n": "count",
}
BUILTIN_METRICS = tuple(_PROPORTIONS) + ("count",) + _SCORE_METRICS


def _pd():
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the tabular extra
        raise InputError("group metrics need pandas; install it with `pip install assay[tabular]`") from None
    return pd


@dataclass
class _Metric:
    name: str
    kind: str  # "proportion", "count", "score", "callable"
    fn: Callable | None = None


def _resolve_metrics(metrics) -> list[_Metric]:
    if isinstance(metrics, (str,)) or callable(metrics):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        items = [(m if isinstance(m, str) else getattr(m, "__name__", f"metric_{i}"), m) for i, m in enumerate(metrics)]
    if not items:
        raise InputError("no metrics given; pass e.g. metrics=['accuracy', 'selection_rate']")
    out = []
    for name, m in items:
        if callable(m):
            out.append(_Metric(str(name), "callable", m))
            continue
        if not isinstance(m, str):
            raise InputError(f"metric {name!r} is {type(m).__name__}; give a built-in name or a callable(y_true, y_pred)")
        key = ALIASES.get(m, m)
        if key in _PROPORTIONS:
            out.append(_Metric(str(name), "proportion", None))
        elif key == "count":
            out.append(_Metric(str(name), "count", None))
        elif key in _SCORE_METRICS:
            out.append(_Metric(str(name), "score", None))
        else:
            raise InputError(f"unknown metric {m!r}; built-ins: {', '.join(BUILTIN_METRICS)} (or pass a callable)")
        out[-1].fn = key  # type: ignore[assignment]
    return out


def _features(sensitive_features, n: int) -> list[tuple[str, np.ndarray]]:
    """Normalise the accepted sensitive-feature forms to [(name, values)]."""
    pd = _pd()
    if sensitive_features is None:
        raise InputError("sensitive_features is missing; give one value per row (array, dict of arrays or DataFrame)")
    if isinstance(sensitive_features, pd.DataFrame):
        cols = [(str(c), sensitive_features[c].to_numpy()) for c in sensitive_features.columns]
    elif isinstance(sensitive_features, pd.Series):
        cols = [(str(sensitive_features.name or "sensitive_feature_0"), sensitive_features.to_numpy())]
    elif isinstance(sensitive_features, Mapping):
        cols = [(str(k), np.asarray(v)) for k, v in sensitive_features.items()]
    else:
        a = np.asarray(sensitive_features, dtype=object)
        if a.ndim == 1:
            cols = [("sensitive_feature_0", a)]
        elif a.ndim == 2:
            cols = [(f"sensitive_feature_{i}", a[:, i]) for i in range(a.shape[1])]
        else:
            raise InputError(f"sensitive_features has {a.ndim} dimensions; give a 1-D array, a 2-D array, a dict or a DataFrame")
    if not cols:
        raise InputError("sensitive_features is empty; give at least one sensitive attribute")
    for name, v in cols:
        if v.ndim != 1 or len(v) != n:
            raise InputError(f"sensitive feature {name!r} has shape {v.shape} for {n} rows; give one value per row")
        if pd.isna(v).any():
            raise InputError(f"sensitive feature {name!r} has missing values; fill them (e.g. with 'unknown') first")
    return cols


class GroupMetrics:
    """Metrics overall and per (intersectional) group, with differences, ratios and intervals.

    Parameters
    ----------
    metrics : a built-in name, a callable ``fn(y_true, y_pred) -> float``, a list of them, or a dict
        ``{column name: name or callable}``. Built-ins: ``accuracy``, ``selection_rate``, ``tpr``
        (``recall``), ``fpr``, ``fnr``, ``tnr``, ``ppv`` (``precision``), ``error_rate``, ``count``,
        ``calibration_error`` (per-group ECE, needs ``y_score``) and ``log_loss`` (needs ``y_score``).
    y_true, y_pred : labels per row (any hashable values).
    sensitive_features : one array, a 2-D array, a dict of arrays or a DataFrame. Several features
        give intersectional groups (only combinations that occur).
    y_score : optional probabilities: ``(n,)`` probability of ``pos_label`` (binary), or ``(n, K)``
        class probabilities with columns in sorted class order (top-label calibration).
    pos_label : the positive / favourable label (selection, TPR, FPR, ...).
    n_bins : equal-width bins of the calibration error.
    min_group_size : groups with fewer rows are listed in :attr:`small_groups` and flagged.

    Example
    -------
    >>> gm = GroupMetrics(["accuracy", "selection_rate"], [1, 0, 1, 1], [1, 0, 0, 1], ["a", "a", "b", "b"],
    ...                   min_group_size=1)
    >>> gm.by_group["accuracy"].tolist()
    [1.0, 0.5]
    >>> float(gm.difference()["accuracy"])
    0.5
    """

    def __init__(
        self,
        metrics,
        y_true,
        y_pred,
        sensitive_features,
        *,
        y_score=None,
        pos_label: Any = 1,
        n_bins: int = 10,
        min_group_size: int = 30,
    ):
        pd = _pd()
        self._metrics = _resolve_metrics(metrics)
        y_true = np.asarray(y_true).reshape(-1)
        y_pred = np.asarray(y_pred).reshape(-1)
        n = len(y_true)
        if n == 0:
            raise InputError("y_true is empty; give at least one row")
        if len(y_pred) != n:
            raise InputError(f"y_true has {n} rows but y_pred has {len(y_pred)}; give one prediction per row")
        self.n = n
        self.y_true, self.y_pred = y_true, y_pred
        self.pos_label = pos_label
        self.n_bins = int(n_bins)
        self.min_group_size = int(min_group_size)

        # groups: factorize each feature (sorted levels), then the observed combinations
        feats = _features(sensitive_features, n)
        self.feature_names = [f for f, _ in feats]
        codes, levels = [], []
        for _, v in feats:
            c, u = pd.factorize(v, sort=True)
            codes.append(c.astype(np.int64))
            levels.append(u)
        dims = tuple(len(u) for u in levels)
        flat = np.ravel_multi_index(codes, dims) if len(codes) > 1 else codes[0]
        uniq, self.group_index = np.unique(flat, return_inverse=True)
        self.n_groups = len(uniq)
        if self.n_groups < 2:
            raise InputError(
                f"sensitive feature(s) {self.feature_names} define a single group; fairness needs at least two groups"
            )
        level_codes = np.unravel_index(uniq, dims) if len(codes) > 1 else (uniq,)
        if len(codes) > 1:
            self.groups = [tuple(levels[j][level_codes[j][g]] for j in range(len(codes))) for g in range(self.n_groups)]
            self._index = pd.MultiIndex.from_tuples(self.groups, names=self.feature_names)
        else:
            self.groups = [levels[0][g] for g in uniq]
            self._index = pd.Index(self.groups, name=self.feature_names[0])

        # the five confusion cells per row, and per group
        t_pos, p_pos = y_true == pos_label, y_pred == pos_label
        state = np.where(t_pos, np.where(p_pos, TP, FN), np.where(p_pos, FP, np.where(y_true == y_pred, TN_RIGHT, TN_WRONG)))
        self.cell_index = self.group_index * N_CELLS + state
        self.cells = np.bincount(self.cell_index, minlength=self.n_groups * N_CELLS).reshape(self.n_groups, N_CELLS).astype(np.float64)
        self.sizes = self.cells.sum(1)

        self.y_score = None
        if any(m.kind == "score" for m in self._metrics):
            self.y_score = self._check_scores(y_score, n)
            self._score_rows = self._row_score_terms()

        values = self._evaluate(self.cells[None], None)
        self._values = {k: v[0] for k, v in values.items()}
        self._boot: dict[str, Any] | None = None

    # ------------------------------------------------------------------ inputs
    def _check_scores(self, y_score, n):
        if y_score is None:
            raise InputError("calibration_error / log_loss need y_score (predicted probabilities); pass y_score=")
        s = np.asarray(y_score, dtype=np.float64)
        if s.shape[0] != n or s.ndim not in (1, 2):
            raise InputError(f"y_score has shape {s.shape} for {n} rows; give (n,) positive-class or (n, K) class probabilities")
        if not np.isfinite(s).all() or s.min() < 0 or s.max() > 1:
            raise InputError("y_score must be probabilities in [0, 1]; apply softmax / sigmoid to logits first")
        return s

    def _row_score_terms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per row: (log-loss term, calibration gap) and the calibration bin, so that each group's score
        metric is a (weighted) sum over its rows."""
        s, y = self.y_score, self.y_true
        eps = np.finfo(np.float64).eps
        if s.ndim == 1:
            hit = (y == self.pos_label).astype(np.float64)
            p = np.clip(s, eps, 1 - eps)
            loss = -(hit * np.log(p) + (1 - hit) * np.log(1 - p))
            conf, correct = s, hit
        else:
            classes = np.unique(np.concatenate([self.y_true, self.y_pred]))
            if s.shape[1] != len(classes):
                raise InputError(
                    f"y_score has {s.shape[1]} columns but the labels have {len(classes)} classes; give one column per class in sorted order"
                )
            y_idx = np.searchsorted(classes, y)
            loss = -np.log(np.clip(s[np.arange(len(y)), y_idx], eps, 1.0))
            conf = s.max(1)
            correct = (s.argmax(1) == y_idx).astype(np.float64)
        bins = np.minimum((conf * self.n_bins).astype(np.int64), self.n_bins - 1)
        return {"log_loss": loss, "gap": conf - correct, "bin": bins}

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, cells: np.ndarray, weights: np.ndarray | None) -> dict[str, np.ndarray]:
        """Point values ``(1, G)`` per metric (callables evaluated group by group)."""
        out = self._evaluate_resampled(cells, weights)
        for m in self._metrics:
            if m.kind == "callable":
                out[m.name] = np.array([[self._call(m.fn, self.group_index == g) for g in range(self.n_groups)]])
        return out

    def _score_metric(self, key, weights, group_index, n_groups) -> np.ndarray:
        from scipy import sparse

        n = self.n
        w = np.ones((1, n)) if weights is None else weights
        rows = np.arange(n)
        ones = sparse.csr_matrix((np.ones(n), (rows, group_index)), shape=(n, n_groups))
        size = (ones.T @ w.T).T
        with np.errstate(all="ignore"):
            if key == "log_loss":
                a = sparse.csr_matrix((self._score_rows["log_loss"], (rows, group_index)), shape=(n, n_groups))
                return np.where(size > 0, (a.T @ w.T).T / size, np.nan)
            col = group_index * self.n_bins + self._score_rows["bin"]
            a = sparse.csr_matrix((self._score_rows["gap"], (rows, col)), shape=(n, n_groups * self.n_bins))
            gap = np.abs((a.T @ w.T).T).reshape(len(w), n_groups, self.n_bins).sum(-1)
            return np.where(size > 0, gap / size, np.nan)

    def _call(self, fn, mask) -> float:
        if not mask.any():
            return float("nan")
        return float(fn(self.y_true[mask], self.y_pred[mask]))

    # ---------------------------------------------------------------- results
    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self._metrics]

    @property
    def overall(self):
        """Each metric on all rows (``pandas.Series``)."""
        pd = _pd()
        vals = {}
        for m in self._metrics:
            if m.kind == "proportion":
                num, den = _PROPORTIONS[m.fn]
                c = self.cells.sum(0)
                vals[m.name] = float(num(c) / den(c)) if den(c) > 0 else float("nan")
            elif m.kind == "count":
                vals[m.name] = float(self.n)
            elif m.kind == "score":
                vals[m.name] = float(self._score_metric(m.fn, None, np.zeros(self.n, np.int64), 1)[0, 0])
            else:
                vals[m.name] = float(m.fn(self.y_true, self.y_pred))
        return pd.Series(vals, dtype=float)

    @property
    def by_group(self):
        """Each metric per group (``pandas.DataFrame``: index groups, columns metrics)."""
        pd = _pd()
        return pd.DataFrame({k: v for k, v in self._values.items()}, index=self._index)

    @property
    def group_sizes(self):
        pd = _pd()
        return pd.Series(self.sizes, index=self._index, name="n")

    @property
    def small_groups(self) -> list:
        """Groups with fewer than ``min_group_size`` rows: their values are too noisy to judge."""
        return [g for g, s in zip(self.groups, self.sizes) if s < self.min_group_size]

    def group_min(self):
        return self.by_group.min()

    def group_max(self):
        return self.by_group.max()

    def difference(self, method: str = "between_groups"):
        """Largest gap per metric: ``max - min`` over groups, or the largest ``|group - overall|``."""
        bg = self.by_group.to_numpy()[None]
        ov = self.overall.to_numpy()[None]
        return _pd().Series(_difference(bg, ov, method)[0], index=self.metric_names)

    def ratio(self, method: str = "between_groups"):
        """Smallest ratio per metric (``<= 1``): ``min / max`` over groups, or to the overall value."""
        bg = self.by_group.to_numpy()[None]
        ov = self.overall.to_numpy()[None]
        return _pd().Series(_ratio(bg, ov, method)[0], index=self.metric_names)

    # --------------------------------------------------------------- bootstrap
    def bootstrap(self, n_boot: int = 1000, *, level: float = 0.95, seed: int = 0) -> GroupIntervals:
        """Percentile-bootstrap intervals for every by-group value, overall value, difference and ratio.

        Label metrics are resampled as multinomial confusion-cell counts (all ``n_boot`` resamples in one
        call, independent of the number of rows); score metrics as per-row multinomial counts in
        chunks; callables by re-indexing rows.
        """
        if n_boot < 1:
            raise InputError(f"n_boot={n_boot}; give a positive number of bootstrap resamples")
        rng = np.random.default_rng(seed)
        G = self.n_groups
        by: dict[str, list[np.ndarray]] = {m.name: [] for m in self._metrics}
        ov: dict[str, list[np.ndarray]] = {m.name: [] for m in self._metrics}
        kinds = {m.kind for m in self._metrics}
        if kinds <= {"proportion", "count"}:
            p = self.cells.reshape(-1) / self.n
            cells = rng.multinomial(self.n, p, size=n_boot).reshape(n_boot, G, N_CELLS).astype(np.float64)
            self._collect(cells, None, by, ov)
        else:
            from scipy import sparse

            onehot = sparse.csr_matrix(
                (np.ones(self.n), (np.arange(self.n), self.cell_index)), shape=(self.n, G * N_CELLS)
            )
            for w in row_bootstrap_weights(self.n, n_boot, rng):
                cells = (onehot.T @ w.T).T.reshape(len(w), G, N_CELLS)
                self._collect(cells, w, by, ov)
        samples = {k: np.concatenate(v) for k, v in by.items()}
        overall = {k: np.concatenate(v) for k, v in ov.items()}
        self._boot = {"by_group": samples, "overall": overall, "level": level, "n_boot": n_boot, "seed": seed}
        return GroupIntervals(self, samples, overall, level)

    def _collect(self, cells, w, by, ov):
        """Append one chunk of resamples: by-group ``(b, G)`` and overall ``(b,)`` per metric."""
        values = self._evaluate_resampled(cells, w)
        for m in self._metrics:
            if m.kind == "callable":
                g, o = self._callable_resamples(m.fn, w)
            else:
                g, o = values[m.name], self._overall_from(m, cells, w)
            by[m.name].append(g)
            ov[m.name].append(o)

    def _evaluate_resampled(self, cells, w):
        out = {}
        with np.errstate(all="ignore"):
            for m in self._metrics:
                if m.kind == "proportion":
                    num, den = _PROPORTIONS[m.fn]
                    d = den(cells)
                    out[m.name] = np.where(d > 0, num(cells) / np.where(d > 0, d, 1), np.nan)
                elif m.kind == "count":
                    out[m.name] = cells.sum(-1)
                elif m.kind == "score":
                    out[m.name] = self._score_metric(m.fn, w, self.group_index, self.n_groups)
        return out

    def _overall_from(self, m, cells, w):
        if m.kind == "proportion":
            num, den = _PROPORTIONS[m.fn]
            c = cells.sum(1)
            with np.errstate(all="ignore"):
                return num(c) / den(c)
        if m.kind == "count":
            return cells.sum((1, 2))
        return self._score_metric(m.fn, w, np.zeros(self.n, np.int64), 1)[:, 0]

    def _callable_resamples(self, fn, w):
        """Slow path for user callables: rebuild each resample's rows from its row counts."""
        w = w.astype(np.int64)
        by = np.full((len(w), self.n_groups), np.nan)
        ov = np.empty(len(w))
        for b in range(len(w)):
            idx = np.repeat(np.arange(self.n), w[b])
            yt, yp, gi = self.y_true[idx], self.y_pred[idx], self.group_index[idx]
            ov[b] = fn(yt, yp)
            for g in range(self.n_groups):
                mask = gi == g
                if mask.any():
                    by[b, g] = fn(yt[mask], yp[mask])
        return by, ov

    # ------------------------------------------------------------ significance
    def pairwise_tests(self, metric: str, *, alpha: float = 0.05, correction: str = "holm"):
        """Test every pair of groups for a difference in ``metric``, controlling the family-wise error.

        Proportion metrics use the pooled two-proportion z-test on the groups' counts; other metrics a
        bootstrap test (needs :meth:`bootstrap` first). P-values are Holm-adjusted across all pairs
        (``correction="none"`` to skip). Returns a DataFrame, one row per pair.
        """
        pd = _pd()
        m = self._metric(metric)
        pairs = np.array(list(itertools.combinations(range(self.n_groups), 2)))
        a, b = pairs[:, 0], pairs[:, 1]
        vals = self._values[m.name]
        if m.kind == "proportion":
            num, den = _PROPORTIONS[m.fn]
            k, nn = num(self.cells), den(self.cells)
            _, p = two_proportion_z(k[a], nn[a], k[b], nn[b])
            test = "two-proportion z"
        else:
            if self._boot is None:
                raise InputError(f"a significance test of {metric!r} needs bootstrap resamples; call .bootstrap() first")
            s = self._boot["by_group"][m.name]
            d = s[:, a] - s[:, b]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                lo = np.nanmean(d <= 0, axis=0)
                hi = np.nanmean(d >= 0, axis=0)
            p = np.minimum(1.0, 2 * np.minimum(lo, hi))
            test = "bootstrap"
        p = np.where(np.isfinite(p), p, 1.0)
        adj = holm(p) if correction == "holm" else p
        if correction not in ("holm", "none"):
            raise InputError(f"correction={correction!r}; use 'holm' or 'none'")
        return pd.DataFrame({
            "group_a": [self.groups[i] for i in a], "group_b": [self.groups[j] for j in b],
            "value_a": vals[a], "value_b": vals[b], "difference": vals[a] - vals[b],
            "p_value": p, "p_adjusted": adj, "significant": adj < alpha, "test": test,
        })

    def gap_test(self, metric: str, *, alpha: float = 0.05) -> dict[str, Any]:
        """Is the largest between-group gap in ``metric`` real? Tests the (max, min) pair within the
        Holm-corrected family of all pairs."""
        m = self._metric(metric)
        vals = self._values[m.name]
        hi, lo = int(np.nanargmax(vals)), int(np.nanargmin(vals))
        if hi == lo and self.n_groups > 1:  # every group equal (e.g. all perfect): test any pair, gap 0
            lo = 1 if hi == 0 else 0
        tests = self.pairwise_tests(metric, alpha=alpha)
        pairs = list(itertools.combinations(range(self.n_groups), 2))
        row = tests.iloc[pairs.index((min(hi, lo), max(hi, lo)))]
        return {
            "metric": m.name, "group_high": self.groups[hi], "group_low": self.groups[lo],
            "difference": float(vals[hi] - vals[lo]), "p_value": float(row.p_value),
            "p_adjusted": float(row.p_adjusted), "significant": bool(row.p_adjusted < alpha), "test": row.test,
        }

    def _metric(self, name: str) -> _Metric:
        for m in self._metrics:
            if m.name == name:
                return m
        raise InputError(f"metric {name!r} is not in this GroupMetrics; it has {self.metric_names}")


class GroupIntervals:
    """Bootstrap resamples of a :class:`GroupMetrics` and the intervals derived from them.

    ``samples[metric]`` is ``(n_boot, n_groups)``; ``overall_samples[metric]`` is ``(n_boot,)``.
    """

    def __init__(self, gm: GroupMetrics, samples, overall_samples, level):
        self.gm, self.samples, self.overall_samples, self.level = gm, samples, overall_samples, level

    def _frame(self, arr_by_metric, index):
        pd = _pd()
        lows, highs = {}, {}
        for k, v in arr_by_metric.items():
            lows[k], highs[k] = percentile_interval(v, self.level)
        return pd.DataFrame(lows, index=index), pd.DataFrame(highs, index=index)

    @property
    def by_group(self):
        """``(low, high)`` DataFrames shaped like :attr:`GroupMetrics.by_group`."""
        return self._frame(self.samples, self.gm._index)

    @property
    def overall(self):
        pd = _pd()
        lo, hi = {}, {}
        for k, v in self.overall_samples.items():
            lo[k], hi[k] = (float(x) for x in percentile_interval(v, self.level))
        return pd.Series(lo), pd.Series(hi)

    def _aggregate(self, fn, method):
        pd = _pd()
        names = self.gm.metric_names
        bg = np.stack([self.samples[k] for k in names], axis=-1)  # (B, G, M)
        ov = np.stack([self.overall_samples[k] for k in names], axis=-1)  # (B, M)
        vals = fn(bg, ov, method)  # (B, M)
        point = (self.gm.difference(method) if fn is _difference else self.gm.ratio(method)).to_numpy()
        low, high = percentile_interval(vals, self.level)
        return pd.DataFrame({"value": point, "low": low, "high": high}, index=names), vals

    def difference(self, method: str = "between_groups"):
        """DataFrame (value, low, high) per metric for :meth:`GroupMetrics.difference`."""
        return self._aggregate(_difference, method)[0]

    def ratio(self, method: str = "between_groups"):
        return self._aggregate(_ratio, method)[0]

    def difference_samples(self, method: str = "between_groups") -> np.ndarray:
        return self._aggregate(_difference, method)[1]

    def ratio_samples(self, method: str = "between_groups") -> np.ndarray:
        return self._aggregate(_ratio, method)[1]


def _nan_reduce(fn, a, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(a, axis=axis)


def _difference(bg: np.ndarray, ov: np.ndarray, method: str) -> np.ndarray:
    """bg: (B, G, M), ov: (B, M) -> (B, M)."""
    if method == "between_groups":
        return _nan_reduce(np.nanmax, bg, 1) - _nan_reduce(np.nanmin, bg, 1)
    if method == "to_overall":
        return _nan_reduce(np.nanmax, np.abs(bg - ov[:, None, :]), 1)
    raise InputError(f"method={method!r}; use 'between_groups' or 'to_overall'")


def _ratio(bg: np.ndarray, ov: np.ndarray, method: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        if method == "between_groups":
            return _nan_reduce(np.nanmin, bg, 1) / _nan_reduce(np.nanmax, bg, 1)
        if method == "to_overall":
            r = bg / ov[:, None, :]
            r = np.where(r > 1, 1 / r, r)
            return _nan_reduce(np.nanmin, r, 1)
    raise InputError(f"method={method!r}; use 'between_groups' or 'to_overall'")


# ------------------------------------------------------------ named criteria
def _gm(metrics, y_true, y_pred, sensitive_features, pos_label):
    return GroupMetrics(metrics, y_true, y_pred, sensitive_features, pos_label=pos_label, min_group_size=0)


def demographic_parity_difference(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1) -> float:
    """Largest gap in selection rate between groups (0 = parity).

    >>> demographic_parity_difference([0, 0, 0, 0], [1, 1, 0, 1], sensitive_features=["a", "a", "b", "b"])
    0.5
    """
    return float(_gm(["selection_rate"], y_true, y_pred, sensitive_features, pos_label).difference(method).iloc[0])


def demographic_parity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1) -> float:
    """Smallest ratio of selection rates between groups (1 = parity)."""
    return float(_gm(["selection_rate"], y_true, y_pred, sensitive_features, pos_label).ratio(method).iloc[0])


def _agg(values: np.ndarray, agg: str, worst) -> float:
    if agg == "worst_case":
        return float(worst(values))
    if agg == "mean":
        return float(np.mean(values))
    raise InputError(f"agg={agg!r}; use 'worst_case' or 'mean'")


def equalized_odds_difference(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1, agg="worst_case") -> float:
    """The larger of the TPR gap and the FPR gap between groups (0 = equalized odds)."""
    d = _gm(["tpr", "fpr"], y_true, y_pred, sensitive_features, pos_label).difference(method).to_numpy()
    return _agg(d, agg, np.max)


def equalized_odds_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1, agg="worst_case") -> float:
    """The smaller of the TPR ratio and the FPR ratio between groups (1 = equalized odds)."""
    r = _gm(["tpr", "fpr"], y_true, y_pred, sensitive_features, pos_label).ratio(method).to_numpy()
    return _agg(r, agg, np.min)


def equal_opportunity_difference(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1) -> float:
    """Largest TPR gap between groups (0 = equal opportunity)."""
    return float(_gm(["tpr"], y_true, y_pred, sensitive_features, pos_label).difference(method).iloc[0])


def equal_opportunity_ratio(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1) -> float:
    return float(_gm(["tpr"], y_true, y_pred, sensitive_features, pos_label).ratio(method).iloc[0])


def predictive_parity_difference(y_true, y_pred, *, sensitive_features, method="between_groups", pos_label=1) -> float:
    """Largest precision (PPV) gap between groups (0 = predictive parity)."""
    return float(_gm(["ppv"], y_true, y_pred, sensitive_features, pos_label).difference(method).iloc[0])


# criterion name -> (metrics it compares, "max" of differences)
CRITERIA: dict[str, tuple[str, ...]] = {
    "demographic_parity": ("selection_rate",),
    "equalized_odds": ("tpr", "fpr"),
    "equal_opportunity": ("tpr",),
    "predictive_parity": ("ppv",),
    "accuracy_parity": ("accuracy",),
}
