import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from assay.data import Dataset, validate
from assay.errors import BudgetExceeded, TargetError
from assay.targets import LABELS, SCORES, SklearnTarget


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]], dtype=np.float32)
    y = rng.integers(0, 3, size=150)
    x = (centers[y] + rng.normal(size=(150, 4))).astype(np.float32)
    return x, y


def test_predict_proba_scores_match_and_shape_is_inferred(blobs):
    x, y = blobs
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    t = SklearnTarget(clf, query_budget=200)
    assert t.output == "probs" and t.input_shape == (4,) and t.num_classes == 3
    assert t.bounds == (-math.inf, math.inf) and t.has(SCORES, LABELS)
    s = t.scores(torch.from_numpy(x[:20]))
    np.testing.assert_allclose(s.numpy(), clf.predict_proba(x[:20]), atol=1e-6)
    assert torch.equal(t.labels(torch.from_numpy(x[:20])), torch.from_numpy(clf.predict(x[:20])))
    assert t.queries == 40
    # infinite bounds pass validation for any finite data
    validate(Dataset(x=x * 100, y=y), t)
    with pytest.raises(BudgetExceeded):
        t.scores(torch.zeros(161, 4))
    assert t.queries == 40  # refused without charging


def test_binary_decision_function_becomes_symmetric_logits(blobs):
    x, y = blobs
    yb = (y == 1).astype(int)
    svm = LinearSVC().fit(x, yb)
    t = SklearnTarget(svm)
    assert t.output == "logits" and t.num_classes == 2
    s = t.scores(torch.from_numpy(x))
    d = svm.decision_function(x)
    np.testing.assert_allclose(s[:, 1].numpy(), d / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s[:, 0].numpy(), -d / 2, rtol=1e-5, atol=1e-6)
    # softmax of [-d/2, d/2] is the logistic of the margin, and the argmax is the SVM's decision
    np.testing.assert_allclose(t.probs(torch.from_numpy(x))[:, 1].numpy(), 1 / (1 + np.exp(-d)), rtol=1e-4)
    assert (t.labels(torch.from_numpy(x)).numpy() == svm.predict(x)).all()


def test_multiclass_decision_function_and_forced_output(blobs):
    x, y = blobs
    clf = LogisticRegression().fit(x, y)
    t = SklearnTarget(clf, output="logits")
    np.testing.assert_allclose(t.scores(torch.from_numpy(x)).numpy(), clf.decision_function(x), rtol=1e-5, atol=1e-5)


class _PredictOnly:
    """A label-only model whose classes are strings."""

    classes_ = np.array(["cat", "dog"])
    n_features_in_ = 64

    def predict(self, a):
        return np.where(a.sum(axis=1) > 32, "dog", "cat")


def test_predict_only_is_label_only_and_maps_classes_to_indices():
    t = SklearnTarget(_PredictOnly(), input_shape=(1, 8, 8), bounds=(0.0, 1.0))
    assert t.output == "labels" and not t.has(SCORES)
    x = torch.zeros(3, 1, 8, 8)
    x[1] = 1.0
    assert t.labels(x).tolist() == [0, 1, 0]
    assert t.queries == 3
    with pytest.raises(TargetError, match="hard labels only"):
        t.scores(x)
    assert t.describe()["classes"] == ["cat", "dog"]
    assert SklearnTarget(_PredictOnly()).describe()["bounds"] == [None, None]


def test_errors_are_one_line():
    with pytest.raises(TargetError, match="predict") as e:
        SklearnTarget(object())
    assert "\n" not in str(e.value)
    with pytest.raises(TargetError, match="input-shape"):
        SklearnTarget(LogisticRegression())
    clf = LogisticRegression().fit(np.eye(3), [0, 1, 2])
    with pytest.raises(TargetError, match="output"):
        SklearnTarget(clf, output="bogus")


def test_small_batches_run_on_one_openmp_thread_and_large_ones_on_all(blobs):
    """Attack loops send thousands of small batches; OpenMP's many-thread start-up made a
    HistGradientBoosting call 20x slower on a busy machine. Small batches are limited to one thread."""
    from threadpoolctl import threadpool_info

    from assay.targets import sklearn as sk

    x, y = blobs
    seen = []

    class Probe(LogisticRegression):
        def predict_proba(self, a):
            seen.append((len(a), [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]))
            return super().predict_proba(a)

    est = Probe(max_iter=300).fit(x, y)
    t = SklearnTarget(est)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"]
    if not before:
        pytest.skip("no OpenMP runtime loaded")
    small = t.scores(torch.as_tensor(x[:10], dtype=torch.float32))
    big_x = np.repeat(x, sk._SMALL_BATCH // len(x) + 1, axis=0)
    t.batch_size = len(big_x)
    t.scores(torch.as_tensor(big_x, dtype=torch.float32))
    assert seen[0] == (10, [1] * len(before))
    assert seen[1][0] >= sk._SMALL_BATCH and seen[1][1] == before
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"] == before  # restored
    assert np.allclose(small.numpy(), LogisticRegression(max_iter=300).fit(x, y).predict_proba(x[:10]), atol=1e-6)
