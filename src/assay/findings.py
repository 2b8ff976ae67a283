"""Findings, metrics, evidence, policy thresholds and verdicts: the lowest layer of assay.

Everything above (probes, the audit engine, reports, the arena) imports these; they import nothing
of assay but its errors. A probe returns a :class:`Finding`; a report renders a list of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from assay.errors import InputError

AXES = ("robustness", "privacy", "integrity", "fairness", "reliability", "explain", "certify", "language")
VERDICTS = ("pass", "warn", "fail", "info", "skipped", "error")
VERDICT_RANK = {"skipped": 0, "info": 0, "pass": 1, "warn": 2, "fail": 3, "error": 4}
ON_CHOICES = ("value", "interval", "significant")  # what a policy rule judges (Threshold.on)


@dataclass
class Metric:
    """One number with its uncertainty.

    ``labels`` say which variant of a metric this is (``{"norm": "linf", "eps": 0.0314}``); ``name``
    is the display name built from them (``robust_accuracy[linf,eps=0.0314]``, see
    :meth:`labelled`). Policies match a rule on the display name, on the base name (every variant),
    or on the base name and a subset of the labels (numbers compared to 4 significant digits)."""

    name: str
    value: float
    low: float | None = None
    high: float | None = None
    unit: str = ""
    higher_is_better: bool | None = None
    level: float = 0.95
    method: str = ""
    description: str = ""
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def base_name(self) -> str:
        return self.name.split("[", 1)[0]

    @classmethod
    def labelled(cls, base: str, labels: dict[str, Any], value: float, *args: Any,
                 keyed: dict[str, str | tuple[str, str]] | None = None, **kw: Any) -> Metric:
        """A metric whose display name is built from its labels: a label in ``keyed`` shows as
        ``key=value`` with that format spec (or ``(shown key, spec)``), any other as its bare value,
        in the labels' order.

        >>> Metric.labelled("robust_accuracy", {"norm": "linf", "eps": 8 / 255}, 0.4, keyed={"eps": ".4g"}).name
        'robust_accuracy[linf,eps=0.03137]'
        """
        keyed = keyed or {}

        def part(k, v):
            if k not in keyed:
                return str(v)
            shown, spec = keyed[k] if isinstance(keyed[k], tuple) else (k, keyed[k])
            return f"{shown}={format(v, spec)}"

        parts = [part(k, v) for k, v in labels.items()]
        name = f"{base}[{','.join(parts)}]" if parts else base
        return cls(name, value, *args, labels=dict(labels), **kw)

    def matches(self, labels: dict[str, Any]) -> bool:
        """Whether every given label has this metric's value (numbers to 4 significant digits)."""
        for k, want in labels.items():
            have = self.labels.get(k)
            if isinstance(want, (int, float)) and isinstance(have, (int, float)) and not isinstance(want, bool):
                if f"{float(want):.4g}" != f"{float(have):.4g}":
                    return False
            elif str(have) != str(want):
                return False
        return True


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
    A metric without an interval is judged on its value. ``on="significant"`` (comparisons of two
    models only) judges the value of a change only when the comparison found it significant after
    false-discovery-rate control; a change it could not tell from noise passes."""

    fail_below: float | None = None
    warn_below: float | None = None
    fail_above: float | None = None
    warn_above: float | None = None
    on: str = "value"
    labels: dict[str, Any] | None = None  # only metrics with these labels (e.g. {eps = 0.0314})

    def __post_init__(self):
        if self.on not in ON_CHOICES:
            raise InputError(f"a policy rule's on = {self.on!r} must be \"value\", \"interval\" or "
                             "\"significant\" (comparisons only)")

    def verdict(self, value: float, low: float | None = None, high: float | None = None,
                significant: bool | None = None) -> str:
        if self.on == "significant" and not significant:
            return "pass"
        above = value if self.on != "interval" or low is None else low
        below = value if self.on != "interval" or high is None else high
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
                 if v is not None and k not in ("on", "labels")]
        where = f" where {', '.join(f'{k}={v}' for k, v in self.labels.items())}" if self.labels else ""
        how = {"interval": " (whole interval)", "significant": " (if significant)"}.get(self.on, "")
        return ", ".join(parts) + how + where


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
    # per-sample outcomes and the recipes that recompute metrics from them (assay.outcomes; schema 1.2)
    outcomes: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN / inf become None so the output is valid JSON."""
        return clean_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
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
            if m.value != m.value:  # NaN: nothing to judge
                continue
            for rule in rules_for_metric(rules, m):
                v = rule.verdict(m.value, m.low, m.high)
                self.checks.append({"metric": m.name, "value": m.value, "rule": rule.describe(), "verdict": v})
                if VERDICT_RANK[v] > VERDICT_RANK[verdict]:
                    verdict = v
        if self.warnings and verdict == "pass":
            verdict = "warn"
        self.verdict = verdict


def rules_for_metric(rules: dict[str, Any], m: Metric) -> list[Threshold]:
    """The rules that judge ``m``: those under its display name, else those under its base name whose
    ``labels`` it matches (a rule without labels judges every variant). A name may hold one rule or
    a list of them."""
    found = rules.get(m.name)
    if found is None:
        found = rules.get(m.base_name)
    if found is None:
        return []
    candidates = found if isinstance(found, list) else [found]
    return [r for r in candidates if not r.labels or m.matches(r.labels)]


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


def clean_json(v: Any) -> Any:
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, dict):
        return {str(k): clean_json(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean_json(x) for x in v]
    if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 1) == 0:  # numpy / torch scalar
        return clean_json(v.item())
    if hasattr(v, "tolist"):
        return clean_json(v.tolist())
    return v


def worst_verdict(verdicts) -> str:
    """Worst verdict by rank (error > fail > warn > pass > info, skipped); ``info`` for none.

    Example
    -------
    >>> worst_verdict(["pass", "warn", "info"])
    'warn'
    """
    verdicts = list(verdicts)
    if not verdicts:
        return "info"
    top = max(VERDICT_RANK[v] for v in verdicts)
    if top > 0:
        return next(v for v, r in VERDICT_RANK.items() if r == top)
    return "info" if "info" in verdicts else "skipped"
