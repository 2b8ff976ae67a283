import pytest
import torch
from torch import nn

from assay.attacks.inversion import identification, invert_blackbox, invert_whitebox, total_variation
from assay.data.dataset import Dataset
from assay.engine.context import ProbeContext
from assay.errors import InputError
from assay.probes.privacy.inversion import InversionProbe, leakage_score
from assay.targets import TorchTarget


def _linear():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def models():
    """A leaky softmax regression on the digits and the same model trained on shuffled labels."""
    from assay.data.demo import load_digits_splits
    from assay.train.classifier import train_classifier

    s = load_digits_splits(0, n_train=600)
    torch.manual_seed(0)
    leaky = train_classifier(_linear(), s.x_train, s.y_train, epochs=15, seed=0)
    shuffled = s.y_train[torch.randperm(len(s.y_train), generator=torch.Generator().manual_seed(1))]
    safe = train_classifier(_linear(), s.x_train, shuffled, epochs=15, seed=0)
    data = Dataset(s.x_test[:400], s.y_test[:400], name="digits")
    return leaky, safe, data


def _run(model, data, budget=None, **params):
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=budget)
    probe = InversionProbe(**params)
    f = probe.run(ProbeContext(target, data, seed=0, probe_name="inv"))
    f.apply_policy(probe.default_policy)
    return f, target


def test_total_variation_and_identification_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # one vertical edge: horizontal diffs 1, vertical 0
    assert torch.allclose(total_variation(x), torch.tensor([1.0]))
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    recon = torch.tensor([[2.0, 0.1], [0.3, -1.0]])
    ident, margin = identification(recon, torch.tensor([0, 1]), means, torch.zeros(2))
    assert ident.tolist() == [True, False]
    cos0 = 2.0 / (4.01 ** 0.5)
    assert margin[0].item() == pytest.approx(cos0 - (0.1 / 4.01 ** 0.5 - cos0) / 2, abs=1e-5)
    assert leakage_score(1, 10, 10) == 0.0  # below chance after the lower bound
    assert leakage_score(10, 10, 2) == pytest.approx((0.025 ** 0.1 - 0.5) / 0.5)  # CP lower bound of 10/10


def test_whitebox_separates_leaky_from_safe_model(models):
    leaky, safe, data = models
    f_leak, t = _run(leaky, data, steps=60, restarts=2)
    f_safe, _ = _run(safe, data, steps=60, restarts=2)
    assert f_leak.metric("identification_rate").value >= 0.8
    assert f_leak.metric("judge_accuracy").value >= 0.6
    assert f_safe.metric("identification_rate").value <= 0.4
    assert f_leak.metric("inversion_leakage").value > f_safe.metric("inversion_leakage").value + 0.4
    assert f_leak.verdict == "fail" and f_safe.verdict == "pass"
    assert t.queries == 10 * 2 * 61  # every gradient forward pass is counted
    rows = next(e for e in f_leak.evidence if e.kind == "images").data["rows"]
    assert len(rows) == 10 and len(rows[0]["images"]) == 3


def test_whitebox_stays_in_bounds_and_raises_confidence(models):
    leaky, _, _ = models
    res = invert_whitebox(leaky, 10, (1, 8, 8), steps=30, restarts=2, seed=3)
    assert res.x.shape == (2, 10, 1, 8, 8)
    assert float(res.x.min()) >= 0.0 and float(res.x.max()) <= 1.0
    with torch.no_grad():
        start = torch.softmax(leaky(torch.full((1, 1, 8, 8), 0.5)), 1)[0].mean()
    assert float(res.confidence.mean()) > float(start) + 0.3


def test_blackbox_never_exceeds_budget_and_beats_chance(models):
    leaky, _, data = models
    calls = []

    def scores(x):
        calls.append(len(x))
        with torch.no_grad():
            return leaky(x)

    res = invert_blackbox(scores, 10, (1, 8, 8), query_budget=4_015, samples=5, steps=1000, seed=0)
    assert sum(calls) == res.queries <= 4_015
    assert res.steps == (4_015 - 10) // 100 and res.info["budget_exhausted"]
    x = data.x
    means = torch.stack([x[data.y == c].mean(0) for c in range(10)])
    ident, _ = identification(res.x.reshape(-1, 1, 8, 8), res.classes, means, x.mean(0))
    assert ident.float().mean() >= 0.5  # chance is 0.1

    # through the probe, the target's own hard budget caps the run
    f, target = _run(leaky, data, budget=3_000, mode="blackbox", restarts=1, nes_samples=5, query_budget=None)
    assert target.queries <= 3_000
    assert f.metric("identification_rate").value >= 0.5
    assert any("NES steps" in w for w in f.warnings)


def test_blackbox_budget_too_small_is_one_line_input_error(models):
    leaky, _, data = models
    with pytest.raises(InputError, match="too small for one inversion step"):
        invert_blackbox(lambda x: leaky(x), 10, (1, 8, 8), query_budget=50, samples=5)
    with pytest.raises(InputError, match="too small"):
        _run(leaky, data, mode="blackbox", query_budget=50)


def test_whitebox_matches_art_miface_on_the_same_model(models):
    """ART's MIFace (gradient ascent on p_y, no prior) and ours without the prior land on the same
    reconstructions of a softmax regression: same identification, similar confidence, aligned images."""
    pytest.importorskip("art.attacks.inference.model_inversion")
    import numpy as np
    from art.attacks.inference.model_inversion import MIFace
    from art.estimators.classification import PyTorchClassifier

    leaky, _, data = models
    clf = PyTorchClassifier(nn.Sequential(leaky, nn.Softmax(dim=1)), loss=nn.CrossEntropyLoss(),
                            input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
    # threshold=1 keeps every sample running for max_iter (ART's stopping rule), so both do 100 steps
    art = MIFace(clf, max_iter=100, window_length=100, threshold=1.0, learning_rate=1.0, verbose=False).infer(
        np.full((10, 1, 8, 8), 0.5, dtype=np.float32), y=np.arange(10))
    art = torch.from_numpy(art).float()
    ours = invert_whitebox(leaky, 10, (1, 8, 8), steps=100, tv_weight=0.0, l2_weight=0.0).x[0]
    x = data.x
    means = torch.stack([x[data.y == c].mean(0) for c in range(10)])
    ident_art, _ = identification(art, torch.arange(10), means, x.mean(0))
    ident_ours, _ = identification(ours, torch.arange(10), means, x.mean(0))
    assert ident_ours.sum() >= ident_art.sum() >= 8
    with torch.no_grad():
        p_art = torch.softmax(leaky(art), 1)[torch.arange(10), torch.arange(10)].mean()
        p_ours = torch.softmax(leaky(ours), 1)[torch.arange(10), torch.arange(10)].mean()
    assert float(p_ours) >= float(p_art) - 0.05
    cos = nn.functional.cosine_similarity((art - 0.5).flatten(1), (ours - 0.5).flatten(1))
    assert float(cos.mean()) > 0.85
