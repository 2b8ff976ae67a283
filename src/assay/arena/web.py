"""Server-rendered pages (Jinja2, autoescaped), and the API's description (``/openapi.json`` and
its page ``/docs``). Every form carries a CSRF token bound to the signed session cookie; the pages
call the same :class:`Arena` methods as the JSON API."""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from assay.arena import auth, openapi
from assay.arena.deps import MAX_ID, MAX_SMALL_BODY, arena_of, caller, password_attempt_wait, read_capped, set_session
from assay.arena.payload import describe, example
from assay.arena.scoring import Standing
from assay.errors import InputError


class PrintingUndefinedFails(Undefined):
    """A missing template variable may be tested (``{% if error %}``) but not printed: Jinja's default
    prints it as nothing, which is how "Budget:  of 50 queries left" reached players."""

    __str__ = Undefined._fail_with_undefined_error


TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]), undefined=PrintingUndefinedFails)
TEMPLATES.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC" if t else "-"
# CommonMark with raw HTML off: tags in a description are shown as text, never run; markdown-it also
# refuses javascript:, vbscript:, file: and data: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False})


def markdown(text: str) -> Markup:
    """A challenge description (Markdown written by the challenge author) as safe HTML."""
    return Markup(_MARKDOWN.render(text or ""))


def num(value: float | int) -> str:
    """``1200.0`` -> ``1,200``; ``2.5`` -> ``2.5``: no ``.0`` on whole numbers, thousands separated."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.6g}" if abs(value) < 1000 else f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{int(value):,}"


def plural(count: float | int, singular: str, plural_form: str | None = None) -> str:
    """``1 solve``, ``0 solves``, ``2,000 queries`` (pass the plural when it is not singular + s)."""
    return f"{num(count)} {singular if count == 1 else (plural_form or singular + 's')}"


TEMPLATES.filters.update(markdown=markdown, num=num, plural=plural)
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"]


def score_plot_svg(standings: list[Standing], top: int = 10, width: int = 720, height: int = 280) -> str:
    """Cumulative score over time for the ``top`` accounts, as an inline SVG step chart."""
    shown = [s for s in standings[:top] if s.history]
    if not shown:
        return '<p class="muted">No solves yet.</p>'
    t0 = min(s.history[0][0] for s in shown)
    t1 = max(max(s.history[-1][0] for s in shown), t0 + 1.0)
    ymax = max(s.score for s in shown) or 1
    pad_l, pad_r, pad_t, pad_b = 48, 150, 12, 28
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    X = lambda t: pad_l + (t - t0) / (t1 - t0) * pw  # noqa: E731
    Y = lambda v: pad_t + ph - v / ymax * ph  # noqa: E731
    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="score over time" '
             f'xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" class="axis"/>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" class="axis"/>']
    for frac in (0, 0.5, 1):
        v = round(ymax * frac)
        parts.append(f'<text x="{pad_l - 6}" y="{Y(v) + 4:.1f}" text-anchor="end" class="tick">{v}</text>')
    for t, anchor in ((t0, "start"), (t1, "end")):
        parts.append(f'<text x="{X(t):.1f}" y="{height - 8}" text-anchor="{anchor}" class="tick">'
                     f'{time.strftime("%H:%M:%S", time.gmtime(t))}</text>')
    for i, s in enumerate(shown):
        color = PALETTE[i % len(PALETTE)]
        pts, prev = [f"{X(t0):.1f},{Y(0):.1f}"], 0
        for t, v in s.history:
            pts += [f"{X(t):.1f},{Y(prev):.1f}", f"{X(t):.1f},{Y(v):.1f}"]
            prev = v
        pts.append(f"{X(t1):.1f},{Y(prev):.1f}")
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(pts)}"/>')
        parts.append(f'<text x="{pad_l + pw + 8}" y="{pad_t + 14 + 16 * i}" fill="{color}" class="legend">'
                     f'{html.escape(s.name[:18])} ({s.score})</text>')
    parts.append("</svg>")
    return "".join(parts)


def session_of(request: Request) -> tuple[dict[str, Any], bool]:
    """The session data and whether it is new (then it must be set as a cookie)."""
    data = arena_of(request).sessions.load(request.cookies.get(auth.SESSION_COOKIE))
    if data and data.get("csrf"):
        return data, False
    return {"pid": None, "csrf": auth.new_token()}, True


def render(request: Request, template: str, status: int = 200, session: dict[str, Any] | None = None,
           **ctx) -> HTMLResponse:
    """Render ``template``; ``session`` replaces the request's session (e.g. right after registering)."""
    arena = arena_of(request)
    data, fresh = (session, True) if session is not None else session_of(request)
    player = arena.player(int(data["pid"])) if data.get("pid") else None
    page = TEMPLATES.get_template(template).render(player=player, csrf=data["csrf"], event=arena.event(), **ctx)
    resp = HTMLResponse(page, status_code=status)
    if fresh:
        set_session(resp, arena, data)
    return resp


async def form_of(request: Request, limit: int = MAX_SMALL_BODY) -> dict[str, str]:
    """URL-encoded form fields; the CSRF token must match the session's."""
    body = await read_capped(request, limit)
    fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}
    if any("\x00" in k or "\x00" in v for k, v in fields.items()):  # PostgreSQL refuses NUL in text
        raise HTTPException(400, "form fields must not contain NUL characters")
    data, _ = session_of(request)
    if not auth.csrf_ok(data.get("csrf"), fields.get("csrf_token")):
        raise HTTPException(403, "the form expired or came from another site; reload the page and try again")
    return fields


def logged_in(request: Request):
    data, _ = session_of(request)
    player = arena_of(request).player(int(data["pid"])) if data.get("pid") else None
    return player


def too_many_attempts(wait: int) -> str:
    return f"Too many attempts from this address; try again in {wait} s."


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def make_web_router() -> APIRouter:
    r = APIRouter()

    @r.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return redirect("/challenges" if logged_in(request) else "/login")

    @r.get("/register", response_class=HTMLResponse)
    def register_page(request: Request):
        return render(request, "register.html")

    @r.post("/register", response_class=HTMLResponse)
    async def register(request: Request):
        f = await form_of(request)
        arena = arena_of(request)
        name, password = f.get("name", ""), f.get("password", "")
        try:
            arena.check_registration(name, password)  # not a password attempt yet
            if wait := await password_attempt_wait(request):
                return render(request, "register.html", status=429, name=name, error=too_many_attempts(wait))
            player, key = await asyncio.to_thread(arena.register, name, password)
        except InputError as e:
            return render(request, "register.html", status=422, error=str(e), name=name)
        return render(request, "registered.html", session={"pid": player.id, "csrf": auth.new_token()},
                      api_key=key, name=player.name)

    @r.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return render(request, "login.html")

    @r.post("/login", response_class=HTMLResponse)
    async def login(request: Request):
        f = await form_of(request)
        arena = arena_of(request)
        if wait := await password_attempt_wait(request):
            return render(request, "login.html", status=429, error=too_many_attempts(wait))
        player = await asyncio.to_thread(arena.login, f.get("name", ""), f.get("password", ""))
        if player is None:
            return render(request, "login.html", status=401, error="Wrong name or password.")
        resp = redirect("/challenges")
        set_session(resp, arena, {"pid": player.id, "csrf": auth.new_token()})
        return resp

    @r.post("/logout")
    async def logout(request: Request):
        await form_of(request)
        resp = redirect("/login")
        resp.delete_cookie(auth.SESSION_COOKIE, path="/")
        return resp

    @r.get("/challenges", response_class=HTMLResponse)
    def challenges(request: Request):
        player = logged_in(request)
        if player is None:
            return redirect("/login")
        return render(request, "challenges.html", challenges=arena_of(request).challenge_list(player.id))

    def challenge_page(request: Request, cid: str, status: int = 200, **ctx) -> Response:
        player = logged_in(request)
        if player is None:
            return redirect("/login")
        arena = arena_of(request)
        ch = next((c for c in arena.challenge_list(player.id) if c["id"] == cid), None)
        if ch is None:
            raise HTTPException(404, f"no challenge {cid!r}")
        solution = arena.solution(cid) if arena.solutions_visible() else None
        schema = arena.specs[cid].challenge.request_schema()
        return render(request, "challenge.html", status=status, ch=ch, solution=solution, placeholder=describe(schema),
                      examples=openapi.client_examples(str(request.base_url), cid, example(schema)), **ctx)

    @r.get("/challenges/{cid}", response_class=HTMLResponse)
    def challenge(cid: str, request: Request):
        return challenge_page(request, cid)

    @r.post("/challenges/{cid}/query", response_class=HTMLResponse)
    async def query(cid: str, request: Request):
        arena = arena_of(request)
        player = logged_in(request)
        spec = arena.specs.get(cid)
        if player is None or spec is None:
            return redirect("/login" if player is None else "/challenges")
        # URL-encoding can triple the size of a JSON body, so the form gets that much headroom.
        f = await form_of(request, limit=3 * spec.manifest.max_payload_bytes + 1024)
        body = f.get("payload", "").encode()
        if len(body) > spec.manifest.max_payload_bytes:
            return challenge_page(request, cid, 413, payload=f.get("payload", ""),
                                  query_error=f"payload larger than {spec.manifest.max_payload_bytes} bytes")
        out = await arena.score(player, cid, body)
        pretty = json.dumps(out.body.get("result", out.body), indent=2)
        return challenge_page(request, cid, out.status if out.status != 200 else 200, payload=f.get("payload", ""),
                              query_result=pretty if out.status == 200 else None,
                              query_error=out.body.get("detail") if out.status != 200 else None,
                              flag=out.body.get("flag"))

    @r.post("/challenges/{cid}/submit", response_class=HTMLResponse)
    async def submit(cid: str, request: Request):
        arena = arena_of(request)
        player = logged_in(request)
        if player is None:
            return redirect("/login")
        f = await form_of(request)
        out = arena.submit(player, cid, f.get("flag", ""))
        if out.status == 200:
            msg = "Correct! Solved." if out.body.get("correct") else "Incorrect flag."
            return challenge_page(request, cid, submit_message=msg, submit_ok=bool(out.body.get("correct")))
        return challenge_page(request, cid, out.status, submit_message=out.body.get("detail"), submit_ok=False)

    @r.get("/scoreboard", response_class=HTMLResponse)
    def scoreboard(request: Request, by: str = "player"):
        by = "team" if by == "team" else "player"
        standings, frozen_at = arena_of(request).scoreboard(by=by)
        return render(request, "scoreboard.html", standings=standings, frozen_at=frozen_at, by=by,
                      plot=score_plot_svg(standings))

    @r.get("/team", response_class=HTMLResponse)
    def team(request: Request):
        player = logged_in(request)
        if player is None:
            return redirect("/login")
        return render(request, "team.html", team=arena_of(request).team_of(player.id))

    @r.post("/team", response_class=HTMLResponse)
    async def team_action(request: Request):
        player = logged_in(request)
        if player is None:
            return redirect("/login")
        f = await form_of(request)
        arena = arena_of(request)
        try:
            if f.get("action") == "create":
                arena.create_team(player.id, f.get("name", ""))
            else:
                arena.join_team(player.id, f.get("join_code", ""))
        except InputError as e:
            return render(request, "team.html", status=422, team=arena.team_of(player.id), error=str(e))
        return redirect("/team")

    def require_operator(request: Request):
        player = logged_in(request)
        if player is None or not player.is_operator:
            raise HTTPException(403, "operators only")
        return player

    @r.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        require_operator(request)
        return admin_page(request)

    def admin_page(request: Request, status: int = 200, error: str | None = None) -> Response:
        arena = arena_of(request)
        standings, _ = arena.scoreboard(live=True)
        return render(request, "admin.html", status=status, standings=standings, error=error,
                      solutions_published=arena.solutions_visible())

    @r.post("/admin/event")
    async def admin_event(request: Request):
        require_operator(request)
        f = await form_of(request)
        action = f.get("action", "")
        changes = {"open": dict(open=True), "close": dict(open=False), "freeze": dict(frozen=True),
                   "unfreeze": dict(frozen=False), "recompute": dict(recompute_values=True),
                   "frozen_values": dict(recompute_values=False), "publish_solutions": dict(solutions=True),
                   "withdraw_solutions": dict(solutions=False)}.get(action)
        if changes is None:
            raise HTTPException(422, f"unknown action {action!r}")
        try:
            arena_of(request).set_event(**changes)
        except InputError as e:
            return admin_page(request, status=409, error=str(e))
        return redirect("/admin")

    @r.get("/admin/submissions", response_class=HTMLResponse)
    def admin_submissions(request: Request):
        require_operator(request)
        return render(request, "admin_submissions.html", rows=arena_of(request).submissions())

    @r.get("/admin/queries", response_class=HTMLResponse)
    def admin_queries(request: Request, before: int | None = Query(None, ge=1, le=MAX_ID)):
        require_operator(request)
        rows, older = arena_of(request).query_log_page(100, before)
        return render(request, "admin_queries.html", rows=rows, older=older, paged=before is not None)

    # ------------------------------------------------------------ the API's description
    def document(request: Request) -> dict[str, Any]:
        who = caller(request)
        return openapi.build(arena_of(request), operator=bool(who and who.is_operator), base_url=str(request.base_url))

    @r.get("/openapi.json")
    def openapi_json(request: Request):
        # what it lists depends on who asks: never serve one caller's copy to another
        return JSONResponse(document(request), headers={"Cache-Control": "private, no-store",
                                                        "Vary": "Authorization, Cookie"})

    @r.get("/docs", response_class=HTMLResponse)
    def docs(request: Request):
        doc = document(request)
        ops = [(op.get("operationId") or re.sub(r"\W+", "_", f"{method}{path}").strip("_"), path, method.upper(), op)
               for path, item in doc["paths"].items() for method, op in item.items()]
        return render(request, "docs.html", doc=doc, ops=ops, pretty=lambda v: json.dumps(v, indent=1))

    return r
