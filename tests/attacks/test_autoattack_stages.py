"""AutoAttack's stage table: which stages run, on which loss, under which checkpoint keys."""

import pytest
import torch
from torch import nn

from assay.attacks.apgd import apgd, apgd_targeted
from assay.attacks.autoattack import STAGES, VERSIONS, autoattack
from assay.errors import InputError

D, N = 8, 10


def _linear(num_classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Linear(D, num_classes)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _points(model, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, D, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every point starts correctly classified
    return x, y


def _run(model, x, y, **kw):
    store = {}

    def unit(key, fn):
        store[key] = fn()
        return store[key]

    kw = {"eps": 1e-4, "steps": 4, "square_queries": 10, "n_target_classes": 3, **kw}
    return autoattack(model, x, y, unit=unit, **kw), store


@pytest.mark.parametrize("num_classes, version, stages, losses", [
    (10, "standard", ["apgd-ce", "apgd-t", "fmn-t", "square"], {"apgd-t": "dlr"}),
    (4, "standard", ["apgd-ce", "apgd-t", "fmn-t", "square"], {"apgd-t": "dlr"}),
    (3, "standard", ["apgd-ce", "apgd-t", "fmn-t", "square"], {"apgd-t": "ce"}),
    (2, "standard", ["apgd-ce", "apgd-margin", "fmn-t", "square"], {"apgd-margin": "margin"}),
    (3, "rand", ["apgd-ce", "apgd-dlr"], {"apgd-dlr": "dlr"}),
    (2, "rand", ["apgd-ce", "apgd-dlr"], {"apgd-dlr": "margin"}),
])
def test_stages_losses_and_checkpoint_keys_follow_the_class_count(num_classes, version, stages, losses):
    model = _linear(num_classes)
    x, y = _points(model)
    # eps so small that nothing breaks: every stage runs on all N points
    res, store = _run(model, x, y, version=version, **({"steps": 2} if version == "rand" else {}))
    assert res.info["losses"] == losses
    assert res.info["num_classes"] == num_classes
    assert list(res.info["robust_after"]) == ["clean", *stages]
    # the keys existing checkpoints were written under
    assert list(store) == [f"aa-{version}-linf-eps0.0001-{s}-n{N}" for s in stages]


def test_each_stage_runs_the_attack_and_loss_its_table_entry_names():
    three = _linear(3)
    x3, y3 = _points(three)
    _, store = _run(three, x3, y3, eps=0.05, attacks=("apgd-t",), norm="l2")
    direct = apgd_targeted(three, x3, y3, eps=0.05, norm="l2", steps=4, n_target_classes=3, loss="ce")
    assert torch.equal(store[f"aa-standard-l2-eps0.05-apgd-t-n{N}"]["x_adv"], direct.x_adv)

    two = _linear(2)
    x2, y2 = _points(two)
    _, store = _run(two, x2, y2, eps=0.05, attacks=("apgd-t",))
    direct = apgd(two, x2, y2, eps=0.05, steps=4, loss="margin")
    assert torch.equal(store[f"aa-standard-linf-eps0.05-apgd-margin-n{N}"]["x_adv"], direct.x_adv)
    assert STAGES["apgd-t"].targeted and STAGES["fmn-t"].targeted and not STAGES["apgd-ce"].targeted


def test_broken_points_name_their_stage_and_later_stages_see_only_the_rest():
    model = _linear(2, seed=3)
    x, y = _points(model, seed=4)
    res, store = _run(model, x, y, eps=0.3, attacks=("apgd-ce", "apgd-t"))
    broken = [b for b in res.info["broken_by"] if b]
    assert broken and set(broken) <= {"apgd-ce", "apgd-margin"}
    n_left = N - res.info["broken_by"].count("apgd-ce")
    assert (f"aa-standard-linf-eps0.3-apgd-margin-n{n_left}" in store) == (n_left > 0)
    with torch.no_grad():
        assert torch.equal(res.success, model(res.x_adv).argmax(1) != y)
    assert ((res.x_adv - x).abs().amax(1) <= 0.3 + 1e-6).all()


def test_unknown_stage_version_or_norm_fails_before_any_work():
    def never(x):
        raise AssertionError("the model must not be called")

    x, y = torch.rand(2, D), torch.zeros(2, dtype=torch.long)
    with pytest.raises(InputError, match="unknown AutoAttack stage 'fab-t'"):
        autoattack(never, x, y, eps=0.1, attacks=("apgd-ce", "fab-t"))
    with pytest.raises(InputError, match="unknown AutoAttack version 'plus'"):
        autoattack(never, x, y, eps=0.1, version="plus")
    with pytest.raises(InputError, match="autoattack supports norm 'linf' or 'l2', not 'l1'"):
        autoattack(never, x, y, eps=0.1, norm="l1")
    assert all(s in STAGES for v in VERSIONS.values() for s in v.stages)
