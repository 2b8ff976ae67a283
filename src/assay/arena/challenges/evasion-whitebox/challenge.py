"""evasion-whitebox: a targeted L-inf adversarial example against a model whose weights are public."""

from __future__ import annotations

import json
from typing import Any

import torch

from assay.arena.challenge import ScoreResult
from assay.arena.kit import DigitEvasionChallenge, architecture_source, evasion_valid
from assay.arena.payload import array_schema, check_keys, float_array, integer_schema, number_schema, object_schema

SHAPE = (1, 8, 8)


class WhiteboxEvasion(DigitEvasionChallenge):
    def request_schema(self) -> dict[str, Any]:
        return object_schema({"input": array_schema(SHAPE, number_schema(0.0, 1.0))}, "one scan, pixels in [0, 1]")

    def response_schema(self) -> dict[str, Any]:
        return object_schema({"prediction": integer_schema(0, 9),
                              "probabilities": array_schema((10,), number_schema(0.0, 1.0)),
                              "linf": number_schema(0.0), "within_eps": {"type": "boolean"}})

    def parse(self, payload: Any):
        check_keys(payload, {"input"})
        x = float_array(payload["input"], SHAPE, "input", low=0.0, high=1.0)
        return x[None], x[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)

    def respond(self, x: torch.Tensor, probs: torch.Tensor) -> ScoreResult:
        pred = int(probs[0].argmax())
        linf = float((x[0] - self.x0).abs().max())
        within = bool(evasion_valid(x, self.x0[None], self.eps)[0])
        return ScoreResult(
            {"prediction": pred, "probabilities": probs[0].tolist(), "linf": round(linf, 6),
             "within_eps": within},
            solved=within and pred == self.target,
        )

    def artifacts(self) -> dict[str, bytes]:
        return {
            "model.safetensors": self.weights,
            "model.py": architecture_source().encode(),
            "goal.json": self.goal_bytes(),
        }


CHALLENGE = WhiteboxEvasion


def solve(client) -> str | None:
    """Targeted PGD on the downloaded weights, then one submission."""
    from assay.arena.kit import load_digits_cnn
    from assay.attacks.gradient import pgd
    from assay.targets import TorchTarget

    goal = json.loads(client.artifact("goal.json"))
    target = TorchTarget(load_digits_cnn(client.artifact("model.safetensors")), input_shape=SHAPE, num_classes=10, device="cpu")
    x0 = torch.tensor(goal["input"], dtype=torch.float32)[None]
    y_target = torch.tensor([goal["target"]])
    res = pgd(target.module, x0, torch.tensor([goal["label"]]), eps=goal["eps"], steps=100, targeted=True,
              y_target=y_target, restarts=2, seed=0)
    client.score({"input": res.x_adv[0].clamp(0, 1).tolist()})
    return client.flag


def naive(client) -> bool:
    """Uniform random noise of the full budget, a few times: does not move a confident digit."""
    goal = json.loads(client.artifact("goal.json"))
    x0 = torch.tensor(goal["input"], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        noise = (torch.rand(x0.shape, generator=g) * 2 - 1) * goal["eps"]
        client.score({"input": (x0 + noise).clamp(0, 1).tolist()})
        if client.flag:
            return True
    return False
