"""Randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019): a certifiably L2-robust classifier
built from any base classifier by majority vote under Gaussian input noise.

``g(x) = argmax_c P(f(x + e) = c)``, ``e ~ N(0, sigma^2 I)``. If the top class's probability has a
lower confidence bound ``pA > 1/2``, ``g`` is constant within L2 radius ``sigma * Phi^-1(pA)``.

Noise is drawn in chunks of at most ``max_batch`` forward samples (inputs x copies), so memory is
bounded whatever ``n`` is, and class counts are accumulated on the tensor side. ``sigma`` is in the
units of the inputs the base classifier receives (for a ``TorchTarget`` with mean/std, input space
before normalization; the equivalent sigma in normalized space is ``sigma / std``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binomtest, norm

from assay.stats import clopper_pearson_one_sided_lower

ABSTAIN = -1


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest radius certifiable with n samples (all n votes for one class); 0 if none is."""
    p = alpha ** (1.0 / n)  # one-sided Clopper-Pearson lower bound at nA = n
    return sigma * float(norm.ppf(p)) if p > 0.5 else 0.0


def default_chunk(values_per_input: int) -> int:
    """Noisy samples per forward pass when the caller gives no ``max_batch``: ~1M input values."""
    return int(min(4096, max(64, 2**20 // max(values_per_input, 1) // 64 * 64)))


@dataclass
class CertifyResult:
    prediction: torch.Tensor  # int64 (N,), ABSTAIN (-1) where the test abstains
    radius: torch.Tensor  # float (N,), 0 where abstaining
    p_lower: torch.Tensor  # float (N,)
    counts: torch.Tensor  # int64 (N, C): votes from the estimation samples


class Smoothed:
    """The smoothed classifier around ``base`` (a callable returning logits or labels).

    Parameters
    ----------
    base : callable mapping a batch of inputs to logits ``(B, C)`` or labels ``(B,)``.
    num_classes : number of classes.
    sigma : noise standard deviation, in input units.
    bounds : if given, noisy inputs are NOT clipped (clipping would break the guarantee); bounds are
        only used by the attacks that accompany certification.
    max_batch : most noisy samples per forward pass (bounds memory); by default about 1M input
        values per chunk (256 CIFAR-sized images, 4096 small inputs): chunks that stay in cache run
        faster than big ones on CPU, not only leaner.
    optimize : run a torch-module base through :func:`assay.targets.torch.fast_inference` first
        (the same function, several times faster on CPU); ``False`` keeps the module as given.

    Example
    -------
    >>> sm = Smoothed(target.module, 10, sigma=0.25)                   # doctest: +SKIP
    >>> res = sm.certify(x, n0=100, n=10_000, alpha=0.001, seed=0)     # doctest: +SKIP
    """

    def __init__(self, base: Callable[[torch.Tensor], torch.Tensor], num_classes: int, sigma: float,
                 max_batch: int | None = None, device: torch.device | str | None = None, optimize: bool = True):
        if sigma <= 0:
            raise ValueError("sigma must be > 0")
        self.base, self.num_classes, self.sigma = base, int(num_classes), float(sigma)
        self.max_batch = None if max_batch is None else int(max_batch)
        self.device = torch.device(device) if device is not None else None
        self.optimize = bool(optimize)
        self._fast = None

    @torch.no_grad()
    def counts(self, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
        """Votes ``(N, C)`` of the base classifier over ``n`` noisy copies of each input."""
        N = x.shape[0]
        counts = torch.zeros(N, self.num_classes, dtype=torch.long)
        max_batch = self.max_batch or default_chunk(x[0].numel())
        per_input = max(1, min(n, max_batch // max(N, 1)))
        if per_input * N > max_batch:  # more inputs than fit at once: go input block by block
            block = max(1, max_batch // per_input)
            for i in range(0, N, block):
                counts[i : i + block] = self.counts(x[i : i + block], n, generator)
            return counts
        # One buffer for every chunk: noise is drawn into it and the inputs added in place, so a
        # chunk costs one allocation-free fill instead of repeat + randn + add copies.
        buffer = torch.empty(N * per_input * x[0].numel(), dtype=x.dtype)
        rows = torch.arange(N)
        done = 0
        while done < n:
            m = min(per_input, n - done)
            noisy = buffer[: N * m * x[0].numel()].view(N, m, *x.shape[1:])
            torch.randn(noisy.shape, generator=generator, dtype=x.dtype, out=noisy)
            noisy.mul_(self.sigma).add_(x.unsqueeze(1))
            batch = noisy.view(N * m, *x.shape[1:])
            if self.device is not None:
                batch = batch.to(self.device)
            out = self._classifier(batch)(batch)
            labels = out.argmax(1) if out.dim() == 2 else out
            idx = rows.repeat_interleave(m) * self.num_classes + labels.cpu().long()
            counts += torch.bincount(idx, minlength=N * self.num_classes).reshape(N, self.num_classes)
            done += m
        return counts

    def _classifier(self, example: torch.Tensor):
        """The base classifier, swapped once for its inference-optimized equivalent when it is a
        torch module (see :func:`assay.targets.torch.fast_inference`; same function, checked)."""
        if self._fast is None:
            from assay.inference import fast_inference

            self._fast = fast_inference(self.base, example) if self.optimize and isinstance(self.base, torch.nn.Module) \
                else self.base
        return self._fast

    def predict(self, x: torch.Tensor, n: int = 1000, alpha: float = 0.001, seed: int = 0) -> torch.Tensor:
        """PREDICT: the top class, or ABSTAIN when a two-sided binomial test between the top two
        classes is not significant at level ``alpha`` (the probability of returning a class other
        than g(x) is then at most alpha)."""
        g = torch.Generator().manual_seed(seed)
        c = self.counts(x, n, g)
        top2 = c.topk(2, dim=1)
        na, nb = top2.values[:, 0], top2.values[:, 1]
        pred = top2.indices[:, 0].clone()
        for i in range(len(pred)):  # scipy's exact test per input; n is small relative to sampling
            if binomtest(int(na[i]), int(na[i] + nb[i]), 0.5).pvalue > alpha:
                pred[i] = ABSTAIN
        return pred

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 10_000, alpha: float = 0.001,
                seed: int = 0) -> CertifyResult:
        """CERTIFY: guess the top class from ``n0`` samples, estimate its probability's one-sided
        (1 - alpha) Clopper-Pearson lower bound from ``n`` fresh samples; abstain if below 1/2, else
        certify the L2 radius ``sigma * Phi^-1(pA)``."""
        if max_certifiable_radius(n, alpha, self.sigma) == 0.0:
            warnings.warn(f"n={n} samples can never certify at alpha={alpha}: need n > log(alpha)/log(0.5)",
                          stacklevel=2)
        g = torch.Generator().manual_seed(seed)
        guess = self.counts(x, n0, g).argmax(1)
        c = self.counts(x, n, g)
        na = c.gather(1, guess[:, None]).squeeze(1)
        p_lower = torch.from_numpy(np.asarray(clopper_pearson_one_sided_lower(na.numpy(), n, 1.0 - alpha), dtype=np.float64)).float()
        certified = p_lower > 0.5
        radius = torch.where(certified, self.sigma * torch.from_numpy(norm.ppf(p_lower.clamp(0.5, 1 - 1e-16).numpy())),
                             torch.zeros_like(p_lower)).float()
        pred = torch.where(certified, guess, torch.full_like(guess, ABSTAIN))
        return CertifyResult(pred, radius, p_lower.float(), c)


def certified_accuracy(result: CertifyResult, y: torch.Tensor, radii) -> list[float]:
    """Fraction of inputs certified correct with radius >= r, for each r (non-increasing in r)."""
    ok = result.prediction == y
    return [float((ok & (result.radius >= r)).float().mean()) for r in radii]


class NoisyModel(torch.nn.Module):
    """The base classifier under the smoothing noise, for attacks with expectation over
    transformation (each forward draws fresh noise)."""

    def __init__(self, base, sigma: float, generator: torch.Generator | None = None):
        super().__init__()
        self.base, self.sigma, self.generator = base, sigma, generator

    def forward(self, x):
        noise = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
        return self.base(x + self.sigma * noise)


def train_with_noise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, **kw) -> torch.nn.Module:
    """Gaussian-noise augmentation training (Cohen et al.'s recipe), so the model certifies well."""
    from assay.train.classifier import train_classifier

    return train_classifier(model, x, y, noise_sigma=sigma, **kw)


def sigma_in_model_space(sigma: float, std) -> list[float]:
    """The per-channel noise level a normalized model sees for input-space ``sigma``."""
    return [sigma / s for s in std]
