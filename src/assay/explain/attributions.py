"""Feature attributions and checks of whether they can be trusted.

Gradient methods (white-box torch models, any ``nn.Module`` returning logits):

- :func:`saliency`: ``|d f_t(x) / d x|`` (Simonyan et al. 2014).
- :func:`integrated_gradients`: ``(x - x') * integral_0^1 grad f_t(x' + a (x - x')) da`` (Sundararajan
  et al. 2017) by Gauss-Legendre quadrature (default) or the trapezoid rule on ``n_steps`` equally
  spaced points, with the completeness gap ``sum(attr) - (f_t(x) - f_t(x'))``. The ``steps x inputs``
  expansion is processed in chunks of ``internal_batch_size`` rows, so memory is bounded.
- :func:`smoothgrad`: the mean gradient over Gaussian-noised copies (Smilkov et al. 2017), chunked.

Black-box methods (through :class:`~assay.targets.base.Target` scores, every query counted):
:func:`permutation_importance` (tabular) and :func:`occlusion` (images).

Quality checks: :func:`randomization_check` (Adebayo et al. 2018: attributions of a trustworthy
method change when the weights are randomized) and :func:`deletion_insertion` (faithfulness:
removing the most important features first should destroy the prediction fast).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from assay.errors import InputError


def _targets(target, n: int) -> torch.Tensor:
    t = torch.as_tensor(target).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if len(t) != n:
        raise InputError(f"{len(t)} target classes for {n} inputs; give one class per input (or one for all)")
    return t


def _grad_of_target(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        sel = out.gather(1, t.to(out.device)[:, None]).sum()
        (g,) = torch.autograd.grad(sel, x)
    return g


def saliency(model: nn.Module, x: torch.Tensor, target, *, absolute: bool = True) -> torch.Tensor:
    """Gradient of the target logit with respect to the input (absolute value by default).

    >>> net = nn.Linear(3, 2, bias=False); net.weight.data = torch.tensor([[1., -2., 0.], [0., 0., 1.]])
    >>> saliency(net, torch.zeros(1, 3), 0).tolist()
    [[1.0, 2.0, 0.0]]
    """
    g = _grad_of_target(model, x, _targets(target, len(x)))
    return g.abs() if absolute else g


def quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and weights for integrating over the straight path.

    ``gausslegendre``: Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1].
    ``riemann_trapezoid``: ``n_steps`` equally spaced points with trapezoid weights summing to 1.
    (Captum's trapezoid uses weights ``1/n`` and halves the ends, which sum to ``1 - 1/n``: its
    attributions are ours times ``(n-1)/n``; Gauss-Legendre agrees exactly.)
    """
    if method == "gausslegendre":
        if n_steps < 1:
            raise InputError("n_steps must be >= 1")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return torch.tensor(0.5 * (nodes + 1)), torch.tensor(0.5 * weights)
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise InputError("n_steps must be >= 2 for the trapezoid rule")
        alphas = torch.linspace(0, 1, n_steps, dtype=torch.float64)
        w = torch.full((n_steps,), 1.0 / (n_steps - 1), dtype=torch.float64)
        w[0] /= 2
        w[-1] /= 2
        return alphas, w
    raise InputError(f"method={method!r}; use 'gausslegendre' or 'riemann_trapezoid'")


def _path_gradients(model, x, baseline, t, alphas, weights, internal_batch_size):
    """``sum_s weights[s] * grad f_t(baseline + alphas[s] (x - baseline))`` per input, chunked over
    the flattened (step, input) pairs."""
    n, S = len(x), len(alphas)
    total = torch.zeros_like(x)
    diff = x - baseline
    chunk = internal_batch_size or S * n
    flat = torch.arange(S * n)
    a = alphas.to(x.dtype)
    w = weights.to(x.dtype)
    for start in range(0, S * n, chunk):
        idx = flat[start : start + chunk]
        s, i = idx // n, idx % n
        shape = (-1,) + (1,) * (x.dim() - 1)
        pts = baseline[i] + a[s].reshape(shape) * diff[i]
        g = _grad_of_target(model, pts, t[i])
        total.index_add_(0, i.to(x.device), g * w[s].reshape(shape).to(g.device))
    return total


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target,
    *,
    baseline: torch.Tensor | float | None = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated gradients and the completeness gap per input.

    Parameters
    ----------
    model : differentiable model returning logits ``(N, classes)``.
    x : inputs ``(n, ...)``.
    target : class per input (or one class for all).
    baseline : reference input (tensor broadcastable to ``x`` or a scalar); zeros by default.
    n_steps, method : quadrature (``gausslegendre`` or ``riemann_trapezoid``).
    internal_batch_size : at most this many path points per forward/backward pass (memory bound).

    Returns
    -------
    ``(attributions shaped like x, delta (n,))`` with ``delta = sum(attr) - (f_t(x) - f_t(baseline))``.

    Example
    -------
    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> attr, delta = integrated_gradients(net, torch.rand(2, 4), 1)
    >>> bool(delta.abs().max() < 1e-5)  # a linear model is integrated exactly
    True
    """
    x = x.detach()
    n = len(x)
    t = _targets(target, n)
    if baseline is None:
        base = torch.zeros_like(x)
    else:
        base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).clone()
    alphas, weights = quadrature(n_steps, method)
    grads = _path_gradients(model, x, base, t, alphas, weights, internal_batch_size)
    attr = (x - base) * grads
    with torch.no_grad():
        out = model(torch.cat([x, base]))
        f = out.gather(1, torch.cat([t, t]).to(out.device)[:, None])[:, 0]
    delta = attr.reshape(n, -1).sum(1) - (f[:n] - f[n:]).to(attr.dtype)
    return attr, delta


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target,
    *,
    n_samples: int = 25,
    sigma: float = 0.15,
    bounds: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Mean gradient over ``n_samples`` copies with Gaussian noise of std ``sigma * (high - low)``."""
    x = x.detach()
    n = len(x)
    t = _targets(target, n)
    g = torch.Generator().manual_seed(seed)
    std = sigma * (bounds[1] - bounds[0])
    total = torch.zeros_like(x)
    chunk = internal_batch_size or n_samples * n
    flat = torch.arange(n_samples * n)
    for start in range(0, n_samples * n, chunk):
        i = flat[start : start + chunk] % n
        noisy = x[i] + std * torch.randn(x[i].shape, generator=g).to(x.device, x.dtype)
        total.index_add_(0, i.to(x.device), _grad_of_target(model, noisy, t[i]))
    return total / n_samples


# ---------------------------------------------------------------- black-box
def permutation_importance(target, x: torch.Tensor, y: torch.Tensor, *, n_repeats: int = 5, seed: int = 0):
    """Drop in accuracy when one feature column is shuffled (Breiman 2001), through ``target.scores``.

    Costs ``n * (1 + n_features * n_repeats)`` queries, charged before anything is sent.

    Returns
    -------
    ``(mean drop per feature, std over repeats)`` as numpy arrays.
    """
    if x.dim() != 2:
        raise InputError(f"permutation importance needs tabular inputs (n, features), got {tuple(x.shape)}; use occlusion for images")
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(y).long()
    base_acc = (target.labels(x) == y).double().mean()
    drops = np.zeros((d, n_repeats))
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(n_repeats)])  # (R, n), R small
    for j in range(d):  # one batched query per feature: all repeats at once
        xs = x.unsqueeze(0).repeat(n_repeats, 1, 1)
        xs[:, :, j] = x[perms, j]
        pred = target.labels(xs.reshape(-1, d)).reshape(n_repeats, n)
        drops[j] = (base_acc - (pred == y).double().mean(1)).numpy()
    return drops.mean(1), drops.std(1)


def occlusion(target, x: torch.Tensor, classes, *, window: int = 2, stride: int = 1, baseline: float = 0.0) -> torch.Tensor:
    """Mean drop in the target class probability when a ``window x window`` patch covering the pixel
    is set to ``baseline``, through ``target.probs``. Costs ``n * (1 + windows)`` queries.
    """
    if x.dim() != 4:
        raise InputError(f"occlusion needs images (n, C, H, W), got {tuple(x.shape)}; use permutation importance for tables")
    n, c, h, w = x.shape
    t = _targets(classes, n)
    rows = range(0, h - window + 1, stride)
    cols = range(0, w - window + 1, stride)
    masks = torch.zeros(len(rows) * len(cols), h, w)
    for k, (r, q) in enumerate((r, q) for r in rows for q in cols):  # windows, not samples
        masks[k, r : r + window, q : q + window] = 1.0
    p0 = target.probs(x).gather(1, t[:, None])[:, 0]
    m = masks[:, None, None]  # (P, 1, 1, H, W)
    occluded = (x[None] * (1 - m) + baseline * m).reshape(-1, c, h, w)
    p = target.probs(occluded).reshape(len(masks), n, -1).gather(2, t[None, :, None].expand(len(masks), n, 1))[..., 0]
    drop = p0[None] - p  # (P, n)
    attr = torch.einsum("pn,phw->nhw", drop.float(), masks) / masks.sum(0).clamp_min(1)
    return attr[:, None].expand(n, c, h, w).clone()


# ---------------------------------------------------------------- checks
def _average_ranks(a: torch.Tensor) -> torch.Tensor:
    """Ranks along dim 1 with ties given their average rank (vectorised over rows)."""
    n, d = a.shape
    s, idx = a.sort(1)
    pos = torch.arange(d, dtype=torch.float64).expand(n, d)
    first = torch.ones(n, d, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = torch.ones(n, d, dtype=torch.bool)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(1).values
    end = torch.where(last, pos, torch.full_like(pos, d)).flip(1).cummin(1).values.flip(1)
    ranks = torch.empty_like(pos)
    ranks.scatter_(1, idx, (start + end) / 2)
    return ranks


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation between the flattened rows of ``a`` and ``b`` (average ranks for
    ties, as in ``scipy.stats.spearmanr``), one value per row.

    >>> spearman_rows(torch.tensor([[1., 2., 2., 3.]]), torch.tensor([[1., 2., 3., 4.]])).round(4).tolist()
    [0.9487]
    """
    ra = _average_ranks(a.reshape(len(a), -1).double())
    rb = _average_ranks(b.reshape(len(b), -1).double())
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return ((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).numpy()


def parametrized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters directly (conv, linear, norm ...), in forward registration order."""
    return [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    target,
    attribute: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    mode: str = "cascading",
    seed: int = 0,
    reference: torch.Tensor | None = None,
) -> list[dict]:
    """Model-parameter randomization test (Adebayo et al. 2018).

    ``cascading``: randomize layers from the output layer backwards, cumulatively; ``independent``:
    randomize one layer at a time. After each step the attributions of the randomized copy are
    compared with the trained model's by the Spearman rank correlation of their absolute values, per
    input. A method that explains the model (not just the input) drops towards 0.

    Parameters
    ----------
    attribute : ``attribute(model, x, target) -> attributions``, e.g. a ``functools.partial`` of
        :func:`integrated_gradients` returning only the attributions.
    reference : the trained model's attributions, if already computed.

    Returns
    -------
    One dict per step: ``{"layer", "rho" (per-input array), "mean"}``.
    """
    if mode not in ("cascading", "independent"):
        raise InputError(f"mode={mode!r}; use 'cascading' or 'independent'")
    t = _targets(target, len(x))
    ref = attribute(model, x, t) if reference is None else reference
    layers = parametrized_layers(model)
    if not layers:
        raise InputError("the model has no parameters to randomize")
    out = []
    randomized = copy.deepcopy(model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, _ in reversed(layers):
            if mode == "independent":
                randomized = copy.deepcopy(model)
            # looked up by name, not get_submodule: TorchScript modules do not support the latter
            layer = dict(randomized.named_modules())[name]
            _reinit(layer)
            rho = spearman_rows(ref.abs(), attribute(randomized, x, t).abs())
            out.append({"layer": name, "rho": rho, "mean": float(rho.mean())})
    return out


def _reinit(layer: nn.Module) -> None:
    """Re-initialise one layer: its own initializer where it has one (Python modules), else fresh
    Gaussian values at the scale of the trained ones (TorchScript layers have no reset_parameters),
    so the randomized model's outputs neither vanish nor explode."""
    if hasattr(layer, "reset_parameters") and not isinstance(layer, torch.jit.ScriptModule):
        layer.reset_parameters()
        return
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            scale = float(p.std()) if p.numel() > 1 else 0.0
            p.normal_(0.0, scale if scale > 0 else 0.02)


def deletion_insertion(
    target,
    x: torch.Tensor,
    classes,
    attributions: torch.Tensor,
    *,
    steps: int = 20,
    baseline: float | torch.Tensor = 0.0,
) -> dict[str, np.ndarray]:
    """Faithfulness curves (Petsiuk et al. 2018): the target-class probability as the most important
    features (by attribution) are deleted (set to ``baseline``) or inserted into a baseline input,
    in ``steps`` equal fractions. ``baseline`` is a number or one input (e.g. the data's mean, for
    unbounded tabular features). Costs ``2 * (steps + 1) * n`` queries through ``target.probs``.

    Returns
    -------
    dict with ``fraction (steps+1,)``, ``deletion``/``insertion`` ``(n, steps+1)`` probabilities and
    per-input ``deletion_auc``/``insertion_auc`` (trapezoid over the fraction).
    """
    n = len(x)
    t = _targets(classes, n)
    flat = x.reshape(n, -1)
    d = flat.shape[1]
    order = attributions.reshape(n, -1).argsort(1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d).expand(n, d))
    frac = torch.linspace(0, 1, steps + 1)
    removed = rank[None] < (frac * d).round().long()[:, None, None]  # (S, n, d): feature is in the top share
    base = torch.as_tensor(baseline, dtype=flat.dtype).reshape(1, -1).expand(n, d) if torch.is_tensor(baseline) \
        else torch.full_like(flat, baseline)
    deleted = torch.where(removed, base[None], flat[None]).reshape(-1, *x.shape[1:])
    inserted = torch.where(removed, flat[None], base[None]).reshape(-1, *x.shape[1:])

    def prob(batch):
        p = target.probs(batch).reshape(steps + 1, n, -1)
        return p.gather(2, t[None, :, None].expand(steps + 1, n, 1))[..., 0].T.double().numpy()

    dele, ins = prob(deleted), prob(inserted)
    fr = frac.double().numpy()
    return {"fraction": fr, "deletion": dele, "insertion": ins,
            "deletion_auc": np.trapezoid(dele, fr, axis=1), "insertion_auc": np.trapezoid(ins, fr, axis=1)}
