"""``reliability.calibration``: are the model's confidences honest?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from assay.metrics.calibration import CalibrationTerms, fit_temperature, reliability_diagram
from assay.probes.base import Evidence, Metric, Probe, Threshold, outside_interval, register
from assay.probes.reliability._common import clean_probs


@register
class Calibration(Probe):
    name = "reliability.calibration"
    axis = "reliability"
    title = "Calibration"
    description = (
        "ECE (equal-width and equal-mass bins), classwise ECE, Brier score and NLL with bootstrap "
        "intervals, a reliability diagram, and what temperature scaling fitted on half the data would gain on the other half."
    )
    requires = frozenset({"scores"})
    accepts_text = True
    default_policy = {"ece": Threshold(warn_above=0.05, fail_above=0.15)}

    @dataclass
    class Params:
        n_bins: int = 15
        n_boot: int = 1000
        level: float = 0.95
        temperature_scaling: bool = True

    def run(self, ctx):
        p = self.params
        probs, y = clean_probs(ctx), ctx.data.y
        terms = CalibrationTerms(probs, y, p.n_bins)
        point, ci = terms.point(), terms.bootstrap(p.n_boot, p.level, ctx.seed)
        desc = {
            "ece": ("equal-width top-label ECE", ""), "adaptive_ece": ("equal-mass top-label ECE", ""),
            "classwise_ece": ("mean over classes of the ECE of p_k", ""), "brier": ("multiclass Brier score", ""),
            "nll": ("negative log-likelihood", "nats"),
        }
        metrics = [Metric(k, point[k], *ci[k], unit=u, higher_is_better=False, level=p.level,
                          method="bootstrap (multinomial row weights)", description=d) for k, (d, u) in desc.items()]
        diag = reliability_diagram(probs, y, p.n_bins)
        series = [
            {"name": "model", "x": diag["confidence"], "y": diag["accuracy"]},
            {"name": "perfect calibration", "x": [0.0, 1.0], "y": [0.0, 1.0]},
        ]
        summary = f"ECE {point['ece']:.3f} [{ci['ece'][0]:.3f}, {ci['ece'][1]:.3f}], accuracy {point['accuracy']:.3f}"
        accounting = {"queries": 0, "n": len(y), "n_boot": p.n_boot}
        if p.temperature_scaling and ctx.target.output == "logits" and len(y) >= 20:
            logits = ctx.clean_scores().double()
            perm = torch.randperm(len(y), generator=ctx.generator(7))
            fit, held = perm[: len(y) // 2], perm[len(y) // 2 :]
            temp = fit_temperature(logits[fit], y[fit])
            before = CalibrationTerms(torch.softmax(logits[held], 1), y[held], p.n_bins)
            after = CalibrationTerms(torch.softmax(logits[held] / temp, 1), y[held], p.n_bins)
            b_pt, a_pt = before.point()["ece"], after.point()["ece"]
            b_ci = before.bootstrap(p.n_boot, p.level, ctx.seed + 1)["ece"]
            a_ci = after.bootstrap(p.n_boot, p.level, ctx.seed + 1)["ece"]
            metrics += [
                Metric("temperature", temp, description="temperature fitted by L-BFGS on the NLL of the fitting half"),
                Metric("ece[held-out,before]", b_pt, *b_ci, higher_is_better=False, level=p.level, method="bootstrap",
                       description="ECE on the held-out half, as the model is"),
                Metric("ece[held-out,temperature-scaled]", a_pt, *a_ci, higher_is_better=False, level=p.level, method="bootstrap",
                       description="ECE on the held-out half after temperature scaling"),
            ]
            diag_t = reliability_diagram(torch.softmax(logits / temp, 1), y, p.n_bins)
            series.insert(1, {"name": f"temperature-scaled (T={temp:.2f})", "x": diag_t["confidence"], "y": diag_t["accuracy"]})
            summary += f"; temperature scaling (T={temp:.2f}) would move held-out ECE {b_pt:.3f} -> {a_pt:.3f}"
        evidence = [
            Evidence("curve", "Reliability diagram", {"xlabel": "confidence", "ylabel": "accuracy", "logx": False,
                                                      "logy": False, "series": series}),
            Evidence("bars", "Rows per confidence bin", {"ylabel": "rows", "categories": [f"{c:.2f}" for c in diag["bin_centre"]],
                                                          "series": [{"name": "count", "values": diag["count"]}]}),
        ]
        return self.finding(metrics=metrics, evidence=evidence, summary=summary, accounting=accounting,
                            warnings=self._biased_intervals(metrics, len(y), p.n_bins))

    @staticmethod
    def _biased_intervals(metrics, n: int, n_bins: int) -> list[str]:
        """A binned ECE is biased upward under resampling (|a sum| grows with its noise), badly so with
        few rows per bin: the whole bootstrap distribution can then lie above the estimate. Say so
        rather than let an interval that excludes its own point pass silently."""
        outside = outside_interval(metrics)
        if not outside:
            return []
        names = ", ".join(f"{m.name} = {m.value:.3g} not in [{m.low:.3g}, {m.high:.3g}]" for m in outside)
        return [f"{names}: with {n} rows in {n_bins} bins ({n / n_bins:.1f} per bin) the binned ECE is biased "
                "upward under resampling, so its interval is unreliable; audit more rows or set a smaller n_bins"]
