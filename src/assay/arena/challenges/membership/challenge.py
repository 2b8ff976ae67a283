"""membership: pick the training records of an overfit model out of 200 candidates (TPR at low FPR)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.arena.challenge import ScoreResult
from assay.arena.kit import BatchedChallenge, read_json, write_json
from assay.arena.payload import (
    array_schema,
    batch_len,
    check_keys,
    float_batch,
    int_list,
    integer_schema,
    list_schema,
    number_schema,
    object_schema,
    one_of,
)

N_FEATURES = 20
N_MEMBERS = 100
N_CANDIDATES = 200
FEATURE_LIMIT = 10.0
BANDWIDTH = 4.0  # gamma of the Gaussian units: exp(-gamma * ||x - c||^2 / d)
PRIOR = 0.05  # smoothing mass per class, so far-away inputs get near-uniform probabilities
ANSWER_COST = 10
MIN_TPR, MAX_FALSE_PICKS = 0.5, 5


def make_records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes in 20 dimensions with 10% label noise."""
    centres = np.random.default_rng(7).normal(0.0, 1.0, (2, N_FEATURES)) * 0.5
    y = rng.integers(0, 2, n)
    x = centres[y] + rng.normal(0.0, 1.0, (n, N_FEATURES))
    y = np.where(rng.random(n) < 0.1, 1 - y, y)
    return x.astype(np.float32), y.astype(np.int64)


class Membership(BatchedChallenge):
    def build(self, seed: int, workdir: Path) -> None:
        rng = np.random.default_rng(seed)
        x, y = make_records(rng, N_CANDIDATES)  # the first N_MEMBERS are the training set
        order = rng.permutation(N_CANDIDATES)  # candidate id -> record
        write_json(Path(workdir, "hidden.json"), {
            "train_x": x[:N_MEMBERS].tolist(), "train_y": y[:N_MEMBERS].tolist(),
            "member_ids": sorted(int(i) for i in np.flatnonzero(order < N_MEMBERS)),
        })
        write_json(Path(workdir, "candidates.json"), [
            {"id": i, "features": x[r].tolist(), "label": int(y[r])} for i, r in enumerate(order)
        ])

    def load(self, workdir: Path) -> None:
        hidden = read_json(Path(workdir, "hidden.json"))
        self.centres = torch.tensor(hidden["train_x"], dtype=torch.float32)
        self.readout = torch.nn.functional.one_hot(torch.tensor(hidden["train_y"]), 2).float()
        self.members = set(hidden["member_ids"])
        self.candidates = Path(workdir, "candidates.json").read_bytes()

    def cost(self, payload: dict[str, Any]) -> int:
        if isinstance(payload, dict) and "members" in payload:
            return ANSWER_COST
        return batch_len(payload, "inputs", max_items=N_CANDIDATES)

    def request_schema(self) -> dict[str, Any]:
        return one_of(
            object_schema({"inputs": list_schema(array_schema((N_FEATURES,), number_schema(-FEATURE_LIMIT, FEATURE_LIMIT)),
                                                 max_items=N_CANDIDATES)},
                          f"1 to {N_CANDIDATES} records of {N_FEATURES} features; each costs one query"),
            object_schema({"members": list_schema(integer_schema(0, N_CANDIDATES - 1), min_items=0,
                                                  max_items=N_CANDIDATES, unique=True)},
                          f"your answer: the candidate ids you think were trained on ({ANSWER_COST} queries)"))

    def response_schema(self) -> dict[str, Any]:
        return one_of(object_schema({"probabilities": list_schema(array_schema((2,), number_schema(0.0, 1.0)),
                                                                  max_items=N_CANDIDATES)}),
                      object_schema({"accepted": {"type": "boolean"}}))

    def parse(self, payload: Any):
        keys = check_keys(payload, {"inputs"}, {"members"})
        if "members" in keys:
            return None, int_list(payload["members"], "members", low=0, high=N_CANDIDATES - 1, max_items=N_CANDIDATES)
        x = float_batch(payload["inputs"], (N_FEATURES,), "inputs", max_items=N_CANDIDATES,
                        low=-FEATURE_LIMIT, high=FEATURE_LIMIT)
        return x, x.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activations = torch.exp(-BANDWIDTH * torch.cdist(x, self.centres) ** 2 / N_FEATURES)
        mass = activations @ self.readout + PRIOR
        return mass / mass.sum(dim=1, keepdim=True)

    def respond(self, parsed: Any, probs: torch.Tensor | None) -> ScoreResult:
        if probs is None:
            picked = set(parsed)
            true_picks, false_picks = len(picked & self.members), len(picked - self.members)
            ok = true_picks >= MIN_TPR * N_MEMBERS and false_picks <= MAX_FALSE_PICKS
            return ScoreResult({"accepted": ok}, solved=ok, cost=ANSWER_COST)
        return ScoreResult({"probabilities": probs.tolist()}, cost=parsed)

    def artifacts(self) -> dict[str, bytes]:
        return {"candidates.json": self.candidates}


CHALLENGE = Membership


def solve(client) -> str | None:
    """Loss-threshold attack: query every candidate once, rank by the probability of its recorded
    label, name the 55 most confident (a little over half of the expected 100 members)."""
    candidates = json.loads(client.artifact("candidates.json"))
    out = client.score({"inputs": [c["features"] for c in candidates]})
    probs = torch.tensor(out["probabilities"])
    labels = torch.tensor([c["label"] for c in candidates])
    loss = -probs[torch.arange(len(candidates)), labels].clamp_min(1e-12).log()
    picks = loss.argsort()[:55]
    client.score({"members": [candidates[i]["id"] for i in picks.tolist()]})
    return client.flag


def naive(client) -> bool:
    """"The model knows its training data": name every candidate it classifies correctly."""
    candidates = json.loads(client.artifact("candidates.json"))
    out = client.score({"inputs": [c["features"] for c in candidates]})
    preds = torch.tensor(out["probabilities"]).argmax(dim=1).tolist()
    client.score({"members": [c["id"] for c, p in zip(candidates, preds) if p == c["label"]]})
    return client.flag is not None
