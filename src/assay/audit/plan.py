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
from assay.probes.base import AXES, Probe, Threshold, all_probes, get_probe

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass
class PlannedProbe:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Probe:
        return get_probe(self.name)(**self.params)


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


def load_policy(path: str | Path | None) -> dict[str, dict[str, Threshold]]:
    """Probe name -> metric name -> Threshold, from a policy TOML (or {} for none)."""
    if path is None:
        return {}
    raw = _read_toml(Path(path), "policy")
    out: dict[str, dict[str, Threshold]] = {}
    registry = all_probes()
    for probe, rules in raw.items():
        if probe not in registry:
            raise InputError(f"policy section [{probe!r}] names no probe; `assay probes` lists the probe names")
        if not isinstance(rules, dict):
            raise InputError(f"policy entry {probe!r} must be a table of metric thresholds")
        out[probe] = {}
        for metric, rule in rules.items():
            if not isinstance(rule, dict):
                raise InputError(f"policy rule {probe}.{metric} must be a table like {{ fail_below = 0.5 }}")
            try:
                out[probe][metric] = Threshold(**rule)
            except TypeError:
                raise InputError(
                    f"policy rule {probe}.{metric} has unknown keys {sorted(rule)}; use fail_below, "
                    "warn_below, fail_above, warn_above"
                ) from None
    return out


def rules_for(probe: Probe, policy: dict[str, dict[str, Threshold]]) -> dict[str, Threshold]:
    rules = dict(probe.default_policy)
    rules.update(policy.get(probe.name, {}))
    return rules
