"""Model inversion: reconstruct a representative input of each class from a classifier.

White-box (:func:`invert_whitebox`): MIFace-style (Fredrikson, Jha & Ristenpart, CCS 2015) gradient
descent on the input to minimise ``-log p_y(x)`` plus a prior that keeps reconstructions natural
(total variation and an L2 pull towards a centre), projected onto the input bounds after each step.

Black-box (:func:`invert_blackbox`): the same objective, with the gradient of ``log p_y`` estimated
from scores alone by antithetic Gaussian sampling (NES, Ilyas et al. 2018); the prior's gradient is
known exactly and costs no query. One ``scores_fn`` call per iteration serves all classes, restarts
and samples; the query budget is never exceeded.

Both run every class and restart as one batch of ``num_classes * restarts`` reconstructions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from assay.attacks.base import make_generator
from assay.errors import BudgetExceeded, InputError


@dataclass
class InversionResult:
    """Reconstructions of one run.

    ``x``: (restarts, num_classes, *input_shape) reconstructions; ``x[r, c]`` is restart ``r`` for
    class ``classes[c]``. ``confidence``: (restarts, num_classes) probability the model gives the
    class at its reconstruction (NaN where it was not evaluated). ``queries``: samples queried.
    """

    x: torch.Tensor
    classes: torch.Tensor
    confidence: torch.Tensor
    queries: int
    steps: int
    method: str
    info: dict = field(default_factory=dict)

    def mean_over_restarts(self) -> torch.Tensor:
        """MIFace-style average of the restarts, one image per class: (num_classes, *input_shape)."""
        return self.x.mean(dim=0)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-sample anisotropic total variation (mean absolute difference of neighbouring values).

    Images (N, C, H, W) use vertical and horizontal neighbours; other shapes return zeros, since
    neighbouring features of a tabular row carry no spatial meaning.
    """
    if x.dim() != 4:
        return x.new_zeros(x.shape[0])
    dv = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(dim=1)
    dh = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(dim=1)
    return dv + dh


def prior_penalty(x: torch.Tensor, center: torch.Tensor, tv_weight: float, l2_weight: float) -> torch.Tensor:
    """Per-sample image prior: ``tv_weight * TV(x) + l2_weight * mean((x - center)^2)``."""
    l2 = (x - center).pow(2).flatten(1).mean(dim=1)
    return tv_weight * total_variation(x) + l2_weight * l2


def _log_prob(scores: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """log p_y from logits or probabilities."""
    if output == "probs":
        lp = scores.clamp_min(1e-12).log()
    else:
        lp = torch.log_softmax(scores, dim=1)
    return lp.gather(1, y[:, None]).squeeze(1)


def _setup(num_classes, input_shape, classes, restarts, bounds, center, x_init, init_noise, seed):
    if int(num_classes) < 2:
        raise InputError(f"num_classes must be >= 2, got {num_classes}")
    if int(restarts) < 1:
        raise InputError(f"restarts must be a positive integer, got {restarts}")
    cls = torch.arange(num_classes) if classes is None else torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    if len(cls) == 0 or int(cls.min()) < 0 or int(cls.max()) >= num_classes:
        raise InputError(f"classes must be a non-empty list of ints in [0, {num_classes}); got {cls.tolist()}")
    lo, hi = float(bounds[0]), float(bounds[1])
    finite = math.isfinite(lo) and math.isfinite(hi)
    shape = tuple(int(s) for s in input_shape)
    if center is None:
        center = torch.full(shape, (lo + hi) / 2 if finite else 0.0)
    center = torch.as_tensor(center, dtype=torch.float32).reshape(1, *shape)
    start = center if x_init is None else torch.as_tensor(x_init, dtype=torch.float32).reshape(1, *shape)
    scale = (hi - lo) if finite else 1.0
    gen = make_generator(seed)
    b = int(restarts) * len(cls)
    # restart 0 starts exactly at the centre (the classic MIFace start); others are jittered
    noise = init_noise * scale * torch.randn((b, *shape), generator=gen)
    noise[: len(cls)] = 0
    x = (start + noise).clamp(lo, hi)
    y = cls.repeat(int(restarts))
    return cls, y, x, center, (lo, hi), scale, gen


def invert_whitebox(
    model,
    num_classes: int,
    input_shape: tuple[int, ...],
    *,
    classes=None,
    steps: int = 200,
    step_size: float | None = None,
    tv_weight: float = 0.05,
    l2_weight: float = 0.05,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    center: torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
    init_noise: float = 0.1,
    seed: int | None = 0,
) -> InversionResult:
    """MIFace-style white-box inversion, batched over classes x restarts.

    Minimises ``-log p_y(x) + tv_weight * TV(x) + l2_weight * mean((x - center)^2)`` with Adam
    (step ``step_size``, default 5% of the bounds' width) and projects onto ``bounds`` after each
    step; each reconstruction keeps the iterate with the lowest objective.

    Parameters
    ----------
    model: differentiable callable returning logits on input space (e.g. ``TorchTarget.module``).
        A counted model may raise :class:`BudgetExceeded`: the run then stops with what it has.
    num_classes, input_shape: the model's output size and per-sample input shape.
    classes: classes to invert (default: all).
    steps: gradient steps. restarts: reconstructions per class (restart 0 starts at ``x_init`` or
        ``center``, the others from Gaussian jitter of ``init_noise`` times the bounds' width).
    center: the L2 prior's centre (default: the middle of ``bounds``, or 0 if unbounded).
    seed: seeds the restarts' jitter.

    Returns
    -------
    InversionResult with ``x`` of shape (restarts, len(classes), *input_shape).

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> res = invert_whitebox(net, 3, (4,), steps=5)
    >>> tuple(res.x.shape)
    (1, 3, 4)
    """
    if int(steps) < 1:
        raise InputError(f"steps must be a positive integer, got {steps}")
    cls, y, x, center, (lo, hi), scale, _ = _setup(
        num_classes, input_shape, classes, restarts, bounds, center, x_init, init_noise, seed)
    step = 0.05 * scale if step_size is None else float(step_size)
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=step)
    best = x.detach().clone()
    best_obj = torch.full((len(y),), float("inf"))
    best_conf = torch.full((len(y),), float("nan"))
    queries, done, exhausted = 0, 0, False
    for _ in range(int(steps) + 1):  # the last pass only scores the final iterate
        try:
            logits = model(x)
        except BudgetExceeded:
            exhausted = True
            break
        queries += len(y)
        logp = _log_prob(logits, y, "logits")
        obj = -logp + prior_penalty(x, center, tv_weight, l2_weight)
        with torch.no_grad():
            better = obj.detach() < best_obj
            best[better] = x.detach()[better]
            best_obj[better] = obj.detach()[better]
            best_conf[better] = logp.detach().exp()[better]
        if done == int(steps):
            break
        opt.zero_grad()
        obj.sum().backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        done += 1
    r = int(restarts)
    return InversionResult(
        x=best.reshape(r, len(cls), *x.shape[1:]), classes=cls, confidence=best_conf.reshape(r, len(cls)),
        queries=queries, steps=done, method="whitebox",
        info={"budget_exhausted": exhausted, "tv_weight": tv_weight, "l2_weight": l2_weight, "step_size": step},
    )


def invert_blackbox(
    scores_fn,
    num_classes: int,
    input_shape: tuple[int, ...],
    *,
    query_budget: int,
    output: str = "logits",
    classes=None,
    steps: int = 200,
    samples: int = 10,
    sigma: float | None = None,
    step_size: float | None = None,
    tv_weight: float = 0.05,
    l2_weight: float = 0.05,
    restarts: int = 1,
    bounds: tuple[float, float] = (0.0, 1.0),
    center: torch.Tensor | None = None,
    x_init: torch.Tensor | None = None,
    init_noise: float = 0.1,
    seed: int | None = 0,
) -> InversionResult:
    """Score-based inversion with NES gradient estimates under a hard query budget.

    Each iteration queries ``2 * samples`` antithetic points ``x +/- sigma * u`` (``u`` standard
    Gaussian) per reconstruction in ONE ``scores_fn`` call, estimates
    ``grad log p_y(x) ~ sum_i (f(x + sigma u_i) - f(x - sigma u_i)) u_i / (2 * samples * sigma)``,
    adds the prior's exact gradient and takes an Adam step, projected onto ``bounds``. The final
    reconstructions are scored once (``B = len(classes) * restarts`` queries reserved up front).

    Parameters
    ----------
    scores_fn: callable returning per-class scores (``output``: "logits" or "probs"); it may raise
        :class:`BudgetExceeded`, and the run then stops with what it has.
    query_budget: hard limit on samples sent to ``scores_fn`` by this call; iterations stop when
        the next one would not fit. Must allow at least one iteration and the final scoring.
    samples: antithetic pairs per reconstruction and iteration. sigma: sampling radius (default
        5% of the bounds' width). Other parameters as in :func:`invert_whitebox`.

    Returns
    -------
    InversionResult; ``queries`` never exceeds ``query_budget``.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> res = invert_blackbox(lambda x: net(x).detach(), 3, (4,), query_budget=200, samples=2)
    >>> res.queries <= 200
    True
    """
    if output not in ("logits", "probs"):
        raise InputError(f"output must be 'logits' or 'probs', got {output!r}")
    if int(samples) < 1:
        raise InputError(f"samples must be a positive integer, got {samples}")
    cls, y, x, center, (lo, hi), scale, gen = _setup(
        num_classes, input_shape, classes, restarts, bounds, center, x_init, init_noise, seed)
    b = len(y)
    per_step = 2 * int(samples) * b
    if query_budget is None or query_budget < per_step + b:
        raise InputError(
            f"query budget {query_budget} is too small for one inversion step: {len(cls)} classes x {restarts} "
            f"restarts x {2 * samples} samples + {b} for scoring need {per_step + b}; raise query_budget or "
            "lower samples/restarts")
    sig = 0.05 * scale if sigma is None else float(sigma)
    step = 0.05 * scale if step_size is None else float(step_size)
    n_steps = min(int(steps), (int(query_budget) - b) // per_step)
    yy = y.repeat_interleave(2 * int(samples))
    x = x.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=step)
    queries, done, exhausted = 0, 0, False
    for _ in range(n_steps):
        with torch.no_grad():
            u = torch.randn((b, int(samples), *x.shape[1:]), generator=gen)
            u = torch.cat([u, -u], dim=1)  # antithetic pairs
            probe = (x.detach()[:, None] + sig * u).clamp(lo, hi).reshape(-1, *x.shape[1:])
            try:
                s = scores_fn(probe)
            except BudgetExceeded:
                exhausted = True
                break
            queries += probe.shape[0]
            f = _log_prob(torch.as_tensor(s).float(), yy, output).reshape(b, 2 * int(samples))
            f = f - f.mean(dim=1, keepdim=True)  # baseline: lowers the estimator's variance
            grad_logp = (f.reshape(b, -1, *([1] * (x.dim() - 1))) * u).sum(dim=1) / (2 * int(samples) * sig)
        opt.zero_grad()
        prior_penalty(x, center, tv_weight, l2_weight).sum().backward()
        x.grad -= grad_logp  # minimise -log p_y + prior
        opt.step()
        with torch.no_grad():
            x.clamp_(lo, hi)
        done += 1
    x = x.detach()
    conf = torch.full((b,), float("nan"))
    if not exhausted:
        try:
            conf = _log_prob(torch.as_tensor(scores_fn(x)).float(), y, output).exp()
            queries += b
        except BudgetExceeded:
            exhausted = True
    r = int(restarts)
    return InversionResult(
        x=x.reshape(r, len(cls), *x.shape[1:]), classes=cls, confidence=conf.reshape(r, len(cls)),
        queries=queries, steps=done, method="blackbox-nes",
        info={"budget_exhausted": exhausted or done < int(steps), "samples": int(samples), "sigma": sig,
              "step_size": step, "tv_weight": tv_weight, "l2_weight": l2_weight},
    )


def identification(
    recon: torch.Tensor, recon_class: torch.Tensor, class_means: torch.Tensor, global_mean: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """How recognisable reconstructions are: correlation with each class's data mean.

    Both the reconstruction and the class means are centred on the global data mean (so the shared
    "ink" of every class does not count) and compared by cosine similarity.

    Parameters
    ----------
    recon: (N, *shape) reconstructions; recon_class: (N,) class each one was made for.
    class_means: (K, *shape) per-class data means; global_mean: (*shape) mean over all data.

    Returns
    -------
    (identified, margin): bool (N,) whether the closest class mean is the reconstruction's own
    class, and float (N,) own-class similarity minus the mean similarity to the other classes.
    """
    r = (recon - global_mean).flatten(1)
    m = (class_means - global_mean).flatten(1)
    sim = torch.nn.functional.normalize(r, dim=1, eps=1e-12) @ torch.nn.functional.normalize(m, dim=1, eps=1e-12).T
    own = sim.gather(1, recon_class[:, None]).squeeze(1)
    k = sim.shape[1]
    others = (sim.sum(dim=1) - own) / max(k - 1, 1)
    return sim.argmax(dim=1) == recon_class, own - others


__all__ = ["InversionResult", "invert_whitebox", "invert_blackbox", "identification", "total_variation",
           "prior_penalty"]
