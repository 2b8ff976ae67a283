"""FGSM, PGD, APGD and APGD-T on the demo CNN and tiny models: budgets, success, accounting, seeds."""

import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from assay.attacks.apgd import apgd, apgd_checkpoints, apgd_targeted
from assay.attacks.gradient import fgsm, pgd, step_size_schedule, value_and_grad
from assay.attacks.losses import ce_loss, dlr_loss, dlr_targeted_loss
from assay.errors import InputError

N = 128
EPS = {"linf": 0.1, "l2": 1.0}


@pytest.fixture(scope="module")
def digits(demo):
    model, splits = demo
    x, y = splits.x_test[:N], splits.y_test[:N]
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    return model, x, y, clean_acc


def _attacks():
    return {
        "fgsm": lambda m, x, y, eps, norm, **kw: fgsm(m, x, y, eps=eps, norm=norm),
        "pgd": lambda m, x, y, eps, norm, **kw: pgd(m, x, y, eps=eps, norm=norm, steps=10, **kw),
        "apgd-ce": lambda m, x, y, eps, norm, **kw: apgd(m, x, y, eps=eps, norm=norm, steps=20, **kw),
        "apgd-dlr": lambda m, x, y, eps, norm, **kw: apgd(m, x, y, eps=eps, norm=norm, loss="dlr", steps=20, **kw),
        "apgd-t": lambda m, x, y, eps, norm, **kw: apgd_targeted(
            m, x, y, eps=eps, norm=norm, steps=10, n_target_classes=2, **kw
        ),
    }


def _predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", list(_attacks()))
def test_attack_stays_in_ball_and_bounds_and_breaks_the_undefended_model(digits, name, norm):
    model, x, y, clean_acc = digits
    eps = EPS[norm]
    res = _attacks()[name](model, x, y, eps, norm)
    delta = (res.x_adv - x).reshape(N, -1)
    measured = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert measured.max().item() <= eps + 1e-6
    assert torch.allclose(res.norms, measured)
    assert res.x_adv.min().item() >= 0.0 and res.x_adv.max().item() <= 1.0
    # success is what the model really does on x_adv
    assert torch.equal(res.success, _predict(model, res.x_adv) != y)
    # the undefended CNN loses a large share of its accuracy at these radii
    assert res.robust_accuracy < clean_acc - 0.2, (name, norm, clean_acc, res.robust_accuracy)


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "apgd-t"])
def test_attack_is_reproducible_from_its_seed(digits, name):
    model, x, y, _ = digits
    attack = _attacks()[name]
    a = attack(model, x[:48], y[:48], 0.06, "linf", seed=3)
    b = attack(model, x[:48], y[:48], 0.06, "linf", seed=3)
    c = attack(model, x[:48], y[:48], 0.06, "linf", seed=4)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)  # the seed drives the random start


@pytest.mark.parametrize("name", list(_attacks()))
def test_misclassified_points_are_successes_with_zero_perturbation(digits, name):
    model, x, y, _ = digits
    x, y = x[:32], y[:32].clone()
    wrong = torch.zeros(32, dtype=torch.bool)
    wrong[::4] = True
    y[wrong] = (_predict(model, x[wrong]) + 1) % 10  # labels the model disagrees with
    res = _attacks()[name](model, x, y, EPS["linf"], "linf")
    assert res.success[wrong].all()
    assert (res.norms[wrong] == 0).all() and torch.equal(res.x_adv[wrong], x[wrong])
    assert (res.queries[wrong] == 1).all()  # only the clean pass was spent on them


def test_pgd_points_leave_the_loop_the_step_they_break(digits):
    model, x, y, _ = digits
    steps = 20
    res = pgd(model, x, y, eps=0.1, steps=steps)
    robust = ~res.success
    clean_wrong = _predict(model, x) != y
    broken = res.success & ~clean_wrong
    assert robust.any() and broken.any()
    # clean pass + one pass per step + the final check
    assert (res.queries[robust] == 1 + steps + 1).all()
    assert res.queries[broken].max() <= 1 + steps + 1
    assert res.queries[broken].float().mean() < 1 + steps  # most break well before the end
    # a point broken at the random start costs two passes
    assert res.queries[broken].min() >= 2


def test_apgd_points_leave_the_loop_the_step_they_break(digits):
    model, x, y, _ = digits
    steps = 20
    res = apgd(model, x, y, eps=0.1, steps=steps)
    robust = ~res.success
    broken = res.success & (_predict(model, x) == y)
    assert robust.any() and broken.any()
    assert (res.queries[robust] == 1 + 1 + steps).all()
    assert res.queries[broken].float().mean() < res.queries[robust].float().mean()


def test_restarts_and_target_classes_run_only_on_unbroken_points(digits):
    model, x, y, _ = digits
    one = pgd(model, x, y, eps=0.1, steps=10, restarts=1)
    three = pgd(model, x, y, eps=0.1, steps=10, restarts=3)
    assert three.success.sum() >= one.success.sum()
    # a point broken in restart 1 costs the same as with a single restart
    first = one.success
    assert torch.equal(three.queries[first], one.queries[first])
    assert (three.queries[~three.success] == 1 + 3 * 11).all()
    tgt = apgd_targeted(model, x, y, eps=0.1, steps=10, n_target_classes=3)
    assert (tgt.queries[~tgt.success] == 1 + 3 * 11).all()
    assert tgt.info["n_target_classes"] == 3


def test_queries_match_the_targets_own_count(demo_target, digits):
    _, x, y, _ = digits
    before = demo_target.queries
    res = pgd(demo_target.module, x, y, eps=0.1, steps=5, batch_size=50)
    assert demo_target.queries - before == res.queries.sum().item()
    before = demo_target.queries
    res = apgd(demo_target.module, x, y, eps=0.1, steps=10)
    assert demo_target.queries - before == res.queries.sum().item()


def test_targeted_pgd_reaches_the_target_class(digits):
    model, x, y, _ = digits
    y_target = (y + 1) % 10
    res = pgd(model, x, y, eps=0.2, steps=20, targeted=True, y_target=y_target)
    assert torch.equal(res.success, _predict(model, res.x_adv) == y_target)
    assert res.success.float().mean() > 0.5
    dlr = pgd(model, x, y, eps=0.2, steps=20, targeted=True, y_target=y_target, loss="dlr")
    assert dlr.success.float().mean() > 0.5


def test_fgsm_targeted_moves_towards_the_target(digits):
    model, x, y, _ = digits
    y_target = (y + 1) % 10
    res = fgsm(model, x, y, eps=0.3, targeted=True, y_target=y_target)
    with torch.no_grad():
        before = model(x).log_softmax(1).gather(1, y_target[:, None])
        after = model(res.x_adv).log_softmax(1).gather(1, y_target[:, None])
    assert (after > before).float().mean() > 0.9


def _tiny_linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).double()


def test_results_do_not_depend_on_batch_size():
    model = _tiny_linear()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 3, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (40,), generator=g)
    for norm, eps in (("linf", 0.05), ("l2", 0.2)):
        a = pgd(model, x, y, eps=eps, norm=norm, steps=8, restarts=2)
        b = pgd(model, x, y, eps=eps, norm=norm, steps=8, restarts=2, batch_size=7)
        assert torch.equal(a.success, b.success) and torch.allclose(a.x_adv, b.x_adv)
        c = apgd(model, x, y, eps=eps, norm=norm, steps=12, loss="dlr")
        d = apgd(model, x, y, eps=eps, norm=norm, steps=12, loss="dlr", batch_size=9)
        assert torch.equal(c.success, d.success) and torch.allclose(c.x_adv, d.x_adv)


def test_linear_model_pgd_matches_the_closed_form():
    """On a linear binary model the L-inf optimum is x - eps * sign(w_y - w_other) per coordinate."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 2).double()
    x = torch.full((200, 6), 0.5, dtype=torch.float64) + 0.3 * (torch.rand(200, 6, dtype=torch.float64) - 0.5)
    y = lin(x).argmax(1).detach()
    eps = 0.05
    w = lin.weight.detach()
    direction = (w[1 - y] - w[y]).sign()
    with torch.no_grad():
        expected = lin(x + eps * direction).argmax(1) != y  # broken iff the corner flips the decision
    res = pgd(lin, x, y, eps=eps, steps=20, step_size=eps / 4)
    assert torch.equal(res.success, expected)


def test_eot_gradient_is_the_mean_over_passes():
    model = _tiny_linear()
    x = torch.rand(6, 3, 4, dtype=torch.float64)
    y = torch.arange(6) % 5
    _, loss1, g1 = value_and_grad(model, x, y, y, ce_loss, 1)
    _, loss3, g3 = value_and_grad(model, x, y, y, ce_loss, 3)
    assert torch.allclose(g1, g3) and torch.allclose(loss1, loss3)


class NoisyNet(nn.Module):
    """A randomized defence: Gaussian noise on the input before the classifier."""

    def __init__(self, inner, sigma):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        return self.inner(x + self.sigma * torch.randn_like(x))


def test_eot_attacks_a_randomized_model_and_counts_every_pass(digits):
    model, x, y, _ = digits
    noisy = NoisyNet(model, 0.1)
    torch.manual_seed(0)
    res = pgd(noisy, x[:64], y[:64], eps=0.15, steps=10, eot_samples=4)
    assert (res.queries % 4 == 0).all() and res.queries.max() == 4 * (1 + 10 + 1)
    assert res.success.float().mean() > 0.4
    torch.manual_seed(0)
    res = apgd(noisy, x[:64], y[:64], eps=0.15, steps=10, eot_samples=3)
    assert (res.queries % 3 == 0).all() and res.norms.max() <= 0.15 + 1e-6


def test_step_size_schedules():
    assert step_size_schedule(0.1, 4, "constant") == [0.1] * 4
    cos = step_size_schedule(1.0, 10, "cosine")
    assert cos[0] == 1.0 and all(a > b > 0 for a, b in zip(cos, cos[1:]))
    assert step_size_schedule(1.0, 8, "step") == [1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(InputError):
        step_size_schedule(1.0, 8, "linear")


def test_pgd_default_step_size_and_schedules_run(digits):
    model, x, y, _ = digits
    res = pgd(model, x[:32], y[:32], eps=0.1, steps=8)
    assert res.info["step_size"] == pytest.approx(2.5 * 0.1 / 8)
    for schedule in ("cosine", "step"):
        r = pgd(model, x[:32], y[:32], eps=0.1, steps=8, schedule=schedule, norm="l2")
        assert r.norms.max() <= 0.1 + 1e-6


def test_apgd_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = p_j * N_iter
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    assert apgd_checkpoints(100) == [math.ceil(q * 100) for q in p[1:]]
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_dlr_losses_match_hand_computed_values():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0, -1.0], [0.5, 2.0, 1.0, -2.0, 0.0]])
    y = torch.tensor([0, 0])
    # row 0: y is top; -(4 - 3) / (4 - 1); row 1: -(0.5 - 2) / (2 - 0.5)
    assert torch.allclose(dlr_loss(z, y), torch.tensor([-1 / 3, 1.0]))
    t = torch.tensor([2, 3])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = torch.tensor([-(4 - 3) / (4 - (1 + 0) / 2), -(0.5 + 2) / (2 - (0.5 + 0) / 2)])
    assert torch.allclose(dlr_targeted_loss(z, y, t), expected)


def test_bad_inputs_raise_one_line_input_errors(digits):
    model, x, y, _ = digits
    x, y = x[:4], y[:4]
    cases = [
        lambda: pgd(model, x, y, eps=0.1, norm="l7"),
        lambda: pgd(model, x, y, eps=0.0),
        lambda: pgd(model, x * 2 + 1, y, eps=0.1),
        lambda: pgd(model, x, y[:3], eps=0.1),
        lambda: pgd(model, x, y, eps=0.1, targeted=True),
        lambda: pgd(model, x, y, eps=0.1, targeted=True, y_target=y),
        lambda: pgd(model, x, y, eps=0.1, loss="hinge"),
        lambda: pgd(model, x, y, eps=0.1, steps=0),
        lambda: apgd(model, x, y, eps=0.1, norm="l1"),
        lambda: fgsm(model, x.long(), y, eps=0.1),
    ]
    for case in cases:
        with pytest.raises(InputError) as err:
            case()
        assert "\n" not in str(err.value)
    two_class = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(InputError, match="DLR"):
        apgd(two_class, x, torch.zeros(4, dtype=torch.long), eps=0.1, loss="dlr")
    with pytest.raises(InputError, match="DLR"):
        apgd_targeted(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, torch.zeros(4, dtype=torch.long), eps=0.1)


def test_bf16_pgd_is_as_strong_and_every_success_holds_in_float32(digits):
    model, x, y, _ = digits
    full = pgd(model, x, y, eps=0.1, steps=20, seed=0)
    half = pgd(model, x, y, eps=0.1, steps=20, seed=0, precision="bf16")
    assert half.info["precision"] == "bf16"
    assert half.norms.max() <= 0.1 + 1e-6 and half.x_adv.min() >= 0 and half.x_adv.max() <= 1
    # the reported successes are float32 facts, not bf16 rounding
    with torch.no_grad():
        wrong = model(half.x_adv).argmax(1) != y
    assert torch.equal(half.success, wrong)
    assert abs(half.robust_accuracy - full.robust_accuracy) <= 3 / N  # same strength up to a few points
    assert half.success.float().mean() > 0.2  # and it breaks the undefended model
    again = pgd(model, x, y, eps=0.1, steps=20, seed=0, precision="bf16")
    assert torch.equal(again.x_adv, half.x_adv)
    with pytest.raises(InputError, match="precision"):
        pgd(model, x, y, eps=0.1, precision="fp16")
