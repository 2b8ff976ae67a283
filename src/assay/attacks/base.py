"""Shared pieces of every evasion attack: the result type and its conventions.

Conventions (all attacks follow them):

- Inputs ``x`` are float tensors in the model's input space, ``bounds=(low, high)``; ``y`` are int64
  labels. White-box attacks take ``model``: a differentiable callable returning logits. Black-box
  attacks take ``scores_fn`` (returns per-class scores) or ``labels_fn`` (returns labels) and a
  per-sample query allowance; the callable may raise :class:`assay.errors.BudgetExceeded` when the
  target's hard budget would be exceeded, and the attack then stops and returns what it has.
- ``success[i]`` is True when the model is wrong on ``x_adv[i]`` (untargeted) or predicts the target
  class (targeted). Points the model already gets wrong are successes with a zero perturbation and
  are never attacked: robust accuracy is ``1 - success.mean()``.
- Attacks only work on points not yet broken and drop each point from the loop once it breaks.
- Every random choice uses a ``torch.Generator`` seeded from ``seed``.
- ``norm`` is resolved once, at the attack's boundary, to a :class:`assay.attacks.norms.Norm`, which
  owns everything that differs per norm (measure, projection, step direction, random starts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from assay.attacks.norms import Norm, as_norm


@dataclass
class AttackResult:
    """Adversarial inputs and per-sample outcome of one attack run."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool (N,)
    norms: torch.Tensor  # float (N,): ||x_adv - x|| in ``norm``
    queries: torch.Tensor  # int64 (N,): model evaluations spent on each sample
    norm: str
    eps: float | None = None
    attack: str = ""
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Tensors and flags for a checkpointed unit of work (see ProbeContext.unit)."""
        return {"x_adv": self.x_adv, "success": self.success, "norms": self.norms, "queries": self.queries,
                "budget_exhausted": bool(self.info.get("budget_exhausted", False))}

    @property
    def robust_accuracy(self) -> float:
        return 1.0 - self.success.float().mean().item() if self.success.numel() else float("nan")

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item() if self.success.numel() else float("nan")


def flat_norm(delta: torch.Tensor, norm: str | Norm) -> torch.Tensor:
    """Per-sample norm of a batch of perturbations (``norm`` a name or a :class:`Norm`)."""
    return as_norm(norm)(delta)


def clip_to_bounds(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return x.clamp(bounds[0], bounds[1])


def is_success(logits: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> torch.Tensor:
    pred = logits.argmax(dim=1)
    return pred == y if targeted else pred != y


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def finalize(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    success: torch.Tensor,
    queries: torch.Tensor,
    norm: Norm,
    eps: float | None,
    attack: str,
    **info,
) -> AttackResult:
    """Build the result; unsuccessful points report their best attempt (still within the ball)."""
    return AttackResult(
        x_adv=x_adv.detach(),
        success=success.bool(),
        norms=norm((x_adv - x).detach()),
        queries=queries.long(),
        norm=norm.name,
        eps=eps,
        attack=attack,
        info=info,
    )
