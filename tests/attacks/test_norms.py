"""The norm objects: measure, duality, projections, step directions and random starts."""

import math

import pytest
import torch

from assay.attacks.base import flat_norm
from assay.attacks.norms import L1, L2, LINF, NORMS, as_norm
from assay.errors import InputError

ALL = [LINF, L2, L1]
SHAPE = (64, 3, 4, 4)  # 48 values per sample


def _batch(seed=0, shape=SHAPE, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    # mixed scales: some samples far outside a unit ball, some well inside
    return torch.randn(shape, generator=g) * scale * torch.logspace(-2, 1, shape[0]).reshape(-1, 1, 1, 1)


def test_names_and_aliases_resolve_to_one_object_each():
    for name in ("linf", "Linf", "L-inf", "L_inf", "inf", "li", "LI"):
        assert as_norm(name) is LINF
    for name in ("l2", "L2", "L_2", "2"):
        assert as_norm(name) is L2
    for name in ("l1", "L-1", "1"):
        assert as_norm(name) is L1
    assert as_norm(L2) is L2
    assert list(NORMS) == ["linf", "l2", "l1"]
    with pytest.raises(InputError, match="unknown norm 'l3'; use one of linf, l2, l1"):
        as_norm("l3")
    with pytest.raises(InputError) as err:
        as_norm("l1", (LINF, L2), "square")
    assert str(err.value) == "square supports norm 'linf' or 'l2', not 'l1'; pick one of those"


@pytest.mark.parametrize("norm", ALL, ids=str)
def test_measure_matches_the_definition(norm):
    d = _batch()
    flat = d.reshape(len(d), -1).double()
    expected = {"linf": flat.abs().amax(1), "l2": flat.pow(2).sum(1).sqrt(), "l1": flat.abs().sum(1)}[norm.name]
    assert torch.allclose(norm(d).double(), expected, rtol=1e-5)
    assert torch.equal(flat_norm(d, norm.name), norm(d))
    assert norm.ones_norm(48) == pytest.approx(norm(torch.ones(1, 48)).item())


@pytest.mark.parametrize("norm", ALL, ids=str)
def test_hoelder_and_steepest_direction_attain_the_dual_norm(norm):
    a, b = _batch(1), _batch(2)
    inner = (a * b).flatten(1).sum(1)
    assert (inner.abs() <= norm(a) * norm.dual(b) * (1 + 1e-5)).all()
    assert norm.dual.dual is norm
    # the steepest-ascent direction has unit norm and gains exactly the dual norm of the gradient
    d = norm.steepest(b)
    assert torch.allclose(norm(d), torch.ones(len(b)), atol=1e-5)
    assert torch.allclose((b * d).flatten(1).sum(1), norm.dual(b), rtol=1e-5)
    # no other unit direction does better (random unit directions as challengers)
    for seed in range(5):
        r = _batch(10 + seed)
        r = r / norm(r).reshape(-1, 1, 1, 1)
        assert ((b * r).flatten(1).sum(1) <= norm.dual(b) * (1 + 1e-5)).all()


@pytest.mark.parametrize("norm", ALL, ids=str)
def test_projection_lands_in_the_ball_and_is_the_nearest_point(norm):
    d = _batch(3)
    eps = torch.linspace(0.1, 2.0, len(d))  # one radius per sample, and a scalar below
    for radius in (eps, 0.7):
        p = norm.project(d, radius)
        r = torch.as_tensor(radius).expand(len(d))
        assert (norm(p) <= r * (1 + 1e-5)).all()
        inside = norm(d) <= r
        assert torch.equal(p[inside], d[inside])  # points already inside do not move
        assert torch.allclose(norm(p[~inside]), r[~inside], rtol=1e-4)  # the others land on the sphere
        assert torch.allclose(norm.project(p, radius), p, atol=1e-6)  # idempotent
        # nearest in the Euclidean sense: no point of the ball we can name is closer
        dist = L2(d - p)
        for challenger in (norm.project(_batch(4), radius), d * (r / norm(d)).clamp(max=1).reshape(-1, 1, 1, 1)):
            assert (dist <= L2(d - challenger) + 1e-5).all()


def test_l1_projection_satisfies_its_optimality_conditions():
    # p = sign(d) * max(|d| - theta, 0) with one theta >= 0 per sample (Duchi et al. 2008)
    d = _batch(5)
    p = L1.project(d, 1.0).flatten(1)
    a = d.flatten(1).abs()
    moved = ~(L1(d) <= 1.0)
    for i in moved.nonzero().flatten().tolist():
        nz = p[i] != 0
        theta = (a[i][nz] - p[i][nz].abs())
        assert torch.allclose(theta, theta.mean().expand_as(theta), atol=1e-5)
        assert theta.mean() >= 0 and (a[i][~nz] <= theta.mean() + 1e-5).all()
        assert torch.equal(p[i][nz].sign(), d.flatten(1)[i][nz].sign())


@pytest.mark.parametrize("norm", [LINF, L2], ids=str)
def test_ball_and_box_stays_inside_both(norm):
    g = torch.Generator().manual_seed(6)
    x0 = torch.rand(SHAPE, generator=g)
    x_new = x0 + 3 * torch.randn(SHAPE, generator=g)
    eps = 0.3 if norm is LINF else 1.5
    out = norm.ball_and_box(x_new.clone(), x0, eps, (0.0, 1.0))
    assert (norm(out - x0) <= eps + 1e-6).all()
    assert out.min() >= 0 and out.max() <= 1
    # L-inf's precomputed limits give the same clamp as computing them on the spot
    limits = norm.limits(x0, eps, (0.0, 1.0))
    assert torch.equal(norm.ball_and_box(x_new.clone(), x0, eps, (0.0, 1.0), limits), out)
    # the in-place step is the textbook step
    grad = torch.randn(SHAPE, generator=g)
    assert torch.allclose(norm.step_(x0, grad.clone(), 0.05), x0 + 0.05 * norm.steepest(grad), atol=1e-7)


@pytest.mark.parametrize("norm", [LINF, L2], ids=str)
def test_random_starts_are_inside_the_ball_and_seeded(norm):
    eps, n = 0.5, 4000
    shape = (n, 1, 4, 4)

    def gen(seed):
        return torch.Generator().manual_seed(seed)

    u = norm.uniform_ball(shape, eps, gen(0), "cpu", torch.float32)
    assert (norm(u) <= eps * (1 + 1e-6)).all()
    assert torch.equal(u, norm.uniform_ball(shape, eps, gen(0), "cpu", torch.float32))
    assert not torch.equal(u, norm.uniform_ball(shape, eps, gen(1), "cpu", torch.float32))
    if norm is LINF:  # each coordinate uniform in [-eps, eps]
        assert abs(u.mean().item()) < 0.01 and u.abs().mean().item() == pytest.approx(eps / 2, rel=0.02)
    else:  # uniform in the volume: (r / eps)^d is uniform on [0, 1]
        q = (norm(u) / eps).double().pow(16)
        assert q.mean().item() == pytest.approx(0.5, abs=0.02)
        assert (q < 0.1).float().mean().item() == pytest.approx(0.1, abs=0.02)
    s = norm.scaled_noise(shape, eps, gen(2), "cpu", torch.float32)
    assert torch.allclose(norm(s), torch.full((n,), eps), rtol=1e-5)  # on the surface
    r = norm.random_at_radius(shape, eps, gen(3))
    assert torch.allclose(norm(r), torch.full((n,), eps), rtol=1e-5)
    if norm is LINF:
        assert torch.equal(r.abs(), torch.full(shape, eps))  # every coordinate at +-eps


@pytest.mark.parametrize("norm", [LINF, L2], ids=str)
def test_blend_runs_from_x_to_x_adv(norm):
    g = torch.Generator().manual_seed(7)
    x, x_adv = torch.rand(8, 10, generator=g), torch.rand(8, 10, generator=g)
    span = norm.blend_span(x, x_adv)
    assert torch.allclose(norm.blend(x, x_adv, span), x_adv)
    assert torch.allclose(norm.blend(x, x_adv, torch.zeros(8)), x)
    half = norm.blend(x, x_adv, span / 2)
    # halfway along the path is half as far from x, in the norm's own measure
    assert torch.allclose(norm(half - x), norm(x_adv - x) / 2, rtol=1e-5)


def test_l1_has_no_random_starts_so_no_attack_offers_it():
    with pytest.raises(NotImplementedError):
        L1.uniform_ball((2, 3), 1.0, torch.Generator(), "cpu", torch.float32)
    assert math.isinf(LINF.p) and L2.p == 2 and L1.p == 1
