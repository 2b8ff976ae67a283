
import pytest

import assay
from assay.data import Dataset
from assay.engine.plan import load_policy, load_suite, plan_from_names
from assay.engine.runner import Runner
from assay.errors import InputError


def _data(demo, n=120):
    _, s = demo
    return Dataset(s.x_test[:n], s.y_test[:n], name="digits")


def test_runner_resumes_units_and_findings(tmp_path, demo_target, demo):
    data = _data(demo)
    plan = plan_from_names(["robustness.corruption"], {"robustness.corruption": {"severities": [1, 5]}})
    r1 = Runner(demo_target, data, plan, out_dir=tmp_path, seed=3).run()
    f1 = r1.findings[0]
    assert f1.verdict in ("pass", "warn", "fail") and f1.accounting["units_run"] == 12
    # a second run resumes the whole finding from the checkpoint and asks the model nothing
    q = demo_target.queries
    r2 = Runner(demo_target, data, plan, out_dir=tmp_path, seed=3).run()
    assert r2.findings[0].accounting.get("resumed") is True
    assert r1.accounting["resumed_findings"] == 0 and r2.accounting["resumed_findings"] == 1
    assert demo_target.queries == q
    assert [m.value for m in r2.findings[0].metrics] == [m.value for m in f1.metrics]
    # a different seed is a different audit: nothing is reused
    r3 = Runner(demo_target, data, plan, out_dir=tmp_path, seed=4).run()
    assert r3.findings[0].accounting["units_run"] == 12


def test_partial_units_are_reused_after_interruption(tmp_path, demo_target, demo):
    data = _data(demo)
    plan = plan_from_names(["robustness.corruption"], {"robustness.corruption": {"severities": [1, 2]}})
    runner = Runner(demo_target, data, plan, out_dir=tmp_path, seed=0)
    # simulate a crash after the first units: run the probe's context for one unit only

    calls = []

    class Boom(Exception):
        pass

    def progress(desc, done, total):
        calls.append(done)
        if done == 3:
            raise Boom

    runner._progress = progress
    runner.debug = True
    with pytest.raises(Boom):
        runner.run()
    r = Runner(demo_target, data, plan, out_dir=tmp_path, seed=0).run()
    assert r.findings[0].accounting["units_resumed"] == 3
    assert r.findings[0].accounting["units_run"] == 12 - 3


def test_policy_file_sets_verdict(tmp_path, demo_target, demo):
    pol = tmp_path / "policy.toml"
    pol.write_text('["robustness.corruption"]\nclean_accuracy = { fail_below = 1.01 }\n')
    report = assay.audit(demo_target, _data(demo), probes=["robustness.corruption"],
                         params={"robustness.corruption": {"severities": [1]}}, policy=pol)
    assert report.findings[0].verdict == "fail" and report.verdict == "fail"
    pol.write_text('["robustness.corruption"]\nclean_accuracy = { fail_bellow = 1 }\n')
    with pytest.raises(InputError, match="unknown keys"):
        load_policy(pol)


def test_skipped_when_capability_missing(demo, demo_target):
    from assay.targets.base import LABELS, Target

    class LabelsOnly(Target):
        def _scores(self, x):
            raise AssertionError

        def _labels(self, x):
            return demo_target.labels(x)

    t = LabelsOnly(num_classes=10, input_shape=(1, 8, 8), capabilities={LABELS})
    report = Runner(t, _data(demo, 20), plan_from_names(["robustness.evasion"])).run()
    assert report.findings[0].verdict == "skipped" and "gradients" in report.findings[0].summary


def test_builtin_suites_load():
    for s in ("quick", "standard", "full"):
        assert load_suite(s).probes
    with pytest.raises(InputError, match="unknown suite"):
        load_suite("nope")
    with pytest.raises(InputError, match="unknown probe"):
        plan_from_names(["robustness.evasionn"])
    with pytest.raises(InputError, match="unknown parameter"):
        plan_from_names(["robustness.corruption"], {"robustness.corruption": {"sevrities": [1]}})


def test_bug_in_a_probe_does_not_lose_other_findings(demo_target, demo, monkeypatch):
    from assay.probes.robustness.corruption import CorruptionProbe

    def broken(self, ctx):
        raise RuntimeError("boom")

    plan = plan_from_names(["robustness.corruption", "robustness.blackbox"],
                           {"robustness.blackbox": {"max_samples": 4, "queries_per_sample": 20, "eps_linf": [0.3]}})
    monkeypatch.setattr(CorruptionProbe, "run", broken)
    report = Runner(demo_target, _data(demo, 20), plan).run()
    assert report.findings[0].verdict == "error" and "boom" in report.findings[0].error
    assert report.findings[1].verdict in ("pass", "warn", "fail")


def test_interval_that_misses_its_estimate_is_a_warning(demo_target, demo, monkeypatch):
    from assay.findings import Metric
    from assay.probes.reliability.selective import Selective

    def run(self, ctx):
        return self.finding(metrics=[Metric("good", 0.5, 0.4, 0.6), Metric("edge", 0.4, 0.4, 0.6),
                                     Metric("bad", 0.1, 0.2, 0.3, method="bootstrap"), Metric("bare", 0.9)])

    monkeypatch.setattr(Selective, "run", run)
    f = Runner(demo_target, _data(demo, 20), plan_from_names(["reliability.selective"])).run().findings[0]
    assert f.warnings == ["bad = 0.1 lies outside its own 95% interval [0.2, 0.3] (bootstrap); do not rely on that interval"]
    assert f.verdict == "warn"
