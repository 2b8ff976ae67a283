"""The audit engine gets users' own models right: identity of checkpoints, the policy gate, sampling,
member rows, budget shares, seeds, and probes that cannot run."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import assay
from assay.cli import main as cli_main
from assay.data import Dataset
from assay.engine.plan import load_policy, plan_from_names
from assay.engine.runner import Runner, water_fill
from assay.errors import InputError
from assay.report import read_json
from assay.targets import TorchTarget


class Scaled(nn.Module):
    def __init__(self, net, scale: float):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        return self.net(x) * self.scale


def _linear_task(n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (torch.rand(n, generator=g) < torch.sigmoid(2 * x[:, 0] - x[:, 1])).long()
    net = nn.Linear(6, 2)
    opt = torch.optim.Adam(net.parameters(), 5e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x, y


def _script(module, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module.eval()), str(path))
    return path


def test_equal_weights_other_code_never_share_checkpoints(tmp_path):
    """Two TorchScript models with the same weights, one dividing its logits by nothing and one by a
    temperature, audited into the same --out: each gets its own results."""
    net, x, y = _linear_task()
    plain = _script(Scaled(net, 1.0), tmp_path / "model.pt")
    data = tmp_path / "d.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    out = tmp_path / "out"
    args = ["--data", str(data), "--probe", "reliability.calibration", "--bounds", "-inf,inf", "--out", str(out), "--quiet"]
    assert cli_main(["audit", str(plain), *args]) in (0, 1)
    t1 = read_json(out / "report.json").findings[0].metric("temperature").value
    _script(Scaled(net, 6.7), tmp_path / "model.pt")  # same file name, same weights, other code
    assert cli_main(["audit", str(plain), *args]) in (0, 1)
    f2 = read_json(out / "report.json").findings[0]
    assert not f2.accounting.get("resumed")
    assert f2.metric("temperature").value > 3 * t1
    # and the in-memory identity sees plain attributes and code too
    a = TorchTarget(Scaled(net, 1.0), input_shape=(6,), bounds=(-10, 10))
    b = TorchTarget(Scaled(net, 6.7), input_shape=(6,), bounds=(-10, 10))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == TorchTarget(Scaled(net, 1.0), input_shape=(6,), bounds=(-10, 10)).fingerprint()


def test_data_identity_covers_every_field():
    x, y = torch.rand(20, 3), torch.randint(0, 2, (20,))
    base = Dataset(x, y)
    variants = [Dataset(x, y, x_ood=torch.rand(5, 3)), Dataset(x, y, member=torch.arange(20) < 10),
                Dataset(x, y, groups={"g": np.arange(20) % 2}), Dataset(x.reshape(20, 3, 1), y),
                Dataset(x, y, population=Dataset(torch.rand(4, 3), torch.zeros(4)))]
    fps = {base.fingerprint()} | {v.fingerprint() for v in variants}
    assert len(fps) == 1 + len(variants)


def test_policy_rule_on_a_skipped_probe_fails_the_gate(tmp_path):
    net, x, y = _linear_task()
    pol = tmp_path / "p.toml"
    # fairness.groups needs sensitive attributes this data lacks: it is skipped
    pol.write_text('["fairness.groups"]\ndemographic_parity_difference = { fail_above = 0.1 }\n')
    r = assay.audit(net, (x, y), probes=["fairness.groups", "reliability.selective"], policy=pol, bounds=(-10, 10))
    assert r.findings[0].verdict == "skipped"
    assert r.policy["gate"]["passed"] is False and r.verdict == "fail"
    pol.write_text('["fairness.groups"]\noptional = true\ndemographic_parity_difference = { fail_above = 0.1 }\n')
    r = assay.audit(net, (x, y), probes=["fairness.groups", "reliability.selective"], policy=pol, bounds=(-10, 10))
    assert r.policy["gate"]["passed"] is True and r.verdict != "fail"
    pol.write_text('["fairness.groups"]\ndemographic_parity_difference = { fail_above = "0.1" }\n')
    with pytest.raises(InputError, match="must be a number"):
        load_policy(pol)


def test_cli_exit_codes_for_gate_and_all_skipped(tmp_path, capsys):
    net, x, y = _linear_task()
    model = _script(net, tmp_path / "m.pt")
    data = tmp_path / "d.npz"
    np.savez(data, x=x.numpy(), y=y.numpy())
    pol = tmp_path / "p.toml"
    pol.write_text('["fairness.groups"]\ndemographic_parity_difference = { fail_above = 0.1 }\n')
    base = ["audit", str(model), "--data", str(data), "--bounds", "-inf,inf", "--quiet"]
    code = cli_main([*base, "--probe", "fairness.groups", "--probe", "reliability.selective", "--policy", str(pol),
                           "--out", str(tmp_path / "a")])
    assert code == 1 and "its policy rules were not checked" in capsys.readouterr().err
    code = cli_main([*base, "--probe", "fairness.groups", "--out", str(tmp_path / "b")])
    assert code == 2 and "every probe was skipped" in capsys.readouterr().err


def test_capped_probes_draw_a_stratified_random_sample_and_say_so():
    """A file sorted by class (or members first) must not put its first rows in the sample."""
    g = torch.Generator().manual_seed(0)
    y = torch.sort(torch.randint(0, 3, (300,), generator=g)).values  # sorted by class
    x = torch.rand(300, 1, 4, 4, generator=g)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    r = assay.audit(net, (x, y), probes=["robustness.corruption"], input_shape=(1, 4, 4),
                    params={"robustness.corruption": {"max_samples": 60, "severities": [1]}})
    sample = r.findings[0].accounting["sample"]
    idx = torch.tensor(sample["indices"])
    assert sample["n"] == 60 and sample["of"] == 300 and "stratified" in sample["method"]
    counts = torch.bincount(y[idx], minlength=3)
    expected = torch.bincount(y, minlength=3) * 60 / 300
    assert torch.all((counts - expected).abs() <= 1) and idx.max() > 250  # not the first 60 rows
    again = assay.audit(net, (x, y), probes=["robustness.corruption"], input_shape=(1, 4, 4),
                        params={"robustness.corruption": {"max_samples": 60, "severities": [1]}})
    assert again.findings[0].accounting["sample"]["indices"] == sample["indices"]


def test_non_privacy_probes_see_non_members_only():
    net, x, y = _linear_task(400)
    member = torch.arange(400) < 250
    # make the members trivially right and the non-members wrong: accuracy tells which rows were seen
    y_eval = y.clone()
    pred = net(x).argmax(1)
    y_eval[member] = pred[member]
    y_eval[~member] = 1 - pred[~member]
    data = Dataset(x, y_eval, member=member)
    r = assay.audit(net, data, probes=["reliability.selective", "privacy.membership"], bounds=(-10, 10),
                    params={"privacy.membership": {"attacks": ["baseline"]}})
    sel, mem = r.findings
    assert "150 non-member rows of 400" in sel.accounting["rows"]
    assert sel.metric("aurc").value > 0.9  # every non-member row is wrong
    assert mem.accounting["members"] == 250 and "rows" not in mem.accounting


def test_water_fill_shares():
    assert water_fill({"a": 10, "b": 1000, "c": 1000}, 610) == {"a": 10, "b": 300, "c": 300}
    assert water_fill({"a": 10, "b": 20}, 1000) == {"a": 10, "b": 20}
    assert water_fill({"a": 0, "b": 5}, 3) == {"a": 0, "b": 3}


def test_one_probe_cannot_starve_the_rest(demo, demo_target):
    """A black-box attack that would take the whole budget gets its share; later probes still run;
    the split is in the report and a fixed share overrides it."""
    model, s = demo
    t = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=3000)
    data = Dataset(s.x_test[:100], s.y_test[:100])
    plan = plan_from_names(["robustness.blackbox", "robustness.corruption"],
                           {"robustness.blackbox": {"max_samples": 40, "queries_per_sample": 500, "eps_linf": [0.05]},
                            "robustness.corruption": {"max_samples": 100, "severities": [1]}})
    r = Runner(t, data, plan).run()
    split = r.accounting["budget_split"]
    assert r.findings[1].verdict in ("pass", "warn", "fail"), r.findings[1].summary  # corruption ran
    # 3000 - 100 for the shared clean pass: corruption needs 6 x 100, the black-box attack gets the rest
    assert split["robustness.corruption"]["used"] == 600
    assert split["robustness.blackbox"]["share"] == 2300 >= split["robustness.blackbox"]["used"]
    assert t.queries <= 3000
    t2 = TorchTarget(model, input_shape=(1, 8, 8), num_classes=10, device="cpu", query_budget=3000)
    r2 = Runner(t2, data, plan, budget_split={"robustness.blackbox": 500}).run()
    assert r2.accounting["budget_split"]["robustness.blackbox"] == {"share": 500, "used": r2.findings[0].accounting["queries"],
                                                                    "fixed": True}
    assert r2.findings[0].accounting["queries"] <= 500


def test_seed_reaches_membership_and_randomized_models_reproduce():
    net, x, y = _linear_task(300)

    class Noisy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z):
            return self.inner(z + 0.5 * torch.randn_like(z))

    member = torch.arange(300) < 150
    data = Dataset(x, y, member=member)
    runs = [assay.audit(Noisy(net), data, probes=["privacy.membership", "robustness.evasion"], seed=seed, bounds=(-10, 10),
                        params={"privacy.membership": {"attacks": ["baseline", "label_only"], "label_only_copies": 4},
                                "robustness.evasion": {"max_samples": 20, "steps": 5, "square_queries": 50, "draws": 9}})
            for seed in (1, 1, 2)]
    vals = [[(m.name, m.value) for f in r.findings for m in f.metrics if m.value == m.value] for r in runs]
    assert vals[0] == vals[1]  # same seed, same figures, although the model draws noise on every call
    assert vals[0] != vals[2]
    assert runs[0].findings[0].accounting["seed"] == 1
    assert "randomness" in " ".join(runs[0].findings[1].warnings)


def test_policy_rules_select_metric_variants_by_label(tmp_path):
    """A rule keyed by base name and labels judges that variant only; an array holds one rule per
    variant; labels that match no metric make the finding an error (a typo cannot pass a gate)."""
    net, x, y = _linear_task()
    pol = tmp_path / "p.toml"
    pol.write_text('["robustness.corruption"]\n'
                   'accuracy = [{ fail_below = 1.01, labels = { corruption = "gaussian_noise", severity = 1 } }]\n')
    r = assay.audit(net, (x, y), probes=["robustness.corruption"], policy=pol, bounds=(-10, 10),
                    params={"robustness.corruption": {"severities": [1, 2]}})
    f = r.findings[0]
    judged = [c["metric"] for c in f.checks if c["rule"].startswith("fail below 1.01")]
    assert judged == ["accuracy[gaussian_noise,severity=1]"] and f.verdict == "fail"
    m = f.metric("accuracy[gaussian_noise,severity=2]")
    assert m.labels == {"corruption": "gaussian_noise", "severity": 2}
    pol.write_text('["robustness.corruption"]\naccuracy = { fail_below = 0.1, labels = { severity = 7 } }\n')
    r = assay.audit(net, (x, y), probes=["robustness.corruption"], policy=pol, bounds=(-10, 10),
                    params={"robustness.corruption": {"severities": [1]}})
    assert r.findings[0].verdict == "error" and "match no metric" in r.findings[0].error


def test_reports_of_schema_1_0_still_read():
    """Metric labels came with schema 1.1: a 1.0 report without them reads, its metrics unlabelled."""
    from assay.findings import Finding, Metric
    from assay.report.schema import AuditReport

    d = AuditReport(findings=[Finding("p.q", "robustness", "t", metrics=[Metric("m[x]", 0.5)])]).to_dict()
    d["schema_version"] = "1.0"
    for m in d["findings"][0]["metrics"]:
        del m["labels"]
    r = AuditReport.from_dict(d)
    assert r.findings[0].metrics[0].labels == {} and r.findings[0].metrics[0].name == "m[x]"
