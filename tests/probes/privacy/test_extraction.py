import pytest
import torch
from torch import nn

from assay.attacks.extraction import extract
from assay.data.dataset import Dataset
from assay.engine.context import ProbeContext
from assay.errors import InputError
from assay.probes.privacy.extraction import ExtractionProbe
from assay.targets import TorchTarget


def _mlp(d=64, k=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, k))


@pytest.fixture(scope="module")
def digits_target():
    from assay.data.demo import load_digits_splits
    from assay.train.classifier import train_classifier

    s = load_digits_splits(0, n_train=600)
    torch.manual_seed(0)
    model = train_classifier(_mlp(), s.x_train, s.y_train, epochs=15, seed=0)
    return model, Dataset(s.x_test[:600], s.y_test[:600], name="digits")


def _counted(model, calls, labels=False):
    def fn(x):
        calls.append(len(x))
        with torch.no_grad():
            out = model(x)
        return out.argmax(1) if labels else out
    return fn


def _fidelity(model, x):
    with torch.no_grad():
        t = model(x).argmax(1)
    return lambda sur: float((sur(x).argmax(1) == t).float().mean())


def test_probe_steals_a_faithful_copy_within_budget_and_transfers(digits_target):
    model, data = digits_target
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=len(data) + 400)
    probe = ExtractionProbe(query_budget=400, rounds=3, surrogate="mlp", epochs=20, transfer_samples=60,
                            eps_linf=0.15, transfer_steps=10)
    f = probe.run(ProbeContext(target, data, seed=0, probe_name="ext"))
    f.apply_policy(probe.default_policy)
    assert f.metric("fidelity").value > 0.85
    assert target.queries - len(data) <= 400  # the clean pass on the data plus at most the attacker's budget
    assert f.metric("queries_used").value <= 400
    transfer = f.metric("transfer_success[linf,eps=0.15]").value
    noise = f.metric("noise_success[linf,eps=0.15]").value
    assert transfer > noise + 0.25
    assert f.verdict in ("warn", "fail")
    curve = next(e for e in f.evidence if e.kind == "curve").data["series"][0]
    assert len(curve["x"]) == 4 and curve["x"][-1] <= 400 - 120


def test_active_selection_is_not_worse_than_random(digits_target):
    model, data = digits_target
    pool, held = data.x[:400], data.x[400:]
    final = {"active": [], "random": []}
    for strategy in final:
        for seed in (0, 1):
            calls = []
            r = extract(_counted(model, calls), pool, 10, query_budget=100, rounds=4, strategy=strategy, arch="mlp",
                        epochs=15, evaluate=_fidelity(model, held), seed=seed)
            assert sum(calls) == r.queries <= 100
            final[strategy].append(r.history[-1]["fidelity"])
    assert sum(final["active"]) >= sum(final["random"]) - 0.02


def test_labels_only_synthetic_queries_stop_at_the_target_budget(digits_target):
    model, data = digits_target
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=70)
    calls = []

    def labels(x):
        calls.append(len(x))
        return target.labels(x)

    r = extract(labels, data.x[:300], 10, query_budget=120, output="labels", rounds=3, source="mixup",
                arch="mlp", epochs=5, seed=0)
    assert target.queries <= 70 and r.queries == target.queries and r.info["budget_exhausted"]
    assert sum(calls) >= r.queries  # the refused call was attempted but charged nothing


def test_tabular_unbounded_two_class_task():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 5, generator=g) * torch.tensor([1.0, 50.0, 0.01, 3.0, 1.0]) + 100.0
    w = torch.tensor([1.0, 0.02, 100.0, 0.3, -1.0])
    teacher = nn.Linear(5, 2)
    with torch.no_grad():
        teacher.weight.copy_(torch.stack([w, -w]))
        teacher.bias.copy_(torch.stack([-(w * 100).sum(), (w * 100).sum()]))
    calls = []
    r = extract(_counted(teacher, calls), x[:400], 2, query_budget=150, rounds=2, arch="mlp", epochs=40,
                bounds=(float("-inf"), float("inf")), evaluate=_fidelity(teacher, x[400:]), seed=0)
    assert sum(calls) <= 150 and r.history[-1]["fidelity"] > 0.9


def test_bad_input_is_a_one_line_input_error(digits_target):
    model, data = digits_target
    with pytest.raises(InputError, match="too small for 5 extraction rounds"):
        extract(lambda x: model(x), data.x[:100], 10, query_budget=8, rounds=4)
    with pytest.raises(InputError, match="no pool data"):
        extract(lambda x: model(x), data.x[:0], 10, query_budget=100)
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
    with pytest.raises(InputError, match="raise query_budget") as e:
        ExtractionProbe(query_budget=20, transfer_samples=10).run(ProbeContext(target, data, probe_name="ext"))
    assert "\n" not in str(e.value)
