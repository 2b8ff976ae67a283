"""A scripted language-model target for tests: answers come from a function of the prompt, so a
test plants exactly the behaviour (toxic replies, refusals, likelihood preferences, a leak under
one attack family) it checks for."""

from __future__ import annotations

import re

import numpy as np

from assay.targets.base import GENERATE
from assay.targets.llm import LOGPROBS, Completion, LanguageModelTarget, TokenLogprobs


class ScriptedLM(LanguageModelTarget):
    """``reply(prompt_text, chat) -> str`` answers generations (with ``messages=True``:
    ``reply(messages) -> str`` sees the whole conversation, system prompt included); ``logprob(prompt,
    continuation) -> float`` gives a continuation's total log-probability (spread over its words).
    ``calls`` holds each generate call's batch size, ``sent`` its prompts."""

    def __init__(self, reply=None, logprob=None, *, messages: bool = False, chars: bool = False, **kw):
        caps = {GENERATE} | ({LOGPROBS} if logprob is not None else set())
        super().__init__(capabilities=caps, **kw)
        self.reply, self.logprob, self.messages = reply, logprob, messages
        self.chars = chars  # with messages=True: a "token" is a character (else a word)
        self.calls: list[int] = []
        self.sent: list[list] = []

    def _generate(self, prompts, *, chat, max_new_tokens, **kw):
        self.budget.charge(len(prompts))
        self.calls.append(len(prompts))
        self.sent.append(list(prompts))
        if self.messages:
            convs = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
            out = []
            for c in convs:
                text = self.reply(c)
                toks = list(text) if self.chars else text.split(" ")
                toks = toks[:max_new_tokens]
                out.append(Completion(("" if self.chars else " ").join(toks), "stop", None, len(toks)))
            return out
        texts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts]
        return [Completion(self.reply(t, chat), "length", None, None) for t in texts]

    def _logprobs(self, prompts, continuations, *, stats):
        self.budget.charge(len(prompts))
        out = []
        for p, c in zip(prompts, continuations):
            n = max(1, len(c.split()))
            out.append(TokenLogprobs(np.full(n, self.logprob(p, c) / n)))
        return out


def secret_of(messages) -> str:
    """The ``WORD-dddd`` secret in a conversation's system prompt ('' if none)."""
    m = re.search(r"[A-Z]+-\d{4}", messages[0]["content"]) if messages and messages[0]["role"] == "system" else None
    return m.group(0) if m else ""


def ScriptedChat(rule, **kw) -> ScriptedLM:
    """A chat model whose reply is ``rule(messages)``."""
    return ScriptedLM(rule, messages=True, **kw)
