"""No response a player can see contains the server secret or a flag that is not their own."""

from __future__ import annotations

import re

from arena_helpers import all_routes, hdr, register

from assay.arena.flags import flag_for


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_crawl_every_route_leaks_no_secret_or_foreign_flag(arena_app):
    client, arena = arena_app
    secret = arena.settings.secret
    alice, bob = register(client, "alice"), register(client, "bob")
    own = flag_for(secret, alice["_id"], "linear")
    # alice solves linear (her own flag may appear), bob solves both; sharing attempt recorded
    x = [1.0 if v >= 0 else -1.0 for v in arena.specs["linear"].challenge.w.tolist()]
    assert client.post("/api/challenges/linear/score", json={"x": x}, headers=hdr(alice)).json()["flag"] == own
    for cid in ("linear", "linear2"):
        client.post(f"/api/challenges/{cid}/submit", json={"flag": flag_for(secret, bob["_id"], cid)}, headers=hdr(bob))
    client.post("/api/challenges/linear/submit", json={"flag": own}, headers=hdr(alice))
    client.post("/api/challenges/linear2/submit", json={"flag": flag_for(secret, bob["_id"], "linear2")},
                headers=hdr(alice))
    forbidden = [secret] + [flag_for(secret, pid, cid) for pid in range(0, 6) for cid in arena.specs
                            if (pid, cid) != (alice["_id"], "linear")]
    forbidden.append(secret[:16])
    client.post("/api/login", json={"name": "alice", "password": "password123"})  # cookie session for web pages

    responses = []
    values = {"cid": "linear", "name": "readme.txt"}
    routes = list(all_routes(client.app.routes))
    assert len(routes) >= 30
    for path, methods in routes:
        concrete = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: values.get(m.group(1), "x"), path)
        for unknown in ("linear", "linear2", "nope"):
            url = concrete.replace("/linear", f"/{unknown}", 1) if "{cid}" in path else concrete
            for method in methods:
                if method == "HEAD":
                    continue
                for headers in (hdr(alice), {}):
                    if method == "GET":
                        responses.append(client.get(url, headers=headers))
                    else:
                        for body in ({"x": [9, 9, 9, 9]}, {"flag": "assay{00}"}, {"name": "zz", "password": "p"}, []):
                            if url.startswith("/logout") or url.startswith("/api/logout"):
                                continue
                            responses.append(client.request(method, url, json=body, headers=headers))
    responses.append(client.get("/does-not-exist"))
    responses.append(client.get("/static/arena.css"))
    assert len(responses) > 60
    for r in responses:
        text = r.text + " ".join(f"{k}: {v}" for k, v in r.headers.items())
        for needle in forbidden:
            assert needle not in text, f"{r.request.method} {r.request.url} leaks a secret/flag"
    # the operator sees the sharing evidence; alice's pages never say it
    assert any(s["suspected_sharing"] for s in arena.submissions())
    assert all("sharing" not in r.text.lower() for r in responses if r.request.url.path.startswith(("/api/ch", "/chall")))


def test_web_forms_need_csrf_and_pages_work(arena_app):
    client, arena = arena_app
    page = client.get("/register")
    assert page.status_code == 200 and "csrf_token" in page.text
    assert client.post("/register", data={"name": "web", "password": "password123"}).status_code == 403
    r = client.post("/register", data={"name": "web", "password": "password123", "csrf_token": _csrf(page.text)})
    assert r.status_code == 200 and "ak_" in r.text
    ch = client.get("/challenges/linear")
    assert ch.status_code == 200 and "readme.txt" in ch.text
    token = _csrf(ch.text)
    q = client.post("/challenges/linear/query", data={"payload": '{"x": [0, 0, 0, 0]}', "csrf_token": token})
    assert q.status_code == 200 and "scores" in q.text and 'id="flag"' not in q.text
    bad = client.post("/challenges/linear/query", data={"payload": '{"x": 3}', "csrf_token": token})
    assert bad.status_code == 422 and "list of 4 numbers" in bad.text
    x = [1.0 if v >= 0 else -1.0 for v in arena.specs["linear"].challenge.w.tolist()]
    q = client.post("/challenges/linear/query", data={"payload": str({"x": x}).replace("'", '"'), "csrf_token": token})
    flag = re.search(r'id="flag">([^<]+)<', q.text).group(1)
    s = client.post("/challenges/linear/submit", data={"flag": flag, "csrf_token": token})
    assert "Correct" in s.text
    board = client.get("/scoreboard")
    assert "<svg" in board.text and "web" in board.text
    # XSS: names are escaped in the table and in the SVG
    assert client.get("/admin").status_code == 403
    client.post("/logout", data={"csrf_token": token})
    assert client.get("/challenges", follow_redirects=False).status_code == 303
    # operator pages
    login = client.get("/login")
    client.post("/login", data={"name": "admin", "password": "operator-pass", "csrf_token": _csrf(login.text)})
    admin = client.get("/admin")
    assert admin.status_code == 200
    client.post("/admin/event", data={"action": "close", "csrf_token": _csrf(admin.text)})
    assert arena.event().open is False
    assert "query_log" not in client.get("/admin/queries").text and client.get("/admin/submissions").status_code == 200


def test_password_attempts_are_limited_per_client_address(tmp_path, challenge_dir):
    from arena_helpers import built_arena, make_settings
    from fastapi.testclient import TestClient

    from assay.arena.app import create_app

    settings = make_settings(tmp_path, challenge_dir, "", login_per_minute=6, login_burst=3)
    app = create_app(settings, built_arena(settings))
    with TestClient(app) as alice, TestClient(app, client=("203.0.113.9", 5000)) as other:
        assert alice.post("/api/register", json={"name": "alice", "password": "correct horse"}).status_code == 200
        assert alice.post("/api/login", json={"name": "alice", "password": "wrong guess"}).status_code == 401
        assert alice.post("/api/login", json={"name": "alice", "password": "wrong again"}).status_code == 401
        # the burst of 3 is spent: even the right password now waits, with Retry-After
        r = alice.post("/api/login", json={"name": "alice", "password": "correct horse"})
        assert r.status_code == 429 and "retry in" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
        assert alice.post("/api/register", json={"name": "mallory", "password": "whatever1"}).status_code == 429
        # another address is not affected
        ok = other.post("/api/login", json={"name": "alice", "password": "correct horse"})
        assert ok.status_code == 200 and ok.json()["name"] == "alice"


def test_attempt_limiter_refills_is_shared_by_workers_and_stays_bounded(tmp_path):
    from assay.arena.budgets import AttemptLimiter
    from assay.arena.store import Store

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.create_all()
    lim = AttemptLimiter(store, per_minute=60, burst=2, prune_seconds=10)
    assert lim.take("a", now=0.0) == 0 and lim.take("a", now=0.0) == 0
    assert lim.take("a", now=0.0) == 1  # one token a second
    assert lim.take("a", now=0.5) == 1  # half a token: still one second (rounded up)
    assert lim.take("a", now=1.0) == 0
    # a second worker process (its own limiter, same database) sees the same, spent bucket
    other = AttemptLimiter(Store(store.url), per_minute=60, burst=2)
    assert other.take("a", now=1.0) == 1 and lim.take("b", now=1.0) == 0
    for i in range(300):
        lim.take(f"c{i}", now=2.0)
    assert lim.rows() == 302
    # past the prune period every bucket has refilled: the rows go, the limit still holds afterwards
    assert lim.take("z", now=20.0) == 0 and lim.rows() == 1
    assert lim.take("z", now=20.0) == 0 and lim.take("z", now=20.0) == 1


def test_attempt_limiter_holds_under_concurrent_workers(tmp_path):
    # 4 threads x 2 limiters (as 2 worker processes would) race for one bucket of 5: exactly 5 pass
    from concurrent.futures import ThreadPoolExecutor

    from assay.arena.budgets import AttemptLimiter
    from assay.arena.store import Store

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.create_all()
    limiters = [AttemptLimiter(Store(store.url), per_minute=0.001, burst=5) for _ in range(2)]
    with ThreadPoolExecutor(8) as pool:
        waits = list(pool.map(lambda i: limiters[i % 2].take("203.0.113.7"), range(40)))
    assert waits.count(0) == 5

