"""JSON for the scoring hot path: orjson when installed (the ``arena`` extra), else the standard
library. Both refuse the same inputs a client could send by mistake (not JSON, not UTF-8) with
``ValueError``; orjson is also stricter (no NaN/Infinity literals, integers within 64 bits)."""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the arena extra installs it
    orjson = None  # type: ignore[assignment]

_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY) if orjson is not None else 0


def loads(data: bytes) -> Any:
    """Parse ``data``; raises ``ValueError`` (or ``UnicodeDecodeError``) for anything not JSON."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to UTF-8 JSON bytes (non-string dict keys become strings, as with ``json``)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=_OPTIONS)
        except TypeError:  # a type orjson does not know: let the standard library try (and explain)
            pass
    return json.dumps(obj, separators=(",", ":")).encode()
