"""The report: JSON schema round trip and validation, HTML, JUnit, PNG encoder, terminal table."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import re
import struct
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from PIL import Image

from assay.errors import InputError
from assay.findings import Evidence, Finding, Metric
from assay.images import heatmap_png_b64, perturbation_png_b64, png_size, to_png_b64
from assay.report import SCHEMA_VERSION, AuditReport, read_json, render_all, summary_table, write_junit
from assay.report.charts import Axis, curve_svg
from assay.report.html import render_html

DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


# ----------------------------------------------------------------- JSON schema
def test_json_round_trip_is_exact_for_every_evidence_kind(sample_report, tmp_path):
    kinds = {e.kind for f in sample_report.findings for e in f.evidence}
    assert kinds == {"curve", "bars", "histogram", "images", "table", "text"}
    d = sample_report.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN must already be null
    back = AuditReport.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert all(isinstance(f, Finding) for f in back.findings)
    assert all(isinstance(m, Metric) for f in back.findings for m in f.metrics)
    assert all(isinstance(e, Evidence) for f in back.findings for e in f.evidence)

    path = sample_report.write_json(tmp_path / "report.json")
    assert read_json(path).to_dict() == d
    assert AuditReport.read_json(path).run_id == sample_report.run_id


def test_from_dict_rebuilds_an_equal_report_without_nan():
    r = AuditReport(seed=7, suite="quick", target={"kind": "torch", "name": "m"}, data={"name": "d", "n": 3},
                    findings=[Finding("fairness.groups", "fairness", "Groups",
                                      metrics=[Metric("dpd", 0.1, 0.0, 0.2, unit="", method="bootstrap")],
                                      verdict="pass", evidence=[Evidence("text", "t", {"text": "x"})],
                                      params={"attribute": "sex"})]).compute_summary()
    assert AuditReport.from_dict(r.to_dict()) == r


def test_nan_and_inf_serialise_as_null_and_read_back_as_nan(tmp_path):
    f = Finding("privacy.membership", "privacy", "MIA",
                metrics=[Metric("advantage", float("nan")), Metric("ratio", 1.0, float("-inf"), float("inf"))],
                evidence=[Evidence("curve", "c", {"series": [{"name": "a", "x": [0, 1, 2], "y": [0.1, float("nan"), np.float32(0.3)]}]})],
                accounting={"wall_time_s": np.float64(0.5), "queries": np.int64(10)})
    r = AuditReport(findings=[f]).compute_summary()
    text = r.write_json(tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    raw = json.loads(text)
    m0, m1 = raw["findings"][0]["metrics"]
    assert m0["value"] is None and m1["low"] is None and m1["high"] is None
    assert raw["findings"][0]["evidence"][0]["data"]["series"][0]["y"][1] is None
    assert raw["findings"][0]["evidence"][0]["data"]["series"][0]["y"][2] == pytest.approx(0.3)
    assert raw["findings"][0]["accounting"] == {"wall_time_s": 0.5, "queries": 10}
    back = read_json(tmp_path / "r.json")
    assert math.isnan(back.findings[0].metrics[0].value)
    # the report still renders: NaN shows as n/a, the gap in the curve is skipped
    html = render_html(back)
    assert "n/a" in html and "<polyline" in html


def test_newer_major_schema_is_rejected_with_a_clear_line(sample_report, tmp_path):
    d = sample_report.to_dict()
    d["schema_version"] = "2.0"
    p = tmp_path / "report.json"
    p.write_text(json.dumps(d))
    with pytest.raises(InputError) as e:
        read_json(p)
    msg = str(e.value)
    assert "schema 2.0" in msg and "1.x" in msg and "\n" not in msg


def test_minor_versions_add_fields_only(sample_report):
    d = sample_report.to_dict()
    d["findings"][0]["new_in_1_9"] = [1, 2]
    d["added_later"] = {"x": 1}
    d["schema_version"] = "1.9"  # a newer minor version: its extra fields are ignored
    back = AuditReport.from_dict(copy.deepcopy(d))
    assert back.findings[0].probe == d["findings"][0]["probe"]
    d["schema_version"] = SCHEMA_VERSION  # same version: unknown fields mean it is not our report
    with pytest.raises(InputError, match=r"unknown field\(s\) \['added_later'\]"):
        AuditReport.from_dict(d)


@pytest.mark.parametrize(
    "content, why",
    [
        ('{"name": "my-package", "version": "1.0.0"}', "no valid schema_version"),
        ("[1, 2, 3]", "top level is a list"),
        ("{not json", "not valid JSON"),
        ('{"schema_version": "1.0", "seed": 1}', "lacks field(s)"),
    ],
)
def test_non_reports_are_rejected_with_one_line(tmp_path, content, why):
    p = tmp_path / "report.json"
    p.write_text(content)
    with pytest.raises(InputError) as e:
        read_json(p)
    msg = str(e.value)
    assert msg.startswith(f"report.json is not an assay report (schema {SCHEMA_VERSION}):")
    assert why in msg and "\n" not in msg


def test_missing_nested_field_names_the_place(sample_report):
    d = sample_report.to_dict()
    del d["findings"][1]["metrics"][0]["high"]
    with pytest.raises(InputError, match=r"findings\[1\]\.metrics\[0\] lacks field\(s\) \['high'\]"):
        AuditReport.from_dict(d)
    with pytest.raises(InputError, match="does not exist"):
        read_json("/nonexistent/report.json")


def test_compute_summary_takes_the_worst_verdict_per_axis(sample_report):
    r = sample_report
    assert r.verdict == "error"
    s = r.summary_by_axis
    assert list(s) == ["robustness", "privacy", "integrity", "fairness", "reliability", "explain"]
    assert s["robustness"]["verdict"] == "fail" and s["robustness"]["counts"]["fail"] == 1
    assert s["reliability"]["verdict"] == "skipped"
    assert s["explain"]["verdict"] == "info"
    only_ok = AuditReport(findings=[Finding("a.x", "fairness", "x", verdict="pass"),
                                    Finding("a.y", "fairness", "y", verdict="warn"),
                                    Finding("a.z", "privacy", "z", verdict="info")]).compute_summary()
    assert only_ok.verdict == "warn"
    assert only_ok.summary_by_axis["fairness"]["counts"] == {"pass": 1, "warn": 1, "fail": 0, "info": 0, "skipped": 0, "error": 0}
    assert AuditReport().compute_summary().verdict == "info"
    with pytest.raises(InputError, match="verdict 'great'"):
        AuditReport(findings=[Finding("a.x", "fairness", "x", verdict="great")]).compute_summary()


# ------------------------------------------------------------------------ HTML
def test_html_contains_every_finding_metric_ci_chart_and_images(sample_report):
    html = render_html(sample_report)
    assert html.startswith("<!DOCTYPE html>")
    for f in sample_report.findings:
        assert f.probe in html and f.title.replace("'", "&#39;") in html
        assert f'id="f{sample_report.findings.index(f)}"' in html
    rob = sample_report.findings[0].metric("robust_accuracy[linf,eps=0.1]")
    assert f"[{rob.low:.4g}, {rob.high:.4g}]" in html
    assert '<svg class="chart"' in html and "<polyline" in html and "<polygon" in html  # curve + CI band
    assert 'class="whisker"' in html and 'class="hist' in html  # bars, histogram
    assert "No data points to plot." in html  # the empty curve
    assert "TargetError: the target returned 503" in html  # the error finding
    assert "Skipped:</strong> needs dataset fields" in html  # the skipped one, with why, said once
    assert html.count("503 Service Unavailable") == 2  # error box + overview row, not the summary again
    assert "robustness.evasion · <code>robust_accuracy</code></th><td>fail below 0.5, warn below 0.7" in html
    assert "2 more metrics" in html  # the long metric list folds
    assert "n/a" in html  # the NaN metric
    pngs = DATA_URI.findall(html)
    assert len(pngs) == 11  # 3 rows x 3 images + a raw array + a heatmap
    for b64 in pngs:
        raw = base64.b64decode(b64)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
        assert struct.unpack(">II", raw[16:24]) == (64, 64)  # 8x8 digits upscaled x8


def test_html_is_self_contained(sample_report):
    html = render_html(sample_report)
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "@import" not in html and "url(" not in html
    # the only absolute URL is the SVG namespace name, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}


def test_html_escapes_untrusted_text():
    evil = '<script>alert("x")</script>'
    f = Finding(f"robustness.{evil}", "robustness", f"title {evil}", summary=f"summary {evil}", verdict="fail",
                metrics=[Metric(f"m{evil}", 0.5, 0.4, 0.6, unit=evil)],
                warnings=[evil], error=None,
                evidence=[Evidence("curve", evil, {"xlabel": evil, "ylabel": evil,
                                                   "series": [{"name": evil, "x": [0, 1], "y": [0, 1]}, {"name": "b", "x": [0, 1], "y": [1, 0]}]}),
                          Evidence("bars", evil, {"categories": [evil], "series": [{"name": evil, "values": [1]}]}),
                          Evidence("table", evil, {"columns": [evil], "rows": [[evil]]}),
                          Evidence("text", evil, {"text": evil}),
                          Evidence("images", evil, {"rows": [{"caption": evil, "images": [
                              {"label": evil, "png": to_png_b64(np.zeros((4, 4)))},
                              {"label": "bad", "png": '" onerror="alert(1)'}]}]}),
                          Evidence(evil, evil, {})])
    r = AuditReport(target={"name": evil}, data={"name": evil}, suite=evil, findings=[f]).compute_summary()
    html = render_html(r)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html
    assert 'onerror="alert' not in html and "image unavailable" in html


def test_html_of_an_empty_report_says_so():
    html = render_html(AuditReport().compute_summary())
    assert "no findings" in html


# ----------------------------------------------------------------------- JUnit
def test_junit_counts_and_shape(sample_report, tmp_path):
    path = write_junit(sample_report, tmp_path / "junit.xml")
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("6", "1", "1", "2")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [f"assay.{a}" for a in sample_report.summary_by_axis]
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(sample_report.findings)
    by_name = {c.get("name"): c for c in cases}
    for f in sample_report.findings:
        assert by_name[f.probe].get("classname") == f"assay.{f.axis}"
        assert float(by_name[f.probe].get("time")) >= 0
    fail = by_name["robustness.evasion"].find("failure")
    assert fail.get("message") == sample_report.findings[0].summary
    assert "robust_accuracy[linf,eps=0.1]" in fail.text and "fail below 0.5" in fail.text
    assert "503" in by_name["integrity.backdoor"].find("error").get("message")
    assert by_name["reliability.ood"].find("skipped") is not None
    assert by_name["explain.faithfulness"].find("skipped") is not None
    warn = by_name["privacy.membership"]
    assert warn.find("failure") is None and "WARN" in warn.find("system-out").text
    assert by_name["fairness.groups"].find("*") is None  # a pass is an empty test case
    for s in suites:  # per-suite counts agree with the cases; properties come first (schema order)
        cs = s.findall("testcase")
        assert int(s.get("tests")) == len(cs)
        assert int(s.get("failures")) == sum(c.find("failure") is not None for c in cs)
        assert int(s.get("errors")) == sum(c.find("error") is not None for c in cs)
        assert int(s.get("skipped")) == sum(c.find("skipped") is not None for c in cs)
        children = [c.tag for c in s]
        assert children[0] in ("properties", "testcase") and children.count("properties") <= 1
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["robustness.evasion:clean_accuracy"].startswith("0.97 [")
    allowed = {"skipped", "error", "failure", "system-out", "system-err"}
    assert all(child.tag in allowed for c in cases for child in c)


def test_junit_escapes_and_strips_control_characters(tmp_path):
    f = Finding("fairness.x", "fairness", "x", verdict="fail", summary='a <b> & "c"\x00\x1b end')
    r = AuditReport(findings=[f]).compute_summary()
    root = ET.parse(write_junit(r, tmp_path / "j.xml")).getroot()
    assert root.find("testsuite/testcase/failure").get("message") == 'a <b> & "c" end'


# ------------------------------------------------------------------------- PNG
def test_png_encoder_matches_pillow_grey_and_rgb():
    rng = np.random.default_rng(0)
    grey = rng.random((5, 7))
    got = _decode(to_png_b64(grey, factor=1))
    assert got.shape == (5, 7)
    np.testing.assert_array_equal(got, np.rint(grey * 255).astype(np.uint8))

    rgb = rng.random((3, 4, 6))  # CxHxW
    got = _decode(to_png_b64(torch.tensor(rgb), factor=1))
    assert got.shape == (4, 6, 3)
    np.testing.assert_array_equal(got, np.rint(rgb.transpose(1, 2, 0) * 255).astype(np.uint8))


def test_png_upscales_tiny_images_by_nearest_neighbour_and_honours_value_range():
    digit = np.arange(64, dtype=float).reshape(1, 8, 8) / 63.0
    big = _decode(to_png_b64(digit))
    assert big.shape == (64, 64)
    np.testing.assert_array_equal(big, np.rint(digit[0] * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1))
    assert png_size(to_png_b64(digit, factor=3)) == (24, 24)
    assert png_size(to_png_b64(np.zeros((100, 50)))) == (50, 100)  # already large: kept
    x = np.array([[-1.0, 0.0, 1.0, 3.0]])
    np.testing.assert_array_equal(_decode(to_png_b64(x, value_range=(-1, 1), factor=1))[0], [0, 128, 255, 255])
    with pytest.raises(InputError, match="shape"):
        to_png_b64(np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="high > low"):
        to_png_b64(np.zeros((2, 2)), value_range=(1, 1))


def test_heatmap_and_perturbation_use_a_diverging_scale():
    a = np.array([[-2.0, 0.0, 2.0]])
    px = _decode(heatmap_png_b64(a, factor=1))[0]
    assert px.shape == (3, 3)
    assert tuple(px[1]) == (247, 247, 247)  # zero: near white
    assert px[0][2] > px[0][0] and px[2][0] > px[2][2]  # negative blue, positive red
    # the largest perturbation entry reaches full colour whatever its size (amplified)
    d = np.zeros((1, 2, 2))
    d[0, 0, 0] = 0.01
    p = _decode(perturbation_png_b64(d, factor=1))
    assert tuple(p[0, 0]) == (178, 24, 43) and tuple(p[1, 1]) == (247, 247, 247)
    rgb = _decode(perturbation_png_b64(np.full((3, 2, 2), -0.03), factor=1))
    assert (rgb == 0).all()  # RGB: 0.5 + delta / (2 max|delta|) = 0


# ---------------------------------------------------------------- charts, text
def test_axes_ticks_cover_the_data():
    lin = Axis.fit([0.013, 0.29], False, 0, 100)
    assert lin.lo <= 0.013 and lin.hi >= 0.29 and len(lin.ticks) >= 3
    log = Axis.fit([0.0004, 0.5, -1.0, 0.0], True, 0, 100)  # non-positive values are ignored
    assert log.lo == pytest.approx(1e-4) and log.hi == pytest.approx(1.0)
    assert log.ticks == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert curve_svg({"logx": True, "series": [{"name": "a", "x": [0, -1], "y": [1, 2]}]}) is None


def test_summary_table_lists_every_finding_within_the_width(sample_report):
    for width in (60, 100, 160):
        out = summary_table(sample_report, width=width)
        lines = out.splitlines()
        assert all(len(line) <= width for line in lines)
        for f in sample_report.findings:
            assert any(f.verdict.upper() in line and (f.probe in line or f.probe[:6] in line) for line in lines)
        assert lines[-1].startswith("overall: ERROR (6 findings")
    wide = summary_table(sample_report, width=160)
    assert "robust_accuracy[linf,eps=0.1]=0.3933 [0.3377, 0.4511]" in wide
    assert "error: TargetError" in wide and "skipped: needs dataset fields" in wide


def test_summary_table_cuts_nothing_in_a_log(sample_report, monkeypatch):
    # a CI log is not a terminal: the whole error reason must reach it, whatever the fallback width
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    out = summary_table(sample_report)
    assert "503 Service Unavailable after 5 retries; check the endpoint" in out and "…" not in out
    monkeypatch.setenv("COLUMNS", "70")  # an explicit width is obeyed
    assert all(len(line) <= 70 for line in summary_table(sample_report).splitlines())


def test_render_all_writes_the_three_files(sample_report, tmp_path):
    paths = render_all(sample_report, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"report.json", "report.html", "junit.xml"}
    assert read_json(paths["json"]).to_dict() == sample_report.to_dict()
    assert paths["html"].read_text(encoding="utf-8").count('class="finding ') == len(sample_report.findings)


@pytest.mark.parametrize("module", ["report.schema", "images", "report.charts", "report.html", "report.junit",
                                    "report.text", "report"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    mod = importlib.import_module(f"assay.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
