"""The space robustness is measured in, and the default epsilon grid that fits the data.

A fixed 8/255 means different things on different data: on 8-bit images it is eight grey levels,
on 17-level digits it is below one level (so even an undefended model "passes"), and on tabular
features it mixes ages with incomes. So the defaults are scaled to the data:

images (and other non-tabular arrays)
    ``q``: the data's quantization step (the smallest gap between its distinct values; 1/255 of
    the range for continuous data). 8-bit-like data (q <= 1.5/255 of the range) gets the standard
    L-inf grid {2, 4, 8}/255 of the range; coarser data gets {q/2, q, 2q}. One step ``q`` is the
    smallest meaningful change.
tabular data
    attacks run on standardized features: each feature moves in units of its own standard
    deviation (over the audit data), L-inf grid {0.05, 0.1, 0.25}; 0.01 standard deviations is the
    smallest meaningful change. The model still sees features in their own units (and bounds).

The L2 grid is the L-inf grid times ``0.575 * sqrt(d)`` (``d`` input values), which gives the
standard {0.25, 0.5, 1.0} on CIFAR-sized 8-bit images. Epsilons given explicitly are used as given,
in the same space (for tabular data: standard deviations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

L2_PER_LINF = 0.575  # 0.575 * sqrt(3 * 32 * 32) * 4/255 = 0.5, the standard CIFAR-10 pairing


def quantization_step(x: torch.Tensor, bounds: tuple[float, float], max_values: int = 1024) -> float:
    """The smallest gap between distinct input values, or 1/255 of the range when the data looks
    continuous (more than ``max_values`` distinct values in a sample)."""
    lo, hi = bounds
    width = (hi - lo) if math.isfinite(hi - lo) else float(x.max() - x.min()) or 1.0
    flat = x.reshape(-1)
    if flat.numel() > 200_000:
        flat = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:200_000]]
    values = torch.unique(flat.double())
    if len(values) < 2 or len(values) > max_values:
        return width / 255
    gaps = torch.diff(values)
    gaps = gaps[gaps > 1e-9 * width]
    return float(gaps.min()) if len(gaps) else width / 255


class _Standardized(nn.Module):
    """``z -> model(clamp(mean + std * z, bounds))``: a model on standardized features.

    The clamp passes gradients straight through: where a feature sits at its bound, a plain clamp
    would zero its gradient and stall every attack started at the surface of a large ball."""

    def __init__(self, model, mean: torch.Tensor, std: torch.Tensor, bounds: tuple[float, float]):
        super().__init__()
        self.model, self.bounds = model, bounds
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, z):
        x = self.mean.to(z.device) + self.std.to(z.device) * z
        return self.model(x + (x.clamp(*self.bounds) - x).detach())


@dataclass
class ThreatSpace:
    """Where the attacks run, what one unit of epsilon means there, and the default grids."""

    kind: str  # "input" (images: the inputs themselves) or "standardized" (tabular)
    bounds: tuple[float, float]  # the attack space's bounds
    linf: list[float]
    meaningful: float  # the smallest change that can matter (one grey level, 0.01 sd)
    unit: str  # how to read an epsilon
    dims: int
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    input_bounds: tuple[float, float] = (0.0, 1.0)

    def grid(self, norm: str) -> list[float]:
        return list(self.linf) if norm == "linf" else [e * L2_PER_LINF * math.sqrt(self.dims) for e in self.linf]

    def to_space(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "input":
            return x
        return torch.where(self.std > 0, (x - self.mean) / self.std.clamp(min=1e-12), torch.zeros_like(x))

    def to_input(self, z: torch.Tensor) -> torch.Tensor:
        if self.kind == "input":
            return z
        return (self.mean + self.std * z).clamp(*self.input_bounds)

    def wrap_module(self, model):
        return model if self.kind == "input" else _Standardized(model, self.mean, self.std, self.input_bounds)

    def wrap_fn(self, fn):
        return fn if self.kind == "input" else (lambda z: fn(self.to_input(z)))

    def unbounded_eps(self, norm: str) -> float:
        """A budget no honest model resists: the whole range (or 10 standard deviations)."""
        lo, hi = self.bounds
        width = (hi - lo) if math.isfinite(hi - lo) else 10.0
        return width if norm == "linf" else width * math.sqrt(self.dims)

    def describe(self) -> dict:
        return {"space": self.kind, "unit": self.unit, "smallest_meaningful_change": self.meaningful}


def threat_space(data, bounds: tuple[float, float]) -> ThreatSpace:
    """The space and default grid for ``data`` (see the module doc)."""
    x = data.x
    dims = int(x[0].numel())
    if getattr(data, "kind", "") == "tabular" or x.dim() == 2:
        std = x.std(dim=0, keepdim=True)
        std = torch.where(torch.isfinite(std), std, torch.zeros_like(std))
        return ThreatSpace("standardized", (-math.inf, math.inf), [0.05, 0.1, 0.25], 0.01,
                           "per-feature standard deviations", dims, x.mean(dim=0, keepdim=True), std, bounds)
    lo, hi = bounds
    width = (hi - lo) if math.isfinite(hi - lo) else float(x.max() - x.min()) or 1.0
    q = quantization_step(x, bounds)
    if q <= 1.5 * width / 255:
        grid = [2 * width / 255, 4 * width / 255, 8 * width / 255]
        unit = "input units (8-bit-like data: {2, 4, 8}/255 of the range)"
    else:
        grid = [q / 2, q, 2 * q]
        unit = f"input units (coarse data, one level = {q:.4g}: half a level, one, two)"
    return ThreatSpace("input", bounds, grid, q, unit, dims, input_bounds=bounds)
