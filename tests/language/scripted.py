"""A scripted chat model for the injection tests: a real :class:`LanguageModelTarget` (budgets,
batching contract) whose replies follow fixed rules, so that which attack works is known."""

from __future__ import annotations

import re
from collections.abc import Callable

from assay.targets.base import GENERATE
from assay.targets.llm import Completion, LanguageModelTarget


def secret_of(messages) -> str:
    m = re.search(r"[A-Z]+-\d{4}", messages[0]["content"]) if messages and messages[0]["role"] == "system" else None
    return m.group(0) if m else ""


class ScriptedChat(LanguageModelTarget):
    """``rule(messages) -> reply``; records every batch it was sent (one list per generate call)."""

    def __init__(self, rule: Callable[[list[dict]], str], **kw):
        super().__init__(capabilities={GENERATE}, **kw)
        self.rule = rule
        self.calls: list[list] = []

    def _generate(self, prompts, *, max_new_tokens, **kw):
        self.budget.charge(len(prompts))
        self.calls.append(list(prompts))
        out = []
        for p in prompts:
            msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
            words = self.rule(msgs).split(" ")[:max_new_tokens]
            out.append(Completion(" ".join(words), "stop", None, len(words)))
        return out
