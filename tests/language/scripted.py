"""A scripted language-model target for tests: answers come from a function of the prompt, so a
test plants exactly the behaviour (toxic replies, refusals, likelihood preferences) it checks for."""

from __future__ import annotations

import numpy as np

from assay.targets.base import GENERATE
from assay.targets.llm import LOGPROBS, Completion, LanguageModelTarget, TokenLogprobs


class ScriptedLM(LanguageModelTarget):
    """``reply(prompt_text, chat) -> str`` answers generations; ``logprob(prompt, continuation) ->
    float`` gives a continuation's total log-probability (spread over its words)."""

    def __init__(self, reply=None, logprob=None, **kw):
        caps = {GENERATE} | ({LOGPROBS} if logprob is not None else set())
        super().__init__(capabilities=caps, **kw)
        self.reply, self.logprob = reply, logprob
        self.calls: list[int] = []

    def _generate(self, prompts, *, chat, **kw):
        self.budget.charge(len(prompts))
        self.calls.append(len(prompts))
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return [Completion(self.reply(t, chat), "length", None, None) for t in texts]

    def _logprobs(self, prompts, continuations, *, stats):
        self.budget.charge(len(prompts))
        out = []
        for p, c in zip(prompts, continuations):
            n = max(1, len(c.split()))
            out.append(TokenLogprobs(np.full(n, self.logprob(p, c) / n)))
        return out
