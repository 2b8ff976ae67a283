"""What every language-model target shares: text in, text or log-probabilities out, two budgets.

A :class:`LanguageModelTarget` answers two kinds of queries on lists of prompts:

``generate(prompts, ...)``       continuations (capability ``generate``)
``logprobs(prompts, conts)``     teacher-forced log-probabilities of each continuation's tokens
                                 (capability ``logprobs``: local models, and remote completion
                                 APIs that echo prompt log-probabilities)

A prompt is a string (raw text to continue, or with ``chat=True`` one user message) or a list of
``{"role", "content"}`` messages (always rendered with the model's chat template).

Budgets: every prompt sent is one query (a remote target charges every HTTP attempt, retries
included), and every token is charged against an optional token budget *before* it is spent: a
generation reserves its prompt tokens plus ``max_new_tokens`` and is settled to what was actually
used. A call that cannot be afforded raises :class:`~assay.errors.BudgetExceeded` and sends nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from assay.errors import BudgetExceeded, InputError, TargetError
from assay.targets.base import GENERATE, QueryBudget, Target

LOGPROBS = "logprobs"

Prompt = str | Sequence[dict[str, str]]


class TokenBudget(QueryBudget):
    """A hard limit on tokens (prompt and generated). ``charge`` reserves or raises without
    reserving; ``refund`` returns the unused part of a reservation once the real count is known."""

    def charge(self, n: int) -> None:
        try:
            super().charge(n)
        except BudgetExceeded:
            raise BudgetExceeded(
                f"token budget exhausted: {self.used} of {self.limit} tokens used, {n} more needed; "
                "raise the token budget (--token-budget) or ask for fewer prompts / new tokens"
            ) from None

    def refund(self, n: int) -> None:
        if n < 0:
            raise ValueError("refund must be >= 0")
        with self._lock:
            self.used -= min(n, self.used)


@dataclass
class Completion:
    """One generated continuation. ``prompt_tokens`` / ``completion_tokens`` are counted by the
    model's tokenizer (local) or reported by the server (remote; ``None`` when it does not say)."""

    text: str
    finish_reason: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class TokenLogprobs:
    """Log-probabilities (natural log) of a continuation's tokens. ``mean`` / ``std`` of log p(z)
    under the model's next-token distribution at each position, where the target can give them
    (local models; needed by Min-K%++)."""

    logprobs: np.ndarray
    tokens: list[str] | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    if isinstance(prompts, (str, bytes)):
        raise InputError("prompts must be a list of prompts, not one string; wrap it: [prompt]")
    out = list(prompts)
    for p in out:
        if isinstance(p, str):
            continue
        if not isinstance(p, Sequence) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in p):
            raise InputError("a prompt is a string or a list of {'role': ..., 'content': ...} messages")
    return out


class LanguageModelTarget(Target):
    """Base class of language-model targets (see the module doc). Subclasses implement
    :meth:`_generate` and, where they can, :meth:`_logprobs`."""

    kind = "language-model"
    output = "text"
    token_stats = False  # logprobs(stats=True) gives each position's mean / std of log p (Min-K%++)

    def __init__(
        self,
        *,
        capabilities: frozenset[str] | set[str] = frozenset({GENERATE}),
        query_budget: int | None = None,
        token_budget: int | None = None,
        vocab_size: int = 0,
        batch_size: int = 32,
        name: str | None = None,
    ):
        super().__init__(num_classes=vocab_size, input_shape=(), bounds=(0.0, 1.0), capabilities=capabilities,
                         query_budget=query_budget, batch_size=batch_size, name=name)
        self.token_budget = TokenBudget(token_budget)

    # ----------------------------------------------------------------- queries
    @property
    def tokens(self) -> int:
        """Tokens charged so far (prompts and generations)."""
        return self.token_budget.used

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        chat: bool = False,
    ) -> list[Completion]:
        """Continue each prompt; greedy when ``temperature == 0``, else seeded sampling."""
        if GENERATE not in self.capabilities:
            raise TargetError(f"{self.name} cannot generate text")
        prompts = check_prompts(prompts)
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens={max_new_tokens} must be >= 1")
        if not prompts:
            return []
        return self._generate(prompts, max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                              top_k=int(top_k), top_p=float(top_p), seed=int(seed), stop=list(stop or []),
                              chat=bool(chat))

    def logprobs(self, prompts: Sequence[str], continuations: Sequence[str], *, stats: bool = False) -> list[TokenLogprobs]:
        """Teacher-forced log-probabilities of each continuation after its prompt (raw text, no chat
        template). ``stats=True`` also asks for the next-token distribution's mean and std of log p."""
        if LOGPROBS not in self.capabilities:
            raise TargetError(
                f"{self.name} gives no token log-probabilities; use a local model or a completion API "
                "that echoes prompt log-probabilities"
            )
        prompts, continuations = list(prompts), list(continuations)
        if len(prompts) != len(continuations):
            raise InputError(f"{len(prompts)} prompts but {len(continuations)} continuations; give one each")
        if not all(isinstance(t, str) for t in prompts + continuations):
            raise InputError("logprobs takes strings: raw prompt text and continuation text")
        if not prompts:
            return []
        return self._logprobs(prompts, continuations, stats=stats)

    # ------------------------------------------------------------ to implement
    def _generate(self, prompts: list[Prompt], **kw: Any) -> list[Completion]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _logprobs(self, prompts: list[str], continuations: list[str], *, stats: bool) -> list[TokenLogprobs]:
        raise TargetError(f"{self.name} gives no token log-probabilities")

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        raise TargetError(f"{self.name} is a language model: it has no class scores; use the language probes")

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        raise TargetError(f"{self.name} is a language model: it has no class labels; use the language probes")

    def labels(self, x):
        return self._labels(x)

    # ----------------------------------------------------------- accounting
    def budgets(self) -> dict[str, QueryBudget]:
        return {"queries": self.budget, "tokens": self.token_budget}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        for k in ("num_classes", "input_shape", "bounds"):
            d.pop(k, None)
        d.update(vocab_size=self.num_classes or None, token_budget=self.token_budget.limit, tokens=self.tokens)
        return d

    def fingerprint(self) -> str:
        import hashlib
        import json

        d = {k: v for k, v in self.describe().items() if k not in ("queries", "tokens", "requests_sent", "cache_hits")}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
