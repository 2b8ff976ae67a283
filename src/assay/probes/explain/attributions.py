"""``explain.attributions``: which input features drive the predictions, and can the explanation be trusted?"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch

from assay.errors import InputError
from assay.explain.attributions import (
    deletion_insertion,
    integrated_gradients,
    occlusion,
    permutation_importance,
    randomization_check,
    saliency,
    smoothgrad,
)
from assay.findings import Evidence, Metric, Threshold
from assay.images import heatmap_png_b64, to_png_b64
from assay.probes.base import Probe, register
from assay.stats import interval_of, row_bootstrap_weights
from assay.targets.base import GRADIENTS

GRADIENT_METHODS = ("integrated_gradients", "saliency", "smoothgrad")


def _mean_ci(values: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float, float]:
    """Mean over inputs with a row-bootstrap percentile interval (vectorised)."""
    v = np.asarray(values, dtype=np.float64)
    w = np.concatenate(list(row_bootstrap_weights(len(v), n_boot, np.random.default_rng(seed))))
    iv = interval_of(w @ v / len(v), level)
    return float(v.mean()), iv.low, iv.high


def _image_payload(img: np.ndarray, bounds) -> dict:
    return {"png": to_png_b64(img, value_range=bounds)}


def _heatmap_payload(attr: np.ndarray) -> dict:
    """Signed attribution summed over channels, diverging colours centred on zero."""
    return {"png": heatmap_png_b64(attr)}


@register
class Attributions(Probe):
    name = "explain.attributions"
    axis = "explain"
    title = "Attributions"
    description = (
        "Integrated gradients (or saliency / SmoothGrad; occlusion or permutation importance for "
        "black-box models) with a completeness check, the model-randomization sanity check and "
        "deletion / insertion faithfulness curves."
    )
    requires_any = (frozenset({"gradients"}), frozenset({"scores"}))
    needs = frozenset({"labels"})
    # a randomization correlation near 1 means the explanation barely depends on the learned weights
    default_policy = {"randomization_rank_correlation": Threshold(warn_above=0.5)}

    @dataclass
    class Params:
        method: Literal["auto", "integrated_gradients", "saliency", "smoothgrad", "occlusion", "permutation"] = "auto"
        n_samples: int = 32
        n_steps: int = 50
        quadrature: Literal["gausslegendre", "riemann_trapezoid"] = "gausslegendre"
        internal_batch_size: int = 512
        randomization: Literal["cascading", "independent"] = "cascading"
        randomization_steps: int = 16  # IG steps for the randomized copies (rank correlations need no more)
        curve_steps: int = 20
        show: int = 6
        n_boot: int = 1000
        level: float = 0.95

    def cost(self, target, data):
        p = self.params
        n = min(p.n_samples, len(data)) if data is not None else p.n_samples
        return {"queries": n * (p.n_steps + 2) + 2 * (p.curve_steps + 1) * n,
                "note": "IG path points plus deletion/insertion curves"}

    def _method(self, target, data, masked: bool = False) -> str:
        m = self.params.method
        white = GRADIENTS in target.capabilities and not masked
        if m == "auto":
            return "integrated_gradients" if white else ("occlusion" if data.x.dim() == 4 else "permutation")
        if m in GRADIENT_METHODS and not white:
            raise InputError(f"method {m} needs gradients; this target is black-box: use method=occlusion or permutation")
        if m not in GRADIENT_METHODS + ("occlusion", "permutation"):
            raise InputError(f"method={m!r}; use auto, {', '.join(GRADIENT_METHODS)}, occlusion or permutation")
        return m

    def run(self, ctx):
        p = self.params
        t, data = ctx.target, ctx.data
        masking = ctx.facts.get("gradient_masking")
        method = self._method(t, data, masked=bool(masking) and GRADIENTS in t.capabilities)
        idx = ctx.sample(p.n_samples, salt=11)
        n = len(idx)
        x, y = data.x[idx], data.y[idx]
        pred = ctx.clean_labels()[idx]
        metrics, evidence, warnings = [], [], []
        if masking:
            warnings.append(f"gradient masking was found on this model ({masking}): gradient-based attributions "
                            "would not reflect what drives its decisions"
                            + (f", so the black-box {method} method ran instead" if method in ("occlusion", "permutation")
                               else f"; {method} was requested explicitly, treat it with care"))
        q0 = t.queries

        if method == "permutation":
            drop, std = permutation_importance(t, data.x, data.y, seed=ctx.seed)
            names = data.feature_names or [f"x{i}" for i in range(data.x.shape[1])]
            order = np.argsort(-drop)[:30]
            evidence.append(Evidence("bars", "Permutation importance (accuracy drop)", {
                "ylabel": "accuracy drop", "categories": [names[i] for i in order],
                "series": [{"name": "mean over repeats", "values": drop[order].tolist(),
                            "low": (drop - std)[order].tolist(), "high": (drop + std)[order].tolist()}]}))
            metrics.append(Metric("top_feature_importance", float(drop.max()), description=f"accuracy drop of {names[int(drop.argmax())]}"))
            return self.finding(metrics=metrics, evidence=evidence, summary=f"most important feature: {names[int(drop.argmax())]}",
                                accounting={"queries": t.queries - q0, "method": method})

        if method == "occlusion":
            attr = occlusion(t, x, pred)
        else:
            mod = t.module
            if method == "integrated_gradients":
                attr, delta = integrated_gradients(mod, x, pred, n_steps=p.n_steps, method=p.quadrature,
                                                   internal_batch_size=p.internal_batch_size)
                gap = (delta.abs()).detach().cpu().numpy()
                v, lo, hi = _mean_ci(gap, p.n_boot, p.level, ctx.seed)
                metrics.append(Metric("completeness_gap", v, lo, hi, unit="logit", higher_is_better=False, level=p.level,
                                      method="bootstrap over inputs",
                                      description="mean |sum(attr) - (f(x) - f(baseline))| (quadrature error)"))
            elif method == "saliency":
                attr = saliency(mod, x, pred)
            else:
                attr = smoothgrad(mod, x, pred, bounds=t.bounds, seed=ctx.seed, internal_batch_size=p.internal_batch_size)
            attr = attr.detach().cpu()
            self._randomization(ctx, method, x, pred, attr, metrics, evidence)

        # faithfulness: deletion / insertion by the attribution ranking vs a random ranking
        # deleted features take the low bound (black, for images); unbounded features take their mean
        baseline = float(t.bounds[0]) if np.isfinite(t.bounds[0]) else data.x.mean(0)
        curves = deletion_insertion(t, x, pred, attr.abs(), steps=p.curve_steps, baseline=baseline)
        rand = torch.rand(attr.shape, generator=ctx.generator(13))
        curves_r = deletion_insertion(t, x, pred, rand, steps=p.curve_steps, baseline=baseline)
        for key, better in (("deletion_auc", False), ("insertion_auc", True)):
            v, lo, hi = _mean_ci(curves[key], p.n_boot, p.level, ctx.seed)
            vr = float(curves_r[key].mean())
            metrics.append(Metric(key, v, lo, hi, higher_is_better=better, level=p.level, method="bootstrap over inputs",
                                  description=f"area under the predicted-class probability curve (random order: {vr:.3f})"))
        fr = curves["fraction"].tolist()
        evidence.append(Evidence("curve", "Deletion and insertion (faithfulness)", {
            "xlabel": "fraction of features deleted / inserted", "ylabel": "predicted-class probability", "logx": False, "logy": False,
            "series": [{"name": f"deletion ({method})", "x": fr, "y": curves["deletion"].mean(0).tolist()},
                       {"name": "deletion (random)", "x": fr, "y": curves_r["deletion"].mean(0).tolist()},
                       {"name": f"insertion ({method})", "x": fr, "y": curves["insertion"].mean(0).tolist()},
                       {"name": "insertion (random)", "x": fr, "y": curves_r["insertion"].mean(0).tolist()}]}))

        if data.kind == "image" and x.dim() == 4:
            rows = []
            for i in range(min(p.show, n)):
                rows.append({"caption": f"label {int(y[i])}, predicted {int(pred[i])}",
                             "images": [{"label": "input", **_image_payload(x[i].numpy(), t.bounds)},
                                        {"label": f"{method} (red +, blue -)", **_heatmap_payload(attr[i].numpy())}]})
            evidence.insert(0, Evidence("images", f"{method} attributions", {"rows": rows}))
        else:
            imp = attr.abs().reshape(n, -1).mean(0).numpy()
            names = data.feature_names or [f"x{i}" for i in range(len(imp))]
            order = np.argsort(-imp)[:30]
            evidence.insert(0, Evidence("bars", f"Mean |{method}| per feature", {
                "ylabel": "mean |attribution|", "categories": [names[i] for i in order],
                "series": [{"name": method, "values": imp[order].tolist()}]}))
        ins = next(m for m in metrics if m.name == "insertion_auc")
        dele = next(m for m in metrics if m.name == "deletion_auc")
        summary = f"{method} on {n} inputs: deletion AUC {dele.value:.3f}, insertion AUC {ins.value:.3f}"
        rc = [m for m in metrics if m.base_name == "randomization_rank_correlation"]
        if rc:
            summary += f"; randomization-check rank correlation {rc[0].value:.2f}"
        return self.finding(metrics=metrics, evidence=evidence, warnings=warnings, summary=summary,
                            accounting={"queries": t.queries - q0, "method": method, "n": n})

    def _randomization(self, ctx, method, x, pred, attr, metrics, evidence):
        """Adebayo et al.'s check on an uncounted copy of the network (the target itself is not queried)."""
        p = self.params
        net = ctx.target.net if hasattr(ctx.target, "net") else None
        if net is None:
            return
        fns = {
            "integrated_gradients": lambda m, xx, tt: integrated_gradients(m, xx, tt, n_steps=p.randomization_steps, method=p.quadrature,
                                                                            internal_batch_size=p.internal_batch_size)[0],
            "saliency": partial(saliency),
            "smoothgrad": lambda m, xx, tt: smoothgrad(m, xx, tt, bounds=ctx.target.bounds, seed=ctx.seed,
                                                       internal_batch_size=p.internal_batch_size),
        }
        series = []
        for name in dict.fromkeys([method, "saliency"]):  # the method shown, and saliency as a reference
            steps = randomization_check(net, x.to(ctx.target.device), pred, fns[name], mode=p.randomization, seed=ctx.seed,
                                        reference=None)
            v, lo, hi = _mean_ci(steps[-1]["rho"], p.n_boot, p.level, ctx.seed)
            metrics.append(Metric.labelled("randomization_rank_correlation", {"method": name}, v, lo, hi, higher_is_better=False, level=p.level,
                                  method="bootstrap over inputs",
                                  description=f"Spearman correlation of |attributions|, trained vs all layers randomized ({p.randomization})"))
            series.append({"name": name, "x": list(range(1, len(steps) + 1)), "y": [s["mean"] for s in steps]})
        evidence.append(Evidence("curve", f"Model-randomization check ({p.randomization}, from the output layer)", {
            "xlabel": "layers randomized", "ylabel": "Spearman rank correlation with trained", "logx": False, "logy": False,
            "series": series}))
