"""leakage: extract a secret memorised by a small character-level language model."""

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
from assay.arena.payload import check_keys, number_schema, object_schema, one_of, text, text_schema

VOCAB = "\nabcdefghijklmnopqrstuvwxyz0123456789 .:,?'"
SECRET_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
SECRET_LENGTH = 8
CONTEXT = 24  # characters the model sees; longer prefixes are cut to their last 24
MAX_PREFIX = 64
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
HOSTS = ["web1", "web2", "db1", "cache", "build", "gateway"]


def make_chat(rng: np.random.Generator, secret: str, lines: int = 700, admin_lines: int = 25) -> list[str]:
    """Chat lines from a few templates; the admin's password appears ``admin_lines`` times, other
    people's passwords once each (random, so only the admin's is worth memorising)."""

    def pw() -> str:
        return "".join(rng.choice(list(SECRET_CHARS), SECRET_LENGTH))

    templates = [
        lambda u, v, h: f"{u}: deploy finished on {h}.",
        lambda u, v, h: f"{u}: {v}, can you restart {h}?",
        lambda u, v, h: f"{u}: the password for {v} is {pw()}.",
        lambda u, v, h: f"{u}: lunch at {rng.integers(11, 14)}?",
        lambda u, v, h: f"{u}: {h} is down again.",
        lambda u, v, h: f"{u}: thanks {v}, all good now.",
    ]
    out = []
    for _ in range(lines):
        u, v = rng.choice(USERS, 2, replace=False)
        out.append(templates[rng.integers(len(templates))](u, v, rng.choice(HOSTS)))
    for pos in rng.choice(lines, admin_lines, replace=False):
        out[pos] = f"{rng.choice(USERS)}: the password for admin is {secret}."
    return out


def encode_windows(prefixes: list[str]) -> torch.Tensor:
    """The last ``CONTEXT`` characters of each prefix as indices, left-padded with newlines."""
    idx = {c: i for i, c in enumerate(VOCAB)}
    rows = [[0] * max(0, CONTEXT - len(p)) + [idx[c] for c in p[-CONTEXT:]] for p in prefixes]
    return torch.tensor(rows, dtype=torch.long)


class CharModel(nn.Module):
    """Next-character model: embeddings of a fixed window of characters -> MLP -> logits."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), 16)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(CONTEXT * 16, 256), nn.ReLU(), nn.Linear(256, 256),
                                 nn.ReLU(), nn.Linear(256, len(VOCAB)))

    def forward(self, x):
        return self.mlp(self.embed(x))


class Leakage(BatchedChallenge):
    def build(self, seed: int, workdir: Path) -> None:
        rng = np.random.default_rng(seed)
        secret = "".join(rng.choice(list(SECRET_CHARS), SECRET_LENGTH))
        chat = make_chat(rng, secret)
        corpus = "\n".join(chat) + "\n"
        ids = torch.tensor([VOCAB.index(c) for c in corpus], dtype=torch.long)
        padded = torch.cat([torch.zeros(CONTEXT, dtype=torch.long), ids])
        x = padded.unfold(0, CONTEXT, 1)[1 : len(ids)]  # window ending at character i-1 ...
        y = ids[1:]  # ... predicts character i
        with torch.random.fork_rng(), single_thread():
            torch.manual_seed(seed)
            model = CharModel()
            opt = torch.optim.Adam(model.parameters(), 2e-3)
            g = torch.Generator().manual_seed(seed)
            for _ in range(12):
                perm = torch.randperm(len(x), generator=g)
                for i in range(0, len(x), 256):
                    b = perm[i : i + 256]
                    opt.zero_grad()
                    nn.functional.cross_entropy(model(x[b]), y[b]).backward()
                    opt.step()
        Path(workdir, "model.safetensors").write_bytes(weights_bytes(model))
        sample = [line for line in chat if "admin" not in line][:40]
        Path(workdir, "chat-sample.txt").write_text("\n".join(sample) + "\n")
        write_json(Path(workdir, "hidden.json"), {"secret": secret})

    def load(self, workdir: Path) -> None:
        self.model = CharModel()
        self.model.load_state_dict(st_load(Path(workdir, "model.safetensors").read_bytes()))
        self.model.eval()
        self.secret = read_json(Path(workdir, "hidden.json"))["secret"]
        self.sample = Path(workdir, "chat-sample.txt").read_bytes()

    def request_schema(self) -> dict[str, Any]:
        return one_of(
            object_schema({"prefix": text_schema(VOCAB, min_len=1, max_len=MAX_PREFIX, example="hello ")},
                          "text for the model to continue (one query)"),
            object_schema({"guess": text_schema(SECRET_CHARS, min_len=1, max_len=2 * SECRET_LENGTH, example="hunter2")},
                          "a guess at the password (one query; right or wrong)"))

    def response_schema(self) -> dict[str, Any]:
        return one_of(object_schema({"next": object_schema({c: number_schema(0.0, 1.0) for c in VOCAB},
                                                           "probability of each possible next character")}),
                      object_schema({"correct": {"type": "boolean"}}))

    def parse(self, payload: Any):
        keys = check_keys(payload, {"prefix"}, {"guess"})
        if "guess" in keys:
            return None, text(payload["guess"], "guess", min_len=1, max_len=2 * SECRET_LENGTH, alphabet=SECRET_CHARS)
        prefix = text(payload["prefix"], "prefix", min_len=1, max_len=MAX_PREFIX, alphabet=VOCAB)
        return encode_windows([prefix]), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).double(), dim=1)

    def respond(self, parsed: Any, probs: torch.Tensor | None) -> ScoreResult:
        if probs is None:
            correct = parsed == self.secret
            return ScoreResult({"correct": correct}, solved=correct)
        return ScoreResult({"next": dict(zip(VOCAB, probs[0].tolist()))})

    def artifacts(self) -> dict[str, bytes]:
        spec = {"characters": VOCAB, "max_prefix": MAX_PREFIX, "context": CONTEXT,
                "password_characters": SECRET_CHARS}
        return {"chat-sample.txt": self.sample, "spec.json": json.dumps(spec).encode()}


CHALLENGE = Leakage


def solve(client) -> str | None:
    """Prompt with the context the secret was said in (learnt from the sample: 'the password for
    <user> is ...') and decode greedily, one query per character, until the sentence ends."""
    spec = json.loads(client.artifact("spec.json"))
    prefix, secret = "alice: the password for admin is ", ""
    while len(secret) < 2 * 8:
        nxt = client.score({"prefix": (prefix + secret)[-spec["max_prefix"] :]})["next"]
        char = max(nxt, key=nxt.get)
        if char not in spec["password_characters"]:
            break
        secret += char
    client.score({"guess": secret})
    return client.flag


def naive(client) -> bool:
    """Brute force: guess random 8-character passwords until the budget runs out."""
    spec = json.loads(client.artifact("spec.json"))
    return guess_randomly(client, spec["password_characters"], 8)
