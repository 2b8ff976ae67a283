"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): score-based random search.

Each iteration proposes, for every point not yet broken, a random square-shaped change of its
current perturbation and keeps it when the loss improves (margin loss; cross-entropy when
targeted, as in the paper). The side of the square follows the paper's schedule: a fraction ``p``
of the image area, ``p_init`` halved at fixed fractions of the query budget (iterations 10, 50,
200, 500, 1000, 2000, 4000, 6000, 8000 of 10000, rescaled to ``n_queries``).

L-inf: the perturbation starts as vertical stripes of ``+-eps`` and each square is set to
``+-eps`` per channel. L2: the perturbation starts as a grid of the paper's centred-square
patterns and each update moves mass between two windows, keeping the L2 norm at ``eps``.

Unlike the reference code, every point draws its own square position (the paper's algorithm);
the reference shares one position across the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from assay.attacks.base import AttackResult, make_generator
from assay.attacks.norms import L2, LINF, Norm, as_norm
from assay.errors import BudgetExceeded, InputError

# Iterations (out of 10000) after which the reference code halves p.
_P_STEPS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def p_schedule(iteration: int, n_queries: int, p_init: float) -> float:
    """Fraction of pixels changed at ``iteration`` (the paper's piecewise halving, rescaled)."""
    it = int(iteration / n_queries * 10000)
    halvings = sum(it > s for s in _P_STEPS)
    return p_init / 2**halvings


def _loss_and_margin(scores: torch.Tensor, labels: torch.Tensor, targeted: bool, probs: bool):
    """(loss to minimise, margin); the point is adversarial when margin < 0."""
    own = scores.gather(1, labels[:, None]).squeeze(1)
    best_other = scores.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    if not targeted:
        margin = own - best_other
        return margin, margin
    margin = best_other - own
    logp = scores.clamp_min(1e-30).log() if probs else torch.log_softmax(scores, dim=1)
    return -logp.gather(1, labels[:, None]).squeeze(1), margin


def _looks_like_probs(scores: torch.Tensor) -> bool:
    return bool((scores >= 0).all() and torch.allclose(scores.sum(dim=1), torch.ones_like(scores[:, 0]), atol=1e-3))


def _window_index(n, c, s, vh, vw, device):
    """Advanced-index tuple selecting, for point i, the s x s window at (vh[i], vw[i]) in every channel."""
    ar = torch.arange(s, device=device)
    rows = (vh[:, None] + ar)[:, None, :, None]
    cols = (vw[:, None] + ar)[:, None, None, :]
    return (
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows,
        cols,
    )


def _eta_rectangles(a: int, b: int) -> torch.Tensor:
    """Nested rectangles centred in an a x b window, weights 1/(k+1)^2, unit L2 norm."""
    i = torch.arange(a, dtype=torch.float32)[:, None]
    j = torch.arange(b, dtype=torch.float32)[None, :]
    ca, cb = a // 2, b // 2
    # ring index of each cell: the k-th rectangle covers rows ca-k..ca+k and cols cb-k..cb+k
    ring = torch.maximum((i - ca).abs(), (j - cb).abs()).long()
    k = torch.arange(max(ca, cb) + 1)
    weight = (1.0 / (k.float() + 1) ** 2).flip(0).cumsum(0).flip(0)  # sum over rings covering it
    d = weight[ring.clamp(max=len(k) - 1)]
    d = torch.where(ring <= max(ca, cb), d, torch.zeros(()))
    return d / d.norm().clamp_min(1e-12)


def _eta(s: int, flip: bool) -> torch.Tensor:
    """The paper's L2 square pattern: positive rectangles on one half, negative on the other."""
    d = torch.zeros(s, s)
    if s // 2 > 0:
        d[: s // 2] = _eta_rectangles(s // 2, s)
    d[s // 2 :] = -_eta_rectangles(s - s // 2, s)
    d = d / d.norm().clamp_min(1e-12)
    return d.t() if flip else d


def square(
    scores_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    n_queries: int = 5000,
    p_init: float = 0.8,
    targeted: bool = False,
    y_target: torch.Tensor | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    query_budget: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttackResult:
    """Square Attack: score-based black-box attack in an L-inf or L2 ball of radius ``eps``.

    Parameters
    ----------
    scores_fn : maps a batch ``(N, C, H, W)`` to per-class scores ``(N, K)`` (logits or
        probabilities, e.g. ``Target.scores``); may raise :class:`BudgetExceeded`.
    x, y : images in ``bounds`` (4-D, channels first) and their true labels.
    eps, norm : the threat model (``"linf"`` or ``"l2"``).
    n_queries : queries allowed per sample, all included (clean check, initialisation, search).
    p_init : initial fraction of pixels per square (0.8 in AutoAttack; 0.05 in the paper for L-inf
        on ImageNet-size inputs).
    targeted, y_target : reach class ``y_target`` instead of leaving ``y``.
    bounds : valid input range. seed : seeds every random choice.
    query_budget : hard cap on the total number of samples sent to ``scores_fn`` in this call.
    progress : called as ``progress(iterations done, iterations planned)`` every 50 iterations and at
        the end (an audit's progress line).

    Returns
    -------
    AttackResult: ``success`` (misclassified within the ball), ``queries`` per sample (exact),
    ``info["budget_exhausted"]`` when ``query_budget`` or the target's budget stopped the run.

    Example
    -------
    >>> res = square(target.scores, x, y, eps=0.1, n_queries=1000)   # doctest: +SKIP
    >>> res.robust_accuracy                                            # doctest: +SKIP
    """
    norm = as_norm(norm, _SEARCH, "square")
    init, propose = _SEARCH[norm]
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise InputError("square needs images shaped (N, C, H, W); reshape flat inputs or use hop_skip_jump")
    if y.shape != (x.shape[0],):
        raise InputError(f"y has shape {tuple(y.shape)} but x holds {x.shape[0]} samples; pass one label per sample")
    if not eps or eps <= 0:
        raise InputError(f"eps must be > 0, got {eps}")
    if n_queries < 1:
        raise InputError(f"n_queries must be >= 1, got {n_queries}")
    if not 0 < p_init <= 1:
        raise InputError(f"p_init must be in (0, 1], got {p_init}")
    if targeted and y_target is None:
        raise InputError("a targeted square attack needs y_target (one class per sample)")

    gen = make_generator(seed, "cpu")
    low, high = bounds
    x = x.detach()
    dev = x.device
    n, c, h, w = x.shape
    labels = (y_target if targeted else y).to(dev).long()
    queries = torch.zeros(n, dtype=torch.long)
    x_adv = x.clone()
    success = torch.zeros(n, dtype=torch.bool, device=dev)
    state = {"used": 0, "exhausted": False}

    draw = _Draws(gen, dev)

    def query(idx: torch.Tensor, xs: torch.Tensor):
        """Scores for the points ``idx`` (inputs ``xs``), within the budget; None when stopped."""
        if query_budget is not None:
            room = query_budget - state["used"]
            if room <= 0:
                state["exhausted"] = True
                return None
            if idx.numel() > room:
                idx, xs = idx[:room], xs[:room]
                state["exhausted"] = True
        try:
            s = scores_fn(xs)
        except BudgetExceeded:
            state["exhausted"] = True
            return None
        state["used"] += idx.numel()
        queries[idx.cpu()] += 1
        return idx, s.to(dev).float()

    def margin_of(s, idx):
        return _loss_and_margin(s, labels[idx], targeted, probs)

    # --- clean check: points already misclassified are successes, never attacked
    all_idx = torch.arange(n, device=dev)
    got = query(all_idx, x)
    if got is None:
        return _finish(x, x_adv, success, queries, norm, eps, state)
    done_idx, s = got
    probs = _looks_like_probs(s)
    loss, margin = margin_of(s, done_idx)
    success[done_idx] = margin < 0
    active = done_idx[margin >= 0]
    if active.numel() == 0 or n_queries < 2:
        return _finish(x, x_adv, success, queries, norm, eps, state)

    # --- initialisation
    xa = x[active]
    x_init = (xa + eps * init(active.numel(), c, h, w, draw)).clamp(low, high)
    got = query(active, x_init)
    if got is None:
        return _finish(x, x_adv, success, queries, norm, eps, state)
    idx, s = got
    x_adv[idx] = x_init[: idx.numel()]
    best_loss = torch.full((n,), float("inf"), device=dev)
    best_margin = torch.full((n,), float("inf"), device=dev)
    best_loss[idx], best_margin[idx] = margin_of(s, idx)
    success[idx] = best_margin[idx] < 0
    active = idx[best_margin[idx] >= 0]

    for it in range(n_queries - 2):
        if active.numel() == 0 or state["exhausted"]:
            break
        if progress is not None and it % 50 == 0:
            progress(it, n_queries - 2)
        xa, xb = x[active], x_adv[active]
        x_new = propose(xa, xb, eps, p_schedule(it, n_queries, p_init), draw, bounds)
        got = query(active, x_new)
        if got is None:
            break
        idx, s = got
        loss, margin = margin_of(s, idx)
        improved = (loss < best_loss[idx]) | (margin < 0)
        best_loss[idx] = torch.where(loss < best_loss[idx], loss, best_loss[idx])
        best_margin[idx] = torch.where(improved, margin, best_margin[idx])
        keep = idx[improved]
        x_adv[keep] = x_new[: idx.numel()][improved]
        broke = margin < 0
        success[idx[broke]] = True
        active = active[~success[active]]
    if progress is not None:
        progress(n_queries - 2, n_queries - 2)
    return _finish(x, x_adv, success, queries, norm, eps, state)


class _Draws:
    """Every random choice of one run, from its seeded generator (drawn on the CPU, then moved)."""

    def __init__(self, gen: torch.Generator, device):
        self.gen, self.device = gen, device

    def sign(self, *shape) -> torch.Tensor:
        return torch.where(torch.rand(*shape, generator=self.gen) < 0.5, -1.0, 1.0).to(self.device)

    def integer(self, hi: int, size: int) -> torch.Tensor:  # uniform in [0, hi)
        return torch.randint(0, max(hi, 1), (size,), generator=self.gen).to(self.device)

    def coin(self) -> bool:
        return bool(torch.rand(1, generator=self.gen) < 0.5)


# Each norm's search: the initial perturbation (unit size, scaled by eps) and the proposal step.


def _linf_init(n, c, h, w, draw: _Draws) -> torch.Tensor:
    """Vertical stripes of random sign (broadcast over the rows)."""
    return draw.sign(n, c, 1, w)


def _linf_step(xa, xb, eps, p, draw: _Draws, bounds) -> torch.Tensor:
    """One L-inf proposal: a random square window set to +-eps per channel."""
    m, c, h, w = xa.shape
    side = min(max(int(round(math.sqrt(p * (c * h * w) / c))), 1), h, w)
    vh, vw = draw.integer(h - side + 1, m), draw.integer(w - side + 1, m)
    win = _window_index(m, c, side, vh, vw, xa.device)
    x_new = xb.clone()
    x_new[win] = (xa[win] + eps * draw.sign(m, c, 1, 1).expand(m, c, side, side)).clamp(*bounds)
    return x_new


def _l2_init(n, c, h, w, draw: _Draws) -> torch.Tensor:
    """Grid of the paper's square patterns with random signs, scaled to unit L2 norm."""
    s = max(h // 5, 1)
    start = (h - s * 5) // 2
    delta = torch.zeros(n, c, h, w, device=draw.device)
    for vh in range(start, h - s + 1, s):
        for vw in range(start, w - s + 1, s):
            flip = draw.coin()
            delta[:, :, vh : vh + s, vw : vw + s] += _eta(s, flip).to(draw.device) * draw.sign(n, c, 1, 1)
    return L2.steepest(delta)


def _l2_step(xa, xb, eps, p, draw: _Draws, bounds) -> torch.Tensor:
    """One L2 proposal: redistribute perturbation mass from window 2 into a new pattern on window 1."""
    m, c, h, w = xa.shape
    dev = xa.device
    side = max(int(round(math.sqrt(p * h * w))), 3)
    side = min(side + (side % 2 == 0), h, w)
    delta = xb - xa
    vh1, vw1 = draw.integer(h - side + 1, m), draw.integer(w - side + 1, m)
    vh2, vw2 = draw.integer(h - side + 1, m), draw.integer(w - side + 1, m)
    win1 = _window_index(m, c, side, vh1, vw1, dev)
    win2 = _window_index(m, c, side, vh2, vw2, dev)
    union = torch.zeros_like(delta, dtype=torch.bool)
    union[win1] = True
    union[win2] = True
    norm_union = (delta * union).pow(2).sum(dim=(2, 3), keepdim=True).sqrt()  # per channel
    norm_image = L2(delta).reshape(m, 1, 1, 1)
    old = delta[win1]
    old = old / old.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12)
    flip = draw.coin()
    new = _eta(side, flip).to(dev) * draw.sign(m, c, 1, 1) + old
    # The new window carries the mass removed from both windows plus the unused budget.
    budget = ((eps**2 - norm_image**2).clamp_min(0) / c + norm_union**2).sqrt()
    new = new / new.pow(2).sum(dim=(2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = delta.clone()
    delta[win2] = 0.0
    delta[win1] = new
    delta = L2.steepest(delta) * eps
    return (xa + delta).clamp(*bounds)


_SEARCH = {LINF: (_linf_init, _linf_step), L2: (_l2_init, _l2_step)}


def _finish(x, x_adv, success, queries, norm: Norm, eps, state) -> AttackResult:
    return AttackResult(
        x_adv=x_adv.detach(),
        success=success.bool(),
        norms=norm((x_adv - x).detach()),
        queries=queries,
        norm=norm.name,
        eps=float(eps),
        attack="square",
        info={"budget_exhausted": state["exhausted"], "total_queries": state["used"]},
    )
