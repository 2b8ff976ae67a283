"""Auto-PGD (APGD) and its targeted form APGD-T.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1, with the reference implementation's settings
(auto-attack, ``autopgd_base.py``):

- ``steps = 100``; initial step size ``eta = 2 * eps`` (L-inf and L2), one per sample.
- Momentum ``alpha = 0.75`` (no momentum on the first step):
  ``z = P(x_k + eta * dir(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_{k-1}))``
  with ``P`` the projection onto the eps-ball and the input box, ``dir`` the sign (L-inf) or unit
  gradient (L2).
- Checkpoints ``w_j = p_j * steps`` with ``p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` (the reference's integer arithmetic: first
  window ``int(0.22 steps)``, shrinking by ``int(0.03 steps)`` down to ``int(0.06 steps)``).
- At a checkpoint a point halves its step and restarts from its best (highest-loss) point when
  (1) the loss increased in at most ``rho = 0.75`` of the window's steps, or (2) its step was not
  reduced at the previous checkpoint and its best loss has not improved since.
- Random start: L-inf ``x + eps * t / ||t||_inf`` with ``t ~ U[-1, 1]^d``; L2 ``x + eps * g / ||g||_2``
  with ``g`` Gaussian; then clipped to the box.

Deviation, on purpose: condition (1) counts increases against the loss at the starting point for
the first window as the paper writes it (the reference compares the first step against an unset 0).

assay's conventions apply (points already misclassified are not attacked, a point leaves the loop
the iteration it is misclassified, restarts and target classes run only on unbroken points).
"""

from __future__ import annotations

import torch

from assay.attacks.base import AttackResult, finalize, make_generator
from assay.attacks.gradient import (
    ChunkResult,
    LoopState,
    SuccessFn,
    Tracker,
    check_attack_inputs,
    logits_of,
    untargeted_success,
    value_and_grad,
)
from assay.attacks.losses import LossFn, make_loss
from assay.attacks.norms import Norm, per_sample
from assay.errors import InputError

MOMENTUM = 0.75


def apgd_checkpoints(steps: int) -> list[int]:
    """Iteration counts ``w_j`` after which APGD may halve its step (the reference's schedule).

    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    window = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    smallest = max(int(0.06 * steps), 1)
    points, w = [], window
    while w <= steps:
        points.append(w)
        window = max(window - shrink, smallest)
        w += window
    return points


def _apgd_chunk(
    model,
    x0: torch.Tensor,
    y: torch.Tensor,
    goal: torch.Tensor,
    delta0: torch.Tensor,
    *,
    eps: float,
    norm: Norm,
    steps: int,
    rho: float,
    loss_fn: LossFn,
    success_fn: SuccessFn,
    bounds: tuple[float, float],
    eot_samples: int,
) -> ChunkResult:
    out = ChunkResult(x0)
    n = x0.shape[0]
    checks = apgd_checkpoints(steps)
    windows = dict(zip(checks, [checks[0]] + [b - a for a, b in zip(checks, checks[1:])]))

    x = (x0 + delta0).clamp_(*bounds)
    logits, loss, grad = value_and_grad(model, x, y, goal, loss_fn, eot_samples)
    s = LoopState(
        index=torch.arange(n, device=x0.device), x0=x0, y=y, goal=goal,
        x=x, x_prev=x.clone(), grad=grad,
        x_best=x.clone(), grad_best=grad.clone(), loss_best=loss.clone(),
        eta=torch.full((n,), 2.0 * eps, device=x0.device, dtype=x0.dtype),
        loss_prev=loss.clone(), n_increase=torch.zeros(n, device=x0.device),
        loss_best_last_check=loss.clone(),
        reduced_last_check=torch.ones(n, dtype=torch.bool, device=x0.device),
        limits=norm.limits(x0, eps, bounds),
    )
    out.queries += eot_samples

    for i in range(steps + 1):
        # Points misclassified at the current iterate x^(i) leave the loop with it.
        hit = success_fn(logits, s.y, s.goal)
        if hit.any():
            out.x_adv[s.index[hit]] = s.x[hit]
            out.success[s.index[hit]] = True
            s.keep(~hit)
            loss = loss[~hit]
            if s.index.numel() == 0:
                return out
        if i > 0:
            # Best-loss tracking, then the step-size checkpoint w_j = i.
            improved = loss > s.loss_best
            s.loss_best = torch.where(improved, loss, s.loss_best)
            s.x_best = torch.where(per_sample(improved, s.x), s.x, s.x_best)
            s.grad_best = torch.where(per_sample(improved, s.x), s.grad, s.grad_best)
            s.n_increase += loss > s.loss_prev
            s.loss_prev = loss
            if i in windows:
                oscillating = s.n_increase <= windows[i] * rho
                stalled = ~s.reduced_last_check & (s.loss_best_last_check >= s.loss_best)
                reduce = oscillating | stalled
                s.reduced_last_check = reduce
                s.loss_best_last_check = s.loss_best.clone()
                s.eta = torch.where(reduce, s.eta / 2, s.eta)
                restart = per_sample(reduce, s.x)
                s.x = torch.where(restart, s.x_best, s.x)
                s.grad = torch.where(restart, s.grad_best, s.grad)
                s.n_increase.zero_()
        if i == steps:
            break
        # The momentum step to x^(i+1) (no momentum on the first step).
        a = 1.0 if i == 0 else MOMENTUM
        eta = per_sample(s.eta, s.x)
        z = norm.ball_and_box(s.x + eta * norm.steepest(s.grad), s.x0, eps, bounds, s.limits)
        x_new = norm.ball_and_box(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_prev), s.x0, eps, bounds, s.limits)
        s.x_prev, s.x = s.x, x_new
        logits, loss, s.grad = value_and_grad(model, s.x, s.y, s.goal, loss_fn, eot_samples)
        out.queries[s.index] += eot_samples

    # Unbroken points report their highest-loss iterate.
    out.x_adv[s.index] = s.x_best
    out.loss[s.index] = s.loss_best.to(out.loss.dtype)
    return out


def _check_apgd_args(steps: int, restarts: int, rho: float) -> None:
    if int(steps) != steps or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if int(restarts) != restarts or restarts < 1:
        raise InputError(f"restarts must be a positive integer, got {restarts!r}")
    if not (isinstance(rho, (int, float)) and 0 < rho <= 1):
        raise InputError(f"rho must be in (0, 1], got {rho!r}")


def apgd(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    loss: str = "ce",
    steps: int = 100,
    restarts: int = 1,
    rho: float = 0.75,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
    batch_size: int | None = None,
    eot_samples: int = 1,
) -> AttackResult:
    """Auto-PGD (Croce & Hein, 2020), untargeted, on the cross-entropy or DLR loss.

    Parameters
    ----------
    model: callable returning logits for inputs in ``bounds`` (e.g. ``TorchTarget(...).module``).
    x, y: inputs (N, ...) in ``bounds`` and int64 labels (N,).
    eps: radius of the ``norm`` ball ("linf" or "l2").
    loss: "ce" (APGD-CE), "dlr" (APGD-DLR; needs at least 3 classes) or "margin" (the DLR numerator,
        for two-class models).
    steps: iterations per restart (100 as in AutoAttack). rho: the oscillation threshold (0.75).
    restarts: runs from fresh random starts, each only on points still unbroken.
    seed: seeds the random starts; results do not depend on ``batch_size``.
    batch_size: attack at most this many points at a time (None: all at once).
    eot_samples: forward passes averaged per gradient and per success check (randomized models).

    Returns
    -------
    AttackResult: broken points keep the input that broke them, unbroken ones their highest-loss
    iterate. Queries: the clean pass plus ``1 + steps`` passes per restart at most, times
    ``eot_samples``.

    Example
    -------
    >>> res = apgd(target.module, x, y, eps=8 / 255, loss="dlr")  # doctest: +SKIP
    >>> res.robust_accuracy  # doctest: +SKIP
    """
    norm = check_attack_inputs(x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, eot_samples=eot_samples,
                               who="apgd")
    eps = float(eps)
    _check_apgd_args(steps, restarts, rho)
    x = x.detach()
    y = y.to(x.device).long()
    clean = logits_of(model, x, eot_samples, batch_size)
    loss_fn = make_loss(loss, targeted=False, num_classes=clean.shape[1])
    tracker = Tracker(x, untargeted_success(clean, y, y), queries_per_sample=eot_samples)
    gen = make_generator(seed, x.device)
    for _ in range(int(restarts)):
        start = norm.scaled_noise(x.shape, eps, gen, x.device, x.dtype)
        for idx in tracker.chunks(tracker.todo(), batch_size):
            run = _apgd_chunk(
                model, x[idx], y[idx], y[idx], start[idx], eps=eps, norm=norm, steps=int(steps),
                rho=rho, loss_fn=loss_fn, success_fn=untargeted_success, bounds=bounds,
                eot_samples=eot_samples,
            )
            tracker.absorb(idx, run)
    return finalize(
        x, tracker.x_adv, tracker.success, tracker.queries, norm, eps, f"apgd-{loss}",
        steps=int(steps), restarts=int(restarts), rho=rho, loss=loss, eot_samples=eot_samples, seed=seed,
    )


def apgd_targeted(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int | None = 0,
    batch_size: int | None = None,
    loss: str = "dlr",
) -> AttackResult:
    """APGD-T (Croce & Hein, 2020): APGD on the targeted DLR loss, one run per target class.

    The targets are the classes ranked 2nd, 3rd, ... ``n_target_classes + 1``-th by clean logit
    (``n_target_classes`` is clamped to ``num_classes - 1``); each target runs ``restarts`` times,
    only on the points not yet misclassified. Success is untargeted: any wrong prediction counts.
    The targeted DLR loss needs at least 4 classes (its denominator uses the 4th-largest logit);
    ``loss="ce"`` runs the same search on the targeted cross-entropy, for 3-class models.

    Returns
    -------
    AttackResult; queries: the clean pass plus at most ``1 + steps`` per target and restart.

    Example
    -------
    >>> res = apgd_targeted(target.module, x, y, eps=8 / 255)  # doctest: +SKIP
    """
    norm = check_attack_inputs(x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, who="apgd_targeted")
    eps = float(eps)
    _check_apgd_args(steps, restarts, 0.75)
    if int(n_target_classes) != n_target_classes or n_target_classes < 1:
        raise InputError(f"n_target_classes must be a positive integer, got {n_target_classes!r}")
    x = x.detach()
    y = y.to(x.device).long()
    clean = logits_of(model, x, 1, batch_size)
    num_classes = clean.shape[1]
    loss_fn = make_loss(loss, targeted=True, num_classes=num_classes)  # checks the class count
    n_targets = min(int(n_target_classes), num_classes - 1)
    ranked = clean.argsort(dim=1, descending=True)
    tracker = Tracker(x, untargeted_success(clean, y, y), queries_per_sample=1)
    gen = make_generator(seed, x.device)
    for rank in range(1, n_targets + 1):
        y_target = ranked[:, rank]
        for _ in range(int(restarts)):
            start = norm.scaled_noise(x.shape, eps, gen, x.device, x.dtype)
            for idx in tracker.chunks(tracker.todo(), batch_size):
                run = _apgd_chunk(
                    model, x[idx], y[idx], y_target[idx], start[idx], eps=eps, norm=norm,
                    steps=int(steps), rho=0.75, loss_fn=loss_fn,
                    success_fn=untargeted_success, bounds=bounds, eot_samples=1,
                )
                tracker.absorb(idx, run)
    return finalize(
        x, tracker.x_adv, tracker.success, tracker.queries, norm, eps, "apgd-t",
        steps=int(steps), restarts=int(restarts), n_target_classes=n_targets, seed=seed, loss=loss,
    )


__all__ = ["apgd", "apgd_targeted", "apgd_checkpoints", "MOMENTUM"]
