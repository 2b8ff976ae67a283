"""Arena load benchmark: 3,000 registered players query a small MLP challenge concurrently.

Players are created directly through the store (one argon2 hash reused, random API keys), plus a
sample registered through the HTTP API (real argon2 defaults). The server runs as a subprocess
(uvicorn, one worker) on loopback; an async httpx client keeps ``--concurrency`` requests in flight,
each from a random player, for ``--seconds`` (after a warm-up), with micro-batching on and then off.
Writes benchmarks/results/arena_load.md.

    PYTHONPATH=src python benchmarks/bench_arena_load.py [--players 3000 --seconds 15 --concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
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


def setup(tmp: Path, n_players: int, n_api: int) -> tuple[dict, list[str], float]:
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
           "ASSAY_ARENA_CHALLENGES": str(tmp / "challenges"), "PYTHONPATH": str(ROOT / "src")}
    settings = Settings.from_env(data_dir=tmp, secret=secret, challenges_dir=tmp / "challenges")
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


async def load(url: str, keys: list[str], seconds: float, warmup: float, concurrency: int, max_requests: int):
    rng = random.Random(0)
    payloads = [{"input": [rng.random() for _ in range(64)]} for _ in range(32)]
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        t_start = time.perf_counter()
        t_measure = t_start + warmup
        t_end = t_measure + seconds
        count = 0

        async def worker(wid: int):
            nonlocal errors, count
            r = random.Random(wid)
            while True:
                now = time.perf_counter()
                if now >= t_end or count >= max_requests:
                    return
                key = keys[r.randrange(len(keys))]
                t0 = time.perf_counter()
                resp = await c.post("/api/challenges/mlp/score", json=payloads[r.randrange(32)],
                                    headers={"Authorization": f"Bearer {key}"})
                t1 = time.perf_counter()
                if t0 >= t_measure:
                    count += 1
                    if resp.status_code == 200:
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*[worker(i) for i in range(concurrency)])
        elapsed = min(time.perf_counter(), t_end) - t_measure
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")  # noqa: E731
    return dict(requests=len(latencies), errors=errors, seconds=elapsed, rps=len(latencies) / elapsed,
                p50=pct(0.50), p99=pct(0.99), mean=statistics.fmean(latencies) if latencies else float("nan"))


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--players", type=int, default=3000)
    ap.add_argument("--api-players", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-requests", type=int, default=30000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "arena_load.md"))
    args = ap.parse_args()
    import fastapi
    import sqlalchemy
    import torch
    import uvicorn

    load_at_start = " ".join(open("/proc/loadavg").read().split()[:3])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        env, keys, _ = setup(Path(tmp), args.players, args.api_players)
        setup_s = time.perf_counter() - t0
        reg_s = None
        for microbatch in (True, False):
            port = free_port()
            proc = run_server(env, port, microbatch, args.workers)
            try:
                url = f"http://127.0.0.1:{port}"
                if reg_s is None:
                    api_keys, reg_s = asyncio.run(register_sample(url, args.api_players))
                    keys = keys + api_keys
                results[microbatch] = asyncio.run(load(url, keys, args.seconds, args.warmup, args.concurrency,
                                                       args.max_requests))
            finally:
                proc.terminate()
                proc.wait(20)
            print(("micro-batching on " if microbatch else "micro-batching off"), results[microbatch], flush=True)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        "# Arena load benchmark", "",
        f"Command: `PYTHONPATH=src python benchmarks/bench_arena_load.py --players {args.players} "
        f"--seconds {args.seconds:g} --concurrency {args.concurrency} --workers {args.workers}`", "",
        f"Load average when the run started (other jobs share this machine): {load_at_start}.", "",
        f"Machine: {cpu}, {os.cpu_count()} cores (server and client share them), Linux {platform.release()}; "
        f"Python {platform.python_version()}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__} "
        f"(pure-Python h11/asyncio: no uvloop/httptools), SQLAlchemy {sqlalchemy.__version__} on SQLite WAL, "
        f"torch {torch.__version__}, httpx {httpx.__version__}.", "",
        f"Setup: {args.players} players ({args.players - args.api_players} inserted through the store in "
        f"{setup_s:.1f} s including the challenge build; {args.api_players} registered through "
        f"`POST /api/register` at {reg_s * 1000:.0f} ms each, argon2id library defaults). Challenge: an MLP "
        "64-64-10 scored with `score_batch`. Each request: a random player's API key, a 64-float payload, the "
        f"full path (API-key lookup, atomic budget UPDATE, model, query-log INSERT). {args.workers} uvicorn worker(s); "
        f"{args.concurrency} requests in flight from one async httpx client on loopback; "
        f"{args.warmup:g} s warm-up excluded.", "",
        "| micro-batching | requests | errors | req/s | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mb in (True, False):
        r = results[mb]
        lines.append(f"| {'on' if mb else 'off'} | {r['requests']} | {r['errors']} | {r['rps']:.0f} | {r['p50']:.1f} | "
                     f"{r['p99']:.1f} | {r['mean']:.1f} |")
    lines += ["", "Target: >= 500 req/s with p99 < 100 ms. Latency here is end-to-end at the client, so it "
              "includes queueing behind the other in-flight requests (Little's law: p50 is about concurrency / "
              "throughput)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
