"""Inline SVG charts for the HTML report, generated in Python (no JavaScript, no plotting library).

Each function takes an evidence ``data`` dict (see docs/report-schema.md) and returns SVG markup as
:class:`markupsafe.Markup`; every piece of text from the data is escaped. Colours, fonts and strokes
come from CSS classes defined in the report's stylesheet, so the charts follow the page's style.
Missing values (``None``, written for NaN) leave gaps; non-positive values are dropped on log axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 680, 360
CHAR_W = 6.6  # average glyph width at the 12px chart font, for layout estimates
SERIES_CLASSES = 7  # .s0 .. .s6 in the stylesheet (Okabe-Ito palette)


def _num(v: Any) -> float | None:
    """A finite float, or None for missing / NaN / non-numeric."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_tick(v: float, step: float | None = None) -> str:
    """Short label for an axis tick."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    if step is not None and step > 0:
        decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
        return f"{v:.{min(decimals, 6)}f}"
    return f"{v:g}"


def _nice_step(span: float, target_ticks: int = 5) -> float:
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10 * mag


@dataclass
class Axis:
    """A linear or log10 axis mapping data values to pixel positions in [p0, p1]."""

    lo: float
    hi: float
    log: bool
    p0: float
    p1: float
    ticks: list[float]
    step: float | None

    @classmethod
    def fit(cls, values: Sequence[float], log: bool, p0: float, p1: float, include_zero: bool = False,
            n_ticks: int = 5) -> Axis:
        vals = [v for v in values if v is not None and (v > 0 or not log)]
        if include_zero and not log:
            vals.append(0.0)
        if log:
            if not vals:
                vals = [1e-3, 1.0]
            lo_e = math.floor(math.log10(min(vals)) + 1e-9)
            hi_e = math.ceil(math.log10(max(vals)) - 1e-9)
            if hi_e <= lo_e:
                hi_e = lo_e + 1
            every = max(1, math.ceil((hi_e - lo_e) / 8))
            ticks = [10.0**e for e in range(lo_e, hi_e + 1) if (e - lo_e) % every == 0]
            return cls(10.0**lo_e, 10.0**hi_e, True, p0, p1, ticks, None)
        if not vals:
            vals = [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        if hi - lo < 1e-12 * max(1.0, abs(hi)):
            pad = abs(hi) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        step = _nice_step(hi - lo, n_ticks)
        lo_t, hi_t = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
        n = int(round((hi_t - lo_t) / step))
        ticks = [lo_t + i * step for i in range(n + 1)]
        ticks = [0.0 if abs(t) < step * 1e-9 else t for t in ticks]
        return cls(lo_t, hi_t, False, p0, p1, ticks, step)

    def __call__(self, v: float) -> float:
        if self.log:
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def ok(self, v: float | None) -> bool:
        return v is not None and (not self.log or v > 0)

    def label(self, v: float) -> str:
        return fmt_tick(v, self.step)


def _f(v: float) -> str:
    return f"{v:.1f}"


class _Frame:
    """Plot area, axes, gridlines, labels and legend shared by the three chart kinds."""

    def __init__(self, title: str, xlabel: str, ylabel: str, names: list[str], y_tick_labels: list[str],
                 bottom_extra: float = 0.0):
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel
        widest = max((len(s) for s in y_tick_labels), default=1)
        self.left = 18 + (16 if ylabel else 0) + widest * CHAR_W + 8
        self.right = 18
        self.legend_rows = self._legend_layout(names)
        self.top = 14 + 20 * len(self.legend_rows)
        self.bottom = HEIGHT - 44 - bottom_extra - (0 if xlabel else -16)
        self.parts: list[str] = []

    def _legend_layout(self, names: list[str]) -> list[list[tuple[int, str, float]]]:
        if len(names) < 2:
            return []
        rows: list[list[tuple[int, str, float]]] = [[]]
        x = 0.0
        avail = WIDTH - 80
        for i, name in enumerate(names):
            w = 22 + len(name) * CHAR_W + 18
            if rows[-1] and x + w > avail:
                rows.append([])
                x = 0.0
            rows[-1].append((i, name, x))
            x += w
        return rows

    def legend(self, marker: str = "line") -> None:
        for r, row in enumerate(self.legend_rows):
            y = 12 + 20 * r
            for i, name, x0 in row:
                x = self.left + x0
                cls = f"s{i % SERIES_CLASSES}"
                if marker == "line":
                    self.parts.append(f'<line class="ln {cls}" x1="{_f(x)}" y1="{y}" x2="{_f(x + 16)}" y2="{y}"/>')
                else:
                    self.parts.append(f'<rect class="bar {cls}" x="{_f(x)}" y="{y - 6}" width="14" height="12" rx="2"/>')
                self.parts.append(f'<text class="lg" x="{_f(x + 22)}" y="{y + 4}">{escape(name)}</text>')

    def grid_y(self, ya: Axis) -> None:
        for t in ya.ticks:
            y = ya(t)
            self.parts.append(f'<line class="grid" x1="{_f(self.left)}" y1="{_f(y)}" x2="{_f(WIDTH - self.right)}" y2="{_f(y)}"/>')
            self.parts.append(f'<text class="tk" x="{_f(self.left - 6)}" y="{_f(y + 4)}" text-anchor="end">{escape(ya.label(t))}</text>')

    def grid_x(self, xa: Axis) -> None:
        for t in xa.ticks:
            x = xa(t)
            self.parts.append(f'<line class="grid" x1="{_f(x)}" y1="{_f(self.top)}" x2="{_f(x)}" y2="{_f(self.bottom)}"/>')
            self.parts.append(f'<text class="tk" x="{_f(x)}" y="{_f(self.bottom + 16)}" text-anchor="middle">{escape(xa.label(t))}</text>')

    def axes_lines(self) -> None:
        self.parts.append(f'<line class="axis" x1="{_f(self.left)}" y1="{_f(self.bottom)}" x2="{_f(WIDTH - self.right)}" y2="{_f(self.bottom)}"/>')
        self.parts.append(f'<line class="axis" x1="{_f(self.left)}" y1="{_f(self.top)}" x2="{_f(self.left)}" y2="{_f(self.bottom)}"/>')
        cx = (self.left + WIDTH - self.right) / 2
        if self.xlabel:
            self.parts.append(f'<text class="al" x="{_f(cx)}" y="{HEIGHT - 10}" text-anchor="middle">{escape(self.xlabel)}</text>')
        if self.ylabel:
            cy = (self.top + self.bottom) / 2
            self.parts.append(f'<text class="al" transform="translate(16 {_f(cy)}) rotate(-90)" text-anchor="middle">{escape(self.ylabel)}</text>')

    def svg(self) -> Markup:
        label = escape(self.title or "chart")
        head = (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
                f'aria-label="{label}" xmlns="http://www.w3.org/2000/svg"><title>{label}</title>')
        return Markup(head + "".join(self.parts) + "</svg>")


def _series(data: dict[str, Any]) -> list[dict[str, Any]]:
    s = data.get("series")
    return [x for x in s if isinstance(x, dict)] if isinstance(s, list) else []


def _vals(seq: Any, n: int) -> list[float | None]:
    seq = seq if isinstance(seq, list) else []
    out = [_num(v) for v in seq[:n]]
    return out + [None] * (n - len(out))


def _runs(mask: list[bool]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs where mask is True."""
    runs, start = [], None
    for i, m in enumerate(mask + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def curve_svg(data: dict[str, Any], title: str = "") -> Markup | None:
    """Line chart: several series, optional CI band (``low``/``high``), optional log axes.

    Returns None when no series has a drawable point (the caller shows a note instead).

    Example
    -------
    >>> svg = curve_svg({"xlabel": "eps", "ylabel": "accuracy",
    ...                  "series": [{"name": "PGD", "x": [0, 0.1], "y": [0.9, 0.2]}]})
    >>> str(svg).startswith("<svg")
    True
    """
    logx, logy = bool(data.get("logx")), bool(data.get("logy"))
    series = []
    for s in _series(data):
        x = _vals(s.get("x"), len(s.get("x") or []))
        n = len(x)
        series.append({"name": str(s.get("name", "")), "x": x, "y": _vals(s.get("y"), n),
                       "low": _vals(s.get("low"), n) if s.get("low") is not None else None,
                       "high": _vals(s.get("high"), n) if s.get("high") is not None else None,
                       "dashed": s.get("style") == "dashed"})
    xs = [v for s in series for v in s["x"] if v is not None]
    ys = [v for s in series for k in ("y", "low", "high") for v in (s[k] or []) if v is not None]
    def drawable(v: float | None, log: bool) -> bool:
        return v is not None and (v > 0 or not log)

    if not any(drawable(s["x"][i], logx) and drawable(s["y"][i], logy) for s in series for i in range(len(s["x"]))):
        return None
    ya_probe = Axis.fit(ys, logy, 0, 1)
    fr = _Frame(title, str(data.get("xlabel", "")), str(data.get("ylabel", "")), [s["name"] for s in series],
                [ya_probe.label(t) for t in ya_probe.ticks])
    xa = Axis.fit(xs, logx, fr.left, WIDTH - fr.right, n_ticks=6)
    ya = Axis.fit(ys, logy, fr.bottom, fr.top)
    fr.grid_y(ya)
    fr.grid_x(xa)
    fr.axes_lines()
    for i, s in enumerate(series):
        cls = f"s{i % SERIES_CLASSES}"
        n = len(s["x"])
        ok_xy = [xa.ok(s["x"][k]) and ya.ok(s["y"][k]) for k in range(n)]
        if s["low"] is not None and s["high"] is not None:
            ok_band = [xa.ok(s["x"][k]) and ya.ok(s["low"][k]) and ya.ok(s["high"][k]) for k in range(n)]
            for a, b in _runs(ok_band):
                if b - a < 2:
                    continue
                upper = [f"{_f(xa(s['x'][k]))},{_f(ya(s['high'][k]))}" for k in range(a, b)]
                lower = [f"{_f(xa(s['x'][k]))},{_f(ya(s['low'][k]))}" for k in range(b - 1, a - 1, -1)]
                fr.parts.append(f'<polygon class="band {cls}" points="{" ".join(upper + lower)}"/>')
        dash = " dashed" if s["dashed"] else ""
        for a, b in _runs(ok_xy):
            pts = " ".join(f"{_f(xa(s['x'][k]))},{_f(ya(s['y'][k]))}" for k in range(a, b))
            fr.parts.append(f'<polyline class="ln {cls}{dash}" points="{pts}"/>')
        if sum(ok_xy) <= 30 and not s["dashed"]:
            for k in range(n):
                if ok_xy[k]:
                    tip = escape(f"{s['name']}: x={s['x'][k]:.4g}, y={s['y'][k]:.4g}")
                    fr.parts.append(f'<circle class="pt {cls}" cx="{_f(xa(s["x"][k]))}" cy="{_f(ya(s["y"][k]))}" r="3"><title>{tip}</title></circle>')
    fr.legend("line")
    return fr.svg()


def bars_svg(data: dict[str, Any], title: str = "") -> Markup | None:
    """Grouped bar chart: one group per category, one bar per series, CI whiskers from low/high.

    Example
    -------
    >>> svg = bars_svg({"ylabel": "selection rate", "categories": ["a", "b"],
    ...                 "series": [{"name": "rate", "values": [0.2, 0.5], "low": [0.1, 0.4], "high": [0.3, 0.6]}]})
    >>> "<rect" in str(svg)
    True
    """
    cats = [str(c) for c in data.get("categories") or []]
    series = _series(data)
    if not cats or not series:
        return None
    n = len(cats)
    parsed = []
    for s in series:
        parsed.append({"name": str(s.get("name", "")), "v": _vals(s.get("values"), n),
                       "low": _vals(s.get("low"), n) if s.get("low") is not None else None,
                       "high": _vals(s.get("high"), n) if s.get("high") is not None else None})
    ys = [v for s in parsed for k in ("v", "low", "high") for v in (s[k] or []) if v is not None]
    if not any(v is not None for s in parsed for v in s["v"]):
        return None
    rotate = n > 6 or max(len(c) for c in cats) * CHAR_W > (WIDTH - 120) / n - 6
    longest = min(max(len(c) for c in cats), 24)
    extra = longest * CHAR_W * 0.6 if rotate else 0.0
    ya_probe = Axis.fit(ys, False, 0, 1, include_zero=True)
    fr = _Frame(title, str(data.get("xlabel", "")), str(data.get("ylabel", "")), [s["name"] for s in parsed],
                [ya_probe.label(t) for t in ya_probe.ticks], bottom_extra=extra)
    ya = Axis.fit(ys, False, fr.bottom, fr.top, include_zero=True)
    fr.grid_y(ya)
    fr.axes_lines()
    group_w = (WIDTH - fr.right - fr.left) / n
    bar_w = min(48.0, group_w * 0.8 / len(parsed))
    zero = ya(0.0)
    for c, cat in enumerate(cats):
        gx = fr.left + c * group_w + (group_w - bar_w * len(parsed)) / 2
        for i, s in enumerate(parsed):
            v = s["v"][c]
            if v is None:
                continue
            cls = f"s{i % SERIES_CLASSES}"
            x = gx + i * bar_w
            y0, y1 = sorted((zero, ya(v)))
            tip = f"{s['name']} · {cat}: {v:.4g}"
            lo = s["low"][c] if s["low"] else None
            hi = s["high"][c] if s["high"] else None
            if lo is not None and hi is not None:
                tip += f" [{lo:.4g}, {hi:.4g}]"
            fr.parts.append(f'<rect class="bar {cls}" x="{_f(x + 1)}" y="{_f(y0)}" width="{_f(max(bar_w - 2, 1))}" '
                            f'height="{_f(max(y1 - y0, 0.5))}"><title>{escape(tip)}</title></rect>')
            if lo is not None and hi is not None:
                cx, w = x + bar_w / 2, min(8.0, bar_w / 3)
                fr.parts.append(f'<path class="whisker" d="M{_f(cx)} {_f(ya(lo))}V{_f(ya(hi))}'
                                f'M{_f(cx - w)} {_f(ya(lo))}H{_f(cx + w)}M{_f(cx - w)} {_f(ya(hi))}H{_f(cx + w)}"/>')
        cx = fr.left + (c + 0.5) * group_w
        label = cat if len(cat) <= 24 else cat[:23] + "…"
        if rotate:
            fr.parts.append(f'<text class="tk" transform="translate({_f(cx + 4)} {_f(fr.bottom + 12)}) rotate(-35)" '
                            f'text-anchor="end">{escape(label)}</text>')
        else:
            fr.parts.append(f'<text class="tk" x="{_f(cx)}" y="{_f(fr.bottom + 16)}" text-anchor="middle">{escape(label)}</text>')
    if ya.lo < 0 < ya.hi:
        fr.parts.append(f'<line class="axis" x1="{_f(fr.left)}" y1="{_f(zero)}" x2="{_f(WIDTH - fr.right)}" y2="{_f(zero)}"/>')
    fr.legend("box")
    return fr.svg()


def histogram_svg(data: dict[str, Any], title: str = "") -> Markup | None:
    """Overlaid step histograms (one per series, translucent fill); ``density: true`` normalises
    each series to unit area so that groups of different sizes compare.

    Example
    -------
    >>> svg = histogram_svg({"xlabel": "loss", "series": [{"name": "members", "edges": [0, 1, 2], "counts": [3, 1]}]})
    >>> "<path" in str(svg)
    True
    """
    density = bool(data.get("density"))
    parsed = []
    for s in _series(data):
        edges = [_num(e) for e in s.get("edges") or []]
        counts = [_num(c) for c in s.get("counts") or []]
        if len(edges) != len(counts) + 1 or not counts or any(e is None for e in edges):
            continue
        counts = [c or 0.0 for c in counts]
        if density:
            area = sum(c * (edges[k + 1] - edges[k]) for k, c in enumerate(counts))
            counts = [c / area if area > 0 else 0.0 for c in counts]
        parsed.append({"name": str(s.get("name", "")), "edges": edges, "counts": counts})
    if not parsed:
        return None
    xs = [e for s in parsed for e in s["edges"]]
    ys = [c for s in parsed for c in s["counts"]]
    ylabel = str(data.get("ylabel") or ("density" if density else "count"))
    ya_probe = Axis.fit(ys, False, 0, 1, include_zero=True)
    fr = _Frame(title, str(data.get("xlabel", "")), ylabel, [s["name"] for s in parsed],
                [ya_probe.label(t) for t in ya_probe.ticks])
    xa = Axis.fit(xs, False, fr.left, WIDTH - fr.right, n_ticks=6)
    ya = Axis.fit(ys, False, fr.bottom, fr.top, include_zero=True)
    fr.grid_y(ya)
    fr.grid_x(xa)
    fr.axes_lines()
    for i, s in enumerate(parsed):
        cls = f"s{i % SERIES_CLASSES}"
        e, c = s["edges"], s["counts"]
        d = [f"M{_f(xa(e[0]))} {_f(ya(0))}"]
        for k, v in enumerate(c):
            d.append(f"V{_f(ya(v))}H{_f(xa(e[k + 1]))}")
        d.append(f"V{_f(ya(0))}")
        fr.parts.append(f'<path class="hist {cls}" d="{"".join(d)}"/>')
    fr.legend("box")
    return fr.svg()
