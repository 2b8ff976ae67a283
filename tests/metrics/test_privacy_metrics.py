"""Membership metrics against scikit-learn and hand-computed values; attacks against analytic ROCs."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from assay.attacks.privacy import lira_scores, logit_confidence, rmia_scores
from assay.attacks.privacy.reference import balanced_membership
from assay.errors import InputError
from assay.metrics.privacy import auc, epsilon_lower_bound, exposure, membership_advantage, roc, tpr_at_fpr
from assay.stats import clopper_pearson


def _random(n=2000, seed=0, ties=True):
    rng = np.random.default_rng(seed)
    m = rng.random(n) < 0.4
    s = rng.normal(size=n) + 0.8 * m
    if ties:
        s = np.round(s, 1)  # many ties: the hard case for ROC code
    return s, m


@pytest.mark.parametrize("ties", [True, False])
def test_roc_and_auc_match_sklearn(ties):
    s, m = _random(ties=ties)
    fpr, tpr, thr = roc_curve(m, s, drop_intermediate=False)
    r = roc(s, m)
    np.testing.assert_allclose(r.fpr, fpr)
    np.testing.assert_allclose(r.tpr, tpr)
    np.testing.assert_allclose(r.thresholds[1:], thr[1:])
    assert auc(s, m) == pytest.approx(roc_auc_score(m, s), abs=1e-12)
    assert membership_advantage(s, m) == pytest.approx(np.max(tpr - fpr))


@pytest.mark.parametrize("target", [0.0, 0.001, 0.01, 0.1, 0.37])
def test_tpr_at_fpr_matches_sklearn_operating_point(target):
    s, m = _random(n=5000, seed=1)
    fpr, tpr, _ = roc_curve(m, s, drop_intermediate=False)
    expected = tpr[fpr <= target + 1e-12].max()
    r = tpr_at_fpr(s, m, target)
    assert r.estimable and r.value == pytest.approx(expected)
    assert r.fpr_achieved <= target + 1e-12
    # the threshold really has that operating point
    pred = s >= r.threshold
    assert (pred & m).sum() == r.true_positives
    assert (pred & ~m).sum() / (~m).sum() == pytest.approx(r.fpr_achieved)
    iv = clopper_pearson(r.true_positives, int(m.sum()))
    assert (r.low, r.high) == pytest.approx((iv.low, iv.high))


def test_interval_narrows_with_more_members():
    widths = []
    for n in (200, 2000, 20000):
        s, m = _random(n=n, seed=2, ties=False)
        r = tpr_at_fpr(s, m, 0.01)
        assert r.low <= r.value <= r.high
        widths.append(r.high - r.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] < 0.03


def test_not_estimable_is_nan_not_zero():
    s, m = _random(n=1000, seed=3)  # about 600 non-members
    r = tpr_at_fpr(s, m, 0.001)
    assert not r.estimable and math.isnan(r.value) and "not estimable" in r.note and "1000" in r.note
    assert tpr_at_fpr(s, m, 0.01).estimable
    assert tpr_at_fpr(s, m, 0.0).estimable  # TPR at zero FPR is always measurable


def test_tpr_at_zero_fpr_by_hand():
    s = [10, 9, 8, 7, 6, 5]
    m = [1, 1, 0, 1, 0, 0]
    assert tpr_at_fpr(s, m, 0.0).value == pytest.approx(2 / 3)
    assert tpr_at_fpr(s, m, 0.34).value == pytest.approx(1.0)


def test_metrics_reject_bad_input():
    with pytest.raises(InputError, match="both members and non-members"):
        auc([0.1, 0.2], [True, True])
    with pytest.raises(InputError, match="one label per score"):
        auc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(InputError, match="NaN"):
        auc([0.1, float("nan")], [True, False])


def test_epsilon_bound_by_hand_and_on_chance():
    # perfect separation of 500 vs 500: FPR_hi and FNR_hi are the one-sided 97.5% CP bounds of 0/500
    s = np.r_[np.ones(500), np.zeros(500)]
    m = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    e = epsilon_lower_bound(s, m, select="best")
    upper = 1 - 0.025 ** (1 / 500)  # exact CP upper bound for 0 successes at one-sided 97.5%
    assert e.epsilon == pytest.approx(math.log((1 - upper) / upper), rel=1e-6)
    # scores independent of membership: the split-selected bound is (near) zero
    rng = np.random.default_rng(0)
    chance = epsilon_lower_bound(rng.normal(size=4000), rng.random(4000) < 0.5)
    assert chance.epsilon < 0.15
    # delta loosens the bound
    assert epsilon_lower_bound(s, m, select="best", delta=0.1).epsilon < e.epsilon


def test_exposure_is_fraction_of_nonmembers_at_or_above():
    s = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    m = np.array([True, False, True, False, False])
    np.testing.assert_allclose(exposure(s, m), [0, 1 / 3, 1 / 3, 2 / 3, 1.0])


# ------------------------------------------------ attacks with a known optimal test
def _gaussian_world(n=20000, n_ref=64, d=2.0, seed=0):
    """phi_IN ~ N(mu_n + d, 1), phi_OUT ~ N(mu_n, 1), mu_n varying a lot between examples: the
    optimal test thresholds phi - mu_n, whose ROC is TPR = Phi(Phi^-1(FPR) + d)."""
    g = torch.Generator().manual_seed(seed)
    mu = 3.0 * torch.randn(n, generator=g, dtype=torch.float64)
    member = torch.rand(n, generator=g) < 0.5
    in_mask = balanced_membership(n_ref, n, seed)
    ref = mu + d * in_mask.double() + torch.randn(n_ref, n, generator=g, dtype=torch.float64)
    target = mu + d * member.double() + torch.randn(n, generator=g, dtype=torch.float64)
    return target, ref, in_mask, member.numpy()


def _analytic(fpr, d):
    return norm.cdf(norm.ppf(fpr) + d)


@pytest.mark.parametrize("variant", ["online", "offline"])
def test_lira_recovers_the_optimal_roc(variant):
    d = 2.0
    target, ref, in_mask, member = _gaussian_world(d=d)
    s = lira_scores(target, ref, in_mask, variant=variant, fixed_variance=True).numpy()
    for f in (0.1, 0.01, 0.001):
        got = tpr_at_fpr(s, member, f).value
        assert got == pytest.approx(_analytic(f, d), abs=0.05 + 0.25 * _analytic(f, d) * (f < 0.005)), f
    # the global-threshold baseline on phi alone is far from optimal here
    assert tpr_at_fpr(target.numpy(), member, 0.01).value < 0.5 * _analytic(0.01, d)
    assert auc(s, member) == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.01)


def test_lira_per_example_variance_and_queries():
    # per-example variances with many references also recover the ROC; Q repeated queries with
    # independent noise are averaged (the multi-query statistic is stronger than one query)
    d = 1.0
    g = torch.Generator().manual_seed(1)
    n, r, q = 8000, 64, 4
    mu = 3.0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    member = torch.rand(n, generator=g) < 0.5
    in_mask = balanced_membership(r, n, 1)
    ref = mu + d * in_mask.double()[..., None] + torch.randn(r, n, q, generator=g, dtype=torch.float64)
    tgt = mu + d * member.double()[:, None] + torch.randn(n, q, generator=g, dtype=torch.float64)
    one = lira_scores(tgt[:, :1], ref[..., :1], in_mask).numpy()
    many = lira_scores(tgt, ref, in_mask).numpy()
    m = member.numpy()
    assert auc(one, m) == pytest.approx(norm.cdf(d / math.sqrt(2)), abs=0.02)
    # averaging Q independent queries scales the separation by sqrt(Q)
    assert auc(many, m) == pytest.approx(norm.cdf(d * math.sqrt(q) / math.sqrt(2)), abs=0.02)


def test_rmia_is_sane_on_the_gaussian_world():
    d = 2.0
    target, ref, in_mask, member = _gaussian_world(n=8000, n_ref=8, d=d)
    p_t, p_r = torch.sigmoid(target), torch.sigmoid(ref)
    s = rmia_scores(p_t, p_r, p_t, p_r, ref_in_mask=in_mask, ref_in_mask_z=in_mask, variant="online").numpy()
    assert ((s >= 0) & (s <= 1)).all()
    lira = lira_scores(target, ref, in_mask, fixed_variance=True).numpy()
    assert auc(s, member) > 0.85 and auc(s, member) > auc(lira, member) - 0.05
    assert tpr_at_fpr(s, member, 0.01).value > 0.5 * _analytic(0.01, d)
    assert tpr_at_fpr(s, member, 0.01).value > 2 * tpr_at_fpr(target.numpy(), member, 0.01).value
    off = rmia_scores(p_t, p_r, p_t, p_r, ref_in_mask=in_mask, ref_in_mask_z=in_mask, variant="offline").numpy()
    assert auc(off, member) > auc(target.numpy(), member) + 0.05  # offline beats the population baseline


def test_rmia_counting_equals_brute_force():
    g = torch.Generator().manual_seed(5)
    p_x, p_z = torch.rand(50, generator=g), torch.rand(70, generator=g)
    r_x, r_z = torch.rand(3, 50, generator=g), torch.rand(3, 70, generator=g)
    a, gamma = 0.3, 1.5
    s = rmia_scores(p_x, r_x, p_z, r_z, a=a, gamma=gamma)
    prior = lambda r: 0.5 * ((1 + a) * r.double().mean(0) + (1 - a))  # noqa: E731
    rx, rz = p_x.double() / prior(r_x), p_z.double() / prior(r_z)
    brute = ((rx[:, None] / rz[None, :]) >= gamma).double().mean(1)
    torch.testing.assert_close(s, brute)


def test_logit_confidence_is_stable_for_confident_models():
    logits = torch.tensor([[60.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    phi = logit_confidence(logits, torch.tensor([0, 2]))
    assert phi[0].item() == pytest.approx(60 - math.log(2), abs=1e-9)  # naive log(p/(1-p)) gives inf
    p = torch.softmax(logits[1].double(), 0)
    assert phi[1].item() == pytest.approx(math.log(p[2] / (1 - p[2])), abs=1e-9)
    with pytest.raises(InputError, match="one label per example"):
        logit_confidence(logits, torch.tensor([0, 1, 2]))


def test_lira_rejects_inconsistent_shapes_and_missing_models():
    target, ref, in_mask, _ = _gaussian_world(n=100, n_ref=4)
    with pytest.raises(InputError, match="ref_phi"):
        lira_scores(target, ref[:, :50], in_mask)
    with pytest.raises(InputError, match="IN no reference model"):
        lira_scores(target, ref, torch.zeros_like(in_mask))
    with pytest.raises(InputError, match="unknown LiRA variant"):
        lira_scores(target, ref, in_mask, variant="both")


def test_baseline_scores_survive_a_saturated_softmax():
    """Logit margins of 40-80: log p_y rounds to exactly 0 in float64 for all of them, the margin does not."""
    import torch

    from assay.attacks.privacy import membership as mia

    margins = torch.linspace(40, 80, 50, dtype=torch.float32)
    logits = torch.stack([margins, torch.zeros(50)], dim=1)
    y = torch.zeros(50, dtype=torch.long)
    lp = mia.as_log_probs(logits, "logits")
    assert (mia.true_class_log_prob(lp, y) == 0).all()  # what the old baseline ranked: all tied
    scores = mia.logit_confidence(lp, y, "log_probs")
    assert torch.allclose(scores.float(), margins, rtol=1e-5)  # every record keeps its own rank
