"""The diff report of a comparison: the gate of the delta policy, JSON, HTML side by side, JUnit.

The JSON (``comparison.json``) holds every metric delta with its interval, test, p and q values,
change, minimum detectable effect and policy verdict, plus both audits in full (so the comparison
can be re-rendered or re-judged later). The HTML page shows each probe's metrics side by side with
the delta, its interval and the verdict, and overlays the two models' curves and bars. The JUnit
file has one test case per compared metric that a rule judges (or, without a policy, per metric):
a CI job fails on a regression the way it fails on a failed audit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup

from assay.compare.diff import DEFAULT_RULE, FindingPair, MetricDelta, Settings, default_verdict, judge
from assay.engine.plan import unmatched_rules
from assay.findings import VERDICT_RANK, Metric, clean_json, worst_verdict
from assay.report.schema import AuditReport
from assay.version import __version__

COMPARISON_SCHEMA = "1.0"


@dataclass
class Comparison:
    baseline: AuditReport
    candidate: AuditReport
    pairs: list[FindingPair]
    settings: Settings = field(default_factory=Settings)
    policy_source: str = "default"
    gate: dict[str, Any] = field(default_factory=dict)
    verdict: str = "info"
    names: tuple[str, str] = ("baseline", "candidate")
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    # ------------------------------------------------------------------ gate
    def apply_policy(self, policy: dict[str, Any] | None, source: str | None = None) -> None:
        """Judge each change by the delta policy (without one: no metric may be significantly worse);
        the gate passes when no change fails. A rule naming a probe that did not run in both audits
        fails unless the policy marks it optional; a rule that matches no metric is an error."""
        self.policy_source = source or ("default" if not policy else "given")
        failures, problems = [], []
        optional = set(getattr(policy, "optional", ()) or ())
        for pair in self.pairs:
            rules = (policy or {}).get(pair.probe, {}) if policy else None
            for d in pair.deltas:
                d.verdict = default_verdict(d) if rules is None else (judge(d, rules) if rules else "info")
                if rules is None:
                    d.rules = [f"{DEFAULT_RULE}: {d.verdict}"]
            pair.verdict = worst_verdict([d.verdict for d in pair.deltas]) if pair.deltas else "info"
            if rules and pair.note.startswith("not compared") and pair.probe not in optional:
                pair.verdict = "fail"
                problems.append(f"{pair.probe}: the policy judges it, but it was {pair.note[len('not compared: '):]}")
            elif rules and pair.deltas:
                missing = unmatched_rules(rules, [Metric(d.metric, d.delta, labels=d.labels) for d in pair.deltas])
                if missing:
                    pair.verdict = "error"
                    problems.append(f"{pair.probe}: policy rule(s) {', '.join(missing)} match no compared metric; "
                                    f"its metrics: {', '.join(sorted({d.metric.split('[')[0] for d in pair.deltas}))}")
            failures += [f"{d.probe}: {d.metric} {d.change} (delta {d.delta:+.4g})"
                         for d in pair.deltas if d.verdict == "fail"]
        top = worst_verdict([p.verdict for p in self.pairs]) if self.pairs else "info"
        self.verdict = top
        self.gate = {"passed": VERDICT_RANK[top] < VERDICT_RANK["fail"], "failures": failures, "problems": problems,
                     "rule": DEFAULT_RULE if policy is None or not policy else "the given delta policy"}

    # ------------------------------------------------------------------ views
    @property
    def deltas(self) -> list[MetricDelta]:
        return [d for p in self.pairs for d in p.deltas]

    def delta(self, probe: str, metric: str) -> MetricDelta:
        for d in self.deltas:
            if d.probe == probe and d.metric == metric:
                return d
        raise KeyError(f"{probe}: {metric}")

    def significant(self) -> list[MetricDelta]:
        return [d for d in self.deltas if d.significant]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.deltas:
            out[d.change] = out.get(d.change, 0) + 1
        return out

    def summary(self) -> str:
        sig = self.significant()
        head = (f"{len(self.deltas)} metrics compared on {len(self.pairs)} probes; "
                f"{sum(d.change == 'worse' for d in sig)} significantly worse, "
                f"{sum(d.change == 'better' for d in sig)} better, {sum(d.change == 'changed' for d in sig)} changed "
                f"(FDR {self.settings.alpha:g}); gate {'passed' if self.gate.get('passed') else 'FAILED'}")
        lines = [head] + [f"  {d.change:>7}  {d.probe}: {d.metric} {d.baseline:.4g} -> {d.candidate:.4g} "
                          f"(delta {d.delta:+.4g}{_ci(d)}, q={d.q:.3g}, {d.test})" for d in sig]
        lines += [f"  {p.probe}: {p.note}" for p in self.pairs if p.note]
        lines += [f"  FAIL: {f}" for f in self.gate.get("problems", [])]
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        pairs = []
        for p in self.pairs:
            pd = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("baseline", "candidate", "deltas")}
            pd["deltas"] = [dataclasses.asdict(d) | {"significant": d.significant} for d in p.deltas]
            pairs.append(pd)
        return clean_json({
            "kind": "assay.comparison",
            "schema_version": COMPARISON_SCHEMA,
            "assay_version": __version__,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "names": list(self.names),
            "verdict": self.verdict,
            "gate": self.gate,
            "policy_source": self.policy_source,
            "settings": dataclasses.asdict(self.settings),
            "counts": self.counts(),
            "pairs": pairs,
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
        })

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ JUnit
    def junit_tree(self) -> ET.ElementTree:
        suites = ET.Element("testsuites", name="assay compare")
        for p in self.pairs:
            cases = [d for d in p.deltas if d.rules]
            suite = ET.SubElement(suites, "testsuite", name=p.probe, tests=str(max(1, len(cases))))
            if not cases:
                case = ET.SubElement(suite, "testcase", classname=p.probe, name=p.probe)
                if p.verdict in ("fail", "error"):
                    ET.SubElement(case, "failure" if p.verdict == "fail" else "error", message=p.note or p.verdict)
                elif p.note:
                    ET.SubElement(case, "skipped", message=p.note)
                continue
            fails = 0
            for d in cases:
                case = ET.SubElement(suite, "testcase", classname=p.probe, name=d.metric)
                text = (f"{d.baseline:.6g} -> {d.candidate:.6g}, delta {d.delta:+.6g}{_ci(d)}; {d.change}"
                        f" ({d.test}, p={_g(d.p)}, q={_g(d.q)}); " + "; ".join(d.rules))
                if d.verdict in ("fail", "error"):
                    fails += 1
                    ET.SubElement(case, "failure", message=f"{d.metric}: {d.change}").text = text
                else:
                    ET.SubElement(case, "system-out").text = text
            suite.set("failures", str(fails))
        return ET.ElementTree(suites)

    def write_junit(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tree = self.junit_tree()
        ET.indent(tree)
        tree.write(path, encoding="utf-8", xml_declaration=True)
        return path

    # ------------------------------------------------------------------ HTML
    def render_html(self) -> str:
        from assay.report.html import _TEMPLATES as TEMPLATES
        from assay.report.html import _environment

        env = _environment()
        env.globals.update(overlay=overlay_charts, ci=_ci, g=_g)
        css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
        return env.get_template("compare.html.j2").render(c=self, css=Markup(css))

    def write_html(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render_html(), encoding="utf-8")
        return path

    def write_all(self, out_dir: str | Path) -> dict[str, Path]:
        """comparison.json, comparison.html and junit.xml in ``out_dir``."""
        out = Path(out_dir)
        return {"json": self.write_json(out / "comparison.json"), "html": self.write_html(out / "comparison.html"),
                "junit": self.write_junit(out / "junit.xml")}


def _g(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3g}"


def _ci(d: MetricDelta) -> str:
    return f" [{d.low:+.4g}, {d.high:+.4g}]" if d.low is not None and d.high is not None else ""


def overlay_charts(pair: FindingPair, names: tuple[str, str]) -> list[Markup]:
    """The curves and bars both findings show under one title, drawn as one chart: each series twice,
    prefixed by the model's name."""
    from assay.report import charts

    if pair.baseline is None or pair.candidate is None:
        return []
    by_title = {(e.kind, e.title): e for e in pair.candidate.evidence}
    out = []
    for ea in pair.baseline.evidence:
        eb = by_title.get((ea.kind, ea.title))
        if eb is None or ea.kind not in ("curve", "bars"):
            continue
        data = dict(ea.data)
        data["series"] = ([{**s, "name": f"{names[0]}: {s.get('name', '')}"} for s in ea.data.get("series", [])]
                          + [{**s, "name": f"{names[1]}: {s.get('name', '')}"} for s in eb.data.get("series", [])])
        if ea.kind == "bars" and ea.data.get("categories") != eb.data.get("categories"):
            continue
        svg = (charts.curve_svg if ea.kind == "curve" else charts.bars_svg)(data, ea.title)
        if svg is not None:
            out.append(svg)
    return out
