"""robustness.blackbox: score-based and label-only attacks under a hard query budget."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from assay.attacks.base import check_norm
from assay.errors import InputError
from assay.probes.base import Evidence, Metric, Probe, Threshold, register
from assay.probes.robustness._evidence import example_images
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
        norm: str = "linf"
        eps: list[float] = field(default_factory=lambda: [8 / 255])
        attack: str = "auto"  # auto | square | hopskipjump
        queries_per_sample: int = 1000
        query_budget: int | None = None  # total for this probe; default: what the target has left
        max_samples: int = 100
        n_examples: int = 4

    def cost(self, target, data):
        p = self.params
        n = min(len(data), p.max_samples) if data is not None else p.max_samples
        per_eps = 1 if p.attack == "hopskipjump" else len(p.eps)
        return {"queries": n * p.queries_per_sample * per_eps, "note": "upper bound; broken points stop early"}

    def run(self, ctx):
        from assay.attacks.hopskipjump import hop_skip_jump
        from assay.attacks.square import square

        p = self.params
        norm = check_norm(p.norm)
        target, data = ctx.target, ctx.data
        attack = p.attack
        if attack == "auto":
            attack = "square" if SCORES in target.capabilities else "hopskipjump"
        if attack not in ("square", "hopskipjump"):
            raise InputError(f"unknown black-box attack {p.attack!r}; use auto, square or hopskipjump")
        if attack == "square" and SCORES not in target.capabilities:
            raise InputError("the Square attack needs scores but this target returns labels only; use attack=hopskipjump")
        if not p.eps:
            raise InputError("give at least one epsilon (eps=...)")
        n = min(len(data), p.max_samples)
        x, y = data.x[:n], data.y[:n]
        clean_wrong = ctx.clean_labels()[:n] != y
        # p.query_budget caps the attack's own queries; the target's hard budget is enforced by the
        # target itself (the attacks stop cleanly on BudgetExceeded). Not pre-capping the attack by the
        # target's remaining budget matters for cached targets: repeated queries cost nothing there.
        budget = p.query_budget
        charged_before = target.queries
        warnings: list[str] = []
        metrics: list[Metric] = []
        eps_list = sorted(p.eps)
        broken = clean_wrong.clone()
        x_adv = x.clone()
        used_total = 0
        ra = []
        exhausted = False

        if attack == "hopskipjump":
            todo = (~broken).nonzero().flatten()
            out = ctx.unit(f"hsj-{norm}-n{len(todo)}", lambda: hop_skip_jump(
                target.labels, x[todo], y[todo], norm=norm, max_queries=p.queries_per_sample, eps=None,
                bounds=target.bounds, seed=ctx.seed, query_budget=budget).to_dict())
            used_total = int(out["queries"].sum())
            exhausted = bool(out.get("budget_exhausted", False))
            norms = torch.full((n,), float("inf"))
            ok = out["success"].bool()
            norms[todo[ok]] = out["norms"][ok].float()
            x_adv[todo] = out["x_adv"]
            for eps in eps_list:
                b = broken | (norms <= eps * (1 + 1e-5))
                ra.append(1 - b.float().mean().item())
            broken = broken | (norms <= eps_list[-1] * (1 + 1e-5))
            finite = norms[~clean_wrong & torch.isfinite(norms)]
            if len(finite):
                metrics.append(Metric(f"median_norm_found[{norm}]", float(finite.median()), unit=norm,
                                      description="median perturbation size HopSkipJump reached on points it broke"))
        else:
            # Square works on image-shaped inputs; tabular rows are searched as 1 x F "images",
            # where its squares become single features (a random coordinate search).
            shape = tuple(x.shape[1:])
            as_image = (lambda z: z) if x.dim() == 4 else (lambda z: z.reshape(len(z), 1, 1, -1))
            scores_fn = target.scores if x.dim() == 4 else (lambda z: target.scores(z.reshape(len(z), *shape)))
            for eps in eps_list:
                todo = (~broken).nonzero().flatten()
                left = None if budget is None else budget - used_total
                target_left = target.budget.remaining
                if len(todo) and (left is None or left > 0) and (target_left is None or target_left > 0):
                    out = ctx.unit(f"square-{norm}-{eps:.6g}-n{len(todo)}", lambda: square(
                        scores_fn, as_image(x[todo]), y[todo], eps=eps, norm=norm, n_queries=p.queries_per_sample,
                        bounds=target.bounds, seed=ctx.seed, query_budget=left).to_dict())
                    out["x_adv"] = out["x_adv"].reshape(len(todo), *shape)
                    used_total += int(out["queries"].sum())
                    exhausted |= bool(out.get("budget_exhausted", False))
                    hit = out["success"].bool()
                    x_adv[todo[hit]] = out["x_adv"][hit]
                    broken[todo[hit]] = True
                elif len(todo):
                    exhausted = True
                ra.append(1 - broken.float().mean().item())
        for eps, r in zip(eps_list, ra):
            k = round(r * n)
            iv = clopper_pearson(k, n)
            metrics.append(Metric(f"robust_accuracy[{norm},eps={eps:.4g}]", r, iv.low, iv.high, higher_is_better=True,
                                  method=iv.method, description=f"{attack}, {p.queries_per_sample} queries per sample"))
        metrics.append(Metric("queries_used", float(used_total), unit="queries"))
        charged = target.queries - charged_before
        cached = 0 < charged != used_total  # a cache (HttpTarget) answered the difference
        if cached:
            metrics.append(Metric("queries_charged", float(charged), unit="queries",
                                  description="queries that reached the target and counted against its budget"))
        attacked = int((~clean_wrong).sum())
        metrics.append(Metric("queries_per_attacked_sample", used_total / max(attacked, 1), unit="queries"))
        if exhausted:
            warnings.append("the query budget ran out before every point was attacked with its full allowance: "
                            "robust accuracy is an upper bound; raise the budget for a tighter number")
        ex_idx = (broken & ~clean_wrong).nonzero().flatten()[: p.n_examples].tolist()
        evidence = [Evidence("curve", "Robust accuracy vs epsilon (black-box)",
                             {"xlabel": "epsilon", "ylabel": "robust accuracy", "logx": False, "logy": False,
                              "series": [{"name": f"{attack} {norm}", "x": eps_list, "y": ra}]})]
        if ex_idx:
            pred = dict(zip(ex_idx, target.labels(x_adv[ex_idx]).tolist())) if target.budget.can_afford(len(ex_idx)) else {i: -1 for i in ex_idx}
            ev = example_images(x, x_adv, y, pred, ex_idx, target.bounds, f"Black-box adversarial examples ({attack})")
            if ev is not None:
                evidence.append(ev)
        return self.finding(
            metrics=metrics, warnings=warnings, evidence=evidence,
            summary=(f"{attack} ({norm}) with {p.queries_per_sample} queries per sample: robust accuracy "
                     + ", ".join(f"{r:.1%} at eps {e:.4g}" for e, r in zip(eps_list, ra))
                     + f"; {used_total} queries used"
                     + (f" ({charged} charged to the target, the rest answered from its cache)." if cached else ".")),
            accounting={"samples": n, "attack": attack},
        )

