"""How assay talks to a model: one module per kind of access.

Optional dependencies stay unimported until used: ``SklearnTarget``, ``OnnxTarget``
(onnxruntime), ``HttpTarget`` (httpx), ``HuggingFaceTarget`` (transformers) and ``load_target``
are resolved lazily on first access.
"""
from importlib import import_module

from assay.targets.base import GENERATE, GRADIENTS, LABELS, SCORES, QueryBudget, Target
from assay.targets.torch import TorchTarget

_LAZY = {
    "SklearnTarget": "assay.targets.sklearn",
    "OnnxTarget": "assay.targets.onnx",
    "HttpTarget": "assay.targets.http",
    "HuggingFaceTarget": "assay.targets.huggingface",
    "HuggingFaceImageTarget": "assay.targets.huggingface",
    "HuggingFaceTextTarget": "assay.targets.huggingface",
    "load_target": "assay.targets.loading",
}

__all__ = ["GENERATE", "GRADIENTS", "LABELS", "SCORES", "QueryBudget", "Target", "TorchTarget", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'assay.targets' has no attribute {name!r}")
