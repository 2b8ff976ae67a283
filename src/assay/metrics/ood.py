"""Out-of-distribution detection: can the model's own outputs tell new kinds of input apart?

Scores follow one convention: **higher means more in-distribution (ID)**.

- ``msp``: maximum softmax probability (Hendrycks & Gimpel 2017).
- ``energy``: ``T * logsumexp(logits / T)``, the negative free energy ``-E(x)`` (Liu et al. 2020).
- ``ash``: energy after ASH-S activation shaping (Djurisic et al. 2023): the input ``a`` of the last
  linear layer (the penultimate activations) is pruned below its per-sample ``percentile``, and the
  survivors are scaled by ``exp(sum(a) / sum(pruned a))``; the logits are recomputed through the
  last layer and scored by energy. Needs a white-box torch model.

Detection quality: ``AUROC`` (probability that a random ID input outscores a random OOD one, ties
counted half) and ``FPR at 95% TPR`` (the fraction of OOD inputs accepted at the threshold that
keeps 95% of ID inputs). Both take row weights for vectorised bootstrap intervals (ID and OOD rows
resampled separately).

When no OOD set is given, :func:`shifted_copy` builds one from the test inputs (documented in
docs/reliability.md): ``permute`` applies one fixed random permutation to the features/pixels of
every input (same value histogram, structure destroyed), ``noise`` adds Gaussian noise of
``sigma = 0.5 * (high - low)`` and clips to the bounds, ``uniform`` draws inputs uniformly in bounds.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from assay.errors import InputError, TargetError
from assay.stats import percentile_interval, row_bootstrap_weights


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.double(), dim=1).max(1).values


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative free energy ``T logsumexp(logits / T)`` (higher = more in-distribution)."""
    return temperature * torch.logsumexp(logits.double() / temperature, dim=1)


def ash_s(activations: torch.Tensor, percentile: float = 90.0) -> torch.Tensor:
    """ASH-S: keep each sample's activations at or above its ``percentile``, zero the rest, and scale
    the kept ones by ``exp(s1 / s2)`` (``s1``, ``s2``: sums before and after pruning).

    >>> ash_s(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), 50).tolist()  # keeps 3, 4; scale exp(10 / 7)
    [[0.0, 0.0, 12.518..., 16.690...]]
    """
    flat = activations.reshape(len(activations), -1)
    k = flat.shape[1] - int(np.round(flat.shape[1] * percentile / 100.0))  # values kept per sample
    k = max(k, 1)
    thresh = flat.topk(k, dim=1).values[:, -1:]
    pruned = torch.where(flat >= thresh, flat, torch.zeros_like(flat))
    s1, s2 = flat.sum(1, keepdim=True), pruned.sum(1, keepdim=True)
    scale = torch.exp(s1 / s2.clamp_min(1e-12))
    return (pruned * scale).reshape(activations.shape)


def last_linear(module: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in registration order: the classifier head whose input is the
    penultimate representation."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TargetError("ASH needs a torch model whose last layer is nn.Linear; use the msp / energy scores instead")
    return linears[-1]


@torch.no_grad()
def ash_logits(module: nn.Module, x: torch.Tensor, percentile: float = 90.0, batch_size: int = 256) -> torch.Tensor:
    """Logits with ASH-S applied to the last linear layer's input, via a forward hook (one pass)."""
    head = last_linear(module)

    def reshape_head(mod, inputs, output):
        return nn.functional.linear(ash_s(inputs[0], percentile), mod.weight, mod.bias)

    handle = head.register_forward_hook(reshape_head)
    try:
        return torch.cat([module(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        handle.remove()


def shifted_copy(x: torch.Tensor, kind: str = "permute", *, seed: int = 0, bounds=(0.0, 1.0)) -> torch.Tensor:
    """A distribution-shifted copy of ``x`` to serve as the OOD set (see module docstring)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = bounds
    if kind == "permute":
        flat = x.reshape(len(x), -1)
        perm = torch.randperm(flat.shape[1], generator=g)
        return flat[:, perm].reshape(x.shape).clone()
    if kind == "noise":
        return (x + 0.5 * (hi - lo) * torch.randn(x.shape, generator=g)).clamp(lo, hi)
    if kind == "uniform":
        return lo + (hi - lo) * torch.rand(x.shape, generator=g)
    raise InputError(f"shift={kind!r}; use 'permute', 'noise' or 'uniform'")


class DetectionTerms:
    """AUROC and FPR at a TPR for ID vs OOD scores, for any row weights."""

    def __init__(self, id_scores, ood_scores):
        a = np.asarray(id_scores, np.float64).reshape(-1)
        b = np.asarray(ood_scores, np.float64).reshape(-1)
        if len(a) == 0 or len(b) == 0:
            raise InputError("need both in-distribution and OOD scores to measure detection")
        self.id_order = np.argsort(a, kind="stable")
        self.id_sorted = a[self.id_order]
        self.ood = b
        self.ood_order = np.argsort(b, kind="stable")
        self.ood_sorted = b[self.ood_order]
        # for each OOD score: ID rows below / at-or-below it, in the ID sort order
        self.lo = np.searchsorted(self.id_sorted, b, side="left")
        self.hi = np.searchsorted(self.id_sorted, b, side="right")

    def evaluate(self, w_id: np.ndarray, w_ood: np.ndarray, tpr: float = 0.95) -> dict[str, np.ndarray]:
        wi = w_id[:, self.id_order]
        cum = np.concatenate([np.zeros((len(wi), 1)), np.cumsum(wi, 1)], 1)
        tot_id = cum[:, -1:]
        greater = tot_id - cum[:, self.hi]
        equal = cum[:, self.hi] - cum[:, self.lo]
        tot_ood = w_ood.sum(1)
        auroc = (w_ood * (greater + 0.5 * equal)).sum(1) / (tot_id[:, 0] * tot_ood)
        # threshold: the largest ID score s with weight(ID >= s) >= tpr * total
        above = tot_id - cum[:, :-1]  # weight of ID rows at index >= j (sorted ascending)
        ok = above >= tpr * tot_id - 1e-9
        j = ok.shape[1] - 1 - np.argmax(ok[:, ::-1], axis=1)
        thresh = self.id_sorted[j]
        wo = w_ood[:, self.ood_order]
        cum_o = np.concatenate([np.zeros((len(wo), 1)), np.cumsum(wo, 1)], 1)
        start = np.searchsorted(self.ood_sorted, thresh, side="left")
        fpr = (cum_o[:, -1] - cum_o[np.arange(len(wo)), start]) / tot_ood
        return {"auroc": auroc, "fpr_at_tpr": fpr}

    def point(self, tpr: float = 0.95) -> dict[str, float]:
        v = self.evaluate(np.ones((1, len(self.id_sorted))), np.ones((1, len(self.ood))), tpr)
        return {k: float(x[0]) for k, x in v.items()}

    def bootstrap(self, tpr=0.95, n_boot=1000, level=0.95, seed=0):
        rng = np.random.default_rng(seed)
        n, m = len(self.id_sorted), len(self.ood)
        w_id = np.concatenate(list(row_bootstrap_weights(n, n_boot, rng)))
        w_ood = np.concatenate(list(row_bootstrap_weights(m, n_boot, rng)))
        v = self.evaluate(w_id, w_ood, tpr)
        return {k: tuple(float(q) for q in percentile_interval(x, level)) for k, x in v.items()}


def auroc(id_scores, ood_scores) -> float:
    """P(ID score > OOD score) + 0.5 P(tie).

    >>> auroc([3, 2, 1], [0, 1])
    0.9166666666666666
    """
    return DetectionTerms(id_scores, ood_scores).point()["auroc"]


def fpr_at_tpr(id_scores, ood_scores, tpr: float = 0.95) -> float:
    """Fraction of OOD inputs scored at or above the threshold that accepts ``tpr`` of ID inputs."""
    return DetectionTerms(id_scores, ood_scores).point(tpr)["fpr_at_tpr"]
