"""User mistakes on ``assay arena ...``: each ends in one ``assay: error:`` line on stderr, a non-zero
exit code (2 for input and target errors, never 4 "internal error" or 3 "budget") and no traceback."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from arena_helpers import _free_port, write_linear_challenge

from assay.cli import main
from assay.errors import InputError, TargetError

ARENA_VARS = ("ASSAY_ARENA_DIR", "ASSAY_ARENA_SECRET", "ASSAY_ARENA_CHALLENGES", "ASSAY_ARENA_DB_URL",
              "ASSAY_ARENA_ADMIN_PASSWORD")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    # set-then-delete makes monkeypatch restore each variable, including the ones the CLI itself
    # writes into os.environ (--dir, --challenges), so nothing leaks into other tests.
    for var in ARENA_VARS:
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    monkeypatch.setenv("ASSAY_ARENA_ARGON2", "fast")
    monkeypatch.delenv("ASSAY_DEBUG", raising=False)


@pytest.fixture
def challenges(tmp_path) -> Path:
    root = tmp_path / "challenges"
    write_linear_challenge(root, "linear")
    return root


def one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("assay: error:")]
    assert len(lines) == 1, err
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def closed_port() -> int:
    return _free_port()  # bound and released at once: nothing listens there


# ----------------------------------------------------------------------------- solve / ArenaClient
def test_solve_unreachable_server_is_a_target_error(capsys, challenges):
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["arena", "solve", "linear", "--url", url, "--api-key", "ak_x", "--challenges", str(challenges)]) == 2
    line = one_line_error(capsys)
    assert "cannot reach the arena at " + url in line and "connection refused" in line and "--url" in line


def test_solve_unreachable_server_subprocess_one_line(challenges):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))
    r = subprocess.run([sys.executable, "-m", "assay", "arena", "solve", "linear", "--url",
                        f"http://127.0.0.1:{closed_port()}", "--api-key", "ak_x", "--challenges", str(challenges)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("assay: error:")] == \
        [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert "cannot reach the arena" in r.stderr


@pytest.mark.parametrize("url", ["127.0.0.1:{port}", "localhost:{port}"])
def test_solve_url_without_scheme_is_an_input_error(capsys, challenges, url):
    url = url.format(port=closed_port())
    assert main(["arena", "solve", "linear", "--url", url, "--api-key", "ak_x", "--challenges", str(challenges)]) == 2
    line = one_line_error(capsys)
    assert repr(url) in line and "http:// or https://" in line


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://127.0.0.1", "http://", "http://h:abc"])
def test_arena_client_refuses_bad_urls_before_any_request(url):
    from assay.arena.client import ArenaClient

    with pytest.raises(InputError, match="http://127.0.0.1:8000"):
        ArenaClient(url, "ak_x")


def test_arena_client_timeout_is_a_target_error():
    from assay.arena.client import ArenaClient

    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with ArenaClient(url, "ak_x", challenge="linear", timeout=0.3) as c:
            with pytest.raises(TargetError, match=r"did not answer within 0\.3s"):
                c.score({"x": [0, 0, 0, 0]})


def test_arena_client_non_arena_server_is_a_target_error():
    from assay.arena.client import ArenaClient

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>not an arena</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ArenaClient(f"http://127.0.0.1:{server.server_port}", "ak_x", challenge="linear") as c:
            with pytest.raises(TargetError, match="without JSON"):
                c.score({"x": [0, 0, 0, 0]})
            with pytest.raises(TargetError, match="without JSON"):
                c.challenges()
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- build / export
def test_build_only_unknown_id_is_an_input_error(capsys, tmp_path, challenges):
    data = tmp_path / "event"
    argv = ["arena", "build", "--dir", str(data), "--challenges", str(challenges), "--only", "nope", "linear"]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "'nope'" in line and "available: linear" in line
    assert not (data / "built").exists()  # nothing built, not even the known id


@pytest.mark.parametrize("command", ["build", "export"])
def test_missing_or_empty_challenge_directory_is_an_input_error(capsys, tmp_path, command):
    extra = ["--ctfd", str(tmp_path / "out.zip")] if command == "export" else []
    base = ["arena", command, "--dir", str(tmp_path / "event"), *extra]
    assert main([*base, "--challenges", str(tmp_path / "nonexistent")]) == 2
    assert "does not exist" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main([*base, "--challenges", str(tmp_path / "empty")]) == 2
    assert "holds no challenges" in one_line_error(capsys)
    assert not (tmp_path / "out.zip").exists()


def test_bad_manifest_toml_is_an_input_error(capsys, tmp_path, challenges):
    (challenges / "linear" / "challenge.toml").write_text("id = \n")
    assert main(["arena", "build", "--dir", str(tmp_path / "event"), "--challenges", str(challenges)]) == 2
    assert "bad manifest" in one_line_error(capsys)


# ----------------------------------------------------------------------------- serve
@pytest.fixture
def event(tmp_path, challenges) -> Path:
    data = tmp_path / "event"
    assert main(["arena", "init", str(data), "--admin-password", "operator-pass"]) == 0
    assert main(["arena", "build", "--dir", str(data), "--challenges", str(challenges)]) == 0
    return data


@pytest.fixture
def no_uvicorn(monkeypatch):
    import uvicorn

    def fail(*args, **kwargs):
        raise AssertionError("uvicorn.run must not be reached")

    monkeypatch.setattr(uvicorn, "run", fail)


def test_serve_on_a_busy_port_is_an_input_error(capsys, event, challenges, no_uvicorn):
    capsys.readouterr()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code = main(["arena", "serve", "--dir", str(event), "--challenges", str(challenges), "--port", str(port)])
    assert code == 2
    line = one_line_error(capsys)  # the holder is this test process, named by serve
    assert line.startswith(f"assay: error: port {port} on 127.0.0.1 is in use by process {os.getpid()} (")
    assert line.endswith("; pick another with --port")


@pytest.mark.parametrize("flags, expected", [(["--port", "70000"], "1-65535"), (["--workers", "0"], "--workers"),
                                             (["--host", "no-such-host.invalid"], "--host")])
def test_serve_bad_host_port_workers_are_input_errors(capsys, event, challenges, no_uvicorn, flags, expected):
    capsys.readouterr()
    assert main(["arena", "serve", "--dir", str(event), "--challenges", str(challenges), *flags]) == 2
    assert expected in one_line_error(capsys)


def test_serve_reaches_uvicorn_on_a_free_port(event, challenges, monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    port = closed_port()
    assert main(["arena", "serve", "--dir", str(event), "--challenges", str(challenges), "--port", str(port)]) == 0
    assert calls and calls[0]["port"] == port


# ----------------------------------------------------------------------------- init
def test_init_refuses_a_short_admin_password_and_writes_nothing(capsys, tmp_path, monkeypatch):
    data = tmp_path / "event"
    assert main(["arena", "init", str(data), "--admin-password", "short"]) == 2
    assert "--admin-password must have at least 8 characters" in one_line_error(capsys)
    monkeypatch.setenv("ASSAY_ARENA_ADMIN_PASSWORD", "short")
    assert main(["arena", "init", str(data)]) == 2
    assert "ASSAY_ARENA_ADMIN_PASSWORD must have at least 8 characters" in one_line_error(capsys)
    assert not (data / "secret").exists()  # a refused init leaves nothing behind: the rerun works
    monkeypatch.setenv("ASSAY_ARENA_ADMIN_PASSWORD", "long-enough")
    assert main(["arena", "init", str(data)]) == 0


def test_settings_refuse_a_short_admin_password_from_the_environment(tmp_path, monkeypatch):
    from assay.arena.settings import Settings

    monkeypatch.setenv("ASSAY_ARENA_ADMIN_PASSWORD", "1234567")
    with pytest.raises(InputError, match="ASSAY_ARENA_ADMIN_PASSWORD must have at least 8"):
        Settings.from_env(data_dir=tmp_path, secret="s" * 64)  # what `serve` reads at start-up


def test_init_makes_the_sqlite_database_private(tmp_path):
    data = tmp_path / "event"
    assert main(["arena", "init", str(data), "--admin-password", "operator-pass"]) == 0
    files = [data / "arena.db", *data.glob("arena.db-*")]  # WAL and shared memory, when present
    assert (data / "arena.db").exists()
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((data / "secret").stat().st_mode) == 0o600


def test_init_leaves_a_database_outside_the_data_dir_alone(tmp_path, monkeypatch):
    elsewhere = tmp_path / "shared.db"
    monkeypatch.setenv("ASSAY_ARENA_DB_URL", f"sqlite:///{elsewhere}")
    elsewhere.touch(mode=0o644)
    os.chmod(elsewhere, 0o644)
    assert main(["arena", "init", str(tmp_path / "event"), "--admin-password", "operator-pass"]) == 0
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o644
