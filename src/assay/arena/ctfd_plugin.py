"""CTFd plugin: an ``assay`` flag type that checks per-player flags on the assay arena server.

CTFd's own flag types (static, regex) are shared by every account, so they cannot express assay's
per-player flags. This module is copied by ``assay arena export --ctfd`` into
``<out>/assay_arena/__init__.py``; placed in ``CTFd/plugins/assay_arena/``, it registers the flag
type ``assay``. A flag row of that type holds the assay challenge id as its content; when a
player submits, ``compare`` asks the assay server (operator-only ``POST /api/verify`` with
``record: true``) whether the text is *this CTFd user's* flag. The assay server applies its own rule
(HMAC of its secret, the player and the challenge), its submission rate limit, and logs a flag
copied from another player as suspected sharing; the secret never reaches CTFd.

Configuration (environment of the CTFd process): ``ASSAY_ARENA_URL`` (default: the URL given at
export), ``ASSAY_ARENA_OPERATOR_KEY`` (an assay operator's API key, required). Players use the same
name on both servers. Standard library only; CTFd is imported only inside CTFd.

Answers in CTFd: a closed assay event raises CTFd's ``FlagException`` with :data:`EVENT_CLOSED`,
which CTFd (3.7 and 3.8) turns into an "incorrect" answer carrying that message (recorded as a
failed attempt, which no longer matters once the event is over). Any other failure to get an
answer (server down, wrong key) raises :class:`ArenaUnavailable`, which CTFd answers with an error
and records nothing, so an outage costs players no attempts.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000"  # rewritten by the exporter to the event's assay server
TIMEOUT_S = 5.0
MAX_FLAG_CHARS = 200
EVENT_CLOSED = "The assay arena event is closed: flags are no longer accepted."

log = logging.getLogger("assay_arena")


class ArenaUnavailable(RuntimeError):
    """The assay server could not give an answer. Raised, not turned into "incorrect", so that an
    outage does not cost players CTFd attempts."""


class EventClosed(RuntimeError):
    """The assay server answered that the event is closed."""


def verify_remote(player: str, challenge: str, flag: str, *, url: str, key: str, timeout: float = TIMEOUT_S) -> bool:
    """Ask the assay server whether ``flag`` is ``player``'s flag for ``challenge`` (recorded there as a
    submission). False for a wrong flag or a refused (rate-limited) submission."""
    body = json.dumps({"player": player, "challenge": challenge, "flag": flag, "record": True}).encode()
    req = urllib.request.Request(f"{url.rstrip('/')}/api/verify", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the operator's configured URL
            answer = json.loads(resp.read(4096))
    except urllib.error.HTTPError as e:
        if e.code == 429:  # assay's submission limit: a refused attempt, as CTFd's own limiter would
            return False
        if e.code == 403 and _json_body(e).get("event_closed") is True:
            raise EventClosed(EVENT_CLOSED) from None
        raise ArenaUnavailable(f"assay arena answered {e.code} to /api/verify; check ASSAY_ARENA_OPERATOR_KEY "
                               "and that the assay event is open") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ArenaUnavailable(f"assay arena at {url} unreachable ({e}); check ASSAY_ARENA_URL") from None
    return isinstance(answer, dict) and answer.get("valid") is True


def _json_body(error: urllib.error.HTTPError) -> dict:
    try:
        body = json.loads(error.read(4096))
    except (OSError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _current_user_name() -> str | None:
    from CTFd.utils.user import get_current_user  # only inside CTFd

    user = get_current_user()
    return None if user is None else str(user.name)


class AssayFlag:
    """CTFd flag class (the interface of ``CTFd.plugins.flags.BaseFlag``)."""

    name = "assay"
    templates = {  # the content is a plain string (the assay challenge id): reuse the static-flag editor
        "create": "/plugins/flags/assets/static/create.html",
        "update": "/plugins/flags/assets/static/edit.html",
    }

    @staticmethod
    def compare(chal_key_obj, provided) -> bool:
        if not isinstance(provided, str) or len(provided) > MAX_FLAG_CHARS:
            return False
        player = _current_user_name()
        if player is None:
            return False
        key = os.environ.get("ASSAY_ARENA_OPERATOR_KEY", "")
        if not key:
            raise ArenaUnavailable("ASSAY_ARENA_OPERATOR_KEY is not set in CTFd's environment; "
                                   "set it to an assay operator's API key")
        url = os.environ.get("ASSAY_ARENA_URL", DEFAULT_URL)
        try:
            return verify_remote(player, str(chal_key_obj.content), provided.strip(), url=url, key=key)
        except EventClosed as e:
            from CTFd.plugins.flags import FlagException  # only inside CTFd

            raise FlagException(str(e)) from None


def load(app) -> None:  # CTFd's plugin entry point
    from CTFd.plugins.flags import FLAG_CLASSES

    FLAG_CLASSES[AssayFlag.name] = AssayFlag
