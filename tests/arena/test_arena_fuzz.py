"""Fuzz every arena route with hostile bodies: random JSON, deep nesting, lone surrogates and NUL,
huge numbers, wrong types, bytes that are not UTF-8, hostile form fields and path segments; as an
anonymous caller, a player (API key and session cookie) and the operator. Pass condition: no answer
is a 5xx, and a request refused as malformed (400/413/422) charges nothing: no query budget, no
flag-submission attempt, no password attempt."""

from __future__ import annotations

import random
import re

from arena_helpers import all_routes, hdr, register
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from assay.arena.store import Budget, LoginAttempts

FIELDS = ["name", "password", "flag", "join_code", "player", "challenge", "record", "open", "frozen",
          "recompute_values", "solutions", "x", "xs", "payload", "action", "limit", "before"]
FIXED = [
    b'{"name":' + b"[" * 5000 + b"]" * 5000 + b"}",  # the issue's repro
    b'{"flag":' + b"{\"a\":" * 3000 + b"1" + b"}" * 3000 + b"}",
    b'{"name":"\\ud800","password":"\\ud800"}',
    b'{"flag":"\\udfff"}', b'{"join_code":"\\ud800"}', b'{"name":"x\\u0000y","password":"password123"}',
    b'{"join_code":"\\u0000"}', b'{"player":"\\u0000","challenge":"linear","flag":"\\ud800"}',
    b'{"\\ud800":1}', b'{"x":[1e999,0,0,0]}', b'{"x":[1e308,-1e308,0,0]}', b'{"x":[' + b"9" * 5000 + b",0,0,0]}",
    b'{"xs":[[0,0,0,0]]}' + b" " * 10, b'{"x":"\\ud800"}', b'{"limit":' + b"9" * 400 + b"}",
    b"\xff\xfe\x00", b"", b"null", b"[]", b'"text"', b"123", b"{", b'{"open":"yes"}', b'{"solutions":1}',
    b'{"record":"yes","player":"a","challenge":"linear","flag":"x"}', b'{"open":null,"bogus":[]}',
]
FORMS = [
    "name=%00&password=password123", "name=admin&password=%ED%A0%80", "payload=%7B%22x%22%3A%5B1e999%5D%7D",
    "payload=" + "%5B" * 3000, "flag=%FF%FE", "join_code=%00", "action=%00", "action=close", "name=" + "a" * 5000,
]
SEGMENTS = ["linear", "nope", "%ED%A0%80", "%00", "a" * 300, "..%2F..%2Fsecret"]


def random_text(rng: random.Random) -> str:
    """JSON string source with escapes a client could send: lone surrogates, NUL, astral pairs."""
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.15:
            parts.append(rng.choice(["\\ud800", "\\udfff", "\\u0000", "\\ud83d\\ude00", "\\\\", '\\"']))
        else:
            parts.append(chr(rng.choice([rng.randint(32, 126), rng.randint(0xA0, 0x2FFF), 0x430, 0x391])))
    return '"' + "".join(p if p.startswith("\\") else p.replace("\\", "").replace('"', "") for p in parts) + '"'


def random_json(rng: random.Random, depth: int = 0) -> str:
    r = rng.random()
    if depth > 4 or r < 0.35:
        return rng.choice([
            str(rng.randint(-10, 10)), "1e999", "-1e999", "1e-400", str(10 ** rng.randint(18, 60)),
            "-0.0", "true", "false", "null", random_text(rng), repr(rng.uniform(-1e6, 1e6)),
        ])
    if r < 0.65:
        return "[" + ",".join(random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))) + "]"
    keys = rng.sample(FIELDS, rng.randint(0, 4))
    return "{" + ",".join(f'"{k}":{random_json(rng, depth + 1)}' for k in keys) + "}"


def bodies(rng: random.Random, n_random: int) -> list[bytes]:
    out = list(FIXED)
    out += [random_json(rng).encode("utf-8", "surrogatepass") for _ in range(n_random)]
    out.append(("[" * rng.randint(33, 900) + "]" * 10).encode())  # deep and unbalanced
    return out


def charges(arena) -> tuple[int, int, float]:
    """Queries charged, flag submissions charged, password-attempt tokens left (all accounts)."""
    with arena.store.session() as s:
        used = s.scalar(select(func.coalesce(func.sum(Budget.used), 0)))
        sub_used = s.scalar(select(func.coalesce(func.sum(Budget.sub_used), 0)))
        tokens = s.scalar(select(func.coalesce(func.sum(LoginAttempts.tokens), 0.0)))
    return int(used), int(sub_used), float(tokens)


def test_fuzz_every_route_no_5xx_and_no_charge_for_refused_bodies(arena_app):
    base, arena = arena_app
    arena.password_attempts.burst = 1e6  # a large bucket that barely refills: every attempt shows
    arena.password_attempts.rate = 1e-9
    arena.settings.submit_per_minute = 1e6
    rng = random.Random(20240612)
    client = TestClient(base.app, raise_server_exceptions=False)
    player = register(client, "fuzzer")
    # a cookie session for the player and one for the operator, each with its CSRF token
    cookie_player = TestClient(base.app, raise_server_exceptions=False)
    csrf_player = cookie_player.post("/api/login", json={"name": "fuzzer", "password": "password123"}).json()["csrf_token"]
    operator = TestClient(base.app, raise_server_exceptions=False)
    csrf_op = operator.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', cookie_player.get("/challenges").text).group(1)

    callers = [("anonymous", client, {}), ("api key", client, hdr(player)),
               ("player cookie", cookie_player, {"X-CSRF-Token": csrf_player}),
               ("operator", operator, {"X-CSRF-Token": csrf_op})]
    routes = sorted(all_routes(base.app.routes))
    assert any(p == "/api/challenges/{cid}/submit" for p, _ in routes) and len(routes) >= 30
    failures, sent, before = [], 0, charges(arena)
    for path, methods in routes:
        if "logout" in path:
            continue  # would end the cookie sessions this test relies on
        n_random = 4
        for method in sorted(methods - {"HEAD"}):
            concrete = [path]
            if "{" in path:  # every path parameter gets hostile segments too (the bodies: on the first)
                concrete = [re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m, s=seg: "readme.txt" if m.group(1) == "name" and
                                   s == "linear" else s, path) for seg in SEGMENTS]
            for url in concrete:
                hostile_segment = url != concrete[0]
                for who, c, headers in callers:
                    if who == "api key" and not path.startswith("/api/"):
                        continue  # the web pages read the session cookie only: the same as anonymous
                    if method == "GET":
                        requests = [(url + q, None, {}) for q in ("", "?by=%00", "?by=team&limit=-1",
                                                                  "?limit=99999999999999999999&before=x",
                                                                  "?before=99999999999999999999", "?player=%00",
                                                                  "?challenge=%ED%A0%80&player=a%00b")]
                    elif path.startswith("/api/"):
                        requests = [(url, b, {"Content-Type": "application/json"})
                                    for b in (FIXED[:4] if hostile_segment else bodies(rng, n_random))]
                    else:
                        requests = [(url, f"{f}&csrf_token={form_csrf}".encode(),
                                     {"Content-Type": "application/x-www-form-urlencoded"})
                                    for f in (FORMS[:2] if hostile_segment else FORMS)]
                    for target, body, extra in requests:
                        r = c.request(method, target, content=body, headers={**headers, **extra})
                        sent += 1
                        after = charges(arena) if method != "GET" else before
                        if r.status_code >= 500:
                            failures.append(f"{who}: {method} {target} {body[:60] if body else b''!r} -> "
                                            f"{r.status_code} {r.text[:120]}")
                        elif r.status_code in (400, 413, 422) and (after[:2] != before[:2] or after[2] < before[2] - 0.5):
                            failures.append(f"{who}: {method} {target} {body[:60] if body else b''!r} -> "
                                            f"{r.status_code} but charged {before} -> {after}")
                        before = after
    assert sent > 1000
    assert not failures, f"{len(failures)} of {sent} requests failed:\n" + "\n".join(failures[:30])


def test_issue_repros_answer_400_with_a_clear_message_and_charge_nothing(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    deep = b'{"name":' + b"[" * 5000 + b"]" * 5000 + b"}"
    for url in ("/api/register", "/api/login", "/api/teams", "/api/challenges/linear/submit",
                "/api/challenges/linear/score", "/api/admin/event"):
        body = deep if "score" not in url else b'{"x":' + b"[" * 1000 + b"]" * 1000 + b"}"  # 2 KiB body cap
        r = client.post(url, content=body, headers={**hdr(h), "Content-Type": "application/json"})
        assert r.status_code == (403 if "admin" in url else 400), (url, r.status_code, r.text)
        if r.status_code == 400:
            assert r.json()["detail"] == "JSON nested deeper than 32 levels; no request needs that many"
    lone = b'{"name":"\\ud800","password":"\\ud800","join_code":"\\ud800","flag":"\\ud800"}'
    for url in ("/api/login", "/api/teams/join", "/api/challenges/linear/submit", "/api/challenges/linear/score"):
        r = client.post(url, content=lone, headers={**hdr(h), "Content-Type": "application/json"})
        assert r.status_code == 400 and "lone surrogates" in r.json()["detail"], (url, r.text)
    assert charges(arena)[:2] == (0, 0)  # the submission above used no attempt
    # the same flag as a form field reaches the service, which refuses it before charging too
    assert arena.submit(arena.store.player_by_name("alice"), "linear", "\ud800").status == 422
    assert charges(arena)[:2] == (0, 0)
