"""certify.smoothing: certified L2 robustness by randomized smoothing, next to the empirical
robustness of the same smoothed classifier under an attack that accounts for the noise."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.guarantees.smoothing import ABSTAIN, NoisyModel, Smoothed, certified_accuracy, max_certifiable_radius
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.stats import clopper_pearson
from assay.targets.base import GRADIENTS


@register
class SmoothingProbe(Probe):
    name = "certify.smoothing"
    axis = "certify"
    title = "Certified robustness (randomized smoothing)"
    description = (
        "Certified L2 accuracy at each radius of the Gaussian-smoothed model (Cohen et al. 2019), "
        "abstention rate, and the smoothed model's empirical robust accuracy under PGD with "
        "expectation over the noise, so the certified/empirical gap is visible."
    )
    requires_any = (frozenset({"scores"}), frozenset({"labels"}))
    needs = frozenset({"labels"})
    default_policy = {"certified_accuracy": Threshold(warn_below=0.3)}

    @dataclass
    class Params:
        sigma: float = 0.25
        n0: int = 100
        n: int = 10_000
        alpha: float = 0.001
        radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
        max_samples: int = 100
        attack: bool = True
        attack_steps: int = 20
        attack_eot: int = 8
        attack_n: int = 500
        max_batch: int | None = None  # None: Smoothed's default chunk (about 1M input values)

    def cost(self, target, data):
        p = self.params
        k = min(len(data), p.max_samples) if data is not None else p.max_samples
        return {"queries": k * (p.n0 + p.n), "note": "noise samples"}

    def run(self, ctx):
        p = self.params
        if p.sigma <= 0 or not (0 < p.alpha < 1) or p.n0 < 1 or p.n < 1:
            raise InputError("certify.smoothing needs sigma > 0, 0 < alpha < 1, n0 >= 1 and n >= 1")
        target, data = ctx.target, ctx.data
        idx = ctx.sample(p.max_samples)
        k = len(idx)
        x, y = data.x[idx], data.y[idx]
        white = GRADIENTS in target.capabilities
        base = target.module if white else target.labels
        sm = Smoothed(base, target.num_classes, p.sigma, max_batch=p.max_batch)
        warnings = []
        rmax = max_certifiable_radius(p.n, p.alpha, p.sigma)
        if rmax == 0.0:
            raise InputError(f"n={p.n} noise samples can never certify at alpha={p.alpha}; raise n")
        if max(p.radii) > rmax:
            warnings.append(f"radii above {rmax:.3g} cannot be certified with n={p.n} at alpha={p.alpha} "
                            "(even unanimous votes); raise n to certify them")

        def work():
            with torch.no_grad():
                r = sm.certify(x, n0=p.n0, n=p.n, alpha=p.alpha, seed=ctx.seed)
            return {"prediction": r.prediction, "radius": r.radius, "p_lower": r.p_lower, "counts": r.counts}

        out = ctx.unit(f"certify-s{p.sigma}-n{p.n}-a{p.alpha}-k{k}", work)
        pred, radius = out["prediction"].long(), out["radius"].float()
        from assay.guarantees.smoothing import CertifyResult

        res = CertifyResult(pred, radius, out["p_lower"], out["counts"])
        radii = sorted(p.radii)
        cert = certified_accuracy(res, y, radii)
        abstain = float((pred == ABSTAIN).float().mean())
        metrics, rows = [], []
        rows_out = Outcomes()
        for r, a in zip(radii, cert):
            iv = clopper_pearson(round(a * k), k)
            metrics.append(Metric.labelled("certified_accuracy", {"norm": "l2", "r": r}, a, iv.low, iv.high, higher_is_better=True,
                                  method=iv.method, keyed={"r": ".3g"}))
            # the same rule as certified_accuracy: certified correct with radius >= r
            rows_out.recipe(metrics[-1], oc.mean(rows_out.bits(f"certified[r={r:.6g}]", "certified",
                                                               (pred == y) & (radius >= r))))
        iv = clopper_pearson(round(abstain * k), k)
        metrics.append(Metric("abstention_rate", abstain, iv.low, iv.high, higher_is_better=False, method=iv.method))
        grid = np.linspace(0, max(max(radii), float(radius.max()) if len(radius) else 0) * 1.05 + 1e-9, 41).tolist()
        series = [{"name": "certified accuracy", "x": grid, "y": certified_accuracy(res, y, grid)}]

        empirical = []
        if p.attack and white:
            from assay.attacks.gradient import pgd

            for r in [r for r in radii if r > 0]:
                def attack(r=r):
                    g = ctx.generator(salt=int(r * 1000) + 7)
                    noisy = NoisyModel(target.module, p.sigma, g)
                    adv = pgd(noisy, x, y, eps=r, norm="l2", steps=p.attack_steps, eot_samples=p.attack_eot,
                              bounds=target.bounds, seed=ctx.seed, random_start=False)
                    with torch.no_grad():
                        ps = sm.predict(adv.x_adv, n=p.attack_n, alpha=p.alpha, seed=ctx.seed + 1)
                    return {"pred": ps}

                ps = ctx.unit(f"eot-pgd-r{r:.4g}-k{k}", attack)["pred"].long()
                acc = float((ps == y).float().mean())
                iv = clopper_pearson(round(acc * k), k)
                empirical.append((r, acc))
                metrics.append(Metric.labelled("empirical_robust_accuracy", {"norm": "l2", "r": r}, acc, iv.low, iv.high,
                                      higher_is_better=True, method=iv.method,
                                      description="smoothed model under PGD with expectation over the noise", keyed={"r": ".3g"}))
                rows.append([f"{r:.3g}", f"{cert[radii.index(r)]:.3f}", f"{acc:.3f}"])
            series.append({"name": "empirical (PGD + EOT)", "x": [e[0] for e in empirical],
                           "y": [e[1] for e in empirical]})
            for r, acc in empirical:
                c = cert[radii.index(r)]
                if c > acc + 0.05:
                    warnings.append(f"certified accuracy {c:.3f} exceeds empirical {acc:.3f} at radius {r}: "
                                    "the certificate cannot be right; check sigma and the input scale")
        elif p.attack:
            warnings.append("no gradients: the empirical attack on the smoothed model was skipped")
        # headline metric for policies: certified accuracy at the middle radius requested
        mid = radii[len(radii) // 2]
        iv = clopper_pearson(round(cert[radii.index(mid)] * k), k)
        metrics.insert(0, Metric("certified_accuracy", cert[radii.index(mid)], iv.low, iv.high, higher_is_better=True,
                                 method=iv.method, description=f"certified accuracy at L2 radius {mid:.3g}"))
        rows_out.recipe(metrics[0], oc.mean(f"certified[r={mid:.6g}]"))
        return self.finding(
            metrics=metrics,
            warnings=warnings,
            evidence=[
                Evidence("curve", "Certified accuracy vs L2 radius",
                         {"xlabel": "L2 radius", "ylabel": "accuracy", "logx": False, "logy": False, "series": series}),
                Evidence("table", "Certified vs empirical accuracy",
                         {"columns": ["radius", "certified", "empirical (PGD+EOT)"], "rows": rows}),
            ],
            summary=(f"sigma={p.sigma}, n={p.n}, alpha={p.alpha}: certified accuracy "
                     + ", ".join(f"{a:.1%} at r={r:.3g}" for r, a in zip(radii, cert))
                     + f"; abstains on {abstain:.1%}."),
            accounting={"samples": k, "max_certifiable_radius": rmax},
            outcomes=rows_out.to_dict(),
        )
