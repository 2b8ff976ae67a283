"""Arena settings, read from the environment (``ASSAY_ARENA_*``) with explicit overrides.

=============================  ===============================================================
ASSAY_ARENA_DIR                data directory (database, secret file, built challenges); "."
ASSAY_ARENA_DB_URL             SQLAlchemy URL; default ``sqlite:///<dir>/arena.db``
ASSAY_ARENA_SECRET             flag/cookie secret; else read from ``<dir>/secret`` (0600)
ASSAY_ARENA_CHALLENGES         challenge directory; default the packaged arena/challenges
ASSAY_ARENA_ADMIN_PASSWORD     creates/updates the ``admin`` operator account at start-up (>= 8 chars)
ASSAY_ARENA_ARGON2             ``default`` (library defaults) or ``fast`` (tests only)
ASSAY_ARENA_MICROBATCH         ``1`` (default) gathers concurrent queries; ``0`` scores one by one
ASSAY_ARENA_BATCH_MAX          most payloads in one score_batch call (64)
ASSAY_ARENA_BATCH_WINDOW_MS    how long the first request waits for company (2 ms)
ASSAY_ARENA_SUBMIT_PER_MINUTE  flag submissions per player per challenge per minute (10)
ASSAY_ARENA_SCORING            ``static`` (manifest points) or ``dynamic`` (quadratic decay)
ASSAY_ARENA_DECAY              solves after which a dynamic challenge reaches its minimum (50)
ASSAY_ARENA_MIN_FRACTION       minimum value as a fraction of the manifest points (0.2)
ASSAY_ARENA_COOKIE_SECURE      ``1`` marks the session cookie Secure (serve behind HTTPS)
=============================  ===============================================================
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from assay.errors import InputError

SECRET_FILE = "secret"
MIN_PASSWORD = 8  # players' and the operator's passwords alike


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    data_dir: Path
    secret: str
    db_url: str = ""
    challenges_dir: Path = field(default_factory=lambda: Path(__file__).parent / "challenges")
    admin_password: str | None = None
    argon2: str = "default"
    micro_batching: bool = True
    batch_max: int = 64
    batch_window_ms: float = 2.0
    submit_per_minute: float = 10.0
    scoring: str = "static"
    decay: int = 50
    min_fraction: float = 0.2
    cookie_secure: bool = False
    login_per_minute: float = 10.0  # password attempts (login + register) per client address
    login_burst: int = 10

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self.challenges_dir = Path(self.challenges_dir)
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / 'arena.db'}"
        if len(self.secret) < 32:
            raise InputError("ASSAY_ARENA_SECRET is shorter than 32 characters; run `assay arena init DIR` for one")
        if self.scoring not in ("static", "dynamic"):
            raise InputError(f"ASSAY_ARENA_SCORING must be 'static' or 'dynamic', not {self.scoring!r}")
        if self.login_per_minute <= 0 or self.login_burst < 1:
            raise InputError("ASSAY_ARENA_LOGIN_PER_MINUTE must be > 0 and ASSAY_ARENA_LOGIN_BURST >= 1")
        if self.argon2 not in ("default", "fast"):
            raise InputError(f"ASSAY_ARENA_ARGON2 must be 'default' or 'fast', not {self.argon2!r}")
        check_admin_password(self.admin_password, "ASSAY_ARENA_ADMIN_PASSWORD")

    @property
    def built_dir(self) -> Path:
        """Where ``assay arena build`` writes each challenge's model: ``<data_dir>/built/<id>``."""
        return self.data_dir / "built"

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        """Settings from ``ASSAY_ARENA_*`` variables; keyword arguments win over the environment.

        Example
        -------
        >>> s = Settings.from_env(data_dir="/tmp/ev", secret="x" * 64)  # doctest: +SKIP
        """
        env = os.environ
        data_dir = Path(overrides.pop("data_dir", None) or env.get("ASSAY_ARENA_DIR", "."))
        secret = overrides.pop("secret", None) or env.get("ASSAY_ARENA_SECRET") or read_secret_file(data_dir)
        values = dict(
            db_url=env.get("ASSAY_ARENA_DB_URL", ""),
            admin_password=env.get("ASSAY_ARENA_ADMIN_PASSWORD") or None,
            argon2=env.get("ASSAY_ARENA_ARGON2", "default"),
            micro_batching=_env_bool("ASSAY_ARENA_MICROBATCH", True),
            batch_max=int(env.get("ASSAY_ARENA_BATCH_MAX", 64)),
            batch_window_ms=float(env.get("ASSAY_ARENA_BATCH_WINDOW_MS", 2.0)),
            submit_per_minute=float(env.get("ASSAY_ARENA_SUBMIT_PER_MINUTE", 10)),
            scoring=env.get("ASSAY_ARENA_SCORING", "static"),
            decay=int(env.get("ASSAY_ARENA_DECAY", 50)),
            min_fraction=float(env.get("ASSAY_ARENA_MIN_FRACTION", 0.2)),
            cookie_secure=_env_bool("ASSAY_ARENA_COOKIE_SECURE", False),
            login_per_minute=float(env.get("ASSAY_ARENA_LOGIN_PER_MINUTE", 10)),
            login_burst=int(env.get("ASSAY_ARENA_LOGIN_BURST", 10)),
        )
        if env.get("ASSAY_ARENA_CHALLENGES"):
            values["challenges_dir"] = Path(env["ASSAY_ARENA_CHALLENGES"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(data_dir=data_dir, secret=secret, **values)


def check_admin_password(password: str | None, source: str) -> None:
    """The ``admin`` operator gets the same minimum password length as a player registering."""
    if password is not None and len(password) < MIN_PASSWORD:
        raise InputError(f"{source} must have at least {MIN_PASSWORD} characters; choose a longer one")


def read_secret_file(data_dir: Path) -> str:
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        raise InputError(f"no ASSAY_ARENA_SECRET and no {path}; run `assay arena init {data_dir}` first")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"{path} is readable by others; run `chmod 600 {path}`")
    return path.read_text().strip()


def write_secret_file(data_dir: Path, secret: str) -> Path:
    """Write ``secret`` to ``<data_dir>/secret`` created with mode 0600 (never world-readable)."""
    path = Path(data_dir) / SECRET_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return path
