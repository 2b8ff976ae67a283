"""What the JSON API (``api.py``) and the web pages (``web.py``) share: the arena behind a request,
who is calling, request bodies read under a size cap and checked, the session cookie."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from assay.arena import auth, bodies, fastjson
from assay.arena.service import Arena, Outcome
from assay.arena.store import Player

MAX_SMALL_BODY = 16_384  # auth, submit and admin bodies, and the web forms
MAX_ID = 2**63 - 1  # larger cursors would overflow the databases' integer type
B = TypeVar("B", bound=bodies.Body)


def arena_of(request: Request) -> Arena:
    return request.app.state.arena


def current_player(request: Request) -> Player:
    """The authenticated player: API key first, else the session cookie (CSRF-checked on writes)."""
    arena = arena_of(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        player = arena.player_by_key(header[7:].strip())
        if player is None:
            raise HTTPException(401, "invalid API key")
        return player
    data = arena.sessions.load(request.cookies.get(auth.SESSION_COOKIE))
    if data and data.get("pid"):
        if request.method not in ("GET", "HEAD") and not auth.csrf_ok(data.get("csrf"), request.headers.get("x-csrf-token")):
            raise HTTPException(403, "missing or wrong X-CSRF-Token header")
        player = arena.player(int(data["pid"]))
        if player is not None:
            return player
    raise HTTPException(401, "authentication required: send 'Authorization: Bearer <api key>' or log in")


def caller(request: Request) -> Player | None:
    """The authenticated player, or None (never refuses): for answers that show some callers more."""
    try:
        return current_player(request)
    except HTTPException:
        return None


def operator(player: Player = Depends(current_player)) -> Player:
    if not player.is_operator:
        raise HTTPException(403, "operators only")
    return player


async def password_attempt_wait(request: Request) -> int:
    """Seconds this client must wait before another password attempt (0: go ahead); see
    :class:`assay.arena.budgets.AttemptLimiter`. A database write: run off the event loop."""
    client = request.client.host if request.client else "unknown"
    return await asyncio.to_thread(arena_of(request).password_attempts.take, client)


def too_many_attempts(wait: int) -> HTTPException:
    return HTTPException(429, f"too many login or registration attempts from this address; retry in {wait} s",
                         headers={"Retry-After": str(wait)})


def respond(outcome: Outcome) -> JSONResponse:
    return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)


async def read_limited(receive, declared: bytes | str | None, limit: int) -> bytes:
    """A request body from the ASGI ``receive`` channel, refused with 413 as soon as it is known to
    exceed ``limit`` bytes: from the Content-Length value ``declared`` before reading anything, and
    while streaming for chunked bodies (400 for a Content-Length that is not a number). Raises
    ClientDisconnect when the client goes away. The scoring fast path reads with it too."""
    too_big = f"body larger than this challenge's limit of {limit} bytes"
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(413, too_big)
        except ValueError:
            raise HTTPException(400, "bad Content-Length") from None
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, too_big)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_capped(request: Request, limit: int) -> bytes:
    """The request's body under ``limit`` bytes (:func:`read_limited`)."""
    return await read_limited(request.receive, request.headers.get("content-length"), limit)


async def read_body(request: Request, model: type[B]) -> B:
    """A JSON body of at most :data:`MAX_SMALL_BODY` bytes as ``model``: 400 when it is not
    acceptable JSON (:func:`assay.arena.fastjson.parse_body`: not JSON, too deep, lone surrogates,
    NUL), an InputError (answered 422) when it does not fit the model."""
    try:
        data = fastjson.parse_body(await read_capped(request, MAX_SMALL_BODY))
    except fastjson.BodyError as e:
        raise HTTPException(400, str(e)) from None
    return bodies.parse(model, data)


def set_session(response: Response, arena: Arena, data: dict[str, Any]) -> None:
    response.set_cookie(auth.SESSION_COOKIE, arena.sessions.dump(data), max_age=auth.SESSION_MAX_AGE, httponly=True,
                        samesite="lax", secure=arena.settings.cookie_secure, path="/")
