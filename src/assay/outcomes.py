"""Per-sample outcomes: what a probe saw on each row, kept compactly in its finding.

Two audits of the same inputs (same data, seed, probes and parameters) can then be compared row by
row (``assay compare``): McNemar's exact test on paired binary outcomes, and a paired bootstrap of
any metric that a *recipe* recomputes from the rows. A finding's ``outcomes`` (report schema 1.2) is::

    {"vectors": {name: {"kind": str, "n": int, "dtype": "bits" | "int16" | "float64", "data": base64}},
     "metrics": {metric display name: recipe}}

Vectors are bit-packed (binary outcomes: ``np.packbits``, little bit order) or little-endian
``int16`` / ``float64`` (``float32`` is read too), then base64: 300 rows of one outcome take 52 characters. ``kind`` says what
a vector holds: binary outcomes per row (``correct``, ``robust``, ``certified``, ``refused``,
``leaked``, ``selected``, ``member``, ``succeeded``, ``toxic``, ``preferred``), numbers per row (``score``, ``confidence``, ``loss``,
``similarity``) or strata of the data (``group``: an index, ``-1`` for rows left out).

A recipe is a small JSON expression of the metric over the vectors, evaluated for a whole batch of
row weights ``(B, n)`` at once (weights all one give the reported value, which the comparison
checks before it trusts a recipe):

- ``{"op": "mean", "of": v}``: ``sum w v / sum w`` (accuracy, robust accuracy, a rate, a mean loss)
- ``{"op": "ratio", "of": [r1, r2]}``, ``{"op": "max" | "min" | "average", "of": [r, ...]}`` (average:
  the plain mean of the recipes' values, e.g. accuracy over several corruptions)
- ``{"op": "gap", "of": v, "by": g, "stat": "difference" | "ratio"}``: the group means of ``v``
  over the strata ``g`` (``-1`` excluded), ``max - min`` or ``min / max`` (groups a resample leaves
  empty are ignored)
- ``{"op": "ece", "confidence": c, "correct": k, "bins": 15}``: equal-width top-label ECE
- ``{"op": "auc", "score": s, "positive": m}``: ROC AUC, ties counted one half
- ``{"op": "tpr_at_fpr", "score": s, "positive": m, "fpr": f}``: TPR at the loosest threshold whose
  FPR is at most ``f`` (as :func:`assay.metrics.privacy.tpr_at_fpr`)
- ``{"op": "selective", "confidence": c, "correct": k, "stat": "aurc" | "excess_aurc" |
  "coverage_at_accuracy", "target": a}``: the risk-coverage statistics of abstaining on low
  confidence (as :class:`assay.stats.SelectiveTerms`; ``target``: the accuracy that
  ``coverage_at_accuracy`` must keep)
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from assay.errors import InputError
from assay.stats import SelectiveTerms, weighted_bin_sums

BINARY_KINDS = ("correct", "robust", "certified", "refused", "leaked", "selected", "member", "succeeded", "toxic",
                "preferred")
VALUE_KINDS = ("score", "confidence", "loss", "similarity")
STRATA_KINDS = ("group",)
KINDS = BINARY_KINDS + VALUE_KINDS + STRATA_KINDS
DTYPES = ("bits", "int16", "float32", "float64")
OPS = ("mean", "average", "ratio", "max", "min", "gap", "ece", "auc", "tpr_at_fpr", "selective")
SELECTIVE_STATS = ("aurc", "excess_aurc", "coverage_at_accuracy")


class Outcomes:
    """Builder of a finding's ``outcomes``: add vectors, then say which metric each recipe computes.

    Example
    -------
    >>> o = Outcomes()
    >>> o.bits("robust[eps=0.1]", "robust", [True, False, True, True])
    'robust[eps=0.1]'
    >>> o.recipe("robust_accuracy[eps=0.1]", mean("robust[eps=0.1]"))
    >>> d = o.to_dict(); float(evaluate(d["metrics"]["robust_accuracy[eps=0.1]"], decode(d), np.ones((1, 4)))[0])
    0.75
    """

    def __init__(self):
        self.vectors: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}

    def bits(self, name: str, kind: str, values) -> str:
        a = np.asarray(_numpy(values)).astype(bool).reshape(-1)
        return self._add(name, kind, "bits", np.packbits(a, bitorder="little").tobytes(), a.size)

    def ints(self, name: str, kind: str, values) -> str:
        a = np.asarray(_numpy(values)).reshape(-1)
        if a.size and (a.min() < -1 or a.max() > np.iinfo(np.int16).max):
            raise InputError(f"outcome vector {name}: strata must lie in [-1, 32767]")
        return self._add(name, kind, "int16", a.astype("<i2").tobytes(), a.size)

    def floats(self, name: str, kind: str, values) -> str:
        # float64: a score rounded to float32 can tie with its neighbours and move an AUC or a
        # threshold, and the comparison trusts a recipe only when it reproduces the reported value
        a = np.asarray(_numpy(values), dtype=np.float64).reshape(-1)
        return self._add(name, kind, "float64", a.astype("<f8").tobytes(), a.size)

    def _add(self, name: str, kind: str, dtype: str, raw: bytes, n: int) -> str:
        if kind not in KINDS:
            raise InputError(f"outcome kind {kind!r} is not one of {', '.join(KINDS)}")
        self.vectors[name] = {"kind": kind, "n": int(n), "dtype": dtype, "data": base64.b64encode(raw).decode("ascii")}
        return name

    def recipe(self, metric, recipe: dict[str, Any]) -> None:
        """``metric``: a Metric or its display name; the recipe may only name vectors added already."""
        name = getattr(metric, "name", metric)
        missing = sorted(recipe_vectors(recipe) - set(self.vectors))
        if missing:
            raise InputError(f"recipe for {name} names vectors {missing} that were not added")
        self.metrics[str(name)] = recipe

    def to_dict(self) -> dict[str, Any] | None:
        return {"vectors": dict(self.vectors), "metrics": dict(self.metrics)} if self.vectors else None


def _numpy(v):
    return v.detach().cpu().numpy() if hasattr(v, "detach") else v


# recipe constructors: the probes build recipes with these, never by hand
def mean(v: str) -> dict[str, Any]:
    return {"op": "mean", "of": v}


def ratio(a: dict, b: dict) -> dict[str, Any]:
    return {"op": "ratio", "of": [a, b]}


def average(*recipes: dict) -> dict[str, Any]:
    return {"op": "average", "of": list(recipes)}


def most(*recipes: dict) -> dict[str, Any]:
    return {"op": "max", "of": list(recipes)}


def least(*recipes: dict) -> dict[str, Any]:
    return {"op": "min", "of": list(recipes)}


def gap(v: str, by: str, stat: str = "difference") -> dict[str, Any]:
    return {"op": "gap", "of": v, "by": by, "stat": stat}


def ece(confidence: str, correct: str, bins: int) -> dict[str, Any]:
    return {"op": "ece", "confidence": confidence, "correct": correct, "bins": int(bins)}


def selective(confidence: str, correct: str, stat: str, target: float = 0.99) -> dict[str, Any]:
    if stat not in SELECTIVE_STATS:
        raise InputError(f"selective stat {stat!r} is not one of {', '.join(SELECTIVE_STATS)}")
    return {"op": "selective", "confidence": confidence, "correct": correct, "stat": stat, "target": float(target)}


def auc(score: str, positive: str) -> dict[str, Any]:
    return {"op": "auc", "score": score, "positive": positive}


def tpr_at_fpr(score: str, positive: str, fpr: float) -> dict[str, Any]:
    return {"op": "tpr_at_fpr", "score": score, "positive": positive, "fpr": float(fpr)}


# ------------------------------------------------------------------- reading
def decode(outcomes: dict[str, Any] | None, where: str = "outcomes") -> dict[str, np.ndarray]:
    """The vectors of a finding's ``outcomes`` as arrays (bool, int64 or float64).

    A report is untrusted input: a malformed vector is an :class:`InputError` naming it."""
    if not outcomes:
        return {}
    if not isinstance(outcomes, dict) or not isinstance(outcomes.get("vectors"), dict):
        raise InputError(f"{where} has no vectors object")
    out = {}
    for name, v in outcomes["vectors"].items():
        try:
            n, dtype, raw = int(v["n"]), v["dtype"], base64.b64decode(v["data"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{where}.vectors[{name!r}] is not a valid outcome vector (kind, n, dtype, data)") from None
        if dtype == "bits":
            a = np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")
            ok = len(a) >= n and len(a) - n < 8
            a = a[:n].astype(bool)
        elif dtype in ("int16", "float32", "float64"):
            a = np.frombuffer(raw, {"int16": "<i2", "float32": "<f4", "float64": "<f8"}[dtype])
            ok = len(a) == n
            a = a.astype(np.int64 if dtype == "int16" else np.float64)
        else:
            raise InputError(f"{where}.vectors[{name!r}] has dtype {dtype!r}; one of {', '.join(DTYPES)}")
        if not ok:
            raise InputError(f"{where}.vectors[{name!r}] holds {len(a)} values, not n = {n}")
        out[name] = a
    return out


def recipe_vectors(recipe: Any) -> set[str]:
    """The vector names a recipe reads."""
    if not isinstance(recipe, dict):
        return set()
    out: set[str] = set()
    for key in ("of", "by", "confidence", "correct", "score", "positive"):
        v = recipe.get(key)
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, list):
            for r in v:
                out |= recipe_vectors(r)
    return out


def rows_of(recipe: dict[str, Any], vectors: dict[str, np.ndarray]) -> int:
    """The number of rows a recipe resamples: every vector it reads must have that many."""
    lengths = {len(vectors[v]) for v in recipe_vectors(recipe) if v in vectors}
    missing = recipe_vectors(recipe) - set(vectors)
    if missing:
        raise InputError(f"recipe reads vectors {sorted(missing)} that the finding does not hold")
    if len(lengths) != 1:
        raise InputError(f"recipe reads vectors of different lengths {sorted(lengths)}")
    return lengths.pop()


def binary_vector(recipe: dict[str, Any], vectors: dict[str, np.ndarray]) -> str | None:
    """The vector a recipe averages when it is the mean of one binary outcome (McNemar applies), else None."""
    if isinstance(recipe, dict) and recipe.get("op") == "mean" and isinstance(recipe.get("of"), str):
        v = vectors.get(recipe["of"])
        if v is not None and v.dtype == bool:
            return recipe["of"]
    return None


def evaluate(recipe: dict[str, Any], vectors: dict[str, np.ndarray], w: np.ndarray) -> np.ndarray:
    """The metric for every row of the weights ``w`` ``(B, n)``: ``(B,)`` values (NaN where a
    resample leaves it undefined)."""
    if not isinstance(recipe, dict) or recipe.get("op") not in OPS:
        raise InputError(f"unknown recipe {recipe!r}; ops: {', '.join(OPS)}")
    op = recipe["op"]
    w = np.asarray(w, dtype=np.float64)

    def vec(key: str) -> np.ndarray:
        name = recipe.get(key)
        if not isinstance(name, str) or name not in vectors:
            raise InputError(f"recipe {op} reads vector {name!r}, which the finding does not hold")
        v = vectors[name]
        if len(v) != w.shape[1]:
            raise InputError(f"vector {name} has {len(v)} rows, the weights {w.shape[1]}")
        return v

    with np.errstate(divide="ignore", invalid="ignore"):
        if op == "mean":
            return (w @ vec("of").astype(np.float64)) / w.sum(1)
        if op in ("ratio", "max", "min", "average"):
            parts = recipe.get("of")
            if not isinstance(parts, list) or not parts or (op == "ratio" and len(parts) != 2):
                raise InputError(f"recipe {op} needs a list of recipes under 'of'")
            vals = np.stack([evaluate(r, vectors, w) for r in parts])
            if op == "ratio":
                return vals[0] / vals[1]
            if op == "average":
                return vals.mean(0)
            return _nan_reduce(vals, np.nanmax if op == "max" else np.nanmin)
        if op == "gap":
            return _gap(vec("of").astype(np.float64), vec("by"), w, recipe.get("stat", "difference"))
        if op == "ece":
            return _ece(vec("confidence"), vec("correct").astype(np.float64), int(recipe.get("bins", 15)), w)
        if op == "auc":
            return _auc(vec("score"), vec("positive").astype(bool), w)
        if op == "selective":
            stat = recipe.get("stat")
            if stat not in SELECTIVE_STATS:
                raise InputError(f"selective stat {stat!r} is not one of {', '.join(SELECTIVE_STATS)}")
            terms = SelectiveTerms(vec("confidence"), vec("correct").astype(bool))
            return np.asarray(terms.evaluate(w, float(recipe.get("target", 0.99)))[stat], dtype=np.float64)
        return _tpr_at_fpr(vec("score"), vec("positive").astype(bool), float(recipe.get("fpr", 0.0)), w)


def _nan_reduce(vals: np.ndarray, fn) -> np.ndarray:
    out = np.full(vals.shape[1], np.nan)
    ok = ~np.all(np.isnan(vals), axis=0)
    out[ok] = fn(vals[:, ok], axis=0)
    return out


def _group_sums(w: np.ndarray, index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``out[b, g] = sum_i w[b, i] * values[i] * [index[i] == g]`` (rows with index -1 left out)."""
    keep = index >= 0
    return weighted_bin_sums(w, np.where(keep, index, 0), np.where(keep, values, 0.0), size)


def _gap(v: np.ndarray, groups: np.ndarray, w: np.ndarray, stat: str) -> np.ndarray:
    if stat not in ("difference", "ratio"):
        raise InputError(f"gap stat {stat!r} must be 'difference' or 'ratio'")
    size = int(groups.max()) + 1 if groups.size and groups.max() >= 0 else 0
    if size == 0:
        return np.full(w.shape[0], np.nan)
    means = _group_sums(w, groups, v, size) / _group_sums(w, groups, np.ones_like(v), size)
    hi, lo = _nan_reduce(means.T, np.nanmax), _nan_reduce(means.T, np.nanmin)
    return hi - lo if stat == "difference" else lo / hi


def _ece(conf: np.ndarray, correct: np.ndarray, bins: int, w: np.ndarray) -> np.ndarray:
    index = np.clip((conf * bins).astype(np.int64), 0, bins - 1)
    return np.abs(_group_sums(w, index, conf - correct, bins)).sum(1) / w.sum(1)


def _sorted_groups(score: np.ndarray, positive: np.ndarray, w: np.ndarray, descending: bool):
    """Weighted positives and negatives per distinct score, in score order: two ``(B, G)`` arrays."""
    order = np.argsort(-score if descending else score, kind="mergesort")
    s = score[order]
    start = np.r_[True, s[1:] != s[:-1]]
    gid = np.cumsum(start) - 1
    size = int(gid[-1]) + 1 if len(gid) else 0
    index = np.empty(len(score), np.int64)
    index[order] = gid
    pos = _group_sums(w, index, positive.astype(np.float64), size)
    neg = _group_sums(w, index, (~positive).astype(np.float64), size)
    return pos, neg


def _auc(score: np.ndarray, positive: np.ndarray, w: np.ndarray) -> np.ndarray:
    pos, neg = _sorted_groups(score, positive, w, descending=False)
    below = np.cumsum(neg, axis=1) - neg  # negatives scored strictly below each distinct score
    return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _tpr_at_fpr(score: np.ndarray, positive: np.ndarray, fpr: float, w: np.ndarray) -> np.ndarray:
    pos, neg = _sorted_groups(score, positive, w, descending=True)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    allowed = np.floor(fpr * neg.sum(1) + 1e-9)
    # fp rises with a looser threshold: the loosest admissible point is the last with fp <= allowed
    k = (fp <= allowed[:, None] + 1e-9).sum(1)
    out = np.where(k > 0, np.take_along_axis(tp, np.maximum(k - 1, 0)[:, None], axis=1)[:, 0], 0.0) / pos.sum(1)
    return np.where((fpr > 0) & (allowed < 1), np.nan, out)
