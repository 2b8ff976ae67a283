"""Arena test fixtures: a tiny fixture challenge written into a tmp directory, a real PostgreSQL
server (when its binaries exist), and an app/TestClient parametrised over SQLite and PostgreSQL."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

LINEAR_CHALLENGE = textwrap.dedent('''
    """Fixture challenge: a hidden linear score w.x; solved when w.x >= 0.9 * |w|_1 with x in [-1, 1]^4."""
    import json
    from pathlib import Path

    import torch

    from assay.arena.challenge import Challenge, ScoreResult
    from assay.errors import InputError

    DIM = 4

    def _check(x):
        if not isinstance(x, list) or len(x) != DIM or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x):
            raise InputError(f"x must be a list of {DIM} numbers")
        if any(abs(v) > 1 for v in x):
            raise InputError("x values must lie in [-1, 1]")
        return x

    class Linear(Challenge):
        def build(self, seed, workdir):
            g = torch.Generator().manual_seed(seed)
            w = torch.randn(DIM, generator=g)
            (Path(workdir) / "w.json").write_text(json.dumps(w.tolist()))

        def load(self, workdir):
            self.w = torch.tensor(json.loads((Path(workdir) / "w.json").read_text()))

        def _inputs(self, payload):
            if "xs" in payload:
                xs = payload["xs"]
                if not isinstance(xs, list) or not 1 <= len(xs) <= 16:
                    raise InputError("xs must be a list of 1 to 16 inputs")
                return [_check(x) for x in xs]
            if "x" not in payload:
                raise InputError("payload needs 'x' (a list of 4 numbers) or 'xs'")
            return [_check(payload["x"])]

        def cost(self, payload):
            return len(self._inputs(payload))

        def request_schema(self):
            from assay.arena.payload import array_schema, list_schema, number_schema, object_schema, one_of

            x = array_schema((DIM,), number_schema(-1.0, 1.0))
            return one_of(object_schema({"x": x}), object_schema({"xs": list_schema(x, max_items=16)}))

        def response_schema(self):
            from assay.arena.payload import list_schema, number_schema, object_schema

            return object_schema({"scores": list_schema(number_schema(), max_items=16)})

        def score(self, payload):
            r = self._score_many([payload])[0]
            if isinstance(r, Exception):
                raise r
            return r

        def _score_many(self, payloads):
            out, rows, owners = [], [], []
            for i, p in enumerate(payloads):
                try:
                    xs = self._inputs(p)
                except InputError as e:
                    out.append(e)
                    continue
                out.append(None)
                rows += xs
                owners += [i] * len(xs)
            if rows:
                scores = (torch.tensor(rows, dtype=torch.float32) @ self.w).tolist()
                goal = 0.9 * float(self.w.abs().sum())
                per = {}
                for i, s in zip(owners, scores):
                    per.setdefault(i, []).append(s)
                for i, ss in per.items():
                    out[i] = ScoreResult({"scores": [round(s, 6) for s in ss]}, solved=max(ss) >= goal, cost=len(ss))
            return out

        def score_batch(self, payloads):
            return self._score_many(payloads)

        def artifacts(self):
            return {"readme.txt": b"score = w . x for a hidden w; reach 90% of the maximum.",
                    "shape.json": json.dumps({"dim": DIM}).encode()}

    CHALLENGE = Linear

    def solve(client):
        """Estimate w from the 4 basis vectors, then play sign(w)."""
        w = []
        for i in range(DIM):
            e = [0.0] * DIM
            e[i] = 1.0
            w.append(client.score({"x": e})["scores"][0])
        return client.score({"x": [1.0 if v >= 0 else -1.0 for v in w]})

    def naive(client):
        return client.score({"x": [0.0] * DIM})
''')


def write_linear_challenge(root: Path, cid: str = "linear", *, points: int = 100, query_budget: int = 20,
                           rate_per_minute: float = 6000.0, burst: int = 100, submission_limit: int = 5,
                           max_payload_bytes: int = 2048, seed: int = 0, name: str | None = None,
                           description: str = "Push a hidden linear score to 90% of its maximum.") -> Path:
    d = Path(root) / cid
    d.mkdir(parents=True, exist_ok=True)
    (d / "challenge.py").write_text(LINEAR_CHALLENGE)
    (d / "challenge.toml").write_text(textwrap.dedent(f'''
        id = "{cid}"
        name = "{name or cid.title()}"
        category = "evasion"
        difficulty = "easy"
        points = {points}
        description = {json.dumps(description)}
        query_budget = {query_budget}
        rate_per_minute = {rate_per_minute}
        burst = {burst}
        submission_limit = {submission_limit}
        max_payload_bytes = {max_payload_bytes}
        artifacts = ["readme.txt", "shape.json"]
        seed = {seed}
    '''))
    return d


@pytest.fixture
def challenge_dir(tmp_path):
    root = tmp_path / "challenges"
    write_linear_challenge(root, "linear", points=100, seed=0)
    write_linear_challenge(root, "linear2", points=300, seed=1, query_budget=8, rate_per_minute=60, burst=3)
    return root


# ----------------------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster in a tmp dir (unix socket there too); yields a URL factory."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not installed (/usr/lib/postgresql/*/bin/initdb)")
    base = Path(tempfile.mkdtemp(prefix="assay-pg-"))
    os.chmod(base, 0o755)
    data = base / "data"
    port = _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                   check=True, capture_output=True, env=env)
    opts = f"-k {base} -p {port} -c listen_addresses='' -c fsync=off -c max_connections=200"
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w",
                    "start"], check=True, capture_output=True, env=env)
    counter = iter(range(10**6))

    def new_database() -> str:
        import psycopg

        name = f"arena_{next(counter)}"
        with psycopg.connect(host=str(base), port=port, user="postgres", dbname="postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@/{name}?host={base}&port={port}"

    yield new_database
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, env=env)
    shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- app
def make_settings(tmp_path: Path, challenge_dir: Path, db_url: str = "", **kw):
    from assay.arena.settings import Settings

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return Settings(data_dir=data, secret=secrets.token_hex(32), db_url=db_url, challenges_dir=challenge_dir,
                    argon2="fast", **kw)


def built_arena(settings):
    from assay.arena.service import Arena, build_challenges

    build_challenges(settings)
    return Arena(settings)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def arena_app(request, tmp_path, challenge_dir):
    """(TestClient, Arena) on a fresh database of each kind."""
    from fastapi.testclient import TestClient

    from assay.arena.app import create_app

    db_url = request.getfixturevalue("postgres_server")() if request.param == "postgres" else ""
    settings = make_settings(tmp_path, challenge_dir, db_url, admin_password="operator-pass")
    arena = built_arena(settings)
    with TestClient(create_app(settings, arena)) as client:
        yield client, arena
    arena.store.dispose()


def register(client, name: str, password: str = "password123") -> dict:
    r = client.post("/api/register", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}", "_id": r.json()["player_id"]}


def all_routes(routes):
    """(path, methods) of every endpoint, looking inside included routers (FastAPI keeps them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from all_routes(inner.routes)
        elif getattr(route, "methods", None):
            yield route.path, route.methods


def hdr(h: dict) -> dict:
    return {k: v for k, v in h.items() if not k.startswith("_")}


class LiveServer:
    """uvicorn serving ``app`` in a background thread on a free loopback port."""

    def __init__(self, app):
        import threading

        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)
