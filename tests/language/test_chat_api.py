"""The OpenAI-compatible target against a real HTTP server on loopback: requests, retries, budgets
(a property test over random workloads), the cache, concurrency, timeouts and the API key."""

import json
import random

import numpy as np
import pytest
from fake_openai import FakeOpenAI

from assay.errors import BudgetExceeded, InputError, TargetError
from assay.targets.chat_api import ChatTarget, api_base, looks_like_openai_url


@pytest.fixture
def server():
    s = FakeOpenAI()
    yield s
    s.close()


def target(server, **kw):
    t = ChatTarget(server.url, backoff=0.0, **kw)
    t.sleep = lambda s: None
    return t


def test_urls():
    assert api_base("http://h:1/v1/chat/completions") == "http://h:1/v1" == api_base("http://h:1/v1/")
    assert looks_like_openai_url("http://h:1/v1") and looks_like_openai_url("https://api.x.com/v1/completions")
    assert not looks_like_openai_url("http://h:1/predict")


def test_chat_and_completion_requests(server):
    t = target(server, model="m1", api="completions", system_prompt="be brief")
    out = t.generate(["Once upon a time", [{"role": "user", "content": "hi"}]], max_new_tokens=3, stop=["is"])
    assert [c.text for c in out] == ["the answer ", "the answer "]
    chat, raw = sorted(server.requests, key=lambda r: r["path"])  # sent concurrently: any order
    assert raw["path"] == "/v1/completions" and raw["body"]["prompt"] == "Once upon a time"
    assert raw["body"]["max_tokens"] == 3 and raw["body"]["temperature"] == 0.0 and raw["body"]["stop"] == ["is"]
    assert chat["path"] == "/v1/chat/completions" and chat["body"]["model"] == "m1"
    assert chat["body"]["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert out[1].prompt_tokens == 4 and out[1].completion_tokens == 3
    s = target(server).generate(["x"], max_new_tokens=2, temperature=0.8, top_k=5, seed=3)
    assert server.requests[-1]["body"]["seed"] == 3 and server.requests[-1]["body"]["top_k"] == 5 and s[0].text


def test_every_attempt_is_charged_retries_included(server):
    server.fail_next = 2
    t = target(server, retries=3, template_overhead=10)
    out = t.generate(["a b c"], max_new_tokens=4)
    assert out[0].text == "the answer is 42"
    assert t.requests_sent == 3 == len(server.requests) == t.queries
    reserve = len("a b c") + 10 + 4
    usage = 4 + 4  # the server's count: 3 words + 1, and 4 completion tokens
    assert t.tokens == 2 * reserve + usage  # failed attempts keep their reservation; the answer settles
    server.fail_next = 10
    with pytest.raises(TargetError, match="failed after 2 attempts .*HTTP 503"):
        target(server, retries=1).generate(["q"])


def test_budget_refuses_before_sending(server):
    t = target(server, query_budget=2, template_overhead=0)
    with pytest.raises(BudgetExceeded, match="query budget"):
        t.generate(["a", "b", "c"])
    assert server.requests == [] and t.queries == 0
    t = target(server, token_budget=30, template_overhead=0)
    with pytest.raises(BudgetExceeded, match="token budget"):
        t.generate(["a" * 20, "b"], max_new_tokens=8)  # reserves 28 + 9
    assert server.requests == []


def test_budget_property_queries_and_tokens_never_exceed(server):
    """Random workloads (prompts, lengths, failures, retries, caching, concurrency): whatever happens,
    neither budget is ever exceeded, neither on our count nor on the server's."""
    rng = random.Random(0)
    for _ in range(25):
        server.requests.clear()
        server.tokens_processed = 0
        qb, tb = rng.randint(0, 12), rng.randint(0, 400)
        t = target(server, query_budget=qb, token_budget=tb, retries=rng.randint(0, 3), template_overhead=8,
                   concurrency=rng.randint(1, 4), cache=rng.random() < 0.5)
        for _ in range(rng.randint(1, 6)):
            server.fail_next = rng.choice([0, 0, 1, 3])
            n = rng.randint(1, 4)
            prompts = [" ".join("w" * rng.randint(1, 5) for _ in range(rng.randint(1, 8))) for _ in range(n)]
            try:
                t.generate(prompts, max_new_tokens=rng.randint(1, 10), chat=rng.random() < 0.5)
            except (BudgetExceeded, TargetError):
                pass
            assert t.queries <= qb and t.tokens <= tb
            assert len(server.requests) == t.requests_sent <= qb
            assert server.tokens_processed <= t.tokens


def test_cache_answers_without_budget(server):
    t = target(server, query_budget=2)
    a = t.generate(["same"], max_new_tokens=3)
    b = t.generate(["same", "same"], max_new_tokens=3)
    assert a[0].text == b[0].text == b[1].text and len(server.requests) == 1 and t.queries == 1
    assert t.cache_hits == 2
    t.generate(["same"], max_new_tokens=4)  # a different request
    assert len(server.requests) == 2


def test_concurrency_and_timeout(server):
    server.delay = 0.3
    t = target(server, concurrency=4)
    t.generate([f"p{i}" for i in range(8)], max_new_tokens=2)
    assert 2 <= server.max_in_flight <= 4
    server.delay = 1.0
    slow = target(server, timeout=0.2, retries=1)
    with pytest.raises(TargetError, match="timed out after 0.2 s"):
        slow.generate(["late"])
    assert slow.queries == 2  # the retry was charged too


def test_api_key_is_sent_but_never_recorded(server, monkeypatch, tmp_path):
    key = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("MY_LLM_KEY", key)
    t = target(server, api_key_env="MY_LLM_KEY")
    t.generate(["hello"])
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {key}"
    assert key not in json.dumps(t.describe()) and key not in repr(t)
    assert t.describe()["api_key_env"] == "MY_LLM_KEY"
    server.echo_key_in_errors, server.fail_next, server.fail_status = True, 1, 401
    with pytest.raises(TargetError) as e:
        t.generate(["other"])
    assert key not in str(e.value) and "***" in str(e.value)
    monkeypatch.delenv("MY_LLM_KEY")
    with pytest.raises(TargetError, match="MY_LLM_KEY is not set"):
        target(server, api_key_env="MY_LLM_KEY")


def test_echoed_logprobs_pick_the_continuation(server):
    t = target(server, echo_logprobs=True)
    out = t.logprobs(["the cat"], [" sat on mat"])
    assert out[0].tokens == [" sat", " on", " mat"]
    assert np.allclose(out[0].logprobs, [-0.3, -0.4, -0.5])
    body = server.requests[0]["body"]
    assert body["echo"] is True and body["prompt"] == "the cat sat on mat" and body["max_tokens"] == 1
    with pytest.raises(TargetError, match="no token log-probabilities"):
        target(server).logprobs(["a"], ["b"])


def test_server_counting_more_than_reserved_stops_the_target(server):
    server.hidden_prompt_tokens = 500  # a long hidden system prompt
    t = target(server, template_overhead=0, token_budget=10_000)
    with pytest.raises(TargetError, match="raise template_overhead"):
        t.generate(["hi"], max_new_tokens=2)
    assert t.tokens >= 500  # what the server spent is recorded, not hidden


def test_bad_options():
    with pytest.raises(TargetError, match="http"):
        ChatTarget("ftp://x/v1")
    with pytest.raises(InputError, match="api="):
        ChatTarget("http://127.0.0.1:1/v1", api="embeddings")
