"""Arena load benchmark: 3,000 registered players query a small MLP challenge concurrently.

Players are created directly through the store (one argon2 hash reused, random API keys), plus a
sample registered through the HTTP API (real argon2 defaults). The server runs as a subprocess
(``assay arena serve``: uvicorn, uvloop + httptools when installed) on loopback. The load client
runs in separate process(es) and is deliberately cheap, since it shares the machine's cores with
the server: raw asyncio streams (uvloop when installed), HTTP/1.1 keep-alive, ``--concurrency``
connections each with one request in flight, each request from a random player with a
pre-encoded body. Latency is measured end to end at the client. Bounded in time (``--warmup`` +
``--seconds``) and count (``--max-requests``). Runs with micro-batching on and then off and writes
benchmarks/results/arena_load.md.

    PYTHONPATH=src python benchmarks/bench_arena_load.py [--players 3000 --seconds 15 --concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import platform
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
MLP_CHALLENGE = textwrap.dedent('''
    import torch
    from pathlib import Path
    from assay.arena.challenge import Challenge, ScoreResult
    from assay.errors import InputError

    class MLP(Challenge):
        def build(self, seed, workdir):
            torch.manual_seed(seed)
            net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
            torch.save(net.state_dict(), Path(workdir) / "mlp.pt")

        def load(self, workdir):
            torch.set_num_threads(1)
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
            self.net.load_state_dict(torch.load(Path(workdir) / "mlp.pt", weights_only=True))
            self.net.eval()

        def _x(self, p):
            x = p.get("input")
            if not isinstance(x, list) or len(x) != 64:
                raise InputError("input must be a list of 64 numbers in [0, 1]")
            return x

        def score(self, payload):
            r = self.score_batch([payload])[0]
            if isinstance(r, Exception):
                raise r
            return r

        def score_batch(self, payloads):
            out, rows, idx = [], [], []
            for i, p in enumerate(payloads):
                try:
                    rows.append(self._x(p)); idx.append(i); out.append(None)
                except InputError as e:
                    out.append(e)
            if rows:
                with torch.no_grad():
                    probs = torch.softmax(self.net(torch.tensor(rows, dtype=torch.float32)), dim=1)
                top = probs.argmax(1).tolist()
                for j, i in enumerate(idx):
                    out[i] = ScoreResult({"label": top[j], "confidence": round(float(probs[j, top[j]]), 4)},
                                         solved=False)
            return out

    CHALLENGE = MLP
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(tmp: Path, n_players: int, n_api: int, server_src: Path, db_url: str = "") -> tuple[dict, list[str], float]:
    sys.path.insert(0, str(ROOT / "src"))
    from sqlalchemy import insert

    from assay.arena.auth import hash_api_key, password_hasher
    from assay.arena.service import Arena, build_challenges
    from assay.arena.settings import Settings
    from assay.arena.store import Player

    ch = tmp / "challenges" / "mlp"
    ch.mkdir(parents=True)
    (ch / "challenge.py").write_text(MLP_CHALLENGE)
    (ch / "challenge.toml").write_text(textwrap.dedent('''
        id = "mlp"
        name = "MLP"
        category = "evasion"
        difficulty = "easy"
        points = 100
        description = "benchmark model"
        query_budget = 1000000
        rate_per_minute = 1000000.0
        burst = 1000000
    '''))
    secret = secrets.token_hex(32)
    env = {**os.environ, "ASSAY_ARENA_DIR": str(tmp), "ASSAY_ARENA_SECRET": secret,
           "ASSAY_ARENA_CHALLENGES": str(tmp / "challenges"), "PYTHONPATH": str(server_src),
           "ASSAY_ARENA_DB_URL": db_url,
           # the sample sign-ups all come from loopback: lift the per-address password-attempt limit
           "ASSAY_ARENA_LOGIN_BURST": "1000000"}
    settings = Settings.from_env(data_dir=tmp, secret=secret, challenges_dir=tmp / "challenges", db_url=db_url)
    build_challenges(settings)
    arena = Arena(settings)
    one_hash = password_hasher().hash("benchmark-password")
    keys = [f"ak_bench_{secrets.token_urlsafe(24)}" for _ in range(n_players - n_api)]
    with arena.store.engine.begin() as conn:
        conn.execute(insert(Player), [dict(name=f"bench{i}", password_hash=one_hash, api_key_hash=hash_api_key(k),
                                           is_operator=False, created_at=time.time()) for i, k in enumerate(keys)])
    arena.store.dispose()
    return env, keys, 0.0


async def register_sample(url: str, n: int) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        keys = []
        for i in range(n):
            r = await c.post("/api/register", json={"name": f"api{i}", "password": "benchmark-password"})
            r.raise_for_status()
            keys.append(r.json()["api_key"])
    return keys, (time.perf_counter() - t0) / max(n, 1)


async def _connection(port: int, requests: list[bytes], order: list[int], t_measure: float, t_end: float,
                      budget: list[int], latencies: list[float], errors: list[int], accepted: list[int],
                      last: list[float]) -> None:
    """One keep-alive connection sending requests back to back (one in flight)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while budget[0] > 0:
            t0 = time.perf_counter()
            if t0 >= t_end:
                return
            writer.write(requests[order[i % len(order)]])
            i += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            t1 = time.perf_counter()
            ok = head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"result"')
            accepted[0] += ok
            if t0 >= t_measure:
                last[0] = max(last[0], t1 - t_measure)
                budget[0] -= 1
                if ok:
                    latencies.append((t1 - t0) * 1000)
                else:
                    errors[0] += 1
    finally:
        writer.close()


def client_process(port: int, keys: list[str], connections: int, start_at: float, warmup: float, seconds: float,
                   max_requests: int, seed: int) -> dict:
    """Runs in its own process: ``connections`` keep-alive connections until the window closes.
    Returns the latencies (ms) of the requests started inside the measured window, the error count
    and this process's CPU seconds."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    import json as _json

    rng = random.Random(seed)
    bodies = [_json.dumps({"input": [round(rng.random(), 6) for _ in range(64)]}).encode() for _ in range(32)]
    requests = []
    for _ in range(4096):  # pre-encoded: random player, random payload
        key, body = keys[rng.randrange(len(keys))], bodies[rng.randrange(len(bodies))]
        requests.append(b"POST /api/challenges/mlp/score HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Authorization: Bearer " + key.encode() + b"\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    latencies: list[float] = []
    errors, budget, accepted, last = [0], [max_requests], [0], [0.0]

    async def main():
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        now = time.perf_counter()
        t_measure, t_end = now + warmup, now + warmup + seconds
        orders = [[rng.randrange(len(requests)) for _ in range(4096)] for _ in range(connections)]
        await asyncio.gather(*[_connection(port, requests, orders[c], t_measure, t_end, budget, latencies, errors, accepted,
                                           last) for c in range(connections)])

    cpu0 = time.process_time()
    asyncio.run(main())
    return dict(latencies=latencies, errors=errors[0], accepted=accepted[0], cpu_s=time.process_time() - cpu0,
                measured_s=last[0])


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live child processes (uvicorn's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1] is the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def load(port: int, keys: list[str], seconds: float, warmup: float, concurrency: int, max_requests: int,
         client_procs: int, server_pid: int) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    per = [concurrency // client_procs + (1 if i < concurrency % client_procs else 0) for i in range(client_procs)]
    start_at = time.time() + 2.0  # every client process starts its window at the same moment
    with ctx.Pool(client_procs) as pool:
        jobs = [pool.apply_async(client_process, (port, keys, n, start_at, warmup, seconds,
                                                  max_requests // client_procs, 1000 + i))
                for i, n in enumerate(per)]
        time.sleep(max(0.0, start_at - time.time() + warmup))
        cpu0, t0 = _proc_cpu_seconds(server_pid), time.perf_counter()
        time.sleep(seconds)
        server_cpu, wall = _proc_cpu_seconds(server_pid) - cpu0, time.perf_counter() - t0
        parts = [j.get(timeout=warmup + seconds + 120) for j in jobs]
    latencies = sorted(x for p in parts for x in p["latencies"])
    errors = sum(p["errors"] for p in parts)
    n = len(latencies)
    pct = lambda q: latencies[min(n - 1, int(q * n))] if n else float("nan")  # noqa: E731
    # the measured window ends at the last completion (earlier than `seconds` if --max-requests binds)
    measured = max(p["measured_s"] for p in parts) or seconds
    return dict(requests=n, errors=errors, seconds=measured, rps=n / measured, p50=pct(0.50), p99=pct(0.99),
                mean=statistics.fmean(latencies) if n else float("nan"),
                server_cpu_ms_per_req=1000 * server_cpu / max(n, 1), server_cores=server_cpu / wall,
                client_cpu_s=sum(p["cpu_s"] for p in parts), accepted=sum(p["accepted"] for p in parts))


def committed(db_url: str) -> tuple[int, int]:
    """(query-log rows with outcome ok, sum of budgets' used) in the benchmark database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as c:
        rows = c.execute(text("SELECT count(*) FROM query_log WHERE outcome = 'ok'")).scalar()
        used = c.execute(text("SELECT coalesce(sum(used), 0) FROM budgets")).scalar()
    engine.dispose()
    return rows, used


@contextlib.contextmanager
def postgres_cluster():
    """A throwaway local PostgreSQL (Debian's binaries; data and unix socket in a fresh temporary
    directory, fsync on, the defaults otherwise); yields its URL. The arena tests' recipe."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("--db postgres needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)")
    base = Path(tempfile.mkdtemp(prefix="assay-bench-pg-"))
    bindir, data, port = Path(found[-1]).parent, base / "pg", free_port()
    os.chmod(base, 0o755)
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C"], check=True, capture_output=True, env=env)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o",
                    f"-k {base} -p {port} -c listen_addresses=''", "-l", str(base / "log"), "-w", "start"],
                   check=True, capture_output=True, env=env)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={base}&port={port}"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, env=env)
        shutil.rmtree(base, ignore_errors=True)


def run_server(env: dict, port: int, microbatch: bool, workers: int = 1) -> subprocess.Popen:
    env = {**env, "ASSAY_ARENA_MICROBATCH": "1" if microbatch else "0"}
    proc = subprocess.Popen([sys.executable, "-m", "assay.arena.cli", "serve", "--port", str(port),
                             "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/scoreboard", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=3000)
    ap.add_argument("--api-players", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--concurrency", default="64", help="requests in flight (one per connection); a list: 32,64")
    ap.add_argument("--client-procs", type=int, default=1, help="load-client processes sharing the connections")
    ap.add_argument("--max-requests", type=int, default=200_000, help="cap on measured requests per run")
    ap.add_argument("--workers", default="1", help="uvicorn worker processes; a list: 1,2")
    ap.add_argument("--modes", default="on,off", help="micro-batching settings to run: on, off or on,off")
    ap.add_argument("--server-src", default=str(ROOT / "src"),
                    help="source tree the server runs (e.g. an older revision's src, for a before/after)")
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                    help="SQLite WAL file, or a throwaway local PostgreSQL server")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arena_load.md"),
                    help="results file ('-' prints only)")
    args = ap.parse_args()
    import fastapi
    import sqlalchemy
    import torch
    import uvicorn

    runs = [(w, c, m.strip() == "on") for w in _ints(args.workers) for c in _ints(args.concurrency)
            for m in args.modes.split(",")]
    pg_version = ""
    load_at_start = " ".join(open("/proc/loadavg").read().split()[:3])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stack = contextlib.ExitStack()
        db_url = stack.enter_context(postgres_cluster()) if args.db == "postgres" else ""
        env, keys, _ = setup(Path(tmp), args.players, args.api_players, Path(args.server_src).resolve(), db_url)
        if db_url:
            import psycopg

            pg_version = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1]).parts[-3] + \
                f" (local unix socket, fsync on), psycopg {psycopg.__version__}"
        db_url = db_url or f"sqlite:///{Path(tmp) / 'arena.db'}"
        setup_s = time.perf_counter() - t0
        reg_s, accepted_total = None, 0
        for run in runs:
            workers, concurrency, microbatch = run
            port = free_port()
            proc = run_server(env, port, microbatch, workers)
            try:
                url = f"http://127.0.0.1:{port}"
                if reg_s is None:
                    api_keys, reg_s = asyncio.run(register_sample(url, args.api_players))
                    keys = keys + api_keys
                r = results[run] = load(port, keys, args.seconds, args.warmup, concurrency, args.max_requests,
                                        args.client_procs, proc.pid)
            finally:
                proc.terminate()
                proc.wait(20)
            # Every 200 the clients saw must be a committed charge and log row (the database is
            # shared by the runs, so the counts accumulate).
            rows, used = committed(db_url)
            accepted_total += r["accepted"]
            assert rows >= accepted_total and used >= accepted_total, (rows, used, accepted_total)
            r["db_rows"], r["db_used"], r["answers"] = rows, used, accepted_total
            print(run, {k: v for k, v in r.items()}, flush=True)
        stack.close()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        "# Arena load benchmark", "",
        f"Command: `PYTHONPATH=src python benchmarks/bench_arena_load.py --players {args.players} "
        f"--seconds {args.seconds:g} --concurrency {args.concurrency} --client-procs {args.client_procs} "
        f"--workers {args.workers} --modes {args.modes} --db {args.db}"
        + ("" if Path(args.server_src).resolve() == ROOT / "src" else f" --server-src {args.server_src}") + "`", "",
        f"Load average when the run started: {load_at_start}.", "",
        f"Machine: {cpu}, {os.cpu_count()} cores (server and client share them), Linux {platform.release()}; "
        f"Python {platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__} "
        f"(uvloop {_version('uvloop')}, httptools {_version('httptools')}), orjson {_version('orjson')}, "
        f"SQLAlchemy {sqlalchemy.__version__} on {'SQLite WAL' if args.db == 'sqlite' else 'PostgreSQL ' + pg_version}, torch {torch.__version__}.", "",
        f"Setup: {args.players} players ({args.players - args.api_players} inserted through the store in "
        f"{setup_s:.1f} s including the challenge build; {args.api_players} registered through "
        f"`POST /api/register` at {reg_s * 1000:.0f} ms each, argon2id library defaults). Challenge: an MLP "
        "64-64-10 scored with `score_batch`. Each request: a random player's API key, a 64-float payload, the "
        "full path (API-key lookup, atomic budget UPDATE and query-log INSERT committed before the answer, "
        f"model). Each run: a fresh `assay arena serve` process on the same database; `concurrency` keep-alive "
        f"connections with one request in flight each, from {args.client_procs} raw-asyncio client process(es) "
        f"on loopback; {args.warmup:g} s warm-up excluded, {args.seconds:g} s measured.", "",
        "| workers | concurrency | micro-batching | requests | errors | req/s | p50 ms | p99 ms | mean ms "
        "| server CPU ms/req | server cores busy | client CPU s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        (w, c, mb), r = run, results[run]
        lines.append(f"| {w} | {c} | {'on' if mb else 'off'} | {r['requests']} | {r['errors']} | {r['rps']:.0f} "
                     f"| {r['p50']:.1f} | {r['p99']:.1f} | {r['mean']:.1f} | {r['server_cpu_ms_per_req']:.2f} "
                     f"| {r['server_cores']:.2f} | {r['client_cpu_s']:.1f} |")
    last = results[runs[-1]]
    lines += ["", f"Check: after every run the database held at least as many committed `ok` query-log rows and "
              f"budget decrements as the clients had received 200 answers so far (warm-up included); at the end "
              f"{last['db_rows']} rows, {last['db_used']} used, {last['answers']} answers."]
    lines += ["", "Target: >= 500 req/s with p99 < 100 ms. Latency is end-to-end at the client, so it includes "
              "queueing behind the other in-flight requests (Little's law: mean latency is about concurrency / "
              "throughput)."]
    print("\n".join(lines))
    if args.out != "-":
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
