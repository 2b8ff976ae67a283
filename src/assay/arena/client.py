"""``ArenaClient``: talk to an arena server over HTTP with the same four members a solver uses on a
:class:`~assay.arena.challenge.LocalClient` (``score``, ``artifact``, ``remaining``, ``flag``), so a
challenge's reference ``solve(client)`` runs unchanged against a live event."""

from __future__ import annotations

from typing import Any

import httpx

from assay.errors import BudgetExceeded, InputError, TargetError


class ArenaClient:
    """HTTP client for one player (API key), optionally bound to one challenge.

    Parameters
    ----------
    url: the server, e.g. ``http://127.0.0.1:8000``.
    api_key: the key shown at registration.
    challenge: bind ``score(payload)``/``artifact(name)``/``submit(flag)`` to this challenge id.

    Example
    -------
    >>> c = ArenaClient("http://127.0.0.1:8000", "ak_...", challenge="hotdog")  # doctest: +SKIP
    >>> out = c.score({"input": [[0.0] * 8] * 8}); c.remaining  # doctest: +SKIP
    """

    def __init__(self, url: str, api_key: str, challenge: str | None = None, timeout: float = 60.0):
        self.url = check_url(url)
        self.challenge = challenge
        self.remaining: int | None = None
        self.flag: str | None = None
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def bind(self, challenge: str) -> ArenaClient:
        self.challenge = challenge
        return self

    def _cid(self, cid: str | None) -> str:
        cid = cid or self.challenge
        if not cid:
            raise InputError("no challenge given; pass challenge_id or create ArenaClient(..., challenge=ID)")
        return cid

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One HTTP request; a network failure becomes a one-line TargetError naming the URL, since an
        unreachable or hanging server is a setup problem, not a bug."""
        try:
            return self._http.request(method, path, **kw)
        except httpx.TimeoutException as e:
            raise TargetError(f"the arena at {self.url} did not answer within {self.timeout:g}s "
                              f"({type(e).__name__}); check that the server runs and is not overloaded") from None
        except httpx.ConnectError as e:
            reason = "connection refused" if "refused" in str(e).lower() else (str(e) or type(e).__name__)
            raise TargetError(f"cannot reach the arena at {self.url} ({reason}); check --url and that the "
                              "server runs") from None
        except httpx.TransportError as e:  # protocol errors, dropped connections, proxies
            raise TargetError(f"request to the arena at {self.url} failed ({type(e).__name__}: {e}); check --url "
                              "and that it is an assay arena server") from None

    def _json(self, r: httpx.Response) -> Any:
        """The body of a successful answer; anything but JSON means --url is not an arena server."""
        self._check(r)  # outside the try: its InputError is a ValueError too
        try:
            return r.json()
        except ValueError:
            raise TargetError(f"{self.url} answered {r.status_code} without JSON; check that --url is an assay "
                              "arena server") from None

    def _check(self, r: httpx.Response) -> Any:
        detail = None
        try:
            detail = r.json().get("detail") if r.status_code >= 400 else None
        except (ValueError, AttributeError):
            pass
        if r.status_code == 429:
            raise BudgetExceeded(detail or "query budget or rate limit exceeded")
        if r.status_code in (400, 413, 422):
            raise InputError(detail or f"the server refused the input ({r.status_code})")
        if r.status_code >= 400:
            raise TargetError(f"arena answered {r.status_code}: {detail or r.text[:200]}")
        return r

    def score(self, *args: Any) -> dict[str, Any]:
        """``score(payload)`` (bound) or ``score(challenge_id, payload)``: the model's output, with
        ``remaining`` and, once the goal is reached, ``flag`` merged in (as LocalClient does)."""
        if len(args) == 1:
            cid, payload = self._cid(None), args[0]
        elif len(args) == 2:
            cid, payload = args
        else:
            raise InputError("score takes (payload) or (challenge_id, payload)")
        r = self._request("POST", f"/api/challenges/{cid}/score", json=payload)
        if r.status_code == 429 and "X-Queries-Remaining" in r.headers:
            self.remaining = int(r.headers["X-Queries-Remaining"])
        body = self._json(r)
        if not isinstance(body, dict) or "remaining" not in body or "result" not in body:
            raise TargetError(f"{self.url} answered without 'result' and 'remaining'; check that --url is an "
                              "assay arena server")
        self.remaining = body["remaining"]
        out = dict(body["result"])
        if "flag" in body:
            self.flag = out["flag"] = body["flag"]
        out["remaining"] = self.remaining
        return out

    def artifact(self, name: str, challenge_id: str | None = None) -> bytes:
        return self._check(self._request("GET", f"/api/challenges/{self._cid(challenge_id)}/artifacts/{name}")).content

    def submit(self, flag: str | None = None, challenge_id: str | None = None) -> bool:
        """Submit ``flag`` (default: the one this client received); True when correct."""
        flag = flag or self.flag
        if not flag:
            raise InputError("no flag to submit: solve the challenge first or pass one")
        r = self._request("POST", f"/api/challenges/{self._cid(challenge_id)}/submit", json={"flag": flag})
        body = self._json(r)
        if not isinstance(body, dict) or "correct" not in body:
            raise TargetError(f"{self.url} answered without 'correct'; check that --url is an assay arena server")
        return bool(body["correct"])

    def challenges(self) -> list[dict[str, Any]]:
        return self._json(self._request("GET", "/api/challenges"))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ArenaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_url(url: str) -> str:
    """``url`` without a trailing slash, or an InputError when it is not an http(s) URL with a host
    (httpx would otherwise fail later with UnsupportedProtocol on ``127.0.0.1:8000``)."""
    hint = "give the full address, e.g. --url http://127.0.0.1:8000"
    try:
        parsed = httpx.URL(url)
        parsed.port  # noqa: B018  (parses the port: 'h:abc' fails here)
    except (httpx.InvalidURL, ValueError) as e:
        raise InputError(f"bad arena URL {url!r} ({e}); {hint}") from None
    if parsed.scheme not in ("http", "https"):
        raise InputError(f"arena URL {url!r} needs http:// or https://; {hint}")
    if not parsed.host:
        raise InputError(f"arena URL {url!r} names no host; {hint}")
    return url.rstrip("/")
