"""Building blocks shared by the challenge pack: seeded digits CNNs, weight files, evasion goals.

Everything here is deterministic from a seed and offline (scikit-learn's bundled digits), so a
challenge's ``build`` reproduces the same bytes on every machine with the same library versions.
"""

from __future__ import annotations

import inspect
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from assay.arena.challenge import Challenge, ScoreResult
from assay.data.demo import DigitsCNN, load_digits_splits, train_classifier
from assay.errors import InputError


class BatchedChallenge(Challenge):
    """A challenge whose payloads are answered by one model: :meth:`score_batch` validates every
    payload first, then runs a single forward pass over all valid payloads' inputs.

    Subclasses implement :meth:`parse` (validation only, no model), :meth:`forward` and
    :meth:`respond`.
    """

    def parse(self, payload: Any) -> tuple[torch.Tensor | None, Any]:
        """Validate ``payload`` (raise InputError); return the inputs to evaluate (or None when the
        payload is an answer that needs no model call) and whatever :meth:`respond` needs."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def respond(self, parsed: Any, out: torch.Tensor | None) -> ScoreResult:
        raise NotImplementedError

    def score(self, payload: dict[str, Any]) -> ScoreResult:
        result = self.score_batch([payload])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def score_batch(self, payloads: list[dict[str, Any]]) -> list[ScoreResult | Exception]:
        parsed: list[tuple[torch.Tensor | None, Any] | Exception] = []
        for p in payloads:
            try:
                parsed.append(self.parse(p))
            except InputError as e:
                parsed.append(e)
        xs = [p[0] for p in parsed if not isinstance(p, Exception) and p[0] is not None]
        with torch.no_grad():
            out = self.forward(torch.cat(xs)) if xs else None
        results: list[ScoreResult | Exception] = []
        offset = 0
        for p in parsed:
            if isinstance(p, Exception):
                results.append(p)
            elif p[0] is None:
                results.append(self.respond(p[1], None))
            else:
                n = p[0].shape[0]
                results.append(self.respond(p[1], out[offset : offset + n]))
                offset += n
        return results


@contextmanager
def single_thread():
    """Train on one thread: tiny models are faster so, and the bytes do not depend on the host's
    thread count (float reductions are ordered differently with more threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_digits_cnn(seed: int, *, epochs: int = 20, noise_sigma: float = 0.0) -> tuple[DigitsCNN, Any]:
    """A :class:`DigitsCNN` trained from ``seed`` on 1000 digits (optionally with input noise)."""
    splits = load_digits_splits(seed)
    with torch.random.fork_rng(), single_thread():
        torch.manual_seed(seed)
        model = DigitsCNN()
        train_classifier(model, splits.x_train, splits.y_train, epochs=epochs, seed=seed, noise_sigma=noise_sigma)
    return model, splits


def weights_bytes(model: torch.nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (contiguous copies, stable key order)."""
    return st_save({k: v.detach().contiguous().clone() for k, v in sorted(model.state_dict().items())})


def load_digits_cnn(data: bytes) -> DigitsCNN:
    """A :class:`DigitsCNN` in eval mode from safetensors bytes (no pickle involved)."""
    model = DigitsCNN()
    model.load_state_dict(st_load(data))
    return model.eval()


def architecture_source() -> str:
    """The documented architecture players rebuild the white-box model from."""
    return (
        "# The model architecture (PyTorch). Inputs: float tensors of shape (N, 1, 8, 8) in [0, 1];\n"
        "# outputs: 10 logits (digits 0-9). Load the weights with\n"
        "#   from safetensors.torch import load_file\n"
        "#   model = DigitsCNN(); model.load_state_dict(load_file('model.safetensors')); model.eval()\n"
        "import torch\nfrom torch import nn\n\n\n" + inspect.getsource(DigitsCNN)
    )


def pick_evasion_goal(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[int, int]:
    """A held-out digit the model classifies correctly with confidence > 0.9, chosen with ``seed``,
    and as target its runner-up class (the nearest wrong class, so a modest budget suffices).

    Returns ``(index into x, target class)``.
    """
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    conf, pred = probs.max(dim=1)
    ok = ((pred == y) & (conf > 0.9)).nonzero().flatten().numpy()
    idx = int(np.random.default_rng(seed).choice(ok))
    target = int(probs[idx].topk(2).indices[1])
    return idx, target


def evasion_valid(x_adv: torch.Tensor, x0: torch.Tensor, eps: float) -> torch.Tensor:
    """Per input: within ``eps`` (L-inf, 1e-6 slack for float rounding) of ``x0``. Inputs are already
    range-checked to [0, 1] by the payload validation."""
    return (x_adv - x0).flatten(1).abs().amax(dim=1) <= eps + 1e-6


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, sort_keys=True, indent=1))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class DigitEvasionChallenge(BatchedChallenge):
    """Shared build/load of the digit evasion challenges: a seeded DigitsCNN (``model.safetensors``)
    and a goal (``goal.json``: a held-out digit ``input``, its ``label``, the ``target`` class and
    the L-inf budget ``eps``). Subclasses set ``eps`` (and ``train_noise`` for a noise-trained model)."""

    eps: float = 0.3
    train_noise: float = 0.0

    def build(self, seed: int, workdir: Path) -> None:
        model, splits = train_digits_cnn(seed, noise_sigma=self.train_noise)
        idx, target = pick_evasion_goal(model, splits.x_test, splits.y_test, seed)
        Path(workdir, "model.safetensors").write_bytes(weights_bytes(model))
        write_json(Path(workdir, "goal.json"), {
            "input": splits.x_test[idx].tolist(), "label": int(splits.y_test[idx]), "target": target, "eps": self.eps,
        })

    def load(self, workdir: Path) -> None:
        self.weights = Path(workdir, "model.safetensors").read_bytes()
        self.model = load_digits_cnn(self.weights)
        self.goal = read_json(Path(workdir, "goal.json"))
        self.x0 = torch.tensor(self.goal["input"], dtype=torch.float32)
        self.target = int(self.goal["target"])

    def goal_bytes(self) -> bytes:
        return json.dumps(self.goal, sort_keys=True).encode()


def guess_randomly(client, alphabet: str, length: int, *, distinct: bool = False, seed: int = 0) -> bool:
    """The brute-force naive attempt: send ``{"guess": <random word>}`` until solved or out of budget."""
    rng = np.random.default_rng(seed)
    while client.remaining is None or client.remaining > 0:  # None: an HTTP client before its first answer
        client.score({"guess": "".join(rng.choice(list(alphabet), length, replace=not distinct))})
        if client.flag:
            return True
    return False
