"""Training recipes given by name: ``"package.module:function"`` with ``train_fn(x, y, seed) -> model``.

Used wherever assay trains models of the user's own making (membership reference models, DP audits):
the function is imported and its signature checked before any training, with a one-line error."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from assay.errors import InputError

RECIPE_SIGNATURE = "train_fn(x, y, seed) -> model"


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
