"""Membership inference scores from model outputs.

Every function here works on tensors of model outputs (logits, log-probabilities or probabilities)
and labels, so it applies to any framework. Every score follows one convention: **higher means
more likely a member** of the target's training set. Turning scores into TPR at low FPR, AUC and an
epsilon lower bound is :mod:`assay.metrics.privacy`' job.

Attacks
-------
``loss_scores`` / ``confidence_scores``
    Population baselines (Yeom et al. 2018): a member's loss is lower than a non-member's.
``lira_scores``
    Likelihood-ratio attack (Carlini et al., S&P 2022) on the logit-scaled confidence
    ``phi = log(p_y / (1 - p_y))`` of the target, against per-example Gaussians fitted to reference
    models trained with (IN) and without (OUT) the example.
``rmia_scores``
    Relative membership inference (Zarifzadeh et al., ICML 2024): compares the likelihood ratio
    ``p(x|theta) / p(x)`` of the candidate with that of population samples ``z``.
``label_only_scores``
    Label-only attack (Choquette-Choo et al., ICML 2021): members keep their correct label under
    more random perturbations than non-members.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from assay.errors import InputError

LIRA_VARIANTS = ("online", "offline")
RMIA_VARIANTS = ("offline", "online")


# ---------------------------------------------------------------- signals
def as_log_probs(outputs: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """Log-probabilities from ``logits`` (log-softmax), ``probs`` (clamped log) or ``log_probs``.

    Parameters
    ----------
    outputs : (..., C) float tensor.
    kind : ``"logits"``, ``"probs"`` or ``"log_probs"``.
    """
    outputs = torch.as_tensor(outputs)
    if not outputs.dtype.is_floating_point:
        raise InputError(f"model outputs have dtype {outputs.dtype}; give float logits or probabilities")
    if kind == "logits":
        return torch.log_softmax(outputs.double(), dim=-1)
    if kind == "probs":
        # renormalise: some APIs return rounded probabilities that do not sum to exactly one
        p = outputs.double().clamp_min(0)
        return torch.log((p / p.sum(-1, keepdim=True).clamp_min(1e-300)).clamp_min(1e-300))
    if kind == "log_probs":
        return outputs.double()
    raise InputError(f"unknown output kind {kind!r}; use logits, probs or log_probs")


def _gather_label(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The label's entry along the last axis of (..., N, C) or (..., N, Q, C) outputs."""
    y = torch.as_tensor(y).long()
    view = [1] * t.dim()
    view[_example_axis(t, y)] = -1
    idx = y.reshape(view).expand(*t.shape[:-1], 1)
    return t.gather(-1, idx).squeeze(-1)


def _example_axis(t: torch.Tensor, y: torch.Tensor) -> int:
    # the example axis is the last non-class axis whose length equals len(y), preferring -2 then -3
    for ax in (t.dim() - 2, t.dim() - 3):
        if ax >= 0 and t.shape[ax] == len(y):
            return ax
    raise InputError(f"labels have {len(y)} entries but outputs have shape {tuple(t.shape)}; give one label per example")


def true_class_log_prob(log_probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``log p_y`` for outputs (N, C), (N, Q, C) or (R, N, Q, C) and labels (N,)."""
    return _gather_label(log_probs, y)


def logit_confidence(outputs: torch.Tensor, y: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """LiRA's statistic ``phi = log(p_y / (1 - p_y))``, computed stably in float64 as
    ``log p_y - logsumexp_{j != y} log p_j`` (never forms ``1 - p_y``, which rounds to 0 for a
    confident model).

    Parameters
    ----------
    outputs : (..., N, C) or (..., N, Q, C) logits / probabilities (``kind``).
    y : (N,) int labels.

    Returns
    -------
    phi with the outputs' shape minus the class axis (float64).

    Example
    -------
    >>> round(logit_confidence(torch.tensor([[4.0, 0.0]]), torch.tensor([0])).item(), 6)
    4.0
    """
    lp = as_log_probs(outputs, kind)
    y = torch.as_tensor(y).long()
    view = [1] * lp.dim()
    view[_example_axis(lp, y)] = -1
    onehot = torch.zeros_like(lp, dtype=torch.bool).scatter_(-1, y.reshape(view).expand(*lp.shape[:-1], 1), True)
    log_py = lp.masked_fill(~onehot, 0.0).sum(-1)
    log_rest = torch.logsumexp(lp.masked_fill(onehot, -math.inf), dim=-1)
    return log_py - log_rest


def loss_scores(probs: torch.Tensor, y: torch.Tensor, kind: str = "probs") -> torch.Tensor:
    """Population baseline: negative cross-entropy ``log p_y`` (higher = lower loss = member).

    Parameters
    ----------
    probs : (N, C) probabilities (or logits with ``kind="logits"``).
    y : (N,) labels.
    """
    return true_class_log_prob(as_log_probs(probs, kind), y)


def confidence_scores(probs: torch.Tensor, y: torch.Tensor | None = None, kind: str = "probs") -> torch.Tensor:
    """Population baseline: the probability of the true class, or the top probability when ``y``
    is None (an attacker without labels)."""
    lp = as_log_probs(probs, kind)
    if y is None:
        return lp.max(dim=-1).values.exp()
    return true_class_log_prob(lp, y).exp()


# ------------------------------------------------------------------- LiRA
def _masked_mean_var(v: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and (population) variance over axis 0 of v (R, N, Q) where mask (R, N) is True."""
    m = mask.to(v.dtype).unsqueeze(-1)
    count = m.sum(0)  # (N, 1)
    mean = (v * m).sum(0) / count.clamp_min(1)
    var = (((v - mean) ** 2) * m).sum(0) / count.clamp_min(1)
    return mean, var, count.squeeze(-1)


def lira_scores(
    target_phi: torch.Tensor,
    ref_phi: torch.Tensor,
    ref_in_mask: torch.Tensor | None,
    *,
    variant: str = "online",
    fixed_variance: bool = False,
    min_std: float = 1e-4,
) -> torch.Tensor:
    """LiRA membership scores (Carlini et al. 2022, Algorithm 1).

    For each example the reference models' ``phi`` values are split into IN (trained on it) and
    OUT; a Gaussian is fitted to each, per query. With ``Q`` queries per example (augmentations)
    the queries are treated as independent Gaussians (a diagonal multivariate model, as the
    paper's code does) and the per-query log-likelihoods are averaged.

    ``online``:  ``mean_q [log N(phi_q; mu_in, s_in) - log N(phi_q; mu_out, s_out)]``.
    ``offline``: one-sided test against OUT only, ``mean_q log Phi((phi_q - mu_out) / s_out)``
    (the log of ``Pr[Z <= phi]`` for ``Z ~ N(mu_out, s_out^2)``; large when the target is more
    confident than models that never saw the example).
    ``fixed_variance``: one global variance per distribution (over all examples and queries)
    instead of per-example variances; the paper recommends it below ~64 reference models.

    Parameters
    ----------
    target_phi : (N,) or (N, Q) logit-scaled confidence of the target (:func:`logit_confidence`).
    ref_phi : (R, N) or (R, N, Q) the same for R reference models.
    ref_in_mask : (R, N) bool, True where reference model r trained on example n. ``None`` means
        no reference model saw any example (offline only).
    variant : ``"online"`` or ``"offline"``.
    fixed_variance : use global variances.
    min_std : floor on standard deviations (a reference set with identical values).

    Returns
    -------
    (N,) float64 scores, higher = more likely member.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> ref = torch.randn(8, 5, 1, generator=g); mask = torch.arange(8)[:, None].expand(8, 5) < 4
    >>> lira_scores(torch.zeros(5, 1), ref, mask).shape
    torch.Size([5])
    """
    if variant not in LIRA_VARIANTS:
        raise InputError(f"unknown LiRA variant {variant!r}; use one of {', '.join(LIRA_VARIANTS)}")
    t = torch.as_tensor(target_phi).double()
    r = torch.as_tensor(ref_phi).double()
    if t.dim() == 1:
        t = t[:, None]
    if r.dim() == 2:
        r = r[..., None]
    if r.dim() != 3 or t.dim() != 2 or r.shape[1:] != t.shape:
        raise InputError(
            f"LiRA needs target_phi (N, Q) and ref_phi (R, N, Q); got {tuple(t.shape)} and {tuple(r.shape)}"
        )
    n_ref, n = r.shape[0], r.shape[1]
    if n_ref < 1:
        raise InputError("LiRA needs at least one reference model; train reference models first")
    mask_in = torch.zeros(n_ref, n, dtype=torch.bool) if ref_in_mask is None else torch.as_tensor(ref_in_mask).bool()
    if mask_in.shape != (n_ref, n):
        raise InputError(f"ref_in_mask has shape {tuple(mask_in.shape)}; expected (R, N) = {(n_ref, n)}")
    mask_out = ~mask_in
    mu_out, var_out, n_out = _masked_mean_var(r, mask_out)
    if (n_out == 0).any():
        raise InputError(
            f"{int((n_out == 0).sum())} example(s) are IN every reference model; LiRA needs OUT "
            "models for each example: train more reference models on random halves"
        )
    var_out = _fit_var(r, mask_out, mu_out, var_out, n_out, fixed_variance)
    s_out = var_out.sqrt().clamp_min(min_std)
    if variant == "offline":
        z = (t - mu_out) / s_out
        return torch.special.log_ndtr(z).mean(dim=1)
    mu_in, var_in, n_in = _masked_mean_var(r, mask_in)
    if (n_in == 0).any():
        raise InputError(
            f"{int((n_in == 0).sum())} example(s) are IN no reference model; online LiRA needs IN "
            "models for each example (balanced halves, >= 2 models) or use variant='offline'"
        )
    var_in = _fit_var(r, mask_in, mu_in, var_in, n_in, fixed_variance)
    s_in = var_in.sqrt().clamp_min(min_std)
    return (_normal_logpdf(t, mu_in, s_in) - _normal_logpdf(t, mu_out, s_out)).mean(dim=1)


def _fit_var(r, mask, mu, var, count, fixed: bool) -> torch.Tensor:
    """Per-example variances, or the global one where asked or where an example has fewer than two
    models on that side (one value has no spread)."""
    if not fixed and bool((count >= 2).all()):
        return var
    pooled = _global_var(r, mask, mu)
    if fixed:
        return pooled.expand_as(mu)
    return torch.where((count < 2)[:, None], pooled, var)


def _global_var(r: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Pooled variance of the residuals around each example's own mean (one number)."""
    m = mask.to(r.dtype).unsqueeze(-1).expand_as(r)
    resid = (r - mu.unsqueeze(0)) ** 2
    dof = (m.sum() - (mask.any(0).sum() * r.shape[2])).clamp_min(1)
    pooled = (resid * m).sum() / dof
    if pooled <= 0:  # a single model per example: fall back to the spread across examples
        pooled = r[mask.unsqueeze(-1).expand_as(r)].var() if m.sum() > 1 else torch.tensor(1.0, dtype=r.dtype)
    return pooled.reshape(1, 1)


def _normal_logpdf(x: torch.Tensor, mu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mu) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)


# ------------------------------------------------------------------- RMIA
def rmia_scores(
    target_p_x: torch.Tensor,
    ref_p_x: torch.Tensor,
    target_p_z: torch.Tensor,
    ref_p_z: torch.Tensor,
    *,
    a: float = 0.3,
    gamma: float = 1.0,
    ref_in_mask: torch.Tensor | None = None,
    ref_in_mask_z: torch.Tensor | None = None,
    variant: str = "offline",
) -> torch.Tensor:
    """RMIA scores (Zarifzadeh et al. 2024): the fraction of population samples ``z`` that ``x``
    dominates, ``score(x) = mean_z 1[ (p(x|theta)/p(x)) / (p(z|theta)/p(z)) >= gamma ]``.

    ``p(.|theta)`` is the probability the target gives the true label. ``p(x)`` is estimated from
    reference models: ``offline`` uses only models that did not train on the example and corrects
    for that with the interpolation ``p(x) = ((1 + a) * mean_out + (1 - a)) / 2`` (the paper's
    linear approximation of the missing IN models; ``a = 1`` trusts OUT models as they are);
    ``online`` averages over all reference models (IN and OUT, balanced).

    The N x Z comparison is computed exactly by sorting the z-ratios once and counting with a
    binary search (O((N + Z) log Z) time, no N x Z matrix in memory).

    Parameters
    ----------
    target_p_x : (N,) or (N, Q) target's true-label probability on candidates (Q queries are
        scored separately and averaged).
    ref_p_x : (R, N) or (R, N, Q) the same for R reference models.
    target_p_z, ref_p_z : the same for Z population samples.
    a : offline interpolation parameter in [0, 1].
    gamma : likelihood-ratio threshold (>= 1 in the paper; 1 is the default there for offline).
    ref_in_mask, ref_in_mask_z : (R, N) / (R, Z) bool, True where a reference model trained on the
        sample; None = no reference model saw it (all OUT).
    variant : ``"offline"`` or ``"online"``.

    Returns
    -------
    (N,) float64 scores in [0, 1].

    Example
    -------
    >>> rmia_scores(torch.tensor([0.9, 0.2]), torch.full((2, 2), 0.5),
    ...             torch.tensor([0.5, 0.5]), torch.full((2, 2), 0.5), a=1.0).tolist()
    [1.0, 0.0]
    """
    if variant not in RMIA_VARIANTS:
        raise InputError(f"unknown RMIA variant {variant!r}; use one of {', '.join(RMIA_VARIANTS)}")
    if not 0.0 <= a <= 1.0:
        raise InputError(f"RMIA interpolation a={a} is outside [0, 1]; the paper uses 0.2-0.6 (0.3 default)")
    if gamma <= 0:
        raise InputError(f"RMIA gamma={gamma} must be positive")
    ratio_x = _rmia_ratio(target_p_x, ref_p_x, ref_in_mask, a, variant, "x")
    ratio_z = _rmia_ratio(target_p_z, ref_p_z, ref_in_mask_z, a, variant, "z")
    if ratio_x.shape[1] != ratio_z.shape[1]:
        raise InputError("candidates and population samples must have the same number of queries Q")
    # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma (all ratios are positive)
    n_z = ratio_z.shape[0]
    z_sorted, _ = torch.sort(ratio_z, dim=0)  # (Z, Q)
    per_query = []
    for q in range(ratio_x.shape[1]):
        count = torch.searchsorted(z_sorted[:, q].contiguous(), (ratio_x[:, q] / gamma).contiguous(), right=True)
        per_query.append(count.double() / n_z)
    return torch.stack(per_query, dim=1).mean(dim=1)


def _rmia_ratio(p_t, p_ref, mask, a, variant, what):
    t = torch.as_tensor(p_t).double()
    r = torch.as_tensor(p_ref).double()
    if t.dim() == 1:
        t = t[:, None]
    if r.dim() == 2:
        r = r[..., None]
    if r.dim() != 3 or r.shape[1:] != t.shape:
        raise InputError(
            f"RMIA needs target probabilities ({what}) of shape (N, Q) and reference ones (R, N, Q); "
            f"got {tuple(t.shape)} and {tuple(r.shape)}"
        )
    if ((t < 0) | (t > 1)).any() or ((r < 0) | (r > 1)).any():
        raise InputError(f"RMIA takes probabilities in [0, 1] for {what}; apply softmax to logits first")
    n_ref, n = r.shape[0], r.shape[1]
    mask_in = torch.zeros(n_ref, n, dtype=torch.bool) if mask is None else torch.as_tensor(mask).bool()
    if mask_in.shape != (n_ref, n):
        raise InputError(f"RMIA reference mask for {what} has shape {tuple(mask_in.shape)}; expected {(n_ref, n)}")
    if variant == "online":
        prior = r.mean(0)
    else:
        out = (~mask_in).to(r.dtype).unsqueeze(-1)
        n_out = out.sum(0)
        if (n_out == 0).any():
            raise InputError(f"some {what} samples are IN every reference model; offline RMIA needs OUT models")
        prior = 0.5 * ((1.0 + a) * (r * out).sum(0) / n_out + (1.0 - a))
    return t / prior.clamp_min(1e-30)


# -------------------------------------------------------------- label only
def gaussian_noise(sigma: float, bounds: tuple[float, float] | None = None):
    """Perturbation for :func:`label_only_scores`: ``x + N(0, sigma^2)``, clipped to ``bounds``."""

    def perturb(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        out = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        return out if bounds is None else out.clamp(bounds[0], bounds[1])

    return perturb


def label_only_scores(
    labels_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_augment: int = 32,
    noise_sigma: float = 0.1,
    augmentations: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    bounds: tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Label-only membership scores (Choquette-Choo et al. 2021): the fraction of ``n_augment``
    random perturbations of ``x`` that keep the correct label, plus the clean correctness (members
    sit farther from the decision boundary, so their label is more robust).

    Parameters
    ----------
    labels_fn : batch (B, ...) -> predicted labels (B,); e.g. ``target.labels`` (queries counted).
    x, y : candidates and their labels.
    n_augment : perturbed copies per example.
    noise_sigma : standard deviation of the Gaussian noise (used when ``augmentations`` is None).
    augmentations : ``fn(x, generator) -> x'`` drawing a random augmentation per call.
    bounds : clip noisy inputs to this range.
    seed : seeds the perturbations.
    batch_size : examples x copies per call of ``labels_fn``.

    Returns
    -------
    (N,) float64 scores in [0, 1]: ``(1[clean correct] + sum_k 1[copy k correct]) / (n_augment + 1)``.
    """
    if n_augment < 1:
        raise InputError(f"n_augment={n_augment}; the label-only attack needs at least one perturbed copy")
    x = torch.as_tensor(x).float()
    y = torch.as_tensor(y).long()
    if len(x) != len(y):
        raise InputError(f"{len(x)} inputs but {len(y)} labels; give one label per input")
    perturb = augmentations or gaussian_noise(noise_sigma, bounds)
    g = torch.Generator().manual_seed(int(seed))
    copies = torch.cat([x] + [perturb(x, g) for _ in range(n_augment)])  # ((K+1) N, ...)
    preds = torch.cat([torch.as_tensor(labels_fn(copies[i : i + batch_size])).long().reshape(-1)
                       for i in range(0, len(copies), batch_size)])
    correct = (preds.reshape(n_augment + 1, len(x)) == y.unsqueeze(0)).double()
    return correct.mean(dim=0)


# ------------------------------------------------------------ query views
def image_queries(x: torch.Tensor, *, flip: bool = True, shift: int = 1) -> torch.Tensor:
    """The paper's augmented queries for images: identity and horizontal flip, each shifted by
    ``-shift..shift`` pixels along one axis at a time (reflect padding).

    Returns (Q, N, C, H, W) with the identity first; Q = (1 + flip) * (1 + 4 * (shift > 0)).
    """
    if x.dim() != 4:
        raise InputError(f"image queries need NCHW images; got shape {tuple(x.shape)} (use augment=False for tabular data)")
    bases = [x, x.flip(-1)] if flip else [x]
    views = []
    for b in bases:
        views.append(b)
        if shift > 0:
            padded = torch.nn.functional.pad(b, (shift, shift, shift, shift), mode="reflect")
            h, w = b.shape[-2:]
            for dy, dx in ((-shift, 0), (shift, 0), (0, -shift), (0, shift)):
                views.append(padded[..., shift + dy : shift + dy + h, shift + dx : shift + dx + w])
    return torch.stack(views)
