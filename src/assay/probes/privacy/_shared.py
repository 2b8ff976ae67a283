"""Scoring and reporting shared by the membership and unlearning probes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from assay.attacks.privacy import membership as mia
from assay.attacks.privacy.reference import ReferenceSet, recipe_for_target, train_reference_models
from assay.errors import InputError, NotApplicable
from assay.findings import Evidence, Metric
from assay.metrics import privacy as mm
from assay.stats import clopper_pearson, interval_of
from assay.targets.base import LABELS, SCORES

ATTACKS = ("baseline", "lira", "rmia", "label_only")
SCORE_ATTACKS = ("baseline", "lira", "rmia")
REF_ATTACKS = ("lira", "rmia")


def check_attacks(attacks, target, n_reference: int, lira_variant: str) -> list[str]:
    attacks = [a.strip().lower().replace("-", "_") for a in attacks]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise InputError(f"unknown membership attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
    if any(a in SCORE_ATTACKS for a in attacks) and SCORES not in target.capabilities:
        raise InputError(
            f"attacks {[a for a in attacks if a in SCORE_ATTACKS]} need target scores but {target.name} "
            "returns labels only; use attacks=label_only"
        )
    if "label_only" in attacks and LABELS not in target.capabilities and SCORES not in target.capabilities:
        raise InputError(f"{target.name} answers neither scores nor labels")
    if any(a in REF_ATTACKS for a in attacks):
        if n_reference < 2:
            raise InputError("LiRA and RMIA need n_reference >= 2 (every record OUT of at least one model); "
                             "or use attacks=baseline")
        if "lira" in attacks and lira_variant == "online" and n_reference < 2:
            raise InputError("online LiRA needs n_reference >= 2 (IN and OUT models); use lira_variant=offline")
    return list(dict.fromkeys(attacks))


def plan_attacks(p: AttackParams, target, data=None) -> tuple[list[str], dict[str, str]]:
    """The attacks that can run, and why the others cannot.

    Reference-model attacks (LiRA, RMIA) need reference models: ``reference_models`` (a directory of
    model files), a ``recipe``, or a target assay can clone and retrain (a Python torch model, a
    scikit-learn estimator, or a TorchScript / weights file with ``--factory``). Without any of
    them they are reported as not run, with the reason, and the attacks that need no reference
    models still run: an audit never loses the baseline and label-only attacks to a missing recipe.
    The label-only attack perturbs numeric inputs, which text has not."""
    attacks = check_attacks(p.attacks, target, p.n_reference, p.lira_variant)
    not_run: dict[str, str] = {}
    if getattr(data, "kind", None) == "text" and "label_only" in attacks:
        not_run["label_only"] = "it adds Gaussian noise to numeric inputs, and text has none"
    if any(a in REF_ATTACKS for a in attacks) and not p.reference_models:
        if p.recipe is not None:  # the user's own recipe: a bad one is a mistake to fix, not a reason to skip
            recipe_for_target(target, p.recipe, **train_settings(p))
        else:
            try:
                recipe_for_target(target, None, **train_settings(p))
            except InputError as e:
                for a in attacks:
                    if a in REF_ATTACKS:
                        not_run[a] = str(e)
    runnable = [a for a in attacks if a not in not_run]
    if not runnable:
        raise InputError("no requested membership attack can run: "
                         + "; ".join(f"{a}: {w}" for a, w in not_run.items()) + "; add attacks=baseline")
    return runnable, not_run


def train_settings(p: AttackParams) -> dict[str, Any]:
    return {"epochs": p.train_epochs, "lr": p.train_lr, "batch_size": p.train_batch_size,
            "weight_decay": p.train_weight_decay}


def check_fprs(fprs, n_nonmembers: int) -> list[float]:
    fprs = sorted({float(f) for f in fprs}, reverse=True)
    if not fprs or any(not 0 < f < 1 for f in fprs):
        raise InputError(f"fprs {fprs} must be rates in (0, 1), e.g. 0.01,0.001")
    if n_nonmembers < math.ceil(1 / fprs[0]):
        raise NotApplicable(
            f"only {n_nonmembers} non-members: no requested FPR is measurable (FPR {fprs[0]:g} needs at "
            f"least {math.ceil(1 / fprs[0])}); add non-member records or ask for a larger fpr"
        )
    return fprs


@dataclass
class AttackParams:
    """Parameters shared by the membership and unlearning probes (see docs/privacy.md)."""

    attacks: list[Literal["baseline", "lira", "rmia", "label_only"]] = field(default_factory=lambda: ["baseline", "lira", "rmia"])
    n_reference: int = 4
    recipe: str | None = None
    lira_variant: Literal["online", "offline"] = "online"
    lira_fixed_variance: bool | None = None
    augment: bool = False
    rmia_a: float = 0.3
    rmia_gamma: float = 1.0
    rmia_variant: Literal["auto", "online", "offline"] = "auto"
    label_only_copies: int = 32
    label_only_sigma: float = 0.1
    train_epochs: int = 30
    train_lr: float = 2e-3
    train_batch_size: int = 64
    train_weight_decay: float = 0.0
    reference_models: str | None = None  # a directory of reference model files (see docs/privacy.md)
    level: float = 0.95  # confidence level of every interval the probe reports


def settings_from(p: AttackParams, attacks: list[str], seed: int) -> ScoreSettings:
    return ScoreSettings(
        attacks, p.n_reference, p.recipe, p.lira_variant, p.lira_fixed_variance, p.augment, p.rmia_a,
        p.rmia_gamma, p.rmia_variant, p.label_only_copies, p.label_only_sigma, seed,
        train_settings(p), p.reference_models,
    )


@dataclass
class ScoreSettings:
    attacks: list[str]
    n_reference: int
    recipe: str | None
    lira_variant: str
    lira_fixed_variance: bool | None
    augment: bool
    rmia_a: float
    rmia_gamma: float
    rmia_variant: str
    label_only_copies: int
    label_only_sigma: float
    seed: int
    train_kwargs: dict[str, Any] = field(default_factory=dict)
    reference_models: str | None = None


def query_views(x: torch.Tensor | np.ndarray, augment: bool) -> torch.Tensor | np.ndarray:
    if isinstance(x, np.ndarray):  # texts: the one view is the texts themselves
        if augment:
            raise InputError("augment=True applies to images (N, C, H, W); set augment=false for text")
        return x[None]
    if not augment:
        return x.unsqueeze(0)
    if x.dim() != 4:
        raise InputError("augment=True applies to images (N, C, H, W); set augment=false for this data")
    return mia.image_queries(x)


def target_log_probs(ctx, target, views: torch.Tensor, shared_clean: bool) -> torch.Tensor:
    """(Q, N, C) log-probabilities of the target; the identity view reuses the audit's clean cache."""
    out = []
    for q in range(views.shape[0]):
        s = ctx.clean_scores() if (q == 0 and shared_clean) else target.scores(views[q])
        out.append(mia.as_log_probs(s, "logits" if target.output == "logits" else "probs"))
    return torch.stack(out)


def compute_scores(ctx, target, s: ScoreSettings, *, shared_clean: bool = True,
                   refs: ReferenceSet | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Membership scores (one per record of ``ctx.data``, higher = member) for each attack.

    ``refs``: reference outputs to reuse (e.g. when scoring a second model on the same pool);
    otherwise they are read from ``s.reference_models`` or trained (or read from the cache).
    ``info["refs"]`` returns them. With ``ctx.data.population``, the population records join the
    pool the reference models train on and RMIA's population ``z`` (they are never scored)."""
    data = ctx.data
    x, y = data.x, data.y
    n = len(x)
    pop = data.population
    if pop is not None and pop.y is None:
        raise InputError("population records need labels; give the population file a label column / y array")
    x_all = x if pop is None else torch.cat([x, pop.x])
    y_all = y if pop is None else torch.cat([y, pop.y])
    info: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    need_scores = any(a in SCORE_ATTACKS for a in s.attacks)
    views = query_views(x_all, s.augment) if need_scores else None
    lp_t = None
    if need_scores:
        lp_t = target_log_probs(ctx, target, views[:, :n], shared_clean)
        if pop is not None:
            lp_t = torch.cat([lp_t, target_log_probs(ctx, target, views[:, n:], False)], dim=1)
    if "baseline" in s.attacks:
        # the logit margin log p_y - log(1 - p_y), formed without 1 - p_y: on a saturated model log p_y
        # itself rounds to exactly 0 for many records and ties members with non-members
        scores["baseline"] = mia.logit_confidence(lp_t[0, :n], y, "log_probs").numpy()
    if any(a in REF_ATTACKS for a in s.attacks) and refs is None:
        if s.reference_models:
            refs = load_reference_models(s.reference_models, target, views, n_pool=len(x_all))
        else:
            recipe = recipe_for_target(target, s.recipe, **s.train_kwargs)
            refs = train_reference_models(
                recipe, x_all, y_all, n_models=s.n_reference, seed=s.seed, views=views, num_classes=target.num_classes,
                executor=ctx.executor, cache_dir=ctx.cache_dir("membership-refs"),
                cache_key=reference_key(recipe, data),
                progress=ctx.progress,
            )
    if refs is not None:
        info["refs"] = refs
        offline_only = not bool(refs.in_mask.any())
        info.update(reference_models=int(refs.log_probs.shape[0]), reference_trained=refs.trained,
                    reference_cached=refs.cached, reference_seconds=round(refs.seconds, 3), recipe=refs.recipe,
                    executor=ctx.executor.name, queries_per_record=int(views.shape[0]))
        if "lira" in s.attacks:
            variant = "offline" if offline_only else s.lira_variant
            phi_t = mia.logit_confidence(lp_t[:, :n].transpose(0, 1), y, "log_probs")  # (N, Q)
            phi_r = mia.logit_confidence(refs.log_probs[:, :, :n].transpose(1, 2), y, "log_probs")  # (R, N, Q)
            fixed = s.lira_fixed_variance if s.lira_fixed_variance is not None else refs.log_probs.shape[0] < 64
            scores["lira"] = mia.lira_scores(phi_t, phi_r, refs.in_mask[:, :n], variant=variant,
                                             fixed_variance=fixed).numpy()
            info["lira"] = {"variant": variant, "fixed_variance": fixed}
        if "rmia" in s.attacks:
            variant = s.rmia_variant if s.rmia_variant != "auto" else (
                "online" if refs.log_probs.shape[0] >= 2 and not offline_only else "offline")
            p_t = mia.true_class_log_prob(lp_t.transpose(0, 1), y_all).exp()  # (N_all, Q)
            p_r = mia.true_class_log_prob(refs.log_probs.transpose(1, 2), y_all).exp()  # (R, N_all, Q)
            # population z: every record of the pool (the attacker does not know who is a member)
            scores["rmia"] = mia.rmia_scores(p_t[:n], p_r[:, :n], p_t, p_r, a=s.rmia_a, gamma=s.rmia_gamma,
                                             ref_in_mask=refs.in_mask[:, :n], ref_in_mask_z=refs.in_mask,
                                             variant=variant).numpy()
            info["rmia"] = {"variant": variant, "a": s.rmia_a, "gamma": s.rmia_gamma, "population": len(x_all)}
    if "label_only" in s.attacks:
        lo, hi = target.bounds
        sigma = s.label_only_sigma * (hi - lo) if math.isfinite(hi - lo) else s.label_only_sigma * float(x.std())
        scores["label_only"] = mia.label_only_scores(
            target.labels, x, y, n_augment=s.label_only_copies, noise_sigma=sigma, bounds=target.bounds,
            seed=s.seed,
        ).numpy()
        info["label_only"] = {"copies": s.label_only_copies, "noise_sigma": sigma}
    return scores, info


def reference_key(recipe, data) -> str:
    """What reference models depend on: the pool (the data) and the recipe that trains them, never the
    audited weights. Two models of one architecture trained by one recipe (a model and its fine-tuned
    or pruned copy) therefore share them: the second audit of ``assay compare`` trains none. A torch
    recipe is identified by its freshly initialised copy (architecture, code, normalisation)."""
    from assay.attacks.privacy.reference import TorchRecipe
    from assay.targets.identity import module_digest

    part = recipe.identity
    if isinstance(recipe, TorchRecipe):
        part += "|" + module_digest(recipe.fresh(0))
    return f"{data.fingerprint()}|{part}"


def load_reference_models(directory: str, target, views: torch.Tensor, n_pool: int) -> ReferenceSet:
    """Reference models given as files: every model file in ``directory`` (any format assay loads,
    never unpickled), queried on the pool. ``in_mask.npy`` (bool, one row per model in file-name
    order, one column per pool record) says which records each model trained on; without it every
    model counts as trained on none of them (OUT), and LiRA and RMIA run their offline variants."""
    from pathlib import Path

    from assay.targets.loading import load_target

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise InputError(f"reference_models={directory} is not a directory; give a directory of model files")
    files = sorted(f for f in root.iterdir() if f.name != "in_mask.npy" and not f.name.startswith("."))
    if len(files) < 1:
        raise InputError(f"{root} holds no reference model files")
    outs = []
    for f in files:
        ref = load_target(f, input_shape=target.input_shape, num_classes=target.num_classes, bounds=target.bounds,
                          factory=getattr(target, "factory", None), device="cpu")
        if SCORES not in ref.capabilities:
            raise InputError(f"reference model {f.name} returns labels only; reference models must return scores")
        kind = "logits" if ref.output == "logits" else "probs"
        outs.append(torch.stack([mia.as_log_probs(ref.scores(v), kind).float() for v in views]))
    mask_file = root / "in_mask.npy"
    if mask_file.exists():
        in_mask = torch.from_numpy(np.load(mask_file, allow_pickle=False).astype(bool))
        if tuple(in_mask.shape) != (len(files), n_pool):
            raise InputError(f"{mask_file} has shape {tuple(in_mask.shape)}; it needs one row per model file "
                             f"({len(files)}) and one column per pool record ({n_pool})")
    else:
        in_mask = torch.zeros(len(files), n_pool, dtype=torch.bool)
    return ReferenceSet(torch.stack(outs), in_mask, recipe=f"files:{root}", cached=len(files))


# ------------------------------------------------------------- summaries
@dataclass
class AttackSummary:
    name: str
    auc: float
    auc_low: float
    auc_high: float
    tprs: list[mm.TprAtFpr]
    tpr0: mm.TprAtFpr
    advantage: float
    eps: mm.EpsilonBound
    level: float = 0.95


def summarize(name: str, scores: np.ndarray, is_member: np.ndarray, fprs: list[float], seed: int,
              delta: float = 0.0, level: float = 0.95) -> AttackSummary:
    a = mm.auc(scores, is_member)
    iv = _auc_interval(scores, is_member, seed, level)
    tprs = [mm.tpr_at_fpr(scores, is_member, f, level) for f in fprs]
    return AttackSummary(name, a, iv[0], iv[1], tprs, mm.tpr_at_fpr(scores, is_member, 0.0, level),
                         mm.membership_advantage(scores, is_member),
                         mm.epsilon_lower_bound(scores, is_member, delta=delta, level=level, seed=seed), level)


def _auc_interval(scores, is_member, seed: int, level: float = 0.95, n_resamples: int = 200) -> tuple[float, float]:
    """Seeded stratified bootstrap of the AUC (rank formula), at ``level``."""
    rng = np.random.default_rng(seed)
    pos, neg = scores[is_member], scores[~is_member]
    pi = rng.integers(0, len(pos), (n_resamples, len(pos)))
    ni = rng.integers(0, len(neg), (n_resamples, len(neg)))
    vals = np.empty(n_resamples)
    for b in range(n_resamples):
        p, q = pos[pi[b]], np.sort(neg[ni[b]])
        below = np.searchsorted(q, p, side="left")
        ties = np.searchsorted(q, p, side="right") - below
        vals[b] = (below.sum() + 0.5 * ties.sum()) / (len(p) * len(q))
    iv = interval_of(vals, level)
    return iv.low, iv.high


def fmt_fpr(f: float) -> str:
    return f"{f:g}"


def attack_metrics(summ: AttackSummary) -> list[Metric]:
    n = summ.name
    out = [Metric.labelled("auc", {"attack": n}, summ.auc, summ.auc_low, summ.auc_high, higher_is_better=False, level=summ.level,
                  method="bootstrap", description="area under the ROC curve (0.5 = chance)")]
    for t in summ.tprs:
        desc = f"TPR at FPR {t.fpr:g} (achieved FPR {t.fpr_achieved:.3g}, {t.true_positives}/{t.n_members} members)" \
            if t.estimable else t.note
        out.append(Metric.labelled("tpr_at_fpr", {"attack": n, "fpr": t.fpr}, t.value, t.low if t.estimable else None,
                          t.high if t.estimable else None, higher_is_better=False, level=summ.level, method="clopper-pearson",
                          description=desc, keyed={"fpr": "g"}))
    t0 = summ.tpr0
    out.append(Metric.labelled("tpr_at_fpr", {"attack": n, "fpr": 0}, t0.value, t0.low, t0.high, higher_is_better=False, level=summ.level,
                      method="clopper-pearson", description="members identified with no false positive at all", keyed={"fpr": "g"}))
    out.append(Metric.labelled("advantage", {"attack": n}, summ.advantage, higher_is_better=False, level=summ.level,
                      description="max over thresholds of TPR - FPR"))
    e = summ.eps
    out.append(Metric.labelled("epsilon_lower_bound", {"attack": n}, e.epsilon, higher_is_better=False, level=summ.level, method=f"clopper-pearson ({e.method})",
                      description=f"empirical DP epsilon lower bound at {e.level:.0%} confidence, delta={e.delta:g}"))
    return out


def strongest(summaries: list[AttackSummary]) -> AttackSummary:
    """The attack with the highest TPR at the lowest measurable FPR (ties: AUC)."""
    def key(s: AttackSummary):
        est = [t.value for t in reversed(s.tprs) if t.estimable]
        return (est[0] if est else 0.0, s.tpr0.value, s.auc)

    return max(summaries, key=key)


def max_metrics(summaries: list[AttackSummary], prefix: str = "max") -> list[Metric]:
    """Worst case over attacks (what the policy judges): each with that attack's interval."""
    best_auc = max(summaries, key=lambda s: s.auc)
    out = [Metric(f"{prefix}_auc", best_auc.auc, best_auc.auc_low, best_auc.auc_high, higher_is_better=False, level=summaries[0].level,
                  method="bootstrap", description=f"highest AUC over attacks ({best_auc.name})")]
    for i, t in enumerate(summaries[0].tprs):
        if not t.estimable:
            continue
        s = max(summaries, key=lambda s: s.tprs[i].value)
        b = s.tprs[i]
        out.append(Metric.labelled(f"{prefix}_tpr_at_fpr", {"fpr": t.fpr}, b.value, b.low, b.high, higher_is_better=False, level=summaries[0].level,
                          method="clopper-pearson", description=f"highest TPR at FPR {t.fpr:g} over attacks ({s.name})", keyed={"fpr": "g"}))
    s = max(summaries, key=lambda s: s.eps.epsilon)
    out.append(Metric(f"{prefix}_epsilon_lower_bound", s.eps.epsilon, higher_is_better=False, level=summaries[0].level,
                      description=f"highest empirical epsilon lower bound over attacks ({s.name})"))
    return out


def membership_outcomes(scores: dict[str, np.ndarray], is_member: np.ndarray, metrics: list[Metric]) -> dict | None:
    """Per-record attack scores and membership, with the recipes of the AUC and TPR-at-FPR metrics
    (each attack's and the worst over attacks), so two models can be compared record by record."""
    from assay import outcomes as oc

    rows = oc.Outcomes()
    member = rows.bits("member", "member", is_member)
    for name, sc in scores.items():
        rows.floats(f"score[{name}]", "score", sc)
    by_fpr: dict[float, list[dict]] = {}
    aucs = []
    for m in metrics:
        attack = m.labels.get("attack")
        if attack in scores and m.base_name == "auc":
            aucs.append(oc.auc(f"score[{attack}]", member))
            rows.recipe(m, aucs[-1])
        elif attack in scores and m.base_name == "tpr_at_fpr" and m.value == m.value:
            r = oc.tpr_at_fpr(f"score[{attack}]", member, float(m.labels["fpr"]))
            rows.recipe(m, r)
            by_fpr.setdefault(float(m.labels["fpr"]), []).append(r)
    for m in metrics:
        if m.name == "max_auc" and aucs:
            rows.recipe(m, oc.most(*aucs))
        elif m.base_name == "max_tpr_at_fpr" and by_fpr.get(float(m.labels.get("fpr", -1))):
            rows.recipe(m, oc.most(*by_fpr[float(m.labels["fpr"])]))
    return rows.to_dict()


# -------------------------------------------------------------- evidence
def roc_evidence(scores: dict[str, np.ndarray], is_member: np.ndarray, title: str, max_points: int = 300) -> Evidence:
    series = []
    n_neg = int((~is_member).sum())
    for name, sc in scores.items():
        r = mm.roc(sc, is_member)
        keep = r.fpr > 0  # log axes cannot show FPR = 0 (reported as tpr_at_fpr[...,fpr=0])
        fpr, tpr = r.fpr[keep], r.tpr[keep]
        if len(fpr) > max_points:
            grid = np.unique(np.searchsorted(fpr, np.geomspace(fpr[0], 1.0, max_points)).clip(0, len(fpr) - 1))
            fpr, tpr = fpr[grid], tpr[grid]
        series.append({"name": name, "x": fpr.tolist(), "y": tpr.tolist()})
    lo = 1.0 / max(n_neg, 1)
    series.append({"name": "chance", "x": [lo, 1.0], "y": [lo, 1.0]})
    return Evidence("curve", title, {"xlabel": "false positive rate", "ylabel": "true positive rate",
                                     "logx": True, "logy": True, "series": series})


def exposed_table(scores: np.ndarray, is_member: np.ndarray, y: torch.Tensor, attack: str, k: int = 20) -> Evidence:
    exp = mm.exposure(scores, is_member)
    order = np.lexsort((-scores, exp))[:k]
    rows = [[int(i), int(y[i]), bool(is_member[i]), round(float(scores[i]), 6), round(float(exp[i]), 6)] for i in order]
    return Evidence("table", f"Most exposed records ({attack})",
                    {"columns": ["index", "class", "member", "score", "fpr_to_flag"], "rows": rows})


def breakdown_bars(scores: np.ndarray, is_member: np.ndarray, keys: np.ndarray, threshold: float, title: str) -> Evidence:
    """TPR and FPR per category at one global threshold, with Clopper-Pearson intervals."""
    cats = sorted({str(k) for k in keys.tolist()})
    keys = keys.astype(str)
    series: dict[str, dict[str, list]] = {n: {"values": [], "low": [], "high": []} for n in ("TPR", "FPR")}
    for c in cats:
        sel = keys == c
        pred = scores[sel] >= threshold
        for name, m in (("TPR", is_member[sel]), ("FPR", ~is_member[sel])):
            k, n = int((pred & m).sum()), int(m.sum())
            iv = clopper_pearson(k, n)
            series[name]["values"].append(k / n if n else None)
            series[name]["low"].append(iv.low if n else None)
            series[name]["high"].append(iv.high if n else None)
    return Evidence("bars", title, {"ylabel": "rate at the global threshold", "categories": cats,
                                    "series": [{"name": n, **v} for n, v in series.items()]})


def histogram_evidence(scores: np.ndarray, is_member: np.ndarray, attack: str, bins: int = 30) -> Evidence:
    edges = np.histogram_bin_edges(scores, bins=bins)
    return Evidence("histogram", f"Membership scores ({attack})", {"xlabel": f"{attack} score", "series": [
        {"name": "members", "edges": edges.tolist(), "counts": np.histogram(scores[is_member], edges)[0].tolist()},
        {"name": "non-members", "edges": edges.tolist(), "counts": np.histogram(scores[~is_member], edges)[0].tolist()},
    ]})


def breakdown_threshold(summ: AttackSummary) -> tuple[float, float]:
    """The threshold of the lowest measurable requested FPR (or FPR 0)."""
    for t in reversed(summ.tprs):
        if t.estimable:
            return t.threshold, t.fpr
    return summ.tpr0.threshold, 0.0
