"""privacy.inversion: can a representative input of each class be reconstructed from the model?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from assay.attacks.extraction import build_surrogate, fit_classifier
from assay.attacks.inversion import identification, invert_blackbox, invert_whitebox
from assay.errors import InputError, NotApplicable
from assay.findings import Evidence, Metric, Threshold
from assay.probes.base import Probe, register
from assay.stats import bootstrap, clopper_pearson
from assay.targets.base import GRADIENTS, SCORES


def leakage_score(identified: int, n: int, num_classes: int, level: float = 0.95) -> float:
    """Chance-corrected, conservative identification: ``max(0, (L - 1/K) / (1 - 1/K))`` where ``L``
    is the Clopper-Pearson lower bound of the identification rate. 0 means "not distinguishable from
    guessing", 1 means "every reconstruction is recognisable"."""
    chance = 1.0 / num_classes
    low = clopper_pearson(identified, n, level).low
    return max(0.0, (low - chance) / (1.0 - chance))


@register
class InversionProbe(Probe):
    name = "privacy.inversion"
    axis = "privacy"
    title = "Model inversion (class representatives reconstructed from the model)"
    description = (
        "MIFace-style inversion: optimise an input per class to maximise the model's confidence under a "
        "smoothness prior (gradients when available, else NES estimates under a query budget); scores how "
        "recognisable the reconstructions are against the class means of the data and an independent classifier."
    )
    requires_any = (frozenset({GRADIENTS}), frozenset({SCORES}))
    needs = frozenset({"labels"})
    default_policy = {"inversion_leakage": Threshold(fail_above=0.5, warn_above=0.2)}

    @dataclass
    class Params:
        mode: Literal["auto", "whitebox", "blackbox"] = "auto"
        restarts: int = 2
        steps: int = 100
        step_size: float | None = None  # default: 5% of the bounds' width
        tv_weight: float = 0.05
        l2_weight: float = 0.05
        nes_samples: int = 10
        nes_sigma: float | None = None
        query_budget: int | None = 20000  # black-box only; capped by what the target has left
        eval_model: Literal["mlp", "linear"] = "mlp"  # the independent evaluation classifier
        eval_epochs: int = 30
        max_classes: int = 20

    def cost(self, target, data):
        p = self.params
        if target is None:  # listing before any model is given: the default path, black-box bound
            return {"queries": p.query_budget or 0, "note": "black-box budget; white-box: classes x restarts x steps"}
        k = min(target.num_classes, p.max_classes)
        if self._mode(target) == "whitebox":
            return {"queries": k * p.restarts * (p.steps + 1), "note": "gradient forward passes"}
        return {"queries": p.query_budget or 0, "note": "upper bound: the black-box query budget"}

    def _mode(self, target, masked: bool = False) -> str:
        mode = self.params.mode
        if mode == "auto":
            # gradients that are masked would make a white-box inversion fail where queries succeed
            usable = GRADIENTS in target.capabilities and not (masked and SCORES in target.capabilities)
            return "whitebox" if usable else "blackbox"
        if mode not in ("whitebox", "blackbox"):
            raise InputError(f"unknown inversion mode {mode!r}; use auto, whitebox or blackbox")
        if mode == "whitebox" and GRADIENTS not in target.capabilities:
            raise InputError("whitebox inversion needs gradients but this target has none; use mode=blackbox")
        if mode == "blackbox" and SCORES not in target.capabilities:
            raise InputError("blackbox inversion needs scores but this target returns labels only")
        return mode

    def run(self, ctx):
        p = self.params
        target, data = ctx.target, ctx.data
        masking = ctx.facts.get("gradient_masking")
        mode = self._mode(target, masked=bool(masking))
        k = target.num_classes
        if k > p.max_classes:
            raise NotApplicable(f"the target has {k} classes, more than max_classes={p.max_classes}; raise max_classes "
                                "(--param privacy.inversion.max_classes=N) to invert them all")
        present = torch.bincount(data.y, minlength=k) > 0
        if int(present.sum()) < 2:
            raise NotApplicable("inversion needs labelled data of at least two classes to score reconstructions")
        classes = present.nonzero().flatten()
        x = data.x.float()
        class_means = torch.stack([x[data.y == c].mean(0) if present[c] else x.mean(0) for c in range(k)])
        global_mean = x.mean(0)
        lo, hi = target.bounds
        # the prior's centre: the bounds' middle (data-free, as in MIFace); the data's overall mean
        # when inputs are unbounded (an attacker's population-level knowledge, the same for every class)
        center = global_mean if not (math.isfinite(lo) and math.isfinite(hi)) else None
        scale = None if center is None else float(x.std())
        step = p.step_size if p.step_size is not None else (None if scale is None else 0.05 * scale)
        common = dict(classes=classes, steps=p.steps, step_size=step, tv_weight=p.tv_weight, l2_weight=p.l2_weight,
                      restarts=p.restarts, bounds=target.bounds, center=center, seed=ctx.seed)
        warnings: list[str] = []
        if masking:
            warnings.append(f"gradient masking was found on this model ({masking}): a white-box inversion would "
                            "understate the leakage" + (", so the black-box (query-based) inversion ran instead"
                                                        if mode == "blackbox" else "; whitebox was requested explicitly"))
        if mode == "whitebox":
            out = ctx.unit(f"whitebox-k{len(classes)}-r{p.restarts}-s{p.steps}", lambda: _as_unit(invert_whitebox(
                target.module, k, target.input_shape, **common)))
        else:
            budget = p.query_budget
            left = target.budget.remaining
            if left is not None:
                budget = left if budget is None else min(budget, left)
            if budget is None:
                raise InputError("blackbox inversion needs a query budget; pass query_budget=N")
            sigma = p.nes_sigma if p.nes_sigma is not None else (None if scale is None else 0.05 * scale)
            out = ctx.unit(f"blackbox-k{len(classes)}-r{p.restarts}-b{budget}", lambda: _as_unit(invert_blackbox(
                target.scores, k, target.input_shape, query_budget=budget, output=target.output,
                samples=p.nes_samples, sigma=sigma, **common)))
            if out["budget_exhausted"]:
                warnings.append(f"the query budget allowed {out['steps']} of {p.steps} NES steps: reconstructions "
                                "may be under-optimised, so leakage is a lower bound; raise query_budget")
        recon = out["x"].reshape(-1, *target.input_shape)
        recon_class = classes.repeat(p.restarts)
        n = len(recon)

        identified, sim_margin = identification(recon, recon_class, class_means, global_mean)
        n_id = int(identified.sum())
        id_iv = clopper_pearson(n_id, n)
        leak = leakage_score(n_id, n, len(classes))
        margin_iv = bootstrap(lambda m: float(m.mean()), sim_margin.numpy(), seed=ctx.seed)

        # an independent judge: different architecture and seed than anything the target used
        # inputs are standardised only when unbounded: on bounded images, standardising would blow up
        # pixels that are constant in the data (blank borders) and make the judge brittle off-manifold
        stats = {} if center is None else {"mean": global_mean.flatten(), "std": x.flatten(1).std(0)}
        # deterministic from the seed and cheap, so retrained on resume rather than checkpointed
        judge_model = fit_classifier(
            build_surrogate(p.eval_model, target.input_shape, k, seed=ctx.seed + 7919, **stats),
            x, data.y, epochs=p.eval_epochs, seed=ctx.seed + 7919)
        with torch.no_grad():
            judged = judge_model(recon).argmax(dim=1) == recon_class
        n_judged = int(judged.sum())
        judge_iv = clopper_pearson(n_judged, n)
        conf = out["confidence"].reshape(-1)
        conf = conf[torch.isfinite(conf)]

        chance = 1.0 / len(classes)
        metrics = [
            Metric("inversion_leakage", leak, unit="", higher_is_better=False, method="clopper-pearson lower bound, chance-corrected",
                   description="(lower 95% bound of the identification rate - chance) / (1 - chance), floored at 0"),
            Metric("identification_rate", n_id / n, id_iv.low, id_iv.high, higher_is_better=False, method=id_iv.method,
                   description=f"reconstructions closest (centred cosine) to their own class mean; chance {chance:.3g}"),
            Metric("judge_accuracy", n_judged / n, judge_iv.low, judge_iv.high, higher_is_better=False,
                   method=judge_iv.method,
                   description=f"an independent {p.eval_model} trained on the data labels reconstructions as their class"),
            Metric("similarity_margin", float(sim_margin.mean()), margin_iv.low, margin_iv.high, higher_is_better=False,
                   method=margin_iv.method,
                   description="mean cosine similarity to the own class mean minus to the other class means"),
        ]
        if len(conf):
            metrics.append(Metric("target_confidence", float(conf.mean()), unit="probability",
                                  description="mean probability the target gives the class at its reconstruction"))
        metrics.append(Metric("queries_used", float(out["queries"]), unit="queries"))
        evidence = [_images(out["x"], classes, class_means, target.bounds, identified.reshape(p.restarts, -1)),
                    Evidence("table", "Reconstructions per class", {
                        "columns": ["class", "identified", "judge correct", "similarity margin", "target confidence"],
                        "rows": _rows(classes, identified, judged, sim_margin, out["confidence"].reshape(-1), p.restarts)})]
        return self.finding(
            metrics=metrics, warnings=warnings, evidence=[e for e in evidence if e is not None],
            summary=(f"{mode} inversion of {len(classes)} classes x {p.restarts} restarts: {n_id}/{n} reconstructions "
                     f"identified by their class mean (chance {chance:.0%}), {n_judged}/{n} by an independent "
                     f"{p.eval_model}; leakage score {leak:.2f}; {out['queries']} queries."),
            accounting={"mode": mode, "steps": out["steps"], "classes": len(classes), "restarts": p.restarts},
        )


def _as_unit(res) -> dict:
    return {"x": res.x, "confidence": res.confidence, "queries": res.queries, "steps": res.steps,
            "budget_exhausted": bool(res.info.get("budget_exhausted", False))}


def _rows(classes, identified, judged, sim_margin, conf, restarts):
    rows = []
    k = len(classes)
    for j, c in enumerate(classes.tolist()):
        sel = torch.arange(restarts) * k + j
        cf = conf[sel]
        cf = cf[torch.isfinite(cf)]
        rows.append([c, f"{int(identified[sel].sum())}/{restarts}", f"{int(judged[sel].sum())}/{restarts}",
                     f"{float(sim_margin[sel].mean()):.3f}", f"{float(cf.mean()):.3f}" if len(cf) else "n/a"])
    return rows


def _images(recon, classes, class_means, bounds, identified) -> Evidence | None:
    """One row per class: the class mean from the data, then each restart's reconstruction."""
    if recon.dim() != 5 or recon.shape[2] not in (1, 3):  # (restarts, K, C, H, W) images only
        return None
    from assay.images import to_png_b64

    lo, hi = bounds
    span = (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (float(class_means.min()), float(class_means.max()))
    rows = []
    for j, c in enumerate(classes.tolist()):
        imgs = [{"label": "class mean (data)", "png": to_png_b64(class_means[c].numpy(), value_range=span)}]
        for r in range(recon.shape[0]):
            mark = "identified" if bool(identified[r, j]) else "not identified"
            imgs.append({"label": f"restart {r} ({mark})", "png": to_png_b64(recon[r, j].numpy(), value_range=span)})
        rows.append({"caption": f"class {c}", "images": imgs})
    return Evidence("images", "Reconstructions next to the class mean", {"rows": rows})
