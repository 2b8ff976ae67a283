"""poisoning: slip at most 10 points into a retraining set to flip one target's prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from assay.arena.challenge import Challenge, ScoreResult
from assay.arena.kit import read_json, write_json
from assay.arena.payload import (
    array_schema,
    check_keys,
    float_array,
    integer_schema,
    list_schema,
    number_schema,
    object_schema,
)
from assay.errors import InputError

N_FEATURES, MAX_POINTS, C = 5, 10, 10.0
MIN_ACCURACY = 0.90


def make_records(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes around 0.35 and 0.65 per feature, clipped to [0, 1]."""
    y = rng.integers(0, 2, n)
    x = np.clip(np.where(y[:, None] == 1, 0.65, 0.35) + rng.normal(0.0, 0.15, (n, N_FEATURES)), 0.0, 1.0)
    return x, y


def retrain(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """The office's training recipe (deterministic: lbfgs from zeros)."""
    return LogisticRegression(C=C).fit(x, y)


class Poisoning(Challenge):
    def build(self, seed: int, workdir: Path) -> None:
        rng = np.random.default_rng(seed)
        x, y = make_records(rng, 200)
        x_val, y_val = make_records(rng, 200)
        x_pool, y_pool = make_records(rng, 200)
        p1 = retrain(x, y).predict_proba(x_pool)[:, 1]
        # A rejected applicant, clearly but not extremely on the wrong side (P(approve) in 5-20%).
        t = int(rng.choice(np.flatnonzero((y_pool == 0) & (p1 > 0.05) & (p1 < 0.2))))
        write_json(Path(workdir, "task.json"), {
            "train": [{"features": f.tolist(), "label": int(c)} for f, c in zip(x, y)],
            "target": {"features": x_pool[t].tolist(), "label": 0},
            "desired_label": 1, "max_points": MAX_POINTS, "min_validation_accuracy": MIN_ACCURACY,
            "recipe": f"sklearn.linear_model.LogisticRegression(C={C}) fitted on train + your points",
        })
        write_json(Path(workdir, "hidden.json"), {"x_val": x_val.tolist(), "y_val": y_val.tolist()})

    def load(self, workdir: Path) -> None:
        self.task_bytes = Path(workdir, "task.json").read_bytes()
        task = json.loads(self.task_bytes)
        self.x = np.array([r["features"] for r in task["train"]])
        self.y = np.array([r["label"] for r in task["train"]])
        self.target = np.array(task["target"]["features"])
        hidden = read_json(Path(workdir, "hidden.json"))
        self.x_val, self.y_val = np.array(hidden["x_val"]), np.array(hidden["y_val"])

    def request_schema(self) -> dict[str, Any]:
        point = object_schema({"features": array_schema((N_FEATURES,), number_schema(0.0, 1.0)),
                               "label": integer_schema(0, 1)})
        return object_schema({"points": list_schema(point, max_items=MAX_POINTS)},
                             f"1 to {MAX_POINTS} applications slipped into tonight's retraining (one query)")

    def response_schema(self) -> dict[str, Any]:
        return object_schema({"target_prediction": integer_schema(0, 1), "validation_accuracy": number_schema(0.0, 1.0)})

    def score(self, payload: dict[str, Any]) -> ScoreResult:
        x_p, y_p = parse_points(payload)
        model = retrain(np.vstack([self.x, x_p]), np.concatenate([self.y, y_p]))
        pred = int(model.predict(self.target[None])[0])
        accuracy = float(model.score(self.x_val, self.y_val))
        return ScoreResult(
            {"target_prediction": pred, "validation_accuracy": round(accuracy, 3)},
            solved=pred == 1 and accuracy >= MIN_ACCURACY,
        )

    def artifacts(self) -> dict[str, bytes]:
        return {"task.json": self.task_bytes}


def parse_points(payload: Any) -> tuple[np.ndarray, np.ndarray]:
    check_keys(payload, {"points"})
    points = payload["points"]
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        raise InputError(f"points must be a list of 1 to {MAX_POINTS} points")
    xs, ys = [], []
    for i, p in enumerate(points):
        check_keys(p, {"features", "label"})
        label = p["label"]
        if isinstance(label, bool) or label not in (0, 1):
            raise InputError(f"points[{i}].label must be 0 or 1, got {label!r}")
        xs.append(float_array(p["features"], (N_FEATURES,), f"points[{i}].features", low=0.0, high=1.0).double().numpy())
        ys.append(int(label))
    return np.stack(xs), np.array(ys)


CHALLENGE = Poisoning


def solve(client) -> str | None:
    """Feature collision with a flipped label, rehearsed offline with the public recipe: 10 points
    labelled 1 on the target, or pushed a little past it (away from class 1, where they pull the
    boundary hardest), at the smallest push that flips the rehearsal; then one submission."""
    task = json.loads(client.artifact("task.json"))
    x = np.array([r["features"] for r in task["train"]])
    y = np.array([r["label"] for r in task["train"]])
    target, k = np.array(task["target"]["features"]), task["max_points"]
    w = retrain(x, y).coef_[0]
    away = -w / np.linalg.norm(w)
    for push in np.linspace(0.0, 0.5, 11):
        poison = np.repeat(np.clip(target + push * away, 0.0, 1.0)[None], k, axis=0)
        if retrain(np.vstack([x, poison]), np.concatenate([y, np.ones(k, int)])).predict(target[None])[0] == 1:
            break
    client.score({"points": [{"features": p.tolist(), "label": 1} for p in poison]})
    return client.flag


def naive(client) -> bool:
    """Label flipping without aim: ten random training points relabelled 'approve'."""
    task = json.loads(client.artifact("task.json"))
    rng = np.random.default_rng(0)
    rows = [task["train"][i] for i in rng.choice(len(task["train"]), task["max_points"], replace=False)]
    client.score({"points": [{"features": r["features"], "label": 1} for r in rows]})
    return client.flag is not None
