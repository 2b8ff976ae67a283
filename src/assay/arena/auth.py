"""Passwords (argon2id), API keys (random, stored as SHA-256), signed session cookies, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
