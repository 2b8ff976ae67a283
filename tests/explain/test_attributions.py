import numpy as np
import pytest
import torch
from torch import nn

from assay.data.dataset import Dataset
from assay.engine.context import ProbeContext
from assay.errors import InputError
from assay.explain.attributions import (
    deletion_insertion,
    integrated_gradients,
    occlusion,
    permutation_importance,
    quadrature,
    randomization_check,
    saliency,
    smoothgrad,
    spearman_rows,
)
from assay.probes.explain.attributions import Attributions
from assay.targets import TorchTarget


@pytest.fixture(scope="module")
def small_cnn(demo):
    model, sp = demo
    x = sp.x_test[:8]
    return model, x, model(x).argmax(1)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_equals_captum(small_cnn, method):
    captum = pytest.importorskip("captum.attr")
    model, x, t = small_cnn
    base = torch.full_like(x, 0.1)
    ours, delta = integrated_gradients(model, x, t, baseline=base, n_steps=30, method=method, internal_batch_size=50)
    theirs, their_delta = captum.IntegratedGradients(model).attribute(
        x, baselines=base, target=t, n_steps=30, method=method, return_convergence_delta=True)
    # Captum's trapezoid weights sum to (n-1)/n instead of 1 (documented in quadrature()).
    scale = 1.0 if method == "gausslegendre" else 29 / 30
    torch.testing.assert_close(ours * scale, theirs, atol=2e-6, rtol=1e-4)
    if method == "gausslegendre":
        torch.testing.assert_close(delta, their_delta.float(), atol=2e-5, rtol=1e-4)


def test_quadrature_weights_integrate_polynomials():
    for method in ("gausslegendre", "riemann_trapezoid"):
        a, w = quadrature(200, method)
        assert float(w.sum()) == pytest.approx(1.0)
        assert float((w * a**2).sum()) == pytest.approx(1 / 3, abs=1e-4)


def test_completeness_and_chunking(small_cnn):
    model, x, t = small_cnn
    x, t = x[:4], t[:4]
    a1, d1 = integrated_gradients(model, x, t, n_steps=32)
    a2, d2 = integrated_gradients(model, x, t, n_steps=32, internal_batch_size=7)  # odd chunk size
    torch.testing.assert_close(a1, a2, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        gap = model(x).gather(1, t[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    assert (d1.abs() < 0.05 * gap.abs().clamp_min(1)).all()  # sum(attr) ~ f(x) - f(0)


def test_saliency_and_smoothgrad_by_hand():
    net = nn.Linear(3, 2, bias=False)
    net.weight.data = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]])
    x = torch.rand(4, 3)
    assert saliency(net, x, 0).tolist() == [[1.0, 2.0, 0.5]] * 4
    # for a linear model the noisy gradients are all equal to the weights
    torch.testing.assert_close(smoothgrad(net, x, 1, n_samples=5), torch.tensor([[0.0, 1.0, 1.0]] * 4))


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    a = torch.tensor(np.random.default_rng(0).integers(0, 4, (3, 25)), dtype=torch.float64)
    b = torch.randn(3, 25, dtype=torch.float64)
    ours = spearman_rows(a, b)
    ref = [spearmanr(a[i], b[i]).statistic for i in range(3)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_randomization_check_tells_trained_from_randomized(small_cnn):
    model, x, t = small_cnn
    steps = randomization_check(model, x, t, lambda m, xx, tt: saliency(m, xx, tt), mode="cascading")
    assert [s["layer"] for s in steps][0] == "classifier.3"  # output layer first
    assert steps[-1]["mean"] < 0.5
    # a "method" that ignores the model (the input itself) is perfectly correlated: the check catches it
    blind = randomization_check(model, x, t, lambda m, xx, tt: xx.clone() + 0.0, mode="independent")
    assert all(s["mean"] > 0.99 for s in blind)
    # the original model is untouched
    torch.testing.assert_close(model(x).argmax(1), t)


def test_randomization_check_on_a_counted_target_module(small_cnn):
    """The documented probe path: a TorchTarget's counted module (which holds a lock) can be copied,
    and the randomized copies' passes still count against the same target."""
    from assay.targets import TorchTarget

    model, x, t = small_cnn
    target = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu")
    before = target.queries
    steps = randomization_check(target.module, x, t, lambda m, xx, tt: saliency(m, xx, tt), mode="cascading")
    assert steps[-1]["mean"] < 0.5 and target.queries - before >= len(steps) * len(x)


def test_deletion_insertion_faithful_vs_reversed(demo, demo_target, small_cnn):
    model, x, t = small_cnn
    attr, _ = integrated_gradients(model, x, t, n_steps=32)
    good = deletion_insertion(demo_target, x, t, attr.abs(), steps=10)
    bad = deletion_insertion(demo_target, x, t, -attr.abs(), steps=10)
    assert good["deletion_auc"].mean() < bad["deletion_auc"].mean()
    assert good["insertion_auc"].mean() > bad["insertion_auc"].mean()
    assert good["deletion"].shape == (8, 11) and good["fraction"][-1] == 1.0


def test_black_box_methods_count_queries():
    w = torch.tensor([[3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    net = nn.Linear(3, 2)
    net.weight.data, net.bias.data = w, torch.zeros(2)
    t = TorchTarget(net, input_shape=(3,), num_classes=2, device="cpu", query_budget=10_000)
    x = torch.randn(200, 3)
    y = (x[:, 0] > 0).long() ^ 1  # class 0 when x0 > 0
    q0 = t.queries
    drop, _ = permutation_importance(t, x, y, n_repeats=3)
    assert t.queries - q0 == 200 * (1 + 3 * 3)
    assert drop[0] > 0.3 and abs(drop[1]) < 1e-12 and abs(drop[2]) < 1e-12
    img_net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    img_net[1].weight.data.zero_()
    img_net[1].weight.data[0, 5] = 5.0  # only pixel (1, 1) matters
    ti = TorchTarget(img_net, input_shape=(1, 4, 4), num_classes=2, device="cpu")
    att = occlusion(ti, torch.ones(2, 1, 4, 4), 0, window=1)
    assert att[0, 0].abs().argmax().item() == 5
    with pytest.raises(InputError, match="images"):
        occlusion(ti, torch.ones(2, 16), 0)


def test_explain_probe_evidence(demo, demo_target):
    _, sp = demo
    probe = Attributions(n_samples=8, n_steps=16, randomization_steps=8, n_boot=100, curve_steps=8)
    f = probe.run(ProbeContext(demo_target, Dataset(sp.x_test, sp.y_test), probe_name="explain.attributions"))
    names = {m.name for m in f.metrics}
    assert {"completeness_gap", "deletion_auc", "insertion_auc", "randomization_rank_correlation[saliency]",
            "randomization_rank_correlation[integrated_gradients]"} <= names
    img = next(e for e in f.evidence if e.kind == "images")
    first = img.data["rows"][0]["images"]
    assert [i["label"] for i in first] == ["input", "integrated_gradients (red +, blue -)"]
    from assay.images import png_size

    assert png_size(first[1]["png"]) == (64, 64)  # 8x8 upscaled
    assert f.metric("randomization_rank_correlation[saliency]").value < 0.5
