"""The operator's query log: cursor (keyset) paging over every row, filters, and a CSV export that
streams the whole log (it used to return only the latest 500 rows)."""

from __future__ import annotations

import csv
import io
import re

from arena_helpers import hdr, register

from assay.arena.store import QueryLog


def fill(arena, player_ids, n: int, start: float = 1.7e9) -> list[int]:
    with arena.store.session() as s:
        rows = [QueryLog(player_id=player_ids[i % len(player_ids)], challenge_id="linear" if i % 3 else "linear2",
                         created_at=start + i, cost=1, payload_bytes=10 + i, payload_sha256=f"{i:064x}",
                         outcome="ok", latency_ms=0.5) for i in range(n)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def operator_client(client) -> None:
    client.post("/api/login", json={"name": "admin", "password": "operator-pass"})


def test_cursor_paging_visits_every_row_once_even_while_new_rows_arrive(arena_app):
    client, arena = arena_app
    alice, bob = register(client, "alice"), register(client, "-bob")
    ids = fill(arena, [alice["_id"], bob["_id"]], 1250)  # more than the 500 the old view could show
    operator_client(client)
    seen, cursor, pages = [], None, 0
    while True:
        r = client.get("/api/admin/queries", params={"limit": 400, **({"before": cursor} if cursor else {})})
        assert r.status_code == 200
        page = r.json()
        seen += [row["id"] for row in page["rows"]]
        pages += 1
        if pages == 1:
            fill(arena, [alice["_id"]], 30, start=1.8e9)  # new rows mid-way do not shift later pages
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == 4 and seen == sorted(ids, reverse=True)  # newest first, none missed or repeated
    first = client.get("/api/admin/queries").json()
    assert len(first["rows"]) == 100 and first["rows"][0]["time"] == 1.8e9 + 29
    only_bob = client.get("/api/admin/queries", params={"player": "-bob", "challenge": "linear2", "limit": 1000})
    assert {(x["player"], x["challenge"]) for x in only_bob.json()["rows"]} == {("-bob", "linear2")}
    assert len(only_bob.json()["rows"]) == len([i for i in range(1250) if i % 2 == 1 and i % 3 == 0])
    for bad in ({"limit": 0}, {"limit": 1001}, {"before": "x"}, {"before": 2**64}, {"player": "a\x00"}):
        assert client.get("/api/admin/queries", params=bad).status_code == 422, bad
    assert client.get("/api/admin/queries.csv", params={"challenge": "\x00"}).status_code == 422


def test_csv_export_streams_the_whole_log_with_safe_cells(arena_app):
    client, arena = arena_app
    alice, bob = register(client, "alice"), register(client, "-bob")  # a name a spreadsheet reads as a formula
    fill(arena, [alice["_id"], bob["_id"]], 1250)
    assert client.get("/api/admin/queries.csv", headers=hdr(alice)).status_code == 403
    operator_client(client)
    r = client.get("/api/admin/queries.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 1250
    assert list(rows[0]) == ["id", "time", "player", "challenge", "cost", "payload_bytes", "payload_sha256",
                             "outcome", "latency_ms"]
    assert rows[0]["time"] == "2023-11-14T22:34:09.000+00:00"  # 1.7e9 + 1249 s and rows[-1]["payload_bytes"] == "10"
    assert {x["player"] for x in rows} == {"alice", "'-bob"}
    assert [int(x["id"]) for x in rows] == sorted((int(x["id"]) for x in rows), reverse=True)
    one = list(csv.DictReader(io.StringIO(client.get("/api/admin/queries.csv", params={"player": "alice"}).text)))
    assert len(one) == 625 and {x["player"] for x in one} == {"alice"}


def test_the_query_log_page_pages_too(arena_app):
    client, arena = arena_app
    alice = register(client, "alice")
    fill(arena, [alice["_id"]], 150)
    operator_client(client)
    page = client.get("/admin/queries").text
    assert page.count("<tr><td>") == 100 and 'id="csv"' in page
    older = re.search(r'href="/admin/queries\?before=(\d+)" id="older"', page).group(1)
    rest = client.get(f"/admin/queries?before={older}").text
    assert rest.count("<tr><td>") == 50 and 'id="older"' not in rest
