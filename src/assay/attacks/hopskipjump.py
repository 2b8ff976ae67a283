"""HopSkipJump (Chen, Jordan, Wainwright, IEEE S&P 2020): decision-based, labels only.

Starting from any misclassified point (uniform noise, then a binary search towards ``x``), each
iteration (t = 1, 2, ...)

1. estimates the gradient direction of the decision boundary at the current boundary point from
   ``min(init_evals * sqrt(t), max_num_evals)`` random probes at radius ``delta`` (the sign of each
   probe's decision, baseline-corrected, weights its direction);
2. steps along it (the direction for L2, its sign for L-inf) with the geometric step search
   ``xi = dist / sqrt(t)``, halved until the step stays adversarial;
3. binary-searches back to the boundary between ``x`` and the new point (threshold
   ``theta = gamma / d^(3/2)`` for L2, ``gamma / d^2`` for L-inf, as in the authors' code).

Everything is batched: all points advance together and every labels_fn call carries the probes of
all points still working (and all their Monte Carlo samples at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from assay.attacks.base import AttackResult, make_generator
from assay.attacks.norms import L2, LINF, Norm, as_norm, per_sample
from assay.errors import BudgetExceeded, InputError

_INIT_TRIALS = 100  # random draws tried per point to find a misclassified starting point
_INIT_THRESHOLD = 1e-3  # blend precision of the initial binary search (authors' code)
_MAX_STEP_HALVINGS = 30


class _Oracle:
    """labels_fn with exact per-sample counting, per-sample allowance and a hard total budget."""

    def __init__(self, labels_fn, y, max_queries, query_budget, device, targeted=False):
        self.labels_fn, self.y, self.targeted = labels_fn, y, targeted
        self.max_queries, self.query_budget = max_queries, query_budget
        self.queries = torch.zeros(y.shape[0], dtype=torch.long, device=device)
        self.used = 0
        self.exhausted = False

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.max_queries - self.queries[idx]

    def is_adv(self, idx: torch.Tensor, xs: torch.Tensor, owner: torch.Tensor | None = None):
        """Misclassified? for probes ``xs`` belonging to points ``idx[owner]`` (owner defaults to all).

        Returns (answered mask over probes, adversarial bool over probes). Probes beyond the total
        budget are not sent (answered False); nothing is sent once the budget is gone.
        """
        owner = torch.arange(idx.numel(), device=xs.device) if owner is None else owner
        answered = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
        adv = torch.zeros_like(answered)
        k = xs.shape[0]
        if self.query_budget is not None:
            k = min(k, self.query_budget - self.used)
            if k < xs.shape[0]:
                self.exhausted = True
        if k <= 0 or (self.exhausted and self.query_budget is not None and k == 0):
            return answered, adv
        try:
            labels = self.labels_fn(xs[:k]).to(xs.device).long().reshape(-1)
        except BudgetExceeded:
            self.exhausted = True
            return answered, adv
        self.used += k
        pts = idx[owner[:k]]
        self.queries.index_add_(0, pts, torch.ones_like(pts))
        answered[:k] = True
        adv[:k] = (labels == self.y[pts]) if self.targeted else (labels != self.y[pts])
        return answered, adv


def _binary_search(oracle, idx, x, x_adv, norm: Norm, theta, fixed_threshold=None):
    """Move x_adv (adversarial) onto the boundary towards x along ``norm.blend``. Keeps the adversarial end.

    The search runs over the blend parameter, [0, 1] for L2 and [0, ||x_adv - x||_inf] for L-inf, to
    precision ``fixed_threshold`` or else ``theta`` (relative to the span, at most ``theta``).
    """
    high = norm.blend_span(x, x_adv)
    if fixed_threshold is not None:
        thresh = torch.full_like(high, fixed_threshold)
    else:
        thresh = torch.clamp(high * theta, max=theta)
    low = torch.zeros_like(high)
    while True:
        open_ = ((high - low) > thresh) & (oracle.left(idx) >= 1)
        if not open_.any() or (oracle.exhausted and oracle.query_budget is not None):
            break
        o = open_.nonzero().squeeze(1)
        mid = (high[o] + low[o]) / 2
        answered, adv = oracle.is_adv(idx[o], norm.blend(x[o], x_adv[o], mid))
        if not answered.any():
            break
        high[o] = torch.where(answered & adv, mid, high[o])
        low[o] = torch.where(answered & ~adv, mid, low[o])
    return norm.blend(x, x_adv, high)


def hop_skip_jump(
    labels_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str | Norm = "l2",
    max_queries: int = 1000,
    eps: float | None = None,
    init_evals: int = 100,
    max_num_evals: int = 10000,
    gamma: float = 1.0,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    query_budget: int | None = None,
    targeted: bool = False,
    y_target: torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
) -> AttackResult:
    """HopSkipJump: minimise the perturbation of a misclassified point using labels only.

    Parameters
    ----------
    labels_fn : maps a batch of inputs to predicted labels ``(N,)`` (e.g. ``Target.labels``);
        may raise :class:`BudgetExceeded`.
    x, y : inputs in ``bounds`` and their true labels.
    norm : ``"l2"`` or ``"linf"``: the distance minimised.
    max_queries : labels_fn queries allowed per sample, all included (clean check, initial search,
        gradient probes, step and binary searches).
    eps : when given, a point counts as broken only within ``eps`` and stops being attacked once
        there (saving queries); ``None``: minimise until ``max_queries``.
    init_evals, max_num_evals : Monte Carlo probes at iteration t: ``min(init_evals*sqrt(t), max)``.
    gamma : binary-search precision constant (theta = gamma / d^1.5 for L2, gamma / d^2 for L-inf).
    bounds, seed : input range; seed of every random draw.
    query_budget : hard cap on the total number of samples sent to ``labels_fn`` in this call.
    targeted, y_target : succeed only when the model predicts ``y_target`` (the paper's targeted
        variant: every decision, probe and search asks "is this ``y_target``?").
    x_init : optional starting points (N, ...) the model already assigns to the goal (``y_target``
        when targeted, any wrong class otherwise), e.g. real inputs of the target class; points
        whose start is not adversarial fall back to the random search (uniform noise, 100 draws),
        which rarely finds a given target class, so targeted runs should pass ``x_init``.

    Returns
    -------
    AttackResult: ``success`` = misclassified (targeted: classified as ``y_target``) and (``eps`` is None or norm <= eps); ``x_adv`` the
    closest adversarial found (``x`` where none was found); ``queries`` per sample (exact);
    ``info["budget_exhausted"]``.

    Example
    -------
    >>> res = hop_skip_jump(target.labels, x, y, norm="l2", max_queries=1000)  # doctest: +SKIP
    >>> res.norms[res.success].median()                                        # doctest: +SKIP
    """
    norm = as_norm(norm, (L2, LINF), "hop_skip_jump")
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point or x.dim() < 2:
        raise InputError("x must be a float tensor shaped (N, ...); convert it with torch.as_tensor")
    if y.shape != (x.shape[0],):
        raise InputError(f"y has shape {tuple(y.shape)} but x holds {x.shape[0]} samples; pass one label per sample")
    if max_queries < 1 or init_evals < 1:
        raise InputError("max_queries and init_evals must be >= 1")
    if eps is not None and eps <= 0:
        raise InputError(f"eps must be > 0 or None, got {eps}")
    if targeted:
        if y_target is None:
            raise InputError("targeted=True needs y_target, one target label per sample")
        y_target = torch.as_tensor(y_target).to(x.device).long().reshape(-1)
        if y_target.shape != y.shape:
            raise InputError(f"y_target must hold one label per sample ({x.shape[0]}), got shape {tuple(y_target.shape)}")
        if (y_target == y.to(x.device)).any():
            raise InputError("y_target equals the true label for some samples; pick a different class")
    if x_init is not None and (not isinstance(x_init, torch.Tensor) or x_init.shape != x.shape):
        raise InputError(f"x_init must be a tensor shaped like x {tuple(x.shape)}")

    gen = make_generator(seed, "cpu")
    x = x.detach()
    dev = x.device
    low, high = bounds
    n = x.shape[0]
    d = x[0].numel()
    # gamma / d^(3/2) for L2 and gamma / d^2 for L-inf: gamma / (d * ||1||_dual)
    theta = gamma / (d * norm.dual.ones_norm(d))
    goal = y_target if targeted else y.to(dev).long()
    oracle = _Oracle(labels_fn, goal, max_queries, query_budget, dev, targeted=targeted)
    x_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    # queries one iteration needs besides its gradient probes (a few step halvings + binary search)
    n_search = math.ceil(math.log2(1 / theta)) + 1
    reserve = n_search + 3

    # clean check: misclassified points (targeted: already the target) are done
    all_idx = torch.arange(n, device=dev)
    answered, adv = oracle.is_adv(all_idx, x)
    found[answered & adv] = True
    active = all_idx[answered & ~adv]
    if x_init is not None and active.numel():
        active = active[oracle.left(active) >= 1]
        start = x_init.detach().to(dev)[active].clamp(low, high)
        answered, adv = oracle.is_adv(active, start)
        hit = answered & adv
        x_adv[active[hit]] = start[hit]
        found[active[hit]] = True
        active = active[~hit]

    # initialisation: uniform noise until misclassified, then binary search towards x (L2 blend)
    for _ in range(_INIT_TRIALS):
        active = active[oracle.left(active) >= 1]
        if active.numel() == 0 or oracle.exhausted:
            break
        noise = (low + (high - low) * torch.rand(active.numel(), *x.shape[1:], generator=gen)).to(dev)
        answered, adv = oracle.is_adv(active, noise)
        hit = answered & adv
        x_adv[active[hit]] = noise[hit]
        found[active[hit]] = True
        active = active[~hit]
    active = found.nonzero().squeeze(1)
    active = active[norm(x_adv[active] - x[active]) > 0]  # skip clean misclassifications
    if active.numel():
        x_adv[active] = _binary_search(oracle, active, x[active], x_adv[active], L2, theta, _INIT_THRESHOLD)
    dist = norm(x_adv - x)

    t = 0
    while True:
        if eps is not None:
            active = active[dist[active] > eps]
        active = active[oracle.left(active) >= reserve + 1]
        if active.numel() == 0 or oracle.exhausted:
            break
        t += 1
        m = active.numel()
        xa, xb = x[active], x_adv[active]
        dist_a = dist[active]
        # probe radius (authors' code): 0.1 of the range at t = 1, then proportional to the distance
        if t == 1:
            delta = torch.full((m,), 0.1 * (high - low), device=dev)
        else:
            delta = norm.dual.ones_norm(d) * theta * dist_a
        # --- gradient-direction estimate, every point's probes in one call
        n_evals = min(int(init_evals * math.sqrt(t)), max_num_evals)
        per_point = torch.clamp(oracle.left(active) - reserve, max=n_evals)  # (m,) >= 1
        valid = torch.arange(n_evals, device=dev)[None, :] < per_point[:, None]  # (m, n_evals)
        shape = (m, n_evals, *x.shape[1:])
        rv = norm.noise(shape, gen).to(dev)
        rv = rv / rv.flatten(2).norm(dim=2).clamp_min(1e-12).reshape(m, n_evals, *[1] * (x.dim() - 1))
        dshape = (m, 1, *[1] * (x.dim() - 1))
        probes = (xb[:, None] + delta.reshape(dshape) * rv).clamp(low, high)
        rv = (probes - xb[:, None]) / delta.reshape(dshape)
        owner = torch.arange(m, device=dev)[:, None].expand(m, n_evals)[valid]
        answered, adv = oracle.is_adv(active, probes[valid], owner)
        fval = torch.zeros(m, n_evals, device=dev)
        used = torch.zeros(m, n_evals, dtype=torch.bool, device=dev)
        fval[valid] = torch.where(adv, 1.0, -1.0)
        used[valid] = answered
        cnt = used.sum(dim=1).clamp_min(1)
        mean = (fval * used).sum(dim=1) / cnt
        # baseline correction; when all probes agree, use the mean direction with that sign
        all_same = (mean.abs() == 1.0)
        weight = torch.where(all_same[:, None], mean[:, None].expand_as(fval), fval - mean[:, None]) * used
        grad = (weight.reshape(m, n_evals, *[1] * (x.dim() - 1)) * rv).sum(dim=1) / per_sample(cnt.float(), xb)
        update = norm.steepest(grad)
        if oracle.exhausted:
            break
        # --- geometric step search: xi = dist / sqrt(t), halved until adversarial
        xi = dist_a / math.sqrt(t)
        pending = torch.ones(m, dtype=torch.bool, device=dev)
        stepped = xb.clone()
        for _ in range(_MAX_STEP_HALVINGS):
            pending &= oracle.left(active) >= 1
            if not pending.any() or oracle.exhausted:
                break
            o = pending.nonzero().squeeze(1)
            cand = (xb[o] + per_sample(xi[o], xb) * update[o]).clamp(low, high)
            answered, adv = oracle.is_adv(active[o], cand)
            ok = answered & adv
            stepped[o[ok]] = cand[ok]
            pending[o[ok]] = False
            xi[o] = torch.where(ok, xi[o], xi[o] / 2)
        # --- back to the boundary
        moved = (stepped != xb).flatten(1).any(dim=1)
        if moved.any():
            mo = moved.nonzero().squeeze(1)
            stepped[mo] = _binary_search(oracle, active[mo], xa[mo], stepped[mo], norm, theta)
        new_dist = norm(stepped - xa)
        better = new_dist < dist_a
        x_adv[active[better]] = stepped[better]
        dist[active[better]] = new_dist[better]

    success = found & (torch.ones_like(found) if eps is None else dist <= eps + 1e-7)
    return AttackResult(
        x_adv=x_adv.detach(),
        success=success,
        norms=norm(x_adv - x),
        queries=oracle.queries.cpu(),
        norm=norm.name,
        eps=eps,
        attack="hop_skip_jump",
        info={"budget_exhausted": oracle.exhausted, "total_queries": oracle.used, "iterations": t,
              "targeted": targeted},
    )
