"""White-box gradient attacks: FGSM and PGD (L-inf, L2), plus the loop machinery APGD shares.

PGD follows Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR
2018): start at a random point of the eps-ball, step along the steepest-ascent direction of the loss
for the norm (sign of the gradient for L-inf, the unit gradient for L2), project back onto the ball
and the input bounds, repeat.

What assay adds over the textbook loop (see :mod:`assay.attacks.base` for the shared conventions):
points the model already gets wrong are never attacked; a point leaves the loop the step it breaks
(its successful input is kept); restarts run only on points still unbroken; ``eot_samples > 1``
averages the gradient over several forward passes of a randomized model; ``batch_size`` chunks the
work. Queries per sample count every forward pass spent on that sample (the clean pass included).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from assay.attacks.base import AttackResult, finalize, is_success, make_generator
from assay.attacks.losses import LossFn, ce_loss, ce_targeted_loss, make_loss
from assay.attacks.norms import L2, LINF, Norm, as_norm
from assay.errors import InputError

SCHEDULES = ("constant", "cosine", "step")

SuccessFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def untargeted_success(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    return is_success(logits, y, targeted=False)


def targeted_success(logits: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    return is_success(logits, y_target, targeted=True)


# --------------------------------------------------------------------------------------------------
# Input checks shared by the gradient attacks


def check_attack_inputs(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm,
    bounds: tuple[float, float],
    batch_size: int | None = None,
    eot_samples: int = 1,
    norms: tuple[Norm, ...] = (LINF, L2),
    who: str = "this attack",
) -> Norm:
    """Validate the common arguments at the boundary; returns the norm, resolved once."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise InputError("x must be a floating-point torch.Tensor; convert it with torch.as_tensor(x, dtype=torch.float32)")
    if x.dim() < 2:
        raise InputError(f"x must be a batch (N, ...), got shape {tuple(x.shape)}; add a batch dimension with x[None]")
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"y must be a 1-D tensor of {x.shape[0]} integer labels, one per row of x")
    norm = as_norm(norm, norms, who)
    try:
        eps_value = float(eps)
    except (TypeError, ValueError):
        eps_value = float("nan")
    if not (math.isfinite(eps_value) and eps_value > 0):
        raise InputError(f"eps must be a positive finite number, got {eps!r}")
    low, high = bounds
    if not low < high:
        raise InputError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    if x.numel() and (x.min().item() < low - 1e-6 or x.max().item() > high + 1e-6):
        raise InputError(
            f"x has values in [{x.min().item():.4g}, {x.max().item():.4g}] outside bounds {tuple(bounds)}; "
            "pass the model's real input range as bounds= (normalization belongs inside the model)"
        )
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise InputError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if int(eot_samples) != eot_samples or eot_samples < 1:
        raise InputError(f"eot_samples must be a positive integer, got {eot_samples!r}")
    return norm


def check_targets(y: torch.Tensor, y_target: torch.Tensor | None, targeted: bool) -> torch.Tensor:
    """The label each point is pushed towards: ``y_target`` when targeted, ``y`` otherwise."""
    if not targeted:
        return y
    if y_target is None:
        raise InputError("targeted=True needs y_target, a tensor with one target label per point")
    y_target = torch.as_tensor(y_target, device=y.device).long()
    if y_target.shape != y.shape:
        raise InputError(f"y_target must have shape {tuple(y.shape)} like y, got {tuple(y_target.shape)}")
    if (y_target == y).any():
        raise InputError("y_target equals the true label for some points; pick targets different from y")
    return y_target


# --------------------------------------------------------------------------------------------------
# Loop building blocks


def logits_of(model, x: torch.Tensor, eot_samples: int = 1, batch_size: int | None = None) -> torch.Tensor:
    """Logits without gradients, averaged over ``eot_samples`` passes, computed ``batch_size`` at a time."""
    step = batch_size or max(x.shape[0], 1)
    out = []
    with torch.no_grad():
        for i in range(0, x.shape[0], step):
            xb = x[i : i + step]
            if eot_samples == 1:
                out.append(model(xb).float())
            else:
                reps = xb.unsqueeze(0).expand(eot_samples, *xb.shape).reshape(-1, *xb.shape[1:])
                out.append(model(reps).float().view(eot_samples, xb.shape[0], -1).mean(0))
    return torch.cat(out) if out else x.new_zeros((0, 0))


def value_and_grad(
    model, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor, loss_fn: LossFn, eot_samples: int = 1,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits, per-sample loss and its input gradient, each averaged over ``eot_samples`` passes.

    With ``eot_samples > 1`` the passes run as one batch of repeated inputs, and the gradient of the
    mean loss is the expectation-over-transformation gradient (Athalye et al., 2018). With
    ``precision="bf16"`` the model runs under bfloat16 autocast (the loss in float32): a cheaper
    gradient direction, whose logits the caller must not trust for success (see :func:`confirm`).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if eot_samples == 1:
            logits = model(x).float()
            loss = loss_fn(logits, y, y_target)
        else:
            n = x.shape[0]
            reps = x.unsqueeze(0).expand(eot_samples, *x.shape).reshape(-1, *x.shape[1:])
            logits_all = model(reps).float()
            loss = loss_fn(logits_all, y.repeat(eot_samples), y_target.repeat(eot_samples))
            loss = loss.view(eot_samples, n).mean(0)
            logits = logits_all.view(eot_samples, n, -1).mean(0)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return logits.detach(), loss.detach(), grad


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


class LoopState:
    """Per-sample tensors (or tuples of them) of the points still in an attack loop; ``keep`` drops the others."""

    def __init__(self, **tensors: torch.Tensor | tuple[torch.Tensor, ...] | None):
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor) -> None:
        for name, value in list(self.__dict__.items()):
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                setattr(self, name, value[mask])
            elif isinstance(value, tuple):  # e.g. a norm's precomputed limits
                setattr(self, name, tuple(v[mask] for v in value))


class ChunkResult:
    """What one run of an attack loop hands back for a chunk of points."""

    def __init__(self, x0: torch.Tensor):
        n = x0.shape[0]
        self.x_adv = x0.clone()
        self.success = torch.zeros(n, dtype=torch.bool, device=x0.device)
        self.queries = torch.zeros(n, dtype=torch.long, device=x0.device)
        self.loss = torch.full((n,), float("-inf"), device=x0.device, dtype=x0.dtype)


class Tracker:
    """The attack's overall state: best inputs so far, success, queries; merges chunk results."""

    def __init__(self, x: torch.Tensor, success: torch.Tensor, queries_per_sample: int):
        self.x = x
        self.x_adv = x.clone()
        self.success = success.clone()
        self.queries = torch.full((x.shape[0],), queries_per_sample, dtype=torch.long, device=x.device)
        self.best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)

    def todo(self) -> torch.Tensor:
        return (~self.success).nonzero().squeeze(1)

    def chunks(self, idx: torch.Tensor, batch_size: int | None):
        step = batch_size or max(idx.numel(), 1)
        return [idx[i : i + step] for i in range(0, idx.numel(), step)]

    def absorb(self, idx: torch.Tensor, run: ChunkResult) -> None:
        better = run.success | (run.loss > self.best_loss[idx])
        self.x_adv[idx[better]] = run.x_adv[better]
        self.best_loss[idx] = torch.maximum(self.best_loss[idx], run.loss)
        self.success[idx] |= run.success
        self.queries[idx] += run.queries


# --------------------------------------------------------------------------------------------------
# FGSM


def fgsm(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    bounds: tuple[float, float] = (0.0, 1.0),
    targeted: bool = False,
    y_target: torch.Tensor | None = None,
) -> AttackResult:
    """Fast Gradient (Sign) Method (Goodfellow et al., 2015): one step of size ``eps``.

    Parameters
    ----------
    model: callable returning logits for inputs in ``bounds`` (e.g. ``TorchTarget(...).module``).
    x, y: inputs (N, ...) and int64 labels (N,).
    eps: L-inf or L2 radius; ``norm`` is "linf" (sign step) or "l2" (unit-gradient step).
    targeted, y_target: push towards ``y_target`` (minus cross-entropy of the target) instead.

    Returns
    -------
    AttackResult; queries are 1 per point (clean + gradient pass) plus 1 for the check of the
    perturbed input on points that were not already successes.

    Example
    -------
    >>> res = fgsm(target.module, x, y, eps=0.1)  # doctest: +SKIP
    >>> res.robust_accuracy  # doctest: +SKIP
    """
    norm = check_attack_inputs(x, y, eps=eps, norm=norm, bounds=bounds, who="fgsm")
    eps = float(eps)
    x = x.detach()
    y = y.to(x.device).long()
    goal = check_targets(y, y_target, targeted)
    success_fn = targeted_success if targeted else untargeted_success
    loss_fn = ce_targeted_loss if targeted else ce_loss
    logits, _, grad = value_and_grad(model, x, y, goal, loss_fn)
    tracker = Tracker(x, success_fn(logits, y, goal), queries_per_sample=1)
    todo = tracker.todo()
    if todo.numel():
        x0 = x[todo]
        # One step of length eps in the norm; the box clamp only shrinks it.
        x_new = (x0 + eps * norm.steepest(grad[todo])).clamp_(*bounds)
        hit = success_fn(logits_of(model, x_new), y[todo], goal[todo])
        tracker.x_adv[todo] = x_new
        tracker.success[todo] = hit
        tracker.queries[todo] += 1
    return finalize(x, tracker.x_adv, tracker.success, tracker.queries, norm, eps, "fgsm", targeted=targeted)


# --------------------------------------------------------------------------------------------------
# PGD


def step_size_schedule(step_size: float, steps: int, schedule: str) -> list[float]:
    """Step size of each iteration: constant, cosine decay to 0, or halved at 50% and 75% of steps."""
    if schedule == "constant":
        return [step_size] * steps
    if schedule == "cosine":
        return [step_size * 0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps)]
    if schedule == "step":
        return [step_size * 0.5 ** ((i >= 0.5 * steps) + (i >= 0.75 * steps)) for i in range(steps)]
    raise InputError(f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)}")


def _pgd_chunk(
    model,
    x0: torch.Tensor,
    y: torch.Tensor,
    goal: torch.Tensor,
    delta0: torch.Tensor | None,
    *,
    eps: float,
    norm: Norm,
    step_sizes: list[float],
    loss_fn: LossFn,
    success_fn: SuccessFn,
    bounds: tuple[float, float],
    eot_samples: int,
    precision: str = "fp32",
) -> ChunkResult:
    out = ChunkResult(x0)
    x_start = x0 if delta0 is None else (x0 + delta0).clamp_(*bounds)
    s = LoopState(index=torch.arange(x0.shape[0], device=x0.device), x0=x0, y=y, goal=goal, x=x_start,
                  limits=norm.limits(x0, eps, bounds))
    for alpha in step_sizes:
        logits, _, grad = value_and_grad(model, s.x, s.y, s.goal, loss_fn, eot_samples, precision)
        out.queries[s.index] += eot_samples
        hit = success_fn(logits, s.y, s.goal)
        if precision != "fp32" and hit.any():
            # Reduced-precision logits only nominate: a point leaves when float32 agrees.
            where = hit.nonzero().squeeze(1)
            out.queries[s.index[where]] += eot_samples
            hit[where] = success_fn(logits_of(model, s.x[where], eot_samples), s.y[where], s.goal[where])
        if hit.any():
            out.x_adv[s.index[hit]] = s.x[hit]
            out.success[s.index[hit]] = True
            keep = ~hit
            s.keep(keep)
            grad = grad[keep]
            if s.index.numel() == 0:
                return out
        s.x = norm.ball_and_box(norm.step_(s.x, grad, alpha), s.x0, eps, bounds, s.limits)
    # The last step's point has not been looked at yet.
    logits = logits_of(model, s.x, eot_samples)
    out.queries[s.index] += eot_samples
    out.x_adv[s.index] = s.x
    out.success[s.index] = success_fn(logits, s.y, s.goal)
    out.loss[s.index] = loss_fn(logits, s.y, s.goal).to(out.loss.dtype)
    return out


def pgd(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    steps: int = 40,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    schedule: str = "constant",
    loss: str = "ce",
    targeted: bool = False,
    y_target: torch.Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
    batch_size: int | None = None,
    eot_samples: int = 1,
    precision: str = "fp32",
) -> AttackResult:
    """Projected Gradient Descent (Madry et al., 2018) in L-inf or L2.

    Parameters
    ----------
    model: callable returning logits for inputs in ``bounds`` (e.g. ``TorchTarget(...).module``).
        It is used as given (never switched to training mode).
    x, y: inputs (N, ...) in ``bounds`` and int64 labels (N,).
    eps: radius of the ``norm`` ball ("linf" or "l2").
    steps: gradient steps per restart. ``step_size`` defaults to ``2.5 * eps / steps``.
    random_start: start each restart at a uniform random point of the ball (L2: uniform in the ball).
    restarts: runs from fresh random starts; each runs only on points still unbroken.
    schedule: "constant", "cosine" (decay to 0) or "step" (halved at 50% and 75% of steps).
    loss: "ce" (cross-entropy) or "dlr" (Croce & Hein's Difference of Logits Ratio; its targeted
        form when ``targeted``).
    targeted, y_target: succeed only when the model predicts ``y_target``.
    seed: seeds the random starts (one ``torch.Generator``). Results do not depend on ``batch_size``.
    batch_size: attack at most this many points at a time (None: all at once).
    eot_samples: forward passes averaged per gradient (and per success check) for randomized models.
    precision: "fp32", or "bf16" to compute the gradient passes under bfloat16 autocast (about 2-3x
        faster on CPUs with AMX and on GPUs; the step direction is a sign, robust to the rounding).
        Every success is still decided in float32: the clean pass, a float32 re-check of each point
        the bf16 logits call broken, and the check of the final iterate.

    Returns
    -------
    AttackResult: a broken point keeps the input that broke it; an unbroken one, the final iterate
    of its highest-loss restart. ``queries`` counts forward passes (clean pass, one per step, one to
    check the final iterate, plus the float32 re-checks under bf16, times ``eot_samples``).

    Example
    -------
    >>> from assay.targets import TorchTarget
    >>> target = TorchTarget(net, input_shape=(1, 8, 8))  # doctest: +SKIP
    >>> res = pgd(target.module, x, y, eps=8 / 255, steps=40)  # doctest: +SKIP
    >>> res.robust_accuracy, res.norms.max() <= 8 / 255 + 1e-6  # doctest: +SKIP
    """
    norm = check_attack_inputs(x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, eot_samples=eot_samples,
                               who="pgd")
    precision = check_precision(precision)
    eps = float(eps)
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if int(restarts) != restarts or restarts < 1:
        raise InputError(f"restarts must be a positive integer, got {restarts!r}")
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    if not (math.isfinite(step_size) and step_size > 0):
        raise InputError(f"step_size must be a positive finite number, got {step_size!r}")
    step_sizes = step_size_schedule(step_size, int(steps), schedule)
    x = x.detach()
    y = y.to(x.device).long()
    goal = check_targets(y, y_target, targeted)
    clean = logits_of(model, x, eot_samples, batch_size)
    loss_fn = make_loss(loss, targeted=targeted, num_classes=clean.shape[1])
    success_fn = targeted_success if targeted else untargeted_success
    tracker = Tracker(x, success_fn(clean, y, goal), queries_per_sample=eot_samples)
    gen = make_generator(seed, x.device)
    for _ in range(int(restarts)):
        # Noise for every point, so that a point's start depends on the seed alone.
        noise = norm.uniform_ball(x.shape, eps, gen, x.device, x.dtype) if random_start else None
        todo = tracker.todo()
        for idx in tracker.chunks(todo, batch_size):
            run = _pgd_chunk(
                model, x[idx], y[idx], goal[idx], None if noise is None else noise[idx],
                eps=eps, norm=norm, step_sizes=step_sizes, loss_fn=loss_fn, success_fn=success_fn,
                bounds=bounds, eot_samples=eot_samples, precision=precision,
            )
            tracker.absorb(idx, run)
    return finalize(
        x, tracker.x_adv, tracker.success, tracker.queries, norm, eps, "pgd", precision=precision,
        steps=int(steps), step_size=step_size, restarts=int(restarts), schedule=schedule, loss=loss,
        random_start=random_start, targeted=targeted, eot_samples=eot_samples, seed=seed,
    )


__all__ = ["fgsm", "pgd", "step_size_schedule", "SCHEDULES"]
