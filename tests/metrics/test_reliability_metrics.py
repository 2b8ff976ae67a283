import numpy as np
import pytest
import torch

from assay.errors import InputError
from assay.metrics.calibration import CalibrationTerms, brier_score, classwise_ece, ece, fit_temperature, nll
from assay.metrics.ood import DetectionTerms, ash_logits, ash_s, auroc, energy_score, fpr_at_tpr, shifted_copy
from assay.metrics.selective import SelectiveTerms, aurc, coverage_at_accuracy, excess_aurc


def test_calibration_by_hand():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    # bins (10): conf 0.9 x2 (acc 0.5) -> |0.9-0.5|*2; 0.7 (acc 1) -> 0.3; 0.6 (acc 1) -> 0.4
    assert ece(p, y, n_bins=10) == pytest.approx((0.8 + 0.3 + 0.4) / 4)
    assert brier_score(p, y) == pytest.approx(np.mean([0.02, 1.62, 0.18, 0.32]))
    assert nll(p, y) == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.7, 0.6])))
    # classwise: class 1 probs [0.1,0.1,0.7,0.6] vs [0,1,1,1]: bin1 |0.2-1| = 0.8, bin7 0.3, bin6 0.4
    # class 0 probs [0.9,0.9,0.3,0.4] vs [1,0,0,0]: bin9 |1.8-1|=0.8, bin3 0.3, bin4 0.4
    assert classwise_ece(p, y, n_bins=10) == pytest.approx((1.5 + 1.5) / (2 * 4))
    assert ece(p, y, n_bins=2, strategy="quantile") == pytest.approx((abs(0.6 + 0.7 - 2) + abs(1.8 - 1)) / 4)


def test_matches_sklearn_and_loop_reference():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 5)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 5, 400)
    assert nll(p, y) == pytest.approx(log_loss(y, p, labels=range(5)))
    conf, correct = p.max(1), p.argmax(1) == y
    ref = 0.0
    for b in range(15):
        m = (np.minimum((conf * 15).astype(int), 14) == b)
        if m.any():
            ref += m.mean() * abs(conf[m].mean() - correct[m].mean())
    assert ece(p, y, n_bins=15) == pytest.approx(ref)


def test_overconfident_model_has_larger_ece_than_temperature_scaled_copy():
    g = torch.Generator().manual_seed(0)
    n, k = 2000, 4
    true_logits = torch.randn(n, k, generator=g) * 1.5
    y = torch.multinomial(torch.softmax(true_logits, 1), 1, generator=g)[:, 0]
    over = true_logits * 4  # same ranking, far too confident
    temp = fit_temperature(over[:1000], y[:1000])
    assert 3.0 < temp < 5.5  # recovers roughly the factor 4
    before = ece(torch.softmax(over[1000:], 1), y[1000:])
    after = ece(torch.softmax(over[1000:] / temp, 1), y[1000:])
    assert before > 0.1 and after < before / 3
    lo, hi = CalibrationTerms(torch.softmax(over[1000:], 1), y[1000:]).bootstrap(300)["ece"]
    assert lo < before < hi


def test_selective_by_hand_and_bootstrap():
    conf = [0.9, 0.8, 0.7, 0.6]
    correct = [1, 0, 1, 1]
    # risks at coverage 1..4: 0, 1/2, 1/3, 1/4; oracle: 0, 0, 0, 1/4
    assert aurc(conf, correct) == pytest.approx((0 + 0.5 + 1 / 3 + 0.25) / 4)
    assert excess_aurc(conf, correct) == pytest.approx((0.5 + 1 / 3) / 4)
    assert coverage_at_accuracy(conf, correct, 0.7) == pytest.approx(1.0)  # accuracies 1, 1/2, 2/3, 3/4
    assert coverage_at_accuracy(conf, correct, 0.8) == pytest.approx(0.25)
    assert coverage_at_accuracy(conf, correct, 0.99) == pytest.approx(0.25)
    rng = np.random.default_rng(0)
    c = rng.random(500)
    k = rng.random(500) < c
    t = SelectiveTerms(c, k)
    lo, hi = t.bootstrap(0.9, 300)["aurc"]
    assert lo < t.point()["aurc"] < hi


def test_detection_matches_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(1)
    a = np.round(rng.normal(1, 1, 300), 1)  # rounded: ties exercise the tie handling
    b = np.round(rng.normal(0, 1, 200), 1)
    lab = np.r_[np.ones(300), np.zeros(200)]
    assert auroc(a, b) == pytest.approx(roc_auc_score(lab, np.r_[a, b]))
    fpr, tpr, _ = roc_curve(lab, np.r_[a, b])
    assert fpr_at_tpr(a, b) == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])
    lo, hi = DetectionTerms(a, b).bootstrap(n_boot=300)["auroc"]
    assert lo < auroc(a, b) < hi


def test_energy_and_ash_by_hand():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert energy_score(z).item() == pytest.approx(np.log(np.exp([1, 2, 3]).sum()))
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    out = ash_s(a, 50)
    assert out[0, :2].tolist() == [0, 0]
    assert out[0, 2:].tolist() == pytest.approx([3 * np.exp(10 / 7), 4 * np.exp(10 / 7)], rel=1e-5)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x = torch.rand(5, 3)
    ref = net[2](ash_s(net[1](net[0](x)), 75))
    torch.testing.assert_close(ash_logits(net, x, 75), ref.detach())
    # the hook is removed afterwards
    torch.testing.assert_close(net(x), net[2](net[1](net[0](x))))


def test_shifts_and_bad_inputs():
    x = torch.rand(10, 1, 4, 4)
    perm = shifted_copy(x, "permute", seed=0)
    assert torch.allclose(perm.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert shifted_copy(x, "noise").min() >= 0 and shifted_copy(x, "noise").max() <= 1
    with pytest.raises(InputError):
        shifted_copy(x, "rotate")
    with pytest.raises(InputError, match="softmax"):
        ece(np.array([[2.0, -1.0]]), [0])
