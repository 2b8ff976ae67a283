"""One JSON POST with retries, back-off and ``Retry-After``: the rule every HTTP target follows.

Connection errors, timeouts, HTTP 429 and 5xx are retried ``retries`` times with exponential
back-off ``backoff * 2**attempt`` plus up to 50% jitter from the caller's seeded RNG; a
``Retry-After`` header is honoured up to ``max_retry_wait`` seconds; any other 4xx is not retried.
``before_attempt`` runs before every attempt, retries included (where a target charges its budget).
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from typing import Any

from assay.errors import TargetError

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def post_json(
    client,
    url: str,
    body: dict,
    *,
    retries: int,
    backoff: float,
    max_retry_wait: float,
    timeout: float,
    rng: random.Random,
    sleep: Callable[[float], None],
    before_attempt: Callable[[], None],
    rejected_hint: str,
    not_json_hint: str,
    failed_hint: str,
    scrub: Callable[[str], str] = lambda s: s,
) -> Any:
    """POST ``body`` to ``url`` and return the parsed JSON answer, or raise a one-line TargetError
    (``scrub`` cleans server text, e.g. of an API key, before it goes into a message)."""
    import httpx

    last = ""
    for attempt in range(retries + 1):
        wait = backoff * (2**attempt) * (1.0 + 0.5 * rng.random())
        before_attempt()
        try:
            r = client.post(url, json=body)
        except httpx.TimeoutException:
            last = f"timed out after {timeout:g} s"
        except httpx.TransportError as e:
            last = f"cannot connect ({type(e).__name__})"
        else:
            if r.status_code in _RETRY_STATUS:
                last = f"HTTP {r.status_code}"
                after = _retry_after_seconds(r.headers.get("retry-after"))
                if after is not None:
                    wait = min(after, max_retry_wait)
            elif r.status_code >= 400:
                raise TargetError(scrub(f"{url} rejected the request with HTTP {r.status_code} "
                                        f"({_one_line(r.text) or 'no body'}); {rejected_hint}"))
            else:
                try:
                    return r.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise TargetError(scrub(f"the response from {url} is not JSON ({_one_line(r.text) or 'empty body'}); "
                                            f"{not_json_hint}")) from None
        if attempt < retries:
            sleep(wait)
    raise TargetError(f"{url} failed after {retries + 1} attempts (last: {last}); {failed_hint}")
