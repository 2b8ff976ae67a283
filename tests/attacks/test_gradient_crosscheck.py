"""Cross-checks on identical inputs: assay's PGD vs torchattacks, APGD / APGD-T vs pyautoattack.

Random starts differ between libraries (assay uses its own seeded generator), so robust accuracies
are compared with a tolerance of 2 points; assay keeps the first successful iterate of each point,
so it may only be stronger.
"""

import pytest
import torch

from assay.attacks.apgd import apgd, apgd_targeted
from assay.attacks.gradient import pgd
from assay.attacks.losses import dlr_loss

torchattacks = pytest.importorskip("torchattacks")
autopgd = pytest.importorskip("pyautoattack.autopgd_base")

TOLERANCE = 0.02


@pytest.fixture(scope="module")
def batch(demo):
    model, splits = demo
    x, y = splits.x_test[:192], splits.y_test[:192]
    return model, x, y


def _robust_accuracy(model, x_adv, y):
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_pgd_is_as_strong_as_torchattacks(batch, norm, eps):
    model, x, y = batch
    steps, alpha = 20, 2.5 * eps / 20
    torch.manual_seed(0)
    if norm == "linf":
        peer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    else:
        peer = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    peer_ra = _robust_accuracy(model, peer(x, y), y)
    ours = pgd(model, x, y, eps=eps, norm=norm, steps=steps, step_size=alpha, seed=0)
    assert 0.05 < peer_ra < 0.95  # a radius where the comparison means something
    assert abs(ours.robust_accuracy - peer_ra) <= TOLERANCE + 1e-9, (ours.robust_accuracy, peer_ra)


@pytest.mark.parametrize("norm,eps,loss", [("linf", 0.1, "ce"), ("linf", 0.1, "dlr"), ("l2", 0.5, "ce")])
def test_apgd_is_at_least_as_strong_as_the_reference(batch, norm, eps, loss):
    model, x, y = batch
    steps = 50
    ref = autopgd.APGDAttack(
        model, n_iter=steps, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, eps=eps, seed=0,
        loss=loss, rho=0.75, device="cpu",
    )
    ref_ra = _robust_accuracy(model, ref.perturb(x, y), y)
    ours = apgd(model, x, y, eps=eps, norm=norm, loss=loss, steps=steps, seed=0)
    assert 0.05 < ref_ra < 0.95
    assert ours.robust_accuracy <= ref_ra + TOLERANCE, (ours.robust_accuracy, ref_ra)


def test_apgd_targeted_is_at_least_as_strong_as_the_reference(batch):
    model, x, y = batch
    steps, targets, eps = 25, 3, 0.1
    ref = autopgd.APGDAttack_targeted(
        model, n_iter=steps, norm="Linf", n_restarts=1, eps=eps, seed=0, n_target_classes=targets, device="cpu"
    )
    ref_ra = _robust_accuracy(model, ref.perturb(x, y), y)
    ours = apgd_targeted(model, x, y, eps=eps, steps=steps, n_target_classes=targets, seed=0)
    assert 0.05 < ref_ra < 0.95
    assert ours.robust_accuracy <= ref_ra + TOLERANCE, (ours.robust_accuracy, ref_ra)


def test_dlr_loss_matches_the_reference(batch):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 3
    y = torch.randint(0, 10, (64,), generator=g)
    ref = autopgd.APGDAttack(lambda t: t, eps=0.1, device="cpu")
    assert torch.allclose(dlr_loss(logits, y), ref.dlr_loss(logits, y), atol=1e-6)
