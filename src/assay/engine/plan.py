"""Audit plans: which probes run with which parameters, from a suite file or CLI flags; policies.

A suite is TOML::

    name = "standard"
    description = "..."
    [[probe]]
    name = "robustness.evasion"
    params = { eps = [0.1], norms = ["linf"] }

A policy is TOML mapping probe names to metric thresholds (full metric name or base name)::

    ["robustness.evasion"]
    robust_accuracy = { fail_below = 0.3, warn_below = 0.5 }
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import InputError
from assay.findings import AXES, Threshold
from assay.probes.base import Probe, all_probes, get_probe

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class PlannedProbe:
    """A probe of the plan with its parameters; validated and built once (``probe``), when the plan is."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    _built: tuple[str, Probe] | None = field(default=None, repr=False, compare=False)

    @property
    def probe(self) -> Probe:
        """The built probe; built again only if the parameters changed since (``apply_params``)."""
        key = repr(sorted(self.params.items()))
        if self._built is None or self._built[0] != key:
            self._built = (key, get_probe(self.name)(**self.params))
        return self._built[1]

    def build(self) -> Probe:
        return self.probe


@dataclass
class Plan:
    name: str | None
    probes: list[PlannedProbe]
    description: str = ""


def builtin_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} not found; check the path") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{what} file {path} is not valid TOML ({e}); fix the syntax") from None


def load_suite(name_or_path: str) -> Plan:
    """A built-in suite by name (quick, standard, full) or a suite TOML file."""
    p = Path(name_or_path)
    if not p.suffix and not p.exists():
        p = SUITES_DIR / f"{name_or_path}.toml"
        if not p.exists():
            raise InputError(
                f"unknown suite {name_or_path!r}; built-in suites: {', '.join(builtin_suites())}, "
                "or give a path to a suite .toml"
            )
    raw = _read_toml(p, "suite")
    entries = raw.get("probe", [])
    if not isinstance(entries, list) or not entries:
        raise InputError(f"suite {p} lists no [[probe]] entries; add at least one")
    probes = []
    for e in entries:
        if "name" not in e:
            raise InputError(f"a [[probe]] entry in {p} has no name; add name = \"axis.probe\"")
        probes.append(PlannedProbe(e["name"], dict(e.get("params", {}))))
    plan = Plan(raw.get("name", p.stem), probes, raw.get("description", ""))
    validate_plan(plan)
    return plan


def plan_from_names(names: list[str], params: dict[str, dict[str, Any]] | None = None) -> Plan:
    """Probes by name or whole axes (``--probe robustness`` selects every robustness probe)."""
    params = params or {}
    probes: list[PlannedProbe] = []
    registry = all_probes()
    for n in names:
        if n in AXES:
            probes += [PlannedProbe(k, {}) for k, c in registry.items() if c.axis == n]
        else:
            get_probe(n)
            probes.append(PlannedProbe(n, {}))
    return apply_params(Plan(None, probes), params)


def apply_params(plan: Plan, params: dict[str, dict[str, Any]] | None) -> Plan:
    """Merge ``params`` (probe name -> parameters) into the plan's probes and validate the result.

    A parameter for a probe the plan does not run is an error, not silently dropped: a misspelled
    probe name would otherwise leave the audit on defaults the user meant to change."""
    registry = all_probes()
    names = {pp.name for pp in plan.probes}
    for name in params or {}:
        if name not in registry:
            raise InputError(f"parameters given for unknown probe {name!r}; `assay probes` lists the probe names")
        if name not in names:
            raise InputError(f"parameters given for {name}, which this audit does not run; "
                             f"add --probe {name} (or a suite that has it) or drop the parameters")
    for pp in plan.probes:
        pp.params.update((params or {}).get(pp.name, {}))
    validate_plan(plan)
    return plan


def validate_plan(plan: Plan) -> None:
    """Fail before any work: unknown probes or parameters are reported at once."""
    seen = set()
    for pp in plan.probes:
        pp.build()  # raises InputError on unknown names / bad params
        key = (pp.name, repr(sorted(pp.params.items())))
        if key in seen:
            raise InputError(f"probe {pp.name} is listed twice with the same parameters; remove one")
        seen.add(key)


class Policy(dict):
    """Probe name -> metric name -> :class:`Threshold`, plus ``optional``: the probes whose rules may
    go unchecked (the probe skipped or failed to run) without failing the gate."""

    def __init__(self, *args, optional: set[str] | None = None, **kw):
        super().__init__(*args, **kw)
        self.optional: set[str] = set(optional or ())


def load_policy(path: str | Path | None, *, comparison: bool = False) -> Policy:
    """A :class:`Policy` from a policy TOML (an empty one for none).

    A probe's table holds metric rules and, optionally, ``optional = true``: by default a rule on a
    probe that was skipped or errored fails the gate, so a CI gate cannot pass on a check that
    never ran. A ``comparison`` policy (``assay compare``) has the same form; its rules judge the
    change of each metric (candidate minus baseline), and ``on = "significant"`` is allowed there."""
    if path is None:
        return Policy()
    what = "comparison policy" if comparison else "policy"
    raw = _read_toml(Path(path), what)
    out = Policy()
    registry = all_probes()
    for probe, rules in raw.items():
        if probe not in registry:
            raise InputError(f"policy section [{probe!r}] names no probe{_did_you_mean(probe, registry)}; "
                             "`assay probes` lists the probe names")
        if not isinstance(rules, dict):
            raise InputError(f"policy entry {probe!r} must be a table of metric thresholds")
        rules = dict(rules)
        optional = rules.pop("optional", False)
        if not isinstance(optional, bool):
            raise InputError(f"policy [{probe}] optional = {optional!r} must be true or false")
        if optional:
            out.optional.add(probe)
        out[probe] = {}
        for metric, rule in rules.items():
            entries = rule if isinstance(rule, list) else [rule]
            out[probe][metric] = [_threshold(probe, metric, e, comparison) for e in entries]
            if not isinstance(rule, list):
                out[probe][metric] = out[probe][metric][0]
    return out


def _threshold(probe: str, metric: str, rule: Any, comparison: bool = False) -> Threshold:
    """One rule table: numeric bounds, ``on``, and ``labels`` (the metric variants it judges)."""
    if not isinstance(rule, dict):
        raise InputError(f"policy rule {probe}.{metric} must be a table like {{ fail_below = 0.5 }} (or a list of them)")
    bad = {k: v for k, v in rule.items()
           if k not in ("on", "labels") and (not isinstance(v, (int, float)) or isinstance(v, bool))}
    if bad:
        k, v = next(iter(bad.items()))
        raise InputError(f"policy rule {probe}.{metric}: {k} = {v!r} must be a number (write {k} = 0.5, without quotes)")
    if "labels" in rule and not isinstance(rule["labels"], dict):
        raise InputError(f"policy rule {probe}.{metric}: labels must be a table like {{ eps = 0.0314 }}")
    if rule.get("on") == "significant" and not comparison:
        raise InputError(f"policy rule {probe}.{metric}: on = \"significant\" judges changes between two models; "
                         "use it in an assay compare --policy, or use on = \"value\" or \"interval\" here")
    try:
        return Threshold(**rule)
    except TypeError:
        raise InputError(
            f"policy rule {probe}.{metric} has unknown keys {sorted(rule)}; use fail_below, warn_below, fail_above, "
            "warn_above, on = \"interval\" (judge the whole interval) and labels = { ... } (which variants)"
        ) from None


def unmatched_rules(rules: dict[str, Any], metrics) -> list[str]:
    """The metric names of a probe's policy rules that match none of its ``metrics`` (a typo): a CI
    gate must not pass because a rule silently matched nothing."""
    return sorted(k for k, rule in rules.items()
                  if not any(m.name == k or (m.base_name == k and (not r.labels or m.matches(r.labels)))
                             for m in metrics for r in (rule if isinstance(rule, list) else [rule])))


def _did_you_mean(name: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def rules_for(probe: Probe, policy: dict[str, dict[str, Threshold]]) -> dict[str, Threshold]:
    rules = dict(probe.default_policy)
    rules.update(policy.get(probe.name, {}))
    return rules
