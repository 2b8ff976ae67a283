"""JSON for the arena: orjson when installed (the ``arena`` extra), else the standard library.

Every request body the arena reads goes through :func:`parse_body`, which refuses, with one line
that names the problem, what neither parser refuses consistently by itself: nesting deeper than
:data:`MAX_DEPTH` (the standard library overflows Python's stack on a few thousand ``[``; orjson
stops at 1024 levels, still deep enough for ``str()`` or ``repr()`` of the value to overflow it),
and strings that are not text (a lone UTF-16 surrogate such as ``"\\ud800"`` cannot be encoded to
UTF-8, and PostgreSQL refuses a NUL character). Callers run it before charging anything.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - the arena extra installs it
    orjson = None  # type: ignore[assignment]

_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY) if orjson is not None else 0

# No arena body needs more than a handful of levels (an image batch has 5); far below the depth at
# which recursive Python code (repr, str, error messages) would overflow the stack.
MAX_DEPTH = 32
_SCALARS = frozenset((int, float, bool, type(None)))
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")  # bytes.translate deletes these
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


class BodyError(ValueError):
    """A request body that is not acceptable JSON; the message is the one line to answer with."""


def loads(data: bytes) -> Any:
    """Parse ``data``; raises ``ValueError`` (or ``UnicodeDecodeError``) for anything not JSON."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def parse_body(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body and check its depth and strings; raises :class:`BodyError`.

    The checks scan the parsed value only when the raw bytes say it could fail them: depth when
    the bracket skeleton does not empty within ``max_depth`` rounds (:func:`_may_be_deeper`),
    strings when the body holds a ``\\u`` escape (the only way JSON can spell a lone surrogate or
    a NUL). A typical scoring body pays for two C-speed passes over its bytes.

    Example
    -------
    >>> parse_body(b'{"name": "alice"}')
    {'name': 'alice'}
    """
    try:
        value = loads(data)
    except RecursionError:  # the standard library's parser on deep nesting
        raise BodyError(too_deep(max_depth)) from None
    except (ValueError, UnicodeDecodeError) as e:
        reason = str(e)
        if "depth" in reason or "recursion" in reason.lower():
            raise BodyError(too_deep(max_depth)) from None
        if "surrogate" in reason and "UTF-8" not in reason:
            raise BodyError(BAD_TEXT) from None
        raise BodyError("body is not valid JSON; send a UTF-8 encoded JSON object") from None
    if _may_be_deeper(data, max_depth) and depth_exceeds(value, max_depth):
        raise BodyError(too_deep(max_depth))
    if b"\\u" in data and not value_text_ok(value):
        raise BodyError(BAD_TEXT)
    return value


BAD_TEXT = ("JSON strings must be Unicode text: no lone surrogates (\\ud800-\\udfff) and no NUL "
            "(\\u0000) characters")


def too_deep(max_depth: int) -> str:
    return f"JSON nested deeper than {max_depth} levels; no request needs that many"


def _may_be_deeper(data: bytes, max_depth: int) -> bool:
    """A C-speed screen on the raw bytes: strip all but brackets, then remove innermost ``[]``/``{}``
    pairs once per level. Empty within ``max_depth`` rounds: not deeper. Otherwise (deeper, or
    brackets inside strings unbalanced the skeleton) :func:`depth_exceeds` decides exactly."""
    skeleton = data.translate(None, _NOT_BRACKET)
    if len(skeleton) <= max_depth:  # fewer brackets than levels allowed (most bodies)
        return False
    for _ in range(max_depth):
        if not skeleton:
            return False
        skeleton = _EMPTY_PAIR.sub(b"", skeleton)
    return bool(skeleton)


def depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether lists/objects nest more than ``max_depth`` levels (level by level: no recursion)."""
    frontier, depth = ([value] if isinstance(value, (list, dict)) else []), 0
    while frontier:
        depth += 1
        if depth > max_depth:
            return True
        deeper = []
        for node in frontier:
            # map(type) runs in C: a list of numbers is passed over without a Python-level loop
            if isinstance(node, dict) or not _SCALARS.issuperset(map(type, node)):
                deeper += [v for v in (node.values() if isinstance(node, dict) else node) if isinstance(v, (list, dict))]
        frontier = deeper
    return False


def text_ok(s: str) -> bool:
    """``s`` encodes to UTF-8 (no lone surrogates) and holds no NUL character."""
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def value_text_ok(value: Any) -> bool:
    """Every string in ``value`` (object keys included) passes :func:`text_ok`."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not text_ok(node):
                return False
        elif isinstance(node, dict):
            stack += node.keys()
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return True


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to UTF-8 JSON bytes (non-string dict keys become strings, as with ``json``)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=_OPTIONS)
        except TypeError:  # a type orjson does not know: let the standard library try (and explain)
            pass
    return json.dumps(obj, separators=(",", ":")).encode()
