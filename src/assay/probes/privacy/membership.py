"""``privacy.membership``: can an attacker tell the model's training records from other records?

The dataset is the population pool: the target's members (``Dataset.member`` True) and
non-members. Reference models are trained on balanced random halves of the same pool (the
attacker's knowledge of the data distribution, not of who is a member).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from assay.errors import InputError, NotApplicable
from assay.findings import Evidence, Finding, Threshold
from assay.probes.base import Probe, register
from assay.probes.privacy import _shared as sh
from assay.targets.base import LABELS, SCORES


@register
class MembershipProbe(Probe):
    """Membership inference with the strongest known attacks (LiRA, RMIA) and the population and
    label-only baselines; judged by TPR at low FPR with exact intervals.

    Default policy (worst attack): fail when TPR at 1% FPR exceeds 0.10 (10x chance) or TPR at
    0.1% FPR exceeds 0.02 (20x chance) or AUC exceeds 0.75; warn above 0.03, 0.005 and 0.60.
    """

    name = "privacy.membership"
    axis = "privacy"
    title = "Membership inference"
    description = "LiRA / RMIA / population / label-only membership attacks: TPR at low FPR, AUC, epsilon bound"
    requires_any = (frozenset({SCORES}), frozenset({LABELS}))
    needs = frozenset({"labels", "members"})
    accepts_text = True
    default_policy = {
        "max_tpr_at_fpr[fpr=0.01]": Threshold(warn_above=0.03, fail_above=0.10),
        "max_tpr_at_fpr[fpr=0.001]": Threshold(warn_above=0.005, fail_above=0.02),
        "max_auc": Threshold(warn_above=0.60, fail_above=0.75),
    }

    @dataclass
    class Params(sh.AttackParams):
        fprs: list[float] = field(default_factory=lambda: [0.01, 0.001, 0.0001])
        delta: float = 0.0

    def cost(self, target, data):
        p = self.params
        n = len(data) if data is not None else 0
        q = 10 if p.augment else 1
        note = f"trains {p.n_reference} reference models" if {"lira", "rmia"} & set(p.attacks) else ""
        extra = n * (p.label_only_copies + 1) if "label_only" in p.attacks else 0
        return {"queries": n * q + extra, "note": note}

    def run(self, ctx) -> Finding:
        t0 = time.perf_counter()
        p = self.params
        data, target = ctx.data, ctx.target
        if data.member is None:
            raise InputError("privacy.membership needs membership labels: give the dataset a member mask (True = training record)")
        if data.y is None:
            raise InputError("privacy.membership needs labels for every record")
        is_member = data.member.numpy().astype(bool)
        n_mem, n_non = int(is_member.sum()), int((~is_member).sum())
        if n_mem < 10 or n_non < 10:
            raise NotApplicable(f"{n_mem} members and {n_non} non-members; give at least 10 of each (ideally thousands)")
        fprs = sh.check_fprs(p.fprs, n_non)
        attacks, not_run = sh.plan_attacks(p, target, data)
        settings = sh.settings_from(p, attacks, ctx.seed)
        seed = settings.seed
        queries0 = target.queries
        scores, info = sh.compute_scores(ctx, target, settings)
        info.pop("refs", None)
        summaries = [sh.summarize(a, s, is_member, fprs, seed, p.delta, p.level) for a, s in scores.items()]
        metrics = [m for s in summaries for m in sh.attack_metrics(s)] + sh.max_metrics(summaries)
        best = sh.strongest(summaries)
        thr, thr_fpr = sh.breakdown_threshold(best)
        evidence: list[Evidence] = [
            sh.roc_evidence(scores, is_member, "ROC of each attack (log-log)"),
            sh.histogram_evidence(scores[best.name], is_member, best.name),
            sh.exposed_table(scores[best.name], is_member, data.y, best.name),
            sh.breakdown_bars(scores[best.name], is_member, data.y.numpy(), thr,
                              f"By class: {best.name} at the FPR-{thr_fpr:g} threshold"),
        ]
        for gname, gvals in data.groups.items():
            evidence.append(sh.breakdown_bars(scores[best.name], is_member, np.asarray(gvals), thr,
                                              f"By {gname}: {best.name} at the FPR-{thr_fpr:g} threshold"))
        not_est = [f for f in fprs if not best.tprs[fprs.index(f)].estimable]
        if not_est:
            evidence.append(Evidence("text", "Not estimable", {"text": (
                f"TPR at FPR {', '.join(f'{f:g}' for f in not_est)} is not estimable with {n_non} non-members "
                f"(FPR f needs at least 1/f); these metrics are NaN, not 0.")}))
        if not_run:
            evidence.append(Evidence("text", "Attacks not run", {"text": " ".join(
                f"{a} was not run: {why}." for a, why in not_run.items())}))
        low = next((t for t in reversed(best.tprs) if t.estimable), best.tpr0)
        warnings = []
        if not_run:
            names = ", ".join(sorted(not_run))
            warnings.append(f"not run: {names} ({next(iter(not_run.values()))}); the figures come from "
                            f"{', '.join(scores)} only and may understate the leakage")
        finding = self.finding(
            outcomes=sh.membership_outcomes(scores, is_member, metrics),
            warnings=warnings,
            metrics=metrics,
            evidence=evidence,
            summary=(f"{best.name} identifies {low.value:.1%} of members at FPR {low.fpr:g} "
                     f"(95% CI {low.low:.1%}-{low.high:.1%}; chance {low.fpr:.1%}), AUC {best.auc:.3f}, "
                     f"{n_mem} members / {n_non} non-members"
                     + (f"; not run: {', '.join(not_run)} (see evidence)" if not_run else "")),
            accounting={"queries": target.queries - queries0, "seconds": round(time.perf_counter() - t0, 3),
                        "seed": seed, "members": n_mem, "non_members": n_non, "strongest": best.name,
                        "attacks_not_run": not_run, **info},
        )
        finding.apply_policy(self.default_policy)
        return finding
