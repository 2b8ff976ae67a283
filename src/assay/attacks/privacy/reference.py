"""Reference ("shadow") models for LiRA and RMIA: training recipes, the balanced IN/OUT scheme,
executor hand-off and an on-disk cache of their outputs.

Recipe
------
A recipe trains one model on a subset of the population pool::

    train_fn(x: torch.Tensor, y: torch.Tensor, seed: int) -> model

``x``/``y`` are the subset's inputs (float, the target's input space) and int64 labels; ``seed``
must drive every random choice. The returned model is a ``torch.nn.Module`` returning logits, a
scikit-learn style estimator with ``predict_proba``, or a callable returning logits. Give it as
``"package.module:function"`` (:func:`load_recipe`). Without one, :func:`recipe_for_target`
clones the target: a scikit-learn estimator is ``sklearn.base.clone``-d with its own settings; a
torch module is deep-copied, re-initialised and trained with
:func:`assay.data.demo.train_classifier` and the training settings you give.

Membership scheme
-----------------
Models come in complementary pairs: model ``2k`` trains on a random half of the pool and model
``2k+1`` on the other half. So with an even number of models every example is IN exactly half of
them (the paper's balanced scheme), and the first ``R`` models of a larger run are exactly the
models of a run with ``R`` models: cached outputs are reused when ``n_reference`` grows.
"""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from assay.errors import InputError
from assay.train.recipes import RECIPE_SIGNATURE
from assay.train.recipes import load_recipe as _load_entry_point  # imports and checks "module:fn"


# --------------------------------------------------------------- recipes
class Recipe:
    """Trains one reference model; ``identity`` names it in cache keys."""

    identity: str = "recipe"

    def train(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class FunctionRecipe(Recipe):
    """A user entry point ``"module:function"`` with the signature ``train_fn(x, y, seed)``.

    Stored by name, so it crosses process boundaries without pickling the function itself.
    """

    def __init__(self, spec: str):
        self.spec = spec
        self.identity = f"fn:{spec}"
        self._fn: Callable | None = None

    @property
    def fn(self) -> Callable:
        if self._fn is None:
            self._fn = _load_entry_point(self.spec)
        return self._fn

    def train(self, x, y, seed):
        return self.fn(x, y, seed)

    def __getstate__(self):
        return {"spec": self.spec, "identity": self.identity, "_fn": None}


def load_recipe(spec: str) -> FunctionRecipe:
    """Resolve and check a ``"module:function"`` recipe now (a bad path fails before any training).

    Example
    -------
    >>> load_recipe("os:getcwd")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    InputError: recipe 'os:getcwd' has signature getcwd(); it must accept train_fn(x, y, seed) -> model
    """
    r = FunctionRecipe(spec)
    _ = r.fn
    return r


class SklearnRecipe(Recipe):
    """Clones a scikit-learn estimator (same hyper-parameters, fresh state) and fits it on the
    flattened inputs; ``random_state`` is set from the seed when the estimator has one."""

    def __init__(self, estimator):
        from sklearn.base import clone

        self.estimator = clone(estimator)
        params = json.dumps(self.estimator.get_params(deep=False), sort_keys=True, default=repr)
        self.identity = f"sklearn:{type(estimator).__name__}:{hashlib.sha256(params.encode()).hexdigest()[:12]}"

    def train(self, x, y, seed):
        from sklearn.base import clone

        est = clone(self.estimator)
        if "random_state" in est.get_params(deep=False):
            est.set_params(random_state=int(seed) % (2**31))
        return est.fit(x.reshape(len(x), -1).numpy(), y.numpy())


class TorchRecipe(Recipe):
    """A fresh copy of a torch architecture trained with :func:`assay.data.demo.train_classifier`.

    Parameters
    ----------
    template : a module whose architecture is copied (weights are re-initialised) or a zero-argument
        module-level factory returning a fresh module.
    train_kwargs : ``epochs``, ``lr``, ``batch_size``, ``weight_decay``, ``noise_sigma``: should match
        how the target was trained (a mismatch weakens the attack, it never inflates it).
    """

    def __init__(self, template: nn.Module | Callable[[], nn.Module], **train_kwargs):
        allowed = {"epochs", "lr", "batch_size", "weight_decay", "noise_sigma"}
        unknown = set(train_kwargs) - allowed
        if unknown:
            raise InputError(f"unknown torch training setting(s) {sorted(unknown)}; valid: {sorted(allowed)}")
        if isinstance(template, nn.Module):
            _check_resettable(template)
            template = copy.deepcopy(template).cpu()
            arch = repr(template)
        elif callable(template):
            arch = f"{getattr(template, '__module__', '')}:{getattr(template, '__qualname__', repr(template))}"
        else:
            raise InputError("TorchRecipe needs an nn.Module or a factory returning one")
        self.template = template
        self.train_kwargs = train_kwargs
        blob = json.dumps({"arch": arch, "train": train_kwargs}, sort_keys=True)
        self.identity = f"torch:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def fresh(self, seed: int) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            if isinstance(self.template, nn.Module):
                model = copy.deepcopy(self.template)
                for m in model.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
            else:
                model = self.template()
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def train(self, x, y, seed):
        from assay.train.classifier import train_classifier

        model = self.fresh(seed)
        with torch.random.fork_rng():
            return train_classifier(model, x, y, seed=seed, **self.train_kwargs)


def _check_resettable(module: nn.Module) -> None:
    for name, m in module.named_modules():
        if any(True for _ in m.parameters(recurse=False)) and not hasattr(m, "reset_parameters"):
            raise InputError(
                f"cannot re-initialise layer {name or type(m).__name__} ({type(m).__name__} has no "
                "reset_parameters); give a recipe 'module:function' that trains a fresh model"
            )


def recipe_for_target(target, recipe: str | Recipe | None = None, **train_kwargs) -> Recipe:
    """The recipe to train reference models for ``target``.

    ``recipe`` given: that recipe (a ``"module:function"`` string is resolved and checked now).
    Otherwise, when the target names a ``reference_source`` target (``assay compare`` names the
    baseline for each candidate, so a quantized or pruned copy is judged against the very reference
    models of its baseline), that target's recipe with the same training settings; else a clone of the target: its scikit-learn ``estimator`` attribute, or its torch
    module (``target.net`` for a :class:`~assay.targets.torch.TorchTarget`, normalisation
    included, so the copy works in the same input space).
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        return load_recipe(recipe)
    source = getattr(target, "reference_source", None)  # set by assay compare: the baseline's target
    if source is not None and source is not target:
        return recipe_for_target(source, None, **train_kwargs)
    est = getattr(target, "estimator", None)
    if est is not None and hasattr(est, "get_params"):
        return SklearnRecipe(est)
    factory = getattr(target, "factory", None)
    if factory is not None:  # the architecture's code, given with --factory: build fresh copies from it
        return TorchRecipe(_factory_in_input_space(factory, target), **train_kwargs)
    net = getattr(target, "net", None)
    if isinstance(net, nn.Module) and not _has_script(net):
        return TorchRecipe(net, **train_kwargs)
    what = "a TorchScript model" if isinstance(net, nn.Module) else f"a {getattr(target, 'kind', type(target).__name__)} target"
    raise InputError(
        f"assay cannot retrain {what} from its file to get reference models; give --factory "
        f"package.module:function that builds the architecture, recipe='package.module:function' "
        f"({RECIPE_SIGNATURE}), or reference_models=DIR of trained reference model files"
    )


def _has_script(net: nn.Module) -> bool:
    return any(isinstance(m, torch.jit.ScriptModule) for m in net.modules())


class _FactoryModel:
    """A picklable zero-argument builder: the user's factory, behind the target's normalization."""

    def __init__(self, spec, mean, std, ndim: int):
        self.spec, self.mean, self.std, self.ndim = spec, mean, std, ndim
        self.__module__, self.__qualname__ = "assay.factory", str(spec)  # names the recipe's identity

    def __call__(self) -> nn.Module:
        from assay.targets.loading import build_from_factory
        from assay.targets.torch import Normalize

        model = build_from_factory(self.spec)
        if self.mean is not None:
            model = nn.Sequential(Normalize(self.mean, self.std, self.ndim), model)
        return model


def _factory_in_input_space(factory, target) -> _FactoryModel:
    return _FactoryModel(factory, getattr(target, "mean", None), getattr(target, "std", None), len(target.input_shape))


# ------------------------------------------------------------- inference
def _estimator_log_probs(model, rows, num_classes: int) -> torch.Tensor:
    """An estimator's ``predict_proba`` spread over all classes (it knows only those it saw), clipped."""
    p = np.asarray(model.predict_proba(rows), dtype=np.float64)
    full = np.full((len(p), num_classes), 0.0)
    full[:, np.asarray(model.classes_, dtype=np.int64)] = p
    full = np.clip(full, 1e-12, None)
    full /= full.sum(1, keepdims=True)
    return torch.from_numpy(np.log(full)).float()


@torch.no_grad()
def predict_log_probs(model: Any, x: torch.Tensor, num_classes: int, batch_size: int = 1024) -> torch.Tensor:
    """Log-probabilities (N, num_classes) float32 of any supported model on ``x``.

    Torch modules are put in eval mode and run under ``no_grad`` (dropout and batch-norm in
    training mode give a different, noisier model: a known pitfall of membership tools).
    """
    if isinstance(x, np.ndarray) and x.dtype == object:  # texts: a callable or estimator on strings
        if hasattr(model, "predict_proba"):
            return _estimator_log_probs(model, list(x), num_classes)
        if callable(model) and not isinstance(model, nn.Module):
            return torch.log_softmax(torch.as_tensor(model(list(x))).double(), dim=1).float()
        raise InputError(f"a text recipe returned {type(model).__name__}; return a callable mapping a list of strings "
                         "to logits, or an estimator whose predict_proba takes a list of strings")
    if isinstance(model, nn.Module):
        model.eval()
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        out = torch.cat([model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)])
        return torch.log_softmax(out.double(), dim=1).float()
    if hasattr(model, "predict_proba"):
        return _estimator_log_probs(model, x.reshape(len(x), -1).numpy(), num_classes)
    if callable(model):
        out = torch.as_tensor(model(x)).double()
        return torch.log_softmax(out, dim=1).float()
    raise InputError(f"a recipe returned {type(model).__name__}; return an nn.Module, an estimator with predict_proba or a callable")


# ------------------------------------------------------------ the scheme
def balanced_membership(n_models: int, n: int, seed: int) -> torch.Tensor:
    """(n_models, n) bool IN-mask: complementary pairs of random halves (see the module doc)."""
    if n_models < 1:
        raise InputError(f"n_reference={n_models}; train at least one reference model")
    mask = torch.zeros(n_models, n, dtype=torch.bool)
    for pair in range((n_models + 1) // 2):
        # salted: a user who drew the target's members with torch.randperm(n, seed) must not get a
        # reference model trained on exactly the target's training set
        salt = hashlib.sha256(f"assay-membership-refs|{int(seed)}|{pair}".encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(salt[:8], "little") >> 1)
        half = torch.randperm(n, generator=g)[: n // 2]
        mask[2 * pair, half] = True
        if 2 * pair + 1 < n_models:
            mask[2 * pair + 1] = ~mask[2 * pair]
    return mask


@dataclass
class ReferenceSet:
    """Outputs of the reference models on the pool (never the models themselves)."""

    log_probs: torch.Tensor  # (R, Q, N, C) float32
    in_mask: torch.Tensor  # (R, N) bool
    seconds: float = 0.0
    trained: int = 0
    cached: int = 0
    recipe: str = ""
    info: dict = field(default_factory=dict)


def _train_one(item: tuple[int, int], shared: dict) -> np.ndarray:
    """Executor work item: train reference model ``index`` on its IN half, return its outputs."""
    index, model_seed = item
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)  # one worker per core: avoid oversubscription
    x, y, views = shared["x"], shared["y"], shared["views"]
    member = shared["in_mask"][index]
    model = shared["recipe"].train(x[member.numpy()] if isinstance(x, np.ndarray) else x[member], y[member], model_seed)
    q, n = views.shape[0], views.shape[1]
    flat = views.reshape(q * n, *views.shape[2:])
    lp = predict_log_probs(model, flat, shared["num_classes"])
    return lp.reshape(q, n, -1).numpy()


def train_reference_models(
    recipe: Recipe,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    n_models: int,
    seed: int = 0,
    views: torch.Tensor | None = None,
    num_classes: int | None = None,
    executor=None,
    cache_dir: str | Path | None = None,
    cache_key: str = "",
    progress: Callable[[str, int, int], None] | None = None,
) -> ReferenceSet:
    """Train ``n_models`` reference models on balanced halves of the pool ``(x, y)`` and return
    their log-probabilities on ``views`` (Q, N, ...) (default: the pool itself, Q = 1).

    Training runs on ``executor`` (:mod:`assay.parallel`; in-process by default), one work
    item per model. With ``cache_dir`` each model's outputs are stored under a key of
    (``cache_key`` (e.g. target and data fingerprints), recipe, seed, model index, views) and
    reused by later runs.

    Example
    -------
    >>> from sklearn.linear_model import LogisticRegression
    >>> x = torch.randn(40, 3); y = (x[:, 0] > 0).long()
    >>> refs = train_reference_models(SklearnRecipe(LogisticRegression()), x, y, n_models=2)
    >>> refs.log_probs.shape, refs.in_mask.sum(0).unique().tolist()
    (torch.Size([2, 1, 40, 2]), [1])
    """
    from assay.parallel import InProcessExecutor

    text = isinstance(x, np.ndarray) and x.dtype == object  # a text pool: the recipe trains on strings
    x = x if text else torch.as_tensor(x).float()
    y = torch.as_tensor(y).long()
    n = len(x)
    if n < 4:
        raise InputError(f"the population pool has {n} records; reference models need a larger pool")
    views = (x[None] if text else x.unsqueeze(0)) if views is None else views
    num_classes = int(num_classes or int(y.max()) + 1)
    in_mask = balanced_membership(n_models, n, seed)
    executor = executor or InProcessExecutor()
    if text:
        from assay.data.dataset import text_digest

        view_hash = hashlib.sha256(text_digest(views.reshape(-1))).hexdigest()[:12]
    else:
        view_hash = hashlib.sha256(views.contiguous().numpy().tobytes()).hexdigest()[:12]
    keys = [
        hashlib.sha256(f"{cache_key}|{recipe.identity}|{seed}|{r}|{view_hash}|{n}".encode()).hexdigest()[:24]
        for r in range(n_models)
    ]
    cache = Path(cache_dir) if cache_dir is not None else None
    outputs: dict[int, np.ndarray] = {}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        for r, k in enumerate(keys):
            p = cache / f"ref-{k}.npy"
            if p.exists():
                try:
                    a = np.load(p, allow_pickle=False)
                    if a.shape[:2] == (views.shape[0], n):
                        outputs[r] = a
                except (OSError, ValueError):
                    pass  # a corrupt entry is recomputed
    todo = [r for r in range(n_models) if r not in outputs]
    t0 = time.perf_counter()
    if todo:
        if progress:
            progress("training reference models", n_models - len(todo), n_models)
        shared = {"recipe": recipe, "x": x, "y": y, "views": views, "in_mask": in_mask, "num_classes": num_classes}
        items = [(r, int(seed) * 1_000_003 + r) for r in todo]
        for r, out in zip(todo, executor.map(_train_one, items, shared)):
            out = np.asarray(out, dtype=np.float32)
            outputs[r] = out
            if cache is not None:
                tmp = cache / f".tmp-{keys[r]}.npy"
                np.save(tmp, out)
                tmp.replace(cache / f"ref-{keys[r]}.npy")
        if progress:
            progress("training reference models", n_models, n_models)
    log_probs = torch.from_numpy(np.stack([outputs[r] for r in range(n_models)]))
    return ReferenceSet(log_probs, in_mask, time.perf_counter() - t0, len(todo), n_models - len(todo), recipe.identity)
