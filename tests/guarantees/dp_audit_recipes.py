"""Training recipes for the DP-audit tests, imported by name ("dp_audit_recipes:private").

Tiny linear models on 40-dimensional Gaussian blobs: memorising a mislabeled canary is easy for
the non-private recipe and masked by noise for the DP one.
"""

import torch
from torch import nn

from assay.train import train_dp

# DP recipe settings: the claim the tests audit is the accountant's epsilon for exactly these
NOISE, EPOCHS, BATCH, LR = 1.2, 4, 50, 0.5


def blobs(seed: int = 0, n: int = 120, d: int = 40, c: int = 4):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g)
    y = torch.arange(n) % c
    return centers[y] + torch.randn(n, d, generator=g), y


def private(x, y, seed):
    torch.manual_seed(seed)  # the initialisation is the recipe's: seed it too
    return train_dp(nn.Linear(x.shape[1], 4), x, y, noise_multiplier=NOISE, epochs=EPOCHS, batch_size=BATCH,
                    lr=LR, seed=seed, delta=1e-5).model


def nonprivate(x, y, seed):
    """Plain full-batch Adam: no clipping, no noise (the recipe that falsely claims privacy)."""
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def two_args(x, y):
    return nn.Linear(x.shape[1], 4)


NOT_CALLABLE = 3
