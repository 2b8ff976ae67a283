"""A small OpenAI-compatible server on loopback for the remote target's tests: deterministic answers,
real usage counts, and failures, delays and secrets on demand. It records everything it receives."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def count_tokens(text: str) -> int:
    return len(text.split()) + 1


class FakeOpenAI:
    def __init__(self):
        self.requests: list[dict] = []  # (path, body, headers) of every request received
        self.fail_next = 0  # answer that many requests with HTTP 503
        self.fail_status = 503
        self.delay = 0.0
        self.hidden_prompt_tokens = 0  # a hidden system prompt the server adds to every chat request
        self.echo_key_in_errors = False
        self.reply = "the answer is 42"
        self.in_flight = 0
        self.max_in_flight = 0
        self.tokens_processed = 0  # usage of every request answered
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    fail = server.fail_next > 0
                    server.fail_next -= fail
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    if fail:
                        msg = {"error": "overloaded"}
                        if server.echo_key_in_errors:
                            msg["auth"] = self.headers.get("Authorization", "")
                        return self._send(server.fail_status, msg)
                    return self._send(200, server.answer(self.path, body))
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, body: dict) -> dict:
        max_tokens = int(body.get("max_tokens", 16))
        words = self.reply.split()[:max_tokens]
        text = " ".join(words)
        for s in body.get("stop") or []:
            if s in text:
                text = text[: text.index(s)]
        if path.endswith("/chat/completions"):
            prompt = " ".join(m["content"] for m in body["messages"])
            prompt_tokens = count_tokens(prompt) + self.hidden_prompt_tokens
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            prompt = body["prompt"]
            prompt_tokens = count_tokens(prompt)
            choice = {"index": 0, "text": text, "finish_reason": "length"}
            if body.get("echo") and body.get("logprobs") is not None:
                # one token per word (with its leading space), log p = -(position + 1) / 10
                toks, offs, pos = [], [], 0
                for i, w in enumerate(prompt.split(" ")):
                    t = w if i == 0 else " " + w
                    toks.append(t)
                    offs.append(pos)
                    pos += len(t)
                lps = [None] + [-(i + 1) / 10 for i in range(1, len(toks))]
                choice["text"] = prompt + " " + text
                choice["logprobs"] = {"tokens": toks + [" x"], "token_logprobs": lps + [-0.5],
                                      "text_offset": offs + [pos]}
        completion_tokens = len(words)
        with self._lock:
            self.tokens_processed += prompt_tokens + completion_tokens
        return {"choices": [choice], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                               "total_tokens": prompt_tokens + completion_tokens}}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
