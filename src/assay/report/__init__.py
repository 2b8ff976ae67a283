"""Reports: the versioned JSON (source of truth), a self-contained HTML page, JUnit XML for CI, and a
plain-text summary for the terminal. See docs/report-schema.md."""

from __future__ import annotations

from pathlib import Path

from assay.report.html import render_html, write_html
from assay.report.junit import write_junit
from assay.report.schema import SCHEMA_VERSION, AuditReport, read_json, versions, worst_verdict
from assay.report.text import summary_table

__all__ = [
    "SCHEMA_VERSION",
    "AuditReport",
    "read_json",
    "render_all",
    "render_html",
    "summary_table",
    "versions",
    "worst_verdict",
    "write_html",
    "write_junit",
]


def render_all(report: AuditReport, out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.html and junit.xml into ``out_dir`` (created if needed).

    The summary (overall verdict, per-axis counts) is recomputed from the findings first.

    Returns
    -------
    dict
        ``{"json": Path, "html": Path, "junit": Path}``.

    Example
    -------
    >>> import tempfile
    >>> paths = render_all(AuditReport(), tempfile.mkdtemp())
    >>> sorted(p.name for p in paths.values())
    ['junit.xml', 'report.html', 'report.json']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report.compute_summary()
    return {
        "json": report.write_json(out / "report.json"),
        "html": write_html(report, out / "report.html"),
        "junit": write_junit(report, out / "junit.xml"),
    }
