"""FMN: real minimum norms, bounds, the eps sweep, and the comparison with AutoAttack's FAB-T."""

import pytest
import torch

from assay.attacks.base import flat_norm
from assay.attacks.minnorm import fmn, fmn_targeted, robust_accuracy_curve
from assay.errors import InputError

N = 64


@pytest.fixture(scope="module")
def data(demo):
    model, splits = demo
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), splits.x_test[:N], splits.y_test[:N]


def _pgd(model, x, y, eps, norm, steps=50):
    """A plain fixed-eps PGD (local to the test) to cross-check the FMN curve."""
    alpha = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x + delta), y)
        g = torch.autograd.grad(loss, delta)[0]
        with torch.no_grad():
            if norm == "linf":
                delta = (delta + alpha * g.sign()).clamp(-eps, eps)
            else:
                g = g / flat_norm(g, "l2").clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = delta + alpha * g
                delta = delta * (eps / flat_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
            delta = (x + delta).clamp(0, 1) - x
    with torch.no_grad():
        return (model(x + delta).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fmn_norms_are_real(data, norm):
    model, x, y = data
    res = fmn(model, x, y, norm=norm, steps=60)
    assert res.success.float().mean() > 0.95  # undefended model: nearly every point breaks
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred != y, res.success)  # re-evaluated in another batch, still adversarial
    assert torch.allclose(res.norms, flat_norm(res.x_adv - x, norm))
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert (res.norms[res.success] > 0).sum() > 0.9 * N  # real perturbations, not clean errors
    assert (res.queries == 1 + 60).all() or (res.queries[res.norms == 0] == 1).all()


def test_fmn_targeted_reaches_target(data):
    model, x, y = data
    y_t = (y + 1) % 10
    res = fmn(model, x, y, norm="l2", steps=60, targeted=True, y_target=y_t)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert res.success.float().mean() > 0.9
    assert (pred[res.success] == y_t[res.success]).all()


def test_curve_monotone_and_agrees_with_pgd(data):
    model, x, y = data
    res = fmn(model, x, y, norm="linf", steps=100)
    eps_list = [0.02, 0.05, 0.08, 0.12, 0.2]
    curve = robust_accuracy_curve(res, eps_list)
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    assert curve[0] > curve[-1]
    for eps, ra in zip([0.05, 0.12], [curve[1], curve[3]]):
        # FMN's min norms should be about as strong as PGD at that eps (PGD is the fixed-eps
        # reference; a few points of slack for two different optimisers).
        assert ra <= _pgd(model, x, y, eps, "linf") + 0.08
    # every point counted as broken at eps really is adversarial within eps
    broken = res.success & (res.norms <= 0.08)
    with torch.no_grad():
        assert (model(res.x_adv[broken]).argmax(1) != y[broken]).all()


def test_fmn_rejects_bad_input(data):
    model, x, y = data
    with pytest.raises(InputError):
        fmn(model, x, y, norm="l1")
    with pytest.raises(InputError):
        fmn(model, x * 3, y)
    with pytest.raises(InputError):
        fmn(model, x, y, targeted=True)


def test_fmn_targeted_not_worse_than_fab(data):
    """FMN paper claim: smaller perturbations than FAB at equal steps. Checked against pyautoattack's
    FAB-T on the same points, same targets (top-2..top-4), 100 steps each."""
    fab_pt = pytest.importorskip("pyautoattack.fab_pt")
    model, x, y = data
    x, y = x[:16], y[:16]
    k = 3
    ours = fmn_targeted(model, x, y, norm="linf", steps=100, n_target_classes=k)
    fab = fab_pt.FABAttack_PT(model, norm="Linf", n_restarts=1, n_iter=100, targeted=True,
                              device="cpu", n_target_classes=k, seed=0)
    best = torch.full((len(x),), float("inf"))
    for target_class in range(2, k + 2):
        fab.target_class = target_class
        adv = fab.attack_single_run(x, y, use_rand_start=False, is_targeted=True)
        with torch.no_grad():
            broke = model(adv).argmax(1) != y
        nrm = flat_norm(adv - x, "linf")
        best = torch.where(broke & (nrm < best), nrm, best)
    both = ours.success & torch.isfinite(best) & (ours.norms > 0)
    assert both.sum() >= 10
    assert ours.norms[both].median() <= best[both].median() * 1.05
