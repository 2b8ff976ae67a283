"""ONNX models run with onnxruntime on CPU (black-box: scores, no gradients)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from assay.errors import InputError, TargetError
from assay.targets.base import LABELS, SCORES, Target


def _static_dims(shape) -> tuple[int, ...] | None:
    """Per-sample dims of an onnxruntime shape (batch dim dropped), or None if any is symbolic."""
    dims = list(shape)[1:]
    if all(isinstance(d, int) and d > 0 for d in dims):
        return tuple(dims)
    return None


def looks_like_probs(s: np.ndarray, atol: float = 1e-4) -> bool:
    """True when every row is non-negative and sums to 1 (a softmax output, not logits)."""
    return bool(s.size) and bool((s >= -atol).all()) and bool(np.allclose(s.sum(axis=1), 1.0, atol=atol))


class OnnxTarget(Target):
    """An ONNX classifier, loaded from a path or bytes and run with onnxruntime on CPU.

    The per-sample input shape is read from the model when it is static (a dynamic batch dimension
    is fine); otherwise pass ``input_shape``. Inputs are fed as float32. With ``output="auto"`` the
    target checks the output on a few inputs in ``bounds``: rows that are non-negative and sum to 1
    are probabilities, anything else logits.

    Parameters
    ----------
    path_or_bytes : a ``.onnx`` file path or the serialized model.
    input_name : which graph input to feed; default the first.
    output_index : which graph output holds the scores; default the first.
    output : ``"logits"``, ``"probs"`` or ``"auto"``.
    bounds : valid input range (default ``(0, 1)``).
    input_shape : per-sample shape when the model's is dynamic.
    num_classes : default the output's width.
    query_budget : hard limit on queried samples.

    Example
    -------
    >>> t = OnnxTarget("model.onnx")                     # doctest: +SKIP
    >>> t.scores(torch.rand(4, *t.input_shape)).shape    # doctest: +SKIP
    torch.Size([4, 10])
    """

    kind = "onnx"

    def __init__(
        self,
        path_or_bytes: str | os.PathLike | bytes,
        *,
        input_name: str | None = None,
        output_index: int = 0,
        output: str = "logits",
        bounds: tuple[float, float] = (0.0, 1.0),
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        query_budget: int | None = None,
        batch_size: int = 256,
        name: str | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise TargetError("onnxruntime is not installed; pip install 'assay[onnx]'") from e
        if output not in ("logits", "probs", "auto"):
            raise TargetError(f"output={output!r} is not one of logits, probs, auto")
        src = path_or_bytes if isinstance(path_or_bytes, bytes) else os.fspath(path_or_bytes)
        if isinstance(src, str) and not os.path.isfile(src):
            raise InputError(f"ONNX model {src} does not exist; check the path")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TargetError(f"onnxruntime cannot load the model ({first}); check it is a valid .onnx file") from e
        import hashlib

        from assay.targets.identity import file_digest

        self._digest = hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else file_digest(src)
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = input_name or names[0]
        if self.input_name not in names:
            raise TargetError(f"the model has no input {self.input_name!r}; its inputs are {names}")
        if len(inputs) > 1 and input_name is None:
            raise TargetError(f"the model has several inputs {names}; choose one with input_name")
        outputs = self.session.get_outputs()
        if not 0 <= output_index < len(outputs):
            raise TargetError(f"output_index {output_index} is out of range: the model has {len(outputs)} outputs")
        self.output_index = output_index
        self._output_name = outputs[output_index].name
        model_input = next(i for i in inputs if i.name == self.input_name)
        static = _static_dims(model_input.shape)
        batch_dim = list(model_input.shape)[0] if model_input.shape else None
        # a model exported with a fixed batch size is fed padded chunks of exactly that size
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        if input_shape is None:
            if static is None:
                raise TargetError(
                    f"the model's input {self.input_name!r} has dynamic shape {model_input.shape}; "
                    "pass --input-shape (per sample, e.g. 3,32,32)"
                )
            input_shape = static
        elif static is not None and tuple(input_shape) != static:
            raise TargetError(
                f"--input-shape {tuple(input_shape)} differs from the model's input shape {static}; drop it or fix it"
            )
        self._input_shape = tuple(int(d) for d in input_shape)
        # One uncounted calibration pass on inputs in bounds: output width and, for "auto", the kind.
        probe = self._calibration_inputs(bounds)
        s = self._run(probe)
        if s.ndim != 2:
            raise TargetError(
                f"output {output_index} has shape {s.shape}, expected (batch, classes); pick the scores output with output_index"
            )
        if output == "auto":
            output = "probs" if looks_like_probs(s) else "logits"
        self.output = output
        super().__init__(
            num_classes=num_classes or s.shape[1],
            input_shape=self._input_shape,
            bounds=bounds,
            capabilities={SCORES, LABELS},
            query_budget=query_budget,
            batch_size=batch_size,
            name=name or (os.path.basename(src) if isinstance(src, str) else "onnx"),
        )

    def _calibration_inputs(self, bounds) -> np.ndarray:
        lo, hi = (float(b) for b in bounds)
        # infinite bounds (tabular models): calibrate on a unit-width interval next to the finite end
        lo = lo if math.isfinite(lo) else (hi - 1.0 if math.isfinite(hi) else -1.0)
        hi = hi if math.isfinite(hi) else lo + 1.0
        rng = np.random.default_rng(0)
        x = rng.uniform(lo, hi, size=(4, *self._input_shape)).astype(np.float32)
        x[0] = lo
        return x

    def _run(self, a: np.ndarray) -> np.ndarray:
        b = self._fixed_batch
        if b is not None and len(a) != b:
            parts = []
            for i in range(0, len(a), b):
                chunk = a[i : i + b]
                pad = np.zeros((b - len(chunk), *a.shape[1:]), dtype=a.dtype)
                parts.append(self._run(np.concatenate([chunk, pad]))[: len(chunk)])
            return np.concatenate(parts)
        try:
            out = self.session.run([self._output_name], {self.input_name: a})[0]
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TargetError(f"onnxruntime failed on inputs of shape {a.shape} ({first}); check --input-shape") from e
        if isinstance(out, list):  # e.g. a ZipMap output: one {class: prob} dict per row
            out = np.array([[row[k] for k in sorted(row)] for row in out], dtype=np.float32)
        return np.asarray(out, dtype=np.float32)

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().cpu().numpy().astype(np.float32, copy=False)
        s = self._run(np.ascontiguousarray(a))
        if s.shape != (len(a), self.num_classes):
            raise TargetError(
                f"the model returned shape {s.shape}, expected ({len(a)}, {self.num_classes}); check output_index"
            )
        return torch.from_numpy(s)

    def content_digest(self) -> str:
        return self._digest

    def describe(self):
        d = super().describe()
        d.update(input_name=self.input_name, output_index=self.output_index)
        return d
