"""Plain-text summary of a report for the terminal: one line per finding, fitted to the width."""

from __future__ import annotations

import os
import shutil
import sys

from assay.report.format import finding_reason, fmt, fmt_ci
from assay.report.schema import AuditReport

MIN_WIDTH = 60


def _metric_text(m) -> str:
    ci = fmt_ci(m.low, m.high)
    unit = f" {m.unit}" if m.unit else ""
    return f"{m.name}={fmt(m.value)}{unit}" + (f" {ci}" if ci else "")


def _clip(s: str, n: int) -> str:
    if n <= 0:
        return ""
    return s if len(s) <= n else s[: max(n - 1, 0)] + "…"


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def summary_table(report: AuditReport, width: int | None = None, max_metrics: int = 2) -> str:
    """A table with one line per finding: verdict, probe, axis and its first metrics with CIs.

    Parameters
    ----------
    report : AuditReport
    width : int, optional
        Line width, never below 60. Long cells are cut with an ellipsis; the metrics column takes
        whatever room is left. Default: the terminal's width; when stdout is not a terminal (a CI
        log, a pipe) and ``COLUMNS`` is unset, wide enough that nothing is cut, so an error's whole
        reason reaches the log.
    max_metrics : int
        How many metrics of each finding to show (the rest are counted: ``+3 more``).

    Returns
    -------
    str
        The table followed by an ``overall:`` line; no trailing newline.

    Example
    -------
    >>> from assay.findings import Finding, Metric
    >>> r = AuditReport(findings=[Finding("privacy.membership", "privacy", "Membership",
    ...     metrics=[Metric("auc", 0.61, 0.58, 0.64)], verdict="warn")]).compute_summary()
    >>> print(summary_table(r, width=80))  # doctest: +NORMALIZE_WHITESPACE
    verdict  probe               axis     key metrics
    -------  ------------------  -------  ------------------------------------------
    WARN     privacy.membership  privacy  auc=0.61 [0.58, 0.64]
    overall: WARN (1 finding: 1 warn)
    """
    fit_all = width is None and "COLUMNS" not in os.environ and not _stdout_is_tty()
    if width is None:
        width = shutil.get_terminal_size((80, 24)).columns
    rows = []
    for f in report.findings:
        if f.verdict == "error":
            key = "error: " + _one_line(finding_reason(f))
        elif f.verdict == "skipped":
            key = "skipped: " + _one_line(finding_reason(f))
        else:
            shown = [_metric_text(m) for m in f.metrics[:max_metrics]]
            if len(f.metrics) > max_metrics:
                shown.append(f"+{len(f.metrics) - max_metrics} more")
            key = "; ".join(shown) if shown else _one_line(f.summary)
        rows.append([f.verdict.upper(), _one_line(f.probe), _one_line(f.axis), key])

    head = ["verdict", "probe", "axis", "key metrics"]
    if fit_all:
        width = sum(max(len(r[c]) for r in [head] + rows) for c in range(4)) + 2 * 3
    width = max(MIN_WIDTH, int(width))
    fixed_caps = [7, 32, 12]  # verdict, probe, axis: room for the longest names without eating the line
    widths = [min(max([len(head[c])] + [len(r[c]) for r in rows]), fixed_caps[c]) for c in range(3)]
    gap = 2
    widths.append(max(width - sum(widths) - gap * 3, 10))
    if sum(widths) + gap * 3 > width:  # very narrow: shrink the probe column first
        widths[1] = max(8, widths[1] - (sum(widths) + gap * 3 - width))

    def line(cells: list[str]) -> str:
        return (" " * gap).join(_clip(c, w).ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    counts = {}
    for f in report.findings:
        counts[f.verdict] = counts.get(f.verdict, 0) + 1
    n = len(report.findings)
    detail = ", ".join(f"{c} {v}" for v, c in counts.items())
    overall = f"overall: {report.verdict.upper()} ({n} finding{'s' if n != 1 else ''}" + (f": {detail})" if n else ")")
    out.append(_clip(overall, width))
    return "\n".join(out)
