"""``fairness.slices``: are there subgroups (feature values, bins, pairs) where the model does worse?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from assay.findings import Evidence, Metric, Threshold
from assay.metrics.slices import find_slices
from assay.probes.base import Probe, register
from assay.targets.base import SCORES


def slice_features(data) -> tuple[np.ndarray | dict, list[str]]:
    """Columns to slice on: the tabular features (or, for images, ink mass and mean row/column of
    ink) and every sensitive attribute. Never the true label: a slice "label = hard class" would
    flag every model with hard examples; the label instead stratifies the test (see find_slices)."""
    if data.kind == "text":
        return _text_slice_features(data)
    cols: dict[str, np.ndarray] = {}
    x = data.x.numpy()
    if data.kind == "tabular" and x.ndim == 2:
        names = data.feature_names or [f"x{i}" for i in range(x.shape[1])]
        for i, nm in enumerate(names):
            cols[nm] = x[:, i]
    else:
        flat = x.reshape(len(x), -1)
        cols["ink"] = flat.sum(1)
        if x.ndim == 4:  # centre of mass of the image, rows and columns
            img = x.sum(1)
            mass = img.sum((1, 2)) + 1e-12
            cols["ink_row"] = (img.sum(2) * np.arange(img.shape[1])).sum(1) / mass
            cols["ink_col"] = (img.sum(1) * np.arange(img.shape[2])).sum(1) / mass
    for k, v in data.groups.items():
        cols[f"group:{k}"] = np.asarray(v).astype(str)
    return cols, list(cols)


def _text_slice_features(data) -> tuple[dict, list[str]]:
    """Text data: simple features of the input (length in words, mean word length, non-ASCII
    characters; :func:`assay.data.text.text_features`) and the sensitive attributes, never the label."""
    from assay.data.text import text_features

    cols: dict[str, np.ndarray] = dict(text_features(data.x))
    for k, v in data.groups.items():
        cols[f"group:{k}"] = np.asarray(v).astype(str)
    return cols, list(cols)


@register
class SliceFinding(Probe):
    name = "fairness.slices"
    axis = "fairness"
    title = "Underperforming slices"
    description = (
        "Searches feature values, quantile bins and pairs of them (inputs and sensitive attributes) for "
        "subgroups whose accuracy is significantly below the rest on the same classes at the same model "
        "confidence (Cochran-Mantel-Haenszel test, Benjamini-Hochberg), ranked by the gap."
    )
    needs = frozenset({"labels"})
    accepts_text = True
    requires_any = (frozenset({"scores"}), frozenset({"labels"}))
    # Fairness fails on sensitive groups only: an input region where the model does worse (a model that
    # overfits one corner of feature space) is worth a warning, not a fairness failure. Any slice that
    # survives Benjamini-Hochberg warns; the failure judges the whole interval of the worst group
    # slice, since the worst of hundreds of slices is biased upwards by its selection.
    default_policy = {
        "significant_slices": Threshold(warn_above=0),
        "worst_slice_gap": Threshold(warn_above=0.1),
        "worst_group_slice_gap": Threshold(warn_above=0.1, fail_above=0.25, on="interval"),
    }

    @dataclass
    class Params:
        metric: Literal["accuracy", "tpr", "tnr", "ppv"] = "accuracy"
        max_order: int = 2
        bins: int = 4
        min_size: int = 30
        alpha: float = 0.05
        top: int = 20
        confidence_bins: int = 10  # 0: compare within true classes only

    @staticmethod
    def _strata(ctx, bins: int) -> np.ndarray:
        """True class, crossed with the model's confidence decile when it gives scores: a slice is
        compared with the rest on the same class AND at the same confidence. Regions that are simply
        hard (the model is rightly unsure there) are then not flagged; regions where the model is
        worse than it is elsewhere at the same confidence (confidently wrong for a group) are."""
        y = ctx.data.y.numpy().astype(np.int64)
        if bins <= 1 or SCORES not in ctx.target.capabilities:
            return y
        from assay.probes.reliability._common import clean_probs

        conf = clean_probs(ctx).max(1).values.numpy()
        edges = np.unique(np.quantile(conf, np.linspace(0, 1, bins + 1)[1:-1]))
        return y * (len(edges) + 1) + np.searchsorted(edges, conf)

    @staticmethod
    def _gap_metric(name: str, sig: list, metric: str, what: str) -> Metric:
        if not sig:
            return Metric(name, 0.0, higher_is_better=False, description=f"no significant slice among {what}")
        s = max(sig, key=lambda s: s.effect)
        # Wald interval of the gap between the slice and what it would have scored as the rest
        se = np.sqrt(s.metric * (1 - s.metric) / s.size + s.complement_metric * (1 - s.complement_metric) / max(1, s.complement_size))
        return Metric(name, s.effect, s.effect - 1.96 * se, s.effect + 1.96 * se, higher_is_better=False,
                      method="Wald difference of proportions",
                      description=f"{metric} gap of '{s.description}' against the rest on the same classes at the same "
                                  f"confidence ({what})")

    def run(self, ctx):
        import pandas as pd

        p = self.params
        cols, names = slice_features(ctx.data)
        rep = find_slices(pd.DataFrame(cols), ctx.data.y.numpy(), ctx.clean_labels().numpy(), metric=p.metric,
                          max_order=p.max_order, bins=p.bins, min_size=p.min_size, alpha=p.alpha,
                          strata=self._strata(ctx, p.confidence_bins))
        sig = rep.significant
        metrics = [Metric("significant_slices", float(len(sig)), unit="slices", higher_is_better=False,
                          description=f"slices with BH-adjusted p < {p.alpha} out of {rep.n_tested} tested")]
        metrics.append(self._gap_metric("worst_slice_gap", sig, p.metric, "any slice"))
        if ctx.data.groups:
            grouped = [s for s in sig if any(f.startswith("group:") for f, _ in s.conditions)]
            metrics.append(self._gap_metric("worst_group_slice_gap", grouped, p.metric,
                                            "slices defined by (or including) a sensitive attribute"))
        summary = (f"{len(sig)} significant slice(s) of {rep.n_tested}; worst: {sig[0].description} "
                   f"({p.metric} {sig[0].metric:.3f} vs {sig[0].complement_metric:.3f})" if sig
                   else f"no slice of {rep.n_tested} tested is significantly worse")
        return self.finding(metrics=metrics, summary=summary,
                            evidence=[Evidence("table", f"Slices ranked by {p.metric} gap", rep.table(p.top))],
                            accounting={"queries": 0, "features": names, "n_tested": rep.n_tested,
                                        "n_too_small": rep.n_too_small})
