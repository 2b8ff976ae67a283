"""Judging models whose outputs are random (noise defences, dropout at test time).

One forward pass of such a model is one draw of a random classifier: an adversarial input that is
misclassified once may have been a lucky draw, and a clean accuracy from one pass changes from run
to run. Both are judged over fresh draws instead:

- a point is *classified* as the majority of its draws (ties count against the model);
- an attack's success is *confirmed* only when the adversarial input is misclassified in more than
  half of ``draws`` fresh draws with a one-sided binomial test at ``alpha`` (H0: it is misclassified
  at most half the time), so chance streaks do not count as breaks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.stats import binom


@dataclass
class DrawVotes:
    wrong: torch.Tensor  # (N,) draws that misclassified each input
    draws: int

    @property
    def majority_wrong(self) -> torch.Tensor:
        return 2 * self.wrong >= self.draws  # a tie is not a correct classification

    def confirmed(self, alpha: float = 0.05) -> torch.Tensor:
        """Misclassified in more than half the draws, significantly (one-sided binomial test)."""
        p = binom.sf(self.wrong.numpy() - 1, self.draws, 0.5)  # P(X >= wrong | p = 1/2)
        return torch.from_numpy(p < alpha) & (2 * self.wrong > self.draws)


@torch.no_grad()
def vote(model, x: torch.Tensor, y: torch.Tensor, draws: int = 25, batch_size: int = 256) -> DrawVotes:
    """Count, for each input, the draws of ``model`` that do not predict ``y``."""
    if draws < 1:
        raise ValueError("draws must be >= 1")
    wrong = torch.zeros(len(x), dtype=torch.long)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        for _ in range(draws):
            wrong[i:i + len(xb)] += (model(xb).argmax(1).cpu() != yb.cpu()).long()
    return DrawVotes(wrong, draws)
