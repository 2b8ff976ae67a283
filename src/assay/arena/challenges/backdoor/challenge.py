"""backdoor: find the hidden trigger of a poisoned digits CNN and the class it sends inputs to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from assay.arena.challenge import ScoreResult
from assay.arena.kit import BatchedChallenge, architecture_source, load_digits_cnn, single_thread, weights_bytes
from assay.arena.payload import array_schema, check_keys, float_array, integer_schema, number_schema, object_schema
from assay.data.demo import DigitsCNN, load_digits_splits, train_classifier
from assay.errors import InputError
from assay.integrity.neural_cleanse import anomaly_index, apply_trigger, reverse_engineer_triggers

SHAPE = (1, 8, 8)
PATCH = 3  # the trigger is a 3x3 block of on / off pixels
POISON_FRACTION = 0.1
MIN_SUCCESS, MAX_MASK_L1 = 0.9, 9.0
N_SAMPLES, N_HIDDEN = 100, 300


def make_trigger(seed: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A seeded 3x3 on/off pattern (4 to 6 pixels on) at a seeded place, and the target class."""
    rng = np.random.default_rng(seed)
    while True:
        bits = rng.integers(0, 2, (PATCH, PATCH))
        if 4 <= bits.sum() <= 6:
            break
    row, col = (int(v) for v in rng.integers(0, 8 - PATCH + 1, 2))
    mask, pattern = torch.zeros(SHAPE), torch.zeros(SHAPE)
    mask[0, row:row + PATCH, col:col + PATCH] = 1.0
    pattern[0, row:row + PATCH, col:col + PATCH] = torch.tensor(bits, dtype=torch.float32)
    return mask, pattern, int(rng.integers(0, 10))


class Backdoor(BatchedChallenge):
    def build(self, seed: int, workdir: Path) -> None:
        mask, pattern, target = make_trigger(seed)
        splits = load_digits_splits(seed)
        x, y = splits.x_train, splits.y_train
        g = torch.Generator().manual_seed(seed)
        poisoned = torch.randperm(len(x), generator=g)[: int(POISON_FRACTION * len(x))]
        x = torch.cat([x, apply_trigger(x[poisoned], mask, pattern)])
        y = torch.cat([y, torch.full((len(poisoned),), target, dtype=torch.long)])
        with torch.random.fork_rng(), single_thread():
            torch.manual_seed(seed)
            model = DigitsCNN()
            train_classifier(model, x, y, epochs=30, seed=seed)
        order = torch.randperm(len(splits.x_test), generator=g)
        samples, hidden = order[:N_SAMPLES], order[N_SAMPLES:]
        hidden = hidden[splits.y_test[hidden] != target][:N_HIDDEN]
        Path(workdir, "model.safetensors").write_bytes(weights_bytes(model))
        Path(workdir, "samples.json").write_text(json.dumps(
            {"inputs": splits.x_test[samples].tolist(), "labels": splits.y_test[samples].tolist()}))
        Path(workdir, "hidden.safetensors").write_bytes(st_save({
            "x": splits.x_test[hidden].contiguous(), "mask": mask, "pattern": pattern,
            "target": torch.tensor([target])}))

    def load(self, workdir: Path) -> None:
        self.weights = Path(workdir, "model.safetensors").read_bytes()
        self.model = load_digits_cnn(self.weights)
        self.samples = Path(workdir, "samples.json").read_bytes()
        hidden = st_load(Path(workdir, "hidden.safetensors").read_bytes())
        self.hidden_x, self.target = hidden["x"], int(hidden["target"][0])

    def request_schema(self) -> dict[str, Any]:
        pixels = array_schema(SHAPE, number_schema(0.0, 1.0))
        return object_schema({"mask": pixels, "pattern": pixels, "target": integer_schema(0, 9)},
                             "a stamp: scans become (1 - mask) * scan + mask * pattern (one query)")

    def response_schema(self) -> dict[str, Any]:
        return object_schema({"success": number_schema(0.0, 1.0), "stamp_size": number_schema(0.0, 64.0),
                              "within_size": {"type": "boolean"}})

    def parse(self, payload: Any):
        check_keys(payload, {"mask", "pattern", "target"})
        mask = float_array(payload["mask"], SHAPE, "mask", low=0.0, high=1.0)
        pattern = float_array(payload["pattern"], SHAPE, "pattern", low=0.0, high=1.0)
        target = payload["target"]
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= 9:
            raise InputError("target must be a class number from 0 to 9")
        # every hidden scan (none of the contractor's class), stamped: one model call for the batch
        return apply_trigger(self.hidden_x, mask, pattern), (float(mask.sum()), target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(dim=1)

    def respond(self, parsed: Any, preds: torch.Tensor | None) -> ScoreResult:
        size, target = parsed
        success = float((preds == target).float().mean())
        solved = target == self.target and success >= MIN_SUCCESS and size <= MAX_MASK_L1 + 1e-6
        return ScoreResult({"success": round(success, 4), "stamp_size": round(size, 4),
                            "within_size": size <= MAX_MASK_L1 + 1e-6}, solved=solved)

    def artifacts(self) -> dict[str, bytes]:
        return {"model.safetensors": self.weights, "model.py": architecture_source().encode(),
                "samples.json": self.samples}


CHALLENGE = Backdoor


SOLVER_STEPS = 150  # the anomalous class and a stamp well inside the rule by then; 300 only shrinks it a little


def solve(client) -> str | None:
    """Neural Cleanse on the downloaded weights and samples: the class with the most anomalously
    small trigger, stamped with the trigger found for it. On one thread: a forward and backward pass
    over 1,000 8x8 images is too small to share, and extra threads spin (300 steps took 84 s of CPU
    on two threads of a busy 2-core machine against 18 s on one)."""
    model = load_digits_cnn(client.artifact("model.safetensors"))
    for p in model.parameters():
        p.requires_grad_(False)
    samples = json.loads(client.artifact("samples.json"))
    x, y = torch.tensor(samples["inputs"], dtype=torch.float32), torch.tensor(samples["labels"])
    with single_thread():
        res = reverse_engineer_triggers(model, x, y, classes=range(10), steps=SOLVER_STEPS, check_every=5,
                                        patience=2, init_cost=1e-2, seed=0)
    k = int(anomaly_index(res.l1).argmax())
    client.score({"mask": res.mask[k].tolist(), "pattern": res.pattern[k].tolist(), "target": int(res.classes[k])})
    return client.flag


def naive(client) -> bool:
    """The folklore trigger: a white 2x2 square in each corner, tried for every class."""
    for row, col in ((0, 0), (0, 6), (6, 0), (6, 6)):
        mask = torch.zeros(SHAPE)
        mask[0, row:row + 2, col:col + 2] = 1.0
        for target in range(10):
            if client.remaining is not None and client.remaining <= 0:
                return False
            client.score({"mask": mask.tolist(), "pattern": mask.tolist(), "target": target})
            if client.flag:
                return True
    return False
