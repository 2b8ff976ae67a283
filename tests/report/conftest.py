"""A realistic sample report with every evidence kind, built from seeded synthetic outcomes.

The numbers are not an audit of anything: they exercise the report (schema, HTML, JUnit, text)
with the shapes real probes produce (curves with CIs, log-log ROC, grouped bars with whiskers,
histograms, image pairs, tables, text, an error, a skip, NaN metrics, a long metric list).
"""

from __future__ import annotations

import numpy as np
import pytest

from assay.findings import Evidence, Finding, Metric
from assay.images import perturbation_png_b64, to_png_b64
from assay.report import AuditReport
from assay.stats import clopper_pearson, wilson


def _rate_metric(name: str, k: int, n: int, **kw) -> Metric:
    iv = clopper_pearson(k, n)
    return Metric(name, k / n, iv.low, iv.high, method="clopper-pearson", **kw)


def _rule(**bounds) -> dict:
    return {"fail_below": None, "warn_below": None, "fail_above": None, "warn_above": None, **bounds}


def build_sample_report(seed: int = 0) -> AuditReport:
    from sklearn.datasets import load_digits
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(seed)
    n = 300

    # --- robustness: accuracy under attack vs epsilon, with image triples
    eps = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
    pgd_k = [291, 262, 201, 118, 52, 17, 1]
    fgsm_k = [291, 270, 228, 160, 104, 66, 31]

    def series(name, ks):
        ivs = [clopper_pearson(k, n) for k in ks]
        return {"name": name, "x": eps, "y": [k / n for k in ks],
                "low": [i.low for i in ivs], "high": [i.high for i in ivs]}

    digits = load_digits()
    x = digits.images[:3].astype(float) / 16.0
    noise = np.sign(rng.standard_normal(x.shape)) * 0.1
    x_adv = np.clip(x + noise, 0, 1)
    rows = []
    for i in range(3):
        rows.append({"caption": f"true {digits.target[i]} → predicted {(digits.target[i] + 3) % 10} (eps=0.1, linf)",
                     "images": [{"label": "original", "png": to_png_b64(x[i])},
                                {"label": "adversarial", "png": to_png_b64(x_adv[i])},
                                {"label": "perturbation (×10)", "png": perturbation_png_b64(x_adv[i] - x[i])}]})
    rows.append({"caption": "raw arrays, encoded by the report",
                 "images": [{"label": "original", "array": x[0][None].tolist()},
                            {"label": "attribution", "array": (x_adv[0] - x[0]).tolist(), "style": "heatmap"}]})
    robust = Finding(
        probe="robustness.evasion", axis="robustness", title="Evasion robustness (white-box, L∞)",
        metrics=[_rate_metric("clean_accuracy", 291, n, higher_is_better=True),
                 _rate_metric("robust_accuracy[linf,eps=0.1]", 118, n, higher_is_better=True),
                 Metric("median_min_eps[linf]", 0.094, 0.081, 0.107, method="bootstrap")],
        verdict="fail",
        summary="Accuracy falls from 97.0% to 39.3% under a PGD attack at L∞ ε = 0.1.",
        evidence=[Evidence("curve", "Accuracy under attack vs ε",
                           {"xlabel": "ε (L∞)", "ylabel": "accuracy", "logx": False, "logy": False,
                            "series": [series("PGD-40", pgd_k), series("FGSM", fgsm_k)]}),
                  Evidence("images", "Adversarial examples", {"rows": rows})],
        warnings=["loss plateaued on 4% of points: gradient masking is possible; confirm with a black-box attack"],
        accounting={"queries": 12600, "wall_time_s": 3.41, "seed": seed},
        checks=[{"metric": "robust_accuracy[linf,eps=0.1]", "value": 118 / n, "rule": "fail below 0.5, warn below 0.7", "verdict": "fail"}],
        params={"eps": [0.02, 0.05, 0.1], "norm": "linf", "steps": 40},
    )

    # --- privacy: log-log ROC of a membership attack, loss histograms
    members = rng.normal(0.6, 1.0, 500)
    non = rng.normal(0.0, 1.0, 500)
    scores = np.concatenate([members, non])
    labels = np.concatenate([np.ones(500), np.zeros(500)])
    fpr, tpr, _ = roc_curve(labels, scores)
    keep = fpr > 0
    edges = np.linspace(-3.5, 4.0, 31)
    privacy = Finding(
        probe="privacy.membership", axis="privacy", title="Membership inference (loss attack)",
        metrics=[Metric("auc", 0.664, 0.631, 0.697, method="bootstrap"),
                 _rate_metric("tpr_at_fpr[0.01]", 27, 500),
                 _rate_metric("tpr_at_fpr[0.001]", 4, 500),
                 Metric("advantage", float("nan"), description="undefined: too few non-members at this FPR")],
        verdict="warn",
        summary="A loss-threshold attack identifies 5.4% of training records at 1% FPR.",
        evidence=[Evidence("curve", "ROC (log-log)",
                           {"xlabel": "false positive rate", "ylabel": "true positive rate", "logx": True, "logy": True,
                            "series": [{"name": "loss attack", "x": fpr[keep].tolist(), "y": tpr[keep].tolist()},
                                       {"name": "chance", "x": [1e-3, 1.0], "y": [1e-3, 1.0], "style": "dashed"}]}),
                  Evidence("histogram", "Per-sample loss",
                           {"xlabel": "loss", "density": True,
                            "series": [{"name": "members", "edges": edges.tolist(), "counts": np.histogram(members, edges)[0].tolist()},
                                       {"name": "non-members", "edges": edges.tolist(), "counts": np.histogram(non, edges)[0].tolist()}]})],
        accounting={"queries": 1000, "wall_time_s": 0.52, "seed": seed},
        checks=[{"metric": "tpr_at_fpr[0.01]", "value": 0.054, "rule": "warn above 0.02, fail above 0.1", "verdict": "warn"}],
        params={"attack": "loss"},
    )

    # --- fairness: grouped bars with whiskers
    groups = ["female", "male", "non-binary / unspecified"]
    sel = [(61, 200), (88, 210), (9, 40)]
    tpr_g = [(48, 60), (70, 80), (7, 12)]

    def bar_series(name, pairs):
        ivs = [wilson(k, m) for k, m in pairs]
        return {"name": name, "values": [k / m for k, m in pairs], "low": [i.low for i in ivs], "high": [i.high for i in ivs]}

    fairness = Finding(
        probe="fairness.groups", axis="fairness", title="Group fairness (sex)",
        metrics=[Metric("demographic_parity_difference", 0.19, 0.06, 0.31, method="bootstrap"),
                 Metric("equalized_odds_difference", 0.29, 0.02, 0.51, method="bootstrap")]
        + [Metric(f"selection_rate[{g}]", k / m, wilson(k, m).low, wilson(k, m).high, method="wilson") for g, (k, m) in zip(groups, sel)]
        + [Metric(f"tpr[{g}]", k / m, wilson(k, m).low, wilson(k, m).high, method="wilson") for g, (k, m) in zip(groups, tpr_g)]
        + [Metric(f"group_size[{g}]", m, unit="samples") for g, (_, m) in zip(groups, sel)]
        + [Metric(f"fpr[{g}]", v) for g, v in zip(groups, (0.12, 0.2, float("nan")))],
        verdict="pass",
        summary="Selection rates differ by 0.19 between groups; within the policy's 0.2 limit.",
        evidence=[Evidence("bars", "Rates by group",
                           {"ylabel": "rate", "categories": groups,
                            "series": [bar_series("selection rate", sel), bar_series("true positive rate", tpr_g)]}),
                  Evidence("table", "Confusion counts by group",
                           {"columns": ["group", "n", "TP", "FP", "TN", "FN"],
                            "rows": [["female", 200, 48, 13, 127, 12], ["male", 210, 70, 18, 112, 10],
                                     ["non-binary / unspecified", 40, 7, 2, 26, 5]]})],
        accounting={"queries": 0, "wall_time_s": 0.03, "seed": seed},
        checks=[{"metric": "demographic_parity_difference", "value": 0.19, "rule": "fail above 0.2", "verdict": "pass"}],
        params={"attribute": "sex"},
    )

    explain = Finding(
        probe="explain.faithfulness", axis="explain", title="Attribution faithfulness",
        metrics=[], verdict="info", summary="No policy rule applies; reported for information.",
        evidence=[Evidence("text", "Method", {"text": "Integrated gradients, 32 steps, black baseline.\nDeletion curve over 64 pixels."}),
                  Evidence("curve", "Empty curve", {"xlabel": "pixels removed", "ylabel": "score", "series": []})],
    )
    error = Finding(
        probe="integrity.backdoor", axis="integrity", title="Backdoor scan (neural cleanse)",
        verdict="error",
        summary="Error: TargetError: the target returned 503 Service Unavailable after 5 retries; check the endpoint",
        error="TargetError: the target returned 503 Service Unavailable after 5 retries; check the endpoint",
        accounting={"queries": 40, "wall_time_s": 12.0},
    )
    skipped = Finding(
        probe="reliability.ood", axis="reliability", title="Out-of-distribution detection",
        verdict="skipped", summary="Skipped: needs dataset fields ['ood']; see docs/data.md for how to provide them",
    )
    report = AuditReport(
        seed=seed, suite="standard",
        target={"kind": "torch", "name": "digits-cnn", "num_classes": 10, "input_shape": [1, 8, 8],
                "bounds": [0.0, 1.0], "output": "logits", "capabilities": ["gradients", "labels", "scores"],
                "query_budget": None, "queries": 13640},
        data={"name": "digits-test", "n": n, "shape": [1, 8, 8], "kind": "image", "value_range": [0.0, 1.0], "classes": 10},
        findings=[robust, privacy, fairness, explain, error, skipped],
        accounting={"wall_time_s": 16.2, "queries": 13640, "resumed_units": 0,
                    "versions": {"python": "3.11.2", "assay": "0.1.0", "torch": "2.13.0", "numpy": "2.2.0", "platform": "Linux"}},
        # as the runner writes it: per probe, every Threshold field present
        policy={"source": "default", "rules": {
            "robustness.evasion": {"robust_accuracy": _rule(fail_below=0.5, warn_below=0.7)},
            "privacy.membership": {"tpr_at_fpr[0.01]": _rule(warn_above=0.02, fail_above=0.1)},
            "fairness.groups": {"demographic_parity_difference": _rule(fail_above=0.2)}}},
    )
    return report.compute_summary()


@pytest.fixture
def sample_report() -> AuditReport:
    return build_sample_report()
