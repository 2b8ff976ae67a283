"""``reliability.selective``: does the model know when it is likely to be wrong?"""

from __future__ import annotations

from dataclasses import dataclass

from assay import outcomes as oc
from assay.findings import Evidence, Metric, Threshold
from assay.metrics.selective import SelectiveTerms
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.probes.reliability._common import clean_probs


@register
class Selective(Probe):
    name = "reliability.selective"
    axis = "reliability"
    title = "Selective prediction"
    description = "Risk-coverage curve of abstaining on low-confidence inputs: AURC, excess AURC over the oracle, coverage at a target accuracy."
    requires = frozenset({"scores"})
    accepts_text = True
    default_policy = {"excess_aurc": Threshold(warn_above=0.05)}

    @dataclass
    class Params:
        target_accuracy: float = 0.99
        n_boot: int = 1000
        level: float = 0.95

    def run(self, ctx):
        p = self.params
        probs, y = clean_probs(ctx), ctx.data.y
        conf, pred = probs.max(1)
        terms = SelectiveTerms(conf, pred == y)
        pt = terms.point(p.target_accuracy)
        ci = terms.bootstrap(p.target_accuracy, p.n_boot, p.level, ctx.seed)
        m = "bootstrap (multinomial row weights)"
        metrics = [
            Metric("aurc", pt["aurc"], *ci["aurc"], higher_is_better=False, level=p.level, method=m,
                   description="area under the risk-coverage curve"),
            Metric("excess_aurc", pt["excess_aurc"], *ci["excess_aurc"], higher_is_better=False, level=p.level, method=m,
                   description="AURC minus the oracle's (ranking quality alone)"),
            Metric.labelled("coverage_at_accuracy", {"min_accuracy": p.target_accuracy}, pt["coverage_at_accuracy"],
                            *ci["coverage_at_accuracy"],
                            higher_is_better=True, level=p.level, method=m,
                   description=f"largest fraction answered with accuracy >= {p.target_accuracy:g}", keyed={"min_accuracy": ("acc>", "g")}),
        ]
        # per row, so two models are compared row by row (paired bootstrap of each statistic)
        rows_out = Outcomes()
        conf_v = rows_out.floats("confidence", "confidence", conf)
        right = rows_out.bits("correct", "correct", pred == y)
        for metric, stat in zip(metrics, oc.SELECTIVE_STATS):
            rows_out.recipe(metric, oc.selective(conf_v, right, stat, p.target_accuracy))
        c = terms.curves()
        ev = Evidence("curve", "Risk-coverage", {"xlabel": "coverage", "ylabel": "selective risk (error rate)", "logx": False,
                                                 "logy": False, "series": [
                                                     {"name": "model (by confidence)", "x": c["coverage"], "y": c["risk"]},
                                                     {"name": "oracle", "x": c["coverage"], "y": c["oracle_risk"]}]})
        summary = (f"AURC {pt['aurc']:.4f} (excess {pt['excess_aurc']:.4f}); answers {pt['coverage_at_accuracy']:.1%} "
                   f"of inputs at accuracy >= {p.target_accuracy:g}")
        return self.finding(metrics=metrics, evidence=[ev], summary=summary, accounting={"queries": 0, "n": len(y)},
                            outcomes=rows_out.to_dict())
