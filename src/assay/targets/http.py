"""A model behind a JSON scoring API: strict budget, retries with back-off, timeouts, a query cache."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assay.errors import TargetError
from assay.targets.base import LABELS, SCORES, Target
from assay.targets.retry import post_json


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted path through dicts (keys) and lists (integer indices).

    ``"*"`` maps the rest of the path over a list: ``"predictions.*.probs"`` turns
    ``{"predictions": [{"probs": a}, {"probs": b}]}`` into ``[a, b]``. An empty path is ``obj``.
    """
    parts = [p for p in path.split(".") if p] if path else []
    for i, part in enumerate(parts):
        if part == "*":
            if not isinstance(obj, list):
                raise KeyError(".".join(parts[: i + 1]))
            rest = ".".join(parts[i + 1 :])
            return [get_path(item, rest) for item in obj]
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.lstrip("-").isdigit() and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        else:
            raise KeyError(".".join(parts[: i + 1]))
    return obj


def set_path(obj: dict, path: str, value: Any) -> None:
    """Set ``obj[a][b]... = value`` for the dotted path ``"a.b..."``, creating dicts on the way."""
    parts = path.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


class HttpTarget(Target):
    """A classifier served over HTTP: each query is a JSON POST, the scores come back as JSON.

    Request: ``request_template`` (any JSON object, deep-copied) with the inputs stored at the
    dotted ``input_key``. With ``batch=True`` one request carries a whole batch (nested lists of
    shape ``(n, *input_shape)``); with ``batch=False`` each sample is its own request. With
    ``encoding="b64"`` the inputs are sent as
    ``{"b64": <base64 of little-endian float32 bytes>, "shape": [...], "dtype": "float32"}``.

    Response: the value at the dotted ``output_path`` (``"data.0.probs"``; ``"*"`` maps over a
    list: ``"predictions.*.probs"``) must be ``(n, num_classes)`` scores, or ``(n,)`` integer labels
    when ``output="labels"`` (then the target is label-only).

    Budget and cache: the budget counts samples on the wire. Every attempt to send a request,
    retries included, is charged for the samples it carries before it goes out; a call that cannot
    afford its first attempt raises :class:`~assay.errors.BudgetExceeded` and sends nothing, and a
    retry that the budget cannot afford is not sent. A repeated input (sha256 of its float32
    bytes), within a batch or across calls, is answered from the cache without a request and
    without budget (``cache=False`` turns this off). With :meth:`attach_store` the answers are also
    appended to a file, so a resumed audit replays its queries from there instead of paying again.

    Failures: connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times with
    exponential back-off ``backoff * 2**attempt`` plus up to 50% jitter from a seeded RNG; a
    ``Retry-After`` header is honoured up to ``max_retry_wait`` seconds. Any other 4xx is not
    retried. Every failure ends in a one-line :class:`~assay.errors.TargetError`.

    Example
    -------
    >>> t = HttpTarget("http://127.0.0.1:8000/predict", input_shape=(1, 8, 8), num_classes=10,
    ...                output_path="probs", output="probs", query_budget=1000)  # doctest: +SKIP
    >>> t.labels(x)                                                            # doctest: +SKIP
    """

    kind = "http"
    remote = True

    def __init__(
        self,
        url: str,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        request_template: dict | None = None,
        input_key: str = "inputs",
        output_path: str = "scores",
        output: str = "logits",
        batch: bool = True,
        encoding: str = "list",
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_wait: float = 30.0,
        seed: int = 0,
        query_budget: int | None = None,
        cache: bool = True,
        bounds: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 64,
        name: str | None = None,
    ):
        import httpx

        if not str(url).startswith(("http://", "https://")):
            raise TargetError(f"URL {url!r} must start with http:// or https://")
        if output not in ("logits", "probs", "labels"):
            raise TargetError(f"output={output!r} is not one of logits, probs, labels")
        if encoding not in ("list", "b64"):
            raise TargetError(f"encoding={encoding!r} is not one of list, b64")
        if input_shape is None or num_classes is None:
            raise TargetError("an HTTP target needs input_shape and num_classes; pass --input-shape and --num-classes")
        if request_template is not None and not isinstance(request_template, dict):
            raise TargetError("request_template must be a JSON object (a dict)")
        self.url = str(url)
        self.output = output
        self.request_template = request_template or {}
        self.input_key = input_key
        self.output_path = output_path
        self.batch = bool(batch)
        self.encoding = encoding
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)
        self.use_cache = bool(cache)
        self._cache: dict[str, torch.Tensor] = {}
        self._store: Path | None = None  # append-only answers file (attach_store)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._httpx = httpx
        self._client = httpx.Client(timeout=self.timeout, headers=headers or {}, follow_redirects=True)
        self.requests_sent = 0  # HTTP requests, retries included
        self.cache_hits = 0  # samples answered from the cache
        self.sleep: Callable[[float], None] = time.sleep
        caps = {LABELS} if output == "labels" else {SCORES, LABELS}
        super().__init__(
            num_classes=num_classes,
            input_shape=tuple(input_shape),
            bounds=bounds,
            capabilities=caps,
            query_budget=query_budget,
            batch_size=batch_size,
            name=name or self.url,
        )

    # --------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ cache
    def _chunked(self, x: torch.Tensor, fn) -> torch.Tensor:
        x = self._check_input(x).detach().to("cpu", torch.float32).contiguous()
        n = x.shape[0]
        if not self.use_cache:
            if not self.budget.can_afford(n):
                self.budget.charge(n)  # raises BudgetExceeded; nothing sent
            return self._check_output(self._send_all(x, fn))
        flat = x.reshape(n, -1).numpy()
        keys = [hashlib.sha256(row.tobytes()).hexdigest() for row in flat]
        with self._lock:
            cached = {k for k in keys if k in self._cache}
        todo: dict[str, int] = {}  # key -> first row with that input
        for i, k in enumerate(keys):
            if k not in cached and k not in todo:
                todo[k] = i
        if not self.budget.can_afford(len(todo)):
            self.budget.charge(len(todo))  # raises BudgetExceeded; nothing sent
        if todo:
            rows = torch.as_tensor(list(todo.values()), dtype=torch.long)
            fresh = self._check_output(self._send_all(x[rows], fn))
            with self._lock:
                for k, out in zip(todo, fresh):
                    self._cache[k] = out
                self._append_to_store(list(todo), fresh, labels=fn != self._scores)
        self.cache_hits += n - len(todo)
        with self._lock:
            outs = [self._cache[k] for k in keys]
        if not outs:
            return torch.empty((0, self.num_classes) if fn == self._scores else (0,))
        return torch.stack(outs)

    def _send_all(self, x: torch.Tensor, fn) -> torch.Tensor:
        outs = []
        for i in range(0, len(x), self.batch_size):
            outs.append(fn(x[i : i + self.batch_size]))  # each attempt is charged in _post
        if not outs:
            return torch.empty((0, self.num_classes) if fn == self._scores else (0,))
        return torch.cat(outs)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # ---------------------------------------------------------- answer store
    def attach_store(self, directory) -> None:
        """Load the answers kept in ``directory`` by an earlier run and keep new ones there.

        One JSON line per answered input: ``{"k": sha256, "t": "s"|"l", "v": [...]}``, appended and
        fsynced after each request; a torn last line (the process was killed mid-write) is ignored.
        The file is keyed by the target's identity (URL and request settings), so answers of one
        endpoint never serve another."""
        if not self.use_cache:
            return
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._store = d / f"http-answers-{self.fingerprint()}.jsonl"
        if not self._store.exists():
            return
        with open(self._store, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    dtype = torch.int64 if rec["t"] == "l" else torch.float32
                    value = torch.tensor(rec["v"], dtype=dtype)
                except (ValueError, KeyError, TypeError):
                    continue  # a torn write: that answer is simply asked again
                self._cache[rec["k"]] = value

    def _append_to_store(self, keys: list[str], values: torch.Tensor, labels: bool) -> None:
        if self._store is None:
            return
        kind = "l" if labels else "s"
        lines = "".join(json.dumps({"k": k, "t": kind, "v": v.tolist()}) + "\n" for k, v in zip(keys, values))
        with open(self._store, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    # ---------------------------------------------------------------- queries
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        return self._query(x, labels=False)

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._query(x, labels=True)

    def _query(self, x: torch.Tensor, labels: bool) -> torch.Tensor:
        a = x.numpy()
        if self.batch:
            return self._parse(self._post(self._body(a), len(a)), len(a), labels)
        return torch.cat([self._parse(self._post(self._body(row), 1), None, labels) for row in a])

    def _body(self, a: np.ndarray) -> dict:
        body = copy.deepcopy(self.request_template)
        if self.encoding == "b64":
            raw = np.ascontiguousarray(a, dtype="<f4").tobytes()
            value: Any = {"b64": base64.b64encode(raw).decode("ascii"), "shape": list(a.shape), "dtype": "float32"}
        else:
            value = a.tolist()
        set_path(body, self.input_key, value)
        return body

    def _parse(self, payload: Any, n: int | None, labels: bool) -> torch.Tensor:
        """``n`` rows for a batch request; ``None`` for a single-sample request."""
        try:
            value = get_path(payload, self.output_path)
        except KeyError as e:
            raise TargetError(
                f"the response from {self.url} has no {e.args[0]!r} (keys: {_keys(payload)}); "
                "set output_path to where the scores are (CLI: --http output_path=a.b)"
            ) from None
        rows = 1 if n is None else n
        want = f"({rows},)" if labels else f"({rows}, {self.num_classes})"
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and n is None:
            arr = arr.reshape(1, *arr.shape)
        ok = arr is not None and (arr.shape == (rows,) if labels else arr.shape == (rows, self.num_classes))
        if not ok:
            shape = "non-numeric" if arr is None else str(arr.shape)
            hint = "; use output='labels' for a label-only endpoint" if not labels and arr is not None and arr.ndim == 1 else ""
            raise TargetError(
                f"the response from {self.url} at {self.output_path!r} has shape {shape}, expected {want}; "
                f"check output_path and --num-classes{hint}"
            )
        if labels:
            if not np.all(arr == np.round(arr)) or arr.min(initial=0) < 0 or arr.max(initial=0) >= self.num_classes:
                raise TargetError(
                    f"the response from {self.url} has labels outside 0..{self.num_classes - 1}; "
                    "the endpoint must return class indices"
                )
            return torch.from_numpy(arr.astype(np.int64))
        return torch.from_numpy(arr.astype(np.float32))

    def _post(self, body: dict, n_samples: int) -> Any:
        """Send ``body`` (carrying ``n_samples`` inputs) with the shared retry rule; every attempt is
        charged before it goes out, retries too: the budget counts what the server receives."""
        def before_attempt():
            self.budget.charge(n_samples)
            self.requests_sent += 1

        return post_json(
            self._client, self.url, body, retries=self.retries, backoff=self.backoff,
            max_retry_wait=self.max_retry_wait, timeout=self.timeout, rng=self._rng, sleep=self.sleep,
            before_attempt=before_attempt,
            rejected_hint="check the URL, headers, request_template and input_key",
            not_json_hint="point the URL at the JSON scoring endpoint",
            failed_hint="check the URL and that the server is up, or raise the timeout / retries "
                        "(CLI: --http timeout=30 --http retries=5)",
        )

    def content_digest(self) -> str:
        """What shapes the answers: the request and response settings (header values hashed here,
        never written to a report: they may hold API keys). The remote model itself is unseen."""
        spec = {"template": self.request_template, "input_key": self.input_key, "output_path": self.output_path,
                "encoding": self.encoding, "batch": self.batch, "headers": dict(self._client.headers)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()

    def describe(self):
        d = super().describe()
        d.update(url=self.url, requests_sent=self.requests_sent, cache_hits=self.cache_hits)
        return d


def _keys(payload: Any) -> str:
    if isinstance(payload, dict):
        return ", ".join(list(map(str, payload))[:8]) or "none"
    return f"a {type(payload).__name__}"
