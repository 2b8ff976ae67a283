"""The audit report: one versioned JSON document, the source of truth for every other format.

HTML, JUnit XML and the terminal table are all rendered from an :class:`AuditReport`; a report
written to JSON and read back renders the same. The schema is documented in docs/report-schema.md.

Versioning: ``SCHEMA_VERSION = "MAJOR.MINOR"``. A minor version only adds optional fields; a major
version changes or removes something. A reader accepts any report of its own major version; fields
added by a newer minor version are ignored, while unknown fields in a report that claims an older or
equal minor version mean the file is not an assay report.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import InputError
from assay.findings import AXES, VERDICTS, Evidence, Finding, Metric, clean_json, worst_verdict  # noqa: F401
from assay.version import __version__, versions  # noqa: F401  (versions: part of the report API)

SCHEMA_VERSION = "1.2"  # 1.1: metrics carry their labels; 1.2: findings carry per-sample outcomes

EVIDENCE_KINDS = ("curve", "bars", "histogram", "images", "table", "text", "highlight")


def _now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class AuditReport:
    """Everything an audit found, with how it was obtained.

    Build it from the runner's findings, call :meth:`compute_summary`, then write it with
    :func:`assay.report.render_all` (JSON, HTML, JUnit) or :meth:`write_json`.

    Example
    -------
    >>> from assay.findings import Finding, Metric
    >>> r = AuditReport(findings=[Finding("robustness.evasion", "robustness", "Evasion",
    ...                                   metrics=[Metric("robust_accuracy", 0.4, 0.3, 0.5)],
    ...                                   verdict="fail")])
    >>> r.compute_summary().verdict
    'fail'
    """

    schema_version: str = SCHEMA_VERSION
    assay_version: str = __version__
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=_now_iso)
    seed: int = 0
    suite: str | None = None
    target: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    verdict: str = "info"
    summary_by_axis: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: {"source": "default", "rules": {}})

    # ---------------------------------------------------------------- summary
    def compute_summary(self) -> AuditReport:
        """Set ``verdict`` (worst finding) and ``summary_by_axis`` from the findings; returns self."""
        for f in self.findings:
            if f.verdict not in VERDICTS:
                raise InputError(f"finding {f.probe} has verdict {f.verdict!r}; use one of {', '.join(VERDICTS)}")
        self.verdict = worst_verdict(f.verdict for f in self.findings)
        axes = sorted({f.axis for f in self.findings}, key=lambda a: (AXES.index(a) if a in AXES else len(AXES), a))
        summary: dict[str, dict[str, Any]] = {}
        for axis in axes:
            vs = [f.verdict for f in self.findings if f.axis == axis]
            summary[axis] = {"verdict": worst_verdict(vs), "counts": {v: vs.count(v) for v in VERDICTS}}
        self.summary_by_axis = summary
        return self

    # ------------------------------------------------------------ (de)serial
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; NaN and infinities become ``None`` (JSON ``null``), numpy / torch
        numbers plain numbers, nested dataclasses (e.g. policy Thresholds) dicts."""
        return clean_json(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Any, source: str = "report.json") -> AuditReport:
        """Rebuild a report (Findings, Metrics, Evidence as dataclasses) from :meth:`to_dict` output.

        Raises :class:`assay.errors.InputError` when ``d`` is not an assay report of a readable
        schema version.
        """

        def bad(why: str) -> InputError:
            return InputError(f"{source} is not an assay report (schema {SCHEMA_VERSION}): {why}")

        if not isinstance(d, dict):
            raise bad(f"top level is a {type(d).__name__}, expected an object")
        version = d.get("schema_version")
        if not isinstance(version, str) or not _parse_version(version):
            raise bad("no valid schema_version field")
        major, minor = _parse_version(version)
        own_major, own_minor = _parse_version(SCHEMA_VERSION)
        if major != own_major:
            raise InputError(
                f"{source} has report schema {version}, this assay {__version__} reads schema "
                f"{own_major}.x; use an assay release that reads schema {major}.x"
            )
        newer = minor > own_minor  # fields a newer minor version added are ignored

        top = _pick(d, cls, "report", newer, bad, minor)
        findings_in = top["findings"]
        if not isinstance(findings_in, list):
            raise bad("findings is not a list")
        findings = []
        for i, fd in enumerate(findings_in):
            where = f"findings[{i}]"
            if not isinstance(fd, dict):
                raise bad(f"{where} is not an object")
            fk = _pick(fd, Finding, where, newer, bad, minor)
            fk["metrics"] = [_pick(md, Metric, f"{where}.metrics[{j}]", newer, bad, minor)
                             for j, md in enumerate(_list(fk["metrics"], f"{where}.metrics", bad))]
            fk["evidence"] = [_pick(ed, Evidence, f"{where}.evidence[{j}]", newer, bad, minor)
                              for j, ed in enumerate(_list(fk["evidence"], f"{where}.evidence", bad))]
            findings.append(Finding.from_dict(fk))  # restores NaN metric values written as null
        top["findings"] = findings
        return cls(**top)

    def write_json(self, path: str | Path) -> Path:
        """Write the report as indented JSON (strict: no NaN literals); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            text = json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False)
        except TypeError as e:  # a probe stored an object JSON cannot hold
            raise InputError(f"report cannot be written as JSON: {e}; store numbers, strings, lists or dicts") from None
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def read_json(cls, path: str | Path) -> AuditReport:
        """Read and validate a report written by :meth:`write_json`."""
        return read_json(path)


def read_json(path: str | Path) -> AuditReport:
    """Read a report.json; InputError (one line) when missing, not JSON, or not an assay report.

    Example
    -------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "report.json")
    >>> _ = AuditReport(seed=3).write_json(p)
    >>> read_json(p).seed
    3
    """
    path = Path(path)
    name = path.name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"report file {path} does not exist; give the path of a report.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read report file {path}: {e}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{name} is not an assay report (schema {SCHEMA_VERSION}): not valid JSON ({e.msg} at line {e.lineno})"
        ) from None
    return AuditReport.from_dict(d, source=name)


# ---------------------------------------------------------------------- helpers
def _parse_version(v: str) -> tuple[int, int] | None:
    parts = v.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


# fields added by a minor version: (class, field) -> the minor version that added it
ADDED_FIELDS = {("Metric", "labels"): 1, ("Finding", "outcomes"): 2}


def _pick(d: Any, cls, where: str, newer: bool, bad, report_minor: int | None = None) -> dict[str, Any]:
    """Fields of ``cls`` from ``d``: all must be present, but for those a later minor version added
    (a report of an older minor version lacks them: they take their defaults); unknown ones are an
    error unless the report comes from a newer minor version (then they are dropped)."""
    if not isinstance(d, dict):
        raise bad(f"{where} is not an object")
    names = [f.name for f in dataclasses.fields(cls)]
    optional = {n for n in names if report_minor is not None
                and ADDED_FIELDS.get((cls.__name__, n), -1) > report_minor}
    missing = [n for n in names if n not in d and n not in optional]
    if missing:
        raise bad(f"{where} lacks field(s) {missing}")
    extra = sorted(set(d) - set(names))
    if extra and not newer:
        raise bad(f"{where} has unknown field(s) {extra}")
    return {n: d[n] for n in names if n in d}


def _list(v: Any, where: str, bad) -> list:
    if not isinstance(v, list):
        raise bad(f"{where} is not a list")
    return v
