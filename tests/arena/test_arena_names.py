"""Look-alike names: NFKC, case folding and a Latin confusables skeleton decide uniqueness, and the
operator's name is reserved in all its forms (issue: ``Admin``, ``ADMIN`` and ``admin.`` could
register beside the operator ``admin``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from arena_helpers import hdr, register

from assay.arena.names import normalize, skeleton
from assay.errors import InputError

OPERATOR_LOOKALIKES = [
    "Admin", "ADMIN", "admin.", "admin_", "-admin", "ad.min", "adm1n", "ADM1N", "\u0430dmin",  # Cyrillic a
    "\u0391DMIN",  # Greek capital alpha
    "ADM\u0399N",  # Greek capital iota
    "\u0410DMIN",  # Cyrillic capital A
    "\uff41\uff44\uff4d\uff49\uff4e",  # fullwidth, NFKC -> admin
    "adm\u00edn", "adm\u0131n",  # accented i, dotless i
    "ADM\u0130N",  # Turkish dotted capital I
    "adrnin", "AdMiN", "admin\uff0e",  # fullwidth full stop, NFKC -> "."
]


@pytest.mark.parametrize("name", OPERATOR_LOOKALIKES)
def test_the_operator_name_is_reserved_in_all_its_forms(arena_app, name):
    client, arena = arena_app
    assert skeleton(name) == skeleton("admin")
    r = client.post("/api/register", json={"name": name, "password": "password123"})
    assert r.status_code == 422, (name, r.text)
    assert "reserved" in r.json()["detail"]
    h = register(client, "teamplayer")
    r = client.post("/api/teams", json={"name": name}, headers=hdr(h))
    assert r.status_code == 422 and "reserved" in r.json()["detail"]


def test_look_alikes_of_a_player_or_team_are_taken_and_distinct_names_are_not(arena_app):
    client, arena = arena_app
    arena.password_attempts.burst = 1000.0  # many sign-ups from one test client
    h = register(client, "bob")
    for clash in ("Bob", "BOB", "bob.", "b0b", "B0B", "\u0412\u043eb", "bo_b", "\uff42\uff4f\uff42"):
        r = client.post("/api/register", json={"name": clash, "password": "password123"})
        assert r.status_code == 422 and "taken" in r.json()["detail"], (clash, r.text)
    for fine in ("bobby", "rob", "alice", "alicia", "Jos\u00e9", "\u5f20\u4f1f"):  # any script's letters
        register(client, fine)
    assert client.post("/api/teams", json={"name": "Reds"}, headers=hdr(h)).status_code == 200
    h2 = register(client, "carol")
    r = client.post("/api/teams", json={"name": "reds."}, headers=hdr(h2))
    assert r.status_code == 422 and "taken" in r.json()["detail"]
    # invisible letters, marks alone and separators alone are no names
    for bad in ("admin\u3164", "x\u200by", "._-", "", "a" * 33):
        r = client.post("/api/register", json={"name": bad, "password": "password123"})
        assert r.status_code == 422, bad


def test_names_are_stored_nfkc_and_log_in_in_any_normal_form(arena_app):
    client, arena = arena_app
    decomposed = "Jose\u0301"
    r = client.post("/api/register", json={"name": decomposed, "password": "password123"})
    assert r.status_code == 200 and r.json()["name"] == "Jos\u00e9" == normalize(decomposed)
    assert client.post("/api/login", json={"name": "Jos\u00e9", "password": "password123"}).status_code == 200
    assert client.post("/api/login", json={"name": decomposed, "password": "password123"}).status_code == 200
    assert client.post("/api/login", json={"name": "jose", "password": "password123"}).status_code == 401


def test_concurrent_look_alike_registrations_admit_exactly_one(arena_app):
    _, arena = arena_app
    variants = ["eve", "Eve", "EVE", "eve.", "ev\u0435", "e_ve", "Ev\u0435", "eve-"]

    def attempt(name):
        try:
            arena.register(name, "password123")
            return name
        except InputError:
            return None

    with ThreadPoolExecutor(8) as pool:
        won = [n for n in pool.map(attempt, variants) if n]
    assert len(won) == 1


def test_accounts_from_before_the_claims_are_claimed_at_start_up(tmp_path, challenge_dir):
    from arena_helpers import make_settings

    from assay.arena.service import Arena
    from assay.arena.store import NameClaim, Player, Store

    settings = make_settings(tmp_path, challenge_dir)
    store = Store(settings.db_url)
    store.create_all()
    with store.session() as s:  # an older database: players, no claims table rows
        s.add_all([Player(name="dave", password_hash="x", api_key_hash="k1"),
                   Player(name="Dave", password_hash="x", api_key_hash="k2")])
    with store.session() as s:
        s.query(NameClaim).delete()
    assert store.claim_existing_names() == ["Dave"]  # the older account keeps the key
    arena = Arena(settings, specs={})
    with pytest.raises(InputError, match="taken"):
        arena.register("DAVE", "password123")
    assert arena.store.player_by_name("Dave") is not None  # the look-alike from before still exists
