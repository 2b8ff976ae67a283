"""Content identity of models and files, for checkpoints and caches.

A checkpoint may only be reused for the very same model: two models with equal weights but
different code (an input transform, a temperature held as a plain attribute) must never share
results. So identity is computed from everything that determines the function:

- a TorchScript module: its serialized archive (code, graph, constants, attributes and weights);
- a Python ``nn.Module``: every parameter and buffer (non-persistent ones too), and for every
  submodule its class, the source code of that class where Python can find it, and its plain
  attributes (numbers, strings, flags: a temperature or a threshold set in ``__init__``);
- a scikit-learn estimator: its pickled state (pickling only *writes* bytes; nothing is loaded);
- a model file: its bytes.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

_PLAIN = (int, float, str, bool, type(None))


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, or of every file under a directory (names included), streamed."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def _tensor_bytes(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim too


def _state_bytes(h, name: str, v: Any) -> None:
    """Hash a state_dict entry of any form: tensors (quantized ones by their integers, scale and zero
    point), tuples of them, or plain values."""
    if isinstance(v, torch.Tensor):
        if v.is_quantized:
            h.update(f"{name}|{v.qscheme()}".encode())
            if v.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                h.update(f"{v.q_scale()}|{v.q_zero_point()}".encode())
            else:
                _tensor_bytes(h, name + ".scales", v.q_per_channel_scales())
                _tensor_bytes(h, name + ".zero_points", v.q_per_channel_zero_points())
            v = v.int_repr()
        _tensor_bytes(h, name, v)
    elif isinstance(v, (tuple, list)):
        for i, item in enumerate(v):
            _state_bytes(h, f"{name}.{i}", item)
    else:
        h.update(f"{name}|{v!r}".encode())


def _plain_attributes(m: nn.Module) -> str:
    out = []
    for k, v in sorted(vars(m).items()):
        if k.startswith("_") or k == "training":
            continue
        if isinstance(v, _PLAIN) or (isinstance(v, (tuple, list)) and all(isinstance(i, _PLAIN) for i in v)):
            out.append(f"{k}={v!r}")
    return ";".join(out)


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):  # defined in a REPL or a C extension: the name must do
        return ""


def module_digest(module: nn.Module) -> str:
    """Identity of a torch module (see the module doc)."""
    h = hashlib.sha256()
    if isinstance(module, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        h.update(b"torchscript|")
        h.update(buf.getvalue())
        return h.hexdigest()
    h.update(b"python|")
    for name, p in module.named_parameters(remove_duplicate=False):
        _tensor_bytes(h, name, p)
    for name, b in module.named_buffers(remove_duplicate=False):
        _tensor_bytes(h, name, b)
    # state neither a parameter nor a buffer: quantized modules keep packed weights in their state_dict
    seen = {n for n, _ in module.named_parameters(remove_duplicate=False)} | {
        n for n, _ in module.named_buffers(remove_duplicate=False)}
    for name, v in module.state_dict(keep_vars=True).items():
        if name not in seen:
            _state_bytes(h, name, v)
    for name, m in module.named_modules(remove_duplicate=False):
        if isinstance(m, torch.jit.ScriptModule):  # a scripted part inside a Python model
            h.update(f"{name}|{module_digest(m)}".encode())
            continue
        cls = type(m)
        h.update(f"{name}|{cls.__module__}.{cls.__qualname__}|{_plain_attributes(m)}".encode())
        h.update(_class_source(cls).encode())
    return h.hexdigest()


def estimator_digest(estimator: Any) -> str:
    """Identity of a fitted scikit-learn style estimator: its pickled bytes (dump only)."""
    h = hashlib.sha256(f"{type(estimator).__module__}.{type(estimator).__qualname__}|".encode())
    try:
        h.update(pickle.dumps(estimator, protocol=4))
    except Exception:  # noqa: BLE001 - unpicklable: fall back on parameters and fitted arrays
        h.update(repr(sorted(estimator.get_params().items())).encode() if hasattr(estimator, "get_params") else b"")
        for k, v in sorted(vars(estimator).items()):
            if k.endswith("_") and hasattr(v, "tobytes"):
                h.update(k.encode())
                h.update(v.tobytes())
    return h.hexdigest()
