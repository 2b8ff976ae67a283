"""The standard suite, run as a user would (`assay audit FILE --data FILE`), on models with planted
flaws beside sound twins (tests/validation/zoo.py): every flaw is flagged by its probe, no twin raises
the same alarm, and no probe on any model ends in an error.

The suite is the built-in standard one at small scale (fewer samples and steps, the same probes).
"""

import json

import pytest

from assay.cli import main

from .zoo import build

# the module fixture builds and audits the whole zoo (about 4 minutes on 2 quiet cores): room for a slow machine
pytestmark = pytest.mark.timeout(1800)

SMALL_SCALE = [
    "robustness.evasion.max_samples=30", "robustness.evasion.steps=10", "robustness.evasion.square_queries=100",
    "robustness.blackbox.max_samples=20", "robustness.blackbox.queries_per_sample=100",
    "robustness.corruption.max_samples=100", "reliability.calibration.n_boot=200", "reliability.selective.n_boot=200",
    "reliability.ood.n_boot=200", "fairness.groups.n_boot=200",
    "integrity.backdoor.max_samples=30", "integrity.backdoor.holdout=100", "integrity.backdoor.steps=100",
    "explain.attributions.n_samples=8", "explain.attributions.n_steps=16", "explain.attributions.n_boot=200",
    "certify.smoothing.n=200", "certify.smoothing.n0=20", "certify.smoothing.max_samples=10",
    "certify.smoothing.attack_n=50", "certify.smoothing.attack_steps=5", "certify.smoothing.alpha=0.01",
    "privacy.inversion.steps=20", "privacy.inversion.restarts=1", "privacy.inversion.eval_epochs=5",
    "privacy.extraction.epochs=5", "privacy.extraction.rounds=2", "privacy.extraction.query_budget=200",
    "privacy.extraction.transfer_samples=20", "privacy.membership.train_epochs=10",
]


@pytest.fixture(scope="session")
def audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    zoo = build(root)
    reports = {}
    for name, e in zoo.items():
        out = root / f"out-{name}"
        argv = ["audit", str(e.model), "--data", str(e.data), *e.args, "--suite", "standard", "--out", str(out),
                "--quiet"]
        for p in SMALL_SCALE:
            argv += ["--param", p]
        code = main(argv)
        reports[name] = (code, json.loads((out / "report.json").read_text()))
    return zoo, reports


def _finding(report, probe):
    return next(f for f in report["findings"] if f["probe"] == probe)


def _text(f) -> str:
    return " ".join(f["warnings"]) + " " + f["summary"]


def test_no_probe_errors_and_every_skip_says_why(audits):
    zoo, reports = audits
    for name, (code, r) in reports.items():
        assert code in (0, 1), (name, code)
        for f in r["findings"]:
            assert f["verdict"] in ("pass", "warn", "fail", "skipped"), (name, f["probe"], f["summary"], f["error"])
            if f["verdict"] == "skipped":
                assert len(f["summary"]) > len("Skipped: .") + 10, (name, f["probe"])


def test_masked_gradients_are_flagged(audits):
    _, reports = audits
    masked = _finding(reports["img_masked"][1], "robustness.evasion")
    clean = _finding(reports["img_clean"][1], "robustness.evasion")
    assert "mask" in _text(masked) and masked["verdict"] in ("warn", "fail")
    assert "mask" not in _text(clean)
    # the finding reaches the white-box probes that come after it
    attr = _finding(reports["img_masked"][1], "explain.attributions")
    assert "gradient masking" in _text(attr) and attr["accounting"]["method"] == "occlusion"
    inv = _finding(reports["img_masked"][1], "privacy.inversion")
    assert "gradient masking" in _text(inv) and inv["accounting"]["mode"] == "blackbox"
    assert _finding(reports["img_clean"][1], "privacy.inversion")["accounting"]["mode"] == "whitebox"


def test_randomized_defence_is_judged_over_draws(audits):
    """Its outputs are random: the audit says so, attacks it with expectation over the noise, and
    counts a break only when fresh draws confirm it (lucky draws are reported, not counted)."""
    _, reports = audits
    rand = _finding(reports["img_random"][1], "robustness.evasion")
    clean = _finding(reports["img_clean"][1], "robustness.evasion")
    assert "randomness" in _text(rand) and "randomness" not in _text(clean)
    assert rand["accounting"]["version"] == "rand"
    assert "not confirmed over fresh draws" in _text(rand)
    values = {m["name"]: m["value"] for m in rand["metrics"]}
    worst = min(v for k, v in values.items() if k.startswith("robust_accuracy"))
    assert worst < values["clean_accuracy"]  # the EOT attack still breaks points


def test_backdoor_is_flagged_at_its_target_class(audits):
    _, reports = audits
    bad = _finding(reports["img_backdoor"][1], "integrity.backdoor")
    good = _finding(reports["img_clean"][1], "integrity.backdoor")
    assert bad["verdict"] == "fail" and bad["accounting"]["flagged"] == [0]
    assert good["verdict"] == "pass"


def test_two_class_model_runs_every_probe_it_can(audits):
    _, reports = audits
    r = reports["img_two"][1]
    ev = _finding(r, "robustness.evasion")
    assert ev["verdict"] in ("pass", "warn", "fail")
    assert any(m["name"].startswith("robust_accuracy") for m in ev["metrics"])
    bd = _finding(r, "integrity.backdoor")
    assert bd["verdict"] == "skipped" and "classes" in bd["summary"]


def test_overconfidence_is_flagged_though_ece_is_small(audits):
    _, reports = audits
    over = _finding(reports["tab_overconfident"][1], "reliability.calibration")
    good = _finding(reports["tab_calibrated"][1], "reliability.calibration")
    assert over["verdict"] == "fail", over["summary"]
    assert good["verdict"] == "pass", good["summary"]
    t = {m["name"]: m for m in over["metrics"]}["temperature"]
    assert t["low"] > 3  # the planted factor is 6.7


def test_membership_on_saturated_and_overfit_models(audits):
    _, reports = audits
    for flawed, twin in (("tab_saturated", "tab_calibrated"), ("tab_forest", "tab_logreg")):
        bad = _finding(reports[flawed][1], "privacy.membership")
        good = _finding(reports[twin][1], "privacy.membership")
        assert bad["verdict"] == "fail", (flawed, bad["summary"])
        assert good["verdict"] == "pass", (twin, good["summary"])
    # a TorchScript file with --factory: the reference-model attacks ran on copies built from it
    sat = _finding(reports["tab_saturated"][1], "privacy.membership")
    assert not sat["accounting"]["attacks_not_run"] and sat["accounting"]["strongest"] in ("lira", "rmia")


def test_group_bias_is_flagged_and_the_fair_twin_passes(audits):
    _, reports = audits
    bad, good = reports["tab_biased"][1], reports["tab_fair"][1]
    assert _finding(bad, "fairness.groups")["verdict"] == "fail"
    assert _finding(good, "fairness.groups")["verdict"] == "pass"
    # hard examples of both classes are not underperforming slices
    assert _finding(good, "fairness.slices")["verdict"] == "pass", _finding(good, "fairness.slices")["summary"]
    assert _finding(bad, "fairness.slices")["verdict"] in ("warn", "fail")


def test_non_privacy_probes_used_held_out_rows(audits):
    _, reports = audits
    cal = _finding(reports["tab_saturated"][1], "reliability.calibration")
    assert "600 non-member rows of 1200" in cal["accounting"]["rows"]
