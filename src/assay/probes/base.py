"""Probes, findings and the registry.

A :class:`Probe` asks one trust question of a target through a :class:`ProbeContext` and returns a
:class:`Finding`. Probes register by name with :func:`register`; the CLI lists and selects them by
name or axis. A probe declares what it needs (target capabilities, dataset fields), typed
parameters (a dataclass ``Params``) and a cost estimate, and never re-predicts the clean data itself:
``ctx.clean_scores()`` is shared by every probe of an audit.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from assay.errors import InputError

AXES = ("robustness", "privacy", "integrity", "fairness", "reliability", "explain", "certify", "language")
VERDICTS = ("pass", "warn", "fail", "info", "skipped", "error")
_VERDICT_RANK = {"skipped": 0, "info": 0, "pass": 1, "warn": 2, "fail": 3, "error": 4}


@dataclass
class Metric:
    """One number with its uncertainty. ``name`` may carry a qualifier in brackets, e.g.
    ``robust_accuracy[linf,eps=0.0314]``; policies match on the full name or the base name."""

    name: str
    value: float
    low: float | None = None
    high: float | None = None
    unit: str = ""
    higher_is_better: bool | None = None
    level: float = 0.95
    method: str = ""
    description: str = ""

    @property
    def base_name(self) -> str:
        return self.name.split("[", 1)[0]


@dataclass
class Evidence:
    """Data a report renders: ``kind`` is one of ``curve``, ``images``, ``table``, ``bars``,
    ``histogram``, ``text``; ``data`` is JSON-serialisable (see docs/report-schema.md)."""

    kind: str
    title: str
    data: dict[str, Any]


@dataclass
class Threshold:
    """A policy rule on one metric: fail / warn when the value crosses a bound.

    ``on="interval"`` judges the metric's confidence interval instead of its point value: an
    ``*_above`` bound is crossed only when the whole interval lies above it (its low end), a
    ``*_below`` bound only when the whole interval lies below it: "significantly above / below".
    A metric without an interval is judged on its value."""

    fail_below: float | None = None
    warn_below: float | None = None
    fail_above: float | None = None
    warn_above: float | None = None
    on: str = "value"

    def __post_init__(self):
        if self.on not in ("value", "interval"):
            raise InputError(f"a policy rule's on = {self.on!r} must be \"value\" or \"interval\"")

    def verdict(self, value: float, low: float | None = None, high: float | None = None) -> str:
        above = value if self.on == "value" or low is None else low
        below = value if self.on == "value" or high is None else high
        if self.fail_below is not None and below < self.fail_below:
            return "fail"
        if self.fail_above is not None and above > self.fail_above:
            return "fail"
        if self.warn_below is not None and below < self.warn_below:
            return "warn"
        if self.warn_above is not None and above > self.warn_above:
            return "warn"
        return "pass"

    def describe(self) -> str:
        parts = [f"{k.replace('_', ' ')} {v:g}" for k, v in dataclasses.asdict(self).items()
                 if v is not None and k != "on"]
        return ", ".join(parts) + (" (whole interval)" if self.on == "interval" else "")


@dataclass
class Finding:
    """What a probe found: metrics with intervals, a verdict, evidence, warnings and accounting."""

    probe: str
    axis: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    verdict: str = "info"
    summary: str = ""
    evidence: list[Evidence] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    accounting: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN / inf become None so the output is valid JSON."""
        return _clean_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        d = dict(d)
        d["metrics"] = [Metric(**{k: (float("nan") if k == "value" and v is None else v) for k, v in m.items()})
                        for m in d.get("metrics", [])]
        d["evidence"] = [Evidence(**e) for e in d.get("evidence", [])]
        return cls(**d)

    def metric(self, name: str) -> Metric:
        for m in self.metrics:
            if m.name == name:
                return m
        raise KeyError(name)

    def apply_policy(self, rules: dict[str, Threshold]) -> None:
        """Set the verdict from the rules; warnings raise a pass to warn; errors stay errors."""
        if self.error is not None:
            self.verdict = "error"
            return
        if self.verdict == "skipped":
            return
        self.checks = []
        verdict = "info" if not rules else "pass"
        for m in self.metrics:
            rule = rules.get(m.name) or rules.get(m.base_name)
            if rule is None or m.value != m.value:  # NaN: nothing to judge
                continue
            v = rule.verdict(m.value, m.low, m.high)
            self.checks.append({"metric": m.name, "value": m.value, "rule": rule.describe(), "verdict": v})
            if _VERDICT_RANK[v] > _VERDICT_RANK[verdict]:
                verdict = v
        if self.warnings and verdict == "pass":
            verdict = "warn"
        self.verdict = verdict


def outside_interval(metrics: list[Metric]) -> list[Metric]:
    """The metrics whose interval does not hold their own estimate (a statistic biased under the
    bootstrap, or a bug); a relative 1e-9 slack absorbs float rounding, NaN values are skipped."""
    out = []
    for m in metrics:
        if m.low is None or m.high is None or m.value != m.value:
            continue
        slack = 1e-9 * max(1.0, abs(m.value))
        if not m.low - slack <= m.value <= m.high + slack:
            out.append(m)
    return out


def _clean_json(v: Any) -> Any:
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {str(k): _clean_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean_json(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:  # numpy / torch scalar
        return _clean_json(v.item())
    if hasattr(v, "tolist"):
        return _clean_json(v.tolist())
    return v


class Probe:
    """Base class of all probes. Subclasses set the class attributes and implement :meth:`run`."""

    name: ClassVar[str] = ""
    axis: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()  # target capabilities, any one set of them
    requires_any: ClassVar[tuple[frozenset[str], ...]] = ()  # alternatives: satisfied if one is
    needs: ClassVar[frozenset[str]] = frozenset({"labels"})  # dataset fields: labels, groups, members, ood
    accepts_text: ClassVar[bool] = False  # runs on text data (Dataset.kind == "text"); see docs/text.md
    default_policy: ClassVar[dict[str, Threshold]] = {}
    # execution order within an audit (lower first); the report keeps the plan's order. Probes whose
    # findings other probes read (robustness finds gradient masking) run early.
    order: ClassVar[int] = 0

    @dataclass
    class Params:
        pass

    def __init__(self, **params: Any):
        self.params = _build_params(self.Params, params, self.name)

    # ------------------------------------------------------------------ hooks
    def cost(self, target, data) -> dict[str, Any]:
        """Rough cost: ``{"queries": int, "note": str}`` (used by ``assay probes`` and planning).

        ``target`` and ``data`` may be None (``assay probes`` lists costs before any model is
        given): estimate from the parameters alone then."""
        return {"queries": len(data) if data is not None else 0, "note": ""}

    def check(self, target, data) -> str | None:
        """Why the probe cannot run on this target/data (None if it can)."""
        if data is not None and data.kind == "text" and not self.accepts_text:
            return f"{self.name} works on numeric inputs (pixels or features), not text; docs/text.md lists the text probes"
        caps = target.capabilities
        if self.requires and not self.requires <= caps:
            return f"needs target capabilities {sorted(self.requires)}, target has {sorted(caps)}"
        if self.requires_any and not any(r <= caps for r in self.requires_any):
            alts = " or ".join(str(sorted(r)) for r in self.requires_any)
            return f"needs target capabilities {alts}, target has {sorted(caps)}"
        if data is not None:
            missing = [f for f in self.needs if not data.has(f)]
            if missing:
                return f"needs dataset fields {missing}; see docs/data.md for how to provide them"
        return None

    def run(self, ctx) -> Finding:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers
    def finding(self, **kw: Any) -> Finding:
        return Finding(probe=self.name, axis=self.axis, title=self.title or self.name,
                       params=dataclasses.asdict(self.params), **kw)


def _build_params(cls, given: dict[str, Any], probe: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {unknown} for probe {probe}; valid: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    coerced = {}
    for k, v in given.items():
        coerced[k] = _coerce(v, hints.get(k), probe, k)
        _check_range(k, coerced[k], probe)
    return cls(**coerced)


# counts that must be at least 1 (a zero or negative sample count, step count or batch is a mistake)
_COUNT_SUFFIXES = ("samples", "steps", "_boot", "draws", "queries", "queries_per_sample", "restarts", "copies",
                   "epochs", "batch_size", "bins", "n_reference", "n_canaries", "n_models")


def _check_range(key: str, v: Any, probe: str) -> None:
    if isinstance(v, bool) or v is None:
        return
    if isinstance(v, int) and (key in ("n", "n0") or key.startswith("max_") or key.endswith(_COUNT_SUFFIXES)) and v < 1:
        raise InputError(f"parameter {key}={v} of probe {probe} must be at least 1")
    if isinstance(v, float) and key in ("level", "alpha", "confidence") and not 0 < v < 1:
        raise InputError(f"parameter {key}={v} of probe {probe} must lie strictly between 0 and 1")


def _coerce(v, hint, probe, key):
    """Coerce CLI strings / TOML values to the declared type, with a clear error."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:  # a choice: checked now, so a typo fails before any work
        text = v.strip().lower() if isinstance(v, str) else v
        if text not in args:
            raise InputError(f"parameter {key}={v!r} of probe {probe} is not one of {', '.join(map(str, args))}")
        return text
    try:
        if hint in (int, float, str):
            if hint is int and isinstance(v, float) and not v.is_integer():
                raise ValueError
            return hint(v)
        if hint is bool:
            if isinstance(v, str):
                if v.lower() in ("1", "true", "yes", "on"):
                    return True
                if v.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(v)
        if origin in (list, tuple) and args:
            items = v.split(",") if isinstance(v, str) else list(v)
            inner = args[0]
            return (list if origin is list else tuple)(_coerce(i, inner, probe, key) for i in items)
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
            if v is None or (isinstance(v, str) and v.lower() == "none"):
                return None
            for a in args:
                if a is type(None):
                    continue
                try:
                    return _coerce(v, a, probe, key)
                except InputError:
                    continue
            raise ValueError
    except (ValueError, TypeError):
        raise InputError(f"parameter {key}={v!r} of probe {probe} is not a valid {hint}") from None
    return v


# ------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Probe]] = {}
_DISCOVERED = False


def register(cls: type[Probe]) -> type[Probe]:
    """Class decorator: make a probe selectable by its ``name``."""
    if not cls.name or cls.axis not in AXES:
        raise TypeError(f"probe {cls.__name__} needs a name and an axis in {AXES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"probe name {cls.name} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import assay.probes as pkg

    for mod in pkgutil.walk_packages(pkg.__path__, prefix="assay.probes."):
        if mod.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(mod.name)
    _DISCOVERED = True


def all_probes() -> dict[str, type[Probe]]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_probe(name: str) -> type[Probe]:
    probes = all_probes()
    if name in probes:
        return probes[name]
    # an axis name selects nothing by itself here; the plan expands axes
    import difflib

    close = difflib.get_close_matches(name, list(probes) + list(AXES), n=3, cutoff=0.6)
    close += [p for p in probes if name.split(".")[-1] in p and p not in close]
    hint = f" (did you mean {', '.join(close[:3])}?)" if close else ""
    raise InputError(f"unknown probe {name!r}{hint}; run `assay probes` to list them")
