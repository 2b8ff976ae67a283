"""Worker processes of ``assay arena serve --workers N``: they end when their parent does, and a
port still held by one (or by anything else) is named when ``serve`` cannot bind it.

uvicorn's multi-worker supervisor is the ``serve`` process itself; its workers are spawned children
sharing the listening socket. If the supervisor is killed (``kill -9``, an OOM kill) the workers
used to keep serving as orphans, holding the port. Each worker now calls :func:`follow_parent` at
start-up: on Linux the kernel sends it SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``),
and a watchdog thread (every platform) notices the parent pid change within half a second, asks
uvicorn to shut down gracefully (SIGTERM: in-flight requests finish, the socket closes) and forces
the exit if that takes longer than :data:`GRACE_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from pathlib import Path

SUPERVISOR_ENV = "ASSAY_ARENA_SUPERVISOR_PID"  # set by `serve` for its workers
WORKER_NAME = "assay-arena-wkr"  # the workers' process name (at most 15 bytes: the kernel's limit)
GRACE_S = 10.0
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15


def _prctl(option: int, value: int | bytes) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def name_this_process(name: str = WORKER_NAME) -> bool:
    """Set the process name ``ps`` and /proc/PID/comm show (Linux; False elsewhere)."""
    return _prctl(_PR_SET_NAME, name.encode()[:15])


def follow_parent(parent_pid: int, *, poll_s: float = 0.5) -> None:
    """End this process (SIGTERM, then a forced exit after :data:`GRACE_S`) when ``parent_pid`` is no
    longer its parent. Names the process :data:`WORKER_NAME` so that ``ps`` and ``serve`` can tell
    an arena worker from other programs."""
    name_this_process(WORKER_NAME)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent_pid:  # also covers a parent that died before prctl ran
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_S)
        os._exit(0)  # graceful shutdown hung (e.g. a request that never finishes)

    threading.Thread(target=watch, name="assay-arena-parent-watch", daemon=True).start()


def follow_supervisor_from_env() -> None:
    """In a worker started by ``serve --workers N`` (the supervisor's pid is in the environment and
    is not this process), follow it; elsewhere (one worker, tests) do nothing."""
    raw = os.environ.get(SUPERVISOR_ENV, "")
    if raw.isdigit() and int(raw) != os.getpid():
        follow_parent(int(raw))


# ---------------------------------------------------------------- who holds a port
def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address is HEXIP:HEXPORT; state 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _owners(inodes: set[str]) -> list[int]:
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone meanwhile, or another user's process
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile (any process's threads open and close files)
                continue
            if link in wanted:
                pids.append(int(proc.name))
                break
    return sorted(pids)


def _proc_info(pid: int) -> tuple[str, int, str]:
    """(name, parent pid, command line) of ``pid``, from /proc."""
    base = Path("/proc", str(pid))
    name = (base / "comm").read_text().strip()
    stat = (base / "stat").read_text()
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    return name, ppid, cmdline


def describe_listener(port: int) -> str | None:
    """Who listens on ``port``, as a phrase for an error message (Linux /proc; None when unknown):
    orphaned arena workers, a running arena server, or another program with its pid."""
    try:
        pids = _owners(_listening_inodes(port))
        infos = {pid: _proc_info(pid) for pid in pids}
    except OSError:
        return None
    if not infos:
        return None
    listed = " ".join(str(p) for p in pids)
    if all(name == WORKER_NAME for name, _, _ in infos.values()):
        # a live supervisor holds the listening socket too, so workers alone mean it is gone
        return (f"orphaned assay arena worker process(es) {listed}, left by a `serve` that was killed; "
                f"stop them with `kill {listed}`")
    name, _, cmdline = infos[pids[0]]
    if "arena" in cmdline and "serve" in cmdline:
        return f"a running assay arena server (process {listed}: {cmdline[:80]}); stop it first"
    return f"process {listed} ({name}: {cmdline[:80]})"
