"""JSON API. Every route needs an API key (``Authorization: Bearer <key>``) or a session cookie
(plus the ``X-CSRF-Token`` header on POST), except the auth routes and the public scoreboard."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import datetime, timezone
from typing import Any, Iterator

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from assay.arena import auth, fastjson
from assay.arena.service import Arena, Outcome
from assay.arena.store import Player
from assay.errors import InputError

MAX_SMALL_BODY = 16_384  # auth, submit and admin bodies


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


async def read_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes: from
    Content-Length before reading anything, and while streaming for chunked bodies."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPException(413, f"body larger than this challenge's limit of {limit} bytes")
        except ValueError:
            raise HTTPException(400, "bad Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"body larger than this challenge's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def small_json(request: Request) -> dict[str, Any]:
    """The body of an auth, submit or admin request: at most 16 KiB of JSON holding an object, with
    its depth and strings checked (:func:`assay.arena.fastjson.parse_body`); 400 when it is not
    acceptable JSON, 422 when it is JSON but not an object."""
    body = await read_capped(request, MAX_SMALL_BODY)
    try:
        data = fastjson.parse_body(body)
    except fastjson.BodyError as e:
        raise HTTPException(400, str(e)) from None
    if not isinstance(data, dict):
        raise HTTPException(422, "body must be a JSON object")
    return data


def _str_field(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise HTTPException(422, f"field {key!r} must be a string")
    return value


EVENT_FIELDS = ("open", "frozen", "recompute_values", "solutions")  # solutions: publish (true) or withdraw


def event_update(data: dict[str, Any]) -> dict[str, bool]:
    """The ``POST /api/admin/event`` body: known keys only, each true or false (read after the
    operator check, so an anonymous body is never parsed further than the JSON)."""
    unknown = sorted(set(data) - set(EVENT_FIELDS))
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown}; allowed: {list(EVENT_FIELDS)}")
    for key, value in data.items():
        if not isinstance(value, bool) and value is not None:
            raise HTTPException(422, f"field {key!r} must be true, false or null")
    return {k: v for k, v in data.items() if v is not None}


MAX_ID = 2**63 - 1  # larger cursors would overflow the databases' integer type
QUERY_LOG_COLUMNS = ("id", "time", "player", "challenge", "cost", "payload_bytes", "payload_sha256", "outcome",
                     "latency_ms")


def csv_lines(rows, columns: tuple[str, ...]) -> Iterator[str]:
    """CSV text, one line at a time: a header, then ``rows`` (dicts). ``time`` becomes ISO 8601 UTC.
    A cell that a spreadsheet would read as a formula (starting with = + - @, tab or CR) gets a
    leading apostrophe (OWASP's advice against CSV injection)."""
    buf = io.StringIO()
    writer = csv.writer(buf)

    def line(values) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow(values)
        return buf.getvalue()

    def cell(key: str, value: Any) -> Any:
        if key == "time" and value is not None:
            return datetime.fromtimestamp(value, timezone.utc).isoformat(timespec="milliseconds")
        if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
            return "'" + value
        return value

    yield line(columns)
    for row in rows:
        yield line([cell(k, row[k]) for k in columns])


def board_json(standings, frozen_at: float | None, by: str) -> dict[str, Any]:
    return {"frozen_at": frozen_at, "by": by, "standings": [
        {"rank": s.rank, "name": s.name, "score": s.score, "solves": s.solves, "last_solve": s.last_solve}
        for s in standings]}


def make_router() -> APIRouter:
    r = APIRouter(prefix="/api")

    @r.post("/register")
    async def register(request: Request):
        data = await small_json(request)
        name, password = _str_field(data, "name"), _str_field(data, "password")
        try:
            Arena.check_registration(name, password)  # a malformed sign-up is not a password attempt
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        if wait := await password_attempt_wait(request):
            raise too_many_attempts(wait)
        try:
            # argon2 runs in a thread: a burst of sign-ups must not stall the scoring traffic
            player, key = await asyncio.to_thread(arena_of(request).register, name, password)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        return {"player_id": player.id, "name": player.name, "api_key": key,
                "note": "store the API key now: it is shown only once"}

    @r.post("/login")
    async def login(request: Request, response: Response):
        data = await small_json(request)
        arena = arena_of(request)
        name, password = _str_field(data, "name"), _str_field(data, "password")  # before the attempt is counted
        if wait := await password_attempt_wait(request):
            raise too_many_attempts(wait)
        player = await asyncio.to_thread(arena.login, name, password)
        if player is None:
            raise HTTPException(401, "wrong name or password")
        csrf = auth.new_token()
        set_session(response, arena, {"pid": player.id, "csrf": csrf})
        return {"ok": True, "name": player.name, "csrf_token": csrf}

    @r.post("/logout")
    async def logout(response: Response):
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return {"ok": True}

    @r.get("/me")
    def me(player: Player = Depends(current_player)):
        return {"player_id": player.id, "name": player.name, "operator": player.is_operator, "team_id": player.team_id}

    @r.post("/me/api-key")
    def rotate(request: Request, player: Player = Depends(current_player)):
        return {"api_key": arena_of(request).rotate_key(player.id), "note": "the previous key no longer works"}

    @r.get("/challenges")
    def challenges(request: Request, player: Player = Depends(current_player)):
        return arena_of(request).challenge_list(player.id)

    @r.get("/challenges/{cid}/artifacts/{name}")
    def artifact(cid: str, name: str, request: Request, player: Player = Depends(current_player)):
        content = arena_of(request).artifact(cid, name)
        if content is None:
            raise HTTPException(404, f"no artifact {name!r} for challenge {cid!r}")
        safe = "".join(c for c in name if c.isalnum() or c in "._-") or "artifact"
        return Response(content, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{safe}"'})

    @r.get("/challenges/{cid}/solution")
    def solution(cid: str, request: Request, player: Player = Depends(current_player)):
        arena = arena_of(request)
        if cid not in arena.specs:
            raise HTTPException(404, f"no challenge {cid!r}")
        if not (player.is_operator or arena.solutions_visible()):
            raise HTTPException(403, "reference solutions are published by the operator after the event closes")
        return arena.solution(cid)

    @r.post("/challenges/{cid}/score")
    async def score(cid: str, request: Request, player: Player = Depends(current_player)):
        arena = arena_of(request)
        spec = arena.specs.get(cid)
        if spec is None:
            raise HTTPException(404, f"no challenge {cid!r}")
        body = await read_capped(request, spec.manifest.max_payload_bytes)
        return respond(await arena.score(player, cid, body))

    @r.post("/challenges/{cid}/submit")
    async def submit(cid: str, request: Request, player: Player = Depends(current_player)):
        data = await small_json(request)
        return respond(arena_of(request).submit(player, cid, data.get("flag")))

    @r.get("/scoreboard")
    def scoreboard(request: Request, by: str = "player"):
        if by not in ("player", "team"):
            raise HTTPException(422, "by must be 'player' or 'team'")
        standings, frozen_at = arena_of(request).scoreboard(by=by)
        return board_json(standings, frozen_at, by)

    @r.post("/teams")
    async def create_team(request: Request, player: Player = Depends(current_player)):
        data = await small_json(request)
        try:
            team = arena_of(request).create_team(player.id, _str_field(data, "name"))
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        return {"team_id": team.id, "name": team.name, "join_code": team.join_code}

    @r.post("/teams/join")
    async def join_team(request: Request, player: Player = Depends(current_player)):
        data = await small_json(request)
        try:
            team = arena_of(request).join_team(player.id, _str_field(data, "join_code"))
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        return {"team_id": team.id, "name": team.name}

    # ------------------------------------------------------------ operator
    def event_json(arena) -> dict[str, Any]:
        st = arena.event()
        return {"open": st.open, "frozen_at": st.frozen_at, "recompute_values": st.recompute_values,
                "solutions_published": arena.solutions_visible()}

    @r.get("/admin/event")
    def get_event(request: Request, _: Player = Depends(operator)):
        return event_json(arena_of(request))

    @r.post("/admin/event")
    async def set_event(request: Request, _: Player = Depends(operator)):
        arena = arena_of(request)
        changes = event_update(await small_json(request))
        try:
            await asyncio.to_thread(arena.set_event, **changes)
        except InputError as e:
            raise HTTPException(409, str(e)) from None
        return event_json(arena)

    @r.get("/admin/submissions")
    def submissions(request: Request, _: Player = Depends(operator)):
        return arena_of(request).submissions()

    @r.get("/admin/queries")
    def queries(request: Request, limit: int = Query(100, ge=1, le=Arena.MAX_PAGE),
                before: int | None = Query(None, ge=1, le=MAX_ID), player: str | None = None,
                challenge: str | None = None, _: Player = Depends(operator)):
        """The query log, newest first, a page at a time: follow ``next`` as ``before``."""
        try:
            rows, nxt = arena_of(request).query_log_page(limit, before, player=player, challenge=challenge)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        return {"rows": rows, "next": nxt}

    @r.get("/admin/queries.csv")
    def queries_csv(request: Request, player: str | None = None, challenge: str | None = None,
                    _: Player = Depends(operator)):
        """The whole query log (or one player's / challenge's) as CSV, streamed page by page."""
        try:
            rows = arena_of(request).query_log_all(player=player, challenge=challenge)
        except InputError as e:
            raise HTTPException(422, str(e)) from None
        return StreamingResponse(csv_lines(rows, QUERY_LOG_COLUMNS), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="query-log.csv"'})

    @r.get("/admin/scoreboard")
    def live_scoreboard(request: Request, by: str = "player", _: Player = Depends(operator)):
        standings, _f = arena_of(request).scoreboard(by=by, live=True)
        return board_json(standings, None, by)

    @r.post("/verify")
    async def verify(request: Request, _: Player = Depends(operator)):
        """Check a (player, challenge, flag) triple with the per-player rule, for external boards."""
        data = await small_json(request)
        record = data.get("record", False)
        if not isinstance(record, bool):
            raise HTTPException(422, "'record' must be true or false")
        out = await asyncio.to_thread(arena_of(request).verify, _str_field(data, "player"), _str_field(data, "challenge"),
                                      _str_field(data, "flag"), record=record)
        return respond(out)

    return r


SCORE_PATH = re.compile(r"^/api/challenges/([^/]+)/score$")


class ScoreFastPath:
    """Pure ASGI middleware serving ``POST /api/challenges/{cid}/score`` with an API key directly,
    without FastAPI's routing, dependency injection and Request objects (the scoring endpoint is
    the one that must sustain hundreds of requests per second). Everything else, including a
    scoring request authenticated by a session cookie, goes on to the application unchanged. The
    answers are the same as the routed endpoint's: ``{"detail": "..."}`` with 401/404/413/422/429."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        match = SCORE_PATH.match(scope["path"])
        if match is None:
            return await self.app(scope, receive, send)
        authorization = declared = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                declared = value
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return await self.app(scope, receive, send)  # session cookie: the routed endpoint
        arena: Arena = scope["app"].state.arena
        player = arena.player_by_key(authorization[7:].strip().decode("latin-1"))
        if player is None:
            return await _send_json(send, 401, {"detail": "invalid API key"})
        cid = match.group(1)
        spec = arena.specs.get(cid)
        if spec is None:
            return await _send_json(send, 404, {"detail": f"no challenge {cid!r}"})
        limit = spec.manifest.max_payload_bytes
        too_big = {"detail": f"body larger than this challenge's limit of {limit} bytes"}
        if declared is not None:
            try:
                if int(declared) > limit:
                    return await _send_json(send, 413, too_big)
            except ValueError:
                return await _send_json(send, 400, {"detail": "bad Content-Length"})
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _send_json(send, 413, too_big)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        out = await arena.score(player, cid, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await _send_json(send, out.status, out.body, out.headers)


async def _send_json(send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = fastjson.dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def set_session(response: Response, arena: Arena, data: dict[str, Any]) -> None:
    response.set_cookie(auth.SESSION_COOKIE, arena.sessions.dump(data), max_age=auth.SESSION_MAX_AGE, httponly=True,
                        samesite="lax", secure=arena.settings.cookie_secure, path="/")
