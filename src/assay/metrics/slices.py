"""Find data slices where a model underperforms.

A slice is a feature value or quantile bin (``order=1``) or a conjunction of two of them
(``order=2``). Every slice of at least ``min_size`` rows is compared with its complement on one
metric, by a one-sided test that the slice does worse: Fisher's exact test (a hypergeometric tail)
when an expected cell count is below 5, else the pooled two-proportion z-test. P-values are
Benjamini-Hochberg adjusted over every slice tested, and the significant slices are ranked by effect
size (complement metric minus slice metric). Counting is vectorised: each feature is coded once,
and all slices of a feature pair come from one ``bincount`` of combined codes.

With ``strata`` (usually the true label) a slice is compared with its complement *within* each
stratum: the one-sided Cochran-Mantel-Haenszel test, and the effect is the slice's expected metric
(the complement's metric in each stratum, weighted by the slice's own stratum mix) minus its
observed metric. A slice that merely holds more hard examples (more of a hard class) is then not
flagged; a slice where the model does worse on the same kind of example is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from assay.errors import InputError
from assay.stats import benjamini_hochberg

# metric -> (rows it is defined on, what counts as a success); higher is better for all of them
_SLICE_METRICS = {
    "accuracy": (lambda t, p, pos: np.ones_like(t, bool), lambda t, p, pos: t == p),
    "tpr": (lambda t, p, pos: t == pos, lambda t, p, pos: p == pos),
    "tnr": (lambda t, p, pos: t != pos, lambda t, p, pos: p != pos),
    "ppv": (lambda t, p, pos: p == pos, lambda t, p, pos: t == pos),
}


@dataclass
class Slice:
    """One subgroup: ``conditions`` are (feature, description) pairs joined by AND."""

    conditions: tuple[tuple[str, str], ...]
    size: int
    complement_size: int
    metric: float
    complement_metric: float
    effect: float
    p_value: float
    p_adjusted: float
    test: str

    @property
    def description(self) -> str:
        return " & ".join(f"{f} {d}" for f, d in self.conditions)


@dataclass
class SliceReport:
    """All tested slices (``slices``, ranked: significant first, then by effect) and the search sizes."""

    metric: str
    overall: float
    slices: list[Slice]
    n_tested: int
    n_too_small: int
    alpha: float

    @property
    def significant(self) -> list[Slice]:
        return [s for s in self.slices if s.p_adjusted < self.alpha]

    def table(self, limit: int = 20) -> dict:
        """Table evidence: the top ``limit`` slices."""
        rows = [
            [s.description, s.size, round(s.metric, 4), round(s.complement_metric, 4), round(s.effect, 4),
             float(f"{s.p_value:.3g}"), float(f"{s.p_adjusted:.3g}"), s.test]
            for s in self.slices[:limit]
        ]
        rest = f"{self.metric} of the rest" + (" on the same classes" if self.slices and self.slices[0].test == "cmh" else "")
        return {"columns": ["slice", "n", self.metric, rest, "gap", "p", "p (BH)", "test"], "rows": rows}


def _code_feature(col: np.ndarray, bins: int) -> tuple[np.ndarray, list[str]]:
    """Integer codes and level descriptions: numeric columns with more than ``bins`` distinct values
    become quantile bins; the rest are taken value by value."""
    if col.dtype.kind in "biuf":
        vals = col.astype(np.float64)
        uniq = np.unique(vals)
        if len(uniq) > bins:
            edges = np.unique(np.quantile(vals, np.linspace(0, 1, bins + 1)))
            code = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, len(edges) - 2)
            desc = []
            for i in range(len(edges) - 1):
                close = "]" if i == len(edges) - 2 else ")"
                desc.append(f"in [{edges[i]:.4g}, {edges[i + 1]:.4g}{close}")
            return code, desc
        code = np.searchsorted(uniq, vals)
        return code, [f"= {u:g}" for u in uniq]
    uniq, code = np.unique(col.astype(str), return_inverse=True)
    return code, [f"= {u}" for u in uniq]


def find_slices(
    X,
    y_true,
    y_pred,
    *,
    feature_names: list[str] | None = None,
    metric: str = "accuracy",
    pos_label=1,
    max_order: int = 2,
    bins: int = 4,
    min_size: int = 30,
    alpha: float = 0.05,
    strata=None,
) -> SliceReport:
    """Search single features and pairs of features for subgroups that do significantly worse.

    Parameters
    ----------
    X : DataFrame or 2-D array (with ``feature_names``) of the features to slice on.
    y_true, y_pred : labels and predictions per row.
    metric : ``accuracy``, ``tpr``, ``tnr`` or ``ppv`` (slices are judged on the rows where it is defined).
    max_order : 1 for single conditions, 2 to add all pairwise conjunctions.
    bins : quantile bins for numeric features with more than ``bins`` distinct values.
    min_size : slices with fewer rows (where the metric is defined) are not tested.
    alpha : false-discovery rate for the Benjamini-Hochberg procedure.
    strata : optional stratum per row (e.g. the true label): compare within strata (see module doc).

    Returns
    -------
    SliceReport with every tested slice, ranked (significant first, largest effect first).

    Example
    -------
    >>> import numpy as np
    >>> x = np.repeat([[0], [1]], 100, axis=0); y = np.zeros(200, int); p = y.copy(); p[100:160] = 1
    >>> rep = find_slices(x, y, p, feature_names=["f"], max_order=1)
    >>> rep.significant[0].description
    'f = 1'
    """
    if metric not in _SLICE_METRICS:
        raise InputError(f"metric={metric!r}; find_slices supports {sorted(_SLICE_METRICS)}")
    if max_order not in (1, 2):
        raise InputError(f"max_order={max_order}; use 1 (single features) or 2 (pairs)")
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        names = [str(c) for c in X.columns]
        cols = [X[c].to_numpy() for c in X.columns]
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise InputError(f"X has shape {arr.shape}; give a 2-D array (rows x features) or a DataFrame")
        names = feature_names or [f"x{i}" for i in range(arr.shape[1])]
        if len(names) != arr.shape[1]:
            raise InputError(f"{len(names)} feature names for {arr.shape[1]} columns; give one name per column")
        cols = [arr[:, i] for i in range(arr.shape[1])]
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    n = len(y_true)
    if len(y_pred) != n or any(len(c) != n for c in cols):
        raise InputError("X, y_true and y_pred have different numbers of rows; give one row per sample")

    domain_fn, success_fn = _SLICE_METRICS[metric]
    domain = domain_fn(y_true, y_pred, pos_label)
    success = success_fn(y_true, y_pred, pos_label) & domain
    n_dom, k_dom = int(domain.sum()), int(success.sum())
    if n_dom == 0:
        raise InputError(f"no rows where {metric} is defined (e.g. no positives for tpr); pick another metric")

    if strata is None:
        s_code, n_strata = np.zeros(n, dtype=np.int64), 1
    else:
        strata = np.asarray(strata).reshape(-1)
        if len(strata) != n:
            raise InputError(f"strata has {len(strata)} rows for {n} samples; give one stratum per row")
        _, s_code = np.unique(strata.astype(str), return_inverse=True)
        n_strata = int(s_code.max()) + 1

    def counts(code: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
        """(levels, strata) rows and successes per level and stratum, in one bincount each."""
        key = code * n_strata + s_code
        nn = np.bincount(key, weights=domain, minlength=levels * n_strata).reshape(levels, n_strata)
        kk = np.bincount(key, weights=success, minlength=levels * n_strata).reshape(levels, n_strata)
        return nn, kk

    coded = [_code_feature(c, bins) for c in cols]
    cand_conds, cand_n, cand_k = [], [], []
    # order 1: one bincount per feature
    for j, (code, desc) in enumerate(coded):
        L = len(desc)
        nn, kk = counts(code, L)
        for lvl in range(L):
            cand_conds.append(((names[j], desc[lvl]),))
        cand_n.append(nn)
        cand_k.append(kk)
    pair_too_small = 0
    if max_order == 2:
        for a, b in itertools.combinations(range(len(coded)), 2):
            (ca, da), (cb, db) = coded[a], coded[b]
            la, lb = len(da), len(db)
            nn, kk = counts(ca * lb + cb, la * lb)
            total = nn.sum(1)
            keep = total >= min_size  # describe only testable pair slices, to keep the list small
            for idx in np.flatnonzero(keep):
                cand_conds.append(((names[a], da[idx // lb]), (names[b], db[idx % lb])))
            cand_n.append(nn[keep])
            cand_k.append(kk[keep])
            pair_too_small += int(((total > 0) & ~keep).sum())
    ns_s = np.concatenate(cand_n)  # (candidates, strata)
    ks_s = np.concatenate(cand_k)
    ns, ks = ns_s.sum(1), ks_s.sum(1)
    testable = (ns >= min_size) & (ns < n_dom)
    n_too_small = int(((ns < min_size) & (ns > 0)).sum()) + pair_too_small
    idx = np.flatnonzero(testable)
    n1, k1 = ns[idx], ks[idx]
    n2, k2 = n_dom - n1, k_dom - k1
    p_slice, p_rest = k1 / n1, k2 / n2

    if strata is None:
        # one-sided: the slice has fewer successes than its complement
        pooled = (k1 + k2) / (n1 + n2)
        expected_small = np.minimum.reduce([n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled)]) < 5
        with np.errstate(all="ignore"):
            se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
            z = np.where(se > 0, (p_slice - p_rest) / se, 0.0)
        p_z = _st.norm.cdf(z)
        # Fisher's one-sided exact test: P(K <= k1) for K ~ Hypergeom(N=n_dom, K=k_dom, draws=n1)
        p_fisher = _st.hypergeom.cdf(k1, n_dom, k_dom, n1)
        p = np.where(expected_small, p_fisher, p_z)
        reference, tests = p_rest, np.where(expected_small, "fisher", "z")
    else:
        # Cochran-Mantel-Haenszel, one-sided: fewer successes than expected stratum by stratum
        N_s = np.bincount(s_code, weights=domain, minlength=n_strata)[None]  # (1, strata)
        K_s = np.bincount(s_code, weights=success, minlength=n_strata)[None]
        a, n1s = ks_s[idx], ns_s[idx]
        n2s = N_s - n1s
        with np.errstate(all="ignore"):
            expected = np.where(N_s > 0, n1s * K_s / N_s, 0.0)
            var = np.where(N_s > 1, n1s * n2s * K_s * (N_s - K_s) / (N_s**2 * (N_s - 1)), 0.0)
            rest_rate = np.where(n2s > 0, (K_s - a) / n2s, np.where(N_s > 0, K_s / N_s, 0.0))
            reference = (n1s * rest_rate).sum(1) / n1  # the slice's metric had it done as the rest
            v = var.sum(1)
            z = np.where(v > 0, (a.sum(1) - expected.sum(1)) / np.sqrt(v), 0.0)
        p = _st.norm.cdf(z)
        tests = np.full(len(idx), "cmh")
    p_adj = benjamini_hochberg(p)

    slices = [
        Slice(cand_conds[i], int(ns[i]), int(n_dom - ns[i]), float(a), float(b), float(b - a), float(pv), float(pa),
              str(t))
        for i, a, b, pv, pa, t in zip(idx, p_slice, reference, p, p_adj, tests)
    ]
    slices.sort(key=lambda s: (not s.p_adjusted < alpha, -s.effect))
    return SliceReport(metric, k_dom / n_dom, slices, len(slices), n_too_small, alpha)
