"""Fast Minimum-Norm attack (FMN; Pintor, Roli, Brendel, Biggio, NeurIPS 2021).

FMN looks for the smallest perturbation that changes the decision. It walks along the normalised
gradient of the logit difference inside an ``eps``-ball whose radius it adapts every step: the
radius shrinks by a factor ``1 - gamma`` while the current point is adversarial (never above the
best norm found) and grows by ``1 + gamma`` while it is not; before the first adversarial is found
the radius jumps to a linear estimate of the distance to the boundary. Step size ``alpha`` and
``gamma`` follow cosine annealing from their initial to their final values.

One minimum-norm run answers a whole sweep of budgets: :func:`robust_accuracy_curve` turns the
per-sample minimum norms into robust accuracy at any list of ``eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from assay.attacks.base import AttackResult, finalize
from assay.attacks.norms import L2, LINF, Norm, as_norm, per_sample
from assay.errors import InputError

# Initial step sizes of the FMN paper's experiments (alpha on the L2-normalised gradient), for the
# norms FMN supports.
_ALPHA_INIT = {LINF: 10.0, L2: 1.0}
_MARGIN = 1e-5


def _logit_difference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_label - max_{j != label} z_j`` per sample (positive: the model predicts ``label``)."""
    z_label = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return z_label - others.amax(dim=1)


def _check_inputs(x: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float]) -> None:
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise InputError("x must be a float tensor of inputs; convert it with torch.as_tensor(x, dtype=torch.float32)")
    if y.shape != (x.shape[0],):
        raise InputError(f"y has shape {tuple(y.shape)} but x holds {x.shape[0]} samples; pass one int label per sample")
    if x.numel() and (x.min() < bounds[0] - 1e-6 or x.max() > bounds[1] + 1e-6):
        raise InputError(f"x lies outside bounds {bounds}; rescale the inputs or pass the right bounds")


def _fmn_batch(model, x, labels, targeted, norm, steps, alpha_init, alpha_final, gamma_init, gamma_final, bounds):
    """Minimise the ``norm`` of an adversarial perturbation for one batch; returns (best_adv, best_norm, found)."""
    n = x.shape[0]
    low, high = bounds
    sign = 1.0 if targeted else -1.0  # gradient ascent on sign * logit difference
    # Largest perturbation the box allows: the radius never needs to exceed it.
    worst_norm = norm(torch.maximum(x - low, high - x))
    best_norm = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    best_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    epsilon = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    delta = torch.zeros_like(x)
    for k in range(steps):
        cosine = (1 + math.cos(math.pi * k / steps)) / 2
        alpha = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine

        delta.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x + delta)
            diff = _logit_difference(logits, labels)
            loss = sign * diff
            grad = torch.autograd.grad(loss.sum(), delta)[0]
        delta = delta.detach()
        loss = loss.detach()
        # Box-aware gradient: drop components that push a coordinate already at a bound further
        # out. They would be clipped away after the step, yet they inflate ||grad|| and so shrink
        # the linearised distance to the boundary; on sparse inputs (digits, mostly 0) the radius
        # then settles below the reachable boundary and the attack stalls.
        x_cur = x + delta
        grad = torch.where(((x_cur <= low) & (grad < 0)) | ((x_cur >= high) & (grad > 0)), 0.0, grad)

        # Adversarial with a small logit margin, so that the point stays adversarial when it is
        # re-evaluated in another batch (FMN converges onto the boundary, where float noise of
        # a different batch composition could flip the decision).
        is_adv = loss > _MARGIN * (1.0 + logits.detach().abs().amax(dim=1))
        delta_norm = norm(delta)
        better = is_adv & (delta_norm < best_norm)
        best_norm = torch.where(better, delta_norm, best_norm)
        best_adv = torch.where(per_sample(better, x), x + delta, best_adv)
        found |= is_adv

        # Adapt the radius: shrink when adversarial, grow when not (or jump to the linearised
        # distance to the boundary while nothing adversarial has been seen yet: |loss| / ||grad||_dual).
        to_boundary = loss.abs() / norm.dual(grad).clamp_min(1e-12)
        epsilon = torch.where(
            is_adv,
            torch.minimum(epsilon * (1 - gamma), best_norm),
            torch.where(found, epsilon * (1 + gamma), delta_norm + to_boundary),
        )
        epsilon = torch.minimum(epsilon, worst_norm)

        step = L2.steepest(grad)  # FMN steps along the L2-normalised gradient for every norm
        delta = norm.project(delta + alpha * step, epsilon)
        delta = (x + delta).clamp(low, high) - x
    return best_adv, best_norm, found


def fmn(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str | Norm = "linf",
    steps: int = 100,
    targeted: bool = False,
    y_target: torch.Tensor | None = None,
    alpha_init: float | None = None,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
) -> AttackResult:
    """Fast Minimum-Norm attack: the smallest adversarial perturbation found per sample.

    Parameters
    ----------
    model : differentiable callable mapping inputs to logits (e.g. ``TorchTarget.module``).
    x, y : inputs in ``bounds`` and their true labels (int64).
    norm : ``"linf"`` or ``"l2"``.
    steps : optimisation steps per sample (one forward and one backward pass each).
    targeted, y_target : minimise the perturbation that makes the model predict ``y_target``.
    alpha_init, alpha_final : step size on the L2-normalised gradient, cosine-annealed; defaults
        10 (L-inf) or 1 (L2), and ``alpha_init / 100``.
    gamma_init, gamma_final : radius adaptation factor, cosine-annealed.
    bounds : valid input range; every ``x_adv`` stays inside it.
    seed : unused by the (deterministic) algorithm; accepted for a uniform attack interface.
    batch_size : process this many samples at a time (default: all at once).

    Returns
    -------
    AttackResult with ``eps=None``: ``success[i]`` says whether an adversarial was found, ``x_adv``
    and ``norms`` give the smallest one (``norms`` is 0 for points already misclassified and the
    norm of the unchanged input, 0, where nothing was found: check ``success``). ``queries``
    counts forward passes per sample (1 clean + ``steps``).

    Example
    -------
    >>> res = fmn(target.module, x, y, norm="l2", steps=100)          # doctest: +SKIP
    >>> robust_accuracy_curve(res, [0.5, 1.0, 1.5])                    # doctest: +SKIP
    """
    norm = as_norm(norm, _ALPHA_INIT, "fmn")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    _check_inputs(x, y, bounds)
    if targeted:
        if y_target is None:
            raise InputError("a targeted fmn needs y_target (one target class per sample)")
        labels = y_target.to(x.device).long()
    else:
        labels = y.to(x.device).long()
    alpha_init = _ALPHA_INIT[norm] if alpha_init is None else float(alpha_init)
    alpha_final = alpha_init / 100 if alpha_final is None else float(alpha_final)

    n = x.shape[0]
    x = x.detach()
    x_adv = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    queries = torch.zeros(n, dtype=torch.long)
    bs = n if batch_size is None else max(1, int(batch_size))
    for start in range(0, n, bs):
        sl = slice(start, min(start + bs, n))
        xb, lb = x[sl], labels[sl]
        with torch.no_grad():
            pred = model(xb).argmax(dim=1)
        queries[sl] += 1
        done = (pred == lb) if targeted else (pred != lb)
        success[sl] = done
        todo = (~done).nonzero().squeeze(1)
        if todo.numel() == 0:
            continue
        adv, _, found = _fmn_batch(
            model, xb[todo], lb[todo], targeted, norm, steps,
            alpha_init, alpha_final, gamma_init, gamma_final, bounds,
        )
        idx = todo + start
        x_adv[idx] = torch.where(per_sample(found, adv), adv, xb[todo])
        success[idx] = found
        queries[idx.cpu()] += steps
    return finalize(x, x_adv, success, queries, norm, None, "fmn", targeted=targeted, steps=steps)


def fmn_targeted(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str | Norm = "linf",
    steps: int = 100,
    n_target_classes: int = 9,
    alpha_init: float | None = None,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    batch_size: int | None = None,
) -> AttackResult:
    """Targeted FMN against the ``n_target_classes`` most likely wrong classes; keeps the smallest.

    Each correctly classified point is attacked once per target, the classes ranked 2nd to
    ``n_target_classes + 1`` by its clean logits (the FAB-T / AutoAttack convention). FMN can always
    shrink below a norm already known, so every target runs on every such point and the result keeps,
    per point, the smallest adversarial over all targets. Success means misclassified (any wrong
    class), as for an untargeted attack; ``info["target"]`` holds the class reached (-1: none).

    Parameters are those of :func:`fmn`; ``n_target_classes`` is capped at ``num_classes - 1``.

    Example
    -------
    >>> res = fmn_targeted(target.module, x, y, norm="linf", n_target_classes=9)  # doctest: +SKIP
    """
    norm = as_norm(norm, _ALPHA_INIT, "fmn_targeted")
    _check_inputs(x, y, bounds)
    x = x.detach()
    y = y.to(x.device).long()
    with torch.no_grad():
        clean = model(x)
    n, num_classes = clean.shape
    k = min(int(n_target_classes), num_classes - 1)
    if k < 1:
        raise InputError("fmn_targeted needs at least 2 classes and n_target_classes >= 1")
    ranked = clean.argsort(dim=1, descending=True)
    correct = clean.argmax(dim=1) == y

    x_adv = x.clone()
    best_norm = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
    best_norm[~correct] = 0.0
    reached = torch.full((n,), -1, dtype=torch.long, device=x.device)
    queries = torch.ones(n, dtype=torch.long)
    todo = correct.nonzero().squeeze(1)
    for rank in range(1, k + 1):
        if todo.numel() == 0:
            break
        tgt = ranked[todo, rank]
        res = fmn(
            model, x[todo], y[todo], norm=norm, steps=steps, targeted=True, y_target=tgt,
            alpha_init=alpha_init, alpha_final=alpha_final, gamma_init=gamma_init,
            gamma_final=gamma_final, bounds=bounds, batch_size=batch_size,
        )
        queries[todo.cpu()] += res.queries
        better = res.success & (res.norms.to(x.device) < best_norm[todo])
        idx = todo[better]
        best_norm[idx] = res.norms.to(x.device)[better]
        x_adv[idx] = res.x_adv[better]
        reached[idx] = tgt[better]
    success = ~correct | torch.isfinite(best_norm)
    return finalize(x, x_adv, success, queries, norm, None, "fmn_targeted", targeted=True, steps=steps,
                   n_target_classes=k, target=reached.cpu())


def robust_accuracy_curve(result: AttackResult, eps_list: Sequence[float]) -> list[float]:
    """Robust accuracy at each ``eps`` from one minimum-norm run.

    A point is robust at ``eps`` when no adversarial was found or its smallest one is larger than
    ``eps``. Non-increasing in ``eps`` by construction.

    Example
    -------
    >>> robust_accuracy_curve(fmn(model, x, y, norm="l2"), [0.5, 1.0])  # doctest: +SKIP
    [0.81, 0.42]
    """
    norms = torch.where(result.success.cpu(), result.norms.cpu().float(), torch.full_like(result.norms.cpu().float(), float("inf")))
    return robust_accuracy_from_norms(norms, eps_list)


def robust_accuracy_from_norms(min_norms: torch.Tensor, eps_list: Sequence[float]) -> list[float]:
    """Fraction of points whose smallest adversarial norm exceeds each ``eps`` (``inf``: never
    broken, ``0``: misclassified already). Vectorised over points and epsilons."""
    if min_norms.numel() == 0:
        return [float("nan") for _ in eps_list]
    g = torch.as_tensor(list(eps_list), dtype=min_norms.dtype).reshape(1, -1)
    return (min_norms.reshape(-1, 1) > g).float().mean(0).tolist()
