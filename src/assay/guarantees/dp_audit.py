"""Auditing a differential-privacy claim with canaries: an empirical lower bound on epsilon.

The auditor crafts canary records, trains models with a training RECIPE where each canary is
included in each model's training set independently with probability 1/2, scores every canary in
every model with a membership score, and turns how well the score separates included from excluded
canaries into a lower bound on the epsilon the recipe can satisfy. If that lower bound exceeds the
claimed epsilon, the claim is false (at the stated confidence); if not, the audit found no
violation, which is NOT a proof of privacy (a stronger attack might find one).

Two bounds are computed from the same trials (a trial is one (canary, model) pair):

``split_half_epsilon_bound`` (Jagielski, Ullman & Oprea 2020; Nasr et al. 2021)
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

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import InputError
from assay.metrics.privacy import (  # noqa: F401  (the bounds the audit reports)
    OneRunBound,
    SplitHalfBound,
    epsilon_from_rates,
    one_run_lower_bound,
    one_run_p_value,
    roc_points,
    split_half_epsilon_bound,
)
from assay.train.recipes import RECIPE_SIGNATURE, load_recipe  # noqa: F401

CANARY_KINDS = ("mislabeled", "ood")


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

    Training runs on ``executor`` (:mod:`assay.parallel`, in-process by default), one work
    item per model. ``done`` maps model index -> scores already computed (a resumed audit);
    ``on_done(index, scores)`` is called for each newly trained model (checkpointing).
    """
    from assay.parallel import InProcessExecutor

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
