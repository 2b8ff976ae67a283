"""The plain, seeded training loop assay uses wherever it trains a classifier itself (the demo,
reference models for membership attacks, shadow and surrogate models, the arena's challenges)."""

from __future__ import annotations

import torch
from torch import nn


def train_classifier(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    seed: int = 0,
    noise_sigma: float = 0.0,
) -> nn.Module:
    """Plain seeded Adam training loop (``noise_sigma`` > 0 adds Gaussian input noise)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(x)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb = x[idx]
            if noise_sigma > 0:
                xb = xb + noise_sigma * torch.randn(xb.shape, generator=g)
            opt.zero_grad()
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
    return model.eval()
