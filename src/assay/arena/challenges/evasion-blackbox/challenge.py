"""evasion-blackbox: a targeted L-inf adversarial example through a scores-only API with a budget."""

from __future__ import annotations

import json
from typing import Any

import torch

from assay.arena.challenge import ScoreResult
from assay.arena.kit import DigitEvasionChallenge, evasion_valid
from assay.arena.payload import (
    array_schema,
    batch_len,
    check_keys,
    float_batch,
    list_schema,
    number_schema,
    object_schema,
)

SHAPE = (1, 8, 8)
MAX_INPUTS = 100
QUERIES = 2900  # what the reference solver allows itself of the 3,000-query budget


class BlackboxEvasion(DigitEvasionChallenge):
    eps = 0.2  # at 0.3 about 1 in 300 random +-eps corners already hits the target

    def cost(self, payload: dict[str, Any]) -> int:
        return batch_len(payload, "inputs", max_items=MAX_INPUTS)

    def request_schema(self) -> dict[str, Any]:
        return object_schema({"inputs": list_schema(array_schema(SHAPE, number_schema(0.0, 1.0)), max_items=MAX_INPUTS)},
                             f"1 to {MAX_INPUTS} scans, pixels in [0, 1]; each costs one query")

    def response_schema(self) -> dict[str, Any]:
        return object_schema({"probabilities": list_schema(array_schema((10,), number_schema(0.0, 1.0)),
                                                           max_items=MAX_INPUTS)})

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


def solve(client) -> str | None:
    """Targeted Square attack (score-based random search, Andriushchenko et al. 2020) through the
    API, capped at the queries left."""
    from assay.attacks.square import square

    goal = json.loads(client.artifact("goal.json"))
    x0 = torch.tensor(goal["input"], dtype=torch.float32)[None]

    def scores_fn(x: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(0, x.shape[0], MAX_INPUTS):
            rows += client.score({"inputs": x[i : i + MAX_INPUTS].clamp(0, 1).tolist()})["probabilities"]
        return torch.tensor(rows, dtype=torch.float64).clamp_min(1e-30).log().float()

    square(scores_fn, x0, torch.tensor([goal["label"]]), eps=goal["eps"], targeted=True,
           y_target=torch.tensor([goal["target"]]), n_queries=QUERIES, query_budget=QUERIES, seed=0)
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
