"""Faster inference-only copies of torch models, for work that runs many forward passes of one
shape (randomized smoothing's noise samples, the Square attack), and the one offline import of
``transformers`` (targets, scorers and demos that load Hugging Face models). Imports only assay.errors."""

from __future__ import annotations

import os

import torch
from torch import nn

from assay.errors import TargetError


def offline_transformers(install_hint: str = "pip install 'assay[hf]'"):
    """``transformers``, imported so that it never reaches the network (the offline variables are
    set before transformers / huggingface_hub read their settings), quiet; a one-line TargetError
    naming ``install_hint`` when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TargetError(f"transformers is not installed; {install_hint}") from e
    transformers.logging.set_verbosity_error()
    return transformers


def fast_inference(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """A faster, inference-only module computing the same function as ``module``, or ``module`` itself.

    For work that only needs forward passes over many batches of one shape (randomized smoothing's
    thousands of noisy copies), this tries TorchScript trace + freeze + ``optimize_for_inference``
    (constants folded, conv/batch-norm/ReLU fused, oneDNN layouts), then channels-last weights. A
    candidate is kept only if it reproduces ``module`` on ``example`` and on a smaller batch (same
    argmax, values within float32 rounding); a randomized, training-mode or untraceable model is
    returned unchanged, as is one with forward hooks. Other Python side effects inside ``forward``
    (a hand-written counter) would not survive tracing: pass such models with optimization off. A
    counted ``TorchTarget.module`` keeps its counting: the model inside it is what gets optimized.
    Gradients do not flow through the result.
    """
    if callable(getattr(module, "with_inner", None)):  # a counted TorchTarget.module: optimise the model inside
        inner = fast_inference(module.inner, example.to(module.inner_device))
        return module if inner is module.inner else module.with_inner(inner)
    if not isinstance(module, nn.Module) or module.training or example.shape[0] < 1 or _has_hooks(module):
        return module
    import copy
    import warnings

    small = example[: max(1, example.shape[0] // 3)]
    with torch.no_grad():
        reference, reference_small = module(example), module(small)
        if not torch.is_floating_point(reference) or not torch.equal(reference, module(example)):
            return module  # labels only, or randomized: nothing to gain or nothing safe to compare

        def script():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(module, example, check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

        def channels_last():
            if example.dim() != 4:
                raise ValueError("channels-last needs NCHW inputs")
            return copy.deepcopy(module).to(memory_format=torch.channels_last)

        for build in (script, channels_last):
            try:
                candidate = build()
                if all(_same_function(candidate(x), ref) for x, ref in ((example, reference), (small, reference_small))):
                    return candidate
            except Exception:  # noqa: BLE001 - any failure to build or run a candidate means: keep the original
                continue
    return module


def _has_hooks(module: nn.Module) -> bool:
    """Hooks are Python side effects a traced graph would silently drop."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _same_function(out: torch.Tensor, ref: torch.Tensor) -> bool:
    if out.shape != ref.shape or not torch.is_floating_point(out):
        return False
    scale = ref.abs().max().clamp(min=1.0)
    return bool((out - ref).abs().max() <= 1e-4 * scale) and bool((out.argmax(-1) == ref.argmax(-1)).all())
