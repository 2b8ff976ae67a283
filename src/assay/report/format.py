"""Number and text formatting shared by the HTML page, the JUnit XML and the terminal table."""

from __future__ import annotations

import math
from typing import Any

from assay.findings import Threshold


def fmt(v: Any, digits: int = 4) -> str:
    """Numbers for people: 4 significant digits, ``n/a`` for missing / NaN, short exponents.

    Example
    -------
    >>> fmt(0.123456), fmt(float("nan")), fmt(None), fmt(2.5e-5), fmt(1234567.0)
    ('0.1235', 'n/a', 'n/a', '2.5e-5', '1.235e6')
    """
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v) if abs(v) < 10**7 else _short_exp(f"{v:.{digits}g}")
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return _short_exp(f"{v:.{digits}g}")
    return str(v)


def _short_exp(s: str) -> str:
    if "e" not in s:
        return s
    m, e = s.split("e")
    return f"{m}e{int(e)}"


def fmt_ci(low: Any, high: Any) -> str:
    """``[low, high]``, or an empty string when there is no interval."""
    lo = low if isinstance(low, (int, float)) and not (isinstance(low, float) and math.isnan(low)) else None
    hi = high if isinstance(high, (int, float)) and not (isinstance(high, float) and math.isnan(high)) else None
    if lo is None and hi is None:
        return ""
    return f"[{fmt(lo)}, {fmt(hi)}]"


def finding_reason(f) -> str:
    """Why an ``error`` or ``skipped`` finding has no result, without a repeated "Skipped:" prefix."""
    if f.verdict == "error" or f.error:
        return (f.error or f.summary or "no error message recorded").strip()
    text = (f.summary or "").strip()
    for prefix in ("Skipped:", "skipped:", "Skipped.", "Skipped"):
        if text.startswith(prefix):
            text = text[len(prefix):].strip()
            break
    return text or "no reason recorded"


def describe_rule(rule: Any) -> str:
    """``fail below 0.5, warn below 0.7`` from a Threshold or its dict (None bounds dropped); a list of
    rules (one per labelled variant) is joined with ``; ``."""
    if isinstance(rule, list):
        return "; ".join(describe_rule(r) for r in rule)
    if isinstance(rule, Threshold):
        return rule.describe()
    if isinstance(rule, dict):
        known = {k: v for k, v in rule.items() if k in Threshold.__dataclass_fields__ and v is not None}
        if known and len(known) == len([v for v in rule.values() if v is not None]):
            return Threshold(**known).describe()
    return str(rule)


def policy_rows(rules: Any) -> list[tuple[str, str, str]]:
    """``(scope, metric, rule)`` rows of a policy's rules, flat (``{metric: rule}``) or per probe
    (``{probe: {metric: rule}}``); scope is ``""`` for rules that apply to every probe."""
    rows: list[tuple[str, str, str]] = []
    if not isinstance(rules, dict):
        return rows
    for key, value in rules.items():
        nested = isinstance(value, dict) and value and all(isinstance(v, (dict, list, Threshold)) for v in value.values())
        if nested:
            for metric, rule in value.items():
                rows.append((str(key), str(metric), describe_rule(rule)))
        else:
            rows.append(("", str(key), describe_rule(value)))
    return rows
