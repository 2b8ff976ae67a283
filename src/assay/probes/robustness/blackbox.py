"""robustness.blackbox: score-based and label-only attacks under a hard query budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register
from assay.probes.robustness._evidence import example_images
from assay.probes.robustness._space import threat_space
from assay.stats import clopper_pearson
from assay.targets.base import SCORES


@register
class BlackBoxProbe(Probe):
    name = "robustness.blackbox"
    axis = "robustness"
    title = "Black-box adversarial robustness (query access only)"
    description = (
        "Square attack (scores) or HopSkipJump (labels only) at each epsilon under a per-sample "
        "query allowance and a hard total budget; works on any target, remote APIs included."
    )
    requires_any = (frozenset({"scores"}), frozenset({"labels"}))
    needs = frozenset({"labels"})
    default_policy = {"robust_accuracy": Threshold(fail_below=0.3, warn_below=0.6)}

    @dataclass
    class Params:
        norms: list[Literal["linf", "l2"]] = field(default_factory=lambda: ["linf"])
        eps_linf: list[float] | None = None  # None: scaled to the data, as robustness.evasion
        eps_l2: list[float] | None = None
        attack: Literal["auto", "square", "hopskipjump"] = "auto"
        queries_per_sample: int = 1000
        query_budget: int | None = None  # total for this probe; default: what the target has left
        max_samples: int = 100
        n_examples: int = 4

    def _given(self, norm: str) -> list[float] | None:
        eps = self.params.eps_linf if norm == "linf" else self.params.eps_l2
        return None if eps is None else sorted(eps)

    def cost(self, target, data):
        p = self.params
        n = min(len(data), p.max_samples) if data is not None else p.max_samples
        per_eps = 1 if p.attack == "hopskipjump" else sum(len(self._given(nm) or [0, 0, 0]) for nm in p.norms)
        return {"queries": n * p.queries_per_sample * per_eps, "note": "upper bound; broken points stop early"}

    def run(self, ctx):
        p = self.params
        target, data = ctx.target, ctx.data
        attack = p.attack
        if attack == "auto":
            attack = "square" if SCORES in target.capabilities else "hopskipjump"
        if attack == "square" and SCORES not in target.capabilities:
            raise InputError("the Square attack needs scores but this target returns labels only; use attack=hopskipjump")
        for norm in ("linf", "l2"):
            given = self._given(norm)
            if given is not None and (not given or min(given) <= 0):
                raise InputError(f"give positive epsilons (eps_{norm}=...), or leave it unset for the data-scaled grid")
            if given is not None and norm not in p.norms:
                raise InputError(f"eps_{norm} is given but norms={p.norms}; add {norm} to norms or drop eps_{norm}")
        space = threat_space(data, target.bounds)
        idx = ctx.sample(p.max_samples)
        n = len(idx)
        x, y = space.to_space(data.x[idx]), data.y[idx]
        clean_wrong = ctx.clean_labels()[idx] != y
        charged_before = target.queries
        warnings: list[str] = []
        metrics: list[Metric] = []
        series, summary_bits = [], []
        used_total, exhausted = 0, False
        broken_any = clean_wrong.clone()
        x_adv = x.clone()
        rows_out = Outcomes()
        for norm in p.norms:
            eps_list = self._given(norm) or space.grid(norm)
            # p.query_budget caps the attack's own queries across norms; the target's hard budget is
            # enforced by the target itself (the attacks stop cleanly on BudgetExceeded)
            left = None if p.query_budget is None else p.query_budget - used_total
            robust, used, ex, broken, adv, extra = self._attack(ctx, attack, norm, eps_list, space, x, y, clean_wrong, left)
            ra = [float(m.double().mean()) for m in robust]
            used_total += used
            exhausted |= ex
            metrics += extra
            x_adv[broken & ~broken_any] = adv[broken & ~broken_any]
            broken_any |= broken
            for eps, r, mask in zip(eps_list, ra, robust):
                iv = clopper_pearson(int(mask.sum()), n)
                metrics.append(Metric.labelled("robust_accuracy", {"norm": norm, "eps": eps}, r, iv.low, iv.high, higher_is_better=True,
                                      method=iv.method, description=f"{attack}, {p.queries_per_sample} queries per sample; "
                                                                    f"eps in {space.unit}", keyed={"eps": ".4g"}))
                # per point, so two models attacked alike are compared point by point (McNemar)
                rows_out.recipe(metrics[-1], oc.mean(rows_out.bits(f"robust[{norm},eps={eps:.6g}]", "robust", mask)))
            series.append({"name": f"{attack} {norm}", "x": eps_list, "y": ra})
            summary_bits.append(f"{norm}: " + ", ".join(f"{r:.1%} at {e:.4g}" for e, r in zip(eps_list, ra)))
        # queries_used is what the target was charged (never above its budget); the attack may have
        # asked more, the rest answered from the target's cache or replayed from an earlier run
        charged = target.queries - charged_before + ctx.resumed_queries
        metrics.append(Metric("queries_used", float(charged), unit="queries",
                              description="queries charged to the target's budget by this probe"))
        cached = used_total != charged
        if cached:
            metrics.append(Metric("queries_issued", float(used_total), unit="queries",
                                  description="queries the attack asked; the difference was answered from the cache"))
        attacked = int((~clean_wrong).sum())
        metrics.append(Metric("queries_per_attacked_sample", used_total / max(attacked, 1), unit="queries"))
        if exhausted:
            warnings.append("the query budget ran out before every point was attacked with its full allowance: "
                            "robust accuracy is an upper bound; raise the budget for a tighter number")
        ex_idx = (broken_any & ~clean_wrong).nonzero().flatten()[: p.n_examples].tolist()
        evidence = [Evidence("curve", "Robust accuracy vs epsilon (black-box)",
                             {"xlabel": f"epsilon ({space.unit})", "ylabel": "robust accuracy", "logx": False,
                              "logy": False, "series": series})]
        labels_fn = space.wrap_fn(target.labels)
        if ex_idx and data.x.dim() == 4:
            pred = dict(zip(ex_idx, labels_fn(x_adv[ex_idx]).tolist())) if target.budget.can_afford(len(ex_idx)) else {i: -1 for i in ex_idx}
            ev = example_images(x, x_adv, y, pred, ex_idx, target.bounds, f"Black-box adversarial examples ({attack})")
            if ev is not None:
                evidence.append(ev)
        eps_all = {nm: self._given(nm) or space.grid(nm) for nm in p.norms}
        return self.finding(
            metrics=metrics, warnings=warnings, evidence=evidence,
            summary=(f"{attack} with {p.queries_per_sample} queries per sample: robust accuracy "
                     + "; ".join(summary_bits)
                     + f"; {charged} queries charged to the target"
                     + (f" ({used_total} asked, the rest answered from its cache)." if cached else ".")),
            accounting={"samples": n, "attack": attack, "eps": eps_all, **space.describe()},
            outcomes=rows_out.to_dict(),
        )


    def _attack(self, ctx, attack, norm, eps_list, space, x, y, clean_wrong, budget):
        """One norm: which points stayed robust at each epsilon, queries asked, whether a budget ran out,
        the broken mask, the adversarial inputs and any extra metrics."""
        from assay.attacks.hopskipjump import hop_skip_jump
        from assay.attacks.square import square

        p_n = len(x)
        target = ctx.target
        p = self.params
        labels_fn, raw_scores = space.wrap_fn(target.labels), space.wrap_fn(target.scores)
        bounds = space.bounds
        broken = clean_wrong.clone()
        x_adv = x.clone()
        used_total, exhausted, ra, extra = 0, False, [], []
        if attack == "hopskipjump":
            todo = (~broken).nonzero().flatten()
            out = ctx.unit(f"hsj-{norm}-n{len(todo)}", lambda: hop_skip_jump(
                labels_fn, x[todo], y[todo], norm=norm, max_queries=p.queries_per_sample, eps=None,
                bounds=bounds, seed=ctx.seed, query_budget=budget).to_dict())
            used_total = int(out["queries"].sum())
            exhausted = bool(out.get("budget_exhausted", False))
            norms = torch.full((p_n,), float("inf"))
            ok = out["success"].bool()
            norms[todo[ok]] = out["norms"][ok].float()
            x_adv[todo] = out["x_adv"]
            for eps in eps_list:
                ra.append(~(broken | (norms <= eps * (1 + 1e-5))))
            broken = broken | (norms <= eps_list[-1] * (1 + 1e-5))
            finite = norms[~clean_wrong & torch.isfinite(norms)]
            if len(finite):
                extra.append(Metric.labelled("median_norm_found", {"norm": norm}, float(finite.median()), unit=norm,
                                    description="median perturbation size HopSkipJump reached on points it broke"))
            return ra, used_total, exhausted, broken, x_adv, extra
        # Square works on image-shaped inputs; tabular rows are searched as 1 x F "images", where its
        # squares become single features (a random coordinate search)
        shape = tuple(x.shape[1:])
        as_image = (lambda z: z) if x.dim() == 4 else (lambda z: z.reshape(len(z), 1, 1, -1))
        scores_fn = raw_scores if x.dim() == 4 else (lambda z: raw_scores(z.reshape(len(z), *shape)))
        for eps in eps_list:
            todo = (~broken).nonzero().flatten()
            left = None if budget is None else budget - used_total
            target_left = target.budget.remaining
            if len(todo) and (left is None or left > 0) and (target_left is None or target_left > 0):
                out = ctx.unit(f"square-{norm}-{eps:.6g}-n{len(todo)}", lambda: square(
                    scores_fn, as_image(x[todo]), y[todo], eps=eps, norm=norm, n_queries=p.queries_per_sample,
                    bounds=bounds, seed=ctx.seed, query_budget=left,
                    progress=lambda done, total: ctx.progress(f"{norm} square search at eps={eps:.4g}", done, total)).to_dict())
                out["x_adv"] = out["x_adv"].reshape(len(todo), *shape)
                used_total += int(out["queries"].sum())
                exhausted |= bool(out.get("budget_exhausted", False))
                hit = out["success"].bool()
                x_adv[todo[hit]] = out["x_adv"][hit]
                broken[todo[hit]] = True
            elif len(todo):
                exhausted = True
            ra.append(~broken)
        return ra, used_total, exhausted, broken, x_adv, extra
