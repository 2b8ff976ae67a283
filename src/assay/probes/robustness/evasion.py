"""robustness.evasion: white-box robust accuracy under the strongest attack ensemble."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from assay import outcomes as oc
from assay.attacks.apgd import apgd
from assay.attacks.autoattack import autoattack
from assay.attacks.minnorm import fmn, robust_accuracy_from_norms
from assay.attacks.randomized import vote
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.probes.robustness._evidence import example_images
from assay.probes.robustness._space import threat_space
from assay.stats import bootstrap, clopper_pearson


@register
class EvasionProbe(Probe):
    name = "robustness.evasion"
    axis = "robustness"
    title = "White-box adversarial robustness"
    description = (
        "Robust accuracy at each epsilon and norm under the AutoAttack ensemble (APGD-CE, APGD-T, "
        "targeted FMN, Square), a minimum-norm robustness curve, and gradient-masking checks; "
        "epsilons scaled to the data unless given."
    )
    requires = frozenset({"gradients"})
    needs = frozenset({"labels"})
    default_policy = {"robust_accuracy": Threshold(fail_below=0.3, warn_below=0.6)}
    order = -10  # its gradient-masking finding qualifies later white-box probes

    @dataclass
    class Params:
        norms: list[Literal["linf", "l2"]] = field(default_factory=lambda: ["linf"])
        eps_linf: list[float] | None = None  # None: scaled to the data (see docs/attacks.md)
        eps_l2: list[float] | None = None
        attack: Literal["autoattack", "apgd-ce"] = "autoattack"
        version: Literal["auto", "standard", "rand"] = "auto"
        steps: int = 100
        square_queries: int = 5000
        curve: bool = True
        max_samples: int = 500
        n_examples: int = 6
        batch_size: int = 256
        draws: int = 25  # randomized models: fresh draws per majority vote and per confirmed break
        alpha: float = 0.05  # randomized models: the binomial test that confirms a break

    def cost(self, target, data):
        p = self.params
        n = min(len(data), p.max_samples) if data is not None else p.max_samples
        k = sum(len(self._given(nm) or [0, 0, 0]) for nm in p.norms)
        return {"queries": n * k * (4 * p.steps * 10 + p.square_queries), "note": "worst case; broken points stop early"}

    def _given(self, norm: str) -> list[float] | None:
        eps = self.params.eps_linf if norm == "linf" else self.params.eps_l2
        return None if eps is None else sorted(eps)

    def run(self, ctx):
        p = self.params
        if p.max_samples < 1 or p.steps < 1 or p.draws < 1:
            raise InputError("robustness.evasion needs max_samples, steps and draws >= 1")
        target, data = ctx.target, ctx.data
        space = threat_space(data, target.bounds)
        model = space.wrap_module(target.module)
        bounds = space.bounds
        idx = ctx.sample(p.max_samples)
        n = len(idx)
        x, y = space.to_space(data.x[idx]), data.y[idx]
        warnings: list[str] = []
        evidence: list[Evidence] = []

        version = p.version
        random_outputs, looks_like_probs = self._output_checks(model, x[:64])
        if random_outputs:
            warnings.append(f"the model's outputs change between identical queries (randomness): inputs are classified "
                            f"by majority over {p.draws} draws, every break is confirmed over {p.draws} fresh draws "
                            f"(binomial test, alpha {p.alpha:g}), and attacks use expectation over transformation")
            if version == "auto":
                version = "rand"
        if version == "auto":
            version = "standard"
        if looks_like_probs:
            warnings.append("the model seems to return probabilities, not logits: loss-based attacks can be "
                            "weakened by saturated softmax; audit the logits if you can")
        confirm = (lambda xa, ya, key: ctx.unit(key, lambda: {"ok": vote(model, xa, ya, p.draws).confirmed(p.alpha)})["ok"].bool()) \
            if random_outputs else None
        if random_outputs:
            votes = ctx.unit(f"clean-votes-n{n}", lambda: {"wrong": vote(model, x, y, p.draws).wrong})["wrong"]
            clean_wrong = 2 * votes >= p.draws
        else:
            clean_wrong = ctx.clean_labels()[idx] != y
        n_clean_ok = int((~clean_wrong).sum())
        ivc = clopper_pearson(n_clean_ok, n)
        metrics = [Metric("clean_accuracy", n_clean_ok / n, ivc.low, ivc.high, higher_is_better=True, method=ivc.method,
                          description=f"majority over {p.draws} draws" if random_outputs else "")]
        rows_out = Outcomes()  # per-sample outcomes: two models audited alike compare row by row
        rows_out.recipe(metrics[0], oc.mean(rows_out.bits("correct", "correct", ~clean_wrong)))

        series, stage_rows, summary_bits, all_eps = [], [], [], []
        for norm in p.norms:
            eps_list = self._given(norm) or space.grid(norm)
            if not eps_list or min(eps_list) <= 0:
                raise InputError(f"eps_{norm} must be positive numbers; got {eps_list}")
            all_eps.append((norm, eps_list))
            # 1) one minimum-norm run answers the whole curve
            min_norm = torch.full((n,), math.inf)
            fmn_adv = x.clone()
            if p.curve:
                ok_idx = (~clean_wrong).nonzero().flatten()
                out = ctx.unit(f"fmn-{norm}-n{n}-s{p.steps}", lambda: self._fmn(model, x[ok_idx], y[ok_idx], norm, bounds,
                                                                            ctx.seed, p.steps))
                fmn_ok = out["success"].bool()
                if confirm is not None and fmn_ok.any():
                    claimed = fmn_ok.nonzero().flatten()
                    real = confirm(out["x_adv"][claimed], y[ok_idx][claimed], f"confirm-fmn-{norm}-n{n}")
                    if int((~real).sum()):
                        warnings.append(f"{norm}: {int((~real).sum())} of {len(claimed)} breaks claimed by the minimum-norm "
                                        "stage were not confirmed over fresh draws (lucky noise) and do not count")
                    fmn_ok[claimed[~real]] = False
                min_norm[ok_idx[fmn_ok]] = out["norms"][fmn_ok].float()
                fmn_adv[ok_idx] = out["x_adv"]
            min_norm[clean_wrong] = 0.0

            broken = clean_wrong.clone()
            x_adv_best = x.clone()
            ra_by_eps = []
            for eps in eps_list:
                k_start = int((~broken).sum())
                by_fmn = (min_norm <= eps * (1 + 1e-5)) & ~broken
                x_adv_best[by_fmn] = fmn_adv[by_fmn]
                broken |= by_fmn
                rows = [[norm, f"{eps:.4g}", "clean", f"{n_clean_ok / n:.4f}"]]
                if p.curve:
                    rows.append([norm, f"{eps:.4g}", "minimum-norm (FMN)", f"{int((~broken).sum()) / n:.4f}"])
                todo = (~broken).nonzero().flatten()
                if len(todo):
                    if p.attack == "autoattack":
                        n_stages = 4 if version == "standard" else 2
                        stage_done = [0]

                        def unit(k, f, t=len(todo), at=len(ra_by_eps)):
                            out = ctx.unit(f"{k}-of{t}", f)
                            stage_done[0] += 1
                            ctx.progress(f"{norm} ensemble stages",
                                         at * n_stages + stage_done[0], len(eps_list) * n_stages)
                            return out

                        res = autoattack(model, x[todo], y[todo], eps=eps, norm=norm, version=version, steps=p.steps,
                                         square_queries=p.square_queries, bounds=bounds, seed=ctx.seed,
                                         batch_size=p.batch_size, unit=unit)
                        adv, ok = res.x_adv, res.success.clone()
                        stages = list(res.info["robust_after"])[1:]
                        by = list(res.info["broken_by"])
                    else:
                        r = ctx.unit(f"apgd-ce-{norm}-{eps:.6g}-n{len(todo)}", lambda: apgd(
                            model, x[todo], y[todo], eps=eps, norm=norm, steps=p.steps, bounds=bounds,
                            seed=ctx.seed, batch_size=p.batch_size, eot_samples=20 if random_outputs else 1).to_dict())
                        adv, ok = r["x_adv"], r["success"].bool()
                        stages, by = ["apgd-ce"], ["apgd-ce" if o else "" for o in ok.tolist()]
                    if confirm is not None and ok.any():
                        claimed = ok.nonzero().flatten()
                        real = confirm(adv[claimed], y[todo][claimed], f"confirm-{p.attack}-{norm}-{eps:.6g}-n{len(todo)}")
                        ok[claimed[~real]] = False
                        if int((~real).sum()):
                            warnings.append(f"{norm} eps={eps:.4g}: {int((~real).sum())} of {len(claimed)} breaks the "
                                            "ensemble claimed were not confirmed over fresh draws and do not count")
                    # the per-stage table counts on all n samples, so its last row is the headline
                    left = int((~broken).sum())
                    for stage in stages:
                        left -= sum(1 for b, o in zip(by, ok.tolist()) if b == stage and o)
                        rows.append([norm, f"{eps:.4g}", stage, f"{left / n:.4f}"])
                    if p.attack == "autoattack":
                        square_only = sum(1 for b, o in zip(by, ok.tolist()) if b == "square" and o)
                        if square_only:
                            warnings.append(
                                f"{norm} eps={eps:.4g}: the black-box Square attack broke {square_only} points that "
                                "the gradient attacks missed: gradient masking suspected")
                    hit = todo[ok]
                    x_adv_best[hit] = adv[ok]
                    broken[hit] = True
                stage_rows += rows
                k_robust = int((~broken).sum())
                assert k_robust <= k_start
                iv = clopper_pearson(k_robust, n)
                ra_by_eps.append(k_robust / n)
                metrics.append(Metric.labelled("robust_accuracy", {"norm": norm, "eps": eps}, k_robust / n, iv.low, iv.high,
                                      higher_is_better=True, method=iv.method,
                                      description=f"{p.attack} ({version}) union minimum-norm attack; eps in {space.unit}", keyed={"eps": ".4g"}))
                rows_out.recipe(metrics[-1], oc.mean(rows_out.bits(f"robust[{norm},eps={eps:.6g}]", "robust", ~broken)))
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
                    metrics.append(Metric.labelled("median_min_norm", {"norm": norm}, med, ci.low if math.isfinite(ci.low) else None,
                                          ci.high if math.isfinite(ci.high) else None, higher_is_better=True,
                                          method="bootstrap",
                                          description="median smallest adversarial perturbation among correctly "
                                                      f"classified points (inf: not broken), in {space.unit}"))
            series.append({"name": f"{p.attack} {norm}", "x": eps_list, "y": ra_by_eps,
                           "low": [clopper_pearson(round(r * n), n).low for r in ra_by_eps],
                           "high": [clopper_pearson(round(r * n), n).high for r in ra_by_eps]})

            # 3) gradient-masking checks
            if len(eps_list) >= 2 and eps_list[-1] >= 4 * eps_list[0] and ra_by_eps[0] > 0.05 \
                    and ra_by_eps[-1] >= ra_by_eps[0] - 1e-9:
                warnings.append(f"{norm}: attack success does not rise with epsilon "
                                f"({eps_list[0]:.4g} -> {eps_list[-1]:.4g}): gradient masking suspected")
            unbounded = self._unbounded_check(ctx, model, x, y, ~broken & ~clean_wrong, norm, bounds,
                                              space.unbounded_eps(norm), 8 if random_outputs else 1)
            if unbounded:
                warnings.append(unbounded)

            ex_idx = (broken & ~clean_wrong).nonzero().flatten()[: p.n_examples].tolist()
            if ex_idx and data.x.dim() == 4:
                shown = space.to_input(x_adv_best[ex_idx])
                pred = dict(zip(ex_idx, ctx.target.labels(shown).tolist()))
                ev = example_images(data.x[idx], space.to_input(x_adv_best), y, pred, ex_idx, target.bounds,
                                    f"Adversarial examples ({norm}, eps up to {eps_list[-1]:.4g})")
                if ev is not None:
                    evidence.append(ev)

        if all(max(e) < space.meaningful for _, e in all_eps):
            warnings.append(f"every epsilon is below the smallest meaningful change of this data ({space.meaningful:.4g} "
                            f"in {space.unit}): a high robust accuracy here says nothing; use the default grid or "
                            "larger epsilons")
        masking = [w for w in warnings if "masking" in w or "masked" in w]
        if masking:
            ctx.note_fact("gradient_masking", f"robustness.evasion: {masking[0]}")
        evidence.insert(0, Evidence("curve", "Robust accuracy vs epsilon",
                                    {"xlabel": f"epsilon ({space.unit})", "ylabel": "robust accuracy", "logx": False,
                                     "logy": False, "series": series}))
        if stage_rows:
            evidence.append(Evidence("table", "Robust accuracy after each ensemble stage (all samples)",
                                     {"columns": ["norm", "eps", "after stage", "robust accuracy"], "rows": stage_rows}))
        return self.finding(
            metrics=metrics,
            warnings=warnings,
            evidence=evidence,
            summary=f"Clean accuracy {n_clean_ok / n:.1%} on {n} samples; robust accuracy " + "; ".join(summary_bits) + ".",
            accounting={"samples": n, "version": version, "eps": {nm: e for nm, e in all_eps}, **space.describe()},
            outcomes=rows_out.to_dict(),
        )

    @staticmethod
    def _fmn(model, x, y, norm, bounds, seed, steps):
        return fmn(model, x, y, norm=norm, steps=steps, bounds=bounds, seed=seed).to_dict()

    @staticmethod
    def _output_checks(model, x):
        with torch.no_grad():
            a, b = model(x), model(x)
        random_outputs = not torch.allclose(a, b, atol=1e-5, rtol=1e-4)
        looks_like_probs = bool((a >= 0).all() and torch.allclose(a.sum(1), torch.ones(len(a)), atol=1e-3))
        return random_outputs, looks_like_probs

    @staticmethod
    def _unbounded_check(ctx, model, x, y, robust_mask, norm, bounds, big, eot):
        """An attack with an unbounded budget must break every point; if not, gradients are masked.
        It ascends the logit margin: far from the data the logits grow large and the cross-entropy's
        gradient underflows, which would pass for masking on any undefended ReLU network."""
        idx = robust_mask.nonzero().flatten()[:32]
        if len(idx) == 0:
            return None
        out = ctx.unit(f"unbounded-{norm}-n{len(idx)}", lambda: apgd(
            model, x[idx], y[idx], eps=big, norm=norm, loss="margin", steps=50, bounds=bounds, seed=ctx.seed,
            eot_samples=eot).to_dict())
        failed = int((~out["success"].bool()).sum())
        if failed:
            return (f"{norm}: an attack with an unbounded budget failed on {failed} of {len(idx)} points that "
                    "resisted the ensemble: gradients are likely masked or obfuscated, so the robust accuracy "
                    "above is probably an overestimate")
        return None
