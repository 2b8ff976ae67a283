"""Auditing a differential-privacy claim with canaries: an empirical lower bound on epsilon.

The auditor crafts canary records, trains models with a training RECIPE where each canary is
included in each model's training set independently with probability 1/2, scores every canary in
every model with a membership score, and turns how well the score separates included from excluded
canaries into a lower bound on the epsilon the recipe can satisfy. If that lower bound exceeds the
claimed epsilon, the claim is false (at the stated confidence); if not, the audit found no
violation, which is NOT a proof of privacy (a stronger attack might find one).

Two bounds are computed from the same trials (a trial is one (canary, model) pair):

``epsilon_lower_bound`` (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021)
    Any (eps, delta)-DP training satisfies, for every membership test,
    ``FPR + e^eps FNR >= 1 - delta`` and ``FNR + e^eps FPR >= 1 - delta``. With one-sided
    Clopper-Pearson upper bounds FPR_hi, FNR_hi at a threshold::

        eps >= max(log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi))

    The threshold is chosen on a random half of the trials and the bound is evaluated on the other
    half, so choosing the best threshold does not void the confidence level; the two rates share
    the error probability (each bound at ``1 - (1 - level) / 2``, Bonferroni). Assumption: trials
    are independent. Across models they are; canaries inside one model share its training run, so
    with many canaries per model this bound is the customary approximation, not a theorem.

``one_run_lower_bound`` (Steinke, Nasr & Jagielski 2023)
    Valid without that assumption. Guess "member" for the ``k`` highest scores and "non-member" for
    the ``k`` lowest, abstain on the rest. For an (eps, delta)-DP mechanism whose m examples are
    each included independently with probability 1/2, the number of correct guesses among the
    ``r = 2k`` guesses is at most Binomial(r, e^eps / (1 + e^eps)) plus a delta term. Here the
    m examples are all (canary, model) pairs: flipping one pair changes one model's training set
    by one record and no other model, so the set of models is (eps, delta)-DP in each pair. ``k``
    is chosen from a fixed grid with a Bonferroni correction over the grid.

Recipe
------
``train_fn(x: torch.Tensor, y: torch.Tensor, seed: int) -> model``, given as
``"package.module:function"``: trains one model on float inputs ``x`` and int64 labels ``y``, with
``seed`` driving every random choice. It returns an ``nn.Module`` returning logits, a callable
returning logits, or a scikit-learn style estimator with ``predict_proba``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import multiprocessing
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from scipy import stats as _st
from torch import nn

from assay.errors import InputError
from assay.stats import clopper_pearson, clopper_pearson_one_sided_upper

RECIPE_SIGNATURE = "train_fn(x, y, seed) -> model"
CANARY_KINDS = ("mislabeled", "ood")


# --------------------------------------------------------------------------------- recipes
def load_recipe(spec: str) -> Callable[[torch.Tensor, torch.Tensor, int], Any]:
    """Import and check a ``"package.module:function"`` recipe (one-line InputError otherwise).

    Example
    -------
    >>> load_recipe("os:getcwd")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    InputError: recipe 'os:getcwd' has signature getcwd(); it must accept train_fn(x, y, seed) -> model
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise InputError(f"recipe {spec!r} is not of the form 'package.module:function'; give {RECIPE_SIGNATURE}")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - any failure to import is the user's recipe
        raise InputError(f"recipe module {mod_name!r} does not import ({type(e).__name__}: {e}); "
                         "fix the path or PYTHONPATH") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise InputError(f"recipe {spec!r}: {mod_name} has no function {fn_name!r}; give {RECIPE_SIGNATURE}")
    try:
        inspect.signature(fn).bind(None, None, 0)
    except TypeError:
        raise InputError(f"recipe {spec!r} has signature {fn_name}{inspect.signature(fn)}; "
                         f"it must accept {RECIPE_SIGNATURE}") from None
    except ValueError:  # builtins without a signature: trust them
        pass
    return fn


@torch.no_grad()
def model_logits(model: Any, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Float64 logits (or log-probabilities) of a recipe's model on ``x``; modules in eval mode."""
    if isinstance(model, nn.Module):
        model.eval()  # dropout / batch-norm in training mode would score a different model
        return torch.cat([model(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)])
    if hasattr(model, "predict_proba"):
        p = np.asarray(model.predict_proba(x.reshape(len(x), -1).numpy()), dtype=np.float64)
        classes = np.asarray(getattr(model, "classes_", np.arange(p.shape[1])), dtype=np.int64)
        full = np.full((len(x), int(classes.max()) + 1), 1e-12)
        full[:, classes] = np.clip(p, 1e-12, None)
        return torch.from_numpy(np.log(full))
    if callable(model):
        return torch.as_tensor(model(x)).double()
    raise InputError(f"the recipe returned {type(model).__name__}; return an nn.Module, a callable giving "
                     "logits, or an estimator with predict_proba")


def membership_scores(logits: torch.Tensor, labels: torch.Tensor, score: str = "logit") -> torch.Tensor:
    """Membership score of each record under its assigned label; higher = more likely a member.

    ``"logit"``: the logit-scaled confidence ``log p_y - log(1 - p_y)`` (Carlini et al. 2022),
    computed stably as ``z_y - logsumexp_{c != y} z_c``. ``"loss"``: minus the cross-entropy.
    """
    logits = logits.double()
    labels = labels.long()
    if score == "loss":
        return -nn.functional.cross_entropy(logits, labels, reduction="none")
    if score != "logit":
        raise InputError(f"unknown membership score {score!r}; use logit or loss")
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own - torch.logsumexp(others, dim=1)


# -------------------------------------------------------------------------------- canaries
@dataclass
class Canaries:
    x: torch.Tensor
    y: torch.Tensor
    source: torch.Tensor  # row of the training data each canary copies (-1: synthetic); held out


def make_canaries(x: torch.Tensor, y: torch.Tensor, n_canaries: int, kind: str = "mislabeled", *,
                  num_classes: int | None = None, seed: int = 0) -> Canaries:
    """Craft ``n_canaries`` records that a model can only fit by memorising them.

    ``"mislabeled"``: copies of distinct training records with a label drawn uniformly among the
    wrong classes; the copied records are removed from the base training set (see
    :func:`canary_audit`) so the correct label never competes. ``"ood"``: inputs uniform in the
    data's value range (per feature), far from the data manifold, with uniformly random labels.
    """
    if kind not in CANARY_KINDS:
        raise InputError(f"unknown canary_kind {kind!r}; use one of {', '.join(CANARY_KINDS)}")
    n = len(x)
    c = int(num_classes or int(y.max()) + 1)
    if c < 2:
        raise InputError("the training labels have a single class; canaries need at least two classes")
    if n_canaries < 2:
        raise InputError(f"n_canaries={n_canaries}; use at least 2 (more canaries, tighter bound)")
    g = torch.Generator().manual_seed(int(seed))
    if kind == "mislabeled":
        if n_canaries > n // 2:
            raise InputError(f"n_canaries={n_canaries} mislabeled canaries need more than {2 * n_canaries} "
                             f"training records (have {n}); lower n_canaries")
        src = torch.randperm(n, generator=g)[:n_canaries]
        shift = torch.randint(1, c, (n_canaries,), generator=g)
        return Canaries(x[src].clone(), (y[src] + shift) % c, src)
    lo = x.reshape(n, -1).min(0).values
    hi = x.reshape(n, -1).max(0).values
    u = torch.rand((n_canaries, lo.numel()), generator=g, dtype=x.dtype)
    xc = (lo + u * (hi - lo)).reshape(n_canaries, *x.shape[1:])
    return Canaries(xc, torch.randint(0, c, (n_canaries,), generator=g), torch.full((n_canaries,), -1))


def inclusion_mask(n_models: int, n_canaries: int, seed: int) -> torch.Tensor:
    """(n_models, n_canaries) bool: each canary in each model independently with probability 1/2."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    return torch.rand((n_models, n_canaries), generator=g) < 0.5


def _train_and_score(item: tuple[int, int], shared: dict) -> np.ndarray:
    """Executor work item: train model ``index`` with its included canaries, score all canaries."""
    index, model_seed = item
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)  # one worker per core
    fn = load_recipe(shared["recipe"])
    keep = shared["include"][index]
    x = torch.cat([shared["x"], shared["canary_x"][keep]])
    y = torch.cat([shared["y"], shared["canary_y"][keep]])
    model = fn(x, y, model_seed)
    logits = model_logits(model, shared["canary_x"])
    return membership_scores(logits, shared["canary_y"], shared["score"]).numpy()


@dataclass
class CanaryTrials:
    """Scores of every canary in every model and whether it was in that model's training set."""

    scores: np.ndarray  # (n_models, n_canaries) float64
    member: np.ndarray  # (n_models, n_canaries) bool
    canaries: Canaries


def canary_audit(recipe: str, x: torch.Tensor, y: torch.Tensor, *, n_canaries: int = 50, n_models: int = 8,
                 canary_kind: str = "mislabeled", score: str = "logit", num_classes: int | None = None,
                 seed: int = 0, executor=None, done: dict[int, np.ndarray] | None = None,
                 on_done: Callable[[int, np.ndarray], None] | None = None) -> CanaryTrials:
    """Train ``n_models`` models with ``recipe`` on ``(x, y)`` plus a random half of the canaries each,
    and score every canary in every model.

    Training runs on ``executor`` (:mod:`assay.audit.executors`, in-process by default), one work
    item per model. ``done`` maps model index -> scores already computed (a resumed audit);
    ``on_done(index, scores)`` is called for each newly trained model (checkpointing).
    """
    from assay.audit.executors import InProcessExecutor

    load_recipe(recipe)  # fail before any training
    if n_models < 1:
        raise InputError(f"n_models={n_models}; train at least one model")
    x = torch.as_tensor(x).float()
    y = torch.as_tensor(y).long().reshape(-1)
    can = make_canaries(x, y, n_canaries, canary_kind, num_classes=num_classes, seed=seed)
    base = torch.ones(len(x), dtype=torch.bool)
    base[can.source[can.source >= 0]] = False
    include = inclusion_mask(n_models, n_canaries, seed)
    shared = {"recipe": recipe, "x": x[base], "y": y[base], "canary_x": can.x, "canary_y": can.y,
              "include": include, "score": score}
    out = dict(done or {})
    todo = [i for i in range(n_models) if i not in out]
    if todo:
        executor = executor or InProcessExecutor()
        items = [(i, int(seed) * 1_000_003 + i) for i in todo]
        for i, s in zip(todo, executor.map(_train_and_score, items, shared)):
            out[i] = np.asarray(s, dtype=np.float64)
            if on_done is not None:
                on_done(i, out[i])
    scores = np.stack([out[i] for i in range(n_models)])
    return CanaryTrials(scores, include.numpy(), can)


# ------------------------------------------------------------------------------ the bounds
def epsilon_from_rates(fpr: np.ndarray | float, fnr: np.ndarray | float, delta: float = 0.0) -> np.ndarray:
    """``max(log((1 - delta - fpr) / fnr), log((1 - delta - fnr) / fpr), 0)`` elementwise.

    With upper confidence bounds for ``fpr``/``fnr`` this is a lower confidence bound on epsilon.

    >>> round(float(epsilon_from_rates(0.01, 0.5)), 4)  # log(0.5 / 0.01) beats log(0.99 / 0.5)
    3.912
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr, 0, None)) - np.log(fnr)
        b = np.log(np.clip(1 - delta - fnr, 0, None)) - np.log(fpr)
    e = np.fmax(np.where(np.isnan(a), -np.inf, a), np.where(np.isnan(b), -np.inf, b))
    return np.maximum(e, 0.0)


def _cp_upper(k: np.ndarray, n: int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds for counts ``k`` of ``n`` (vectorised)."""
    k = np.asarray(k)
    if n <= 0:
        return np.ones(k.shape)
    with np.errstate(all="ignore"):
        hi = _st.beta.ppf(level, k + 1, np.maximum(n - k, 1))
    return np.where(k >= n, 1.0, hi)


def _counts(scores: np.ndarray, member: np.ndarray):
    """For every threshold ``t`` (score >= t means "member"): (thresholds, fp, fn, n_pos, n_neg)."""
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], member[order]
    tp = np.cumsum(m)
    fp = np.cumsum(~m)
    last = np.r_[s[1:] != s[:-1], True]  # one threshold per distinct score
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    th = np.r_[np.inf, s[last]]
    return th, np.r_[0, fp[last]], n_pos - np.r_[0, tp[last]], n_pos, n_neg


@dataclass
class EpsilonBound:
    """Empirical epsilon lower bound at one threshold with the rates behind it."""

    epsilon: float
    level: float
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    tpr_high: float
    fpr_low: float
    fpr_high: float
    n_members: int  # member trials the bound was evaluated on
    n_nonmembers: int
    trials: int  # all trials (both halves)
    method: str = "clopper-pearson, threshold chosen on a held-out half"


def epsilon_lower_bound(scores, member, *, delta: float = 0.0, level: float = 0.95, seed: int = 0) -> EpsilonBound:
    """Lower confidence bound on epsilon from membership scores of independent trials (module doc).

    The trials are split into two stratified random halves: the threshold maximising the bound on
    the first half is applied to the second, where one-sided Clopper-Pearson bounds at
    ``1 - (1 - level) / 2`` each give FPR_hi and FNR_hi, so the result holds with probability
    ``level`` over the second half's trials.

    Example
    -------
    >>> s = np.r_[np.ones(200), np.zeros(200)]; m = s > 0.5
    >>> round(epsilon_lower_bound(s, m).epsilon, 2)  # 100 vs 100 separated: log(0.964 / 0.0362)
    3.28
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(member, dtype=bool).reshape(-1)
    if s.size != m.size:
        raise InputError(f"{s.size} scores but {m.size} membership flags")
    if not np.isfinite(s).all():
        s = np.nan_to_num(s, nan=-np.inf, posinf=1e300, neginf=-1e300)
    if not 0 < level < 1 or not 0 <= delta < 1:
        raise InputError("confidence must lie in (0, 1) and delta in [0, 1)")
    rng = np.random.default_rng(seed)
    first = np.zeros(s.size, dtype=bool)
    for cls in (True, False):  # stratified so both halves hold members and non-members
        idx = np.flatnonzero(m == cls)
        if idx.size < 2:
            raise InputError("the audit needs at least 2 member and 2 non-member trials; add canaries or models")
        first[rng.permutation(idx)[: idx.size // 2]] = True
    each = 1 - (1 - level) / 2
    th, fp, fn, n_pos, n_neg = _counts(s[first], m[first])
    e = epsilon_from_rates(_cp_upper(fp, n_neg, each), _cp_upper(fn, n_pos, each), delta)
    t = float(th[int(np.argmax(e))])
    s2, m2 = s[~first], m[~first]
    guess = s2 >= t
    tp, fp2 = int((guess & m2).sum()), int((guess & ~m2).sum())
    n_pos2, n_neg2 = int(m2.sum()), int((~m2).sum())
    fpr_hi = clopper_pearson_one_sided_upper(fp2, n_neg2, each)
    fnr_hi = clopper_pearson_one_sided_upper(n_pos2 - tp, n_pos2, each)
    eps = float(epsilon_from_rates(fpr_hi, fnr_hi, delta))
    tpr_iv, fpr_iv = clopper_pearson(tp, n_pos2, level), clopper_pearson(fp2, n_neg2, level)
    return EpsilonBound(eps, level, t, tp / n_pos2, fp2 / n_neg2, tpr_iv.low, tpr_iv.high, fpr_iv.low,
                        fpr_iv.high, n_pos2, n_neg2, int(s.size))


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float = 0.0) -> float:
    """P-value of ``v`` correct guesses out of ``r`` among ``m`` randomised examples under the null
    hypothesis "the mechanism is (eps, delta)-DP" (Steinke, Nasr & Jagielski 2023, Thm 5.2)::

        P[Binom(r, q) >= v] + 2 m delta max_{1 <= i <= v} P[v - i <= Binom(r, q) < v] / i,
        q = e^eps / (1 + e^eps)
    """
    if not 0 <= v <= r <= m:
        raise InputError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(_st.binom.sf(v - 1, r, q))
    if delta > 0 and v > 0:
        pmf = _st.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
        alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
        tail += 2 * m * delta * alpha
    return min(tail, 1.0)


def _one_run_eps(m: int, r: int, v: int, delta: float, beta: float) -> float:
    """Largest eps whose null hypothesis is still rejected at ``beta`` (p <= beta); 0 if none."""
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi < 64 and one_run_p_value(m, r, v, hi, delta) <= beta:
        lo, hi = hi, 2 * hi
    for _ in range(50):  # p-value grows with eps: bisect the crossing
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class OneRunBound:
    epsilon: float
    level: float
    k: int  # guesses per side
    guesses: int
    correct: int
    examples: int
    method: str = "Steinke-Nasr-Jagielski 2023, Bonferroni over the k grid"


def one_run_lower_bound(scores, member, *, delta: float = 0.0, level: float = 0.95,
                        k_fractions: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5), seed: int = 0
                        ) -> OneRunBound:
    """Epsilon lower bound from guessing the top-k as members and the bottom-k as non-members.

    ``k = fraction * m / 2`` for each fraction in ``k_fractions`` (m = number of trials, each an
    example included with probability 1/2); each k is tested at ``(1 - level) / len(k_fractions)``
    (Bonferroni), and the largest resulting epsilon is returned. Ties are broken at random (seeded).

    Example
    -------
    >>> s = np.r_[np.ones(500), np.zeros(500)]; m = s > 0.5
    >>> b = one_run_lower_bound(s, m); (b.correct == b.guesses, round(b.epsilon, 2))
    (True, 4.64)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    mem = np.asarray(member, dtype=bool).reshape(-1)
    n = s.size
    if n != mem.size or n < 2:
        raise InputError("one-run bound: give as many membership flags as scores, at least 2")
    if not 0 < level < 1 or not 0 <= delta < 1:
        raise InputError("confidence must lie in (0, 1) and delta in [0, 1)")
    s = np.nan_to_num(s, nan=-np.inf)
    order = np.lexsort((np.random.default_rng(seed).random(n), -s))  # descending score, random ties
    ranked = mem[order]
    beta = (1 - level) / len(k_fractions)
    best = OneRunBound(0.0, level, 0, 0, 0, n)
    for f in k_fractions:
        k = max(1, min(n // 2, int(round(f * n / 2))))
        v = int(ranked[:k].sum() + (~ranked[n - k :]).sum())
        eps = _one_run_eps(n, 2 * k, v, delta, beta)
        if eps > best.epsilon or best.k == 0:
            best = OneRunBound(eps, level, k, 2 * k, v, n)
    return best


def roc_points(scores, member, max_points: int = 200) -> tuple[list[float], list[float]]:
    """(FPR, TPR) of the threshold test ``score >= t`` over all thresholds, thinned for plotting."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    m = np.asarray(member, dtype=bool).reshape(-1)
    _, fp, fn, n_pos, n_neg = _counts(s, m)
    fpr, tpr = fp / max(n_neg, 1), (n_pos - fn) / max(n_pos, 1)
    if fpr.size > max_points:
        keep = np.unique(np.r_[np.linspace(0, fpr.size - 1, max_points).round().astype(int), fpr.size - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr.tolist(), tpr.tolist()
