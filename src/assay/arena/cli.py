"""``assay arena ...`` commands. ``add_arena_commands(subparsers)`` registers them on the main CLI;
``python -m assay.arena.cli ...`` runs them standalone."""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import socket
import sys
from pathlib import Path

from assay.errors import AssayError, InputError


def add_arena_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``arena`` (init, build, serve, solve, export) to an argparse ``subparsers`` object."""
    arena = subparsers.add_parser("arena", help="run an ML-security CTF (the arena server)")
    sub = arena.add_subparsers(dest="arena_command", required=True)

    def common(p):
        p.add_argument("--dir", default=None, help="data directory (default $ASSAY_ARENA_DIR or .)")
        p.add_argument("--challenges", default=None, help="challenge directory (default: the packaged challenges)")

    p = sub.add_parser("init", help="create a data directory: secret (0600), database, operator account")
    p.add_argument("dir")
    p.add_argument("--challenges", default=None)
    p.add_argument("--admin-password", default=None, help="default $ASSAY_ARENA_ADMIN_PASSWORD, else generated")

    p = sub.add_parser("build", help="build every challenge's model from its manifest seed into the data dir")
    common(p)
    p.add_argument("--only", nargs="*", default=None, help="challenge ids to build")

    p = sub.add_parser("serve", help="serve the event (uvicorn)")
    common(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)

    p = sub.add_parser("solve", help="run a challenge's reference solver against a server")
    p.add_argument("challenge")
    p.add_argument("--url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--challenges", default=None)
    p.add_argument("--dir", default=None, help="data dir with built challenges (solvers may need the build)")
    p.add_argument("--submit", action="store_true", help="submit the flag the solver obtained")

    p = sub.add_parser("export", help="export the challenge pack for CTFd's importer")
    common(p)
    p.add_argument("--ctfd", required=True, help="output zip (or directory)")
    p.add_argument("--url", default="<arena url>", help="the assay server players use, named in descriptions")
    p.add_argument("--dynamic", action="store_true", help="export CTFd dynamic (decaying) challenges")
    p.add_argument("--ctfd-version", choices=["3.7", "3.8"], default="3.8",
                   help="the CTFd release line to import into (3.8: 3.8.0-3.8.7, 3.7: 3.7.0-3.7.7; default 3.8)")

    # The main CLI dispatches on `fn`; the standalone main() here on `func`.
    arena.set_defaults(func=handle_arena, fn=handle_arena)
    return arena


def _env_for(args) -> None:
    if getattr(args, "dir", None):
        os.environ["ASSAY_ARENA_DIR"] = str(Path(args.dir).resolve())
    if getattr(args, "challenges", None):
        os.environ["ASSAY_ARENA_CHALLENGES"] = str(Path(args.challenges).resolve())


def _settings(args, need_secret: bool = True):
    from assay.arena.settings import Settings

    _env_for(args)
    if not need_secret and not os.environ.get("ASSAY_ARENA_SECRET"):
        try:
            return Settings.from_env()
        except InputError:
            return Settings.from_env(secret=secrets.token_hex(32))  # building needs no secret
    return Settings.from_env()


def handle_arena(args) -> int:
    cmd = args.arena_command
    if cmd == "init":
        return _init(args)
    if cmd == "build":
        from assay.arena.service import build_challenges

        s = _settings(args, need_secret=False)
        for cid in build_challenges(s, args.only):
            print(f"built {cid} -> {s.built_dir / cid}")
        return 0
    if cmd == "serve":
        return _serve(args)
    if cmd == "solve":
        return _solve(args)
    if cmd == "export":
        from assay.arena.challenge import discover
        from assay.arena.ctfd import export_ctfd

        s = _settings(args, need_secret=False)
        specs = discover(s.challenges_dir)
        for cid, spec in specs.items():
            workdir = s.built_dir / cid
            if workdir.exists():
                spec.challenge.load(workdir)
        path = export_ctfd(specs, Path(args.ctfd), server_url=args.url, dynamic=args.dynamic,
                           decay=s.decay, min_fraction=s.min_fraction, ctfd_version=args.ctfd_version)
        print(f"wrote {path} ({len(specs)} challenges, for CTFd {args.ctfd_version}.x) and the CTFd plugin "
              f"{path.parent / 'assay_arena'}/ (copy it to CTFd/plugins/; per-player flags are checked by "
              "this server, see docs/arena.md)")
        return 0
    raise InputError(f"unknown arena command {cmd!r}")


def _private_sqlite_file(db_url: str, data_dir: Path) -> Path | None:
    """The SQLite database file of ``db_url`` when it lies inside ``data_dir``, else None (a server
    database or a file elsewhere is the operator's to manage)."""
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    if not url.drivername.startswith("sqlite") or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).resolve()
    return path if path.is_relative_to(data_dir) else None


def _check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once, as uvicorn will, so a busy port is one clear line before start-up
    (uvicorn itself logs an ERROR and exits 3, which here means "budget exhausted")."""
    if not 1 <= port <= 65535:
        raise InputError(f"--port {port} is not a TCP port; pick one in 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # what uvicorn chooses
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # uvicorn sets SO_REUSEADDR too: a port left in TIME_WAIT by a restart is not "in use"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror as e:
        raise InputError(f"cannot resolve --host {host!r} ({e.strerror}); use an address such as 127.0.0.1 "
                         "or 0.0.0.0") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            from assay.arena.process import describe_listener

            who = describe_listener(port)
            raise InputError(f"port {port} on {host} is in use" + (f" by {who}" if who else "")
                             + "; pick another with --port") from None
        if e.errno == errno.EACCES:
            raise InputError(f"no permission to listen on port {port} on {host} (ports below 1024 need root); "
                             "pick another with --port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"{host} is not an address of this machine; pick another with --host "
                             "(127.0.0.1, 0.0.0.0 or one of its addresses)") from None
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); check --host and --port") from None


def _init(args) -> int:
    from assay.arena.service import OPERATOR_NAME, Arena
    from assay.arena.settings import SECRET_FILE, Settings, check_admin_password, write_secret_file

    data_dir = Path(args.dir).resolve()
    if (data_dir / SECRET_FILE).exists():
        raise InputError(f"{data_dir} is already initialised ({data_dir / SECRET_FILE} exists)")
    # Everything is checked before anything is written: a refused init must leave no secret file
    # behind, or the rerun would answer "already initialised".
    if args.admin_password is not None:
        check_admin_password(args.admin_password, "--admin-password")
    secret = secrets.token_hex(32)
    overrides = {"challenges_dir": Path(args.challenges).resolve()} if args.challenges else {}
    settings = Settings.from_env(data_dir=data_dir, secret=secret, **overrides)  # checks ASSAY_ARENA_*
    data_dir.mkdir(parents=True, exist_ok=True)
    path = write_secret_file(data_dir, secret)
    password = args.admin_password or os.environ.get("ASSAY_ARENA_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    db_file = _private_sqlite_file(settings.db_url, data_dir)
    if db_file is not None:
        # The database holds password and API-key hashes: create it 0600 before SQLite does (its WAL
        # and shared-memory files copy the database's mode), and tighten one left from an earlier init.
        os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))
        db_file.chmod(0o600)
    arena = Arena(settings, specs={})  # creates the schema; challenges are loaded by `serve`
    arena.ensure_operator(OPERATOR_NAME, password)
    print(f"initialised {data_dir}\n  secret: {path} (mode 0600)\n  database: {settings.db_url}"
          + (" (mode 0600)" if db_file is not None else ""))
    if not (args.admin_password or os.environ.get("ASSAY_ARENA_ADMIN_PASSWORD")):
        print(f"  operator: admin / {password}   (shown once; change it with ASSAY_ARENA_ADMIN_PASSWORD)")
    print(f"next: assay arena build --dir {data_dir} && assay arena serve --dir {data_dir}")
    return 0


def _serve(args) -> int:
    import uvicorn

    s = _settings(args)  # fails early with a clear message if the secret is missing
    from assay.arena.service import load_challenges

    if args.workers < 1:
        raise InputError(f"--workers {args.workers} must be at least 1")
    _check_port_free(args.host, args.port)  # before the (slow) model loading
    load_challenges(s)  # fails early if a challenge is not built
    os.environ.setdefault("ASSAY_ARENA_DIR", str(s.data_dir.resolve()))
    from assay.arena.process import SUPERVISOR_ENV

    # uvicorn's workers are this process's children: they follow it (and end with it) by this pid
    if args.workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())
    else:
        os.environ.pop(SUPERVISOR_ENV, None)
    # loop/http "auto": uvloop and httptools (the arena extra) when installed, else asyncio and h11.
    uvicorn.run("assay.arena.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level="info", access_log=False, loop="auto", http="auto")
    return 0


def _solve(args) -> int:
    from assay.arena.challenge import discover
    from assay.arena.client import ArenaClient, check_url
    from assay.arena.settings import Settings

    check_url(args.url)  # before loading the challenge, which can take a while
    _env_for(args)
    s = Settings.from_env(secret=os.environ.get("ASSAY_ARENA_SECRET") or secrets.token_hex(32))
    specs = discover(s.challenges_dir)
    spec = specs.get(args.challenge)
    if spec is None:
        raise InputError(f"no challenge {args.challenge!r}; available: {sorted(specs)}")
    if spec.solve is None:
        raise InputError(f"challenge {args.challenge!r} ships no reference solve()")
    workdir = s.built_dir / args.challenge
    if workdir.exists():
        spec.challenge.load(workdir)
    with ArenaClient(args.url, args.api_key, challenge=args.challenge) as client:
        spec.solve(client)
        print(f"queries left: {client.remaining}")
        if client.flag is None:
            print("the solver did not obtain the flag")
            return 1
        print(f"flag obtained: {client.flag}")
        if args.submit:
            print("submitted: " + ("correct" if client.submit() else "incorrect"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="assay")
    add_arena_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["arena", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except AssayError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
