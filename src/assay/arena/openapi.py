"""The player API described for players: an OpenAPI 3.1 document at ``/openapi.json``, a readable
page of it at ``/docs``, and the copy-paste client examples of each challenge page.

The document is assembled here rather than by FastAPI: the routes read raw bodies (to cap and
screen them before anything is charged, then validate them with the Pydantic models of
:mod:`assay.arena.bodies`, whose JSON Schemas this document carries), and each challenge's scoring
endpoint takes that challenge's own payload. So every challenge gets its own
``POST /api/challenges/<id>/score`` operation whose request and answer schemas are the challenge's
``request_schema()`` / ``response_schema()``. Operator routes are listed only for a logged-in
operator. A test keeps this description and the application's routes in step. The routes serving
it are in :mod:`assay.arena.web`.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from assay.arena import bodies
from assay.arena.payload import example

JSON = "application/json"


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _body(schema: dict[str, Any], example_value: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example_value is not None:
        media["example"] = example_value
    return {"required": True, "content": {JSON: media}}


def _model_body(model: type[bodies.Body]) -> dict[str, Any]:
    """The request body a route validates with ``model``: its schema in components, and its example."""
    examples = (model.model_config.get("json_schema_extra") or {}).get("examples") or [None]
    return _body({"$ref": f"#/components/schemas/{model.__name__}"}, examples[0])


def _ok(schema: dict[str, Any], description: str = "OK", headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required)}


STR, INT, BOOL, NUM = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
NULLABLE_INT, NULLABLE_NUM = {"type": ["integer", "null"]}, {"type": ["number", "null"]}
BAD_BODY = _error("the body is not acceptable JSON (not JSON, nested deeper than 32 levels, or a string "
                  "with a lone surrogate or NUL); nothing was charged")
UNAUTHORISED = _error("no valid API key or session")
PUBLIC: list[dict[str, list]] = []  # an operation's "security" when it needs no authentication
REMAINING = {"schema": INT, "description": "queries left of this challenge's hard total"}


# The request bodies each document describes (a player's document leaves the operator's out).
PLAYER_BODIES = (bodies.Registration, bodies.Login, bodies.FlagSubmission, bodies.TeamName, bodies.JoinCode)
OPERATOR_BODIES = (bodies.EventChange, bodies.FlagCheck)


def _components() -> dict[str, Any]:
    standing = _obj({"rank": INT, "name": STR, "score": INT, "solves": INT, "last_solve": NULLABLE_NUM})
    return {
        "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "`Authorization: Bearer <API key>`: the key shown once at registration "
                                      "(rotate it with `POST /api/me/api-key`)."},
            "session": {"type": "apiKey", "in": "cookie", "name": "arena_session",
                        "description": "The cookie `POST /api/login` sets; every POST with it also needs the "
                                       "`X-CSRF-Token` header that login returns."},
        },
        "schemas": {
            "Error": _obj({"detail": {"type": "string", "description": "one line: what was wrong and the fix"}}),
            "Challenge": _obj({
                "id": STR, "name": STR, "category": STR, "difficulty": STR, "points": INT, "solves": INT,
                "description": {"type": "string", "description": "Markdown"},
                "artifacts": {"type": "array", "items": _obj({"name": STR, "url": STR})},
                "query_budget": INT, "remaining": INT, "rate_per_minute": NUM, "burst": INT, "solved": BOOL}),
            "Standings": _obj({"frozen_at": NULLABLE_NUM, "by": {"enum": ["player", "team"]},
                               "standings": {"type": "array", "items": standing}}),
        },
    }


def _player_paths(challenge_ids: list[str]) -> dict[str, Any]:
    cid = {"name": "cid", "in": "path", "required": True, "schema": {"type": "string", "enum": challenge_ids}}
    return {
        "/api/register": {"post": {
            "summary": "Create a player; the answer holds the API key, shown only this once", "security": PUBLIC,
            "requestBody": _model_body(bodies.Registration),
            "responses": {"200": _ok(_obj({"player_id": INT, "name": STR, "api_key": STR, "note": STR})),
                          "400": BAD_BODY, "422": _error("name taken or not allowed, password too short"),
                          "429": _error("too many password attempts from this address (Retry-After)")}}},
        "/api/login": {"post": {
            "summary": "Log in: sets the session cookie, returns the CSRF token for cookie POSTs", "security": PUBLIC,
            "requestBody": _model_body(bodies.Login),
            "responses": {"200": _ok(_obj({"ok": BOOL, "name": STR, "csrf_token": STR})), "400": BAD_BODY,
                          "401": _error("wrong name or password"), "422": _error("name or password missing"),
                          "429": _error("too many password attempts from this address (Retry-After)")}}},
        "/api/logout": {"post": {"summary": "Drop the session cookie", "security": PUBLIC,
                                 "responses": {"200": _ok(_obj({"ok": BOOL}))}}},
        "/api/me": {"get": {"summary": "Who the credentials belong to",
                            "responses": {"200": _ok(_obj({"player_id": INT, "name": STR, "operator": BOOL,
                                                           "team_id": NULLABLE_INT})), "401": UNAUTHORISED}}},
        "/api/me/api-key": {"post": {"summary": "Issue a new API key; the old one stops working",
                                     "responses": {"200": _ok(_obj({"api_key": STR, "note": STR})),
                                                   "401": UNAUTHORISED}}},
        "/api/challenges": {"get": {
            "summary": "Every challenge with its value, budget left and artifacts",
            "responses": {"200": _ok({"type": "array", "items": {"$ref": "#/components/schemas/Challenge"}}),
                          "401": UNAUTHORISED}}},
        "/api/challenges/{cid}/artifacts/{name}": {"get": {
            "summary": "Download an artifact of a challenge",
            "parameters": [cid, {"name": "name", "in": "path", "required": True, "schema": STR}],
            "responses": {"200": {"description": "the file",
                                  "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}},
                          "401": UNAUTHORISED, "404": _error("no such challenge or artifact")}}},
        "/api/challenges/{cid}/solution": {"get": {
            "summary": "The reference solver and a naive attempt that fails, once the operator publishes them",
            "parameters": [cid],
            "responses": {"200": _ok(_obj({"challenge": STR, "name": STR, "solver": STR, "naive_attempt": STR})),
                          "401": UNAUTHORISED, "403": _error("not published (only after the event closes)"),
                          "404": _error("no such challenge")}}},
        "/api/challenges/{cid}/submit": {"post": {
            "summary": "Submit your flag; a flag is valid for its own player only",
            "parameters": [cid], "requestBody": _model_body(bodies.FlagSubmission),
            "responses": {"200": _ok(_obj({"correct": BOOL}, {"value": INT, "already_solved": BOOL})),
                          "400": BAD_BODY, "401": UNAUTHORISED, "403": _error("the event is closed"),
                          "404": _error("no such challenge"), "422": _error("flag is not a string"),
                          "429": _error("submission limit or rate reached (Retry-After when it refills)")}}},
        "/api/scoreboard": {"get": {
            "summary": "Public standings (honours the operator's freeze)", "security": PUBLIC,
            "parameters": [{"name": "by", "in": "query", "schema": {"enum": ["player", "team"], "default": "player"}}],
            "responses": {"200": _ok({"$ref": "#/components/schemas/Standings"}),
                          "422": _error("by must be player or team")}}},
        "/api/teams": {"post": {
            "summary": "Create a team (you join it); the answer holds its join code",
            "requestBody": _model_body(bodies.TeamName),
            "responses": {"200": _ok(_obj({"team_id": INT, "name": STR, "join_code": STR})), "400": BAD_BODY,
                          "401": UNAUTHORISED, "422": _error("name taken or not allowed")}}},
        "/api/teams/join": {"post": {
            "summary": "Join a team by its join code", "requestBody": _model_body(bodies.JoinCode),
            "responses": {"200": _ok(_obj({"team_id": INT, "name": STR})), "400": BAD_BODY, "401": UNAUTHORISED,
                          "422": _error("unknown join code")}}},
    }


def _score_path(cid: str, spec) -> dict[str, Any]:
    m, ch = spec.manifest, spec.challenge
    request, response = ch.request_schema(), ch.response_schema()
    return {"post": {
        "summary": f"Query {m.name} ({m.category}, {m.points} points)",
        "description": (f"{m.description.strip()}\n\nBudget: {m.query_budget} queries per player, "
                        f"{m.rate_per_minute:g} per minute, burst {m.burst}; body at most {m.max_payload_bytes} bytes."),
        "operationId": f"score_{cid.replace('-', '_')}",
        "requestBody": _body(request, example(request)),
        "responses": {
            "200": _ok(_obj({"result": response, "remaining": INT},
                            {"flag": {"type": "string", "description": "your flag, only when this query solved it"}}),
                       "the model's answer",
                       {"X-Queries-Remaining": REMAINING,
                        "X-RateLimit-Remaining": {"schema": INT, "description": "tokens left in the rate bucket"}}),
            "400": BAD_BODY, "401": UNAUTHORISED, "403": _error("the event is closed"),
            "413": _error(f"body over {m.max_payload_bytes} bytes"),
            "422": _error("the payload does not fit the schema (the detail names the field and the fix); "
                          "nothing is charged"),
            "429": _error("budget exhausted, or the rate limit (then Retry-After says when to retry)"),
        },
    }}


def _operator_paths() -> dict[str, Any]:
    op = [{"apiKey": []}, {"session": []}]
    event = _obj({"open": BOOL, "frozen_at": NULLABLE_NUM, "recompute_values": BOOL, "solutions_published": BOOL})
    forbidden = _error("operators only")
    page = {"name": "player", "in": "query", "schema": STR}, {"name": "challenge", "in": "query", "schema": STR}
    return {
        "/api/admin/event": {
            "get": {"summary": "Event state", "security": op,
                    "responses": {"200": _ok(event), "401": UNAUTHORISED, "403": forbidden}},
            "post": {"summary": "Open/close the event, freeze the board, switch value recomputation, publish "
                                "or withdraw the reference solutions (closed event only)", "security": op,
                     "requestBody": _model_body(bodies.EventChange),
                     "responses": {"200": _ok(event), "400": BAD_BODY, "401": UNAUTHORISED, "403": forbidden,
                                   "409": _error("publishing while the event is open"),
                                   "422": _error("unknown field or not a boolean")}}},
        "/api/admin/submissions": {"get": {"summary": "Latest flag submissions with suspected sharing",
                                           "security": op, "responses": {"200": _ok({"type": "array"}),
                                                                         "401": UNAUTHORISED, "403": forbidden}}},
        "/api/admin/queries": {"get": {
            "summary": "The query log, newest first, a page at a time (pass next as before)", "security": op,
            "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 1000, "default": 100}},
                           {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 1}}, *page],
            "responses": {"200": _ok(_obj({"rows": {"type": "array"}, "next": NULLABLE_INT})),
                          "401": UNAUTHORISED, "403": forbidden, "422": _error("bad limit, cursor or filter")}}},
        "/api/admin/queries.csv": {"get": {
            "summary": "The whole query log as CSV (streamed)", "security": op, "parameters": list(page),
            "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": STR}}},
                          "401": UNAUTHORISED, "403": forbidden}}},
        "/api/admin/scoreboard": {"get": {
            "summary": "Live standings (ignores the freeze)", "security": op,
            "parameters": [{"name": "by", "in": "query", "schema": {"enum": ["player", "team"]}}],
            "responses": {"200": _ok({"$ref": "#/components/schemas/Standings"}), "401": UNAUTHORISED,
                          "403": forbidden}}},
        "/api/verify": {"post": {
            "summary": "Check (and with record, submit) a player's flag for an external scoreboard such as CTFd",
            "security": op, "requestBody": _model_body(bodies.FlagCheck),
            "responses": {"200": _ok(_obj({"valid": BOOL})), "400": BAD_BODY, "401": UNAUTHORISED,
                          "403": _error("operators only, or the event is closed (then event_closed is true)"),
                          "422": _error("a field is missing or not a string"),
                          "429": _error("the player's submission limit")}}},
    }


def build(arena, *, operator: bool, base_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``arena``'s API, as a player (``operator`` False) or the operator
    sees it."""
    try:
        assay_version = version("assay")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        assay_version = "0"
    paths = _player_paths(sorted(arena.specs))
    for cid, spec in sorted(arena.specs.items()):
        paths[f"/api/challenges/{cid}/score"] = _score_path(cid, spec)
    components = _components()
    for model in PLAYER_BODIES + (OPERATOR_BODIES if operator else ()):
        components["schemas"][model.__name__] = model.model_json_schema()
    if operator:
        paths.update(_operator_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "assay arena", "version": assay_version, "description": (
            "The player API of an assay arena event: query each challenge's model under your budget, "
            "receive your own flag when a query reaches the goal, submit it. Authenticate with your API key "
            "(`Authorization: Bearer <key>`). Each challenge has its own scoring operation with its payload's "
            "schema. Malformed bodies are refused with 400/422 before anything is charged.")},
        "servers": [{"url": base_url.rstrip("/")}],
        "security": [{"apiKey": []}, {"session": []}],
        "paths": paths,
        "components": components,
    }


# ---------------------------------------------------------------- copy-paste client examples
def python_literal(value: Any) -> str:
    """``value`` as compact Python source: runs of equal items become ``[item] * n``."""
    if isinstance(value, list):
        if len(value) > 3 and all(v == value[0] for v in value):
            return f"[{python_literal(value[0])}] * {len(value)}"
        return "[" + ", ".join(python_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {python_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool) or value is None:
        return {True: "True", False: "False", None: "None"}[value]
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def client_examples(base_url: str, cid: str, payload: Any) -> dict[str, str]:
    """A curl command and a Python (httpx) script that send ``payload`` to challenge ``cid`` with the
    key in ``$ARENA_KEY``."""
    url = f"{base_url.rstrip('/')}/api/challenges/{cid}/score"
    body = json.dumps(payload, separators=(",", ":")).replace("'", "'\\''")  # inside a shell '...' string
    curl = (f"curl -sS -X POST {url} \\\n  -H \"Authorization: Bearer $ARENA_KEY\" \\\n"
            f"  -H 'Content-Type: application/json' \\\n  -d '{body}'")
    python = (
        "import os\n\nimport httpx\n\n"
        f"URL = {json.dumps(url)}\n"
        "KEY = os.environ[\"ARENA_KEY\"]  # your API key\n\n"
        f"payload = {python_literal(payload)}\n"
        "r = httpx.post(URL, json=payload, headers={\"Authorization\": f\"Bearer {KEY}\"}, timeout=60)\n"
        "answer = r.json()\n"
        "if r.status_code != 200:\n"
        "    raise SystemExit(f\"{r.status_code}: {answer['detail']}\")\n"
        "print(answer[\"result\"], \"queries left:\", answer[\"remaining\"])\n"
        "if \"flag\" in answer:\n"
        "    print(\"your flag:\", answer[\"flag\"])\n"
    )
    return {"curl": curl, "python": python}
