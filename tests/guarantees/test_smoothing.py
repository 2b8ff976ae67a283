
import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom, norm

from assay.guarantees.smoothing import ABSTAIN, Smoothed, certified_accuracy, max_certifiable_radius


class Const(torch.nn.Module):
    def __init__(self, c, k=3):
        super().__init__()
        self.c, self.k = c, k

    def forward(self, x):
        out = torch.zeros(len(x), self.k)
        out[:, self.c] = 1
        return out


class SignOfFirst(torch.nn.Module):
    """Class 1 if the first coordinate is positive: a 50/50 vote at x = 0."""

    def forward(self, x):
        f = x.reshape(len(x), -1)[:, 0]
        return torch.stack([-f, f], 1)


def test_unanimous_votes_give_the_closed_form_radius():
    # all n votes for one class: the one-sided lower bound is alpha^(1/n) exactly
    sm = Smoothed(Const(2), 3, sigma=0.5)
    r = sm.certify(torch.zeros(4, 5), n0=10, n=100, alpha=0.001, seed=0)
    pa = 0.001 ** (1 / 100)
    assert torch.all(r.prediction == 2)
    assert r.p_lower[0].item() == pytest.approx(pa, rel=1e-6)
    assert r.radius[0].item() == pytest.approx(0.5 * norm.ppf(pa), rel=1e-5)  # 0.5 * 1.5006
    assert max_certifiable_radius(100, 0.001, 0.5) == pytest.approx(0.5 * norm.ppf(pa), rel=1e-6)


def test_radius_matches_independent_binomial_root():
    # nA = 9,000 of 10,000 votes: pA solves P(Bin(n, p) >= nA) = alpha
    n, na, alpha, sigma = 10_000, 9_000, 0.001, 0.25
    pa_ref = brentq(lambda p: binom.sf(na - 1, n, p) - alpha, 1e-9, 1 - 1e-9, xtol=1e-14)

    class Fixed(torch.nn.Module):  # votes exactly na for class 0 by enumerating noise draws
        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, x):
            idx = torch.arange(self.seen, self.seen + len(x))
            self.seen += len(x)
            lab = ((idx % n) >= na).long()
            return torch.nn.functional.one_hot(lab, 2).float()

    base = Fixed()
    sm = Smoothed(base, 2, sigma=sigma, max_batch=n, optimize=False)  # stateful forward: keep it as is
    r = sm.certify(torch.zeros(1, 3), n0=n, n=n, alpha=alpha, seed=0)
    assert int(r.counts[0, 0]) == na
    assert r.p_lower[0].item() == pytest.approx(pa_ref, rel=1e-7)
    assert r.radius[0].item() == pytest.approx(sigma * norm.ppf(pa_ref), rel=1e-5)


def test_split_votes_abstain():
    sm = Smoothed(SignOfFirst(), 2, sigma=1.0)
    x = torch.zeros(3, 4)
    assert torch.all(sm.predict(x, n=2000, alpha=0.001, seed=1) == ABSTAIN)
    r = sm.certify(x, n0=100, n=2000, alpha=0.001, seed=1)
    assert torch.all(r.prediction == ABSTAIN) and torch.all(r.radius == 0)


def test_memory_bound_respected():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return Const(0)(x)

    Smoothed(Spy(), 3, sigma=0.1, max_batch=64, optimize=False).certify(torch.zeros(10, 2), n0=50, n=1000, seed=0)
    assert max(seen) <= 64 and sum(seen) == 10 * 1050


def test_noise_training_certifies_more_and_curve_is_monotone(demo):
    from assay.data.demo import DigitsCNN
    from assay.guarantees.smoothing import train_with_noise

    _, s = demo
    torch.manual_seed(0)
    plain = train_with_noise(DigitsCNN(), s.x_train, s.y_train, sigma=1e-9, epochs=15, seed=0)
    torch.manual_seed(0)
    noisy = train_with_noise(DigitsCNN(), s.x_train, s.y_train, sigma=0.5, epochs=15, seed=0)
    x, y = s.x_test[:60], s.y_test[:60]
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    acc = {}
    for name, m in (("plain", plain), ("noisy", noisy)):
        with torch.no_grad():
            r = Smoothed(m, 10, sigma=0.5).certify(x, n0=50, n=500, alpha=0.01, seed=0)
        acc[name] = certified_accuracy(r, y, radii)
        assert all(a >= b for a, b in zip(acc[name], acc[name][1:]))  # non-increasing in radius
    assert sum(acc["noisy"]) > sum(acc["plain"]) + 0.3


def test_optimized_base_votes_like_the_original_and_keeps_target_counting(demo):
    from assay.targets.torch import TorchTarget

    model, s = demo
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, query_budget=100_000)
    x = s.x_test[:6]
    fast = Smoothed(target.module, 10, sigma=0.25)
    plain = Smoothed(target.module, 10, sigma=0.25, optimize=False)
    r_fast = fast.certify(x, n0=50, n=2000, alpha=0.001, seed=3)
    used = target.budget.used
    r_plain = plain.certify(x, n0=50, n=2000, alpha=0.001, seed=3)
    assert type(fast._fast.inner).__name__ == "RecursiveScriptModule"  # the optimized path really ran
    # same noise (same seed), same function: the votes agree except for float-rounding ties
    assert (r_fast.counts - r_plain.counts).abs().sum() <= 2
    assert torch.equal(r_fast.prediction, r_plain.prediction)
    assert used == 6 * 2050 and target.budget.used == 2 * used  # every noisy sample counted on both paths


def test_fast_inference_leaves_randomized_and_hooked_models_alone(demo):
    from assay.guarantees.smoothing import NoisyModel
    from assay.inference import fast_inference

    model, s = demo
    x = s.x_test[:32]
    noisy = NoisyModel(model, 0.3, torch.Generator().manual_seed(0)).eval()
    assert fast_inference(noisy, x) is noisy
    handle = model.register_forward_hook(lambda *a: None)
    try:
        assert fast_inference(model, x) is model
    finally:
        handle.remove()
    fast = fast_inference(model.eval(), x)
    assert fast is not model
    with torch.no_grad():
        assert torch.allclose(fast(x[:5]), model(x[:5]), atol=1e-5)
