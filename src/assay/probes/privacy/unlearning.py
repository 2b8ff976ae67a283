"""``privacy.unlearning``: after a model is said to have forgotten some records, can a membership
attack still tell those records from data it never saw?

Data: ``data.groups["unlearning_split"]`` names each row ``"forget"`` (the records the model should
have forgotten), ``"retain"`` (still in the training set) or ``"heldout"`` (never trained on).
The attacks score every row; the evaluation compares forget (positives) with heldout (negatives).
Reference models for LiRA / RMIA train on balanced halves of all rows, as in
``privacy.membership``.

A model retrained from scratch without the forget set is the gold standard. Give it as
``retrained_model`` (a path loaded with ``assay.targets.loading.load_target`` with the unlearned
target's input shape, classes and bounds; ``retrained_factory`` names the module factory that
safetensors weights need) or, in Python, ``UnlearningProbe(retrained_target=TorchTarget(...))``; the probe then
reports the gap ``AUC(unlearned) - AUC(retrained)`` per attack and judges the gap, because a forget
set that differs in distribution from heldout data (a whole class, one user) is told apart even
by the retrained model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from assay.errors import InputError, NotApplicable
from assay.findings import Finding, Metric, Threshold
from assay.probes.base import Probe, register
from assay.probes.privacy import _shared as sh
from assay.targets.base import LABELS, SCORES

SPLIT_COLUMN = "unlearning_split"
SPLITS = ("forget", "retain", "heldout")


@register
class UnlearningProbe(Probe):
    """Membership attacks on the forget set versus held-out data, against an unlearned model.

    Default policy: without a retrained model, fail when the worst attack's TPR at 1% FPR exceeds
    0.10 or its AUC exceeds 0.70 (warn above 0.03 / 0.60); with one, fail when the unlearned
    model's AUC exceeds the retrained model's by more than 0.08 (warn above 0.03).
    """

    name = "privacy.unlearning"
    axis = "privacy"
    title = "Unlearning verification"
    description = "does a membership attack still separate the forget set from held-out data?"
    requires_any = (frozenset({SCORES}), frozenset({LABELS}))
    needs = frozenset({"labels", "groups"})
    default_policy = {
        "max_tpr_at_fpr[fpr=0.01]": Threshold(warn_above=0.03, fail_above=0.10),
        "max_auc": Threshold(warn_above=0.60, fail_above=0.70),
        "max_auc_gap": Threshold(warn_above=0.03, fail_above=0.08),
    }

    @dataclass
    class Params(sh.AttackParams):
        retrained_model: str | None = None
        retrained_factory: str | None = None
        fprs: list[float] = field(default_factory=lambda: [0.01, 0.001])

    def __init__(self, retrained_target=None, **params):
        super().__init__(**params)
        self.retrained_target = retrained_target

    def check(self, target, data):
        why = super().check(target, data)
        if why is None and data is not None and SPLIT_COLUMN not in data.groups:
            return f"needs data.groups[{SPLIT_COLUMN!r}] with values forget / retain / heldout per row"
        return why

    def _retrained(self, target):
        if self.retrained_target is not None:
            return self.retrained_target
        if self.params.retrained_model is None:
            return None
        try:
            from assay.targets.loading import load_target  # provided by the targets helper
        except ImportError:
            raise InputError(
                "retrained_model needs assay.targets.loading, which this install lacks; load the model "
                "yourself and pass UnlearningProbe(retrained_target=...) in Python"
            ) from None
        return load_target(self.params.retrained_model, factory=self.params.retrained_factory,
                           input_shape=target.input_shape, num_classes=target.num_classes, bounds=target.bounds)

    def run(self, ctx) -> Finding:
        t0 = time.perf_counter()
        p = self.params
        data, target = ctx.data, ctx.target
        if SPLIT_COLUMN not in data.groups:
            raise InputError(f"privacy.unlearning needs data.groups[{SPLIT_COLUMN!r}] (forget / retain / heldout per row)")
        if data.y is None:
            raise InputError("privacy.unlearning needs labels for every record")
        split = np.asarray(data.groups[SPLIT_COLUMN]).astype(str)
        bad = sorted(set(split.tolist()) - set(SPLITS))
        if bad:
            raise InputError(f"{SPLIT_COLUMN} has values {bad}; use only forget, retain, heldout")
        forget, heldout = split == "forget", split == "heldout"
        if forget.sum() < 10 or heldout.sum() < 10:
            raise NotApplicable(f"{int(forget.sum())} forget and {int(heldout.sum())} heldout rows; give at least 10 of each")
        fprs = sh.check_fprs(p.fprs, int(heldout.sum()))
        attacks, not_run = sh.plan_attacks(p, target, data)
        settings = sh.settings_from(p, attacks, ctx.seed)
        seed = settings.seed
        # reference models clone the unlearned target's architecture (or follow the recipe), so the
        # retrained model's scores reuse the same cached reference outputs
        queries0 = target.queries
        scores, info = sh.compute_scores(ctx, target, settings)
        refs = info.pop("refs", None)
        sel = forget | heldout
        is_forget = forget[sel]
        summaries = [sh.summarize(a, s[sel], is_forget, fprs, seed, level=p.level) for a, s in scores.items()]
        metrics = [m for s in summaries for m in sh.attack_metrics(s)]
        evidence = [sh.roc_evidence({a: s[sel] for a, s in scores.items()}, is_forget,
                                    "Forget vs heldout: ROC of each attack (log-log)")]
        retrained = self._retrained(target)
        if retrained is None:
            metrics += sh.max_metrics(summaries)
        else:
            # the retrained model answers on the same records with the same reference outputs; the
            # audit's shared clean predictions are the unlearned model's, so they are not used
            rscores, _ = sh.compute_scores(ctx, retrained, settings, shared_clean=False, refs=refs)
            rsumm = {a: sh.summarize(a, s[sel], is_forget, fprs, seed, level=p.level) for a, s in rscores.items()}
            gaps = []
            for s in summaries:
                r = rsumm[s.name]
                lo, hi = _auc_gap_interval(scores[s.name][sel], rscores[s.name][sel], is_forget, seed, p.level)
                gaps.append(Metric.labelled("auc_gap", {"attack": s.name}, s.auc - r.auc, lo, hi, higher_is_better=False,
                                   method="bootstrap", description="AUC(unlearned) - AUC(retrained without the forget set)"))
                metrics.append(Metric.labelled("retrained_auc", {"attack": s.name}, r.auc, r.auc_low, r.auc_high, higher_is_better=False,
                                      method="bootstrap", description="the same attack against the retrained model"))
            worst = max(gaps, key=lambda m: m.value)
            metrics += gaps + [Metric("max_auc_gap", worst.value, worst.low, worst.high, higher_is_better=False,
                                      method="bootstrap", description=f"largest AUC gap over attacks ({worst.name})")]
            evidence.append(sh.roc_evidence({a: s[sel] for a, s in rscores.items()}, is_forget,
                                            "Retrained model: forget vs heldout ROC (log-log)"))
        best = sh.strongest(summaries)
        evidence.append(sh.histogram_evidence(scores[best.name][sel], is_forget, best.name))
        finding = self.finding(
            metrics=metrics, evidence=evidence,
            summary=(f"{best.name} separates forget from heldout records with AUC {best.auc:.3f} "
                     f"({int(forget.sum())} forget / {int(heldout.sum())} heldout)"
                     + ("" if retrained is None else f"; largest AUC gap to the retrained model {worst.value:+.3f}")),
            accounting={"queries": target.queries - queries0, "seconds": round(time.perf_counter() - t0, 3),
                        "seed": seed, "attacks_not_run": not_run, "forget": int(forget.sum()), "heldout": int(heldout.sum()),
                        "retain": int((split == "retain").sum()), "retrained_model": retrained is not None, **info},
        )
        finding.apply_policy(self.default_policy)
        return finding


def _auc_gap_interval(s_a: np.ndarray, s_b: np.ndarray, is_pos: np.ndarray, seed: int, level: float = 0.95,
                      n: int = 200) -> tuple[float, float]:
    """Paired, stratified bootstrap of AUC(a) - AUC(b) on the same records, at ``level``."""
    from assay.metrics.privacy import auc
    from assay.stats import interval_of

    rng = np.random.default_rng(seed)
    pos, neg = np.nonzero(is_pos)[0], np.nonzero(~is_pos)[0]
    vals = []
    for _ in range(n):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        vals.append(auc(s_a[idx], is_pos[idx]) - auc(s_b[idx], is_pos[idx]))
    iv = interval_of(np.asarray(vals), level)
    return iv.low, iv.high
