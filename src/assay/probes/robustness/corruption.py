"""robustness.corruption: accuracy under common corruptions at severities 1-5."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.shifts.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from assay.stats import wilson


@register
class CorruptionProbe(Probe):
    name = "robustness.corruption"
    axis = "robustness"
    title = "Accuracy under common corruptions"
    description = (
        "Accuracy under Gaussian noise, blur, contrast, brightness, JPEG-like compression and "
        "pixelation at severities 1-5 (CIFAR-10-C parameters); tabular data gets feature noise only."
    )
    requires_any = (frozenset({"scores"}), frozenset({"labels"}))
    needs = frozenset({"labels"})
    # relative robustness = mean corrupted accuracy / clean accuracy
    default_policy = {"relative_robustness": Threshold(fail_below=0.5, warn_below=0.8)}

    @dataclass
    class Params:
        corruptions: list[Literal["gaussian_noise", "gaussian_blur", "contrast", "brightness", "jpeg", "pixelate"]] = field(
            default_factory=lambda: list(CORRUPTIONS))
        severities: list[int] = field(default_factory=lambda: list(SEVERITIES))
        max_samples: int = 1000

    def cost(self, target, data):
        n = min(len(data), self.params.max_samples) if data is not None else self.params.max_samples
        k = len(self.params.corruptions) if (data is None or data.x.dim() == 4) else 1
        return {"queries": n * k * len(self.params.severities), "note": "one query per corrupted input"}

    def run(self, ctx):
        p = self.params
        unknown = [c for c in p.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise InputError(f"unknown corruption(s) {unknown}; choose from {list(CORRUPTIONS)}")
        data, target = ctx.data, ctx.target
        if p.max_samples < 1 or not p.severities or any(s not in SEVERITIES for s in p.severities):
            raise InputError(f"robustness.corruption needs max_samples >= 1 and severities among {list(SEVERITIES)}")
        idx = ctx.sample(p.max_samples)
        n = len(idx)
        x, y = data.x[idx], data.y[idx]
        clean_correct = (ctx.clean_labels()[idx] == y)
        clean_acc = clean_correct.float().mean().item()
        images = x.dim() == 4
        names = p.corruptions if images else ["gaussian_noise"]
        feat_std = x.std(dim=0, keepdim=True) if not images else None

        metrics, series, rows = [], [], []
        all_acc = []
        rows_out = Outcomes()
        for ci, name in enumerate(names):
            accs, lows, highs = [], [], []
            for s in p.severities:
                def compute(name=name, s=s, ci=ci):
                    g = ctx.generator(salt=1000 * ci + s)
                    if images:
                        xc = corrupt(x, name, s, target.bounds, generator=g)
                    else:  # tabular: noise scaled to each feature's spread
                        sigma = (0.1, 0.2, 0.3, 0.5, 0.8)[s - 1]
                        xc = x + sigma * feat_std * torch.randn(x.shape, generator=g)
                        xc = xc.clamp(*target.bounds)
                    return {"correct": target.labels(xc) == y}

                correct = ctx.unit(f"{name}-s{s}", compute)["correct"].bool()
                k = int(correct.sum())
                iv = wilson(k, n)
                acc = k / n
                accs.append(acc)
                lows.append(iv.low)
                highs.append(iv.high)
                all_acc.append(acc)
                metrics.append(Metric.labelled("accuracy", {"corruption": name, "severity": s}, acc, iv.low, iv.high,
                                      higher_is_better=True, method="wilson", keyed={"severity": ""}))
                rows_out.recipe(metrics[-1], oc.mean(rows_out.bits(f"correct[{name},{s}]", "correct", correct)))
                ctx.progress("corruptions", len(all_acc), len(names) * len(p.severities))
            series.append({"name": name, "x": list(p.severities), "y": accs, "low": lows, "high": highs})
            rows.append([name] + [f"{a:.3f}" for a in accs])

        mean_acc = sum(all_acc) / len(all_acc)
        ivc = wilson(int(clean_correct.sum()), n)
        metrics.insert(0, Metric("clean_accuracy", clean_acc, ivc.low, ivc.high, higher_is_better=True, method="wilson"))
        rows_out.recipe(metrics[0], oc.mean(rows_out.bits("correct", "correct", clean_correct)))
        metrics.insert(1, Metric("mean_corruption_accuracy", mean_acc, higher_is_better=True,
                                 description="mean over corruptions and severities"))
        rel = mean_acc / clean_acc if clean_acc > 0 else float("nan")
        metrics.insert(2, Metric("relative_robustness", rel, higher_is_better=True,
                                 description="mean corrupted accuracy / clean accuracy"))
        corrupted = oc.average(*(r for name, r in rows_out.metrics.items() if name != "clean_accuracy"))
        rows_out.recipe("mean_corruption_accuracy", corrupted)
        rows_out.recipe("relative_robustness", oc.ratio(corrupted, oc.mean("correct")))
        worst = min(zip(all_acc, [(c, s) for c in names for s in p.severities]))
        # A model at chance keeps "all" its accuracy under corruption: that is no robustness. Chance is
        # what always answering the most common class scores on these rows.
        warnings = []
        chance = float(torch.bincount(y).max()) / n
        if ivc.low <= chance:
            warnings.append(f"clean accuracy {clean_acc:.1%} (95% CI from {ivc.low:.1%}) is not above chance "
                            f"({chance:.1%}, always answering the most common class): relative robustness says "
                            "nothing about a model that has not learned the task")
        return self.finding(
            metrics=metrics,
            warnings=warnings,
            summary=(f"Clean accuracy {clean_acc:.1%}; mean accuracy under corruption {mean_acc:.1%} "
                     f"({rel:.0%} of clean); worst: {worst[1][0]} at severity {worst[1][1]} ({worst[0]:.1%})."),
            evidence=[
                Evidence("curve", "Accuracy vs corruption severity",
                         {"xlabel": "severity", "ylabel": "accuracy", "logx": False, "logy": False, "series": series}),
                Evidence("table", "Accuracy by corruption and severity",
                         {"columns": ["corruption"] + [f"s{s}" for s in p.severities], "rows": rows}),
            ],
            accounting={"samples": n},
            outcomes=rows_out.to_dict(),
        )
