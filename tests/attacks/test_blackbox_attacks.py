"""Square Attack and HopSkipJump: success, budgets (per sample and total), balls, seeds, peers."""

import pytest
import torch

from assay.attacks.base import flat_norm
from assay.attacks.hopskipjump import hop_skip_jump
from assay.attacks.square import p_schedule, square
from assay.errors import InputError
from assay.targets import TorchTarget


@pytest.fixture(scope="module")
def data(demo):
    model, splits = demo
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), splits.x_test[:64], splits.y_test[:64]


class Counter:
    """Wraps a query function; records every batch size and the total."""

    def __init__(self, fn):
        self.fn, self.total, self.calls = fn, 0, 0

    def __call__(self, xb):
        self.total += xb.shape[0]
        self.calls += 1
        return self.fn(xb)


def _scores(model):
    return lambda xb: model(xb)


def test_p_schedule_matches_reference_points():
    assert p_schedule(0, 10000, 0.8) == 0.8
    assert p_schedule(11, 10000, 0.8) == 0.4
    assert p_schedule(8001, 10000, 0.8) == 0.8 / 512
    assert p_schedule(100, 1000, 0.8) == 0.8 / 16  # rescaled: 100/1000 -> 1000/10000


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 1.5)])
def test_square_breaks_undefended_model_within_ball_and_budget(data, norm, eps):
    model, x, y = data
    fn = Counter(_scores(model))
    res = square(fn, x, y, eps=eps, norm=norm, n_queries=300, seed=0)
    assert res.success.float().mean() > 0.8
    assert (res.norms <= eps + 1e-5).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.queries.max() <= 300
    assert fn.total == res.queries.sum().item() == res.info["total_queries"]
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)
    again = square(_scores(model), x, y, eps=eps, norm=norm, n_queries=300, seed=0)
    assert torch.equal(again.x_adv, res.x_adv) and torch.equal(again.queries, res.queries)


def test_square_reports_progress_without_changing_its_result(data):
    model, x, y = data
    seen = []
    res = square(_scores(model), x[:8], y[:8], eps=0.02, n_queries=160, seed=0, progress=lambda d, t: seen.append((d, t)))
    plain = square(_scores(model), x[:8], y[:8], eps=0.02, n_queries=160, seed=0)
    assert torch.equal(res.x_adv, plain.x_adv)
    assert seen[-1] == (158, 158) and all(t == 158 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_square_total_budget_is_hard(data):
    model, x, y = data
    fn = Counter(_scores(model))
    res = square(fn, x, y, eps=0.05, n_queries=1000, seed=0, query_budget=777)
    assert fn.total <= 777 and res.info["budget_exhausted"]
    assert fn.total == res.queries.sum().item()


def test_square_stops_on_target_budget(demo):
    model, splits = demo
    t = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=500)
    res = square(t.scores, splits.x_test[:64], splits.y_test[:64], eps=0.05, n_queries=1000)
    assert t.queries <= 500 and res.info["budget_exhausted"]


def test_square_rejects_flat_inputs(data):
    model, x, y = data
    with pytest.raises(InputError):
        square(_scores(model), x.flatten(1), y, eps=0.1)


def test_square_close_to_pyautoattack(data):
    sq = pytest.importorskip("pyautoattack.square")
    model, x, y = data
    ours = square(_scores(model), x, y, eps=0.1, norm="linf", n_queries=100, p_init=0.8, seed=0)
    ref = sq.SquareAttack(model, norm="Linf", n_queries=100, eps=0.1, p_init=0.8, seed=0, device="cpu")
    with torch.no_grad():
        ref_ra = (model(ref.perturb(x, y)).argmax(1) == y).float().mean().item()
    # ours draws a square position per point (the paper), the reference one per batch: at least
    # as strong, and not wildly different.
    assert ours.robust_accuracy <= ref_ra + 0.05
    assert ours.robust_accuracy >= ref_ra - 0.2


def test_hsj_norm_shrinks_with_queries_and_respects_budgets(data):
    model, x, y = data
    x, y = x[:32], y[:32]
    labels = lambda xb: model(xb).argmax(1)  # noqa: E731
    meds = []
    for mq in (100, 300, 600):
        fn = Counter(labels)
        res = hop_skip_jump(fn, x, y, norm="l2", max_queries=mq, seed=0)
        assert res.queries.max() <= mq and fn.total == res.queries.sum().item()
        with torch.no_grad():
            assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
        meds.append(res.norms[res.success].median().item())
    assert meds[0] > meds[1] > meds[2]
    fn = Counter(labels)
    res = hop_skip_jump(fn, x, y, norm="l2", max_queries=600, query_budget=3000, seed=0)
    assert fn.total <= 3000 and res.info["budget_exhausted"]


def test_hsj_success_at_eps(data):
    model, x, y = data
    x, y = x[:32], y[:32]
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    res = hop_skip_jump(lambda xb: model(xb).argmax(1), x, y, norm="l2", eps=1.5, max_queries=600)
    assert clean_acc > 0.9
    assert res.success.float().mean() > 0.8
    assert (res.norms[res.success] <= 1.5 + 1e-6).all()
    linf = hop_skip_jump(lambda xb: model(xb).argmax(1), x, y, norm="linf", eps=0.25, max_queries=600)
    assert linf.success.float().mean() > 0.8 and linf.queries.max() <= 600


def test_hsj_label_budget_exceeded_stops(demo):
    model, splits = demo
    t = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=400)
    res = hop_skip_jump(t.labels, splits.x_test[:16], splits.y_test[:16], max_queries=500)
    assert t.queries <= 400 and res.info["budget_exhausted"]
    # the target refused a batch larger than what was left: nothing was sent, the attack stopped
    assert res.queries.sum().item() == t.queries


def test_hsj_not_worse_than_art(data):
    """Median L2 norm at (about) the same per-sample query count as ART's HopSkipJump."""
    pytest.importorskip("art")
    import numpy as np
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import PyTorchClassifier

    model, x, y = data
    x, y = x[:8], y[:8]

    class Counted(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m, self.n = m, 0

        def forward(self, xb):
            self.n += xb.shape[0]
            return self.m(xb.float())

    counted = Counted(model)
    clf = PyTorchClassifier(counted, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    np.random.seed(0)
    adv = torch.from_numpy(HopSkipJump(clf, norm=2, max_iter=3, verbose=False).generate(x.numpy())).float()
    per_sample = counted.n // len(x)
    with torch.no_grad():
        art_ok = model(adv).argmax(1) != y
    art_med = flat_norm(adv - x, "l2")[art_ok].median().item()
    ours = hop_skip_jump(lambda xb: model(xb).argmax(1), x, y, norm="l2", max_queries=per_sample)
    assert ours.success.all()
    assert ours.norms.median().item() <= 1.5 * art_med


def test_targeted_hsj_reaches_the_target_class_and_shrinks_from_the_start(demo, data):
    model, x, y = data
    _, splits = demo
    x, y = x[:24], y[:24]
    y_target = (y + 1) % 10
    # starting points: training digits the model assigns to each target class
    with torch.no_grad():
        pool_pred = model(splits.x_train).argmax(1)
    x_init = torch.stack([splits.x_train[(pool_pred == t).nonzero()[0, 0]] for t in y_target])
    labels = Counter(lambda xb: model(xb).argmax(1))
    res = hop_skip_jump(labels, x, y, norm="l2", max_queries=500, targeted=True, y_target=y_target,
                        x_init=x_init, seed=0)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    clean_hit = model(x).argmax(1) == y_target
    assert torch.equal(pred == y_target, res.success) and res.success.all()
    assert res.info["targeted"] and res.queries.max() <= 500 and labels.total == res.queries.sum().item()
    start = flat_norm(x_init - x, "l2")
    # the walk along the boundary shrinks the distance well below the start's for every point
    assert (res.norms[~clean_hit] < 0.7 * start[~clean_hit]).all()
    untargeted = hop_skip_jump(lambda xb: model(xb).argmax(1), x, y, norm="l2", max_queries=500, seed=0)
    assert res.norms.median() > untargeted.norms.median()  # a chosen class is further than the nearest one
    with pytest.raises(InputError, match="y_target"):
        hop_skip_jump(labels, x, y, targeted=True)
    with pytest.raises(InputError, match="true label"):
        hop_skip_jump(labels, x, y, targeted=True, y_target=y)
