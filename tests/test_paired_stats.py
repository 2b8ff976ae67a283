"""Paired statistics (assay.stats) and per-sample outcome recipes (assay.outcomes) against hand
computation and reference implementations (statsmodels, scipy, sklearn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from assay import outcomes as oc
from assay.errors import InputError
from assay.stats import (
    benjamini_hochberg,
    index_bootstrap_weights,
    mcnemar_mde,
    mcnemar_outcomes,
    paired_bootstrap,
    unpaired_delta,
)


def _pairs(n11, n10, n01, n00):
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00, bool)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00, bool)
    return a, b


def test_mcnemar_hand_computed():
    # 6 lost, 1 gained: p = 2 * P(Bin(7, 1/2) <= 1) = 2 * (1 + 7) / 128 = 0.125
    r = mcnemar_outcomes(*_pairs(40, 6, 1, 10))
    assert (r["lost"], r["gained"], r["n"]) == (6, 1, 57)
    assert r["p"] == pytest.approx(0.125, abs=1e-12)
    # no discordant pair: no evidence at all
    assert mcnemar_outcomes(*_pairs(5, 0, 0, 5))["p"] == 1.0
    # symmetric discordance: the two-sided p is capped at 1
    assert mcnemar_outcomes(*_pairs(0, 3, 3, 0))["p"] == 1.0


@pytest.mark.parametrize("cells", [(40, 6, 1, 10), (100, 20, 9, 30), (3, 0, 12, 4), (50, 17, 17, 1), (0, 1, 0, 0)])
def test_mcnemar_matches_statsmodels(cells):
    from statsmodels.stats.contingency_tables import mcnemar

    n11, n10, n01, n00 = cells
    ref = mcnemar(np.array([[n11, n10], [n01, n00]]), exact=True)
    assert mcnemar_outcomes(*_pairs(*cells))["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_mcnemar_refuses_unpaired_lengths():
    with pytest.raises(ValueError):
        mcnemar_outcomes([1, 0, 1], [1, 0])


def test_paired_bootstrap_equals_scipy_on_the_same_resamples():
    """scipy.stats.bootstrap(paired=True, method='percentile') draws row indices with
    rng.integers(0, n, (B, n)); with the same generator, index_bootstrap_weights draws the same
    resamples, so the percentile intervals agree to float precision."""
    rng = np.random.default_rng(5)
    n = 150
    a = rng.random(n) < 0.8
    b = a.copy()
    flip = rng.random(n) < 0.15
    b[flip] = ~b[flip]
    ref = sst.bootstrap((a.astype(float), b.astype(float)), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
                        paired=True, vectorized=True, n_resamples=999, batch=999, method="percentile",
                        confidence_level=0.9, random_state=np.random.default_rng(11))

    def delta(w):
        return (w @ b.astype(float) - w @ a.astype(float)) / w.sum(1)

    ours = paired_bootstrap(delta, n, level=0.9, weights=index_bootstrap_weights(n, 999, np.random.default_rng(11)))
    assert ours.estimate == pytest.approx(b.mean() - a.mean())
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=1e-12)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=1e-12)
    assert ours.se == pytest.approx(ref.standard_error, rel=1e-9)


def test_paired_bootstrap_pairing_cancels_shared_noise():
    """Two scores that share most of their per-row noise: the paired interval of the difference is
    far narrower than the unpaired one built from the two marginal intervals."""
    rng = np.random.default_rng(0)
    n = 400
    shared = rng.normal(size=n)
    a, b = shared + 0.05 * rng.normal(size=n), shared + 0.1 + 0.05 * rng.normal(size=n)
    paired = paired_bootstrap(lambda w: (w @ b - w @ a) / w.sum(1), n, n_boot=2000, seed=1)
    se = a.std(ddof=1) / math.sqrt(n)
    z = sst.norm.ppf(0.975)
    unpaired = unpaired_delta(a.mean(), a.mean() - z * se, a.mean() + z * se, b.mean(), b.mean() - z * se, b.mean() + z * se)
    assert paired.low > 0.08 and paired.high < 0.12 and paired.p < 0.01
    assert (paired.high - paired.low) < 0.2 * (unpaired.high - unpaired.low)
    assert unpaired.p > 0.05  # the same difference is invisible without the pairing


def test_unpaired_delta_hand_computed():
    # se_a = 0.1 / (2 * 1.96) etc.; z test of 0.1 over sqrt(se_a^2 + se_b^2)
    z = sst.norm.ppf(0.975)
    u = unpaired_delta(0.5, 0.45, 0.55, 0.6, 0.55, 0.65)
    se = math.hypot(0.05 / z, 0.05 / z)
    assert u.se == pytest.approx(se)
    assert u.p == pytest.approx(2 * sst.norm.sf(0.1 / se))
    assert math.isnan(unpaired_delta(0.5, None, None, 0.6, 0.5, 0.7).p)


def test_mcnemar_mde_is_the_effect_with_the_stated_power():
    """At the MDE, Connor's power formula gives the stated power; a simulation of McNemar's exact test
    at that effect has about that power (exact tests are conservative, so at most a little less)."""
    n, disc = 300, 0.1
    d = mcnemar_mde(n, disc, alpha=0.05, power=0.8)
    za, zb = sst.norm.ppf(0.975), sst.norm.ppf(0.8)
    assert n == pytest.approx((za * math.sqrt(disc) + zb * math.sqrt(disc - d * d)) ** 2 / d ** 2, rel=1e-6)
    rng = np.random.default_rng(0)
    lost_p, gained_p = (disc + d) / 2, (disc - d) / 2
    hits = 0
    for _ in range(400):
        u = rng.random(n)
        lost, gained = int((u < lost_p).sum()), int(((u >= lost_p) & (u < lost_p + gained_p)).sum())
        p = min(1.0, 2 * sst.binom.cdf(min(lost, gained), lost + gained, 0.5)) if lost + gained else 1.0
        hits += p <= 0.05
    assert 0.65 <= hits / 400 <= 0.9
    assert mcnemar_mde(4 * n, disc) < d  # more rows detect smaller changes


def test_false_positive_rate_of_mcnemar_and_bootstrap_with_fdr_is_nominal():
    """Exchangeable pairs (each row's two outcomes drawn alike): over many simulated comparisons of
    several metrics each, the share of comparisons with any BH-significant metric stays near or below
    the nominal 5% (BH controls the FDR; under the global null it controls the family-wise rate)."""
    rng = np.random.default_rng(1)
    n, runs, flagged = 200, 200, 0
    for r in range(runs):
        ps = []
        for _ in range(3):  # three binary metrics: McNemar
            base = rng.random(n) < 0.7
            noise = rng.random(n) < 0.1
            cand = np.where(noise, rng.random(n) < 0.7, base)
            base, cand = (cand, base) if rng.random() < 0.5 else (base, cand)
            ps.append(mcnemar_outcomes(base, cand)["p"])
        score_a = rng.normal(size=n)  # one continuous metric: paired bootstrap of a mean
        score_b = score_a + rng.normal(scale=0.3, size=n)
        ps.append(paired_bootstrap(lambda w, a=score_a, b=score_b: (w @ b - w @ a) / w.sum(1), n, n_boot=500, seed=r).p)
        flagged += bool((benjamini_hochberg(np.array(ps)) <= 0.05).any())
    assert flagged / runs <= 0.09


# --------------------------------------------------------------------------- outcomes
def test_outcome_vectors_round_trip_and_reject_garbage():
    o = oc.Outcomes()
    o.bits("c", "correct", [True, False, True] * 7)
    o.ints("g", "group", [0, 1, -1] * 7)
    o.floats("s", "score", np.linspace(0, 1, 21))
    v = oc.decode(o.to_dict())
    assert v["c"].tolist() == [True, False, True] * 7
    assert v["g"].tolist() == [0, 1, -1] * 7
    assert np.array_equal(v["s"], np.linspace(0, 1, 21))
    bad = o.to_dict()
    bad["vectors"]["c"]["n"] = 50
    with pytest.raises(InputError, match="holds"):
        oc.decode(bad)
    with pytest.raises(InputError, match="kind"):
        oc.Outcomes().bits("x", "nonsense", [1])
    with pytest.raises(InputError, match="not added"):
        oc.Outcomes().recipe("m", oc.mean("missing"))


def test_recipes_match_reference_metrics_with_weights():
    from sklearn.metrics import roc_auc_score

    from assay.metrics.calibration import CalibrationTerms
    from assay.metrics.privacy import tpr_at_fpr

    rng = np.random.default_rng(3)
    n = 300
    score = rng.normal(size=n).round(2)
    member = rng.random(n) < 0.5
    score[member] += 0.7
    group = rng.integers(0, 3, n)
    correct = rng.random(n) < np.array([0.9, 0.8, 0.6])[group]
    v = {"s": score, "m": member, "g": group, "c": correct}
    w = rng.integers(0, 3, (4, n)).astype(float)
    auc = oc.evaluate(oc.auc("s", "m"), v, w)
    assert auc == pytest.approx([roc_auc_score(member, score, sample_weight=wi) for wi in w], abs=1e-12)
    gap = oc.evaluate(oc.gap("c", "g"), v, w)
    for wi, gi in zip(w, gap):
        means = [np.average(correct[group == k], weights=wi[group == k]) for k in range(3)]
        assert gi == pytest.approx(max(means) - min(means))
    ones = np.ones((1, n))
    assert oc.evaluate(oc.tpr_at_fpr("s", "m", 0.05), v, ones)[0] == pytest.approx(tpr_at_fpr(score, member, 0.05).value)
    probs = np.stack([rng.random(n) * 0.5 + 0.5, np.zeros(n)], 1)
    probs[:, 1] = 1 - probs[:, 0]
    y = (rng.random(n) < 0.3).astype(int)
    terms = CalibrationTerms(probs, y, 10)
    vv = {"conf": terms.conf, "ok": terms.correct.astype(bool)}
    assert oc.evaluate(oc.ece("conf", "ok", 10), vv, w) == pytest.approx(terms.evaluate(w)["ece"], abs=1e-12)
