"""``serve --workers N``: the workers end when their parent is killed (a real ``kill -9`` of a real
``serve``), and ``serve`` names whatever still holds its port."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from arena_helpers import _free_port, write_linear_challenge

from assay.arena.cli import _check_port_free
from assay.errors import InputError

SRC = str(Path(__file__).resolve().parents[2] / "src")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"  # a zombie has exited and closed its sockets


def _workers_of(parent: int) -> list[int]:
    """uvicorn's spawned workers of ``parent`` (not multiprocessing's resource tracker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (_stat(int(proc.name)) or ("", 0))[1] == parent:
            cmd = (proc / "cmdline").read_bytes()
            if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                pids.append(int(proc.name))
    return pids


def test_workers_exit_when_serve_is_killed_and_the_port_is_free_again(tmp_path):
    challenges, data = tmp_path / "challenges", tmp_path / "data"
    write_linear_challenge(challenges, "linear")
    env = {**os.environ, "ASSAY_ARENA_DIR": str(data), "ASSAY_ARENA_SECRET": secrets.token_hex(32),
           "ASSAY_ARENA_CHALLENGES": str(challenges), "ASSAY_ARENA_ARGON2": "fast", "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-m", "assay.arena.cli", "build"], env=env, check=True, capture_output=True)
    port = _free_port()
    serve = subprocess.Popen([sys.executable, "-m", "assay.arena.cli", "serve", "--port", str(port), "--workers", "2"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline:  # both workers started and the port answers
            workers = _workers_of(serve.pid)
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/api/scoreboard", timeout=1).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "serve did not start two workers"
        os.kill(serve.pid, signal.SIGKILL)
        serve.wait(10)
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "orphaned workers kept running after kill -9 of serve"
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/api/scoreboard", timeout=2)
        _check_port_free("127.0.0.1", port)  # what the next `serve` checks first: no "port in use"
    finally:
        for pid in [serve.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


ORPHAN = textwrap.dedent("""
    import socket, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", '''
    import socket, sys, time
    from assay.arena.process import WORKER_NAME, name_this_process
    name_this_process(WORKER_NAME)
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
    print("listening", flush=True)
    time.sleep(120)
    ''', sys.argv[1]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    assert child.stdout.readline().strip() == "listening"
    print(child.pid, flush=True)  # then exit: the listener is orphaned, like a worker of a killed serve
""")


def test_serve_names_an_orphaned_worker_holding_the_port():
    port = _free_port()
    out = subprocess.run([sys.executable, "-c", ORPHAN, str(port)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": SRC})
    orphan = int(out.stdout.strip())
    try:
        assert _stat(orphan)[1] != os.getpid()
        with pytest.raises(InputError) as e:
            _check_port_free("127.0.0.1", port)
        assert str(e.value) == (f"port {port} on 127.0.0.1 is in use by orphaned assay arena worker process(es) "
                                f"{orphan}, left by a `serve` that was killed; stop them with `kill {orphan}`; "
                                "pick another with --port")
    finally:
        os.kill(orphan, signal.SIGKILL)


def test_serve_names_another_program_holding_the_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(InputError) as e:
            _check_port_free("127.0.0.1", port)
    assert str(e.value).startswith(f"port {port} on 127.0.0.1 is in use by process {os.getpid()} (")
    assert str(e.value).endswith("; pick another with --port")
