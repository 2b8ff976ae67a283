"""Passwords (argon2id), API keys (random, stored as SHA-256), signed session cookies, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_COOKIE = "arena_session"
SESSION_MAX_AGE = 7 * 24 * 3600


def password_hasher(mode: str = "default") -> PasswordHasher:
    """argon2id with the library defaults; ``fast`` (1 pass, 1 MiB) exists for tests only."""
    if mode == "fast":
        return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return PasswordHasher()


def verify_password(hasher: PasswordHasher, stored_hash: str, password: str) -> bool:
    try:
        return hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A constant hash to verify against when the user name does not exist, so that a missing account
# and a wrong password take the same time.
def dummy_hash(hasher: PasswordHasher) -> str:
    return hasher.hash(secrets.token_hex(16))


def new_api_key() -> str:
    return "ak_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class Sessions:
    """Signed, timestamped cookie payloads (``{"pid": id | None, "csrf": token}``)."""

    def __init__(self, secret: str):
        # A derived key: the flag secret itself is never used directly to sign cookies.
        key = hmac.new(secret.encode(), b"assay-arena-session", hashlib.sha256).hexdigest()
        self._s = URLSafeTimedSerializer(key, salt="arena-session")

    def dump(self, data: dict[str, Any]) -> str:
        return self._s.dumps(data)

    def load(self, cookie: str | None) -> dict[str, Any] | None:
        if not cookie:
            return None
        try:
            data = self._s.loads(cookie, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None


def csrf_ok(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


class AttemptLimiter:
    """A token bucket per client address for the password routes (login and registration).

    Every attempt counts, right or wrong: each one costs an argon2 computation, so an unthrottled
    route is both a password-guessing and a CPU-exhaustion vector. ``take(client)`` returns 0 when
    the attempt may proceed, else the whole seconds to wait. State is per server process (with N
    workers a client gets at most N times the rate), bounded to ``max_clients`` addresses (the
    fullest buckets are forgotten first: they are the ones that owe nothing). Behind a reverse proxy,
    run uvicorn with ``--proxy-headers`` so the client address is the real one.
    """

    def __init__(self, per_minute: float, burst: int, max_clients: int = 100_000):
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_clients = per_minute / 60.0, float(burst), max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, updated_at)
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_clients:
                    self._forget_full(now)
                return 0
            self._buckets[client] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _forget_full(self, now: float) -> None:
        full = [c for c, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
        for c in full[: max(len(full), len(self._buckets) - self.max_clients)]:
            del self._buckets[c]
        while len(self._buckets) > self.max_clients:  # every bucket in debt: drop the oldest entries
            del self._buckets[next(iter(self._buckets))]
