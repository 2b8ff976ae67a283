import torch

from assay.attacks.apgd import apgd
from assay.attacks.autoattack import autoattack
from assay.attacks.base import flat_norm


def test_ensemble_is_the_worst_case_and_respects_the_ball(demo_target, demo):
    _, s = demo
    x, y = s.x_test[:64], s.y_test[:64]
    eps = 0.1
    res = autoattack(demo_target.module, x, y, eps=eps, steps=20, square_queries=200, n_target_classes=3)
    assert (flat_norm(res.x_adv - x, "linf") <= eps + 1e-6).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    # every claimed success is real
    with torch.no_grad():
        pred = demo_target.module(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)
    ra = list(res.info["robust_after"].values())
    assert all(a >= b for a, b in zip(ra, ra[1:]))  # each stage only removes points
    single = apgd(demo_target.module, x, y, eps=eps, steps=20)
    assert res.robust_accuracy <= single.robust_accuracy
    assert res.robust_accuracy < 0.9  # the undefended model breaks


def test_stages_run_as_resumable_units(demo_target, demo):
    _, s = demo
    x, y = s.x_test[:32], s.y_test[:32]
    store, calls = {}, []

    def unit(key, fn):
        calls.append(key)
        if key not in store:
            store[key] = fn()
        return store[key]

    kw = dict(eps=0.1, steps=10, square_queries=50, n_target_classes=2, unit=unit)
    a = autoattack(demo_target.module, x, y, **kw)
    n_units = len(store)
    b = autoattack(demo_target.module, x, y, **kw)
    assert len(store) == n_units and n_units >= 1
    assert torch.equal(a.success, b.success) and torch.equal(a.x_adv, b.x_adv)
