"""robustness.evasion: white-box robust accuracy under the strongest attack ensemble."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from assay.attacks.apgd import apgd
from assay.attacks.autoattack import autoattack
from assay.attacks.base import check_norm
from assay.attacks.minnorm import fmn, robust_accuracy_from_norms
from assay.errors import InputError
from assay.probes.base import Evidence, Metric, Probe, Threshold, register
from assay.probes.robustness._evidence import example_images
from assay.stats import bootstrap, clopper_pearson

DEFAULT_EPS = {"linf": [2 / 255, 4 / 255, 8 / 255], "l2": [0.25, 0.5, 1.0]}


@register
class EvasionProbe(Probe):
    name = "robustness.evasion"
    axis = "robustness"
    title = "White-box adversarial robustness"
    description = (
        "Robust accuracy at each epsilon and norm under the AutoAttack ensemble (APGD-CE, APGD-T, "
        "targeted FMN, Square), a minimum-norm robustness curve, and gradient-masking checks."
    )
    requires = frozenset({"gradients"})
    needs = frozenset({"labels"})
    default_policy = {"robust_accuracy": Threshold(fail_below=0.3, warn_below=0.6)}

    @dataclass
    class Params:
        norms: list[str] = field(default_factory=lambda: ["linf"])
        eps_linf: list[float] = field(default_factory=lambda: list(DEFAULT_EPS["linf"]))
        eps_l2: list[float] = field(default_factory=lambda: list(DEFAULT_EPS["l2"]))
        attack: str = "autoattack"  # autoattack | apgd-ce
        version: str = "auto"  # auto | standard | rand
        steps: int = 100
        square_queries: int = 5000
        curve: bool = True
        max_samples: int = 500
        n_examples: int = 6
        batch_size: int = 256

    def cost(self, target, data):
        p = self.params
        n = min(len(data), p.max_samples) if data is not None else p.max_samples
        k = sum(len(self._eps(nm)) for nm in p.norms) if all(nm in ("linf", "l2") for nm in p.norms) else 1
        return {"queries": n * k * (4 * p.steps * 10 + p.square_queries), "note": "worst case; broken points stop early"}

    def _eps(self, norm: str) -> list[float]:
        return sorted(self.params.eps_linf if norm == "linf" else self.params.eps_l2)

    def run(self, ctx):
        p = self.params
        norms = [check_norm(n) for n in p.norms]
        if any(n == "l1" for n in norms):
            raise InputError("robustness.evasion supports norms linf and l2; remove l1")
        if p.attack not in ("autoattack", "apgd-ce"):
            raise InputError(f"unknown attack {p.attack!r} for robustness.evasion; use autoattack or apgd-ce")
        target, data = ctx.target, ctx.data
        model = target.module
        n = min(len(data), p.max_samples)
        x, y = data.x[:n], data.y[:n]
        clean_wrong = ctx.clean_labels()[:n] != y
        n_clean_ok = int((~clean_wrong).sum())
        ivc = clopper_pearson(n_clean_ok, n)
        metrics = [Metric("clean_accuracy", n_clean_ok / n, ivc.low, ivc.high, higher_is_better=True,
                          method=ivc.method)]
        warnings: list[str] = []
        evidence: list[Evidence] = []

        version = p.version
        random_outputs, looks_like_probs = self._output_checks(model, x[:64])
        if random_outputs:
            warnings.append("the model's outputs change between identical queries (randomness): results use "
                            "expectation over transformation (version 'rand'); gradient masking is likely")
            if version == "auto":
                version = "rand"
        if version == "auto":
            version = "standard"
        if looks_like_probs:
            warnings.append("the model seems to return probabilities, not logits: loss-based attacks can be "
                            "weakened by saturated softmax; audit the logits if you can")

        series, stage_rows, summary_bits = [], [], []
        for norm in norms:
            eps_list = self._eps(norm)
            if not eps_list:
                raise InputError(f"no epsilon given for norm {norm}; set eps_{norm}")
            # 1) one minimum-norm run answers the whole curve
            min_norm = torch.full((n,), math.inf)
            fmn_adv = x.clone()
            if p.curve:
                ok_idx = (~clean_wrong).nonzero().flatten()
                out = ctx.unit(f"fmn-{norm}-n{n}", lambda: self._fmn(model, x[ok_idx], y[ok_idx], norm, target.bounds, ctx.seed))
                fmn_ok = out["success"].bool()
                min_norm[ok_idx[fmn_ok]] = out["norms"][fmn_ok].float()
                fmn_adv[ok_idx] = out["x_adv"]
            min_norm[clean_wrong] = 0.0

            broken = clean_wrong.clone()
            x_adv_best = x.clone()
            ra_by_eps = []
            for eps in eps_list:
                by_fmn = (min_norm <= eps * (1 + 1e-5)) & ~broken
                x_adv_best[by_fmn] = fmn_adv[by_fmn]
                broken |= by_fmn
                todo = (~broken).nonzero().flatten()
                if len(todo):
                    if p.attack == "autoattack":
                        res = autoattack(model, x[todo], y[todo], eps=eps, norm=norm, version=version, steps=p.steps,
                                         square_queries=p.square_queries, bounds=target.bounds, seed=ctx.seed,
                                         batch_size=p.batch_size, unit=lambda k, f, t=len(todo): ctx.unit(f"{k}-of{t}", f))
                        for stage, ra in res.info["robust_after"].items():
                            stage_rows.append([norm, f"{eps:.4g}", stage, f"{ra:.4f}"])
                        square_only = sum(1 for b in res.info["broken_by"] if b == "square")
                        if square_only:
                            warnings.append(
                                f"{norm} eps={eps:.4g}: the black-box Square attack broke {square_only} points that "
                                "the gradient attacks missed: gradient masking suspected")
                        adv, ok = res.x_adv, res.success
                    else:
                        r = ctx.unit(f"apgd-ce-{norm}-{eps:.6g}-n{len(todo)}", lambda: apgd(
                            model, x[todo], y[todo], eps=eps, norm=norm, steps=p.steps, bounds=target.bounds,
                            seed=ctx.seed, batch_size=p.batch_size).to_dict())
                        adv, ok = r["x_adv"], r["success"].bool()
                    hit = todo[ok]
                    x_adv_best[hit] = adv[ok]
                    broken[hit] = True
                k_robust = int((~broken).sum())
                iv = clopper_pearson(k_robust, n)
                ra_by_eps.append(k_robust / n)
                metrics.append(Metric(f"robust_accuracy[{norm},eps={eps:.4g}]", k_robust / n, iv.low, iv.high,
                                      higher_is_better=True, method=iv.method,
                                      description=f"{p.attack} ({version}) union minimum-norm attack"))
                ctx.progress(f"{norm} epsilons", len(ra_by_eps), len(eps_list))
            summary_bits.append(f"{norm}: " + ", ".join(f"{r:.1%} at {e:.4g}" for e, r in zip(eps_list, ra_by_eps)))

            # 2) the curve from the minimum norms, with the ensemble's points on it
            if p.curve:
                grid = np.linspace(0, max(eps_list) * 1.5, 31).tolist()
                curve = robust_accuracy_from_norms(min_norm, grid)
                series.append({"name": f"minimum-norm (FMN) {norm}", "x": grid, "y": curve})
                finite = min_norm[~clean_wrong]
                if len(finite):
                    med = float(torch.median(finite))
                    ci = bootstrap(lambda a: float(np.median(a)), finite.numpy(), n_resamples=500, seed=ctx.seed)
                    metrics.append(Metric(f"median_min_norm[{norm}]", med, ci.low if math.isfinite(ci.low) else None,
                                          ci.high if math.isfinite(ci.high) else None, higher_is_better=True,
                                          method="bootstrap",
                                          description="median smallest adversarial perturbation among correctly "
                                                      "classified points (inf: not broken)"))
            series.append({"name": f"{p.attack} {norm}", "x": eps_list, "y": ra_by_eps,
                           "low": [clopper_pearson(round(r * n), n).low for r in ra_by_eps],
                           "high": [clopper_pearson(round(r * n), n).high for r in ra_by_eps]})

            # 3) gradient-masking checks
            if len(eps_list) >= 2 and eps_list[-1] >= 4 * eps_list[0] and ra_by_eps[0] > 0.05 \
                    and ra_by_eps[-1] >= ra_by_eps[0] - 1e-9:
                warnings.append(f"{norm}: attack success does not rise with epsilon "
                                f"({eps_list[0]:.4g} -> {eps_list[-1]:.4g}): gradient masking suspected")
            unbounded = self._unbounded_check(ctx, model, x, y, ~broken & ~clean_wrong, norm, target.bounds)
            if unbounded:
                warnings.append(unbounded)

            ex_idx = (broken & ~clean_wrong).nonzero().flatten()[: p.n_examples].tolist()
            pred = ctx.target.labels(x_adv_best[ex_idx]).tolist() if ex_idx else []
            ev = example_images(x, x_adv_best, y, dict(zip(ex_idx, pred)), ex_idx, target.bounds,
                                f"Adversarial examples ({norm}, eps up to {eps_list[-1]:.4g})")
            if ev is not None:
                evidence.append(ev)

        evidence.insert(0, Evidence("curve", "Robust accuracy vs epsilon",
                                    {"xlabel": "epsilon", "ylabel": "robust accuracy", "logx": False,
                                     "logy": False, "series": series}))
        if stage_rows:
            evidence.append(Evidence("table", "Robust accuracy after each ensemble stage",
                                     {"columns": ["norm", "eps", "after stage", "robust accuracy"], "rows": stage_rows}))
        return self.finding(
            metrics=metrics,
            warnings=warnings,
            evidence=evidence,
            summary=f"Clean accuracy {n_clean_ok / n:.1%} on {n} samples; robust accuracy " + "; ".join(summary_bits) + ".",
            accounting={"samples": n, "version": version},
        )

    @staticmethod
    def _fmn(model, x, y, norm, bounds, seed):
        return fmn(model, x, y, norm=norm, steps=100, bounds=bounds, seed=seed).to_dict()

    @staticmethod
    def _output_checks(model, x):
        with torch.no_grad():
            a, b = model(x), model(x)
        random_outputs = not torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        looks_like_probs = bool((a >= 0).all() and torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-3))
        return random_outputs, looks_like_probs

    @staticmethod
    def _unbounded_check(ctx, model, x, y, robust_mask, norm, bounds):
        """An attack with an unbounded budget must break every point; if not, gradients are masked."""
        idx = robust_mask.nonzero().flatten()[:32]
        if len(idx) == 0:
            return None
        lo, hi = bounds
        big = (hi - lo) if norm == "linf" else (hi - lo) * math.sqrt(x[0].numel())
        out = ctx.unit(f"unbounded-{norm}-n{len(idx)}", lambda: apgd(
            model, x[idx], y[idx], eps=big, norm=norm, steps=50, bounds=bounds, seed=ctx.seed).to_dict())
        failed = int((~out["success"].bool()).sum())
        if failed:
            return (f"{norm}: an attack with an unbounded budget failed on {failed} of {len(idx)} points that "
                    "resisted the ensemble: gradients are likely masked or obfuscated, so the robust accuracy "
                    "above is probably an overestimate")
        return None
