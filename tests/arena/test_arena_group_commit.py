"""The scoring hot path: group commit of micro-batched queries (one transaction per group), the
API-key cache and its cross-process invalidation, and the ASGI fast path's answers. On SQLite and
on a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from collections import Counter

from arena_helpers import hdr, register

ZERO = b'{"x": [0, 0, 0, 0]}'


def _gather(arena, calls):
    async def run():
        return await asyncio.gather(*[arena.score(p, cid, body) for p, cid, body in calls])

    return asyncio.run(run())


def _group_sizes(arena) -> list[int]:
    return [n for b in arena._batchers.values() for n in b.batch_sizes]


def test_concurrent_queries_of_one_player_stop_exactly_at_the_budget(arena_app):
    client, arena = arena_app
    player = arena.register("alice", "password123")[0]  # linear: query_budget 20, burst 100
    outs = _gather(arena, [(player, "linear", ZERO)] * 50)
    codes = Counter(o.status for o in outs)
    assert codes == {200: 20, 429: 30}
    assert {o.body["detail"] for o in outs if o.status == 429} == {"query budget for this challenge exhausted"}
    assert arena.budgets.used(player.id, "linear") == 20
    # the queries really were charged in groups, and every one of them was logged exactly once
    assert max(_group_sizes(arena)) > 1
    log = Counter((q["outcome"], q["cost"]) for q in arena.query_log())
    assert log == {("ok", 1): 20, ("budget", 0): 30}
    # each accepted answer reports a distinct remaining count: 19, 18, ..., 0
    assert sorted(o.body["remaining"] for o in outs if o.status == 200) == list(range(20))


def test_a_group_mixing_players_answers_each_correctly(arena_app):
    client, arena = arena_app
    spent, fresh, short, sloppy = (arena.register(n, "password123")[0] for n in ("spent", "fresh", "short", "sloppy"))
    assert all(o.status == 200 for o in _gather(arena, [(spent, "linear", ZERO)] * 20))
    assert all(o.status == 200 for o in _gather(arena, [(short, "linear", ZERO)] * 18))
    before = len(_group_sizes(arena))
    four = b'{"xs": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]}'
    outs = _gather(arena, [(spent, "linear", ZERO), (fresh, "linear", ZERO), (short, "linear", four),
                           (sloppy, "linear", b'{"x": [5, 0, 0, 0]}'), (fresh, "linear", ZERO),
                           (short, "linear", ZERO), (sloppy, "linear", b"not json")])
    assert sum(_group_sizes(arena)[before:]) == 7
    assert [o.status for o in outs] == [429, 200, 429, 422, 200, 200, 400]  # 400: not JSON at all
    assert outs[0].body["detail"] == "query budget for this challenge exhausted"
    assert outs[2].body == {"detail": "query budget for this challenge exhausted", "remaining": 2}
    assert outs[3].body["detail"] == "x values must lie in [-1, 1]"  # refused by the model: refunded
    assert outs[6].body["detail"].startswith("body is not valid JSON")
    assert [outs[1].body["remaining"], outs[4].body["remaining"], outs[5].body["remaining"]] == [19, 18, 1]
    used = {p.name: arena.budgets.used(p.id, "linear") for p in (spent, fresh, short, sloppy)}
    assert used == {"spent": 20, "fresh": 2, "short": 19, "sloppy": 0}


def test_micro_batching_off_charges_one_by_one_with_the_same_answers(arena_app):
    client, arena = arena_app
    arena.settings.micro_batching = False
    player = arena.register("alice", "password123")[0]
    outs = _gather(arena, [(player, "linear", ZERO)] * 25)
    assert Counter(o.status for o in outs) == {200: 20, 429: 5}
    assert arena.budgets.used(player.id, "linear") == 20
    assert arena._batchers == {}


def test_a_rotated_key_stops_working_in_another_worker(arena_app, tmp_path):
    from assay.arena.service import Arena

    client, arena = arena_app
    other = Arena(arena.settings, specs=arena.specs)  # a second worker process on the same database
    try:
        _, key = arena.register("alice", "password123")
        assert other.player_by_key(key).name == "alice"
        assert other.player_by_key(key).name == "alice"  # from the cache now
        new_key = arena.rotate_key(other.player_by_key(key).id)
        other._event_cache = None  # as if cache_seconds had passed
        assert other.player_by_key(key) is None
        assert other.player_by_key(new_key).name == "alice"
    finally:
        other.store.dispose()


def test_fast_path_answers_like_the_routed_endpoint(arena_app):
    client, arena = arena_app
    h = register(client, "alice")
    url = "/api/challenges/linear/score"
    r = client.post(url, json={"x": [0, 0, 0, 0]}, headers={"Authorization": "Bearer ak_wrong"})
    assert r.status_code == 401 and r.json() == {"detail": "invalid API key"}
    r = client.post("/api/challenges/nope/score", json={"x": [0, 0, 0, 0]}, headers=hdr(h))
    assert r.status_code == 404 and r.json() == {"detail": "no challenge 'nope'"}
    r = client.post(url, content=b'{"x": [0, 0', headers=hdr(h))
    assert r.status_code == 400 and r.json()["detail"] == "body is not valid JSON; send a UTF-8 encoded JSON object"
    r = client.post(url, json={"x": [0, 0, 0, 0]}, headers=hdr(h))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["remaining"] == 19 and r.headers["X-Queries-Remaining"] == "19"
    # a logged-in browser session (cookie + CSRF header) still scores through the routed endpoint
    csrf = client.post("/api/login", json={"name": "alice", "password": "password123"}).json()["csrf_token"]
    assert client.post(url, json={"x": [0, 0, 0, 0]}).status_code == 403  # no CSRF header
    r = client.post(url, json={"x": [0, 0, 0, 0]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["remaining"] == 18


def test_concurrent_http_requests_of_one_player_over_uvicorn(tmp_path, challenge_dir):
    """Through a real server (uvicorn, the ASGI fast path): 40 simultaneous requests with one key
    against a budget of 20 get exactly 20 answers of 200, and the database agrees."""
    import httpx
    from arena_helpers import LiveServer, built_arena, make_settings

    from assay.arena.app import create_app

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    _, key = arena.register("alice", "password123")
    try:
        with LiveServer(create_app(arena.settings, arena)) as server:
            async def run():
                limits = httpx.Limits(max_connections=40)
                async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30,
                                             headers={"Authorization": f"Bearer {key}"}) as c:
                    return await asyncio.gather(*[c.post("/api/challenges/linear/score", content=ZERO)
                                                  for _ in range(40)])

            responses = asyncio.run(run())
        assert Counter(r.status_code for r in responses) == {200: 20, 429: 20}
        assert sorted(r.json()["remaining"] for r in responses if r.status_code == 200) == list(range(20))
        assert arena.budgets.used(arena.player_by_key(key).id, "linear") == 20
    finally:
        arena.store.dispose()
