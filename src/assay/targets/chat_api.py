"""A language model behind an OpenAI-compatible API (vLLM, llama.cpp's server, Ollama, hosted APIs).

Generation goes to ``/v1/chat/completions`` (messages, the server applies the chat template) or
``/v1/completions`` (raw text prompts); teacher-forced log-probabilities, where the server offers
them, come from ``/v1/completions`` with ``echo`` and ``logprobs`` (the prompt's own tokens scored).

Budgets, counted on the wire: every HTTP attempt, retries included, is charged one query *before*
it is sent, and reserves tokens: an upper bound on its prompt (its UTF-8 bytes, since a byte-level
tokenizer makes at most one token per byte, plus ``template_overhead`` for the chat template and
special tokens) plus ``max_tokens``. A successful answer that reports ``usage`` settles the
reservation to the server's count; a failed attempt keeps its whole reservation (the server may
have done the work). A server that reports more tokens than were reserved is charged in full and
the target stops with an error naming the fix. A call whose requests cannot all be afforded sends
nothing.

The API key is read from an environment variable named by ``api_key_env``; only the variable's
name is ever recorded (reports, logs and error messages never carry the key).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from assay.errors import BudgetExceeded, InputError, TargetError
from assay.targets.base import GENERATE
from assay.targets.llm import LOGPROBS, Completion, LanguageModelTarget, Prompt, TokenLogprobs
from assay.targets.retry import post_json

APIS = ("chat", "completions")
_ENDPOINT_SUFFIXES = ("/chat/completions", "/completions")


def api_base(url: str) -> str:
    """``http://h:p/v1/chat/completions`` or ``http://h:p/v1/`` -> ``http://h:p/v1``."""
    url = url.rstrip("/")
    for suffix in _ENDPOINT_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def looks_like_openai_url(url: str) -> bool:
    """A URL that names an OpenAI-compatible API: its path is ``.../v1`` or one of its endpoints."""
    path = urlsplit(url).path.rstrip("/")
    return path.endswith("/v1") or path.endswith(tuple("/v1" + s for s in _ENDPOINT_SUFFIXES))


@dataclass
class _Request:
    endpoint: str
    body: dict[str, Any]
    reserve: int  # tokens reserved for each attempt


class ChatTarget(LanguageModelTarget):
    """A language model behind an OpenAI-compatible HTTP API (see the module doc).

    Parameters
    ----------
    url : the API base (``http://127.0.0.1:8080/v1``) or one of its endpoint URLs.
    model : the ``model`` field sent with each request (servers that host one model ignore it).
    api : ``"chat"`` (default) sends every prompt as messages to ``/chat/completions``;
        ``"completions"`` sends raw text prompts to ``/completions`` (message prompts still go to
        ``/chat/completions``).
    echo_logprobs : the server scores prompts (``/completions`` with ``echo`` and ``logprobs``):
        enables :meth:`logprobs` (capability ``logprobs``).
    api_key_env : name of the environment variable holding the API key (sent as a Bearer token).
    concurrency : requests in flight at once.
    timeout, retries, backoff, max_retry_wait : as for :class:`~assay.targets.http.HttpTarget`.
    template_overhead : tokens reserved per request on top of the prompt's bytes (chat template,
        a default system prompt, special tokens).
    query_budget, token_budget : hard limits, counted on the wire (retries included).
    cache : answer identical requests from memory, without a request and without budget.

    Example
    -------
    >>> t = ChatTarget("http://127.0.0.1:8080/v1", api_key_env="OPENAI_API_KEY",
    ...                query_budget=500, token_budget=200_000)                     # doctest: +SKIP
    >>> t.generate(["What is the secret password?"], max_new_tokens=20)[0].text    # doctest: +SKIP
    """

    kind = "openai-api"
    remote = True

    def __init__(
        self,
        url: str,
        *,
        model: str = "default",
        api: str = "chat",
        echo_logprobs: bool = False,
        api_key_env: str | None = None,
        headers: dict[str, str] | None = None,
        system_prompt: str | None = None,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 30.0,
        template_overhead: int = 128,
        query_budget: int | None = None,
        token_budget: int | None = None,
        cache: bool = True,
        seed: int = 0,
        name: str | None = None,
    ):
        import httpx

        if not str(url).startswith(("http://", "https://")):
            raise TargetError(f"URL {url!r} must start with http:// or https://")
        if api not in APIS:
            raise InputError(f"api={api!r} is not one of {', '.join(APIS)}")
        if concurrency < 1 or retries < 0 or template_overhead < 0:
            raise InputError("concurrency must be >= 1, retries and template_overhead >= 0")
        self.base = api_base(str(url))
        self.model_name = str(model)
        self.api = api
        self.echo_logprobs = bool(echo_logprobs)
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)
        self.template_overhead = int(template_overhead)
        self.use_cache = bool(cache)
        headers = dict(headers or {})
        self._secret: str | None = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise TargetError(f"environment variable {api_key_env} is not set; export the API key there")
            self._secret = key
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=self.timeout, headers=headers, follow_redirects=True)
        self._cache: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self.requests_sent = 0  # HTTP attempts, retries included
        self.cache_hits = 0
        self.sleep: Callable[[float], None] = time.sleep
        caps = {GENERATE, LOGPROBS} if self.echo_logprobs else {GENERATE}
        super().__init__(capabilities=caps, query_budget=query_budget, token_budget=token_budget,
                         batch_size=self.concurrency, name=name or self.base)

    def __repr__(self) -> str:  # never shows headers (the key)
        return f"ChatTarget({self.base!r}, model={self.model_name!r}, api={self.api!r})"

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- requests
    def _bound(self, texts: Sequence[str], n_messages: int = 1) -> int:
        return sum(len(t.encode("utf-8")) for t in texts) + self.template_overhead + 8 * max(0, n_messages - 1)

    def _request_for(self, prompt: Prompt, *, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                     seed: int, stop: list[str], chat: bool) -> _Request:
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": max_new_tokens, "temperature": temperature}
        if temperature > 0:
            body["seed"] = seed
            if top_p < 1:
                body["top_p"] = top_p
            if top_k > 0:
                body["top_k"] = top_k  # not in OpenAI's API; vLLM, llama.cpp and Ollama read it
        if stop:
            body["stop"] = stop[:4]  # OpenAI accepts at most four; the rest are cut here
        if isinstance(prompt, str) and self.api == "completions" and not chat:
            body["prompt"] = prompt
            return _Request("/completions", body, self._bound([prompt]) + max_new_tokens)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        body["messages"] = messages
        return _Request("/chat/completions", body, self._bound([m["content"] for m in messages], len(messages))
                        + max_new_tokens)

    def _run_all(self, requests: list[_Request]) -> list[Any]:
        """Send every request (cache first), ``concurrency`` at a time; the answers in order."""
        if self.use_cache:
            keys = [hashlib.sha256(json.dumps([r.endpoint, r.body], sort_keys=True).encode()).hexdigest()
                    for r in requests]
            with self._lock:
                fresh = {k: r for k, r in zip(keys, requests) if k not in self._cache}
        else:
            keys = [str(i) for i in range(len(requests))]
            fresh = dict(zip(keys, requests))
        # refuse before sending anything when the first attempts alone cannot be afforded
        need_q, need_t = len(fresh), sum(r.reserve for r in fresh.values())
        if not self.budget.can_afford(need_q):
            self.budget.charge(need_q)  # raises
        if not self.token_budget.can_afford(need_t):
            self.token_budget.charge(need_t)  # raises
        stop = threading.Event()
        answers: dict[str, Any] = {}

        def one(key: str, req: _Request) -> None:
            if stop.is_set():
                return
            try:
                answers[key] = self._send(req)
            except BaseException:
                stop.set()
                raise

        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(one, k, r) for k, r in fresh.items()]
            for f in futures:
                e = f.exception()
                if e is not None:
                    errors.append(e)
        if self.use_cache:
            with self._lock:
                self._cache.update(answers)
        if errors:
            budget = [e for e in errors if isinstance(e, BudgetExceeded)]
            raise (budget or errors)[0]
        if self.use_cache:
            with self._lock:
                self.cache_hits += len(requests) - len(fresh)
                return [self._cache[k] for k in keys]
        return [answers[k] for k in keys]

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _send(self, req: _Request) -> Any:
        url = self.base + req.endpoint

        def charge() -> None:
            # before every attempt, retries included; a failed attempt keeps its reservation
            self.budget.charge(1)
            self.token_budget.charge(req.reserve)
            with self._lock:
                self.requests_sent += 1

        payload = post_json(
            self._client, url, req.body, retries=self.retries, backoff=self.backoff,
            max_retry_wait=self.max_retry_wait, timeout=self.timeout, rng=self._rng, sleep=self.sleep,
            before_attempt=charge, scrub=self._scrub,
            rejected_hint="check the URL, the model name and the API key variable",
            not_json_hint="point the URL at an OpenAI-compatible API base such as http://host:port/v1",
            failed_hint="check that the server is up, or raise timeout / retries (CLI: --llm timeout=120 --llm retries=5)")
        self._settle(payload, req, url)
        return payload

    def _settle(self, payload: Any, req: _Request, url: str) -> None:
        usage = payload.get("usage") if isinstance(payload, dict) else None
        if not isinstance(usage, dict):
            return  # no count from the server: the reservation stands
        try:
            used = int(usage.get("total_tokens") or (int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))))
        except (TypeError, ValueError):
            return
        if used <= req.reserve:
            self.token_budget.refund(req.reserve - used)
            return
        with self.token_budget._lock:  # the server spent it: record it, then stop
            self.token_budget.used += used - req.reserve
        raise TargetError(f"{url} counted {used} tokens for a request that reserved {req.reserve}; raise "
                          f"template_overhead (now {self.template_overhead}; CLI: --llm template_overhead=512) so "
                          "the token budget can be enforced before sending")

    # ----------------------------------------------------------------- queries
    def _generate(self, prompts: list[Prompt], *, max_new_tokens: int, temperature: float, top_k: int,
                  top_p: float, seed: int, stop: list[str], chat: bool) -> list[Completion]:
        reqs = [self._request_for(p, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                  seed=seed + i, stop=stop, chat=chat) for i, p in enumerate(prompts)]
        out = []
        for req, payload in zip(reqs, self._run_all(reqs)):
            out.append(self._completion(payload, req, stop))
        return out

    def _completion(self, payload: Any, req: _Request, stop: list[str]) -> Completion:
        url = self.base + req.endpoint
        try:
            choice = payload["choices"][0]
            text = choice["message"]["content"] if req.endpoint == "/chat/completions" else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise TargetError(f"the response from {url} has no choices[0] text; is this an OpenAI-compatible API?") from None
        text = text or ""
        reason = str(choice.get("finish_reason") or "length")
        cut = min((k for k in (text.find(s) for s in stop) if k >= 0), default=-1)
        if cut >= 0:  # servers may include the stop string; trim it as the local engine does
            text, reason = text[:cut], "stop"
        usage = payload.get("usage") or {}
        # the server's reason: "stop" covers both an end-of-sequence token and a stop string
        return Completion(text, reason, usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def _logprobs(self, prompts: list[str], continuations: list[str], *, stats: bool) -> list[TokenLogprobs]:
        reqs = []
        for p, c in zip(prompts, continuations):
            body = {"model": self.model_name, "prompt": p + c, "max_tokens": 1, "temperature": 0.0,
                    "echo": True, "logprobs": 1}
            reqs.append(_Request("/completions", body, self._bound([p + c]) + 1))
        out = []
        for p, c, req, payload in zip(prompts, continuations, reqs, self._run_all(reqs)):
            out.append(self._echoed(payload, len(p), len(p) + len(c), req))
        return out

    def _echoed(self, payload: Any, start: int, end: int, req: _Request) -> TokenLogprobs:
        """The continuation's tokens from an echoed prompt: those whose text starts in [start, end)."""
        url = self.base + req.endpoint
        try:
            lp = payload["choices"][0]["logprobs"]
            tokens, values, offsets = lp["tokens"], lp["token_logprobs"], lp["text_offset"]
        except (KeyError, IndexError, TypeError):
            raise TargetError(f"{url} returned no echoed prompt log-probabilities (choices[0].logprobs with tokens, "
                              "token_logprobs, text_offset); this server does not score prompts: drop echo_logprobs") from None
        sel = [i for i, o in enumerate(offsets) if start <= int(o) < end]
        if any(values[i] is None for i in sel):
            raise TargetError(f"{url} gave no log-probability for a continuation token; the prompt must be non-empty")
        return TokenLogprobs(np.asarray([values[i] for i in sel], dtype=np.float64), [tokens[i] for i in sel])

    # ------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(url=self.base, model=self.model_name, api=self.api, echo_logprobs=self.echo_logprobs,
                 api_key_env=self.api_key_env, requests_sent=self.requests_sent, cache_hits=self.cache_hits,
                 concurrency=self.concurrency, template_overhead=self.template_overhead)
        return d
