"""The server-rendered pages: what a player reads on them (budgets, numbers, plurals, descriptions,
client examples), rendered through the real routes."""

from __future__ import annotations

import html
import re

from arena_helpers import hdr, register


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def web_login(client, name: str, password: str = "password123") -> str:
    page = client.get("/login")
    client.post("/login", data={"name": name, "password": password, "csrf_token": csrf_of(page.text)})
    return csrf_of(client.get("/challenges").text)


def budget_left(html: str) -> str:
    return re.search(r'Budget: <span id="budget-left">([^<]*)</span> of ([\d,]+) queries left', html).groups()


def test_challenge_page_shows_the_budget_left_before_and_after_queries(arena_app):
    client, arena = arena_app
    register(client, "alice")
    token = web_login(client, "alice")
    assert budget_left(client.get("/challenges/linear").text) == ("20", "20")  # was "Budget:  of 20"
    q = client.post("/challenges/linear/query", data={"payload": '{"xs": [[0, 0, 0, 0], [1, 1, 1, 1]]}',
                                                     "csrf_token": token})
    assert q.status_code == 200 and budget_left(q.text) == ("18", "20")
    bad = client.post("/challenges/linear/query", data={"payload": '{"x": 3}', "csrf_token": token})
    assert bad.status_code == 422 and budget_left(bad.text) == ("18", "20")  # a refused payload is refunded
    assert budget_left(client.get("/challenges/linear").text) == ("18", "20")


def test_every_page_renders_for_the_operator_without_missing_values(arena_app):
    # Templates refuse to print an undefined variable (web.PrintingUndefinedFails): a page that
    # would show an empty value answers 500 instead, and this crawl would catch it.
    client, arena = arena_app
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})
    for url in ("/register", "/login", "/challenges", "/challenges/linear", "/challenges/linear2", "/scoreboard",
                "/scoreboard?by=team", "/team", "/admin", "/admin/submissions", "/admin/queries"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code)


HOSTILE = """Read **this** and the `code`.

<script>alert('x')</script> <img src=x onerror="alert(1)"> [click](javascript:alert(1)) [docs](https://example.org/a)

- one
- two"""


def web_app(tmp_path, challenge_dir):
    from arena_helpers import built_arena, make_settings
    from fastapi.testclient import TestClient

    from assay.arena.app import create_app

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    return TestClient(create_app(arena.settings, arena)), arena


def test_descriptions_are_safe_markdown(tmp_path):
    from arena_helpers import write_linear_challenge

    write_linear_challenge(tmp_path / "ch", "linear", description=HOSTILE)
    client, arena = web_app(tmp_path, tmp_path / "ch")
    register(client, "alice")
    web_login(client, "alice")
    page = client.get("/challenges/linear").text
    desc = re.search(r'<div class="card description" id="description">(.*?)</div>', page, re.S).group(1)
    assert "<strong>this</strong>" in desc and "<code>code</code>" in desc and "<li>two</li>" in desc
    assert '<a href="https://example.org/a">docs</a>' in desc
    assert "<script" not in desc and "<img" not in desc
    assert "&lt;script&gt;alert" in desc  # raw HTML is shown as text, never run
    assert 'href="javascript' not in desc
    arena.store.dispose()


def test_the_placeholder_comes_from_the_challenges_request_schema(arena_app):
    client, arena = arena_app
    register(client, "alice")
    web_login(client, "alice")
    page = client.get("/challenges/linear").text
    placeholder = html.unescape(re.search(r'<textarea name="payload"[^>]*placeholder="([^"]*)"', page).group(1))
    assert placeholder == '{"x": <4 numbers in [-1, 1]>} or {"xs": [<4 numbers in [-1, 1]>, ... (1 to 16)]}'


def test_plurals_and_numbers_read_naturally(tmp_path):
    from arena_helpers import write_linear_challenge

    from assay.arena.flags import flag_for

    write_linear_challenge(tmp_path / "ch", "big", points=1, query_budget=3000, rate_per_minute=1200.0, burst=300,
                           max_payload_bytes=4096)
    client, arena = web_app(tmp_path, tmp_path / "ch")
    players = [register(client, n) for n in ("alice", "bob")]
    web_login(client, "alice")
    meta = lambda: re.sub(r"<[^>]+>", "", re.search(r'<p class="meta">(.*?)</p>', client.get("/challenges/big").text,  # noqa: E731
                                                    re.S).group(1))
    assert meta().endswith("1 point · 0 solves")  # was "1 points · 0 solves"
    budget = re.sub(r"<[^>]+>", "", re.search(r'<p class="muted" id="budget">(.*?)</p>', client.get("/challenges/big").text,
                                               re.S).group(1))
    assert budget.startswith("Budget: 3,000 of 3,000 queries left; 1,200 per minute, burst 300.")  # was "1200.0"
    for i, h in enumerate(players, start=1):
        client.post("/api/challenges/big/submit", json={"flag": flag_for(arena.settings.secret, h["_id"], "big")},
                    headers=hdr(h))
        assert meta().endswith(f"1 point · {i} solve{'s' if i > 1 else ''}")
    arena.store.dispose()


def test_filters_plural_and_num():
    from assay.arena.web import num, plural

    assert [num(v) for v in (120.0, 1200.0, 3000, 2.5, 0.125, 1234567.5, 0)] == \
        ["120", "1,200", "3,000", "2.5", "0.125", "1,234,567.5", "0"]
    assert plural(1, "solve") == "1 solve" and plural(0, "solve") == "0 solves"
    assert plural(2000, "query", "queries") == "2,000 queries" and plural(1, "query", "queries") == "1 query"
