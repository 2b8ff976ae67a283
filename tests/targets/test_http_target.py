import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from torch import nn

from assay.errors import BudgetExceeded, TargetError
from assay.targets import SCORES, HttpTarget
from assay.targets.http import get_path


class ModelServer:
    """A real HTTP scoring server on 127.0.0.1 wrapping a torch model, with scripted misbehaviour."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, headers, payload = server.respond(body, dict(self.headers))
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/predict"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def reset(self):
        self.hits = 0
        self.samples = 0
        self.received = 0  # samples in every request body, failed ones included
        self.fail_first = 0
        self.fail_status = 503
        self.retry_after = None
        self.delay = 0.0
        self.mode = "scores"
        self.last_body = None
        self.last_headers = None

    def respond(self, body, headers):
        self.hits += 1
        self.last_body, self.last_headers = body, headers
        raw_in = body.get("inputs")
        if isinstance(raw_in, dict):
            self.received += int(raw_in["shape"][0]) if len(raw_in["shape"]) == 4 else 1
        elif isinstance(raw_in, list):
            self.received += len(raw_in) if np.asarray(raw_in).ndim == 4 else 1
        if self.delay:
            time.sleep(self.delay)
        if self.hits <= self.fail_first:
            extra = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
            return self.fail_status, extra, {"error": "busy"}
        if self.mode == "not-json":
            return 200, {"Content-Type": "text/html"}, b"<html>oops</html>"
        if self.mode == "bad-request":
            return 400, {}, {"error": "inputs must be a list"}
        raw = body["inputs"]
        if isinstance(raw, dict):  # b64 encoding
            x = np.frombuffer(base64.b64decode(raw["b64"]), dtype="<f4").reshape(raw["shape"])
        else:
            x = np.asarray(raw, dtype=np.float32)
        single = x.ndim == 3
        xt = torch.from_numpy(x.copy()).reshape(-1, 1, 2, 2)
        self.samples += len(xt)
        with torch.no_grad():
            logits = self.model(xt)
        if self.mode == "labels":
            out = logits.argmax(1).tolist()
            return 200, {}, {"labels": out[0] if single else out}
        if self.mode == "wrong-shape":
            return 200, {}, {"scores": logits[:, :2].tolist()}
        if self.mode == "nested":
            return 200, {}, {"data": {"predictions": [{"probs": row} for row in torch.softmax(logits, 1).tolist()]}}
        out = logits.tolist()
        return 200, {}, {"scores": out[0] if single else out}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    s = ModelServer(model)
    yield s
    s.close()


@pytest.fixture
def srv(server):
    server.reset()
    return server


def make(srv, **kw):
    kw.setdefault("backoff", 0.001)
    return HttpTarget(srv.url, input_shape=(1, 2, 2), num_classes=3, **kw)


def inputs(n, seed=0):
    return torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed))


def test_scores_match_the_model_in_every_request_style(srv):
    x = inputs(10)
    with torch.no_grad():
        ref = srv.model(x)
    for kw in ({}, {"encoding": "b64"}, {"batch": False}, {"batch_size": 3}):
        with make(srv, **kw) as t:
            assert torch.allclose(t.scores(x), ref, atol=1e-6), kw
            assert t.queries == 10
    with make(srv, batch=False) as t:
        srv.hits = 0
        t.scores(inputs(4, seed=5))
        assert srv.hits == 4  # one request per sample


def test_request_template_headers_and_output_path(srv):
    srv.mode = "nested"
    t = make(srv, request_template={"model": "v2", "inputs": None}, headers={"X-Api-Key": "k"},
             output_path="data.predictions.*.probs", output="probs")
    x = inputs(5)
    with torch.no_grad():
        ref = torch.softmax(srv.model(x), 1)
    assert torch.allclose(t.scores(x), ref, atol=1e-6)
    assert torch.allclose(t.probs(x), ref, atol=1e-6)  # probs are not softmaxed twice
    assert srv.last_body["model"] == "v2" and srv.last_headers["X-Api-Key"] == "k"


def test_budget_is_checked_before_sending_and_cache_is_free(srv):
    t = make(srv, query_budget=12, batch_size=3)  # several requests per call
    x = inputs(8)
    first = t.scores(x)
    assert t.queries == 8 and srv.samples == 8
    # the same inputs again: answered from the cache, no request and no budget
    assert torch.equal(t.scores(x), first)
    assert t.queries == 8 and srv.samples == 8 and t.cache_hits == 8
    # 8 new inputs would exceed the budget (8 + 8 > 12): refused, nothing sent, nothing charged
    hits = srv.hits
    with pytest.raises(BudgetExceeded):
        t.scores(inputs(8, seed=1))
    assert srv.hits == hits and t.queries == 8
    # duplicates inside one batch, and already-cached rows, cost one query per distinct new input
    y = inputs(2, seed=2)
    t.labels(torch.cat([y, y, y, x[:3]]))
    assert t.queries == 10 and srv.samples == 10


def test_cache_off_charges_every_sample(srv):
    t = make(srv, cache=False, query_budget=10)
    x = inputs(5)
    t.scores(x)
    t.scores(x)
    assert t.queries == 10 and srv.samples == 10
    with pytest.raises(BudgetExceeded):
        t.scores(x[:1])


def test_retries_server_errors_with_growing_seeded_backoff(srv):
    srv.fail_first = 2
    t = make(srv, retries=3, backoff=0.01, seed=7)
    waits = []
    t.sleep = waits.append
    x = inputs(4)
    with torch.no_grad():
        assert torch.allclose(t.scores(x), srv.model(x), atol=1e-6)
    # every attempt carried the 4 samples to the server, so every attempt is charged
    assert srv.hits == 3 and t.requests_sent == 3 and t.queries == 12 == srv.received
    assert len(waits) == 2
    assert 0.01 <= waits[0] <= 0.015 and 0.02 <= waits[1] <= 0.03  # backoff * 2**k * (1 + U[0, .5))
    srv.reset()
    srv.fail_first = 2
    t2 = make(srv, retries=3, backoff=0.01, seed=7)
    again = []
    t2.sleep = again.append
    t2.scores(x)
    assert again == waits  # the jitter is seeded


def test_budget_counts_failed_attempts_on_the_wire(srv):
    """A server that always fails must never receive more samples than the budget, retries included."""
    srv.fail_first, srv.fail_status = 10**9, 500
    t = make(srv, retries=3, backoff=0.0, query_budget=100, batch_size=16)
    t.sleep = lambda s: None
    with pytest.raises((TargetError, BudgetExceeded)):
        t.scores(inputs(40))
    sent_first = srv.received
    for _ in range(20):  # an attack would keep asking; the budget must still hold
        with pytest.raises((TargetError, BudgetExceeded)):
            t.scores(inputs(3))
    assert srv.received <= 100 and t.queries == srv.received and sent_first == 16 * 4


def test_answers_persist_across_targets_in_a_store(srv, tmp_path):
    x = inputs(6)
    t = make(srv, query_budget=6)
    t.attach_store(tmp_path)
    first = t.scores(x)
    assert srv.samples == 6
    srv.reset()
    again = make(srv, query_budget=6)
    again.attach_store(tmp_path)
    with open(next(tmp_path.glob("http-answers-*.jsonl")), "a") as f:
        f.write('{"k": "torn')  # a write cut by kill -9 must not break the next run
    assert torch.equal(again.scores(x), first) and srv.hits == 0 and again.queries == 0
    other = make(srv, query_budget=6, request_template={"model": "v2"})
    other.attach_store(tmp_path)  # other settings: another identity, another file
    other.scores(x[:2])
    assert srv.samples == 2


def test_retry_after_is_honoured_up_to_a_cap(srv):
    srv.fail_first, srv.fail_status, srv.retry_after = 1, 429, 0.25
    t = make(srv, retries=2)
    waits = []
    t.sleep = waits.append
    t.scores(inputs(2))
    assert waits == [0.25]
    srv.reset()
    srv.fail_first, srv.fail_status, srv.retry_after = 1, 503, 3600
    t = make(srv, retries=2, max_retry_wait=2.0)
    waits = []
    t.sleep = waits.append
    t.scores(inputs(2))
    assert waits == [2.0]


def test_gives_up_after_retries_with_one_line(srv):
    srv.fail_first = 100
    t = make(srv, retries=2)
    with pytest.raises(TargetError, match="failed after 3 attempts") as e:
        t.scores(inputs(2))
    assert srv.hits == 3 and "\n" not in str(e.value) and "HTTP 503" in str(e.value)


def test_client_errors_are_not_retried(srv):
    srv.mode = "bad-request"
    t = make(srv, retries=3)
    with pytest.raises(TargetError, match="HTTP 400") as e:
        t.scores(inputs(2))
    assert srv.hits == 1 and "inputs must be a list" in str(e.value)


def test_timeout(srv):
    srv.delay = 0.5
    t = make(srv, timeout=0.1, retries=1)
    t.sleep = lambda s: None
    with pytest.raises(TargetError, match="timed out"):
        t.scores(inputs(1))


def test_unreachable_url():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = HttpTarget(f"http://127.0.0.1:{port}/x", input_shape=(4,), num_classes=2, retries=1, backoff=0.001)
    with pytest.raises(TargetError, match="cannot connect") as e:
        t.scores(torch.zeros(1, 4))
    assert "check the URL" in str(e.value)
    with pytest.raises(TargetError, match="http://"):
        HttpTarget("ftp://host/x", input_shape=(4,), num_classes=2)


def test_malformed_responses(srv):
    srv.mode = "not-json"
    with pytest.raises(TargetError, match="not JSON"):
        make(srv).scores(inputs(2))
    srv.mode = "wrong-shape"
    with pytest.raises(TargetError, match=r"shape \(2, 2\), expected \(2, 3\)"):
        make(srv).scores(inputs(2))
    srv.mode = "scores"
    with pytest.raises(TargetError, match="set output_path") as e:
        make(srv, output_path="predictions").scores(inputs(2))
    assert "scores" in str(e.value)  # names the keys the response has
    srv.mode = "labels"
    with pytest.raises(TargetError, match="output='labels'"):
        make(srv, output_path="labels").scores(inputs(2))


def test_label_only_endpoint(srv):
    srv.mode = "labels"
    x = inputs(6)
    for batch in (True, False):
        t = make(srv, output="labels", output_path="labels", batch=batch, query_budget=6)
        assert not t.has(SCORES)
        with torch.no_grad():
            assert torch.equal(t.labels(x), srv.model(x).argmax(1))
        with pytest.raises(TargetError, match="hard labels only"):
            t.scores(x)
        with pytest.raises(BudgetExceeded):
            t.labels(inputs(1, seed=9))


def test_get_path():
    doc = {"data": [{"probs": [0.1, 0.9]}, {"probs": [0.7, 0.3]}]}
    assert get_path(doc, "data.0.probs") == [0.1, 0.9]
    assert get_path(doc, "data.*.probs") == [[0.1, 0.9], [0.7, 0.3]]
    assert get_path([1, 2], "") == [1, 2]
    with pytest.raises(KeyError):
        get_path(doc, "data.5.probs")


def test_cli_http_options_reach_the_target(srv):
    from assay.cli import _target_kwargs, build_parser

    srv.mode = "nested"
    a = build_parser().parse_args(["audit", srv.url, "--data", "unused.npz", "--num-classes", "3",
                                   "--http", "output_path=data.predictions.*.probs", "--http", "output=probs",
                                   "--http", 'headers={"X-Api-Key": "k"}', "--http", "retries=0"])
    opts = _target_kwargs(a)["http_options"]
    assert opts == {"output_path": "data.predictions.*.probs", "output": "probs", "headers": {"X-Api-Key": "k"},
                    "retries": 0}
    t = make(srv, **opts)
    x = inputs(4)
    with torch.no_grad():
        assert torch.allclose(t.probs(x), torch.softmax(srv.model(x), 1), atol=1e-6)
    assert srv.last_headers["X-Api-Key"] == "k"


def test_blackbox_probe_spends_budget_only_on_queries_that_reach_the_server(srv):
    """Cached answers are free: a rerun of the same seeded attack on the same target is answered from
    the cache and finishes with the same result, although the budget left is far below its query count."""
    import assay

    x = inputs(16, seed=3)
    with torch.no_grad():
        y = srv.model(x).argmax(1)
    t = make(srv)
    params = {"robustness.blackbox": {"eps_linf": [0.05], "queries_per_sample": 100, "max_samples": 16}}
    first = assay.audit(t, (x, y), probes=["robustness.blackbox"], params=params, seed=0)
    spent = t.queries
    assert spent > 20
    t.budget.limit = spent + 5  # the rerun could not afford its queries anew
    second = assay.audit(t, (x, y), probes=["robustness.blackbox"], params=params, seed=0)
    m1 = {m.name: m.value for m in first.findings[0].metrics}
    m2 = {m.name: m.value for m in second.findings[0].metrics}
    assert t.queries == spent  # nothing new reached the server
    assert m2["robust_accuracy[linf,eps=0.05]"] == m1["robust_accuracy[linf,eps=0.05]"]
    # queries_used is what reached the server (never above the budget); the attack still asked as many
    assert m2["queries_used"] == 0 and m2["queries_issued"] == m1.get("queries_issued", m1["queries_used"])
    assert not second.findings[0].warnings
