"""evasion-blackbox: a targeted L-inf adversarial example through a scores-only API with a budget."""

from __future__ import annotations

import json
from typing import Any

import torch

from assay.arena.challenge import ScoreResult
from assay.arena.kit import DigitEvasionChallenge, evasion_valid
from assay.arena.payload import batch_len, check_keys, float_batch

SHAPE = (1, 8, 8)
MAX_INPUTS = 100


class BlackboxEvasion(DigitEvasionChallenge):
    eps = 0.2  # at 0.3 about 1 in 300 random +-eps corners already hits the target

    def cost(self, payload: dict[str, Any]) -> int:
        return batch_len(payload, "inputs")

    def parse(self, payload: Any):
        check_keys(payload, {"inputs"})
        x = float_batch(payload["inputs"], SHAPE, "inputs", max_items=MAX_INPUTS, low=0.0, high=1.0)
        return x, x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)

    def respond(self, x: torch.Tensor, probs: torch.Tensor) -> ScoreResult:
        hit = evasion_valid(x, self.x0[None], self.eps) & (probs.argmax(dim=1) == self.target)
        return ScoreResult(
            {"probabilities": probs.tolist()},
            solved=bool(hit.any()),
            cost=x.shape[0],
        )

    def artifacts(self) -> dict[str, bytes]:
        return {"goal.json": self.goal_bytes()}


CHALLENGE = BlackboxEvasion


def _margin(log_probs: torch.Tensor, target: int) -> torch.Tensor:
    """Targeted margin loss on scores: target score minus the best other score (> 0: success)."""
    others = log_probs.clone()
    others[:, target] = -torch.inf
    return log_probs[:, target] - others.max(dim=1).values


def _square_search(scores_fn, x0: torch.Tensor, target: int, eps: float, n_queries: int, seed: int = 0) -> torch.Tensor:
    """Minimal score-based random search in the spirit of the Square attack (Andriushchenko et al.
    2020), for one input: start at a random corner of the eps-box, then propose moving one random
    square window to a random corner (+-eps per window), windows shrinking from 3x3 to 1x1 over
    the budget; keep a proposal when it raises the targeted margin. One query per proposal."""
    g = torch.Generator().manual_seed(seed)
    side = x0.shape[-1]
    x = (x0 + eps * torch.randn(x0.shape, generator=g).sign()).clamp(0, 1)
    best = _margin(scores_fn(x), target)
    for q in range(1, n_queries):
        if best.item() > 0:
            break
        w = max(1, round(3 * (1 - q / n_queries)))
        i, j = (int(v) for v in torch.randint(0, side - w + 1, (2,), generator=g))
        proposal = x.clone()
        sign = 2.0 * torch.randint(0, 2, (x0.shape[1], 1, 1), generator=g) - 1.0
        proposal[..., i : i + w, j : j + w] = (x0[..., i : i + w, j : j + w] + eps * sign).clamp(0, 1)
        m = _margin(scores_fn(proposal), target)
        if m > best:
            x, best = proposal, m
    return x


def solve(client) -> str | None:
    """Score-based random search (Square-attack style) through the API, within the budget.

    ``assay.attacks.square`` had not landed when this pack was written; this minimal search does
    the same job for one 8x8 input."""
    goal = json.loads(client.artifact("goal.json"))
    x0 = torch.tensor(goal["input"], dtype=torch.float32)[None]

    def scores_fn(x: torch.Tensor) -> torch.Tensor:
        out = client.score({"inputs": x.clamp(0, 1).tolist()})
        return torch.tensor(out["probabilities"], dtype=torch.float64).clamp_min(1e-30).log()

    _square_search(scores_fn, x0, goal["target"], goal["eps"], n_queries=client.remaining)
    return client.flag


def naive(client) -> bool:
    """500 random corners of the eps-box (every pixel moved by +-eps): noise does not find the
    target class."""
    goal = json.loads(client.artifact("goal.json"))
    x0 = torch.tensor(goal["input"], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        noise = torch.randn((MAX_INPUTS, *x0.shape), generator=g).sign() * goal["eps"]
        client.score({"inputs": (x0 + noise).clamp(0, 1).tolist()})
        if client.flag:
            return True
    return False
