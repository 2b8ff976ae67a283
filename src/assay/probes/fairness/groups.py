"""``fairness.groups``: do outcomes and errors differ between sensitive groups?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay import outcomes as oc
from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.metrics.groups import CRITERIA, GroupMetrics
from assay.outcomes import Outcomes
from assay.probes.base import Probe, register

BINARY_CRITERIA = ("demographic_parity", "equalized_odds", "accuracy_parity")
MULTICLASS_CRITERIA = ("accuracy_parity",)


def _label(g) -> str:
    return " & ".join(str(v) for v in g) if isinstance(g, tuple) else str(g)


@register
class GroupFairness(Probe):
    name = "fairness.groups"
    axis = "fairness"
    title = "Group fairness"
    description = (
        "Metrics per sensitive group with bootstrap intervals; demographic parity, equalized odds and "
        "accuracy parity gaps with Holm-corrected significance tests; small groups flagged."
    )
    needs = frozenset({"labels", "groups"})
    accepts_text = True
    requires_any = (frozenset({"scores"}), frozenset({"labels"}))
    # a gap fails only when it is both large and statistically significant; a large gap that the data
    # cannot confirm is a warning (collect more data)
    default_policy = {
        "significant_demographic_parity_difference": Threshold(fail_above=0.1),
        "significant_equalized_odds_difference": Threshold(fail_above=0.1),
        "significant_accuracy_parity_difference": Threshold(fail_above=0.1),
        "demographic_parity_difference": Threshold(warn_above=0.1),
        "equalized_odds_difference": Threshold(warn_above=0.1),
        "accuracy_parity_difference": Threshold(warn_above=0.1),
    }

    @dataclass
    class Params:
        attributes: list[str] | None = None  # default: every sensitive attribute of the dataset
        intersectional: bool = True  # also judge the combination of all attributes
        n_boot: int = 1000
        level: float = 0.95
        alpha: float = 0.05
        min_group_size: int = 30
        pos_label: int = 1

    def run(self, ctx):
        p = self.params
        data = ctx.data
        names = p.attributes or sorted(data.groups)
        missing = [a for a in names if a not in data.groups]
        if missing:
            raise InputError(f"sensitive attribute(s) {missing} not in the dataset (it has {sorted(data.groups)}); fix --attributes")
        y_true = data.y.numpy()
        y_pred = ctx.clean_labels().numpy()
        binary = ctx.target.num_classes == 2
        criteria = BINARY_CRITERIA if binary else MULTICLASS_CRITERIA
        base = ["accuracy", "selection_rate", "tpr", "fpr"] if binary else ["accuracy"]

        analyses = [(a, {a: data.groups[a]}) for a in names]
        if p.intersectional and len(names) > 1:
            analyses.append(("+".join(names), {a: data.groups[a] for a in names}))

        finding_metrics, evidence, warnings, table_rows = [], [], [], []
        rows_out = Outcomes()
        rows_out.bits("correct", "correct", y_pred == y_true)
        rows_out.bits("selected", "selected", y_pred == p.pos_label)
        for label, feats in analyses:
            full = GroupMetrics(base + ["count"], y_true, y_pred, feats, pos_label=p.pos_label, min_group_size=p.min_group_size)
            full_iv = full.bootstrap(p.n_boot, level=p.level, seed=ctx.seed)
            low, high = full_iv.by_group
            cats = [_label(g) for g in full.groups]
            small = set(map(_label, full.small_groups))
            evidence.append(Evidence("bars", f"Metrics by group: {label}", {
                "ylabel": "rate",
                "categories": [f"{c} (n={int(n)}){' [small]' if c in small else ''}" for c, n in zip(cats, full.sizes)],
                "series": [{"name": m, "values": _floats(full.by_group[m]), "low": _floats(low[m]), "high": _floats(high[m])} for m in base],
            }))
            if small:
                warnings.append(
                    f"{label}: group(s) {sorted(small)} have fewer than {p.min_group_size} rows; shown but not judged"
                )
            keep = np.isin(full.group_index, [i for i, g in enumerate(full.groups) if _label(g) not in small])
            if len(np.unique(full.group_index[keep])) < 2:
                warnings.append(f"{label}: fewer than two groups of at least {p.min_group_size} rows; gaps not judged")
                continue
            sub_feats = {k: np.asarray(v)[keep] for k, v in feats.items()}
            metrics_needed = sorted({m for c in criteria for m in CRITERIA[c]})
            gm = GroupMetrics(metrics_needed, y_true[keep], y_pred[keep], sub_feats, pos_label=p.pos_label, min_group_size=p.min_group_size)
            iv = gm.bootstrap(p.n_boot, level=p.level, seed=ctx.seed + 1)
            diff_s, ratio_s = iv.difference_samples(), iv.ratio_samples()
            col = {m: i for i, m in enumerate(gm.metric_names)}
            d_point, r_point = gm.difference().to_numpy(), gm.ratio().to_numpy()
            recipes = _gap_recipes(rows_out, label, keep, gm.group_index, y_true == p.pos_label)
            for crit in criteria:
                idx = [col[m] for m in CRITERIA[crit]]
                worst = idx[int(np.nanargmax(d_point[idx]))]  # the metric with the largest gap decides
                d, r = float(np.nanmax(d_point[idx])), float(np.nanmin(r_point[idx]))
                d_lo, d_hi = _pct(np.nanmax(diff_s[:, idx], axis=1), p.level)
                r_lo, r_hi = _pct(np.nanmin(ratio_s[:, idx], axis=1), p.level)
                gap = gm.gap_test(gm.metric_names[worst], alpha=p.alpha)
                finding_metrics += [
                    Metric.labelled(f"{crit}_difference", {"attribute": label}, d, d_lo, d_hi, higher_is_better=False, level=p.level,
                           method="bootstrap (multinomial confusion cells)",
                           description=f"largest between-group gap in {', '.join(CRITERIA[crit])}"),
                    Metric.labelled(f"{crit}_ratio", {"attribute": label}, r, r_lo, r_hi, higher_is_better=True, level=p.level,
                           method="bootstrap (multinomial confusion cells)",
                           description=f"smallest between-group ratio of {', '.join(CRITERIA[crit])}"),
                    # the difference's interval goes with it only when it is reported; a 0 has none
                    Metric.labelled(f"significant_{crit}_difference", {"attribute": label}, d if gap["significant"] else 0.0,
                           *((d_lo, d_hi) if gap["significant"] else (None, None)),
                           higher_is_better=False, level=p.level, method=f"{gap['test']} test, Holm-corrected over pairs",
                           description="the gap when it is statistically significant at alpha, else 0"),
                ]
                rows_out.recipe(finding_metrics[-3], recipes[crit]("difference"))
                rows_out.recipe(finding_metrics[-2], recipes[crit]("ratio"))
                table_rows.append([
                    label, crit, round(d, 4), f"[{d_lo:.3f}, {d_hi:.3f}]", round(r, 4), f"[{r_lo:.3f}, {r_hi:.3f}]",
                    f"{gap['metric']}: {_label(gap['group_high'])} vs {_label(gap['group_low'])}",
                    float(f"{gap['p_adjusted']:.3g}"), gap["significant"],
                ])
        evidence.insert(0, Evidence("table", "Fairness criteria", {
            "columns": ["attribute", "criterion", "difference", "CI", "ratio", "CI", "largest gap", "p (Holm)", "significant"],
            "rows": table_rows,
        }))
        worst = max((m for m in finding_metrics if m.base_name.endswith("_difference") and not m.name.startswith("significant")),
                    key=lambda m: m.value, default=None)
        summary = (f"largest gap: {worst.name} = {worst.value:.3f} [{worst.low:.3f}, {worst.high:.3f}]" if worst
                   else "no attribute had two groups large enough to compare")
        return self.finding(metrics=finding_metrics, evidence=evidence, warnings=warnings, summary=summary,
                            accounting={"queries": 0, "n": len(y_true), "n_boot": p.n_boot}, outcomes=rows_out.to_dict())


def _gap_recipes(rows_out: Outcomes, label: str, keep: np.ndarray, group_index: np.ndarray, positive: np.ndarray):
    """Recipes of each criterion's gaps over one attribute's judged groups (rows of small groups are
    left out, as the probe leaves them out): the rates are per-row means within strata, TPR over the
    positives, FPR over the negatives."""
    strata = np.full(len(keep), -1, dtype=np.int64)
    strata[keep] = group_index
    g = rows_out.ints(f"group[{label}]", "group", strata)
    g_pos = rows_out.ints(f"group[{label},positive]", "group", np.where(positive, strata, -1))
    g_neg = rows_out.ints(f"group[{label},negative]", "group", np.where(positive, -1, strata))

    def pick(stat: str):
        return oc.most if stat == "difference" else oc.least

    return {
        "accuracy_parity": lambda stat: oc.gap("correct", g, stat),
        "demographic_parity": lambda stat: oc.gap("selected", g, stat),
        "equalized_odds": lambda stat: pick(stat)(oc.gap("selected", g_pos, stat), oc.gap("selected", g_neg, stat)),
    }


def _floats(series) -> list:
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(series, dtype=float)]


def _pct(samples: np.ndarray, level: float) -> tuple[float, float]:
    from assay.stats import interval_of

    iv = interval_of(samples, level)
    return iv.low, iv.high
