"""``reliability.calibration``: are the model's confidences honest?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from assay import outcomes as oc
from assay.findings import Evidence, Metric, Threshold, outside_interval
from assay.metrics.calibration import BINNED, CalibrationTerms, fit_temperature, reliability_diagram, temperature_interval
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.probes.reliability._common import clean_probs
from assay.stats import interval_of, row_bootstrap_weights


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
    # ECE is capped by the error rate (an accurate model can be wildly overconfident with a small
    # ECE), so overconfidence is also judged by the fitted temperature and by how much NLL it
    # costs, each only when its whole interval crosses the bound
    default_policy = {
        "ece": Threshold(warn_above=0.05, fail_above=0.15),
        "temperature": Threshold(warn_above=1.5, fail_above=3.0, on="interval"),
        "overconfidence_nll_ratio": Threshold(warn_above=1.1, fail_above=1.5, on="interval"),
    }

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
                          method="bootstrap (multinomial row weights" + (", shifted by its bias)" if k in BINNED else ")"),
                          description=d) for k, (d, u) in desc.items()]
        rows_out = Outcomes()
        conf = rows_out.floats("confidence", "confidence", terms.conf)
        right = rows_out.bits("correct", "correct", terms.correct)
        rows_out.recipe("ece", oc.ece(conf, right, p.n_bins))
        rows_out.recipe("brier", oc.mean(rows_out.floats("brier", "loss", terms.brier)))
        rows_out.recipe("nll", oc.mean(rows_out.floats("nll", "loss", terms.nll)))
        diag = reliability_diagram(probs, y, p.n_bins)
        series = [
            {"name": "model", "x": diag["confidence"], "y": diag["accuracy"]},
            {"name": "perfect calibration", "x": [0.0, 1.0], "y": [0.0, 1.0]},
        ]
        summary = f"ECE {point['ece']:.3f} [{ci['ece'][0]:.3f}, {ci['ece'][1]:.3f}], accuracy {point['accuracy']:.3f}"
        accounting = {"queries": 0, "n": len(y), "n_boot": p.n_boot}
        correct = probs.argmax(1) == y
        if p.temperature_scaling and len(y) >= 20 and bool(correct.all()):
            summary += "; every row is classified correctly, so no temperature is identifiable (sharper is always better)"
        elif p.temperature_scaling and len(y) >= 20:
            # probabilities are scaled as log-probabilities: softmax(log p / T) is p ** (1/T), renormalised
            logits = ctx.clean_scores().double() if ctx.target.output == "logits" else probs.clamp_min(1e-12).log()
            t_all = fit_temperature(logits, y)
            t_ci = temperature_interval(logits, y, p.n_boot, p.level, ctx.seed + 2)
            perm = torch.randperm(len(y), generator=ctx.generator(7))
            fit, held = perm[: len(y) // 2], perm[len(y) // 2 :]
            temp = fit_temperature(logits[fit], y[fit])
            before = CalibrationTerms(torch.softmax(logits[held], 1), y[held], p.n_bins)
            after = CalibrationTerms(torch.softmax(logits[held] / temp, 1), y[held], p.n_bins)
            b_pt, a_pt = before.point()["ece"], after.point()["ece"]
            b_ci = before.bootstrap(p.n_boot, p.level, ctx.seed + 1)["ece"]
            a_ci = after.bootstrap(p.n_boot, p.level, ctx.seed + 1)["ece"]
            # what softening costs the held-out half: only an overconfident model (T > 1) is softened; a
            # sharper model is underconfident, which wastes confidence but misleads no one
            ratio, ratio_ci = _nll_ratio(logits[held], y[held], max(temp, 1.0), p.n_boot, p.level, ctx.seed + 3)
            metrics += [
                Metric("temperature", t_all, *t_ci, higher_is_better=None, level=p.level,
                       method="bootstrap (rows resampled, each refitted)",
                       description="temperature that minimises the NLL on all rows: above 1 the model is "
                                   "overconfident, below 1 underconfident"),
                Metric("overconfidence_nll_ratio", ratio, *ratio_ci, higher_is_better=False, level=p.level,
                       method="bootstrap over held-out rows",
                       description="held-out NLL as the model is / after softening it by the temperature fitted on "
                                   "the other half (1 when that temperature is not above 1)"),
                Metric.labelled("held_out_ece", {"model": "before"}, b_pt, *b_ci, higher_is_better=False, level=p.level, method="bootstrap",
                       description="ECE on the held-out half, as the model is"),
                Metric.labelled("held_out_ece", {"model": "temperature-scaled"}, a_pt, *a_ci, higher_is_better=False, level=p.level, method="bootstrap",
                       description="ECE on the held-out half after temperature scaling"),
            ]
            diag_t = reliability_diagram(torch.softmax(logits / temp, 1), y, p.n_bins)
            series.insert(1, {"name": f"temperature-scaled (T={temp:.2f})", "x": diag_t["confidence"], "y": diag_t["accuracy"]})
            summary += (f"; fitted temperature {t_all:.2f} [{t_ci[0]:.2f}, {t_ci[1]:.2f}]; scaling would move held-out "
                        f"ECE {b_pt:.3f} -> {a_pt:.3f} and cut an overconfident NLL by a factor {ratio:.2f}")
        evidence = [
            Evidence("curve", "Reliability diagram", {"xlabel": "confidence", "ylabel": "accuracy", "logx": False,
                                                      "logy": False, "series": series}),
            Evidence("bars", "Rows per confidence bin", {"ylabel": "rows", "categories": [f"{c:.2f}" for c in diag["bin_centre"]],
                                                          "series": [{"name": "count", "values": diag["count"]}]}),
        ]
        return self.finding(metrics=metrics, evidence=evidence, summary=summary, accounting=accounting,
                            warnings=self._biased_intervals(metrics, len(y), p.n_bins), outcomes=rows_out.to_dict())

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


def _nll_ratio(logits, y, temp: float, n_boot: int, level: float, seed: int) -> tuple[float, tuple[float, float]]:
    """NLL of the model over NLL after dividing its logits by ``temp``, with a row-bootstrap interval."""
    before = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    after = torch.nn.functional.cross_entropy(logits / temp, y, reduction="none").numpy()
    w = np.concatenate(list(row_bootstrap_weights(len(before), n_boot, np.random.default_rng(seed))))
    with np.errstate(divide="ignore", invalid="ignore"):
        iv = interval_of((w @ before) / (w @ after), level)
    return float(before.mean() / after.mean()), (iv.low, iv.high)
