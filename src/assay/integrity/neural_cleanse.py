"""Backdoor trigger reverse-engineering (Neural Cleanse, Wang et al., IEEE S&P 2019).

A backdoored class is one that a *small* stamp takes almost any input to. For every candidate class
``t`` we look for the smallest mask ``m`` and pattern ``p`` such that stamping,

    x' = (1 - m) * x + m * p,

makes the model predict ``t`` on (nearly) all clean inputs of other classes: minimise
``CE(f(x'), t) + lambda_t * |m|_1`` with ``lambda_t`` raised while the stamp succeeds and lowered
while it does not (the paper's cost schedule). A class whose smallest mask is an outlier on the small
side of the per-class distribution (MAD anomaly index above 2) is flagged as likely infected.

All candidate classes are optimised at once as one batch (masks ``(K, 1, H, W)`` for images, the
channels share one mask as in the paper), in chunks of classes so that ``K x N`` stays bounded;
nothing leaves the tensor world inside the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from assay.errors import InputError

MAD_SCALE = 1.4826  # makes the MAD a consistent estimator of a normal distribution's sigma


@dataclass
class TriggerResult:
    """One reverse-engineered trigger per candidate class (all tensors on the CPU).

    ``mask`` (K, *mask_shape) in [0, 1]; ``pattern`` (K, *input_shape) in the input bounds;
    ``l1`` the mask's L1 norm per class; ``success`` the stamp's success rate on the optimisation
    inputs of other classes; ``reached`` whether it met ``asr_threshold`` (otherwise the mask is the
    last iterate, and its norm is only an upper bound of the smallest one)."""

    classes: torch.Tensor
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: torch.Tensor
    success: torch.Tensor
    reached: torch.Tensor

    def stamp(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """``x`` stamped with the trigger of the ``k``-th candidate class."""
        return apply_trigger(x, self.mask[k].to(x.device), self.pattern[k].to(x.device))


def apply_trigger(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``(1 - mask) * x + mask * pattern``: the stamp of Neural Cleanse (broadcasting)."""
    return (1 - mask) * x + mask * pattern


def mask_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Images (C, H, W) get one mask shared by the channels, (1, H, W); other inputs one per feature."""
    return (1, *input_shape[1:]) if len(input_shape) == 3 else tuple(input_shape)


def median(v: torch.Tensor) -> torch.Tensor:
    """The textbook median: the mean of the two middle values for an even count (``Tensor.median``
    returns the lower one, which for 10 classes can make the MAD zero)."""
    return torch.quantile(v.double(), 0.5)


def anomaly_index(l1: torch.Tensor) -> torch.Tensor:
    """Per class, how many (MAD-scaled) deviations its mask norm lies BELOW the median; 0 above it.

    ``(median - l1) / (1.4826 * MAD)``, the statistic of Neural Cleanse; above 2 means an outlier
    with more than 95% probability under a normal model. A zero MAD (all norms equal) gives 0 for
    the classes at the median and +inf for any below it."""
    l1 = l1.double()
    med = median(l1)
    mad = MAD_SCALE * median((l1 - med).abs())
    below = (med - l1).clamp(min=0)
    if mad == 0:
        return torch.where(below > 0, torch.full_like(below, float("inf")), torch.zeros_like(below))
    return below / mad


def reverse_engineer_triggers(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    classes: list[int] | torch.Tensor,
    bounds: tuple[float, float] = (0.0, 1.0),
    steps: int = 300,
    lr: float = 0.1,
    init_cost: float = 1e-3,
    asr_threshold: float = 0.99,
    patience: int = 5,
    check_every: int = 10,
    max_rows: int = 8192,
    seed: int = 0,
) -> TriggerResult:
    """Find, for each class in ``classes``, the smallest stamp that sends ``x`` to that class.

    Parameters
    ----------
    model : differentiable classifier on input space (e.g. ``TorchTarget.module``), eval mode.
    x, y : clean inputs (N, *input_shape) in ``bounds`` and their labels; the inputs of class ``t``
        are left out of class ``t``'s objective and success rate.
    classes : the candidate target classes.
    steps, lr : Adam steps (betas 0.5, 0.9 as in the paper) on the tanh-parametrised mask and pattern.
    init_cost, asr_threshold, patience, check_every : the cost schedule: every ``check_every`` steps,
        a class whose stamp has succeeded on at least ``asr_threshold`` of its inputs for ``patience``
        checks in a row gets its cost multiplied by 1.5 (smaller mask), one that has failed as long
        gets it divided by 1.5 ** 1.5; the cost is 0 until the first success (the paper's warm-up).
    max_rows : at most this many stamped inputs per forward pass (classes are processed in chunks).
    seed : initialisation of the mask and pattern.

    Returns
    -------
    TriggerResult, with the smallest successful mask seen per class.

    Example
    -------
    >>> res = reverse_engineer_triggers(target.module, x, y, classes=range(10))  # doctest: +SKIP
    >>> anomaly_index(res.l1).max()  # doctest: +SKIP
    """
    classes = torch.as_tensor(list(classes) if not isinstance(classes, torch.Tensor) else classes).long().reshape(-1)
    if len(classes) == 0:
        raise InputError("no candidate classes to reverse-engineer a trigger for")
    if len(x) == 0:
        raise InputError("no clean inputs to optimise a trigger on")
    if steps < 1 or check_every < 1 or patience < 1:
        raise InputError("steps, check_every and patience must be >= 1")
    dev = next(iter(model.parameters()), torch.empty(0)).device
    x, y = x.to(dev).float(), y.to(dev).long()
    per_chunk = max(1, max_rows // len(x))
    parts = [_reverse_chunk(model, x, y, classes[i:i + per_chunk].to(dev), bounds, steps, lr, init_cost,
                            asr_threshold, patience, check_every, seed + i)
             for i in range(0, len(classes), per_chunk)]
    mask, pattern, l1, success, reached = (torch.cat([p[j] for p in parts]) for j in range(5))
    return TriggerResult(classes.cpu(), mask, pattern, l1, success, reached)


def _reverse_chunk(model, x, y, classes, bounds, steps, lr, init_cost, asr_threshold, patience, check_every, seed):
    lo, hi = bounds
    k, n = len(classes), len(x)
    shape = tuple(x.shape[1:])
    g = torch.Generator(device="cpu").manual_seed(seed)
    # tanh parametrisation keeps mask in [0, 1] and pattern in the bounds without clipping
    mask_p = (torch.rand((k, *mask_shape(shape)), generator=g) * 2 - 1).mul(0.5).to(x.device).requires_grad_(True)
    pattern_p = (torch.rand((k, *shape), generator=g) * 2 - 1).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([mask_p, pattern_p], lr=lr, betas=(0.5, 0.9))
    other = y.unsqueeze(0) != classes.unsqueeze(1)  # (K, N): inputs that count for each class
    n_other = other.sum(1).clamp(min=1)
    targets = classes.unsqueeze(1).expand(k, n).reshape(-1)
    cost = torch.zeros(k, device=x.device)
    started = torch.zeros(k, dtype=torch.bool, device=x.device)
    up = torch.zeros(k, dtype=torch.long, device=x.device)
    down = torch.zeros(k, dtype=torch.long, device=x.device)
    best_l1 = torch.full((k,), float("inf"), device=x.device)
    best_mask = torch.zeros((k, *mask_shape(shape)), device=x.device)
    best_pattern = torch.zeros((k, *shape), device=x.device)
    best_success = torch.zeros(k, device=x.device)
    last_success = torch.zeros(k, device=x.device)
    def decode():  # tanh parametrisation -> mask in [0, 1], pattern in the bounds
        return (torch.tanh(mask_p) + 1) / 2, lo + (hi - lo) * (torch.tanh(pattern_p) + 1) / 2

    for step in range(steps):
        mask, pattern = decode()
        stamped = apply_trigger(x.unsqueeze(0), mask.unsqueeze(1), pattern.unsqueeze(1))  # (K, N, *shape)
        logits = model(stamped.reshape(k * n, *shape))
        ce = F.cross_entropy(logits, targets, reduction="none").reshape(k, n)
        l1 = mask.flatten(1).sum(1)
        loss = ((ce * other).sum(1) / n_other + cost * l1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % check_every and step != steps - 1:
            continue
        with torch.no_grad():  # judged on the iterate the loss was computed for
            hits = (logits.argmax(1).reshape(k, n) == classes.unsqueeze(1)) & other
            success = hits.sum(1) / n_other
            last_success = success
            ok = success >= asr_threshold
            better = ok & (l1 < best_l1)
            best_l1 = torch.where(better, l1, best_l1)
            best_mask[better], best_pattern[better], best_success[better] = mask[better], pattern[better], success[better]
            # cost schedule: start at init_cost at the first success, then move it by the streaks
            first = ok & ~started
            cost = torch.where(first, torch.full_like(cost, init_cost), cost)
            started |= ok
            up = torch.where(ok, up + 1, torch.zeros_like(up))
            down = torch.where(ok, torch.zeros_like(down), down + 1)
            raise_ = started & (up >= patience)
            lower = started & (down >= patience)
            cost = torch.where(raise_, cost * 1.5, cost)
            cost = torch.where(lower, cost / 1.5 ** 1.5, cost)
            up = torch.where(raise_, torch.zeros_like(up), up)
            down = torch.where(lower, torch.zeros_like(down), down)
    reached = torch.isfinite(best_l1)
    with torch.no_grad():
        final_mask, final_pattern = decode()
        best_mask[~reached], best_pattern[~reached] = final_mask[~reached], final_pattern[~reached]
        best_l1 = torch.where(reached, best_l1, final_mask.flatten(1).sum(1))
        best_success = torch.where(reached, best_success, last_success)
    return (best_mask.detach().cpu(), best_pattern.detach().cpu(), best_l1.detach().cpu(),
            best_success.detach().cpu(), reached.cpu())
