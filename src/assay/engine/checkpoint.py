"""Crash-safe store of finished units of work.

Each unit is written to a temporary file and renamed into place, so a process killed at any
moment (kill -9 included) leaves either the complete unit or nothing. Keys are namespaced by an
audit fingerprint (model, data, probe parameters, seed), so a changed audit never reuses stale work.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _safe(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:80]
    return f"{stem}-{digest}"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Checkpoint:
    """Key-value store of unit results: dicts of tensors, arrays and JSON-able values."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.writes = 0

    def _path(self, namespace: str, key: str) -> Path:
        assert self.root is not None
        return self.root / _safe(namespace) / (_safe(key) + ".npz")

    def get(self, namespace: str, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        p = self._path(namespace, key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                out: dict[str, Any] = dict(meta["json"])
                for name, kind in meta["arrays"].items():
                    a = z[name]
                    out[name] = torch.from_numpy(a.copy()) if kind == "tensor" else a.copy()
        except Exception:
            return None  # a corrupt unit is recomputed, never trusted
        self.hits += 1
        return out

    def put(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        if self.root is None:
            return
        arrays: dict[str, np.ndarray] = {}
        kinds: dict[str, str] = {}
        plain: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(v, torch.Tensor):
                arrays[k] = v.detach().cpu().numpy()
                kinds[k] = "tensor"
            elif isinstance(v, np.ndarray):
                arrays[k] = v
                kinds[k] = "array"
            else:
                plain[k] = v
        meta = json.dumps({"json": plain, "arrays": kinds}).encode()
        arrays["__meta__"] = np.frombuffer(meta, dtype=np.uint8)
        _atomic_write(self._path(namespace, key), lambda f: np.savez(f, **arrays))
        self.writes += 1

    def put_json(self, name: str, value: Any) -> None:
        if self.root is None:
            return
        data = json.dumps(value, default=str).encode()
        _atomic_write(self.root / name, lambda f: f.write(data))

    def get_json(self, name: str) -> Any | None:
        if self.root is None or not (self.root / name).exists():
            return None
        try:
            return json.loads((self.root / name).read_text())
        except Exception:
            return None
