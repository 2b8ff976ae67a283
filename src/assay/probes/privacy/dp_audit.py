"""privacy.dp_audit: does a training recipe's differential-privacy claim survive a canary audit?

This audits the training RECIPE (``recipe="package.module:train_fn"``, see
:mod:`assay.guarantees.dp_audit`), not the deployed model: the probe trains ``n_models`` fresh
models on the audit data (``ctx.data``: the recipe's training data) with canaries inserted at
random, and bounds the epsilon the recipe can satisfy from below. The target is not queried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from assay.errors import InputError
from assay.findings import Evidence, Metric, Threshold
from assay.guarantees.dp_audit import (
    CANARY_KINDS,
    canary_audit,
    load_recipe,
    one_run_lower_bound,
    roc_points,
    split_half_epsilon_bound,
)
from assay.probes.base import Probe, register


@register
class DPAuditProbe(Probe):
    name = "privacy.dp_audit"
    axis = "privacy"
    title = "Differential-privacy claim audit (canaries)"
    description = (
        "Trains models with the given recipe and randomly inserted canaries, and turns how well "
        "membership scores separate them into an epsilon lower bound (Jagielski et al. 2020; "
        "one-run bound of Steinke et al. 2023); fails when the bound exceeds the claimed epsilon."
    )
    requires = frozenset()  # audits the recipe: any target will do, it is not queried
    needs = frozenset({"labels"})
    default_policy = {"epsilon_excess": Threshold(fail_above=0.0)}

    @dataclass
    class Params:
        recipe: str = ""
        claimed_epsilon: float = 0.0
        delta: float = 1e-5
        n_canaries: int = 50
        n_models: int = 8
        canary_kind: Literal["mislabeled", "ood"] = "mislabeled"
        score: Literal["logit", "loss"] = "logit"
        confidence: float = 0.95
        max_train: int = 0  # 0: all rows of the audit data

    def cost(self, target, data):
        return {"queries": 0, "note": f"{self.params.n_models} recipe trainings"}

    def _validate(self, ctx) -> None:
        p = self.params
        if not p.recipe:
            raise InputError("privacy.dp_audit needs recipe='package.module:train_fn' (train_fn(x, y, seed) -> model)")
        load_recipe(p.recipe)
        if not p.claimed_epsilon > 0 or not np.isfinite(p.claimed_epsilon):
            raise InputError(f"claimed_epsilon={p.claimed_epsilon}; give the positive epsilon the recipe claims")
        if not 0 <= p.delta < 1:
            raise InputError(f"delta={p.delta}; give the claimed delta in [0, 1)")
        if not 0 < p.confidence < 1:
            raise InputError(f"confidence={p.confidence}; it must lie in (0, 1), e.g. 0.95")
        if p.canary_kind not in CANARY_KINDS:
            raise InputError(f"canary_kind={p.canary_kind!r}; use one of {', '.join(CANARY_KINDS)}")
        if p.n_models < 1 or p.n_canaries < 2:
            raise InputError("privacy.dp_audit needs n_models >= 1 and n_canaries >= 2")
        if p.n_models * p.n_canaries < 8:
            raise InputError("fewer than 8 trials (n_models * n_canaries); add canaries or models")
        if ctx.data.y is None:
            raise InputError("privacy.dp_audit needs labelled training data for the recipe")

    def run(self, ctx):
        p = self.params
        self._validate(ctx)
        seed = ctx.seed
        x, y = ctx.data.x, ctx.data.y
        if p.max_train and p.max_train < len(x):
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[: p.max_train]
            x, y = x[keep], y[keep]
        num_classes = max(int(y.max()) + 1, int(getattr(ctx.target, "num_classes", 0) or 0))
        stem = f"{p.recipe}|{p.canary_kind}|{p.score}|{p.n_canaries}|{p.max_train}|{seed}"
        done = {}
        for i in range(p.n_models):  # a resumed audit skips the models it already trained
            hit = ctx.checkpoint.get(ctx.namespace, f"model-{i}|{stem}")
            if hit is not None:
                done[i] = np.asarray(hit["scores"], dtype=np.float64)
        ctx.units_resumed += len(done)

        def on_done(i, scores):
            ctx.checkpoint.put(ctx.namespace, f"model-{i}|{stem}", {"scores": scores})
            ctx.units_run += 1
            ctx.progress("training recipe models", len(done) + ctx.units_run, p.n_models)

        trials = canary_audit(p.recipe, x, y, n_canaries=p.n_canaries, n_models=p.n_models,
                              canary_kind=p.canary_kind, score=p.score, num_classes=num_classes, seed=seed,
                              executor=ctx.executor, done=done, on_done=on_done)
        s, m = trials.scores.reshape(-1), trials.member.reshape(-1)
        if m.sum() < 2 or (~m).sum() < 2:
            raise InputError("too few member or non-member trials drawn; raise n_canaries or n_models")
        jb = split_half_epsilon_bound(s, m, delta=p.delta, level=p.confidence, seed=seed)
        ob = one_run_lower_bound(s, m, delta=p.delta, level=p.confidence, seed=seed)
        lb = max(jb.epsilon, ob.epsilon)
        # two bounds at the same level: the max holds at 1 - 2 (1 - level) (union bound); say so
        joint = 1 - 2 * (1 - p.confidence)
        violated = lb > p.claimed_epsilon
        conf = f"{p.confidence:g}"
        metrics = [
            Metric("eps_lower_bound", lb, higher_is_better=False, level=joint,
                   method="max of the two bounds below (union bound over both)",
                   description="empirical lower bound on the recipe's epsilon"),
            Metric("eps_claimed", float(p.claimed_epsilon), description=f"claimed (epsilon, delta={p.delta:g})"),
            Metric("epsilon_excess", lb - float(p.claimed_epsilon), higher_is_better=False,
                   description="lower bound minus claim; > 0 means the claim is violated"),
            Metric.labelled("eps_lower_bound", {"bound": "threshold", "conf": conf}, jb.epsilon, level=p.confidence, method=jb.method,
                   description="Jagielski et al. 2020; assumes (canary, model) trials are independent", keyed={"conf": ""}),
            Metric.labelled("eps_lower_bound", {"bound": "one_run", "conf": conf}, ob.epsilon, level=p.confidence, method=ob.method,
                   description=f"Steinke et al. 2023: {ob.correct}/{ob.guesses} correct guesses (k={ob.k})", keyed={"conf": ""}),
            Metric("tpr[at_threshold]", jb.tpr, jb.tpr_low, jb.tpr_high, higher_is_better=False,
                   level=p.confidence, method="clopper-pearson", description="on the evaluation half"),
            Metric("fpr[at_threshold]", jb.fpr, jb.fpr_low, jb.fpr_high, level=p.confidence,
                   method="clopper-pearson", description="on the evaluation half"),
            Metric("trials", float(s.size), description=f"{p.n_models} models x {p.n_canaries} canaries"),
        ]
        fpr, tpr = roc_points(s, m)
        edges = np.histogram_bin_edges(s[np.isfinite(s)], bins=30)
        hist = [{"name": name, "edges": edges.tolist(), "counts": np.histogram(s[sel], bins=edges)[0].tolist()}
                for name, sel in (("member canaries", m), ("non-member canaries", ~m))]
        verdict_word = "claim violated" if violated else "consistent with the claim"
        warnings = []
        if p.n_models * p.n_canaries < 200:
            warnings.append(f"only {s.size} trials: the bound is loose; a violation needs more trials to show")
        return self.finding(
            metrics=metrics,
            warnings=[] if violated else warnings,
            evidence=[
                Evidence("curve", "ROC of canary membership scores",
                         {"xlabel": "false positive rate", "ylabel": "true positive rate", "logx": False,
                          "logy": False, "series": [{"name": "canaries", "x": fpr, "y": tpr},
                                                    {"name": "chance", "x": [0, 1], "y": [0, 1]}]}),
                Evidence("histogram", "Membership scores: member vs non-member canaries",
                         {"xlabel": f"membership score ({p.score})", "series": hist}),
                Evidence("text", "What this audits",
                         {"text": ("This audits the training recipe's claim, not one deployed model: "
                                   f"{p.n_models} models were trained with {p.recipe} and "
                                   f"{p.n_canaries} {p.canary_kind} canaries, each in each model with "
                                   "probability 1/2. A bound below the claim is no proof of privacy.")}),
            ],
            summary=(f"{verdict_word}: epsilon >= {lb:.3g} (threshold test {jb.epsilon:.3g}, one-run "
                     f"{ob.epsilon:.3g}, confidence {p.confidence:g} each) vs claimed "
                     f"epsilon={p.claimed_epsilon:g}, delta={p.delta:g}; {s.size} trials."),
            accounting={"models": p.n_models, "canaries": p.n_canaries, "trials": int(s.size),
                        "members": int(m.sum()), "threshold": jb.threshold, "one_run_k": ob.k,
                        "claim_violated": bool(violated)},
        )
