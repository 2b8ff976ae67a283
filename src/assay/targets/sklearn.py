"""scikit-learn estimators (and anything with the same ``predict_proba`` / ``predict`` API)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from assay.errors import TargetError
from assay.targets.base import LABELS, SCORES, Target

_SMALL_BATCH = 4096  # rows below which one OpenMP thread beats many (see SklearnTarget._predict)


@functools.cache
def _openmp_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class SklearnTarget(Target):
    """A fitted scikit-learn classifier, queried on float inputs.

    What the target returns depends on what the estimator offers (or on ``output``):

    ``"probs"``   ``predict_proba`` (preferred when present)
    ``"logits"``  ``decision_function``; a binary decision value ``d`` (shape ``(N,)``) becomes the
                  two scores ``[-d/2, d/2]``, so ``softmax`` of them is ``[sigmoid(-d), sigmoid(d)]``
                  and the argmax is the estimator's own decision
    ``"labels"``  ``predict`` only: a label-only target (no ``scores`` capability)

    Column ``i`` of the scores (and label ``i``) is ``estimator.classes_[i]``; label-only
    predictions are mapped to that index too, so labels are always integers in
    ``[0, num_classes)`` whatever the estimator's own class values are.

    Inputs of any per-sample shape are flattened to ``(N, n_features)`` before the estimator sees
    them, so a classifier trained on flattened 8x8 images can be audited on ``(1, 8, 8)`` inputs.

    Parameters
    ----------
    estimator : a fitted classifier.
    input_shape : per-sample shape; default ``(n_features_in_,)``.
    num_classes : default ``len(estimator.classes_)``.
    bounds : valid input range; default ``(-inf, inf)`` (tabular features have no natural range).
        Pass the real range (e.g. ``(0, 1)``) to let attacks clip to it.
    output : ``"auto"`` (default), ``"probs"``, ``"logits"`` or ``"labels"``.
    query_budget : hard limit on queried samples.

    Example
    -------
    >>> from sklearn.linear_model import LogisticRegression
    >>> import numpy as np, torch
    >>> clf = LogisticRegression().fit(np.eye(3), [0, 1, 2])
    >>> t = SklearnTarget(clf)
    >>> t.scores(torch.eye(3)).argmax(1).tolist()
    [0, 1, 2]
    """

    kind = "sklearn"

    def __init__(
        self,
        estimator,
        *,
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        bounds: tuple[float, float] | None = None,
        output: str = "auto",
        query_budget: int | None = None,
        batch_size: int = 1024,
        name: str | None = None,
    ):
        if not hasattr(estimator, "predict"):
            raise TargetError(
                f"{type(estimator).__name__} has no predict(); pass a fitted scikit-learn classifier"
            )
        classes = getattr(estimator, "classes_", None)
        if input_shape is None:
            n_features = getattr(estimator, "n_features_in_", None)
            if n_features is None:
                raise TargetError(
                    f"cannot tell how many features {type(estimator).__name__} expects (it is unfitted or "
                    "has no n_features_in_); pass --input-shape N_FEATURES"
                )
            input_shape = (int(n_features),)
        if num_classes is None:
            if classes is None:
                raise TargetError(
                    f"{type(estimator).__name__} has no classes_ (not a fitted classifier?); pass --num-classes"
                )
            num_classes = len(classes)
        if output == "auto":
            output = (
                "probs" if hasattr(estimator, "predict_proba")
                else "logits" if hasattr(estimator, "decision_function")
                else "labels"
            )
        method = {"probs": "predict_proba", "logits": "decision_function", "labels": "predict"}.get(output)
        if method is None:
            raise TargetError(f"output={output!r} is not one of auto, probs, logits, labels")
        if not hasattr(estimator, method):
            raise TargetError(f"{type(estimator).__name__} has no {method}(); choose another output")
        self.estimator = estimator
        self.output = output
        self._classes = None if classes is None else np.asarray(classes)
        caps = {LABELS} if output == "labels" else {SCORES, LABELS}
        super().__init__(
            num_classes=num_classes,
            input_shape=tuple(input_shape),
            bounds=bounds if bounds is not None else (-math.inf, math.inf),
            capabilities=caps,
            query_budget=query_budget,
            batch_size=batch_size,
            name=name or type(estimator).__name__,
        )

    def _predict(self, method: str, a: np.ndarray) -> np.ndarray:
        """Call the estimator; small batches run on one OpenMP thread. Attacks query small batches
        thousands of times, and OpenMP's thread start-up and spin-waits then cost more than the
        work: a 4-class HistGradientBoosting on 100 rows took 1,070 ms per call with the default
        threads on a busy 2-core machine and 47 ms with one."""
        fn = getattr(self.estimator, method)
        if len(a) >= _SMALL_BATCH:
            return fn(a)
        with _openmp_controller().limit(limits=1, user_api="openmp"):
            return fn(a)

    def _features(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().reshape(len(x), -1).numpy().astype(np.float32, copy=False)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        a = self._features(x)
        if self.output == "probs":
            s = np.asarray(self._predict("predict_proba", a), dtype=np.float32)
        else:
            s = np.asarray(self._predict("decision_function", a), dtype=np.float32)
            if s.ndim == 1:  # binary: one margin d for the positive class
                s = np.stack([-s / 2, s / 2], axis=1)
        if s.shape != (len(a), self.num_classes):
            raise TargetError(
                f"{self.name} returned scores of shape {s.shape}, expected ({len(a)}, {self.num_classes}); "
                "check --num-classes"
            )
        return torch.from_numpy(np.ascontiguousarray(s))

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        pred = np.asarray(self._predict("predict", self._features(x)))
        if self._classes is None:
            idx = pred.astype(np.int64)
        else:
            # classes_ is sorted by scikit-learn, so searchsorted maps a class value to its index
            idx = np.searchsorted(self._classes, pred)
            idx = np.clip(idx, 0, len(self._classes) - 1)
            if not np.array_equal(self._classes[idx], pred):
                raise TargetError(f"{self.name} predicted a class outside its classes_; refit the estimator")
        return torch.from_numpy(idx.astype(np.int64))

    def content_digest(self) -> str:
        from assay.targets.identity import estimator_digest

        return estimator_digest(self.estimator)

    def describe(self):
        d = super().describe()
        d["estimator"] = type(self.estimator).__name__
        if self._classes is not None:
            d["classes"] = [c.item() if hasattr(c, "item") else c for c in self._classes]
        return d
