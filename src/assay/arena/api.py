"""JSON API. Every route needs an API key (``Authorization: Bearer <key>``) or a session cookie
(plus the ``X-CSRF-Token`` header on POST), except the auth routes and the public scoreboard."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from assay.arena import auth, fastjson
from assay.arena.bodies import EventChange, FlagCheck, FlagSubmission, JoinCode, Login, Registration, TeamName
from assay.arena.deps import (
    MAX_ID,
    arena_of,
    current_player,
    operator,
    password_attempt_wait,
    read_body,
    read_limited,
    respond,
    set_session,
    too_many_attempts,
)
from assay.arena.service import Arena, Outcome
from assay.arena.store import Player
from assay.errors import InputError

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
            return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")
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
        data = await read_body(request, Registration)
        Arena.check_registration(data.name, data.password)  # a malformed sign-up is not a password attempt
        if wait := await password_attempt_wait(request):
            raise too_many_attempts(wait)
        # argon2 runs in a thread: a burst of sign-ups must not stall the scoring traffic
        player, key = await asyncio.to_thread(arena_of(request).register, data.name, data.password)
        return {"player_id": player.id, "name": player.name, "api_key": key,
                "note": "store the API key now: it is shown only once"}

    @r.post("/login")
    async def login(request: Request, response: Response):
        data = await read_body(request, Login)  # before the attempt is counted
        arena = arena_of(request)
        if wait := await password_attempt_wait(request):
            raise too_many_attempts(wait)
        player = await asyncio.to_thread(arena.login, data.name, data.password)
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
        # the session-cookie path; API keys are served by ScoreFastPath, with the same answers
        out = await score_request(arena_of(request), player, cid, request.receive, request.headers.get("content-length"))
        if out is None:
            raise ClientDisconnect()
        return respond(out)

    @r.post("/challenges/{cid}/submit")
    async def submit(cid: str, request: Request, player: Player = Depends(current_player)):
        data = await read_body(request, FlagSubmission)
        return respond(arena_of(request).submit(player, cid, data.flag))

    @r.get("/scoreboard")
    def scoreboard(request: Request, by: str = "player"):
        if by not in ("player", "team"):
            raise HTTPException(422, "by must be 'player' or 'team'")
        standings, frozen_at = arena_of(request).scoreboard(by=by)
        return board_json(standings, frozen_at, by)

    @r.post("/teams")
    async def create_team(request: Request, player: Player = Depends(current_player)):
        data = await read_body(request, TeamName)
        team = arena_of(request).create_team(player.id, data.name)
        return {"team_id": team.id, "name": team.name, "join_code": team.join_code}

    @r.post("/teams/join")
    async def join_team(request: Request, player: Player = Depends(current_player)):
        data = await read_body(request, JoinCode)
        team = arena_of(request).join_team(player.id, data.join_code)
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
        # the body is read after the operator check: an anonymous body is never parsed further than the JSON
        changes = await read_body(request, EventChange)
        arena = arena_of(request)
        try:
            await asyncio.to_thread(arena.set_event, **changes.model_dump(exclude_none=True))
        except InputError as e:  # publishing while the event is open
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
        rows, nxt = arena_of(request).query_log_page(limit, before, player=player, challenge=challenge)
        return {"rows": rows, "next": nxt}

    @r.get("/admin/queries.csv")
    def queries_csv(request: Request, player: str | None = None, challenge: str | None = None,
                    _: Player = Depends(operator)):
        """The whole query log (or one player's / challenge's) as CSV, streamed page by page."""
        rows = arena_of(request).query_log_all(player=player, challenge=challenge)
        return StreamingResponse(csv_lines(rows, QUERY_LOG_COLUMNS), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": 'attachment; filename="query-log.csv"'})

    @r.get("/admin/scoreboard")
    def live_scoreboard(request: Request, by: str = "player", _: Player = Depends(operator)):
        standings, _f = arena_of(request).scoreboard(by=by, live=True)
        return board_json(standings, None, by)

    @r.post("/verify")
    async def verify(request: Request, _: Player = Depends(operator)):
        """Check a (player, challenge, flag) triple with the per-player rule, for external boards."""
        data = await read_body(request, FlagCheck)
        return respond(await asyncio.to_thread(arena_of(request).verify, data.player, data.challenge, data.flag,
                                               record=data.record))

    return r


async def score_request(arena: Arena, player: Player, cid: str, receive, declared: bytes | str | None) -> Outcome | None:
    """One scoring request after authentication, for the routed endpoint and the fast path alike:
    404 for an unknown challenge, the body read under the challenge's size cap (413/400), then
    :meth:`Arena.score`. None when the client went away."""
    spec = arena.specs.get(cid)
    if spec is None:
        return Outcome(404, {"detail": f"no challenge {cid!r}"})
    try:
        body = await read_limited(receive, declared, spec.manifest.max_payload_bytes)
    except HTTPException as e:
        return Outcome(e.status_code, {"detail": e.detail})
    except ClientDisconnect:
        return None
    return await arena.score(player, cid, body)


SCORE_PATH = re.compile(r"^/api/challenges/([^/]+)/score$")


class ScoreFastPath:
    """Pure ASGI middleware serving ``POST /api/challenges/{cid}/score`` with an API key directly,
    without FastAPI's routing, dependency injection and Request objects (the scoring endpoint is
    the one that must sustain hundreds of requests per second). Everything else, including a
    scoring request authenticated by a session cookie, goes on to the application unchanged. The
    answers are the routed endpoint's (:func:`score_request` serves both)."""

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
        out = await score_request(arena, player, match.group(1), receive, declared)
        if out is not None:
            await _send_json(send, out.status, out.body, out.headers)


async def _send_json(send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    data = fastjson.dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if headers:
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
