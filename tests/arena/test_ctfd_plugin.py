"""The exported CTFd plugin checks per-player flags against a real assay server.

CTFd itself is not installable from a package registry, so the two names the plugin uses from it
(``CTFd.plugins.flags.FLAG_CLASSES`` and ``CTFd.utils.user.get_current_user``, CTFd 3.x) are
provided as modules here; the plugin file under test is the one the exporter wrote, and the assay
side is a real uvicorn server.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
import zipfile

import pytest
from arena_helpers import LiveServer, built_arena, make_settings

from assay.arena.flags import flag_for


@pytest.fixture
def fake_ctfd(monkeypatch):
    """Install CTFd's plugin-facing names; returns (FLAG_CLASSES, set_user)."""
    state = {"user": None}
    flags_mod = types.ModuleType("CTFd.plugins.flags")
    flags_mod.FLAG_CLASSES = {}

    class FlagException(Exception):  # CTFd 3.7/3.8: its attempt logic answers "incorrect" with str(e)
        pass

    flags_mod.FlagException = FlagException
    user_mod = types.ModuleType("CTFd.utils.user")
    user_mod.get_current_user = lambda: state["user"]
    for name, mod in {"CTFd": types.ModuleType("CTFd"), "CTFd.plugins": types.ModuleType("CTFd.plugins"),
                      "CTFd.plugins.flags": flags_mod, "CTFd.utils": types.ModuleType("CTFd.utils"),
                      "CTFd.utils.user": user_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)

    def set_user(name):
        state["user"] = None if name is None else types.SimpleNamespace(name=name)

    return flags_mod.FLAG_CLASSES, set_user


def _load_plugin(path):
    spec = importlib.util.spec_from_file_location("assay_arena_ctfd_plugin_under_test", path / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_export_has_assay_flag_rows_and_a_plugin_with_the_url(tmp_path, challenge_dir):
    from assay.arena.ctfd import export_ctfd

    arena = built_arena(make_settings(tmp_path, challenge_dir))
    path = export_ctfd(arena.specs, tmp_path / "out", server_url="https://arena.example")
    with zipfile.ZipFile(path) as z:
        flags = json.loads(z.read("db/flags.json"))["results"]
        chals = {c["id"]: c for c in json.loads(z.read("db/challenges.json"))["results"]}
    assert sorted(f["content"] for f in flags) == sorted(arena.specs)
    assert all(f["type"] == "assay" and chals[f["challenge_id"]]["connection_info"].endswith(f"/{f['content']}/score")
               for f in flags)
    plugin = _load_plugin(tmp_path / "out" / "assay_arena")
    assert plugin.DEFAULT_URL == "https://arena.example"


def test_plugin_checks_the_submitting_users_own_flag_on_the_assay_server(tmp_path, challenge_dir, fake_ctfd,
                                                                         monkeypatch):
    from assay.arena.app import create_app
    from assay.arena.ctfd import export_ctfd

    flag_classes, set_user = fake_ctfd
    settings = make_settings(tmp_path, challenge_dir)
    arena = built_arena(settings)
    alice, _ = arena.register("alice", "password123")
    bob, _ = arena.register("bob", "password123")
    op, op_key = arena.register("ops", "password123", operator=True)
    export_ctfd(arena.specs, tmp_path / "out")
    plugin = _load_plugin(tmp_path / "out" / "assay_arena")
    plugin.load(app=None)
    flag_type = flag_classes["assay"]
    row = types.SimpleNamespace(content="linear", data=None)  # a flags.json row as CTFd hands it over
    secret = settings.secret

    with LiveServer(create_app(settings, arena)) as server:
        monkeypatch.setenv("ASSAY_ARENA_URL", server.url)
        monkeypatch.delenv("ASSAY_ARENA_OPERATOR_KEY", raising=False)
        set_user("alice")
        with pytest.raises(plugin.ArenaUnavailable, match="ASSAY_ARENA_OPERATOR_KEY"):
            flag_type.compare(row, flag_for(secret, alice.id, "linear"))
        monkeypatch.setenv("ASSAY_ARENA_OPERATOR_KEY", op_key)

        assert flag_type.compare(row, flag_for(secret, bob.id, "linear")) is False  # bob's flag, alice submits
        assert flag_type.compare(row, "assay{" + "0" * 32 + "}") is False
        assert flag_type.compare(row, "x" * 500) is False  # refused before any request
        assert flag_type.compare(row, flag_for(secret, alice.id, "linear2")) is False  # other challenge's flag
        assert flag_type.compare(row, " " + flag_for(secret, alice.id, "linear") + "\n") is True
        set_user(None)
        assert flag_type.compare(row, flag_for(secret, alice.id, "linear")) is False  # not logged in to CTFd
        set_user("mallory")  # a CTFd user with no assay account
        assert flag_type.compare(row, flag_for(secret, alice.id, "linear")) is False

        monkeypatch.setenv("ASSAY_ARENA_OPERATOR_KEY", "not-a-key")
        set_user("alice")
        with pytest.raises(plugin.ArenaUnavailable, match="401"):
            flag_type.compare(row, flag_for(secret, alice.id, "linear"))
        _, player_key = arena.register("carol", "password123")
        monkeypatch.setenv("ASSAY_ARENA_OPERATOR_KEY", player_key)  # a player's key is not enough
        with pytest.raises(plugin.ArenaUnavailable, match="403"):
            flag_type.compare(row, flag_for(secret, alice.id, "linear"))

    # The checks were recorded on the assay side: alice solved it; bob's flag was flagged as shared.
    board, _ = arena.scoreboard()
    assert [(s.name, s.score) for s in board if s.score] == [("alice", 100)]
    subs = arena.submissions()
    shared = [s for s in subs if s["suspected_sharing"]]
    assert [(s["player"], s["flag_owner"]) for s in shared] == [("alice", "bob")]
    assert sum(s["correct"] for s in subs) == 1

    monkeypatch.setenv("ASSAY_ARENA_OPERATOR_KEY", op_key)
    with pytest.raises(plugin.ArenaUnavailable, match="unreachable"):  # server gone: no silent "incorrect"
        flag_type.compare(row, flag_for(secret, alice.id, "linear"))


def test_a_closed_assay_event_is_a_clear_ctfd_answer_not_an_error(tmp_path, challenge_dir, fake_ctfd, monkeypatch):
    # CTFd turns a FlagException from a flag class into an "incorrect" answer carrying its message
    # (3.7.7: BaseChallenge.attempt; 3.8.7: logic.challenge_attempt_any); anything else is a 500.
    import sys

    from assay.arena.app import create_app
    from assay.arena.ctfd import export_ctfd

    flag_classes, set_user = fake_ctfd
    settings = make_settings(tmp_path, challenge_dir)
    arena = built_arena(settings)
    alice, _ = arena.register("alice", "password123")
    _, op_key = arena.register("ops", "password123", operator=True)
    export_ctfd(arena.specs, tmp_path / "out")
    plugin = _load_plugin(tmp_path / "out" / "assay_arena")
    plugin.load(app=None)
    row = types.SimpleNamespace(content="linear", data=None)
    good = flag_for(settings.secret, alice.id, "linear")
    arena.set_event(open=False)
    with LiveServer(create_app(settings, arena)) as server:
        monkeypatch.setenv("ASSAY_ARENA_URL", server.url)
        monkeypatch.setenv("ASSAY_ARENA_OPERATOR_KEY", op_key)
        set_user("alice")
        with pytest.raises(sys.modules["CTFd.plugins.flags"].FlagException) as e:
            flag_classes["assay"].compare(row, good)
        assert str(e.value) == "The assay arena event is closed: flags are no longer accepted."
        assert arena.submissions() == []  # nothing was recorded on the assay side
        arena.set_event(open=True)
        assert flag_classes["assay"].compare(row, good) is True
