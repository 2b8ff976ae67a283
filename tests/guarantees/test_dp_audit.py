import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from assay.engine.context import ProbeContext
from assay.errors import InputError
from assay.guarantees.dp_audit import (
    epsilon_from_rates,
    load_recipe,
    make_canaries,
    membership_scores,
    one_run_lower_bound,
    one_run_p_value,
    split_half_epsilon_bound,
)
from assay.probes.privacy.dp_audit import DPAuditProbe


@pytest.fixture(autouse=True)
def recipes_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    # tiny models: one thread avoids the OpenMP contention that dominates on a busy 2-core box
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- the bound, by hand
def test_epsilon_from_rates_hand_values():
    assert epsilon_from_rates(0.01, 0.5) == pytest.approx(math.log(0.5 / 0.01))
    assert epsilon_from_rates(0.5, 0.01) == pytest.approx(math.log(0.5 / 0.01))  # symmetric
    assert epsilon_from_rates(0.01, 0.5, delta=0.1) == pytest.approx(math.log(0.4 / 0.01))
    assert epsilon_from_rates(0.5, 0.5) == 0.0  # chance level: no evidence
    assert epsilon_from_rates(0.0, 0.3) == math.inf


def test_threshold_bound_perfect_separation_hand_computed():
    s = np.r_[np.ones(100), np.zeros(100)]
    b = split_half_epsilon_bound(s, s > 0.5, level=0.95)
    # evaluation half: 50 members, 50 non-members, no errors; each rate bounded at 0.975 one-sided:
    # P[0 errors | rate p] = (1 - p)^50 = 0.025  ->  p_hi = 1 - 0.025^(1/50)
    p_hi = 1 - 0.025 ** (1 / 50)
    assert (b.n_members, b.n_nonmembers, b.tpr, b.fpr) == (50, 50, 1.0, 0.0)
    assert b.epsilon == pytest.approx(math.log((1 - p_hi) / p_hi), rel=1e-9)


def test_threshold_bound_matches_scipy_on_its_counts():
    rng = np.random.default_rng(1)
    m = rng.random(600) < 0.5
    s = rng.normal(size=600) + 1.5 * m
    b = split_half_epsilon_bound(s, m, delta=1e-3, level=0.9, seed=3)
    tp, fp = round(b.tpr * b.n_members), round(b.fpr * b.n_nonmembers)
    fn = b.n_members - tp
    one = 1 - 0.1 / 2
    fpr_hi = stats.beta.ppf(one, fp + 1, b.n_nonmembers - fp)
    fnr_hi = stats.beta.ppf(one, fn + 1, b.n_members - fn)
    want = max(math.log((1 - 1e-3 - fpr_hi) / fnr_hi), math.log((1 - 1e-3 - fnr_hi) / fpr_hi), 0)
    assert b.epsilon == pytest.approx(want, rel=1e-9)
    assert b.n_members + b.n_nonmembers == 300 and b.trials == 600
    assert 0 < b.epsilon < 3  # two unit Gaussians 1.5 apart: real but bounded leakage


def test_bounds_are_valid_for_a_pure_dp_mechanism():
    """Randomised response is exactly eps-DP: a valid 95% bound exceeds eps in <= ~5% of runs."""
    eps = 1.0
    p = math.exp(eps) / (1 + math.exp(eps))
    rng = np.random.default_rng(0)
    above_threshold, above_one_run, positive = 0, 0, 0
    for _ in range(60):
        m = rng.random(2000) < 0.5
        keep = rng.random(2000) < p
        s = np.where(keep, m, ~m).astype(float) + 0.01 * rng.random(2000)
        lb = split_half_epsilon_bound(s, m, seed=int(rng.integers(1 << 30))).epsilon
        ob = one_run_lower_bound(s, m).epsilon
        above_threshold += lb > eps
        above_one_run += ob > eps
        positive += lb > 0.3
    assert above_threshold <= 6 and above_one_run <= 6
    assert positive >= 50  # and the bounds are not vacuous: 1000 trials per half find the leak


def test_one_run_p_value_against_its_definition():
    m, r, v, eps, delta = 1000, 60, 50, 1.2, 1e-4
    q = math.exp(eps) / (1 + math.exp(eps))
    assert one_run_p_value(m, r, v, eps, 0.0) == pytest.approx(stats.binom.sf(v - 1, r, q), rel=1e-12)
    alpha = max(sum(stats.binom.pmf(j, r, q) for j in range(v - i, v)) / i for i in range(1, v + 1))
    want = stats.binom.sf(v - 1, r, q) + 2 * m * delta * alpha
    assert one_run_p_value(m, r, v, eps, delta) == pytest.approx(want, rel=1e-10)


def test_one_run_bound_inverts_the_p_value():
    s = np.r_[np.ones(500), np.zeros(500)]
    b = one_run_lower_bound(s, s > 0.5, level=0.95, k_fractions=(0.5,))
    assert (b.k, b.guesses, b.correct) == (250, 500, 500)
    # all 500 guesses right: q^500 = 0.05  ->  eps = logit(0.05^(1/500))
    q = 0.05 ** (1 / 500)
    assert b.epsilon == pytest.approx(math.log(q / (1 - q)), rel=1e-6)


def test_membership_score_is_logit_scaled_confidence():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    s = membership_scores(logits, torch.tensor([0, 2]))
    p = torch.softmax(logits.double(), 1)
    want = torch.log(p[[0, 1], [0, 2]]) - torch.log1p(-p[[0, 1], [0, 2]])
    assert torch.allclose(s, want)
    assert torch.allclose(membership_scores(logits, torch.tensor([0, 2]), "loss"),
                          -torch.nn.functional.cross_entropy(logits.double(), torch.tensor([0, 2]), reduction="none"))


def test_canaries_are_mislabeled_copies_or_ood():
    x, y = torch.rand(100, 3), torch.arange(100) % 5
    c = make_canaries(x, y, 20, "mislabeled", seed=0)
    assert torch.equal(c.x, x[c.source]) and (c.y != y[c.source]).all() and len(set(c.source.tolist())) == 20
    o = make_canaries(x, y, 20, "ood", seed=0)
    assert (o.source == -1).all() and o.x.shape == (20, 3) and ((o.y >= 0) & (o.y < 5)).all()


# ---------------------------------------------------------------- the probe, end to end
def _run_probe(recipe, claimed, **kw):
    """Run the probe as the Runner does (context, then the default policy sets the verdict)."""
    from dp_audit_recipes import blobs

    from assay.data.dataset import Dataset
    from assay.targets import TorchTarget

    x, y = blobs()
    target = TorchTarget(torch.nn.Linear(40, 4), input_shape=(40,), num_classes=4, device="cpu")
    probe = DPAuditProbe(recipe=recipe, claimed_epsilon=claimed, delta=1e-5, n_canaries=50, **kw)
    assert probe.check(target, Dataset(x, y)) is None
    f = probe.run(ProbeContext(target, Dataset(x, y), seed=0))
    f.apply_policy(DPAuditProbe.default_policy)
    assert target.queries == 0  # the recipe is audited, the target is never queried
    return f


def _recipe_epsilon():
    """The DP recipe's true epsilon: the RDP accountant for its settings on the base training set."""
    from dp_audit_recipes import BATCH, EPOCHS, NOISE
    from opacus.accountants import RDPAccountant

    n = 120 - 50 + 25  # base set (canary sources held out) plus about half the canaries: q ~ 0.5
    acc = RDPAccountant()
    acc.history = [(NOISE, BATCH / n, EPOCHS * math.ceil(n / BATCH))]
    return acc.get_epsilon(1e-5)


def test_audit_of_a_dp_recipe_stays_below_its_epsilon():
    true_eps = _recipe_epsilon()
    assert 2 < true_eps < 10
    f = _run_probe("dp_audit_recipes:private", true_eps, n_models=4)
    lb = f.metric("eps_lower_bound").value
    assert lb <= true_eps
    assert f.verdict != "fail" and f.accounting["claim_violated"] is False
    assert f.metric("trials").value == 200
    assert "consistent with the claim" in f.summary


def test_audit_catches_a_false_claim():
    f = _run_probe("dp_audit_recipes:nonprivate", 1.0, n_models=8)
    lb = f.metric("eps_lower_bound").value
    assert lb > 1.0 and f.metric("eps_lower_bound[threshold,conf=0.95]").value > 1.0
    assert f.metric("eps_lower_bound[one_run,conf=0.95]").value > 1.0
    assert f.verdict == "fail" and f.accounting["claim_violated"] is True
    assert f.metric("tpr[at_threshold]").value > f.metric("fpr[at_threshold]").value
    kinds = {e.kind for e in f.evidence}
    assert {"curve", "histogram"} <= kinds
    hist = next(e for e in f.evidence if e.kind == "histogram").data["series"]
    assert sum(sum(h["counts"]) for h in hist) == 400


@pytest.mark.parametrize("params, message", [
    ({"recipe": "no_such_module_xyz:train"}, "does not import"),
    ({"recipe": "dp_audit_recipes:two_args"}, "must accept train_fn(x, y, seed)"),
    ({"recipe": "dp_audit_recipes:NOT_CALLABLE"}, "has no function"),
    ({"recipe": "dp_audit_recipes"}, "package.module:function"),
    ({"claimed_epsilon": 0.0}, "claimed_epsilon"),
    ({"claimed_epsilon": -1.0}, "claimed_epsilon"),
    ({"canary_kind": "weird"}, "canary_kind"),
])
def test_bad_input_is_one_line(params, message):
    from assay.data.dataset import Dataset
    from assay.targets import TorchTarget

    p = {"recipe": "dp_audit_recipes:nonprivate", "claimed_epsilon": 1.0, **params}
    target = TorchTarget(torch.nn.Linear(40, 4), input_shape=(40,), num_classes=4, device="cpu")
    ctx = ProbeContext(target, Dataset(torch.rand(40, 40), torch.arange(40) % 4))
    with pytest.raises(InputError) as e:
        DPAuditProbe(**p).run(ctx)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_load_recipe_returns_the_function():
    import dp_audit_recipes

    assert load_recipe("dp_audit_recipes:private") is dp_audit_recipes.private
