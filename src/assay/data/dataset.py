"""Evaluation data: inputs, labels and the optional fields other axes need.

``groups``   sensitive attributes per row (fairness), name -> array of values
``member``   bool per row: True if the row was in the model's training set (privacy)
``x_ood``    an out-of-distribution set (reliability)
``population``  further records from the same distribution that were NOT used in training
             (privacy: the membership attacks' knowledge of the population)

Text data (``kind == "text"``) holds its inputs as a 1-D numpy array of Python strings (dtype object,
so one long review does not widen every row); its labels, groups and member mask are as for tensors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from assay.errors import InputError


@dataclass
class Dataset:
    x: torch.Tensor | np.ndarray  # a numpy array of str when kind == "text"
    y: torch.Tensor | None = None
    name: str = "data"
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    member: torch.Tensor | None = None
    x_ood: torch.Tensor | np.ndarray | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    kind: str = "auto"  # "image", "tabular", "text", "auto"
    population: Dataset | None = None
    warnings: list[str] = field(default_factory=list)  # what loading noticed (unused keys), for the report

    def __post_init__(self):
        if self.kind == "text" or (self.kind == "auto" and _looks_like_text(self.x)):
            self.kind = "text"
            self.x = as_text_array(self.x, "inputs")
        else:
            self.x = _as_float_tensor(self.x, "inputs")
        if self.y is not None:
            self.y = torch.as_tensor(np.asarray(self.y)).long().reshape(-1)
            if len(self.y) != len(self.x):
                raise InputError(f"{len(self.x)} inputs but {len(self.y)} labels; give one label per input")
        if self.member is not None:
            self.member = torch.as_tensor(np.asarray(self.member)).bool().reshape(-1)
            if len(self.member) != len(self.x):
                raise InputError(f"membership mask has {len(self.member)} rows for {len(self.x)} inputs")
        for k, v in list(self.groups.items()):
            v = np.asarray(v)
            if len(v) != len(self.x):
                raise InputError(f"sensitive attribute {k!r} has {len(v)} rows for {len(self.x)} inputs")
            self.groups[k] = v
        if self.x_ood is not None and self.kind == "text":
            self.x_ood = as_text_array(self.x_ood, "OOD inputs")
        elif self.x_ood is not None:
            self.x_ood = _as_float_tensor(self.x_ood, "OOD inputs")
            if self.x_ood.shape[1:] != self.x.shape[1:]:
                raise InputError(
                    f"OOD set has per-sample shape {tuple(self.x_ood.shape[1:])} but the data has "
                    f"{tuple(self.x.shape[1:])}; give OOD inputs of the same shape"
                )
        if self.kind == "auto":
            self.kind = "image" if self.x.dim() == 4 else "tabular" if self.x.dim() == 2 else "other"
        if self.population is not None and tuple(self.population.x.shape[1:]) != tuple(self.x.shape[1:]):
            raise InputError(f"population records have per-sample shape {tuple(self.population.x.shape[1:])} but the "
                             f"data has {tuple(self.x.shape[1:])}; give population data of the same shape")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def has(self, field_name: str) -> bool:
        return {
            "labels": self.y is not None,
            "groups": bool(self.groups),
            "members": self.member is not None,
            "ood": self.x_ood is not None,
        }.get(field_name, False)

    def subset(self, idx) -> Dataset:
        idx = torch.as_tensor(idx)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().flatten()
        np_idx = idx.numpy()
        return replace(
            self,
            x=self.x[np_idx] if self.kind == "text" else self.x[idx],
            y=None if self.y is None else self.y[idx],
            member=None if self.member is None else self.member[idx],
            groups={k: v[np_idx] for k, v in self.groups.items()},
        )

    def fingerprint(self) -> str:
        """Content hash of everything a probe may read, so checkpoints are never reused for other data."""
        h = hashlib.sha256(f"{self.kind}|{len(self)}".encode())

        def inputs(v):
            return text_digest(v) if self.kind == "text" else (
                f"{tuple(v.shape)}|{v.dtype}|".encode() + v.contiguous().numpy().tobytes())

        h.update(inputs(self.x))
        if self.x_ood is not None:
            h.update(b"|ood|" + inputs(self.x_ood))
        for label, t in (("y", self.y), ("member", self.member)):
            if t is not None:
                h.update(f"|{label}|{tuple(t.shape)}".encode())
                h.update(t.contiguous().numpy().tobytes())
        for k in sorted(self.groups):
            h.update(f"|group|{k}".encode())
            h.update(np.asarray(self.groups[k]).astype(str).tobytes())
        for label, names in (("features", self.feature_names), ("classes", self.class_names)):
            if names:
                h.update(f"|{label}|{chr(31).join(names)}".encode())
        if self.population is not None:
            h.update(f"|population|{self.population.fingerprint()}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "n": len(self), "shape": list(self.x.shape[1:]), "kind": self.kind}
        if self.kind == "text":  # no value range: the size of the texts instead (min, mean, max words)
            words = np.array([len(t.split()) for t in self.x])
            d["words_per_text"] = [int(words.min()), float(round(words.mean(), 2)), int(words.max())] if len(self) else None
        else:
            d["value_range"] = [float(self.x.min()), float(self.x.max())] if len(self) else None
        if self.y is not None:
            d["classes"] = int(self.y.max().item()) + 1 if len(self.y) else 0
        if self.groups:
            d["sensitive_attributes"] = sorted(self.groups)
        if self.member is not None:
            d["members"] = int(self.member.sum())
        if self.x_ood is not None:
            d["ood"] = len(self.x_ood)
        if self.population is not None:
            d["population"] = len(self.population)
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


def _looks_like_text(x) -> bool:
    if isinstance(x, str):
        return True
    if isinstance(x, torch.Tensor):
        return False
    if isinstance(x, np.ndarray):
        return x.dtype.kind == "U" or (x.dtype == object and x.size > 0 and isinstance(x.flat[0], str))
    return isinstance(x, (list, tuple)) and len(x) > 0 and isinstance(x[0], str)


def as_text_array(x, what: str) -> np.ndarray:
    """Texts as a 1-D object array of Python ``str``; anything else is a one-line error."""
    if isinstance(x, str):
        raise InputError(f"{what} are one string; give a list of texts, one per sample")
    a = np.asarray(x, dtype=object)
    if a.ndim != 1:
        raise InputError(f"{what} have shape {a.shape}; give texts as a flat list, one string per sample")
    bad = [i for i, t in enumerate(a) if not isinstance(t, str)]
    if bad:
        raise InputError(f"{what} rows {bad[:5]} are not strings ({type(a[bad[0]]).__name__}); "
                         "give one string per sample (fill or drop missing texts)")
    return np.array([str(t) for t in a], dtype=object)  # np.str_ -> str, so the array never pickles subclasses


def text_digest(texts) -> bytes:
    """SHA-256 of a list of texts, each length-prefixed (so ["ab", "c"] and ["a", "bc"] differ)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def _as_float_tensor(x, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.asarray(x)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{what} have dtype {a.dtype}; give numeric arrays (encode categories first)")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if not (t.dtype.is_floating_point or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)):
        raise InputError(f"{what} have dtype {t.dtype}; give a numeric array")
    t = t.float()
    if t.dim() < 2:
        raise InputError(f"{what} have shape {tuple(t.shape)}; expected (n_samples, ...) with one row per sample")
    return t


def validate(data: Dataset, target) -> None:
    """Check the data against the target: shape, finiteness, value range, labels. One-line errors."""
    if len(data) == 0:
        raise InputError(f"dataset {data.name!r} is empty; give at least one sample")
    if data.kind == "text" or getattr(target, "inputs", "tensor") == "text":
        return _validate_text(data, target)
    if tuple(data.x.shape[1:]) != tuple(target.input_shape):
        have, want = tuple(data.x.shape[1:]), tuple(target.input_shape)
        source = getattr(target, "input_shape_source", "flag")
        if source == "flag":  # the user said what the model takes: that is what to check
            fix = "fix --input-shape"
        elif len(have) == 1 and len(want) == 1:  # a table with other columns than the model was trained on
            fix = (f"the data has {have[0]} feature columns but the model was trained on {want[0]}; choose the "
                   f"model's columns with --features")
            raise InputError(f"{fix} (in the order used in training)")
        else:
            fix = "reshape the data to the model's input (e.g. NCHW for images)"
        raise InputError(f"inputs have per-sample shape {have} but the model expects {want}; {fix}")
    bad = ~torch.isfinite(data.x)
    if bad.any():
        rows = bad.reshape(len(data), -1).any(dim=1).nonzero().flatten()[:5].tolist()
        raise InputError(f"inputs contain NaN or inf (rows {rows}...); clean or impute them first")
    lo, hi = target.bounds
    xmin, xmax = float(data.x.min()), float(data.x.max())
    tol = 1e-5 * max(1.0, hi - lo)
    if xmin < lo - tol or xmax > hi + tol:
        hint = ""
        if hi <= 1.0 and xmax > 1.5:
            hint = " (looks like 0-255 pixels: divide by 255)"
        raise InputError(
            f"input values span [{xmin:.4g}, {xmax:.4g}] outside the model's declared bounds "
            f"[{lo:g}, {hi:g}]{hint}; rescale the data or pass --bounds LOW,HIGH"
        )
    if data.y is not None:
        ymin, ymax = int(data.y.min()), int(data.y.max())
        if ymin < 0 or ymax >= target.num_classes:
            raise InputError(
                f"labels span [{ymin}, {ymax}] but the model has {target.num_classes} classes; "
                "labels must be integers in [0, num_classes)"
            )
    if data.x_ood is not None and tuple(data.x_ood.shape[1:]) != tuple(target.input_shape):
        raise InputError("OOD inputs do not match the model's input shape; give OOD data of the same shape")


def _validate_text(data: Dataset, target) -> None:
    """Text data needs a model that reads text, and the other way round; labels as for tensors."""
    takes_text = getattr(target, "inputs", "tensor") == "text"
    if data.kind != "text":
        raise InputError(
            f"{target.name} reads text but the data {data.name!r} is {data.kind} (numeric); name the text "
            "column with --text-column (text_column= in the API)"
        )
    if not takes_text:
        raise InputError(
            f"the data {data.name!r} is text but {target.name} takes numeric inputs of shape "
            f"{tuple(target.input_shape)}; audit a Hugging Face text classifier directory, or give numeric data"
        )
    if data.y is not None and len(data.y):
        ymin, ymax = int(data.y.min()), int(data.y.max())
        if ymin < 0 or ymax >= target.num_classes:
            raise InputError(
                f"labels span [{ymin}, {ymax}] but the model has {target.num_classes} classes; "
                "labels must be integers in [0, num_classes) (or class names from the model's id2label)"
            )


def align_text_labels(data: Dataset, target) -> Dataset:
    """Map label names read from a text file onto the model's own class order (its ``id2label``).

    A loader numbers class names alphabetically, which is right for the data but not necessarily for
    the model ("negative" = 0 may be the model's class 1). Names are matched case-insensitively; a
    model whose config gives no real names (``LABEL_0`` ...) cannot be matched and is an error rather
    than a silent guess."""
    if not isinstance(data, Dataset) or data.kind != "text" or not data.class_names or data.y is None:
        return data
    names = list(getattr(target, "class_names", None) or [])
    generic = not names or all(n.upper() == f"LABEL_{i}" for i, n in enumerate(names))
    if generic:
        raise InputError(
            f"the labels are class names ({', '.join(data.class_names[:5])}) but {target.name} does not name its "
            "classes (id2label is LABEL_0, LABEL_1, ...); give integer labels in the model's class order or set "
            "id2label in its config.json"
        )
    index = {n.lower(): i for i, n in enumerate(names)}
    missing = [c for c in data.class_names if c.lower() not in index]
    if missing:
        raise InputError(
            f"label(s) {', '.join(map(repr, missing[:5]))} are not classes of {target.name} "
            f"(its classes: {', '.join(names[:10])}); fix the label column"
        )
    order = np.array([index[c.lower()] for c in data.class_names])
    return replace(data, y=torch.as_tensor(order[data.y.numpy()]), class_names=names)
