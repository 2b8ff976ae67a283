"""Flags, budgets under concurrent processes, the CLI (init/build/solve/export) and the CTFd export."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import stat
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from arena_helpers import LiveServer, built_arena, make_settings, write_linear_challenge
from sqlalchemy import select

from assay.arena.budgets import Budgets, QueryItem
from assay.arena.flags import FLAG_RE, check_flag, flag_for, flag_owner
from assay.arena.store import Player, QueryLog, Store


def test_flags_are_per_player_hmac():
    import hashlib
    import hmac

    s = "k" * 64
    f = flag_for(s, 7, "hotdog")
    assert FLAG_RE.match(f)
    assert f == "assay{" + hmac.new(s.encode(), b"7:hotdog", hashlib.sha256).hexdigest()[:32] + "}"
    assert f != flag_for(s, 8, "hotdog") and f != flag_for(s, 7, "other") and f != flag_for("j" * 64, 7, "hotdog")
    assert check_flag(s, 7, "hotdog", f + "\n") and not check_flag(s, 8, "hotdog", f)
    assert flag_owner(s, [1, 7, 9], "hotdog", f) == 7 and flag_owner(s, [1, 9], "hotdog", f) is None


def _hammer(url: str, pid: int, n: int, q) -> None:
    """One worker process charging as the server does: groups of 1 to 3 queries (micro-batches),
    each group charged and logged in one transaction by Budgets.charge_queries."""
    b = Budgets(Store(url))
    ok = sent = 0
    while sent < n:
        group = [QueryItem.of_body(pid, 1, b'{"x": [0, 0, 0, 0]}') for _ in range(min(1 + sent % 3, n - sent))]
        ok += sum(c.ok for c in b.charge_queries("c", group, rate_per_minute=1e9, burst=10**6, total=50,
                                                 submit_burst=5))
        sent += len(group)
    q.put(ok)


def _outcomes(store: Store) -> Counter:
    with store.session() as s:
        return Counter(s.execute(select(QueryLog.outcome, QueryLog.cost)).all())


def test_budget_is_atomic_across_processes(tmp_path):
    """Four processes race for one player's budget of 50 on one SQLite file: exactly 50 succeed,
    and the query log holds every query once, with the refused ones charged nothing."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    store = Store(url)
    store.create_all()
    with store.session() as s:
        s.add(Player(id=1, name="p", password_hash="x", api_key_hash="h"))
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(url, 1, 40, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sum(q.get(timeout=5) for _ in procs) == 50
    assert Budgets(store).used(1, "c") == 50
    assert _outcomes(store) == {("ok", 1): 50, ("budget", 0): 110}


@pytest.mark.postgres
def test_budget_is_atomic_across_threads_on_postgres(postgres_server):
    from concurrent.futures import ThreadPoolExecutor

    store = Store(postgres_server())
    store.create_all()
    with store.session() as s:
        s.add(Player(id=1, name="p", password_hash="x", api_key_hash="h"))
    b = Budgets(store)

    def one(_):
        return b.charge_queries("c", [QueryItem.of_body(1, 1, b"{}")], rate_per_minute=0.0, burst=30, total=100,
                                submit_burst=5)[0]

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(80)))
    assert sum(c.ok for c in results) == 30  # the bucket (no refill) binds before the total
    assert {c.retry_after for c in results if not c.ok} == {3600}  # nothing refills: stop, do not retry
    assert b.used(1, "c") == 30
    assert _outcomes(store) == {("ok", 1): 30, ("rate", 0): 50}


def test_one_bucket_formula_for_queries_and_submissions(tmp_path, monkeypatch):
    """Refill, burst, hard total and Retry-After, on a clock the test sets: the query buckets (as
    the server charges them, a group at a time) and the submission buckets of the same rows."""
    from assay.arena import budgets as budgets_module

    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    store.create_all()
    with store.session() as s:
        s.add(Player(id=1, name="p", password_hash="x", api_key_hash="h"))
    b = Budgets(store)
    clock = [1000.0]
    monkeypatch.setattr(budgets_module.time, "time", lambda: clock[0])

    def charge(*costs):
        return b.charge_queries("c", [QueryItem.of_body(1, c, b"{}") for c in costs], rate_per_minute=60, burst=3,
                                total=10, submit_burst=2)

    first = charge(1, 1, 1, 1)  # one token a second, three at once
    assert [c.ok for c in first] == [True, True, True, False]
    assert [c.remaining for c in first] == [9, 8, 7, 7] and first[3].tokens == pytest.approx(0.0)
    assert (first[3].reason, first[3].retry_after) == ("rate", 1)
    clock[0] += 0.5
    half = charge(1)[0]  # half a token: still a one-second wait (rounded up)
    assert (half.ok, half.reason, half.retry_after, half.tokens) == (False, "rate", 1, pytest.approx(0.5))
    clock[0] += 1.5  # two tokens now
    two, four = charge(2, 4)
    assert two.ok and two.remaining == 5
    assert (four.ok, four.reason, four.retry_after) == (False, "rate", 3600)  # over the burst: it never fits
    clock[0] += 100
    assert charge(3)[0].remaining == 2
    clock[0] += 100  # the bucket is full again, but only two queries of the total are left
    over = charge(3)[0]
    assert (over.ok, over.reason, over.remaining, over.tokens) == (False, "total", 2, pytest.approx(3.0))
    assert charge(2)[0].remaining == 0
    assert _outcomes(store) == {("ok", 1): 3, ("ok", 2): 2, ("ok", 3): 1, ("rate", 0): 3, ("budget", 0): 1}
    # flag submissions: a bucket of their own (capacity = per minute) and a total, in the same row
    subs = [b.charge_submission(1, "c", per_minute=2, total=3, query_burst=3) for _ in range(3)]
    assert [s.ok for s in subs] == [True, True, False] and subs[2].retry_after == 30
    clock[0] += 30
    assert b.charge_submission(1, "c", per_minute=2, total=3, query_burst=3).remaining == 0
    clock[0] += 60
    last = b.charge_submission(1, "c", per_minute=2, total=3, query_burst=3)
    assert (last.ok, last.reason) == (False, "total")
    assert b.used(1, "c") == 10  # the submissions spent nothing of the query budget


@pytest.mark.postgres
def test_login_limiter_is_atomic_across_threads_on_postgres(postgres_server):
    from concurrent.futures import ThreadPoolExecutor

    from assay.arena.budgets import AttemptLimiter

    store = Store(postgres_server())
    store.create_all()
    limiters = [AttemptLimiter(Store(store.url), per_minute=0.001, burst=5) for _ in range(2)]
    with ThreadPoolExecutor(8) as ex:
        waits = list(ex.map(lambda i: limiters[i % 2].take("198.51.100.4"), range(40)))
    assert waits.count(0) == 5 and min(w for w in waits if w) >= 1


def test_cli_init_build_solve_export(tmp_path, monkeypatch):
    from assay.arena.app import create_app
    from assay.arena.cli import main
    from assay.arena.service import Arena
    from assay.arena.settings import Settings

    challenges = tmp_path / "challenges"
    write_linear_challenge(challenges, "linear", query_budget=30)
    data = tmp_path / "event"
    for var in ("ASSAY_ARENA_DIR", "ASSAY_ARENA_SECRET", "ASSAY_ARENA_CHALLENGES", "ASSAY_ARENA_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ASSAY_ARENA_ARGON2", "fast")
    monkeypatch.setenv("ASSAY_ARENA_ADMIN_PASSWORD", "operator-pass")
    assert main(["init", str(data), "--challenges", str(challenges)]) == 0
    mode = stat.S_IMODE((data / "secret").stat().st_mode)
    assert mode == 0o600
    assert main(["init", str(data)]) == 2  # refuses to overwrite
    assert main(["build", "--dir", str(data), "--challenges", str(challenges)]) == 0
    assert (data / "built" / "linear" / "w.json").exists()
    settings = Settings.from_env(data_dir=data, challenges_dir=challenges)
    assert settings.secret == (data / "secret").read_text().strip()
    arena = Arena(settings)
    _, key = arena.register("solver", "password123")
    with LiveServer(create_app(settings, arena)) as server:
        assert main(["solve", "linear", "--url", server.url, "--api-key", key, "--challenges", str(challenges),
                     "--submit"]) == 0
    board, _ = arena.scoreboard()
    assert [(s.name, s.score) for s in board] == [("solver", 100)]
    assert arena.budgets.used(arena.store.player_by_name("solver").id, "linear") == 5
    out = tmp_path / "ctfd.zip"
    assert main(["export", "--dir", str(data), "--challenges", str(challenges), "--ctfd", str(out)]) == 0
    assert zipfile.is_zipfile(out)


def test_arena_client_matches_local_client(tmp_path, challenge_dir):
    """The reference solver runs unchanged on LocalClient and over HTTP, with the same answers."""
    from assay.arena.app import create_app
    from assay.arena.challenge import LocalClient
    from assay.arena.client import ArenaClient
    from assay.errors import BudgetExceeded, InputError

    settings = make_settings(tmp_path, challenge_dir)
    arena = built_arena(settings)
    spec = arena.specs["linear"]
    local = LocalClient(spec)
    local_out = spec.solve(local)
    _, key = arena.register("p", "password123")
    with LiveServer(create_app(settings, arena)) as server, ArenaClient(server.url, key, challenge="linear") as c:
        remote_out = spec.solve(c)
        assert remote_out["scores"] == local_out["scores"] and c.remaining == local.remaining == 15
        assert c.flag == flag_for(settings.secret, arena.store.player_by_name("p").id, "linear")
        assert c.submit() is True
        assert c.artifact("readme.txt") == spec.challenge.artifacts()["readme.txt"]
        assert c.score("linear2", {"x": [0, 0, 0, 0]})["remaining"] == 7
        with pytest.raises(InputError, match=r"\[-1, 1\]"):
            c.score({"x": [2, 0, 0, 0]})
        for _ in range(15):
            c.score({"x": [0, 0, 0, 0]})
        with pytest.raises(BudgetExceeded, match="exhausted"):
            c.score({"x": [0, 0, 0, 0]})
        assert c.remaining == 0


# Columns of the tables the export writes, at the two revisions it targets, from CTFd's migrations
# (read in CTFd's source, 3.7.7 and 3.8.7): the initial revision 8369118943a1, then next_id
# (4d3c1b59d011) and connection_info (6012fe8de495) before 9e6f6578ca84; attribution (4fe3eeed9a9d),
# files.sha1sum (5c4996aeb2cb), files.solution_id (62bf576b2cd3) and logic (f73a96c97449) up to
# f73a96c97449. "required": NOT NULL without a server default, so an import must give a value.
CTFD_COLUMNS = {
    "9e6f6578ca84": {
        "challenges": {"id", "name", "description", "max_attempts", "value", "category", "type", "state",
                       "requirements", "next_id", "connection_info"},
        "files": {"id", "type", "location", "challenge_id", "page_id"},
    },
    "f73a96c97449": {
        "challenges": {"id", "name", "description", "max_attempts", "value", "category", "type", "state",
                       "requirements", "next_id", "connection_info", "attribution", "logic"},
        "files": {"id", "type", "location", "challenge_id", "page_id", "sha1sum", "solution_id"},
    },
}
CTFD_REQUIRED = {"9e6f6578ca84": {"id", "state"}, "f73a96c97449": {"id", "state", "logic"}}
COMMON_COLUMNS = {"flags": {"id", "challenge_id", "type", "content", "data"}, "tags": {"id", "challenge_id", "value"},
                  "dynamic_challenge": {"id", "initial", "minimum", "decay"}}


@pytest.mark.parametrize("version, revision", [("3.8", "f73a96c97449"), ("3.7", "9e6f6578ca84")])
def test_ctfd_export_rows_fit_the_schema_of_the_revision_they_name(tmp_path, challenge_dir, version, revision):
    # CTFd 3.8's migration f73a96c97449 adds challenges.logic NOT NULL without a default: rows at an
    # older revision fail there on PostgreSQL (NotNullViolation). Rows with a key that is not a
    # column would make CTFd's importer (dataset) create that column, and a later migration adding
    # it fail. So every row must hold exactly columns of its revision, and the required ones.
    from assay.arena.ctfd import export_ctfd

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    path = export_ctfd(arena.specs, tmp_path / "out", dynamic=True, ctfd_version=version)
    with zipfile.ZipFile(path) as z:
        tables = {n[3:-5]: json.loads(z.read(n))["results"] for n in z.namelist() if n.startswith("db/")}
    assert tables.pop("alembic_version") == [{"version_num": revision}]
    assert tables.pop("hints") == []
    columns = {**CTFD_COLUMNS[revision], **COMMON_COLUMNS}
    for table, rows in tables.items():
        assert rows, table
        for row in rows:
            assert set(row) <= columns[table], (table, set(row) - columns[table])
    for row in tables["challenges"]:
        assert CTFD_REQUIRED[revision] <= set(row) and row["state"] == "visible"
        if "logic" in CTFD_REQUIRED[revision]:
            assert row["logic"] == "any"  # CTFd's default: any one of the challenge's flags solves it
    if revision == "f73a96c97449":
        with zipfile.ZipFile(path) as z:
            for f in tables["files"]:
                assert f["sha1sum"] == hashlib.sha1(z.read(f"uploads/{f['location']}")).hexdigest()


def test_ctfd_export_refuses_an_unknown_version(tmp_path, challenge_dir):
    from assay.arena.ctfd import export_ctfd
    from assay.errors import InputError

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    with pytest.raises(InputError, match="unknown CTFd version '3.9'; choose one of 3.7, 3.8"):
        export_ctfd(arena.specs, tmp_path / "out", ctfd_version="3.9")


def test_ctfd_export_lists_every_challenge_and_artifact(tmp_path, challenge_dir):
    from assay.arena.ctfd import CTFD_ALEMBIC_REVISION, export_ctfd

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    path = export_ctfd(arena.specs, tmp_path / "out", server_url="https://arena.example", dynamic=True, decay=20)
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        tables = {n: json.loads(z.read(n)) for n in names if n.startswith("db/")}
        for t in tables.values():
            assert set(t) == {"count", "results", "meta"} and t["count"] == len(t["results"])
        assert tables["db/alembic_version.json"]["results"] == [{"version_num": CTFD_ALEMBIC_REVISION}]
        chals = tables["db/challenges.json"]["results"]
        assert sorted(c["name"] for c in chals) == sorted(s.manifest.name for s in arena.specs.values())
        assert all(c["type"] == "dynamic" and "per-player" in c["description"] for c in chals)
        assert [f["type"] for f in tables["db/flags.json"]["results"]] == ["assay"] * len(chals)  # plugin-checked
        dyn = {d["id"]: d for d in tables["db/dynamic_challenge.json"]["results"]}
        assert dyn[chals[0]["id"]]["minimum"] == 20 and dyn[chals[0]["id"]]["initial"] == 100
        files = tables["db/files.json"]["results"]
        by_chal = {c["id"]: c["name"] for c in chals}
        got = {(by_chal[f["challenge_id"]], Path(f["location"]).name) for f in files}
        want = {(s.manifest.name, a) for s in arena.specs.values() for a in s.challenge.artifacts()}
        assert got == want
        for f in files:
            assert f"uploads/{f['location']}" in names
        assert z.read(f"uploads/{files[0]['location']}") in [v for s in arena.specs.values()
                                                              for v in s.challenge.artifacts().values()]
    assert not any(os.environ.get("ASSAY_ARENA_SECRET", "\0") in n for n in names)
