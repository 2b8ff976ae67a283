import pytest
import torch

from assay.data import Dataset, validate
from assay.errors import BudgetExceeded, InputError
from assay.findings import Finding, Metric, Threshold
from assay.stats import clopper_pearson, wilson
from assay.targets import TorchTarget


def test_clopper_pearson_reference_values():
    # R: binom.test(3, 10)$conf.int -> 0.06673951 0.65245285
    iv = clopper_pearson(3, 10)
    assert iv.low == pytest.approx(0.06673951, abs=1e-6)
    assert iv.high == pytest.approx(0.65245285, abs=1e-6)
    assert clopper_pearson(0, 10).low == 0.0 and clopper_pearson(10, 10).high == 1.0


def test_wilson_reference_values():
    # Wilson 95% for 8/10: [0.4901625, 0.9433178]
    iv = wilson(8, 10)
    assert iv.low == pytest.approx(0.4901625, abs=1e-5)
    assert iv.high == pytest.approx(0.9433178, abs=1e-5)


def test_budget_is_hard_and_nothing_is_charged_on_refusal():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    t = TorchTarget(net, input_shape=(4,), num_classes=3, query_budget=10, device="cpu")
    t.scores(torch.zeros(8, 4))
    with pytest.raises(BudgetExceeded):
        t.scores(torch.zeros(3, 4))
    assert t.queries == 8
    t.scores(torch.zeros(2, 4))
    assert t.queries == 10
    with pytest.raises(BudgetExceeded):
        t.module(torch.zeros(1, 4))  # gradient path is budgeted too


def test_validate_errors_name_the_fix():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    t = TorchTarget(net, input_shape=(4,), num_classes=3, device="cpu")
    with pytest.raises(InputError, match="divide by 255"):
        validate(Dataset(torch.full((2, 4), 200.0), torch.tensor([0, 1])), t)
    with pytest.raises(InputError, match="NaN"):
        validate(Dataset(torch.tensor([[0.0, float("nan"), 0, 0]]), torch.tensor([0])), t)
    with pytest.raises(InputError, match="per-sample shape"):
        validate(Dataset(torch.zeros(2, 5), torch.tensor([0, 1])), t)
    with pytest.raises(InputError, match="labels span"):
        validate(Dataset(torch.zeros(2, 4), torch.tensor([0, 3])), t)


def test_policy_verdicts():
    f = Finding(probe="p", axis="robustness", title="t",
                metrics=[Metric("robust_accuracy[linf,eps=0.1]", 0.3), Metric("clean_accuracy", 0.99)])
    f.apply_policy({"robust_accuracy": Threshold(fail_below=0.5)})
    assert f.verdict == "fail"
    f.apply_policy({"robust_accuracy": Threshold(fail_below=0.2, warn_below=0.4)})
    assert f.verdict == "warn"
    f.apply_policy({"robust_accuracy": Threshold(fail_below=0.2)})
    assert f.verdict == "pass"
    f.warnings.append("gradient masking suspected")
    f.apply_policy({"robust_accuracy": Threshold(fail_below=0.2)})
    assert f.verdict == "warn"


def test_demo_model_is_accurate(demo):
    model, s = demo
    with torch.no_grad():
        acc = (model(s.x_test).argmax(1) == s.y_test).float().mean().item()
    assert acc > 0.95
