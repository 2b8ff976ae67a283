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
        self.url = url.rstrip("/")
        self.challenge = challenge
        self.remaining: int | None = None
        self.flag: str | None = None
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def bind(self, challenge: str) -> "ArenaClient":
        self.challenge = challenge
        return self

    def _cid(self, cid: str | None) -> str:
        cid = cid or self.challenge
        if not cid:
            raise InputError("no challenge given; pass challenge_id or create ArenaClient(..., challenge=ID)")
        return cid

    def _check(self, r: httpx.Response) -> Any:
        detail = None
        try:
            detail = r.json().get("detail") if r.status_code >= 400 else None
        except (ValueError, AttributeError):
            pass
        if r.status_code == 429:
            raise BudgetExceeded(detail or "query budget or rate limit exceeded")
        if r.status_code in (413, 422):
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
        r = self._http.post(f"/api/challenges/{cid}/score", json=payload)
        if r.status_code == 429 and "X-Queries-Remaining" in r.headers:
            self.remaining = int(r.headers["X-Queries-Remaining"])
        body = self._check(r).json()
        self.remaining = body["remaining"]
        out = dict(body["result"])
        if "flag" in body:
            self.flag = out["flag"] = body["flag"]
        out["remaining"] = self.remaining
        return out

    def artifact(self, name: str, challenge_id: str | None = None) -> bytes:
        return self._check(self._http.get(f"/api/challenges/{self._cid(challenge_id)}/artifacts/{name}")).content

    def submit(self, flag: str | None = None, challenge_id: str | None = None) -> bool:
        """Submit ``flag`` (default: the one this client received); True when correct."""
        flag = flag or self.flag
        if not flag:
            raise InputError("no flag to submit: solve the challenge first or pass one")
        r = self._http.post(f"/api/challenges/{self._cid(challenge_id)}/submit", json={"flag": flag})
        return bool(self._check(r).json()["correct"])

    def challenges(self) -> list[dict[str, Any]]:
        return self._check(self._http.get("/api/challenges")).json()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ArenaClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
