"""Kill the server (SIGKILL) under load, restart it on the same database: every accepted query,
submission and solve is still there, nothing is counted twice, and the budget still holds."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from arena_helpers import _free_port, write_linear_challenge

from assay.arena.flags import flag_for

BUDGET = 60
THREADS_PER_PLAYER = 2


def _start(env, port) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "assay.arena.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/scoreboard", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start: " + proc.stderr.read().decode()[-2000:])


def test_sigkill_mid_load_loses_and_duplicates_nothing(tmp_path):
    from assay.arena.service import Arena, build_challenges
    from assay.arena.settings import Settings
    from assay.arena.store import Solve, Submission

    challenges = tmp_path / "challenges"
    write_linear_challenge(challenges, "linear", query_budget=BUDGET, rate_per_minute=1e6, burst=10**6,
                           submission_limit=1000)
    data = tmp_path / "data"
    data.mkdir()
    secret = secrets.token_hex(32)
    env = {**os.environ, "ASSAY_ARENA_DIR": str(data), "ASSAY_ARENA_SECRET": secret,
           "ASSAY_ARENA_CHALLENGES": str(challenges), "ASSAY_ARENA_ARGON2": "fast",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    settings = Settings.from_env(data_dir=data, secret=secret, challenges_dir=challenges, argon2="fast")
    build_challenges(settings)
    arena = Arena(settings)
    players = [(p.id, key) for p, key in (arena.register(f"p{i}", "password123") for i in range(4))]
    arena.store.dispose()

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ok_queries = {pid: 0 for pid, _ in players}
    ok_solves: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def worker(pid, key, submitter):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if submitter and n % 3 == 0:
                        flag = flag_for(secret, pid, "linear") if n % 6 == 0 else "assay{" + "0" * 32 + "}"
                        r = c.post("/api/challenges/linear/submit", json={"flag": flag})
                        if r.status_code == 200 and r.json()["correct"]:
                            with lock:
                                ok_solves.add(pid)
                        continue
                    r = c.post("/api/challenges/linear/score", json={"x": [0.0, 0.0, 0.0, 0.0]})
                except httpx.HTTPError:
                    return  # the server died with this request in flight
                if r.status_code == 200:
                    with lock:
                        ok_queries[pid] += 1
                elif r.status_code == 429:
                    return
                time.sleep(0.002)

    proc = _start(env, port)
    threads = [threading.Thread(target=worker, args=(pid, key, t == 0)) for pid, key in players
               for t in range(THREADS_PER_PLAYER)]
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while sum(ok_queries.values()) < 60 and time.time() < deadline:  # well under the 4 x 60 budget
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(10)
    first_run = dict(ok_queries)
    assert sum(first_run.values()) >= 60 and ok_solves

    proc = _start(env, port)  # same database
    try:
        check = Arena(Settings.from_env(data_dir=data, secret=secret, challenges_dir=challenges, argon2="fast"))
        for pid, _ in players:
            used = check.budgets.used(pid, "linear")
            # at most one request per thread was in flight at the kill: charged, but never answered
            assert first_run[pid] <= used <= first_run[pid] + THREADS_PER_PLAYER
        with check.store.session() as s:
            solves = s.query(Solve).all()
            assert {x.player_id for x in solves} >= ok_solves  # every acknowledged solve survived
            assert len(solves) == len({x.player_id for x in solves})  # and none is doubled
            correct_subs = s.query(Submission).filter(Submission.correct.is_(True)).count()
            assert correct_subs >= len(ok_solves)
        # continue until the hard total: it holds across the restart, exactly
        ok_after = {pid: 0 for pid, _ in players}
        for pid, key in players:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
                while True:
                    r = c.post("/api/challenges/linear/score", json={"x": [0.0, 0.0, 0.0, 0.0]})
                    if r.status_code == 429:
                        assert r.json()["detail"] == "query budget for this challenge exhausted"
                        break
                    assert r.status_code == 200
                    ok_after[pid] += 1
                for flag_owner in (pid,):
                    r = c.post("/api/challenges/linear/submit", json={"flag": flag_for(secret, flag_owner, "linear")})
                    assert r.json()["correct"] is True
        for pid, _ in players:
            assert check.budgets.used(pid, "linear") == BUDGET
            assert BUDGET - THREADS_PER_PLAYER <= first_run[pid] + ok_after[pid] <= BUDGET
        with check.store.session() as s:
            assert s.query(Solve).count() == len(players)
        check.store.dispose()
    finally:
        proc.kill()
        proc.wait(10)
