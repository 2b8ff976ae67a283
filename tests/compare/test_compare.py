"""assay compare: planted regressions are found where they were planted, an unchanged model shows
nothing, mismatched audits are refused, the delta policy sets the gate, and the diff report renders."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from torch import nn

from assay.compare import Settings, compare, compare_reports
from assay.data.dataset import Dataset
from assay.engine.plan import load_policy
from assay.errors import InputError
from assay.train.classifier import train_classifier

PROBES = ["fairness.groups", "reliability.calibration", "robustness.corruption", "certify.smoothing"]
PARAMS = {"certify.smoothing": {"n": 100, "max_samples": 60, "attack": False, "sigma": 0.1, "radii": [0.0, 0.05]},
          "robustness.corruption": {"severities": [2]}, "fairness.groups": {"n_boot": 300},
          "reliability.calibration": {"n_boot": 300}}


def _params(probes):
    return {k: v for k, v in PARAMS.items() if k in probes}


def _tabular(n: int, seed: int):
    """Six features in [0, 1]; the last is the sensitive group (30% are group 1), so a model can treat
    the groups differently."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=g)
    group = (torch.rand(n, generator=g) < 0.3).long()
    x[:, 5] = group.float()
    y = ((x[:, 0] + x[:, 1] - 0.5 * x[:, 2]) > 0.75).long()
    return x, y, group


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 2))


class ByGroup(nn.Module):
    """Group 0 answered by one model, group 1 by another (the group is input feature 5)."""

    def __init__(self, group0: nn.Module, group1: nn.Module):
        super().__init__()
        self.group0, self.group1 = group0, group1

    def forward(self, x):
        g1 = x[:, 5:6] > 0.5
        return torch.where(g1, self.group1(x), self.group0(x))


@pytest.fixture(scope="module")
def models():
    x, y, group = _tabular(1000, 0)
    base = train_classifier(_mlp(0), x, y, epochs=10, seed=0)
    # the planted regression: a copy retrained where group 1's training labels are degraded (flipped
    # wherever feature 0 is above 0.75, a quarter of the group), serving group 1 only (group 0 keeps
    # the baseline's answers)
    noisy = y.clone()
    flip = (group == 1) & (x[:, 0] > 0.75)
    noisy[flip] = 1 - noisy[flip]
    degraded = ByGroup(base, train_classifier(_mlp(0), x, noisy, epochs=10, seed=0))
    xt, yt, gt = _tabular(800, 5)
    return base, degraded, Dataset(xt, yt, groups={"group": gt.numpy()})


def _flagged(c):
    return {(d.probe, d.metric) for d in c.significant()}


def test_degraded_group_is_flagged_on_fairness_and_nowhere_on_the_other_group(models, tmp_path):
    base, degraded, data = models
    c = compare(base, degraded, data, probes=PROBES, params=PARAMS, n_boot=500, out=tmp_path)
    worse = {m for p, m in _flagged(c) if p == "fairness.groups" and c.delta(p, m).change == "worse"}
    assert {"accuracy_parity_difference[group]", "equalized_odds_difference[group]"} <= worse
    gap = c.delta("fairness.groups", "accuracy_parity_difference[group]")
    assert gap.test == "paired bootstrap" and gap.low > 0 and gap.q <= 0.05
    assert not c.gate["passed"]
    # the regression lives in group 1: on group 0's rows alone, nothing changes on any axis
    keep = torch.from_numpy(np.asarray(data.groups["group"]) == 0)
    only0 = Dataset(data.x[keep], data.y[keep], groups={"half": (torch.arange(int(keep.sum())) % 2).numpy()})
    c0 = compare(base, degraded, only0, probes=PROBES, params=PARAMS, n_boot=500)
    assert _flagged(c0) == set()
    assert c0.gate["passed"]
    paired = [d for d in c0.deltas if d.test in ("mcnemar exact", "paired bootstrap")]
    assert paired and all(d.delta == 0 for d in paired)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_candidate_equal_to_the_baseline_shows_no_change(models, seed):
    base, _, data = models
    c = compare(base, copy.deepcopy(base), data, probes=PROBES, params=PARAMS, seed=seed, n_boot=300)
    assert c.deltas and _flagged(c) == set() and c.gate["passed"]
    tested = [d for d in c.deltas if d.p is not None]
    assert len(tested) >= 10 and all(d.change == "no detectable change" for d in tested)
    # an unchanged model still reports what the data could have detected
    acc = c.delta("robustness.corruption", "clean_accuracy")
    assert acc.test == "mcnemar exact" and (acc.lost, acc.gained) == (0, 0)
    assert 0 < acc.mde < 0.05


def test_noisy_near_copy_keeps_the_nominal_false_positive_rate(models):
    """A candidate whose weights carry tiny noise differs from the baseline on a few rows by chance, not
    systematically: over several seeds at most the nominal share of comparisons flags anything."""
    base, _, data = models
    flagged, discordant = 0, 0
    for seed in range(4):
        cand = copy.deepcopy(base)
        g = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for p in cand.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        c = compare(base, cand, data, probes=["robustness.corruption", "fairness.groups"], params=_params(["robustness.corruption", "fairness.groups"]),
                    seed=seed, n_boot=300)
        flagged += bool(_flagged(c))
        discordant += sum((d.lost or 0) + (d.gained or 0) for d in c.deltas)
    assert discordant > 0  # the copies do differ row by row: the test has something to ignore
    assert flagged <= 1


def test_reports_with_different_inputs_are_refused(models):
    base, degraded, data = models
    from assay.engine.api import audit

    a = audit(base, data, probes=["robustness.corruption"], params=_params(["robustness.corruption"]))
    b = audit(degraded, data, probes=["robustness.corruption"], params=_params(["robustness.corruption"]))
    assert compare_reports(a, b).pairs  # same inputs: compared
    other = Dataset(data.x[:400], data.y[:400], groups={k: np.asarray(v)[:400] for k, v in data.groups.items()})
    c = audit(degraded, other, probes=["robustness.corruption"], params=_params(["robustness.corruption"]))
    with pytest.raises(InputError, match="the data differ"):
        compare_reports(a, c)
    d = audit(degraded, data, probes=["robustness.corruption"], params=_params(["robustness.corruption"]), seed=3)
    with pytest.raises(InputError, match="seeds differ"):
        compare_reports(a, d)
    e = audit(degraded, data, probes=["reliability.calibration"])
    with pytest.raises(InputError, match="only the baseline ran robustness.corruption"):
        compare_reports(a, e)


def test_delta_policy_sets_the_gate(models, tmp_path):
    base, degraded, data = models
    c = compare(base, degraded, data, probes=["fairness.groups", "robustness.corruption"], params=_params(["fairness.groups", "robustness.corruption"]), n_boot=300)
    clean = c.delta("robustness.corruption", "clean_accuracy").delta
    assert clean < 0
    loose = tmp_path / "loose.toml"
    loose.write_text(f'["robustness.corruption"]\nclean_accuracy = {{ fail_below = {clean - 0.01:.4f} }}\n')
    strict = tmp_path / "strict.toml"
    strict.write_text('["robustness.corruption"]\nclean_accuracy = { fail_below = 0.0 }\n'
                      '["fairness.groups"]\naccuracy_parity_difference = { fail_above = 0.0, on = "significant" }\n')
    c.apply_policy(load_policy(loose, comparison=True))
    assert c.gate["passed"]  # the fairness regression is not in this policy
    c.apply_policy(load_policy(strict, comparison=True))
    assert not c.gate["passed"]
    assert any("accuracy_parity_difference[group]" in f for f in c.gate["failures"])
    assert any("clean_accuracy" in f for f in c.gate["failures"])
    typo = tmp_path / "typo.toml"
    typo.write_text('["fairness.groups"]\naccuracy_gap = { fail_above = 0.0 }\n')
    c.apply_policy(load_policy(typo, comparison=True))
    assert c.verdict == "error" and "accuracy_gap" in c.gate["problems"][0]
    with pytest.raises(InputError, match="significant"):
        load_policy(strict)  # on = "significant" means nothing in a single audit's policy


def test_diff_report_json_html_junit(models, tmp_path):
    base, degraded, data = models
    c = compare(base, degraded, data, probes=["fairness.groups", "robustness.corruption"], params=_params(["fairness.groups", "robustness.corruption"]),
                n_boot=300, out=tmp_path, names=("fp32", "noisy"))
    d = json.loads((tmp_path / "comparison.json").read_text())
    assert d["kind"] == "assay.comparison" and d["names"] == ["fp32", "noisy"]
    gap = next(x for p in d["pairs"] for x in p["deltas"] if x["metric"] == "accuracy_parity_difference[group]")
    assert gap["change"] == "worse" and gap["significant"] and gap["low"] > 0
    assert (tmp_path / "fp32" / "report.json").exists() and (tmp_path / "noisy" / "report.json").exists()
    html = (tmp_path / "comparison.html").read_text()
    assert "accuracy_parity_difference[group]" in html and "fp32: " in html and "<svg" in html
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    failures = [tc.get("name") for tc in junit.iter("testcase") if tc.find("failure") is not None]
    assert "accuracy_parity_difference[group]" in failures
    assert int(sum(int(s.get("failures", 0)) for s in junit.iter("testsuite"))) == len(failures)
    assert c.verdict == "fail"


def test_paired_test_needs_outcomes_that_reproduce_the_metric(models):
    """A report whose outcome vectors do not reproduce its metric (tampered, or a recipe bug) is not
    tested row by row: it falls back to the unpaired test of the intervals."""
    base, degraded, data = models
    from assay.engine.api import audit

    a = audit(base, data, probes=["robustness.corruption"], params=_params(["robustness.corruption"]))
    b = audit(degraded, data, probes=["robustness.corruption"], params=_params(["robustness.corruption"]))
    assert compare_reports(a, b).delta("robustness.corruption", "clean_accuracy").test == "mcnemar exact"
    b.findings[0].metric("clean_accuracy").value += 0.01
    d = compare_reports(a, b, settings=Settings(n_boot=200)).delta("robustness.corruption", "clean_accuracy")
    assert d.test == "unpaired (intervals)"


def test_candidates_share_the_baselines_membership_reference_models():
    """An int8 copy cannot be retrained; every candidate is judged against the reference models its
    baseline trained (same recipe and settings), read from the shared cache, none trained again."""
    from assay.compare import compare_each
    from assay.data.demo import DigitsCNN, load_digits_splits

    s = load_digits_splits(0)
    base = DigitsCNN().eval()
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    x, y = torch.cat([s.x_train[:60], s.x_test[:60]]), torch.cat([s.y_train[:60], s.y_test[:60]])
    member = torch.cat([torch.ones(60, dtype=torch.bool), torch.zeros(60, dtype=torch.bool)])
    out = compare_each(base, {"int8": int8, "copy": copy.deepcopy(base)}, Dataset(x, y, member=member),
                       probes=["privacy.membership"], n_boot=100,
                       params={"privacy.membership": {"attacks": ["rmia"], "n_reference": 2, "fprs": [0.1]}})
    assert out["int8"].baseline.findings[0].accounting["reference_trained"] == 2
    for c in out.values():
        acct = c.candidate.findings[0].accounting
        assert (acct["reference_trained"], acct["reference_cached"]) == (0, 2)
        assert acct["recipe"] == c.baseline.findings[0].accounting["recipe"]
    assert out["copy"].delta("privacy.membership", "auc[rmia]").delta == 0


def test_blackbox_selective_and_ood_metrics_are_paired_row_by_row(models):
    """The black-box attack's robust accuracy (McNemar per point), the risk-coverage statistics and the
    OOD detectors' AUROC (paired bootstrap per row): recipes that reproduce the reported values, so a
    near copy is judged row by row, never from the two intervals."""
    base, _, data = models
    cand = copy.deepcopy(base)
    with torch.no_grad():
        cand[2].bias.add_(torch.tensor([0.4, -0.4]))  # shifts every confidence; flips a few answers
    probes = ["robustness.blackbox", "reliability.selective", "reliability.ood"]
    params = {"robustness.blackbox": {"max_samples": 40, "queries_per_sample": 40, "norms": ["linf"], "eps_linf": [0.05, 0.2]},
              "reliability.selective": {"n_boot": 200}, "reliability.ood": {"n_boot": 200}}
    c = compare(base, cand, data, probes=probes, params=params, n_boot=300)
    ra = c.delta("robustness.blackbox", "robust_accuracy[linf,eps=0.2]")
    assert ra.test == "mcnemar exact" and ra.n == 40 and ra.lost + ra.gained <= 40
    for metric in ("aurc", "excess_aurc", "coverage_at_accuracy[acc>=0.99]"):
        d = c.delta("reliability.selective", metric)
        assert d.test.startswith("paired bootstrap") and d.n == 800, (metric, d.test)
    auroc = c.delta("reliability.ood", "auroc[msp]")
    assert auroc.test == "paired bootstrap" and auroc.n == 1600 and auroc.low <= auroc.delta <= auroc.high
