"""Self-contained HTML report: one file, inline CSS and SVG, images as data URIs, no JavaScript.

The page is rendered by Jinja2 (autoescaping on) from ``templates/report.html.j2``; charts come from
:mod:`assay.report.charts`, images from :mod:`assay.images`. Nothing is fetched from the
network when the page is opened, so a report can be archived, mailed or attached to a CI run as is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from assay import images
from assay.errors import InputError
from assay.findings import AXES, VERDICT_RANK
from assay.report import charts
from assay.report.format import finding_reason, fmt, fmt_ci, policy_rows
from assay.report.schema import EVIDENCE_KINDS, AuditReport

_TEMPLATES = Path(__file__).with_name("templates")
_B64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
MAX_METRICS_SHOWN = 12  # longer metric lists fold the rest into a <details>
MAX_TABLE_ROWS = 100

AXIS_TITLES = {
    "robustness": "Robustness",
    "privacy": "Privacy",
    "integrity": "Integrity",
    "fairness": "Fairness",
    "reliability": "Reliability",
    "explain": "Explainability",
    "certify": "Guarantees",
    "language": "Language",
}


def _cell(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return fmt(v)


def _numeric_columns(rows: Any, columns: Any = None) -> list[bool]:
    """Per column: True when every non-empty cell is a number (right-aligned, header included)."""
    rows = [r for r in rows if isinstance(r, list)] if isinstance(rows, list) else []
    width = max([len(r) for r in rows] + [len(columns) if isinstance(columns, list) else 1, 1])
    out = []
    for c in range(width):
        cells = [r[c] for r in rows if c < len(r) and r[c] is not None]
        out.append(bool(cells) and all(_is_number(v) for v in cells))
    return out


def _is_number(v: Any) -> bool:
    """A number, or a string that reads as one (probes often pre-format table cells)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    if isinstance(v, str):
        try:
            float(v.strip().rstrip("%"))
            return True
        except ValueError:
            return False
    return False


def _chart(ev) -> Markup | None:
    fn = {"curve": charts.curve_svg, "bars": charts.bars_svg, "histogram": charts.histogram_svg}[ev.kind]
    try:
        return fn(ev.data if isinstance(ev.data, dict) else {}, ev.title)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None  # malformed evidence must not sink the whole report; the page says so


def _curve_table(ev) -> dict[str, Any] | None:
    """A curve whose every series has at most one point draws as a lone dot: show it as a table."""
    if ev.kind != "curve" or not isinstance(ev.data, dict):
        return None
    series = [s for s in ev.data.get("series") or [] if isinstance(s, dict)]
    if not series or any(len(s.get("x") or []) > 1 for s in series):
        return None
    rows = [[s.get("name", ""), (s.get("x") or [None])[0], (s.get("y") or [None])[0]] for s in series if s.get("x")]
    return {"columns": ["series", ev.data.get("xlabel", "x"), ev.data.get("ylabel", "y")], "rows": rows} if rows else None


def _image_src(img: Any) -> dict[str, Any] | None:
    """``{"src", "width", "height"}`` for an image entry given as ``png`` (base64) or raw ``array``."""
    if not isinstance(img, dict):
        return None
    try:
        if isinstance(img.get("png"), str):
            b64 = img["png"].strip()
            if not _B64.match(b64):
                return None
        elif img.get("array") is not None:
            style = img.get("style", "image")
            if style == "heatmap":
                b64 = images.heatmap_png_b64(img["array"])
            elif style == "perturbation":
                b64 = images.perturbation_png_b64(img["array"])
            else:
                vr = img.get("value_range") or (0.0, 1.0)
                b64 = images.to_png_b64(img["array"], value_range=(vr[0], vr[1]))
        else:
            return None
        w, h = images.png_size(b64)
    except (InputError, ValueError, TypeError, IndexError):
        return None
    return {"src": "data:image/png;base64," + b64, "width": w, "height": h}


def _headline(f) -> str:
    """``name = value [low, high]`` of the metric that decided the verdict (the worst policy check),
    else of the first metric: the one-line gist in the overview table."""
    if f.verdict in ("error", "skipped"):
        reason = finding_reason(f)
        return reason if len(reason) <= 100 else reason[:99] + "…"
    if not f.metrics:
        return ""
    m = f.metrics[0]
    checks = [c for c in f.checks if isinstance(c, dict) and c.get("verdict") in VERDICT_RANK]
    if checks:
        worst = max(checks, key=lambda c: VERDICT_RANK[c["verdict"]])
        m = next((x for x in f.metrics if x.name == worst.get("metric")), m)
    ci = fmt_ci(m.low, m.high)
    unit = f" {m.unit}" if m.unit else ""
    return f"{m.name} = {fmt(m.value)}{unit}" + (f" {ci}" if ci else "")


def _counts_line(counts: dict[str, int]) -> str:
    return " · ".join(f"{n} {v}" for v, n in counts.items() if n)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, cell=_cell, counts_line=_counts_line, headline=_headline)
    env.globals.update(fmt_ci=fmt_ci, numeric_columns=_numeric_columns, reason=finding_reason, policy_rows=policy_rows, chart=_chart, curve_table=_curve_table, image_src=_image_src, axis_title=lambda a: AXIS_TITLES.get(a, a.title()),
                       evidence_kinds=EVIDENCE_KINDS, max_metrics=MAX_METRICS_SHOWN, max_rows=MAX_TABLE_ROWS,
                       to_json=lambda v: json.dumps(v, ensure_ascii=False, default=str))
    return env


def render_html(report: AuditReport) -> str:
    """The report as one self-contained HTML page.

    Parameters
    ----------
    report : AuditReport
        A report; its summary is computed here if it has findings but no ``summary_by_axis`` yet.

    Returns
    -------
    str
        A complete HTML document (inline CSS and SVG, PNGs as data URIs, no scripts, no network).

    Example
    -------
    >>> html = render_html(AuditReport(seed=1).compute_summary())
    >>> html.startswith("<!DOCTYPE html>")
    True
    """
    if report.findings and not report.summary_by_axis:
        report.compute_summary()
    order = {a: i for i, a in enumerate(AXES)}
    indexed = list(enumerate(report.findings))
    axes = sorted({f.axis for _, f in indexed}, key=lambda a: (order.get(a, len(order)), a))
    groups = [(axis, [(i, f) for i, f in indexed if f.axis == axis]) for axis in axes]
    template = _environment().get_template("report.html.j2")
    css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    return template.render(r=report, groups=groups, css=Markup(css))


def write_html(report: AuditReport, path: str | Path) -> Path:
    """Write :func:`render_html` to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path
