import numpy as np
import pandas as pd
import pytest

from assay.errors import InputError
from assay.metrics.groups import (
    GroupMetrics,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    equalized_odds_ratio,
    predictive_parity_difference,
)
from assay.metrics.slices import find_slices
from assay.stats import benjamini_hochberg, holm


def test_hand_computed_small():
    # group a: y=[1,1,0,0] p=[1,0,1,0]; group b: y=[1,0,0] p=[1,1,1]
    y = [1, 1, 0, 0, 1, 0, 0]
    p = [1, 0, 1, 0, 1, 1, 1]
    s = ["a"] * 4 + ["b"] * 3
    gm = GroupMetrics(["accuracy", "selection_rate", "tpr", "fpr", "fnr", "tnr", "ppv", "count"], y, p, s, min_group_size=1)
    a, b = gm.by_group.loc["a"], gm.by_group.loc["b"]
    assert a.tolist() == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 4.0]
    assert b.accuracy == pytest.approx(1 / 3) and b.selection_rate == 1.0 and b.tpr == 1.0
    assert b.fpr == 1.0 and b.tnr == 0.0 and b.ppv == pytest.approx(1 / 3) and b["count"] == 3
    assert gm.overall.accuracy == pytest.approx(3 / 7)
    assert gm.difference()["selection_rate"] == pytest.approx(0.5)
    assert gm.ratio()["selection_rate"] == pytest.approx(0.5)
    # to_overall: overall selection 5/7; |0.5 - 5/7| vs |1 - 5/7|
    assert gm.difference("to_overall")["selection_rate"] == pytest.approx(2 / 7)
    assert gm.ratio("to_overall")["selection_rate"] == pytest.approx(0.5 / (5 / 7))
    assert gm.group_min()["accuracy"] == pytest.approx(1 / 3) and gm.group_max()["accuracy"] == 0.5


def test_calibration_error_and_log_loss_by_hand():
    y = [1, 0, 1, 0]
    score = [0.9, 0.9, 0.2, 0.2]  # bins 9 and 2, one group each
    gm = GroupMetrics(["calibration_error", "log_loss"], y, [1, 1, 0, 0], ["a", "a", "b", "b"], y_score=score, min_group_size=1)
    # group a: one bin, mean p 0.9, frequency 0.5 -> 0.4; group b: mean p 0.2, frequency 0.5 -> 0.3
    assert gm.by_group["calibration_error"].tolist() == pytest.approx([0.4, 0.3])
    ll_a = -(np.log(0.9) + np.log(0.1)) / 2
    assert gm.by_group["log_loss"].loc["a"] == pytest.approx(ll_a)


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(3)
    n = 3000
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.75, y, 1 - y)
    s = pd.DataFrame({"sex": rng.choice(["f", "m"], n), "age": rng.choice(["<30", "30-60", ">60"], n, p=[0.3, 0.5, 0.2])})
    p[(s.sex == "f").to_numpy() & (rng.random(n) < 0.2)] = 0  # some real disparity
    score = np.clip(np.where(p == 1, 0.7, 0.3) + rng.normal(0, 0.15, n), 0.01, 0.99)
    return y, p, s, score


def test_equals_fairlearn(random_data):
    fl = pytest.importorskip("fairlearn.metrics")
    from sklearn.metrics import accuracy_score, log_loss, precision_score

    y, p, s, score = random_data
    ours = GroupMetrics(["accuracy", "selection_rate", "tpr", "fpr", "fnr", "tnr", "ppv", "count"], y, p, s)
    theirs = fl.MetricFrame(
        metrics={"accuracy": accuracy_score, "selection_rate": fl.selection_rate, "tpr": fl.true_positive_rate,
                 "fpr": fl.false_positive_rate, "fnr": fl.false_negative_rate, "tnr": fl.true_negative_rate,
                 "ppv": precision_score, "count": fl.count},
        y_true=y, y_pred=p, sensitive_features=s)
    cols = list(theirs.by_group.columns)
    np.testing.assert_allclose(ours.by_group[cols].to_numpy(), theirs.by_group.to_numpy(), atol=1e-12)
    assert list(ours.by_group.index) == list(theirs.by_group.index)
    np.testing.assert_allclose(ours.overall[cols].to_numpy(), theirs.overall.to_numpy(dtype=float), atol=1e-12)
    for method in ("between_groups", "to_overall"):
        np.testing.assert_allclose(ours.difference(method)[cols].to_numpy(), theirs.difference(method).to_numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.ratio(method)[cols].to_numpy(), theirs.ratio(method).to_numpy(), atol=1e-12)
    kw = {"sensitive_features": s}
    assert demographic_parity_difference(y, p, **kw) == pytest.approx(fl.demographic_parity_difference(y, p, **kw))
    assert demographic_parity_ratio(y, p, **kw) == pytest.approx(fl.demographic_parity_ratio(y, p, **kw))
    assert equalized_odds_difference(y, p, **kw) == pytest.approx(fl.equalized_odds_difference(y, p, **kw))
    assert equalized_odds_ratio(y, p, **kw) == pytest.approx(fl.equalized_odds_ratio(y, p, **kw))
    assert equalized_odds_difference(y, p, agg="mean", **kw) == pytest.approx(fl.equalized_odds_difference(y, p, agg="mean", **kw))
    assert equal_opportunity_difference(y, p, **kw) == pytest.approx(fl.equal_opportunity_difference(y, p, **kw))
    # predictive parity has no fairlearn helper: compare with a MetricFrame of precision
    pp = fl.MetricFrame(metrics=precision_score, y_true=y, y_pred=p, sensitive_features=s).difference()
    assert predictive_parity_difference(y, p, **kw) == pytest.approx(pp)
    ll = GroupMetrics(["log_loss"], y, p, s, y_score=score).by_group["log_loss"].to_numpy()
    ref = fl.MetricFrame(metrics=lambda a, b: log_loss(a, b, labels=[0, 1]), y_true=y, y_pred=score, sensitive_features=s)
    np.testing.assert_allclose(ll, ref.by_group.to_numpy(), rtol=1e-10)


def test_bootstrap_is_a_row_bootstrap(random_data):
    """Cell multinomial draws and per-row weights must give the same interval (same distribution)."""
    y, p, s, score = random_data
    fast = GroupMetrics(["accuracy"], y, p, s["sex"]).bootstrap(2000, seed=1)
    rows = GroupMetrics(["accuracy", "log_loss"], y, p, s["sex"], y_score=score).bootstrap(2000, seed=2)
    lo_f, hi_f = fast.by_group
    lo_r, hi_r = rows.by_group
    np.testing.assert_allclose(lo_f["accuracy"], lo_r["accuracy"], atol=0.006)
    np.testing.assert_allclose(hi_f["accuracy"], hi_r["accuracy"], atol=0.006)
    # interval width close to the binomial normal approximation of each group
    gm = GroupMetrics(["accuracy"], y, p, s["sex"])
    acc, n = gm.by_group["accuracy"].to_numpy(), gm.sizes
    np.testing.assert_allclose((hi_f - lo_f)["accuracy"], 2 * 1.96 * np.sqrt(acc * (1 - acc) / n), rtol=0.1)
    d = fast.difference()
    assert d.loc["accuracy", "low"] <= d.loc["accuracy", "high"]


def test_gap_test_detects_real_gap_and_not_noise():
    rng = np.random.default_rng(0)
    n = 4000
    g = rng.choice(["a", "b", "c"], n)
    y = np.zeros(n, int)
    fair = (rng.random(n) < 0.4).astype(int)
    biased = np.where(g == "a", rng.random(n) < 0.2, rng.random(n) < 0.4).astype(int)
    assert GroupMetrics(["selection_rate"], y, biased, g).gap_test("selection_rate")["significant"]
    assert not GroupMetrics(["selection_rate"], y, fair, g).gap_test("selection_rate")["significant"]
    tests = GroupMetrics(["selection_rate"], y, biased, g).pairwise_tests("selection_rate")
    assert len(tests) == 3 and (tests.p_adjusted >= tests.p_value).all()


def test_p_value_corrections_by_hand():
    p = np.array([0.01, 0.04, 0.03])
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.03, 0.04, 0.04])


def test_small_groups_flagged():
    y = np.zeros(100, int)
    g = np.array(["big"] * 90 + ["tiny"] * 10)
    gm = GroupMetrics(["accuracy"], y, y, g)
    assert gm.small_groups == ["tiny"]


def test_bad_inputs():
    with pytest.raises(InputError, match="single group"):
        GroupMetrics(["accuracy"], [0, 1], [0, 1], ["a", "a"])
    with pytest.raises(InputError, match="sensitive_features is missing"):
        GroupMetrics(["accuracy"], [0, 1], [0, 1], None)
    with pytest.raises(InputError, match="one value per row"):
        GroupMetrics(["accuracy"], [0, 1, 1], [0, 1, 1], ["a", "b"])
    with pytest.raises(InputError, match="unknown metric"):
        GroupMetrics(["accurracy"], [0, 1], [0, 1], ["a", "b"])
    with pytest.raises(InputError, match="y_score"):
        GroupMetrics(["log_loss"], [0, 1], [0, 1], ["a", "b"])


def test_find_slices_recovers_planted_slice_and_controls_false_discoveries():
    rng = np.random.default_rng(1)
    n = 4000
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.integers(0, 3, n)})
    y = rng.integers(0, 2, n)
    p = np.where(rng.random(n) < 0.9, y, 1 - y)
    clean = find_slices(X, y, p)
    assert len(clean.significant) <= 1  # BH at 5%: noise rarely yields a discovery
    planted = (X.b > 0.67).to_numpy() & (X.c == 2).to_numpy()
    p2 = p.copy()
    flip = planted & (rng.random(n) < 0.5)
    p2[flip] = 1 - y[flip]
    rep = find_slices(X, y, p2)
    top = rep.significant[0]
    assert {f for f, _ in top.conditions} == {"b", "c"} and "= 2" in top.description
    assert top.effect > 0.3
    # counts by hand for the top slice: top quartile of b (quantile-bin edge) and c == 2
    edge = np.quantile(X.b, 0.75)
    assert top.size == int(((X.b >= edge) & (X.c == 2)).sum())
