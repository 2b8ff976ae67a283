"""Reference solvers end to end: wall and CPU time of ``assay arena solve ID --url ...`` against a
live ``assay arena serve``, as a player runs it (a fresh process: imports, artifact downloads, the
attack, the queries). The server runs in its own process, so the solver's CPU time is its own.

    PYTHONPATH=src python benchmarks/bench_arena_solvers.py [--only backdoor ...] [--repeat 2]

Writes benchmarks/results/arena_solvers.md. There is no peer library to compare with: the figures
are checked against what docs/arena-challenges.md states.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """(wall s, CPU s of the child (user + system), exit code, output) of one command."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, proc.returncode, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=["backdoor"], help="challenge ids (default: backdoor)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/arena_solvers.md"))
    args = ap.parse_args()

    data, player_dir = Path(tempfile.mkdtemp(prefix="arena-solvers-")), Path(tempfile.mkdtemp(prefix="player-"))
    challenges = data / "challenges"  # only the ones measured: serve needs every challenge it finds built
    for cid in args.only:
        shutil.copytree(ROOT / "src/assay/arena/challenges" / cid, challenges / cid)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ASSAY_ARENA_ARGON2": "fast",
           "ASSAY_ARENA_SECRET": secrets.token_hex(32), "ASSAY_ARENA_DIR": str(data),
           "ASSAY_ARENA_CHALLENGES": str(challenges)}
    cli = [sys.executable, "-m", "assay", "arena"]
    subprocess.run([*cli, "build", "--only", *args.only], env=env, check=True, capture_output=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    rows = []
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit("serve failed: " + server.stderr.read()[-2000:])
            try:
                if httpx.get(f"{url}/api/scoreboard", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for cid in args.only:
            for i in range(args.repeat):
                key = httpx.post(f"{url}/api/register", json={"name": f"bench-{cid}-{i}", "password": "password123"},
                                 timeout=30).json()["api_key"]
                # as a player: no access to the server's data directory (the built, hidden files)
                player_env = {**env, "ASSAY_ARENA_DIR": str(player_dir)}
                wall, cpu, code, out = run_timed([*cli, "solve", cid, "--url", url, "--api-key", key], player_env)
                solved = code == 0 and "flag obtained" in out
                rows.append((cid, i + 1, wall, cpu, solved))
                print(f"{cid} run {i + 1}: wall {wall:.1f} s, CPU {cpu:.1f} s, solved {solved}", flush=True)
    finally:
        server.terminate()
        server.wait(30)
    load = os.getloadavg()
    import torch

    lines = [
        "# Reference solvers, end to end",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/bench_arena_solvers.py --only {' '.join(args.only)} "
        f"--repeat {args.repeat}`",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average at the end "
        f"{load[0]:.1f} (other jobs shared the machine: wall time is inflated by them, CPU time much less)",
        f"- Versions: python {platform.python_version()}, torch {torch.__version__}",
        "- Each run: a fresh `assay arena solve ID --url ... --api-key ...` process (imports, artifact downloads, "
        "the attack, its queries) against `assay arena serve` in another process; CPU = the solve process's "
        "user + system time.",
        "",
        "| challenge | run | wall (s) | CPU (s) | solved |",
        "|---|---|---|---|---|",
        *[f"| {c} | {i} | {w:.1f} | {u:.1f} | {'yes' if s else 'NO'} |" for c, i, w, u, s in rows],
        "",
    ]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
