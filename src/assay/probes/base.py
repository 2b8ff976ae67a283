"""Probes and their registry (findings, metrics and thresholds live in :mod:`assay.findings`).

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
from dataclasses import dataclass
from typing import Any, ClassVar

from assay.errors import InputError
from assay.findings import AXES, VERDICTS, Evidence, Finding, Metric, Threshold, clean_json, outside_interval  # noqa: F401


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
            first_error = None
            for a in args:
                if a is type(None):
                    continue
                try:
                    return _coerce(v, a, probe, key)
                except InputError as e:  # keep the most specific reason (e.g. which choice was wrong)
                    first_error = first_error or e
            if first_error is not None:
                raise first_error
            raise ValueError
    except InputError:  # an InputError is a ValueError; keep its specific reason
        raise
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
