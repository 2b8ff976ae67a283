"""extraction: steal a hidden model through its probabilities; submit a surrogate as plain weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from assay.arena.challenge import ScoreResult
from assay.arena.kit import BatchedChallenge, single_thread
from assay.arena.payload import (
    array_schema,
    batch_len,
    check_keys,
    float_array,
    float_batch,
    list_schema,
    number_schema,
    object_schema,
    one_of,
)
from assay.errors import InputError

N_FEATURES, N_CLASSES, HIDDEN = 8, 3, 64
MAX_INPUTS, FEATURE_LIMIT = 500, 10.0
N_HIDDEN_EVAL = 2000
SUBMIT_COST = 50
MIN_FIDELITY = 0.94
WEIGHT_LIMIT = 1e4
SURROGATE_KEYS = ("W1", "b1", "W2", "b2", "W3", "b3")


def mlp(hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(N_FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, N_CLASSES))


def fit(net: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int, lr: float = 1e-2) -> nn.Module:
    """Full-batch Adam on cross-entropy; ``target`` is class indices or probability rows (soft labels)."""
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), target).backward()
        opt.step()
    return net.eval()


class Extraction(BatchedChallenge):
    def build(self, seed: int, workdir: Path) -> None:
        g = torch.Generator().manual_seed(seed)
        # The task the company learned: a random quadratic scoring rule per class (nonlinear, so a
        # linear copy will not do).
        quad = torch.randn((N_CLASSES, N_FEATURES, N_FEATURES), generator=g) / N_FEATURES
        lin = torch.randn((N_CLASSES, N_FEATURES), generator=g)
        x_train = torch.randn((3000, N_FEATURES), generator=g)
        y_train = (torch.einsum("nd,cde,ne->nc", x_train, quad, x_train) + x_train @ lin.T).argmax(dim=1)
        with torch.random.fork_rng(), single_thread():
            torch.manual_seed(seed)
            victim = fit(mlp(HIDDEN), x_train, y_train, 400)
        x_eval = torch.randn((N_HIDDEN_EVAL, N_FEATURES), generator=g)
        tensors = {f"victim.{k}": v.contiguous() for k, v in victim.state_dict().items()}
        tensors["x_eval"] = x_eval
        Path(workdir, "hidden.safetensors").write_bytes(st_save(tensors))

    def load(self, workdir: Path) -> None:
        tensors = st_load(Path(workdir, "hidden.safetensors").read_bytes())
        self.victim = mlp(HIDDEN)
        self.victim.load_state_dict({k[len("victim."):]: v for k, v in tensors.items() if k.startswith("victim.")})
        self.victim.eval()
        self.x_eval = tensors["x_eval"]
        with torch.no_grad():
            self.y_eval = self.victim(self.x_eval).argmax(dim=1)

    def cost(self, payload: dict[str, Any]) -> int:
        if isinstance(payload, dict) and "surrogate" in payload:
            return SUBMIT_COST
        return batch_len(payload, "inputs", max_items=MAX_INPUTS)

    def request_schema(self) -> dict[str, Any]:
        weight = number_schema(-WEIGHT_LIMIT, WEIGHT_LIMIT)
        row_h = list_schema(weight, max_items=HIDDEN)  # h numbers, the same h everywhere
        surrogate = object_schema({
            "W1": array_schema((N_FEATURES,), row_h), "b1": row_h, "W2": list_schema(row_h, max_items=HIDDEN),
            "b2": row_h, "W3": list_schema(array_schema((N_CLASSES,), weight), max_items=HIDDEN),
            "b3": array_schema((N_CLASSES,), weight),
        }, f"logits = relu(relu(x W1 + b1) W2 + b2) W3 + b3 with 1 <= h <= {HIDDEN} hidden units")
        return one_of(
            object_schema({"inputs": list_schema(array_schema((N_FEATURES,), number_schema(-FEATURE_LIMIT, FEATURE_LIMIT)),
                                                 max_items=MAX_INPUTS)},
                          f"1 to {MAX_INPUTS} applicants of {N_FEATURES} features; each costs one query"),
            object_schema({"surrogate": surrogate}, f"your copy of the model ({SUBMIT_COST} queries)"))

    def response_schema(self) -> dict[str, Any]:
        return one_of(object_schema({"probabilities": list_schema(array_schema((N_CLASSES,), number_schema(0.0, 1.0)),
                                                                  max_items=MAX_INPUTS)}),
                      object_schema({"fidelity": number_schema(0.0, 1.0)}))

    def parse(self, payload: Any):
        keys = check_keys(payload, {"inputs"}, {"surrogate"})
        if "surrogate" in keys:
            return None, parse_surrogate(payload["surrogate"])
        x = float_batch(payload["inputs"], (N_FEATURES,), "inputs", max_items=MAX_INPUTS,
                        low=-FEATURE_LIMIT, high=FEATURE_LIMIT)
        return x, x.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.victim(x), dim=1)

    def respond(self, parsed: Any, probs: torch.Tensor | None) -> ScoreResult:
        if probs is None:
            w = parsed
            h = torch.relu(torch.relu(self.x_eval @ w["W1"] + w["b1"]) @ w["W2"] + w["b2"])
            fidelity = float(((h @ w["W3"] + w["b3"]).argmax(dim=1) == self.y_eval).float().mean())
            return ScoreResult({"fidelity": round(fidelity, 2)}, solved=fidelity >= MIN_FIDELITY, cost=SUBMIT_COST)
        return ScoreResult({"probabilities": probs.tolist()}, cost=parsed)

    def artifacts(self) -> dict[str, bytes]:
        spec = {
            "inputs": f"{N_FEATURES} features, each drawn independently from N(0, 1)",
            "outputs": f"probabilities of {N_CLASSES} classes",
            "surrogate": "logits = relu(relu(x @ W1 + b1) @ W2 + b2) @ W3 + b3; "
                         f"W1 [{N_FEATURES} x h], b1 [h], W2 [h x h], b2 [h], W3 [h x {N_CLASSES}], b3 [{N_CLASSES}]; "
                         f"1 <= h <= {HIDDEN}; |weights| <= {WEIGHT_LIMIT:g}",
            "min_fidelity": MIN_FIDELITY,
        }
        return {"spec.json": json.dumps(spec, indent=1).encode()}


def parse_surrogate(value: Any) -> dict[str, torch.Tensor]:
    """Check a submitted surrogate (plain nested lists only) and return its tensors."""
    check_keys(value, set(SURROGATE_KEYS))
    b1 = value["b1"]
    if not isinstance(b1, list) or not 1 <= len(b1) <= HIDDEN:
        raise InputError(f"surrogate.b1 must be a list of h numbers with 1 <= h <= {HIDDEN}")
    h = len(b1)
    shapes = {"W1": (N_FEATURES, h), "b1": (h,), "W2": (h, h), "b2": (h,), "W3": (h, N_CLASSES), "b3": (N_CLASSES,)}
    return {k: float_array(value[k], shapes[k], f"surrogate.{k}", low=-WEIGHT_LIMIT, high=WEIGHT_LIMIT)
            for k in SURROGATE_KEYS}


CHALLENGE = Extraction


def _steal(client, n_queries: int, soft: bool, seed: int) -> dict[str, list]:
    """Query ``n_queries`` N(0, 1) inputs, distil a surrogate from the answers, export its weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n_queries, N_FEATURES), generator=g)
    probs = torch.cat([torch.tensor(client.score({"inputs": x[i : i + MAX_INPUTS].tolist()})["probabilities"])
                       for i in range(0, n_queries, MAX_INPUTS)])
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        net = fit(mlp(HIDDEN), x, probs if soft else probs.argmax(dim=1), 600)
    layers = [m for m in net if isinstance(m, nn.Linear)]
    out = {}
    for i, layer in enumerate(layers, start=1):
        out[f"W{i}"] = layer.weight.detach().T.tolist()
        out[f"b{i}"] = layer.bias.detach().tolist()
    return out


def solve(client) -> str | None:
    """Distillation: spend the budget on N(0, 1) queries, train on the full probability vectors."""
    client.score({"surrogate": _steal(client, 1900, soft=True, seed=0)})  # 1,900 + 50 of the 2,000
    return client.flag


def naive(client) -> bool:
    """A cheap copy from 300 hard labels: right most of the time, not 94% of the time."""
    client.score({"surrogate": _steal(client, 300, soft=False, seed=0)})
    return client.flag is not None
