"""Per-player flags: ``assay{`` + HMAC-SHA256(secret, "<player_id>:<challenge_id>")[:32] + ``}``.

A flag is bound to one player and one challenge, so a flag handed to someone else is both useless to
them and evidence of sharing. The secret never leaves this module's callers' memory.
"""

from __future__ import annotations

import hashlib
import hmac
import re

FLAG_RE = re.compile(r"^assay\{[0-9a-f]{32}\}$")


def flag_for(secret: str, player_id: int, challenge_id: str) -> str:
    """The flag of ``player_id`` for ``challenge_id``.

    Example
    -------
    >>> flag_for("s" * 32, 1, "hotdog")[:6]
    'assay{'
    """
    digest = hmac.new(secret.encode(), f"{player_id}:{challenge_id}".encode(), hashlib.sha256).hexdigest()
    return "assay{" + digest[:32] + "}"


def check_flag(secret: str, player_id: int, challenge_id: str, submitted: str) -> bool:
    """Constant-time comparison of ``submitted`` with the player's own flag."""
    return hmac.compare_digest(flag_for(secret, player_id, challenge_id).encode(), submitted.strip().encode())


def flag_owner(secret: str, player_ids: list[int], challenge_id: str, submitted: str) -> int | None:
    """Which player's flag ``submitted`` is (None if nobody's). Used to detect flag sharing."""
    submitted = submitted.strip()
    if not FLAG_RE.match(submitted):
        return None
    for pid in player_ids:
        if hmac.compare_digest(flag_for(secret, pid, challenge_id).encode(), submitted.encode()):
            return pid
    return None

