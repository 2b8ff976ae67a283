"""Strict checks of untrusted challenge payloads, shared by the challenge pack, and the JSON
Schemas that describe the same payloads to players.

A player's JSON arrives as plain Python values (dicts, lists, numbers, strings). Every check here
runs before any model is touched and raises :class:`assay.errors.InputError` with one line that
names the field, what was wrong and what is expected. Numbers must be real JSON numbers (``bool``
and numeric strings are refused), finite, within the stated range; arrays must have the exact shape,
and a shape error states the whole expected shape and where the payload left it.

The ``*_schema`` helpers build JSON Schema (2020-12, the dialect of OpenAPI 3.1) for a challenge's
``request_schema()`` / ``response_schema()``; the server publishes them in its OpenAPI description
and derives the web page's input placeholder (:func:`describe`) and the client examples
(:func:`example`) from them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from assay.errors import InputError


def check_keys(payload: Any, *allowed: set[str]) -> frozenset[str]:
    """The payload is a dict whose keys are exactly one of the ``allowed`` key sets.

    Returns the matching key set, so a challenge with several payload kinds can dispatch on it.

    Example
    -------
    >>> check_keys({"input": []}, {"input"}, {"guess"})
    frozenset({'input'})
    """
    if not isinstance(payload, dict):
        raise InputError(f"payload must be a JSON object, got {type(payload).__name__}")
    keys = set(payload)
    for option in allowed:
        if keys == set(option):
            return frozenset(option)
    expected = " or ".join("{" + ", ".join(repr(k) for k in sorted(o)) + "}" for o in allowed)
    raise InputError(f"payload keys {sorted(keys)} are wrong; expected exactly {expected}")


def shape_text(shape: tuple[int, ...]) -> str:
    """``(1, 8, 8)`` -> ``"1x8x8"``."""
    return "x".join(str(n) for n in shape)


class _Mismatch(Exception):
    """Where a payload leaves its expected shape; turned into one InputError line by the caller."""

    def __init__(self, path: str, problem: str):
        self.path, self.problem = path, problem


def _flatten(value: Any, shape: tuple[int, ...], out: list[float]) -> None:
    # The hot path (every query): no path bookkeeping here; _locate finds the place on failure.
    if not shape:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch("", "")
        v = float(value)
        if not math.isfinite(v):
            raise _Mismatch("", "")
        out.append(v)
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        raise _Mismatch("", "")
    for v in value:
        _flatten(v, shape[1:], out)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return {bool: "a boolean", str: "a string", dict: "an object", type(None): "null"}.get(type(value), "a number")


def _locate(value: Any, shape: tuple[int, ...], path: str = "") -> _Mismatch:
    """The first place where ``value`` leaves ``shape`` (only called once a check has failed)."""
    if not shape:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _Mismatch(path, f"is {_kind(value)} where a number belongs")
        return _Mismatch(path, f"is {value}, not a finite number")
    if not isinstance(value, list) or len(value) != shape[0]:
        return _Mismatch(path, f"is {_kind(value)} where a list of {shape[0]} belongs")
    for i, v in enumerate(value):
        try:
            _flatten(v, shape[1:], [])
        except _Mismatch:
            return _locate(v, shape[1:], f"{path}[{i}]")
    return _Mismatch(path, "is malformed")  # pragma: no cover - _flatten found a problem


def float_array(
    value: Any,
    shape: tuple[int, ...],
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
) -> torch.Tensor:
    """Nested lists of exactly ``shape`` finite numbers within ``[low, high]`` -> float32 tensor.

    Example
    -------
    >>> float_array([[0.0, 1.0]], (1, 2), "x", low=0, high=1).shape
    torch.Size([1, 2])
    """
    return _float_array(value, tuple(shape), name, f"nested lists of shape {shape_text(shape)}", low, high)


def _float_array(value: Any, shape: tuple[int, ...], name: str, expected: str, low: float | None,
                 high: float | None) -> torch.Tensor:
    flat: list[float] = []
    try:
        _flatten(value, shape, flat)
    except _Mismatch:
        where = _locate(value, shape)
        raise InputError(f"{name} must be {expected}; {name}{where.path} {where.problem}") from None
    t = torch.tensor(flat, dtype=torch.float64).reshape(shape)
    if low is not None and bool((t < low).any()):
        raise InputError(f"{name} has values below {low} (min {t.min().item():.4g}); keep values in [{low}, {high}]")
    if high is not None and bool((t > high).any()):
        raise InputError(f"{name} has values above {high} (max {t.max().item():.4g}); keep values in [{low}, {high}]")
    return t.float()


def float_batch(
    value: Any,
    item_shape: tuple[int, ...],
    name: str,
    *,
    max_items: int,
    low: float | None = None,
    high: float | None = None,
) -> torch.Tensor:
    """A non-empty list of at most ``max_items`` arrays of ``item_shape`` -> tensor ``(k, *item_shape)``."""
    expected = f"a list of 1 to {max_items} inputs, each nested lists of shape {shape_text(item_shape)}"
    if not isinstance(value, list) or not value:
        raise InputError(f"{name} must be {expected}; it is {_kind(value)}")
    if len(value) > max_items:
        raise InputError(f"{name} has {len(value)} items; send at most {max_items} per request")
    return _float_array(value, (len(value), *tuple(item_shape)), name, expected, low, high)


def batch_len(payload: Any, key: str, *, max_items: int | None = None) -> int:
    """Number of items under ``payload[key]`` when it is a list (for ``cost``), else 1.

    With ``max_items``, a longer list is refused here, before the budget is looked at: a request
    over the per-request limit is a malformed request (422 naming the limit), not a budget or
    rate-limit matter that a wait could fix.
    """
    if isinstance(payload, dict) and isinstance(payload.get(key), list):
        n = len(payload[key])
        if max_items is not None and n > max_items:
            raise InputError(f"{key} has {n} items; send at most {max_items} per request")
        return max(1, n)
    return 1


def int_list(value: Any, name: str, *, low: int, high: int, max_items: int, unique: bool = True) -> list[int]:
    """A list of at most ``max_items`` integers in ``[low, high]`` (distinct when ``unique``)."""
    if not isinstance(value, list):
        raise InputError(f"{name} must be a list of integers, got {type(value).__name__}")
    if len(value) > max_items:
        raise InputError(f"{name} has {len(value)} items; send at most {max_items}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(f"{name} must contain only integers, found {type(v).__name__}")
        if not low <= v <= high:
            raise InputError(f"{name} contains {v}, outside [{low}, {high}]")
    if unique and len(set(value)) != len(value):
        raise InputError(f"{name} contains duplicates; list each id once")
    return list(value)


def text(value: Any, name: str, *, max_len: int, alphabet: str, min_len: int = 0) -> str:
    """A string of ``min_len`` to ``max_len`` characters, all from ``alphabet``."""
    if not isinstance(value, str):
        raise InputError(f"{name} must be a string, got {type(value).__name__}")
    if not min_len <= len(value) <= max_len:
        raise InputError(f"{name} has {len(value)} characters; send {min_len} to {max_len}")
    bad = sorted(set(value) - set(alphabet))
    if bad:
        raise InputError(f"{name} contains characters outside the alphabet: {''.join(bad)!r}; allowed: {alphabet!r}")
    return value


# ---------------------------------------------------------------- JSON Schemas of payloads
def number_schema(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "number"}
    if low is not None:
        out["minimum"] = low
    if high is not None:
        out["maximum"] = high
    return out


def integer_schema(low: int | None = None, high: int | None = None) -> dict[str, Any]:
    return {**number_schema(low, high), "type": "integer"}


def array_schema(shape: tuple[int, ...], item: dict[str, Any]) -> dict[str, Any]:
    """Nested lists of exactly ``shape`` whose leaves follow ``item`` (what :func:`float_array` takes)."""
    out = item
    for n in reversed(shape):
        out = {"type": "array", "minItems": n, "maxItems": n, "items": out}
    return out


def list_schema(item: dict[str, Any], *, min_items: int = 1, max_items: int | None = None,
                unique: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "array", "minItems": min_items, "items": item}
    if max_items is not None:
        out["maxItems"] = max_items
    if unique:
        out["uniqueItems"] = True
    return out


def text_schema(alphabet: str, *, min_len: int = 0, max_len: int, example: str) -> dict[str, Any]:
    """A string of ``min_len`` to ``max_len`` characters of ``alphabet`` (what :func:`text` takes)."""
    chars = "".join("\\n" if c == "\n" else ("\\" + c if c in "\\]^-[" else c) for c in dict.fromkeys(alphabet))
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": f"^[{chars}]*$",
            "examples": [example]}


def object_schema(properties: dict[str, dict[str, Any]], description: str | None = None) -> dict[str, Any]:
    """An object with exactly these keys (what :func:`check_keys` takes)."""
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties),
                           "additionalProperties": False}
    if description:
        out["description"] = description
    return out


def one_of(*schemas: dict[str, Any]) -> dict[str, Any]:
    return schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}


def example(schema: dict[str, Any]) -> Any:
    """A small value the schema accepts: its ``examples`` when given, else the first alternative,
    the fewest items, and numbers at 0 (or the nearest bound)."""
    if schema.get("examples"):
        return schema["examples"][0]
    if "oneOf" in schema:
        return example(schema["oneOf"][0])
    kind = schema.get("type")
    if kind == "object":
        return {k: example(v) for k, v in schema.get("properties", {}).items() if k in schema.get("required", ())}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        return [example(schema["items"]) for _ in range(n)] if not schema.get("uniqueItems") else \
            list(range(n))
    if kind in ("number", "integer"):
        lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        v = min(max(0, lo), hi)
        return int(v) if kind == "integer" else float(v)
    if kind == "boolean":
        return False
    if kind == "string":
        return "a" * schema.get("minLength", 0)
    return {}


def _fixed_shape(schema: dict[str, Any]) -> tuple[tuple[int, ...], dict[str, Any]] | None:
    """(shape, leaf schema) when ``schema`` is nested arrays of fixed sizes, else None."""
    shape: list[int] = []
    while schema.get("type") == "array" and schema.get("minItems") is not None and \
            schema.get("minItems") == schema.get("maxItems"):
        shape.append(schema["minItems"])
        schema = schema["items"]
    return (tuple(shape), schema) if shape and schema.get("type") != "array" else None


def _range(schema: dict[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and hi is None:
        return ""
    if schema.get("type") == "integer" and lo is not None and hi is not None:
        return f" {lo}-{hi}"
    return f" in [{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"


def describe(schema: dict[str, Any]) -> str:
    """A one-line sketch of what the schema accepts, for placeholders: ``{"input": <1x8x8 numbers
    in [0, 1]>}``; alternatives joined by ``or``.

    Example
    -------
    >>> describe(object_schema({"input": array_schema((1, 8, 8), number_schema(0, 1))}))
    '{"input": <1x8x8 numbers in [0, 1]>}'
    """
    if "oneOf" in schema:
        return " or ".join(describe(s) for s in schema["oneOf"])
    kind = schema.get("type")
    if kind == "object":
        if not schema.get("properties"):
            return "{...}"
        return "{" + ", ".join(f'"{k}": {describe(v)}' for k, v in schema["properties"].items()) + "}"
    if kind == "array":
        fixed = _fixed_shape(schema)
        if fixed is not None and fixed[1].get("type") in ("number", "integer"):
            what = "numbers" if fixed[1]["type"] == "number" else "integers"
            return f"<{shape_text(fixed[0])} {what}{_range(fixed[1])}>"
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        count = f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        return f"[{describe(schema['items'])}, ... ({count})]"
    if kind in ("number", "integer"):
        return f"<{'number' if kind == 'number' else 'integer'}{_range(schema)}>"
    if kind == "string":
        return f"<text, {schema.get('minLength', 0)}-{schema.get('maxLength', '')} characters>"
    if kind == "boolean":
        return "<true or false>"
    return "..."
