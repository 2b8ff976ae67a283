"""The OpenAPI description of the player API (/openapi.json, /docs): a valid OpenAPI 3.1 document
that matches the application's routes, gives every challenge its own request and answer schema,
shows operator routes to the operator only, and describes the answers the server really sends.
Each challenge page's curl and Python examples run as printed."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys

import httpx
from arena_helpers import LiveServer, all_routes, built_arena, hdr, make_settings, register
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from sqlalchemy import select

from assay.arena.store import Budget

OPERATOR_PREFIXES = ("/api/admin", "/api/verify")


def api_routes(app, specs) -> set[tuple[str, str]]:
    """(method, path) of every /api route, the scoring route expanded per challenge as documented."""
    out = set()
    for path, methods in all_routes(app.routes):
        if not path.startswith("/api/"):
            continue
        paths = [path.replace("{cid}", cid) for cid in specs] if path.endswith("{cid}/score") else [path]
        out |= {(m.lower(), p) for m in methods - {"HEAD"} for p in paths}
    return out


def documented(doc) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item}


def test_the_description_is_valid_openapi_and_matches_the_routes(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    anonymous = client.get("/openapi.json")
    assert anonymous.status_code == 200 and "private" in anonymous.headers["cache-control"]
    player = client.get("/openapi.json", headers=hdr(h)).json()
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})
    operator = client.get("/openapi.json").json()
    for doc in (anonymous.json(), player, operator):
        validate(doc)  # openapi-spec-validator: the OpenAPI 3.1 schema, references, parameters
        assert doc["openapi"] == "3.1.0"
    routes = api_routes(client.app, arena.specs)
    assert documented(operator) == routes  # nothing missing, nothing invented
    operator_only = {(m, p) for m, p in routes if p.startswith(OPERATOR_PREFIXES)}
    assert operator_only and documented(player) == routes - operator_only == documented(anonymous.json())
    assert not any(p.startswith(OPERATOR_PREFIXES) for p in player["paths"])


def test_each_challenge_has_its_own_schemas_and_the_server_answers_match_them(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    doc = client.get("/openapi.json", headers=hdr(h)).json()
    for cid, spec in arena.specs.items():
        op = doc["paths"][f"/api/challenges/{cid}/score"]["post"]
        body = op["requestBody"]["content"]["application/json"]
        assert body["schema"] == spec.challenge.request_schema()
        Draft202012Validator(body["schema"]).validate(body["example"])
        answer = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert answer["properties"]["result"] == spec.challenge.response_schema()
        # a real answer to the documented example, as the server sends it, fits the documented answer
        r = client.post(f"/api/challenges/{cid}/score", json=body["example"], headers=hdr(h))
        assert r.status_code == 200, r.text
        Draft202012Validator(answer).validate(r.json())
        assert set(op["responses"]) >= {"200", "400", "401", "403", "413", "422", "429"}
    listing = client.get("/api/challenges", headers=hdr(h)).json()
    challenge_schema = doc["components"]["schemas"]["Challenge"]
    for item in listing:
        Draft202012Validator(challenge_schema).validate(item)


def test_request_bodies_are_documented_by_the_models_the_routes_validate_with(arena_app):
    """Each body's schema in the document is its route's Pydantic model's; the documented example
    fits it; and a body with every field of the wrong type is a 422 naming a field, from any route."""
    from assay.arena import bodies

    client, arena = arena_app
    csrf = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    doc = client.get("/openapi.json").json()
    seen = set()
    for path, item in doc["paths"].items():
        if "post" not in item or "requestBody" not in item["post"] or path.endswith("/score"):
            continue
        media = item["post"]["requestBody"]["content"]["application/json"]
        name = media["schema"]["$ref"].removeprefix("#/components/schemas/")
        schema = doc["components"]["schemas"][name]
        assert schema == getattr(bodies, name).model_json_schema()
        if "example" in media:
            Draft202012Validator(schema).validate(media["example"])
        wrong = {field: 12345 for field in schema["properties"]}
        r = client.post(path.replace("{cid}", "linear"), json=wrong, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 422 and any(field in r.json()["detail"] for field in wrong), (path, r.text)
        seen.add(name)
    assert seen == {"Registration", "Login", "FlagSubmission", "TeamName", "JoinCode", "EventChange", "FlagCheck"}
    with arena.store.session() as session:  # nothing was charged: not even a budget row exists
        assert session.scalars(select(Budget)).all() == []


def test_the_docs_page_lists_the_operations_and_hides_operator_ones_from_players(arena_app):
    client, arena = arena_app
    register(client, "alice")
    client.post("/api/login", json={"name": "alice", "password": "password123"})
    page = client.get("/docs")
    assert page.status_code == 200 and 'href="/openapi.json"' in page.text
    assert 'id="score_linear"' in page.text and "POST /api/challenges/linear/submit" not in page.text
    assert "POST /api/challenges/{cid}/submit" in page.text and "/api/admin" not in page.text
    client.cookies.clear()
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})
    assert "GET /api/admin/queries" in client.get("/docs").text


def test_the_challenge_pages_client_examples_run_as_printed(tmp_path, challenge_dir):
    from assay.arena.app import create_app

    settings = make_settings(tmp_path, challenge_dir)
    arena = built_arena(settings)
    _, key = arena.register("alice", "password123")
    with LiveServer(create_app(settings, arena)) as server, httpx.Client(base_url=server.url) as web:
        web.post("/api/login", json={"name": "alice", "password": "password123"})
        page = web.get("/challenges/linear").text
        python = html.unescape(re.search(r'<pre id="example-python">(.*?)</pre>', page, re.S).group(1))
        curl = html.unescape(re.search(r'<pre id="example-curl">(.*?)</pre>', page, re.S).group(1))
        assert server.url in python and server.url in curl
        env = {**os.environ, "ARENA_KEY": key}
        out = subprocess.run([sys.executable, "-c", python], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "{'scores': [0.0]} queries left: 19"
        has_curl = shutil.which("curl") is not None
        if has_curl:
            out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, env=env, timeout=60)
            assert out.returncode == 0 and '"remaining":18' in out.stdout.replace(" ", ""), out.stdout + out.stderr
    assert arena.budgets.used(arena.store.player_by_name("alice").id, "linear") == 1 + has_curl
    arena.store.dispose()
