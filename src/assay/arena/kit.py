"""Building blocks shared by the challenge pack: seeded digits CNNs, weight files, evasion goals,
and for language-model challenges :func:`llm_generate` (generation batched across players) and
:class:`LLMChallenge` (per-player system prompts, query and generated-token budgets).

Everything here is deterministic from a seed and offline (scikit-learn's bundled digits), so a
challenge's ``build`` reproduces the same bytes on every machine with the same library versions.
"""

from __future__ import annotations

import inspect
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from assay.arena.challenge import Caller, Challenge, ScoreResult
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


# --------------------------------------------------------------------------- language models
class GenerationBatcher:
    """Merges concurrent generations on one model into batched ``generate`` calls.

    Any thread calls :meth:`generate`; the first caller waits ``window_s`` for company, then runs
    ONE ``target.generate`` over every waiting request with the same settings (up to
    ``max_prompts`` prompts) and hands each request its own slice of the outputs. Callers arriving
    while a batch runs form the next one. Generation is greedy, so a prompt's output does not
    depend on what else is in its batch (the engine pads on the left and masks the padding).
    """

    def __init__(self, target, *, window_s: float = 0.005, max_prompts: int = 32, enabled: bool = True):
        import threading

        self.target, self.window_s, self.max_prompts, self.enabled = target, window_s, max_prompts, enabled
        self._queue: list[dict[str, Any]] = []
        self._queue_lock = threading.Lock()
        self._run_lock = threading.Lock()
        self.batches: list[int] = []  # prompts per generate call, for tests and the benchmark

    def generate(self, prompts: list, *, max_new_tokens: int, chat: bool = True, stop: list[str] | None = None):
        import threading

        prompts = list(prompts)
        if not prompts:
            return []
        key = (int(max_new_tokens), bool(chat), tuple(stop or ()))
        if not self.enabled:
            with self._run_lock:
                self.batches.append(len(prompts))
                return self._call(prompts, key)
        req = {"prompts": prompts, "key": key, "done": threading.Event(), "out": None, "error": None}
        with self._queue_lock:
            self._queue.append(req)
        while not req["done"].is_set():
            if self._run_lock.acquire(blocking=False):
                try:
                    if not req["done"].is_set():
                        time.sleep(self.window_s)  # let concurrent requests join this batch
                        self._run_one_batch()
                finally:
                    self._run_lock.release()
            else:
                req["done"].wait(0.002)
        if req["error"] is not None:
            raise req["error"]
        return req["out"]

    def _call(self, prompts, key):
        max_new_tokens, chat, stop = key
        return self.target.generate(prompts, max_new_tokens=max_new_tokens, chat=chat, stop=list(stop))

    def _run_one_batch(self) -> None:
        with self._queue_lock:
            if not self._queue:
                return
            key = self._queue[0]["key"]
            batch, rest, n = [], [], 0
            for r in self._queue:
                if r["key"] == key and (not batch or n + len(r["prompts"]) <= self.max_prompts):
                    batch.append(r)
                    n += len(r["prompts"])
                else:
                    rest.append(r)
            self._queue = rest
        self.batches.append(n)
        try:
            outs = self._call([p for r in batch for p in r["prompts"]], key)
        except BaseException as e:  # every request of the batch fails with the model's error
            for r in batch:
                r["error"] = e
                r["done"].set()
            return
        i = 0
        for r in batch:
            r["out"], i = outs[i: i + len(r["prompts"])], i + len(r["prompts"])
            r["done"].set()


_BATCHERS: dict[int, GenerationBatcher] = {}
GENERATION_BATCHING = {"enabled": True, "window_s": 0.005, "max_prompts": 32}


def generation_batcher(target) -> GenerationBatcher:
    """The batcher of ``target`` (one per model object and process)."""
    b = _BATCHERS.get(id(target))
    if b is None or b.target is not target:
        b = _BATCHERS[id(target)] = GenerationBatcher(target, **GENERATION_BATCHING)
    return b


def configure_generation_batching(*, enabled: bool = True, window_ms: float = 5.0, max_prompts: int = 32) -> None:
    """Switch batching across callers on or off (benchmarks compare both) for batchers made from now on."""
    GENERATION_BATCHING.update(enabled=enabled, window_s=window_ms / 1000.0, max_prompts=max_prompts)
    _BATCHERS.clear()


def llm_generate(target, prompts: list, *, max_new_tokens: int, chat: bool = True, stop: list[str] | None = None):
    """THE way a challenge generates text: greedy continuations of ``prompts`` (chat messages or
    strings) by ``target`` (a :class:`~assay.targets.llm.LanguageModelTarget`), merged with other
    players' concurrent requests into one batched generate. Returns one
    :class:`~assay.targets.llm.Completion` per prompt, in order; ``completion_tokens`` is what the
    caller charges against the player's token budget (:attr:`ScoreResult.tokens`)."""
    return generation_batcher(target).generate(prompts, max_new_tokens=max_new_tokens, chat=chat, stop=stop)


class LLMChallenge(Challenge):
    """A challenge answered by a chat model, per player. Payload: ``{"prompt": str}`` or
    ``{"messages": [{"role": "user"|"assistant", "content": str}, ...]}``, optionally
    ``"max_new_tokens"`` (1 to :attr:`max_new_tokens`, the default). Each payload costs one query
    and reserves its ``max_new_tokens`` from the player's token budget (manifest ``token_budget``);
    what the model did not generate is given back.

    Subclasses set ``self.lm`` in ``load`` and implement :meth:`system_prompt` (per player: made
    from ``caller.secret``) and :meth:`judge`. All valid payloads of a scoring group are answered
    by one :func:`llm_generate` call.
    """

    max_new_tokens: int = 48
    max_prompt_chars: int = 2000
    lm: Any = None

    def system_prompt(self, caller: Caller) -> str | None:
        return None

    def judge(self, caller: Caller, reply: str) -> tuple[dict[str, Any], bool]:
        """The player's output (never the secret or a flag) and whether the goal was met."""
        raise NotImplementedError

    def parse(self, payload: dict[str, Any]) -> tuple[list[dict[str, str]], int]:
        if not isinstance(payload, dict):
            raise InputError("payload must be a JSON object with 'prompt' or 'messages'")
        n = payload.get("max_new_tokens", self.max_new_tokens)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= self.max_new_tokens:
            raise InputError(f"max_new_tokens must be an integer from 1 to {self.max_new_tokens}")
        if "messages" in payload:
            msgs = payload["messages"]
            if not (isinstance(msgs, list) and 1 <= len(msgs) <= 16 and all(
                    isinstance(m, dict) and set(m) == {"role", "content"} and m["role"] in ("user", "assistant")
                    and isinstance(m["content"], str) for m in msgs)) or msgs[-1]["role"] != "user":
                raise InputError("messages must be 1 to 16 {'role': 'user'|'assistant', 'content': str} objects "
                                 "ending with a user message (the system prompt is the challenge's)")
        elif isinstance(payload.get("prompt"), str):
            msgs = [{"role": "user", "content": payload["prompt"]}]
        else:
            raise InputError("payload needs 'prompt' (a string) or 'messages'")
        if sum(len(m["content"]) for m in msgs) > self.max_prompt_chars:
            raise InputError(f"the prompt is longer than {self.max_prompt_chars} characters")
        return [dict(m) for m in msgs], n

    def token_cost(self, payload: dict[str, Any]) -> int:
        return self.parse(payload)[1]

    def chat_request_schemas(self, content: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The JSON schemas of the two chat payloads (a prompt, or messages), for request_schema;
        ``content``: the schema of one message's text where the challenge restricts it."""
        n = {"type": "integer", "minimum": 1, "maximum": self.max_new_tokens}
        text_of = content or {"type": "string"}
        message = {"type": "object", "required": ["role", "content"], "additionalProperties": False,
                   "properties": {"role": {"enum": ["user", "assistant"]}, "content": text_of}}
        return [
            {"type": "object", "required": ["prompt"], "additionalProperties": False,
             "description": "one user message (one query)",
             "properties": {"prompt": content or {"type": "string", "maxLength": self.max_prompt_chars,
                                                  "examples": ["What can you help me with?"]}, "max_new_tokens": n}},
            {"type": "object", "required": ["messages"], "additionalProperties": False,
             "description": "user / assistant messages ending with a user message (one query)",
             "properties": {"messages": {"type": "array", "minItems": 1, "maxItems": 16, "items": message},
                            "max_new_tokens": n}}]

    def request_schema(self) -> dict[str, Any]:
        from assay.arena.payload import one_of

        return one_of(*self.chat_request_schemas())

    def score(self, payload: dict[str, Any]) -> ScoreResult:
        raise InputError("this challenge answers per player; the server calls score_for")

    def score_for(self, callers: list[Caller], payloads: list[dict[str, Any]]) -> list[ScoreResult | Exception]:
        parsed: list[Any] = []
        for p in payloads:
            try:
                parsed.append(self.parse(p))
            except InputError as e:
                parsed.append(e)
        out: list[ScoreResult | Exception] = list(parsed)
        # one generate per max_new_tokens value (usually one): each keeps its own cap exactly
        for n in sorted({x[1] for x in parsed if not isinstance(x, Exception)}):
            idx = [i for i, x in enumerate(parsed) if not isinstance(x, Exception) and x[1] == n]
            prompts = []
            for i in idx:
                system = self.system_prompt(callers[i])
                prompts.append(([{"role": "system", "content": system}] if system else []) + parsed[i][0])
            completions = llm_generate(self.lm, prompts, max_new_tokens=n, chat=True)
            for i, c in zip(idx, completions):
                output, solved = self.judge(callers[i], c.text)
                out[i] = ScoreResult(output, solved=solved, cost=1, tokens=int(c.completion_tokens or 0))
        return out
