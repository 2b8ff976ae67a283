import pytest
import torch

from assay.data import Dataset
from assay.engine.context import ProbeContext
from assay.probes.robustness.blackbox import BlackBoxProbe
from assay.probes.robustness.evasion import EvasionProbe
from assay.targets import TorchTarget

FAST = dict(steps=10, square_queries=100, max_samples=40, n_examples=2)


def _ctx(target, demo, n=40):
    _, s = demo
    return ProbeContext(target, Dataset(s.x_test[:n], s.y_test[:n]))


def test_evasion_finding_on_undefended_model(demo_target, demo):
    f = EvasionProbe(eps_linf=[0.05, 0.1, 0.2], **FAST).run(_ctx(demo_target, demo))
    ra = [f.metric(f"robust_accuracy[linf,eps={e:.4g}]").value for e in (0.05, 0.1, 0.2)]
    assert ra[0] >= ra[1] >= ra[2] and ra[2] < 0.2
    m = f.metric("robust_accuracy[linf,eps=0.1]")
    assert m.low <= m.value <= m.high
    kinds = [e.kind for e in f.evidence]
    assert "curve" in kinds and "images" in kinds
    # the minimum-norm curve agrees with the ensemble at the requested epsilons (it is an upper bound)
    curve = f.evidence[0].data
    fmn_series = curve["series"][0]
    assert fmn_series["y"][0] == pytest.approx(f.metric("clean_accuracy").value)
    assert not f.warnings


class Quantized(torch.nn.Module):
    """Input quantization: zero gradients almost everywhere (a classic masked 'defence')."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4 + (x - x.detach()) * 0)


def test_gradient_masking_is_flagged(demo):
    model, _ = demo
    t = TorchTarget(Quantized(model), input_shape=(1, 8, 8), num_classes=10, device="cpu")
    f = EvasionProbe(eps_linf=[0.05, 0.3], **FAST).run(_ctx(t, demo))
    text = " ".join(f.warnings)
    assert "masking" in text or "masked" in text


class Noisy(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x + 0.05 * torch.randn_like(x))


def test_random_outputs_switch_to_eot(demo):
    model, _ = demo
    t = TorchTarget(Noisy(model), input_shape=(1, 8, 8), num_classes=10, device="cpu")
    f = EvasionProbe(eps_linf=[0.2], curve=False, **FAST).run(_ctx(t, demo, 16))
    assert any("randomness" in w for w in f.warnings)
    assert f.accounting["version"] == "rand"


def test_blackbox_never_exceeds_the_budget(demo):
    model, _ = demo
    t = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=1500)
    ctx = _ctx(t, demo, 30)
    ctx.clean_scores()
    # at eps 0.05 most digits resist, so 500 queries each cannot fit in what is left of 1,500
    f = BlackBoxProbe(eps_linf=[0.05], queries_per_sample=500, max_samples=30).run(ctx)
    assert t.queries <= 1500
    assert f.metric("queries_used").value <= 1500 - 30
    assert any("budget" in w for w in f.warnings)


def test_label_only_target_uses_hopskipjump(demo, demo_target):
    from assay.targets.base import LABELS, Target

    class LabelsOnly(Target):
        def _scores(self, x):
            raise AssertionError("scores must not be used")

        def _labels(self, x):
            with torch.no_grad():
                return demo_target.net(x).argmax(1)

    t = LabelsOnly(num_classes=10, input_shape=(1, 8, 8), capabilities={LABELS})
    f = BlackBoxProbe(norms=["l2"], eps_l2=[1.0, 3.0], queries_per_sample=300, max_samples=12).run(_ctx(t, demo, 12))
    r1, r3 = (f.metric(f"robust_accuracy[l2,eps={e:.4g}]").value for e in (1.0, 3.0))
    assert r3 <= r1 and r3 < 0.9
    assert f.accounting["attack"] == "hopskipjump"


def test_blackbox_on_a_tabular_sklearn_model():
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from assay.targets.sklearn import SklearnTarget

    X, y = make_classification(400, 10, random_state=0)
    X = ((X - X.min(0)) / (X.max(0) - X.min(0))).astype(np.float32)
    t = SklearnTarget(LogisticRegression().fit(X, y), bounds=(0.0, 1.0), query_budget=20_000)
    ctx = ProbeContext(t, Dataset(X[:60], y[:60]))
    # tabular epsilons are in per-feature standard deviations (features here span ~0.15 sd in [0, 1])
    f = BlackBoxProbe(eps_linf=[0.25, 1.0], queries_per_sample=200, max_samples=60).run(ctx)
    assert f.accounting["space"] == "standardized"
    clean = (t.labels(torch.from_numpy(X[:60])) == torch.from_numpy(y[:60])).float().mean().item()
    r1, r2 = (f.metric(f"robust_accuracy[linf,eps={e:.4g}]").value for e in (0.25, 1.0))
    assert r2 <= r1 <= clean + 1e-6 and r2 < clean - 0.2
    assert t.queries <= 20_000
