"""Backdoor scan (Neural Cleanse): the statistic by hand, the trigger search and the probe on a
model with a planted 2x2 trigger next to the clean demo model."""

import pytest
import torch

from assay.data import Dataset
from assay.engine.plan import plan_from_names
from assay.engine.runner import Runner
from assay.errors import InputError
from assay.integrity.neural_cleanse import anomaly_index, mask_shape, reverse_engineer_triggers
from assay.targets import TorchTarget

TARGET_CLASS = 0


def stamp_corner(x: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    out[:, :, -2:, -2:] = 1.0  # a white 2x2 square in the bottom-right corner
    return out


@pytest.fixture(scope="module")
def backdoored(demo):
    """The demo CNN retrained with 10% extra poisoned copies: trigger stamped, label TARGET_CLASS."""
    from assay.data.demo import DigitsCNN
    from assay.train.classifier import train_classifier

    _, s = demo
    idx = torch.randperm(len(s.x_train), generator=torch.Generator().manual_seed(0))[:100]
    x = torch.cat([s.x_train, stamp_corner(s.x_train[idx])])
    y = torch.cat([s.y_train, torch.full((100,), TARGET_CLASS, dtype=torch.long)])
    model = DigitsCNN()
    train_classifier(model, x, y, epochs=30, seed=0)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_anomaly_index_matches_hand_computation():
    l1 = torch.tensor([1.0, 10.0, 10.0, 11.0, 9.0, 10.0])
    # median 10; |deviations| 9, 0, 0, 1, 1, 0 -> MAD 0.5, scaled 0.7413
    ai = anomaly_index(l1)
    assert ai[0].item() == pytest.approx(9 / (1.4826 * 0.5))
    assert ai[4].item() == pytest.approx(1 / (1.4826 * 0.5))
    assert ai[[1, 2, 3, 5]].tolist() == [0.0, 0.0, 0.0, 0.0]  # above the median: never anomalous
    flat = anomaly_index(torch.tensor([5.0, 5.0, 5.0, 2.0]))  # MAD 0: anything below is infinitely far
    assert flat.tolist() == [0.0, 0.0, 0.0, float("inf")]
    assert mask_shape((3, 32, 32)) == (1, 32, 32) and mask_shape((20,)) == (20,)


def test_planted_backdoor_is_real(backdoored, demo):
    _, s = demo
    others = s.y_test != TARGET_CLASS
    assert (backdoored(s.x_test).argmax(1) == s.y_test).float().mean() > 0.95
    assert (backdoored(stamp_corner(s.x_test[others])).argmax(1) == TARGET_CLASS).float().mean() > 0.9


def test_trigger_search_recovers_the_planted_trigger(backdoored, demo):
    _, s = demo
    x, y = s.x_test[:100], s.y_test[:100]
    res = reverse_engineer_triggers(backdoored, x, y, classes=range(10), steps=300, check_every=5, patience=2,
                                    init_cost=1e-2, seed=0)
    assert res.reached.all() and (res.success >= 0.99).all()
    assert int(res.l1.argmin()) == TARGET_CLASS
    assert anomaly_index(res.l1)[TARGET_CLASS] > 2
    mask = res.mask[TARGET_CLASS, 0]
    assert mask[-2:, -2:].sum() / mask.sum() > 0.5  # most of the mask sits on the planted square
    # the stamp it found works on inputs it was not fitted on
    xh, yh = s.x_test[100:], s.y_test[100:]
    hit = (backdoored(res.stamp(TARGET_CLASS, xh[yh != TARGET_CLASS])).argmax(1) == TARGET_CLASS).float().mean()
    assert hit > 0.9
    # the stamp stays in the input bounds
    assert res.pattern.min() >= 0 and res.pattern.max() <= 1 and res.mask.min() >= 0 and res.mask.max() <= 1


def test_trigger_search_on_tabular_inputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(40, 6)
    res = reverse_engineer_triggers(net, x, net(x).argmax(1), classes=[0, 1, 2], steps=30, seed=0)
    assert res.mask.shape == (3, 6) and res.pattern.shape == (3, 6) and res.l1.shape == (3,)
    with pytest.raises(InputError):
        reverse_engineer_triggers(net, x, net(x).argmax(1), classes=[], steps=5)


def _audit(model, demo, **params):
    _, s = demo
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
    plan = plan_from_names(["integrity.backdoor"], {"integrity.backdoor": params} if params else None)
    return Runner(target, Dataset(s.x_test, s.y_test, name="digits"), plan, seed=0).run().findings[0]


def test_probe_flags_the_backdoored_model_and_passes_the_clean_one(backdoored, demo):
    bad = _audit(backdoored, demo)
    assert bad.verdict == "fail" and bad.accounting["flagged"] == [TARGET_CLASS]
    assert bad.metric("flagged_classes").value == 1 and bad.metric("trigger_size_ratio").value < 0.5
    hit = bad.metric(f"trigger_success[class={TARGET_CLASS}]")
    assert hit.value > 0.9 and hit.low > 0.85 and hit.low <= hit.value <= hit.high  # 89 held-out inputs: the interval is about 8 points wide
    kinds = [e.kind for e in bad.evidence]
    assert kinds == ["table", "images"] and len(bad.evidence[1].data["rows"]) == 3
    clean_model, _ = demo
    good = _audit(clean_model, demo)
    assert good.verdict == "pass" and good.metric("flagged_classes").value == 0
    assert good.metric("trigger_size_ratio").value > 0.5


def test_many_classes_are_screened_then_refined(backdoored, demo):
    # as for a 1000-class model: every class gets a short search, the smallest stamps the full one
    f = _audit(backdoored, demo, max_classes=5, screen_steps=50)
    assert f.accounting["screened_classes"] == 10 and f.accounting["searched_classes"] == 5
    assert f.verdict == "fail" and f.accounting["flagged"] == [TARGET_CLASS] and "screened" in f.summary
    assert len(f.evidence[0].data["rows"]) == 5
    clean_model, _ = demo  # the refined few have a smaller median; the size rule still keeps a clean model clean
    assert _audit(clean_model, demo, max_classes=5, screen_steps=50).verdict == "pass"


def test_probe_rejects_bad_classes(demo):
    model, _ = demo
    assert _audit(model, demo, classes=[0, 12]).verdict == "error"
    f = _audit(model, demo, classes=[0, 1])
    assert f.verdict == "error" and "at least 3" in f.error


def test_probe_says_when_nothing_is_left_to_test_the_triggers_on(demo):
    model, s = demo
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
    plan = plan_from_names(["integrity.backdoor"], {"integrity.backdoor": {"steps": 10, "max_samples": 60}})
    f = Runner(target, Dataset(s.x_test[:60], s.y_test[:60], name="few"), plan, seed=0).run().findings[0]
    assert f.verdict in ("warn", "fail") and any("left to test the triggers on" in w for w in f.warnings)
