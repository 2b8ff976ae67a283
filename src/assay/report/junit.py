"""JUnit XML for CI systems (GitLab, Jenkins, GitHub test reporters).

One ``<testsuite>`` per axis, one ``<testcase classname="assay.<axis>" name="<probe>">`` per finding.
``fail`` becomes ``<failure>`` (message: the finding's summary; body: the failed policy checks),
``error`` becomes ``<error>``, ``skipped`` and ``info`` become ``<skipped>`` (nothing was judged),
``warn`` passes with a ``<system-out>`` note. Metrics are ``<properties>`` of the axis' test suite,
named ``<probe>:<metric>``. The shape follows the widely used Jenkins JUnit schema (junit-10.xsd),
which allows properties on a test suite only.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from assay.findings import AXES
from assay.report.format import finding_reason, fmt, fmt_ci
from assay.report.schema import AuditReport

_XML_BAD = {c: None for c in range(32) if c not in (9, 10, 13)}  # control chars XML 1.0 forbids


def _clean(s: object) -> str:
    return str(s).translate(_XML_BAD)


def _seconds(f) -> str:
    t = f.accounting.get("wall_time_s") if isinstance(f.accounting, dict) else None
    try:
        return f"{float(t):.3f}" if t is not None and float(t) == float(t) else "0"
    except (TypeError, ValueError):
        return "0"


def _check_lines(f, verdicts: tuple[str, ...]) -> str:
    lines = []
    for c in f.checks:
        if c.get("verdict") in verdicts:
            lines.append(f"{c.get('metric')} = {fmt(c.get('value'))}: {c.get('verdict')} ({c.get('rule')})")
    return "\n".join(lines)


def junit_tree(report: AuditReport) -> ET.ElementTree:
    """The JUnit document as an ElementTree (see :func:`write_junit`)."""
    root = ET.Element("testsuites", name="assay", tests=str(len(report.findings)))
    totals = {"failures": 0, "errors": 0, "skipped": 0}
    order = {a: i for i, a in enumerate(AXES)}
    axes = sorted({f.axis for f in report.findings}, key=lambda a: (order.get(a, len(order)), a))
    for axis in axes:
        findings = [f for f in report.findings if f.axis == axis]
        counts = {
            "failures": sum(f.verdict == "fail" for f in findings),
            "errors": sum(f.verdict == "error" for f in findings),
            "skipped": sum(f.verdict in ("skipped", "info") for f in findings),
        }
        for k in totals:
            totals[k] += counts[k]
        time = sum(float(_seconds(f)) for f in findings)
        suite = ET.SubElement(root, "testsuite", name=f"assay.{axis}", tests=str(len(findings)),
                              failures=str(counts["failures"]), errors=str(counts["errors"]),
                              skipped=str(counts["skipped"]), time=f"{time:.3f}", timestamp=_clean(report.created_at))
        # Metrics go in the suite's <properties> (the schema allows none on a testcase), named
        # "<probe>:<metric>" so that each stays attached to its finding.
        if any(f.metrics for f in findings):
            props = ET.SubElement(suite, "properties")
            for f in findings:
                for m in f.metrics:
                    ci = fmt_ci(m.low, m.high)
                    value = fmt(m.value) + (f" {m.unit}" if m.unit else "") + (f" {ci}" if ci else "")
                    ET.SubElement(props, "property", name=_clean(f"{f.probe}:{m.name}"), value=_clean(value))
        for f in findings:
            case = ET.SubElement(suite, "testcase", classname=f"assay.{axis}", name=_clean(f.probe), time=_seconds(f))
            summary = _clean(f.summary or f.title)
            if f.verdict == "fail":
                el = ET.SubElement(case, "failure", message=summary, type="policy")
                el.text = _clean(_check_lines(f, ("fail",)) or summary)
            elif f.verdict == "error":
                el = ET.SubElement(case, "error", message=_clean(finding_reason(f)), type="probe-error")
                trace = f.accounting.get("traceback") if isinstance(f.accounting, dict) else None
                el.text = _clean(trace or finding_reason(f))
            elif f.verdict in ("skipped", "info"):
                why = finding_reason(f) if f.verdict == "skipped" else f"informational (no policy rule applies): {summary}"
                ET.SubElement(case, "skipped", message=_clean(why))
            elif f.verdict == "warn":
                out = ET.SubElement(case, "system-out")
                notes = [f"WARN: {summary}"] + [f"warning: {w}" for w in f.warnings]
                checks = _check_lines(f, ("warn",))
                out.text = _clean("\n".join(notes + ([checks] if checks else [])))
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: AuditReport, path: str | Path) -> Path:
    """Write the report as JUnit XML; returns the path.

    Parameters
    ----------
    report : AuditReport
    path : str or Path
        Output file, e.g. ``junit.xml``.

    Example
    -------
    >>> import tempfile, os
    >>> p = write_junit(AuditReport(), os.path.join(tempfile.mkdtemp(), "junit.xml"))
    >>> p.read_text().startswith("<?xml")
    True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path
