"""inversion: recover the secret word a character classifier was trained on, by probing its classes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from torch import nn

from assay.arena.challenge import ScoreResult
from assay.arena.kit import BatchedChallenge, guess_randomly, read_json, single_thread, weights_bytes, write_json
from assay.arena.payload import (
    array_schema,
    batch_len,
    check_keys,
    float_batch,
    list_schema,
    number_schema,
    object_schema,
    one_of,
    text,
    text_schema,
)
from assay.data.demo import train_classifier

SIZE = 12
WORD_LENGTH = 6
MAX_INPUTS = 50
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

# A 5x7 dot-matrix font: each glyph is 7 rows of 5 columns ('#' = ink), read row by row.
FONT_5X7 = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...#####.#...##...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....####.#....#....#....#####", "F": "######....####.#....#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...###..##.#.##..###...##...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
}


def glyph(char: str) -> torch.Tensor:
    """The 7x5 ink mask of ``char``."""
    return torch.tensor([c == "#" for c in FONT_5X7[char]], dtype=torch.float32).reshape(7, 5)


def render(chars: list[str], g: torch.Generator | None = None) -> torch.Tensor:
    """Cards ``(N, 1, 12, 12)``: centred and clean without ``g``; with ``g`` at a random position,
    ink intensity 0.6-1, 10% of the ink dropped and Gaussian noise (sigma 0.05), clipped to [0, 1]."""
    n = len(chars)
    out = torch.zeros((n, 1, SIZE, SIZE))
    masks = torch.stack([glyph(c) for c in chars])
    if g is None:
        dy, dx, ink = torch.full((n,), 2), torch.full((n,), 3), torch.ones(n)
    else:
        dy = torch.randint(0, SIZE - 7 + 1, (n,), generator=g)
        dx = torch.randint(0, SIZE - 5 + 1, (n,), generator=g)
        ink = 0.6 + 0.4 * torch.rand(n, generator=g)
        masks = masks * (torch.rand(masks.shape, generator=g) > 0.1)
    for i in range(n):  # build-time only: placing n small glyphs
        out[i, 0, dy[i] : dy[i] + 7, dx[i] : dx[i] + 5] = masks[i] * ink[i]
    if g is not None:
        out = (out + 0.05 * torch.randn(out.shape, generator=g)).clamp(0.0, 1.0)
    return out


class CardReader(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 6 * 6, 64), nn.ReLU(), nn.Linear(64, num_classes),
        )

    def forward(self, x):
        return self.net(x)


class Inversion(BatchedChallenge):
    def build(self, seed: int, workdir: Path) -> None:
        rng = np.random.default_rng(seed)
        word = "".join(rng.choice(list(ALPHABET), WORD_LENGTH, replace=False))
        g = torch.Generator().manual_seed(seed)
        # Classes 0..L-1: the passphrase's characters in order; class L: "not a passphrase character",
        # trained on the other glyphs so the reader rejects them.
        others = [c for c in ALPHABET if c not in word]
        labels = torch.arange(WORD_LENGTH + 1).repeat(300)
        other_pick = torch.randint(0, len(others), (len(labels),), generator=g)
        chars = [word[k] if k < WORD_LENGTH else others[j] for k, j in zip(labels.tolist(), other_pick.tolist())]
        x = render(chars, g)
        with torch.random.fork_rng(), single_thread():
            torch.manual_seed(seed)
            model = train_classifier(CardReader(WORD_LENGTH + 1), x, labels, epochs=8, seed=seed)
        Path(workdir, "reader.safetensors").write_bytes(weights_bytes(model))
        write_json(Path(workdir, "hidden.json"), {"word": word})

    def load(self, workdir: Path) -> None:
        self.model = CardReader(WORD_LENGTH + 1)
        self.model.load_state_dict(st_load(Path(workdir, "reader.safetensors").read_bytes()))
        self.model.eval()
        self.word = read_json(Path(workdir, "hidden.json"))["word"]

    def cost(self, payload: dict[str, Any]) -> int:
        return batch_len(payload, "inputs", max_items=MAX_INPUTS)

    def request_schema(self) -> dict[str, Any]:
        return one_of(
            object_schema({"inputs": list_schema(array_schema((1, SIZE, SIZE), number_schema(0.0, 1.0)),
                                                 max_items=MAX_INPUTS)},
                          f"1 to {MAX_INPUTS} cards, pixels in [0, 1]; each costs one query"),
            object_schema({"guess": text_schema(ALPHABET, min_len=1, max_len=WORD_LENGTH, example="ABC123")},
                          "a guess at the passphrase (one query; right or wrong)"))

    def response_schema(self) -> dict[str, Any]:
        return one_of(object_schema({"probabilities": list_schema(array_schema((WORD_LENGTH + 1,), number_schema(0.0, 1.0)),
                                                                  max_items=MAX_INPUTS)}),
                      object_schema({"correct": {"type": "boolean"}}))

    def parse(self, payload: Any):
        keys = check_keys(payload, {"inputs"}, {"guess"})
        if "guess" in keys:
            return None, text(payload["guess"], "guess", max_len=WORD_LENGTH, min_len=1, alphabet=ALPHABET)
        x = float_batch(payload["inputs"], (1, SIZE, SIZE), "inputs", max_items=MAX_INPUTS, low=0.0, high=1.0)
        return x, x.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float64 so that confident answers keep their resolution (no exact 1.0 / 0.0)
        return torch.softmax(self.model(x).double(), dim=1)

    def respond(self, parsed: Any, probs: torch.Tensor | None) -> ScoreResult:
        if probs is None:
            correct = parsed == self.word
            return ScoreResult({"correct": correct}, solved=correct)
        return ScoreResult({"probabilities": probs.tolist()}, cost=parsed)

    def artifacts(self) -> dict[str, bytes]:
        spec = {"image": [1, SIZE, SIZE], "value_range": [0.0, 1.0], "num_classes": WORD_LENGTH + 1,
                "classes": f"0..{WORD_LENGTH - 1}: the passphrase's characters in order; {WORD_LENGTH}: not one of them",
                "alphabet": ALPHABET, "glyph": "7 rows x 5 columns, '#' = ink, read row by row"}
        return {"font.json": json.dumps(FONT_5X7, indent=0).encode(), "spec.json": json.dumps(spec).encode()}


CHALLENGE = Inversion


def _render_from_font(font: dict[str, str], chars: str, dy: int, dx: int) -> list:
    cards = np.zeros((len(chars), 1, SIZE, SIZE))
    for i, c in enumerate(chars):
        cards[i, 0, dy : dy + 7, dx : dx + 5] = np.array([ch == "#" for ch in font[c]], dtype=float).reshape(7, 5)
    return cards.tolist()


def solve(client) -> str | None:
    """Oracle probing: render every glyph of the font at a few positions, query the class scores,
    average the log-probabilities per glyph, and read the word off the best one-to-one assignment
    of glyphs to classes (each class's score-maximising glyph)."""
    from scipy.optimize import linear_sum_assignment

    font = json.loads(client.artifact("font.json"))
    spec = json.loads(client.artifact("spec.json"))
    chars = spec["alphabet"]
    length = spec["num_classes"] - 1  # the last class rejects characters outside the passphrase
    logp = torch.zeros((len(chars), length), dtype=torch.float64)
    for dy, dx in ((1, 2), (2, 3), (3, 4)):
        cards = _render_from_font(font, chars, dy, dx)
        probs = torch.cat([torch.tensor(client.score({"inputs": cards[i : i + MAX_INPUTS]})["probabilities"], dtype=torch.float64)
                           for i in range(0, len(cards), MAX_INPUTS)])
        logp += probs[:, :length].clamp_min(1e-300).log()
    glyph_idx, class_idx = linear_sum_assignment(-logp.numpy())
    word = "".join(chars[g] for g, _ in sorted(zip(glyph_idx, class_idx), key=lambda gc: gc[1]))
    client.score({"guess": word})
    return client.flag


def naive(client) -> bool:
    """Brute force: guess random passphrases until the budget runs out."""
    spec = json.loads(client.artifact("spec.json"))
    return guess_randomly(client, spec["alphabet"], spec["num_classes"] - 1, distinct=True)
