"""Model extraction: steal a surrogate of a classifier with query access only, under a hard budget.

:func:`extract` runs rounds of "train the surrogate on what was queried, pick the next queries,
query them". Queries come from a pool of natural inputs or from synthetic candidates (uniform or
Gaussian within the bounds, or mixup of pool samples). Selection is ``"random"`` or ``"active"``:
uncertainty sampling near the surrogate's decision boundary (the smallest top-1 minus top-2
probability margin, Lewis & Gale 1994; used for extraction by Tramer et al., USENIX Security 2016,
and Papernot et al., AsiaCCS 2017). With scores the surrogate is trained on the target's soft labels
(KL divergence, i.e. distillation); with labels only, on hard labels (cross-entropy).

:func:`transfer_attack` crafts adversarial examples on the surrogate with PGD and measures how
often they fool the target, next to random sign noise of the same L-inf norm (the baseline).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from assay.attacks.base import make_generator
from assay.attacks.norms import L2, LINF, Norm, as_norm
from assay.errors import BudgetExceeded, InputError

ARCHITECTURES = ("auto", "linear", "mlp", "cnn")
SOURCES = ("pool", "uniform", "gaussian", "mixup")
STRATEGIES = ("active", "random")


def build_surrogate(
    arch: str, input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 64,
    mean: torch.Tensor | None = None, std: torch.Tensor | None = None, seed: int = 0,
) -> nn.Module:
    """A small classifier: ``linear``, ``mlp`` (two hidden layers) or ``cnn`` (two 3x3 convs,
    adaptive pooling, two linear layers; images only). ``auto``: cnn for (C, H, W) inputs, else mlp.

    ``mean``/``std`` (per feature, the shape of one input) standardise inputs inside the model, so
    tabular features on any scale train well. Weights are initialised from ``seed``.

    Example
    -------
    >>> build_surrogate("mlp", (4,), 3)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown surrogate architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    shape = tuple(int(s) for s in input_shape)
    if arch == "auto":
        arch = "cnn" if len(shape) == 3 else "mlp"
    if arch == "cnn" and len(shape) != 3:
        raise InputError(f"the cnn surrogate needs (C, H, W) image inputs, got shape {shape}; use arch=mlp")
    d = math.prod(shape)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if arch == "linear":
            body = nn.Sequential(nn.Flatten(), nn.Linear(d, num_classes))
        elif arch == "mlp":
            body = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))
        else:
            c = shape[0]
            body = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(32 * 16, hidden), nn.ReLU(),
                nn.Linear(hidden, num_classes))
    if mean is None:
        return body
    # features constant in the data keep unit scale instead of dividing by ~0
    std = std.float()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return nn.Sequential(_Standardize(mean.reshape(1, *shape), std.reshape(1, *shape)), body)


class _Standardize(nn.Module):
    """Per-feature ``(x - mean) / std`` (TorchTarget's Normalize is per channel)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x):
        return (x - self.mean) / self.std


def fit_classifier(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, epochs: int = 40, lr: float = 3e-3,
    batch_size: int = 64, weight_decay: float = 0.0, seed: int = 0,
) -> nn.Module:
    """Train ``model`` on ``x`` with hard labels (int64 (N,): cross-entropy) or soft labels
    (float (N, K) probabilities: KL divergence to them). Seeded Adam; returns the model in eval mode.
    """
    if len(x) == 0:
        raise InputError("no training samples for the classifier; give a non-empty pool")
    soft = targets.dim() == 2
    g = make_generator(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(x)
    model.train()
    for _ in range(int(epochs)):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            logp = torch.log_softmax(model(x[idx]), dim=1)
            if soft:
                t = targets[idx]
                loss = (t * (t.clamp_min(1e-12).log() - logp)).sum(dim=1).mean()
            else:
                loss = nn.functional.nll_loss(logp, targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def margin(probs: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability per row: small near the decision boundary."""
    top = probs.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


@dataclass
class ExtractionResult:
    """A stolen surrogate and how it was obtained.

    ``history``: one entry per round, ``{"queries": int, "fidelity": float}`` (fidelity present when
    an ``evaluate`` callback was given). ``x_queried``/``answers``: what was sent and received.
    """

    surrogate: nn.Module
    x_queried: torch.Tensor
    answers: torch.Tensor
    queries: int
    history: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def _synthetic(source, n, pool, bounds, gen):
    lo, hi = bounds
    shape = pool.shape[1:]
    if source == "uniform":
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError("uniform synthetic queries need finite input bounds; use source=gaussian or pool")
        return lo + (hi - lo) * torch.rand((n, *shape), generator=gen)
    if source == "gaussian":
        mu, sd = pool.mean(0), pool.std(0) if len(pool) > 1 else torch.ones(shape)
        return (mu + sd * torch.randn((n, *shape), generator=gen)).clamp(lo, hi)
    # mixup of two pool samples with a uniform weight
    i = torch.randint(0, len(pool), (n,), generator=gen)
    j = torch.randint(0, len(pool), (n,), generator=gen)
    lam = torch.rand((n,) + (1,) * len(shape), generator=gen)
    return lam * pool[i] + (1 - lam) * pool[j]


def extract(
    query_fn: Callable[[torch.Tensor], torch.Tensor],
    pool: torch.Tensor,
    num_classes: int,
    *,
    query_budget: int,
    output: str = "logits",
    rounds: int = 4,
    strategy: str = "active",
    source: str = "pool",
    arch: str = "auto",
    hidden: int = 64,
    epochs: int = 40,
    lr: float = 3e-3,
    candidates_per_query: int = 10,
    bounds: tuple[float, float] = (0.0, 1.0),
    evaluate: Callable[[nn.Module], float] | None = None,
    seed: int = 0,
) -> ExtractionResult:
    """Extract a surrogate in ``rounds + 1`` rounds of equal size within ``query_budget`` queries.

    Round 0 queries a random sample; each later round retrains the surrogate (from scratch, seeded)
    on everything queried so far and then queries the candidates it is least sure about (``active``:
    smallest top-2 probability margin) or random ones (``random``). Candidates are the unqueried pool
    points (``source="pool"``) or ``candidates_per_query`` fresh synthetic inputs per query.

    Parameters
    ----------
    query_fn: the target's ``scores`` (``output`` "logits" or "probs") or ``labels`` (``output``
        "labels"). It may raise :class:`BudgetExceeded`: extraction then stops with what it has.
    pool: natural inputs the attacker holds (N, *shape); for synthetic sources it only provides the
        shape, the Gaussian's mean/std and mixup partners. With unbounded ``bounds`` the surrogate
        standardises its inputs with the pool's per-feature mean and std.
    query_budget: hard limit on samples sent to ``query_fn`` (never exceeded).
    arch, hidden: the surrogate (see :func:`build_surrogate`). epochs, lr: its training.
    evaluate: optional ``surrogate -> fidelity`` callback run after each round (the curve).

    Returns
    -------
    ExtractionResult with the final surrogate trained on every answer received.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> res = extract(lambda x: net(x).detach(), torch.rand(50, 4), 3, query_budget=30, rounds=2, epochs=2)
    >>> res.queries <= 30
    True
    """
    if output not in ("logits", "probs", "labels"):
        raise InputError(f"output must be logits, probs or labels, got {output!r}")
    if strategy not in STRATEGIES:
        raise InputError(f"unknown selection strategy {strategy!r}; use active or random")
    if source not in SOURCES:
        raise InputError(f"unknown query source {source!r}; use one of {', '.join(SOURCES)}")
    if pool is None or len(pool) == 0:
        raise InputError("no pool data for extraction; give natural inputs the attacker may query (a non-empty pool)")
    if int(rounds) < 0:
        raise InputError(f"rounds must be >= 0, got {rounds}")
    per_round = int(query_budget or 0) // (int(rounds) + 1)
    if per_round < 2:
        raise InputError(
            f"query budget {query_budget} is too small for {rounds + 1} extraction rounds (need at least "
            f"{2 * (rounds + 1)}); raise query_budget or lower rounds")
    if source == "pool" and len(pool) < per_round:
        raise InputError(f"the pool has {len(pool)} inputs, fewer than one round's {per_round} queries; "
                         "give more pool data or lower query_budget")
    pool = pool.float()
    gen = make_generator(seed)
    flat = pool.reshape(len(pool), -1)
    shape = tuple(pool.shape[1:])
    mean = std = None
    if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])):
        # unbounded (tabular) features may sit on any scale: standardise with the pool's statistics
        mean, std = flat.mean(0), flat.std(0) if len(pool) > 1 else torch.ones(flat.shape[1])

    def new_surrogate():
        return build_surrogate(arch, shape, num_classes, hidden=hidden, mean=mean, std=std, seed=seed)

    def train(xq, aq):
        return fit_classifier(new_surrogate(), xq, aq, epochs=epochs, lr=lr, seed=seed)

    queried_x: list[torch.Tensor] = []
    answers: list[torch.Tensor] = []
    unqueried = torch.ones(len(pool), dtype=torch.bool)
    history: list[dict] = []
    used, exhausted = 0, False
    surrogate = None
    for r in range(int(rounds) + 1):
        n = per_round if r < int(rounds) else int(query_budget) - used  # the last round takes the rest
        if source == "pool":
            cand_idx = unqueried.nonzero().flatten()
            cand = pool[cand_idx]
        else:
            cand = _synthetic(source, max(n * int(candidates_per_query), n), pool, bounds, gen)
        n = min(n, len(cand))
        if n == 0:
            break
        if strategy == "active" and surrogate is not None:
            with torch.no_grad():
                m = margin(torch.softmax(surrogate(cand), dim=1))
            # ties broken by a seeded random key, so equal margins do not favour the pool's order
            key = m + 1e-9 * torch.rand(len(cand), generator=gen)
            pick = key.argsort()[:n]
        else:
            pick = torch.randperm(len(cand), generator=gen)[:n]
        xb = cand[pick]
        try:
            out = torch.as_tensor(query_fn(xb))
        except BudgetExceeded:
            exhausted = True
            break
        used += len(xb)
        if source == "pool":
            unqueried[cand_idx[pick]] = False
        if output == "labels":
            ans = out.long().reshape(-1)
        elif output == "logits":
            ans = torch.softmax(out.float(), dim=1)
        else:
            ans = out.float()
        queried_x.append(xb)
        answers.append(ans)
        surrogate = train(torch.cat(queried_x), torch.cat(answers))
        entry = {"round": r, "queries": used}
        if evaluate is not None:
            entry["fidelity"] = float(evaluate(surrogate))
        history.append(entry)
    if surrogate is None:
        raise BudgetExceeded("the target's query budget ran out before the first extraction round; raise it")
    return ExtractionResult(
        surrogate=surrogate, x_queried=torch.cat(queried_x), answers=torch.cat(answers), queries=used,
        history=history,
        info={"budget_exhausted": exhausted, "strategy": strategy, "source": source, "rounds": int(rounds),
              "per_round": per_round, "soft_labels": output != "labels"},
    )


@dataclass
class TransferResult:
    """Adversarial examples crafted on a surrogate and what the target made of them.

    ``fooled``: bool (N,) the target mislabels the surrogate's adversarial example; ``noise_fooled``:
    bool (N,) the target mislabels the input plus random noise of the same norm (the baseline).
    """

    x_adv: torch.Tensor
    fooled: torch.Tensor
    noise_fooled: torch.Tensor
    surrogate_success: torch.Tensor
    queries: int


def transfer_attack(
    surrogate: nn.Module,
    labels_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str | Norm = "linf",
    steps: int = 20,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> TransferResult:
    """Transfer attack: PGD on the surrogate, then ``2 * len(x)`` target queries.

    The target labels each surrogate adversarial example once and each input plus random noise of
    the same norm once (L-inf: random signs times ``eps``; L2: a random direction of length
    ``eps``), so the gain over noise isolates what the stolen gradients contribute. Give points the
    target classifies correctly; ``y`` are their true labels. ``labels_fn`` may raise
    :class:`BudgetExceeded` (nothing is sent then): callers reserve ``2 * len(x)`` queries.

    Example
    -------
    >>> sur = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> res = transfer_attack(sur, lambda z: sur(z).argmax(1), torch.rand(3, 4), torch.zeros(3, dtype=torch.long), eps=0.1)
    >>> res.queries
    6
    """
    from assay.attacks.base import clip_to_bounds
    from assay.attacks.gradient import pgd

    norm = as_norm(norm, (LINF, L2), "transfer_attack")
    adv = pgd(surrogate, x, y, eps=eps, norm=norm, steps=steps, bounds=bounds, seed=seed)
    noise = norm.random_at_radius(x.shape, eps, make_generator(seed + 1))
    x_noise = clip_to_bounds(x + noise, bounds)
    answers = torch.as_tensor(labels_fn(torch.cat([adv.x_adv, x_noise]))).reshape(-1)
    n = len(x)
    return TransferResult(x_adv=adv.x_adv, fooled=answers[:n] != y, noise_fooled=answers[n:] != y,
                          surrogate_success=adv.success, queries=2 * n)


__all__ = ["build_surrogate", "fit_classifier", "margin", "extract", "ExtractionResult", "transfer_attack",
           "TransferResult",
           "ARCHITECTURES", "SOURCES", "STRATEGIES"]
