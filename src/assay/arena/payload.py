"""Strict checks of untrusted challenge payloads, shared by the challenge pack.

A player's JSON arrives as plain Python values (dicts, lists, numbers, strings). Every check here
runs before any model is touched and raises :class:`assay.errors.InputError` with one line that
names the field, what was wrong and what is expected. Numbers must be real JSON numbers (``bool``
and numeric strings are refused), finite, within the stated range; arrays must have the exact shape.
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


def _flatten(value: Any, shape: tuple[int, ...], name: str, out: list[float]) -> None:
    if not shape:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must contain only numbers, found {type(value).__name__}")
        v = float(value)
        if not math.isfinite(v):
            raise InputError(f"{name} contains a non-finite number ({value}); send finite values")
        out.append(v)
        return
    if not isinstance(value, list) or len(value) != shape[0]:
        got = f"a list of {len(value)}" if isinstance(value, list) else type(value).__name__
        raise InputError(f"{name} has the wrong shape: expected nested lists of shape {list(shape)}, got {got} at a level of size {shape[0]}")
    for v in value:
        _flatten(v, shape[1:], name, out)


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
    flat: list[float] = []
    _flatten(value, tuple(shape), name, flat)
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
    if not isinstance(value, list) or not value:
        raise InputError(f"{name} must be a non-empty list of inputs of shape {list(item_shape)}")
    if len(value) > max_items:
        raise InputError(f"{name} has {len(value)} items; send at most {max_items} per request")
    return float_array(value, (len(value), *item_shape), name, low=low, high=high)


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
