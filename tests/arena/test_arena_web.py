"""The server-rendered pages: what a player reads on them (budgets, numbers, plurals, descriptions,
client examples), rendered through the real routes."""

from __future__ import annotations

import re

from arena_helpers import register


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
