"""End-to-end API behaviour, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import re
import time

from arena_helpers import hdr, register

from assay.arena.flags import flag_for

BASIS = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(4)]


def solve_input(client, h, cid="linear"):
    w = [client.post(f"/api/challenges/{cid}/score", json={"x": e}, headers=hdr(h)).json()["result"]["scores"][0]
         for e in BASIS]
    return [1.0 if v >= 0 else -1.0 for v in w]


def test_register_login_list_and_auth(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    assert client.post("/api/register", json={"name": "alice", "password": "password123"}).status_code == 422
    assert client.post("/api/register", json={"name": "bob", "password": "short"}).status_code == 422
    # unauthenticated: refused everywhere but the scoreboard
    assert client.get("/api/challenges").status_code == 401
    assert client.get("/api/challenges", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/api/scoreboard").status_code == 200
    listing = client.get("/api/challenges", headers=hdr(h)).json()
    assert {c["id"] for c in listing} == {"linear", "linear2"}
    lin = next(c for c in listing if c["id"] == "linear")
    assert lin["points"] == 100 and lin["solves"] == 0 and lin["category"] == "evasion"
    assert {a["name"] for a in lin["artifacts"]} == {"readme.txt", "shape.json"}
    art = client.get(lin["artifacts"][0]["url"], headers=hdr(h))
    assert art.status_code == 200 and art.content == arena.artifacts["linear"][lin["artifacts"][0]["name"]]
    assert client.get("/api/challenges/linear/artifacts/w.json", headers=hdr(h)).status_code == 404
    # login: generic error, cookie flags, CSRF needed for cookie-authenticated writes
    bad1 = client.post("/api/login", json={"name": "alice", "password": "wrongwrong"})
    bad2 = client.post("/api/login", json={"name": "nobody", "password": "wrongwrong"})
    assert bad1.status_code == bad2.status_code == 401 and bad1.json() == bad2.json()
    r = client.post("/api/login", json={"name": "alice", "password": "password123"})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert client.get("/api/me").json()["name"] == "alice"
    assert client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}).status_code == 403  # no CSRF header
    ok = client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]},
                     headers={"X-CSRF-Token": r.json()["csrf_token"]})
    assert ok.status_code == 200
    client.post("/api/logout")
    client.cookies.clear()
    assert client.get("/api/me").status_code == 401


def test_query_flag_only_when_solved_and_budget_exhaustion(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    r = client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h))
    assert r.status_code == 200 and "flag" not in r.json()
    assert r.json()["remaining"] == 19 and r.headers["X-Queries-Remaining"] == "19"
    assert "X-RateLimit-Remaining" in r.headers
    x = solve_input(client, h)
    r = client.post("/api/challenges/linear/score", json={"x": x}, headers=hdr(h))
    assert r.json()["flag"] == flag_for(arena.settings.secret, h["_id"], "linear")
    # a batch of 4 costs 4
    r = client.post("/api/challenges/linear/score", json={"xs": BASIS}, headers=hdr(h))
    assert r.json()["remaining"] == 20 - 1 - 4 - 1 - 4
    # spend the rest, then the hard total answers 429 with the clear message
    for _ in range(10):
        assert client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h)).status_code == 200
    r = client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h))
    assert r.status_code == 429 and r.json()["detail"] == "query budget for this challenge exhausted"
    assert "Retry-After" not in r.headers
    assert arena.budgets.used(h["_id"], "linear") == 20
    # other challenges and other players are unaffected
    h2 = register(client, "bob")
    assert client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h2)).status_code == 200


def test_a_request_costing_more_than_the_burst_is_a_422_naming_the_limit(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    # linear2: burst 3. Four inputs could never be charged at once: waiting would not help.
    r = client.post("/api/challenges/linear2/score", json={"xs": [[0, 0, 0, 0]] * 4}, headers=hdr(h))
    assert r.status_code == 422 and "Retry-After" not in r.headers
    assert r.json()["detail"] == "this request would cost 4 queries; one request may cost at most 3 on this challenge; split it"
    assert arena.budgets.used(h["_id"], "linear2") == 0
    r = client.post("/api/challenges/linear2/score", json={"xs": [[0, 0, 0, 0]] * 3}, headers=hdr(h))
    assert r.status_code == 200 and r.json()["remaining"] == 5


def test_rate_limit_bucket_gives_retry_after(arena_app):
    client, _ = arena_app
    h = register(client, "alice")
    codes = [client.post("/api/challenges/linear2/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h)) for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]  # burst 3, 1 per second refill
    assert codes[-1].json()["detail"].startswith("rate limit")
    assert int(codes[-1].headers["Retry-After"]) >= 1
    assert codes[-1].json()["remaining"] == 5  # the refused query cost nothing


def test_untrusted_input(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    url = "/api/challenges/linear/score"
    r = client.post(url, content=b"not json", headers=hdr(h))
    assert r.status_code == 400 and r.json()["detail"].startswith("body is not valid JSON")
    assert client.post(url, json=[1, 2], headers=hdr(h)).json()["detail"].startswith("body must be a JSON object")
    r = client.post(url, json={"x": [5, 0, 0, 0]}, headers=hdr(h))
    assert r.status_code == 422 and r.json()["detail"] == "x values must lie in [-1, 1]"
    big = b'{"x": [' + b"0," * 2000 + b"0]}"
    r = client.post(url, content=big, headers={**hdr(h), "Content-Type": "application/json"})
    assert r.status_code == 413
    # a chunked body without Content-Length is capped while streaming
    r = client.post(url, content=(big[i:i + 100] for i in range(0, len(big), 100)), headers=hdr(h))
    assert r.status_code == 413
    assert arena.budgets.used(h["_id"], "linear") == 0  # nothing invalid was charged
    outcomes = {q["outcome"] for q in arena.query_log()}
    assert outcomes == {"invalid"}


def test_submissions_sharing_and_limits(arena_app):
    client, arena = arena_app
    alice, bob = register(client, "alice"), register(client, "bob")
    secret = arena.settings.secret
    sub = lambda h, flag, cid="linear": client.post(f"/api/challenges/{cid}/submit", json={"flag": flag}, headers=hdr(h))  # noqa: E731
    assert sub(alice, "assay{" + "0" * 32 + "}").json() == {"correct": False}
    bobs_flag = flag_for(secret, bob["_id"], "linear")
    assert sub(alice, bobs_flag).json() == {"correct": False}  # same answer as any wrong flag
    assert sub(alice, flag_for(secret, alice["_id"], "linear2")).json() == {"correct": False}  # other challenge
    r = sub(alice, flag_for(secret, alice["_id"], "linear"))
    assert r.json() == {"correct": True, "value": 100}
    assert sub(alice, flag_for(secret, alice["_id"], "linear")).json()["already_solved"] is True
    r = sub(alice, "x")  # 6th submission > submission_limit 5
    assert r.status_code == 429 and "submission limit" in r.json()["detail"]
    subs = arena.submissions()
    shared = [s for s in subs if s["suspected_sharing"]]
    assert len(shared) == 1 and shared[0]["player"] == "alice" and shared[0]["flag_owner"] == "bob"
    # operator-only views
    assert client.get("/api/admin/submissions", headers=hdr(alice)).status_code == 403
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})
    assert len(client.get("/api/admin/submissions").json()) == len(subs)
    assert client.get("/api/admin/queries").status_code == 200
    client.cookies.clear()


def test_submission_rate_per_minute(arena_app, monkeypatch):
    client, arena = arena_app
    arena.settings.submit_per_minute = 2
    h = register(client, "alice")
    codes = [client.post("/api/challenges/linear/submit", json={"flag": "nope"}, headers=hdr(h)) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert "too many submissions" in codes[-1].json()["detail"] and "Retry-After" in codes[-1].headers


def test_scoreboard_order_ties_freeze_teams_and_closed_event(arena_app):
    client, arena = arena_app
    s = arena.settings.secret
    a, b, c = register(client, "alice"), register(client, "bob"), register(client, "carol")
    sub = lambda h, cid: client.post(f"/api/challenges/{cid}/submit", json={"flag": flag_for(s, h["_id"], cid)}, headers=hdr(h))  # noqa: E731
    assert sub(b, "linear").json()["correct"]
    time.sleep(0.02)
    assert sub(a, "linear").json()["correct"]
    time.sleep(0.02)
    assert sub(c, "linear2").json()["correct"]
    board = client.get("/api/scoreboard").json()["standings"]
    # carol 300; bob and alice tie at 100, bob solved first
    assert [(r["name"], r["score"]) for r in board] == [("carol", 300), ("bob", 100), ("alice", 100)]
    assert "admin" not in [r["name"] for r in board]
    # teams: alice + bob share a team; their shared challenge counts once
    team = client.post("/api/teams", json={"name": "reds"}, headers=hdr(a)).json()
    assert client.post("/api/teams/join", json={"join_code": team["join_code"]}, headers=hdr(b)).status_code == 200
    assert client.post("/api/teams/join", json={"join_code": "wrong"}, headers=hdr(c)).status_code == 422
    tb = client.get("/api/scoreboard?by=team").json()["standings"]
    assert tb == [{"rank": 1, "name": "reds", "score": 100, "solves": 1, "last_solve": tb[0]["last_solve"]}]
    # operator freezes: later solves are hidden from the public board until unfrozen
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})
    csrf = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    assert client.post("/api/admin/event", json={"frozen": True}, headers={"X-CSRF-Token": csrf}).json()["frozen_at"]
    client.cookies.clear()
    time.sleep(0.02)
    assert sub(a, "linear2").json()["correct"]
    frozen = client.get("/api/scoreboard").json()
    assert frozen["frozen_at"] and frozen["standings"][-1]["name"] == "alice" and frozen["standings"][-1]["score"] == 100
    arena.set_event(frozen=False)
    assert client.get("/api/scoreboard").json()["standings"][0] == {
        **client.get("/api/scoreboard").json()["standings"][0], "name": "alice", "score": 400}
    # closed event: 403 on queries and submissions
    arena.set_event(open=False)
    assert client.post("/api/challenges/linear/score", json={"x": [0, 0, 0, 0]}, headers=hdr(c)).status_code == 403
    assert sub(c, "linear").status_code == 403
    arena.set_event(open=True)
    assert sub(c, "linear").status_code == 200


def test_dynamic_values_frozen_at_solve_time_and_recompute(arena_app):
    client, arena = arena_app
    arena.settings.scoring, arena.settings.decay, arena.settings.min_fraction = "dynamic", 2, 0.5
    s = arena.settings.secret
    players = [register(client, n) for n in ("p1", "p2", "p3")]
    values = [client.post("/api/challenges/linear/submit", json={"flag": flag_for(s, h["_id"], "linear")},
                          headers=hdr(h)).json()["value"] for h in players]
    assert values == [100, 88, 50]  # ceil(100 - 50 * s^2 / 4) for s = 0, 1, 2
    board = {r["name"]: r["score"] for r in client.get("/api/scoreboard").json()["standings"]}
    assert board == {"p1": 100, "p2": 88, "p3": 50}
    arena.set_event(recompute_values=True)
    board = {r["name"]: r["score"] for r in client.get("/api/scoreboard").json()["standings"]}
    assert board == {"p1": 50, "p2": 50, "p3": 50}
    listing = client.get("/api/challenges", headers=hdr(players[0])).json()
    assert next(c for c in listing if c["id"] == "linear")["points"] == 50


def test_micro_batching_gathers_concurrent_queries(arena_app):
    client, arena = arena_app
    from assay.arena.store import Player

    players = [arena.register(f"u{i}", "password123")[0] for i in range(12)]

    async def run():
        outs = await asyncio.gather(*[arena.score(p, "linear", b'{"x": [0.5, 0.5, 0.5, 0.5]}') for p in players])
        return outs, arena._batcher("linear").batch_sizes

    outs, sizes = asyncio.run(run())
    assert all(o.status == 200 for o in outs)
    assert len({o.body["result"]["scores"][0] for o in outs}) == 1
    assert max(sizes) > 1 and sum(sizes) == 12
    assert isinstance(players[0], Player)


def test_verify_route_for_operators(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    good = flag_for(arena.settings.secret, h["_id"], "linear")
    assert client.post("/api/verify", json={"player": "alice", "challenge": "linear", "flag": good},
                       headers=hdr(h)).status_code == 403
    csrf = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    v = lambda flag: client.post("/api/verify", json={"player": "alice", "challenge": "linear", "flag": flag},  # noqa: E731
                                 headers={"X-CSRF-Token": csrf}).json()["valid"]
    wrong = good[:-2] + ("1" if good[-2] == "0" else "0") + "}"  # the last hex digit changed
    assert v(good) is True and v(wrong) is False
    assert arena.submissions() == [] and arena.scoreboard()[0][0].score == 0  # a plain check records nothing


def test_verify_with_record_is_a_submission_on_the_players_behalf(arena_app):
    client, arena = arena_app
    arena.settings.submit_per_minute = 3
    a, b = register(client, "alice"), register(client, "bob")
    csrf = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    s = arena.settings.secret

    def v(flag, **extra):
        return client.post("/api/verify", json={"player": "alice", "challenge": "linear", "flag": flag, **extra},
                           headers={"X-CSRF-Token": csrf})

    assert v(flag_for(s, b["_id"], "linear"), record=True).json() == {"valid": False}
    assert v(flag_for(s, a["_id"], "linear"), record=True).json() == {"valid": True}
    assert v(flag_for(s, a["_id"], "linear"), record=True).json() == {"valid": True}  # already solved
    limited = v("assay{" + "0" * 32 + "}", record=True)  # 4th submission in a minute
    assert limited.status_code == 429 and limited.json()["valid"] is False and "Retry-After" in limited.headers
    assert v("x", record="yes").status_code == 422
    subs = arena.submissions()
    assert [(x["correct"], x["suspected_sharing"], x["flag_owner"]) for x in reversed(subs)] == [
        (False, True, "bob"), (True, False, None), (True, False, None)]
    assert [(p.name, p.score) for p in arena.scoreboard()[0]][0] == ("alice", 100)


def test_reference_solutions_only_after_the_operator_publishes_a_closed_event(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    url = "/api/challenges/linear/solution"
    assert client.get(url).status_code == 401  # not public
    r = client.get(url, headers=hdr(h))
    assert r.status_code == 403 and "after the event closes" in r.json()["detail"]
    admin = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    ops = {"X-CSRF-Token": admin}
    assert client.get(url).status_code == 200  # the operator may always read them
    # publishing during the event is refused: it would hand out the answers
    r = client.post("/api/admin/event", json={"solutions": True}, headers=ops)
    assert r.status_code == 409 and "close the event" in r.json()["detail"]
    page = client.get("/admin").text  # the operator page refuses it too, with the reason
    form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = client.post("/admin/event", data={"action": "publish_solutions", "csrf_token": form_csrf})
    assert r.status_code == 409 and "close the event" in r.text and "not shown" in r.text
    assert client.post("/api/admin/event", json={"open": False}, headers=ops).json()["solutions_published"] is False
    assert client.get(url.replace("linear", "nope")).status_code == 404
    client.cookies.clear()
    assert client.get(url, headers=hdr(h)).status_code == 403  # closed, not yet published
    admin = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    r = client.post("/api/admin/event", json={"solutions": True}, headers={"X-CSRF-Token": admin})
    assert r.json()["solutions_published"] is True
    client.cookies.clear()
    sol = client.get(url, headers=hdr(h))
    assert sol.status_code == 200
    body = sol.json()
    assert body["solver"].startswith("def solve(client)") and body["naive_attempt"].startswith("def naive(client)")
    assert arena.settings.secret not in sol.text and flag_for(arena.settings.secret, h["_id"], "linear") not in sol.text
    # the web page shows them too (cookie session), and reopening the event hides them again
    client.post("/api/login", json={"name": "alice", "password": "password123"})
    page = client.get("/challenges/linear").text
    assert 'id="solution"' in page and "def solve(client)" in page
    arena.set_event(open=True)
    assert client.get(url, headers=hdr(h)).status_code == 403
    assert 'id="solution"' not in client.get("/challenges/linear").text


def test_publication_is_a_state_that_reopening_clears(arena_app):
    # The sequence: close, publish, reopen, close without publishing. Players could read the
    # solutions again, because "published" was remembered across the reopening.
    client, arena = arena_app
    h = register(client, "alice")
    url = "/api/challenges/linear/solution"
    csrf = client.post("/api/login", json={"name": "admin", "password": "operator-pass"}).json()["csrf_token"]
    ops = {"X-CSRF-Token": csrf}

    def event(**change):
        r = client.post("/api/admin/event", json=change, headers=ops)
        assert r.status_code == 200, r.text
        return r.json()

    def player_sees() -> bool:
        code = client.get(url, headers=hdr(h)).status_code  # the key wins over the operator cookie
        assert code in (200, 403)
        return code == 200

    def published_at():
        from assay.arena.store import SolutionRelease

        with arena.store.session() as s:
            return s.get(SolutionRelease, 1).published_at

    assert event(open=False)["solutions_published"] is False and not player_sees()
    assert event(solutions=True)["solutions_published"] is True and player_sees()
    reopened = event(open=True)
    assert reopened["solutions_published"] is False and published_at() is None and not player_sees()
    assert event(open=False)["solutions_published"] is False and not player_sees()  # the bug: visible again
    assert event(solutions=True)["solutions_published"] is True and player_sees()  # publishing again works
    assert event(solutions=False)["solutions_published"] is False and not player_sees()
    assert event(solutions=True)["solutions_published"] is True and player_sees()
    # reopening and publishing in one request is refused, and changes nothing
    r = client.post("/api/admin/event", json={"open": True, "solutions": True}, headers=ops)
    assert r.status_code == 409 and player_sees() and published_at() is not None
    # the operator's web form reopens too, with the same effect
    page = client.get("/admin").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/admin/event", data={"action": "open", "csrf_token": token})
    client.post("/admin/event", data={"action": "close", "csrf_token": token})
    assert published_at() is None and not player_sees()
    assert "Reference solutions: <strong>not shown</strong>" in client.get("/admin").text
