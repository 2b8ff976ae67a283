"""Evaluation data: inputs, labels and the optional fields other axes need.

``groups``   sensitive attributes per row (fairness), name -> array of values
``member``   bool per row: True if the row was in the model's training set (privacy)
``x_ood``    an out-of-distribution set (reliability)
``population``  further records from the same distribution that were NOT used in training
             (privacy: the membership attacks' knowledge of the population)
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
    x: torch.Tensor
    y: torch.Tensor | None = None
    name: str = "data"
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    member: torch.Tensor | None = None
    x_ood: torch.Tensor | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    kind: str = "auto"  # "image", "tabular", "auto"
    population: Dataset | None = None
    warnings: list[str] = field(default_factory=list)  # what loading noticed (unused keys), for the report

    def __post_init__(self):
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
        if self.x_ood is not None:
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
            x=self.x[idx],
            y=None if self.y is None else self.y[idx],
            member=None if self.member is None else self.member[idx],
            groups={k: v[np_idx] for k, v in self.groups.items()},
        )

    def fingerprint(self) -> str:
        """Content hash of everything a probe may read, so checkpoints are never reused for other data."""
        h = hashlib.sha256(f"{self.kind}|{tuple(self.x.shape)}|{self.x.dtype}".encode())
        h.update(self.x.contiguous().numpy().tobytes())
        for label, t in (("y", self.y), ("member", self.member), ("ood", self.x_ood)):
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
        d: dict[str, Any] = {
            "name": self.name,
            "n": len(self),
            "shape": list(self.x.shape[1:]),
            "kind": self.kind,
            "value_range": [float(self.x.min()), float(self.x.max())] if len(self) else None,
        }
        if self.y is not None:
            d["classes"] = int(self.y.max().item()) + 1 if len(self.y) else 0
        if self.groups:
            d["sensitive_attributes"] = sorted(self.groups)
        if self.member is not None:
            d["members"] = int(self.member.sum())
        if self.x_ood is not None:
            d["ood"] = int(self.x_ood.shape[0])
        if self.population is not None:
            d["population"] = len(self.population)
        if self.warnings:
            d["warnings"] = list(self.warnings)
        return d


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
