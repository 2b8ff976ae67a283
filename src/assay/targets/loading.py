"""Turn a model file, directory or URL into a :class:`~assay.targets.base.Target`, safely.

Nothing is unpickled unless the user says so (``trust_pickle=True``, the CLI's ``--trust-pickle``):
unpickling runs whatever code the file's author put in it.

=========================  ===================================================================
source                     how it is loaded
=========================  ===================================================================
``http(s)://.../v1``       :class:`~assay.targets.chat_api.ChatTarget`, an OpenAI-compatible API
                           (``llm_options`` passed on)
``http://``, ``https://``  :class:`~assay.targets.http.HttpTarget` (``http_options`` passed on)
``*.gguf``                 :meth:`~assay.targets.causal_lm.CausalLMTarget.from_gguf` (dequantized
                           once, cached as safetensors)
``*.onnx``                 :class:`~assay.targets.onnx.OnnxTarget`
``*.safetensors``          ``factory()`` builds the ``nn.Module``; weights loaded strictly
``*.pt``/``.pth``/``.ts``  TorchScript (``torch.jit.load``); else ``torch.load(weights_only=True)``:
                           a state_dict (needs ``factory``); anything else needs trust_pickle
``*.skops``                ``skops.io.load``; types skops does not trust need trust_pickle
``*.pkl``/``.pickle``/     refused unless trust_pickle, then ``joblib.load``
``.joblib``
a directory with           :meth:`~assay.targets.causal_lm.CausalLMTarget.from_pretrained` for a
``config.json``            ``...ForCausalLM`` architecture, else
                           :meth:`~assay.targets.huggingface.HuggingFaceTarget.from_pretrained`
=========================  ===================================================================
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from assay.errors import InputError, TargetError, UnsafeModelFile
from assay.targets.base import Target

TORCH_SUFFIXES = (".pt", ".pth", ".ts")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SUPPORTED = (".onnx, .safetensors, .pt/.pth/.ts, .skops, .pkl/.pickle/.joblib, .gguf, a Hugging Face directory, "
             "or an http(s) URL")


def is_language_model(source: Any) -> bool:
    """Whether ``source`` names a generative language model (a .gguf file, a causal-LM directory, an
    OpenAI-compatible URL): its data are texts for the language probes, not a classifier's table."""
    from assay.targets.base import GENERATE, Target

    if isinstance(source, Target):
        return GENERATE in source.capabilities
    if not isinstance(source, (str, os.PathLike)):
        return False
    text = os.fspath(source)
    if text.startswith(("http://", "https://")):
        from assay.targets.chat_api import looks_like_openai_url

        return looks_like_openai_url(text)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return True
    if path.is_dir() and (path / "config.json").is_file():
        from assay.targets.causal_lm import is_causal_lm_dir

        return is_causal_lm_dir(path)
    return False


def _pickle_refusal(path: Path) -> UnsafeModelFile:
    return UnsafeModelFile(
        f"{path} is a pickle file that can run arbitrary code; re-export as TorchScript/safetensors "
        "or pass --trust-pickle if you trust its source"
    )


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """``"package.module:callable"`` -> the callable (which must build the ``nn.Module``)."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"factory {spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"cannot import factory module {module_name!r} ({e}); check --factory and PYTHONPATH") from e
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise InputError(f"module {module_name!r} has no {attr!r}; check --factory")
    if not callable(fn):
        raise InputError(f"factory {spec!r} is not callable; point --factory at a function or class")
    return fn


def build_from_factory(factory: str | Callable[[], nn.Module]) -> nn.Module:
    fn = import_factory(factory) if isinstance(factory, str) else factory
    try:
        inspect.signature(fn).bind()
    except TypeError as e:
        raise InputError(f"factory {factory!r} cannot be called without arguments ({e}); point --factory at a "
                         "function that builds the model with no arguments (wrap it in a small function)") from None
    except ValueError:  # no signature to inspect (some builtins): just call it
        pass
    model = fn()
    if not isinstance(model, nn.Module):
        raise InputError(f"factory {factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, factory: Any) -> nn.Module:
    """Load ``state`` into ``model``, or raise one line saying what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} with other shapes (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})")
        raise TargetError(
            f"the weights in {path} do not fit the model built by {factory}: {', '.join(parts)}; "
            "check that --factory builds the same architecture"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def _is_pickle(path: Path) -> bool:
    """Whether the file is a pickle stream (or a torch.save zip holding one), without running it."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return any(n.endswith(".pkl") for n in z.namelist())
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):  # parses opcodes only; nothing is executed
                pass
    except Exception:
        return False
    return True


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """A state_dict, or one nested in a training checkpoint under a usual key."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                found = _find_state_dict(inner)
                if found is not None:
                    return found
    return None


def load_target(
    source: str | os.PathLike,
    *,
    factory: str | Callable[[], nn.Module] | None = None,
    trust_pickle: bool = False,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    query_budget: int | None = None,
    device: str | torch.device | None = "auto",
    http_options: Mapping[str, Any] | None = None,
    task: str | None = None,
    input_shape_hint: Sequence[int] | None = None,
    token_budget: int | None = None,
    llm_options: Mapping[str, Any] | None = None,
) -> Target:
    """Load the model at ``source`` as a :class:`Target` (see the module doc for each kind).

    Parameters
    ----------
    source : a file, a Hugging Face model directory, or an ``http(s)://`` scoring endpoint.
    factory : ``"package.module:callable"`` (or a callable) that builds the ``nn.Module`` for
        ``.safetensors`` weights and state_dicts.
    trust_pickle : allow loading files that need unpickling (arbitrary code). Off by default.
    input_shape : per-sample input shape; inferred for ONNX (static shape), scikit-learn
        (``n_features_in_``) and Hugging Face models; required for PyTorch and HTTP models.
    num_classes : inferred from the model where possible; required for HTTP.
    bounds : valid input range; default ``(0, 1)``, except scikit-learn models: ``(-inf, inf)``.
    mean, std : per-channel normalization applied inside PyTorch targets.
    query_budget : hard limit on queried samples.
    device : for PyTorch targets (``"auto"`` picks CUDA, then MPS, then CPU).
    http_options : extra keyword arguments for :class:`~assay.targets.http.HttpTarget`.
    task : for Hugging Face directories, overrides the task read from the config.
    input_shape_hint : the data's per-sample shape, used only where neither ``input_shape`` nor the
        model says what it takes (torch modules, HTTP, dynamic ONNX): a scikit-learn or static ONNX
        model keeps its own, so a mismatch with the data is reported against the data.
    token_budget : language models: hard limit on prompt plus generated tokens.
    llm_options : language models: extra keyword arguments for
        :class:`~assay.targets.chat_api.ChatTarget` or :class:`~assay.targets.causal_lm.CausalLMTarget`.

    Returns
    -------
    Target

    Raises
    ------
    InputError : missing file, unknown kind, missing --factory / --input-shape.
    UnsafeModelFile : the file needs unpickling and ``trust_pickle`` is False.
    TargetError : the file is not a loadable model or its weights do not fit.

    Example
    -------
    >>> t = load_target("model.safetensors", factory="assay.data.demo:build_demo_model",
    ...                 input_shape=(1, 8, 8))                  # doctest: +SKIP
    """
    text = os.fspath(source) if not isinstance(source, str) else source
    llm_kw = dict(llm_options or {})
    if text.startswith(("http://", "https://")):
        from assay.targets.chat_api import ChatTarget, looks_like_openai_url

        if looks_like_openai_url(text):
            return ChatTarget(text, query_budget=query_budget, token_budget=token_budget,
                              **_llm_options(ChatTarget, llm_kw, "an OpenAI-compatible URL"))
        if llm_kw:
            raise InputError("--llm options apply to language models (.gguf, a causal-LM directory, an http(s)://.../v1 "
                             "API); this URL is a classifier endpoint (use --http)")
        from assay.targets.http import HttpTarget

        shape = input_shape or input_shape_hint
        if shape is None or num_classes is None:
            raise InputError("an HTTP model needs --input-shape and --num-classes (they cannot be asked from the API)")
        target = HttpTarget(
            text, input_shape=shape, num_classes=num_classes, bounds=bounds or (0.0, 1.0),
            query_budget=query_budget, **dict(http_options or {}),
        )
        target.input_shape_source = "flag" if input_shape else "data"
        return target
    path = Path(text).expanduser()
    if not path.exists():
        raise InputError(f"model file {path} does not exist; check the path")
    target = _load_path(path, factory, trust_pickle, input_shape, num_classes, bounds, mean, std, query_budget,
                        device, task, input_shape_hint, token_budget, llm_kw)
    if input_shape:
        target.input_shape_source = "flag"
    elif not hasattr(target, "input_shape_source"):
        target.input_shape_source = "model"
    from assay.targets.identity import file_digest

    target.source_sha256 = file_digest(path)  # the file's bytes are part of the model's identity
    if factory is not None and hasattr(target, "net"):
        target.factory = factory  # the architecture's code: privacy probes train reference copies from it
    return target


def _load_path(path: Path, factory, trust_pickle, input_shape, num_classes, bounds, mean, std, query_budget,
               device, task, hint=None, token_budget=None, llm_kw=None) -> Target:
    llm_kw = dict(llm_kw or {})
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is a directory without config.json; point at a model file or a Hugging Face model directory")
        from assay.targets.causal_lm import CausalLMTarget, is_causal_lm_dir

        if is_causal_lm_dir(path) and task is None:
            return CausalLMTarget.from_pretrained(path, device=device, query_budget=query_budget, token_budget=token_budget,
                                                  **_llm_options(CausalLMTarget, llm_kw, "a local model"))
        from assay.targets.huggingface import HuggingFaceTarget

        return HuggingFaceTarget.from_pretrained(
            path, task, input_shape=input_shape, mean=mean, std=std, device=device, query_budget=query_budget
        )
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        from assay.targets.causal_lm import CausalLMTarget

        return CausalLMTarget.from_gguf(path, device=device, query_budget=query_budget, token_budget=token_budget,
                                        **_llm_options(CausalLMTarget, llm_kw, "a local model"))
    torch_kw = dict(num_classes=num_classes, bounds=bounds or (0.0, 1.0), mean=mean, std=std, device=device, query_budget=query_budget)
    if suffix == ".onnx":
        from assay.targets.onnx import OnnxTarget

        try:
            return OnnxTarget(path, input_shape=input_shape, num_classes=num_classes, bounds=bounds or (0.0, 1.0),
                              query_budget=query_budget, output="auto")
        except TargetError as e:
            if input_shape is not None or hint is None or "dynamic shape" not in str(e):
                raise
            target = OnnxTarget(path, input_shape=hint, num_classes=num_classes, bounds=bounds or (0.0, 1.0),
                                query_budget=query_budget, output="auto")
            target.input_shape_source = "data"
            return target
    if suffix == ".safetensors":
        if factory is None:
            raise InputError(f"{path} holds weights only; pass --factory package.module:function that builds the model")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise TargetError(f"{path} is not a readable safetensors file ({e}); re-export it with safetensors.torch.save_file") from e
        model = load_state_dict_strict(build_from_factory(factory), state, path, factory)
        return _torch_target(model, path, input_shape, torch_kw, hint)
    if suffix in TORCH_SUFFIXES:
        return _load_torch_file(path, factory, trust_pickle, input_shape, torch_kw, hint)
    if suffix == ".skops":
        return _sklearn_or_torch(_load_skops(path, trust_pickle), path, input_shape, num_classes, bounds, torch_kw,
                                 query_budget, hint)
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise _pickle_refusal(path)
        import joblib  # loads plain pickles too

        try:
            obj = joblib.load(path)
        except Exception as e:
            raise TargetError(f"cannot unpickle {path} ({type(e).__name__}: {e}); check the file and its Python packages") from e
        return _sklearn_or_torch(obj, path, input_shape, num_classes, bounds, torch_kw, query_budget, hint)
    raise InputError(f"{path} has an unknown model kind {suffix or '(no extension)'!r}; use {SUPPORTED}")


def _llm_options(cls, options: dict[str, Any], what: str) -> dict[str, Any]:
    """Refuse options the language-model target of this kind does not take (one line, the valid keys)."""
    valid = [k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "model", "tokenizer", "url")]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise InputError(f"--llm {', '.join(bad)} does not apply to {what}; valid keys: {', '.join(valid)}")
    return options


def _torch_target(model: nn.Module, path: Path, input_shape, torch_kw, hint=None) -> Target:
    from assay.targets.torch import TorchTarget

    own = getattr(model, "input_shape", None)
    shape = input_shape or own or hint
    if shape is None:
        raise InputError(f"cannot infer the input shape of {path}; pass --input-shape (per sample, e.g. 1,28,28)")
    try:
        target = TorchTarget(model, input_shape=tuple(shape), name=path.name, **torch_kw)
    except RuntimeError as e:  # the shape-probing forward pass failed
        fix = "fix --input-shape" if input_shape else ("reshape the data or pass --input-shape" if not own else "fix the data")
        raise TargetError(f"the model in {path} fails on inputs of shape {tuple(shape)} ({str(e).splitlines()[0]}); {fix}") from e
    target.input_shape_source = "flag" if input_shape else "model" if own else "data"
    return target


def _load_torch_file(path: Path, factory, trust_pickle: bool, input_shape, torch_kw, hint=None) -> Target:
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; it is still the safe format here
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception:  # not a TorchScript archive
        module = None
    if module is not None:
        return _torch_target(module, path, input_shape, torch_kw, hint)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _is_pickle(path):
            raise TargetError(f"{path} is neither TorchScript nor a PyTorch/pickle file; check the file") from e
        if not trust_pickle:
            raise _pickle_refusal(path) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise TargetError(f"cannot unpickle {path} ({type(e2).__name__}: {e2}); check the file and its Python packages") from e2
    except Exception as e:
        raise TargetError(f"{path} is not a PyTorch file torch.load can read ({type(e).__name__}); check the file") from e
    if isinstance(obj, nn.Module):
        return _torch_target(obj.eval(), path, input_shape, torch_kw, hint)
    state = _find_state_dict(obj)
    if state is None:
        raise TargetError(f"{path} holds a {type(obj).__name__}, neither a model nor a state_dict; save the model or its state_dict")
    if factory is None:
        raise InputError(f"{path} holds a state_dict (weights only); pass --factory package.module:function that builds the model")
    model = load_state_dict_strict(build_from_factory(factory), state, path, factory)
    return _torch_target(model, path, input_shape, torch_kw, hint)


def _load_skops(path: Path, trust_pickle: bool):
    try:
        import skops.io as sio
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TargetError("skops is not installed; pip install 'assay[skops]'") from e
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as e:
        raise TargetError(f"{path} is not a readable skops file ({type(e).__name__}); re-save it with skops.io.dump") from e
    unknown = [t for t in untrusted if not _standard_type(t)]
    if unknown and not trust_pickle:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise UnsafeModelFile(
            f"{path} contains types outside scikit-learn, numpy and scipy ({shown}) whose loading or use can "
            "run code; pass --trust-pickle if you trust its source"
        )
    try:
        return sio.load(path, trusted=untrusted or None)
    except (AttributeError, ImportError) as e:  # a trusted type whose code is not importable here
        raise TargetError(f"{path} needs code that is not importable here ({e}); install or put on PYTHONPATH the "
                          "package that defines the model's custom types") from None


_STANDARD_PACKAGES = ("sklearn", "numpy", "scipy")


def _standard_type(name: str) -> bool:
    """A class (not a function: a stored function may be called on the data later) defined in
    scikit-learn, numpy or scipy. skops trusts only a short list by default, which refuses every tree
    ensemble; these packages' classes hold data and load without running anything of the file's."""
    module, _, attr = name.rpartition(".")
    if not module or module.split(".")[0] not in _STANDARD_PACKAGES:
        return False
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type)


def _sklearn_or_torch(obj, path: Path, input_shape, num_classes, bounds, torch_kw, query_budget, hint=None) -> Target:
    if isinstance(obj, nn.Module):
        return _torch_target(obj.eval(), path, input_shape, torch_kw, hint)
    if hasattr(obj, "predict"):
        from assay.targets.sklearn import SklearnTarget

        own = getattr(obj, "n_features_in_", None) is not None
        target = SklearnTarget(obj, input_shape=input_shape or (None if own else hint), num_classes=num_classes,
                               bounds=bounds, query_budget=query_budget, name=path.name)
        if not input_shape:
            target.input_shape_source = "model" if own else "data"
        return target
    raise TargetError(f"{path} holds a {type(obj).__name__}, not a model (no predict(), not an nn.Module)")
