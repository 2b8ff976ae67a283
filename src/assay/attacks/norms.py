"""The threat-model norms as objects: everything an attack does differently per norm lives here.

An attack resolves its ``norm`` argument once with :func:`as_norm` (``"linf"``, ``"l2"``, ``"l1"``
and the aliases ``"inf"``, ``"Linf"``, ``"L-inf"``, ``"2"``, ``"L_2"``, ...) and then calls methods
instead of branching on the name (the pattern of Foolbox 3's per-norm attack classes):

- ``norm(delta)``: per-sample norm of a batch; ``norm.dual``: the dual norm (Hoelder:
  ``|<a, b>| <= norm(a) * norm.dual(b)``).
- ``norm.project(delta, eps)``: the nearest point of the eps-ball (``eps`` scalar or per sample);
  ``norm.ball_and_box``: onto the ball around ``x0``, then onto the input box.
- ``norm.steepest(g)``: the unit-norm direction of steepest ascent, ``<g, steepest(g)> =
  norm.dual(g)`` (sign for L-inf, ``g / ||g||_2`` for L2, the largest coordinate for L1).
- Random starts: ``uniform_ball`` (PGD), ``scaled_noise`` (APGD), ``random_at_radius`` (the noise
  baseline of transfer attacks), all from the norm's base ``noise``.
- ``blend`` / ``blend_span``: HopSkipJump's path from ``x`` towards an adversarial point.

L1 is measured (it is the dual of L-inf, which FMN needs) and can project and give its steepest
direction, but no attack takes it as a threat model yet: it has no random starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from assay.errors import InputError

Bounds = tuple[float, float]
Limits = tuple[torch.Tensor, torch.Tensor]


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a (N,) tensor to broadcast against a batch shaped like ``like``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _radius(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``eps`` (scalar or per sample) as a (N,) tensor of ``like``'s dtype and device."""
    return torch.as_tensor(eps, dtype=like.dtype, device=like.device).expand(like.shape[0])


class Norm:
    """A p-norm over all non-batch dimensions. Subclasses override what differs per norm."""

    name: str = ""
    p: float = 0.0

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of a batch of perturbations, shape (N,)."""
        raise NotImplementedError

    @property
    def dual(self) -> Norm:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Norm) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # --- projections -------------------------------------------------------------------------

    def project(self, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
        """The nearest point of the ``eps``-ball (``eps`` a scalar or one radius per sample)."""
        raise NotImplementedError

    def limits(self, x0: torch.Tensor, eps: float, bounds: Bounds) -> Limits | None:
        """Precomputed element-wise limits that make :meth:`ball_and_box` one clamp (None: none)."""
        return None

    def ball_and_box(
        self, x_new: torch.Tensor, x0: torch.Tensor, eps: float | torch.Tensor, bounds: Bounds,
        limits: Limits | None = None,
    ) -> torch.Tensor:
        """Project onto the eps-ball around ``x0``, then onto the input box.

        Clamping to the box after the ball only moves coordinates towards ``x0`` (which is inside
        the box), so the result stays inside the ball.
        """
        return (x0 + self.project(x_new - x0, eps)).clamp_(*bounds)

    # --- step directions ---------------------------------------------------------------------

    def steepest(self, g: torch.Tensor) -> torch.Tensor:
        """The unit-norm direction maximising ``<g, d>`` (its value is ``self.dual(g)``)."""
        raise NotImplementedError

    def step_(self, x: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        """``x + alpha * steepest(grad)``; may overwrite ``grad``."""
        return x + alpha * self.steepest(grad)

    # --- random draws ------------------------------------------------------------------------

    def noise(self, shape, gen: torch.Generator, device=None, dtype=None) -> torch.Tensor:
        """The norm's base noise, from which its random starts are made."""
        raise NotImplementedError(f"no attack draws random {self.name} perturbations yet")

    def uniform_ball(self, shape, eps: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
        """Perturbations uniform in the eps-ball's volume (PGD's random start)."""
        raise NotImplementedError(f"no attack draws random {self.name} perturbations yet")

    def scaled_noise(self, shape, eps: float, gen: torch.Generator, device, dtype) -> torch.Tensor:
        """``eps * t / ||t||`` for ``t`` the base noise: a point on the ball's surface (APGD's start)."""
        raise NotImplementedError(f"no attack draws random {self.name} perturbations yet")

    def random_at_radius(self, shape, eps: float, gen: torch.Generator) -> torch.Tensor:
        """Random perturbations of norm exactly ``eps`` shaped like an attack's (a transfer baseline)."""
        raise NotImplementedError(f"no attack draws random {self.name} perturbations yet")

    # --- HopSkipJump's path towards x ------------------------------------------------------------

    def blend(self, x: torch.Tensor, x_adv: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The point at ``alpha`` on the way from ``x`` (0) to ``x_adv`` (:meth:`blend_span`)."""
        raise NotImplementedError

    def blend_span(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """The ``alpha`` at which :meth:`blend` returns ``x_adv``, per sample."""
        raise NotImplementedError

    def ones_norm(self, d: int) -> float:
        """The norm of the all-ones vector of ``d`` values, ``d ** (1 / p)``."""
        raise NotImplementedError


class LinfNorm(Norm):
    name, p = "linf", math.inf

    def __call__(self, delta):
        return delta.reshape(delta.shape[0], -1).abs().amax(dim=1)

    @property
    def dual(self):
        return L1

    def project(self, delta, eps):
        e = per_sample(_radius(eps, delta), delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def limits(self, x0, eps, bounds):
        # the eps-box around x0 intersected with the input bounds: ball and box are one clamp
        return (x0 - eps).clamp_(min=bounds[0]), (x0 + eps).clamp_(max=bounds[1])

    def ball_and_box(self, x_new, x0, eps, bounds, limits=None):
        return x_new.clamp_(*(limits if limits is not None else self.limits(x0, eps, bounds)))

    def steepest(self, g):
        return g.sign()

    def step_(self, x, grad, alpha):
        return grad.sign_().mul_(alpha).add_(x)  # in place: no temporaries in PGD's hot loop

    def noise(self, shape, gen, device=None, dtype=None):
        return 2 * torch.rand(shape, generator=gen, device=device, dtype=dtype) - 1  # U[-1, 1]

    def uniform_ball(self, shape, eps, gen, device, dtype):
        return self.noise(shape, gen, device, dtype) * eps

    def scaled_noise(self, shape, eps, gen, device, dtype):
        t = self.noise(shape, gen, device, dtype)
        return eps * t / per_sample(self(t) + 1e-12, t)

    def random_at_radius(self, shape, eps, gen):
        # random signs: every coordinate at +-eps, where sign-step attacks end up
        return eps * torch.randint(0, 2, shape, generator=gen).float().mul_(2).sub_(1)

    def blend(self, x, x_adv, alpha):
        a = per_sample(alpha, x)
        return torch.minimum(torch.maximum(x_adv, x - a), x + a)  # clip x_adv to the alpha-box around x

    def blend_span(self, x, x_adv):
        return self(x_adv - x)

    def ones_norm(self, d):
        return 1.0


class L2Norm(Norm):
    name, p = "l2", 2.0

    def __call__(self, delta):
        return delta.reshape(delta.shape[0], -1).norm(p=2, dim=1)

    @property
    def dual(self):
        return L2

    def project(self, delta, eps):
        n = self(delta).clamp_min(1e-12)
        return delta * per_sample(torch.clamp(_radius(eps, delta) / n, max=1.0), delta)

    def steepest(self, g):
        return g / per_sample(self(g).clamp_min(1e-12), g)

    def noise(self, shape, gen, device=None, dtype=None):
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)  # isotropic

    def uniform_ball(self, shape, eps, gen, device, dtype):
        # a uniform direction times eps * U^(1/d): uniform in the volume, not crowded at the centre
        d = math.prod(shape[1:])
        direction = self.steepest(self.noise(shape, gen, device, dtype))
        radius = eps * torch.rand(shape[0], generator=gen, device=device, dtype=dtype).pow(1.0 / d)
        return direction * per_sample(radius, direction)

    def scaled_noise(self, shape, eps, gen, device, dtype):
        return eps * self.steepest(self.noise(shape, gen, device, dtype))

    def random_at_radius(self, shape, eps, gen):
        g = self.noise(shape, gen)
        return eps * g / per_sample(self(g).clamp_min(1e-12), g)

    def blend(self, x, x_adv, alpha):
        a = per_sample(alpha, x)
        return (1 - a) * x + a * x_adv  # the segment from x to x_adv

    def blend_span(self, x, x_adv):
        return torch.ones(x.shape[0], device=x.device)

    def ones_norm(self, d):
        return math.sqrt(d)


class L1Norm(Norm):
    name, p = "l1", 1.0

    def __call__(self, delta):
        return delta.reshape(delta.shape[0], -1).abs().sum(dim=1)

    @property
    def dual(self):
        return LINF

    def project(self, delta, eps):
        # Duchi et al. (ICML 2008): soft-threshold by the theta that brings the L1 norm to eps
        d = delta.reshape(delta.shape[0], -1)
        e = _radius(eps, delta)
        a = d.abs()
        u = a.sort(dim=1, descending=True).values
        css = u.cumsum(dim=1)
        k = torch.arange(1, d.shape[1] + 1, device=d.device, dtype=d.dtype)
        rho = (u * k > css - e[:, None]).sum(dim=1).clamp_min(1)  # the condition holds on a prefix
        theta = (css.gather(1, (rho - 1)[:, None]).squeeze(1) - e) / rho.to(d.dtype)
        shrunk = d.sign() * (a - theta[:, None]).clamp_min(0)
        return torch.where((a.sum(dim=1) <= e)[:, None], d, shrunk).reshape(delta.shape)

    def steepest(self, g):
        # all the unit L1 mass on the largest |g_i|, with its sign
        flat = g.reshape(g.shape[0], -1)
        top = flat.abs().argmax(dim=1, keepdim=True)
        return torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top).sign()).reshape(g.shape)

    def ones_norm(self, d):
        return float(d)


LINF, L2, L1 = LinfNorm(), L2Norm(), L1Norm()
NORMS: dict[str, Norm] = {n.name: n for n in (LINF, L2, L1)}
_ALIASES = {"inf": "linf", "li": "linf", "2": "l2", "1": "l1"}


def as_norm(norm: str | Norm, supported: Iterable[Norm] | None = None, who: str = "this attack") -> Norm:
    """The :class:`Norm` named by ``norm`` (a name or alias, case, '-' and '_' ignored).

    ``supported`` limits the answer to the norms an attack implements; anything else is a one-line
    :class:`InputError` naming the choices.
    """
    if not isinstance(norm, Norm):
        key = str(norm).lower().replace("-", "").replace("_", "")
        key = _ALIASES.get(key, key)
        if key not in NORMS:
            raise InputError(f"unknown norm {norm!r}; use one of {', '.join(NORMS)}")
        norm = NORMS[key]
    if supported is not None:
        allowed = list(supported)
        if norm not in allowed:
            names = " or ".join(repr(n.name) for n in allowed)
            raise InputError(f"{who} supports norm {names}, not {norm.name!r}; pick one of those")
    return norm


__all__ = ["Norm", "LinfNorm", "L2Norm", "L1Norm", "LINF", "L2", "L1", "NORMS", "as_norm", "per_sample"]
