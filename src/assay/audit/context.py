"""What a probe sees while it runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from assay.audit.checkpoint import Checkpoint
from assay.audit.executors import Executor, InProcessExecutor
from assay.data.dataset import Dataset
from assay.targets.base import SCORES, Target


class CleanCache:
    """Clean predictions on the audit data, computed once and shared by every probe."""

    def __init__(self, target: Target, data: Dataset, checkpoint: Checkpoint, namespace: str):
        self.target, self.data = target, data
        self._ckpt, self._ns = checkpoint, namespace
        self._scores: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def scores(self) -> torch.Tensor:
        if self._scores is None:
            hit = self._ckpt.get(self._ns, "clean-scores")
            if hit is not None:
                self._scores = hit["scores"]
            else:
                self._scores = self.target.scores(self.data.x)
                self._ckpt.put(self._ns, "clean-scores", {"scores": self._scores})
        return self._scores

    def labels(self) -> torch.Tensor:
        if self._labels is None:
            if SCORES in self.target.capabilities:
                self._labels = self.scores().argmax(dim=1)
            else:
                hit = self._ckpt.get(self._ns, "clean-labels")
                if hit is not None:
                    self._labels = hit["labels"]
                else:
                    self._labels = self.target.labels(self.data.x)
                    self._ckpt.put(self._ns, "clean-labels", {"labels": self._labels})
        return self._labels

    def correct(self) -> torch.Tensor:
        """Bool mask of points the model classifies correctly (needs labels)."""
        return self.labels() == self.data.y


class ProbeContext:
    """Target, data, seed, shared clean predictions, checkpointed units, executor and progress.

    ``unit(key, fn)`` runs ``fn()`` (returning a dict of tensors / arrays / JSON values) once per
    audit: the result is checkpointed, so an interrupted audit resumes past finished units.
    """

    def __init__(
        self,
        target: Target,
        data: Dataset,
        *,
        seed: int = 0,
        probe_name: str = "probe",
        namespace: str = "",
        checkpoint: Checkpoint | None = None,
        clean: CleanCache | None = None,
        executor: Executor | None = None,
        workdir: str | Path | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        log: Callable[[str], None] | None = None,
    ):
        self.target = target
        self.data = data
        self.seed = seed
        self.probe_name = probe_name
        self.checkpoint = checkpoint or Checkpoint(None)
        self.namespace = f"{namespace}/{probe_name}"
        self.clean = clean or CleanCache(target, data, self.checkpoint, namespace + "/clean")
        self.executor = executor or InProcessExecutor()
        self.workdir = Path(workdir) if workdir is not None else None
        self._progress = progress
        self._log = log
        self.units_run = 0
        self.units_resumed = 0
        self.started = time.time()

    # shared clean predictions
    def clean_scores(self) -> torch.Tensor:
        return self.clean.scores()

    def clean_labels(self) -> torch.Tensor:
        return self.clean.labels()

    def unit(self, key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        hit = self.checkpoint.get(self.namespace, key)
        if hit is not None:
            self.units_resumed += 1
            return hit
        out = fn()
        self.checkpoint.put(self.namespace, key, out)
        self.units_run += 1
        return out

    def progress(self, desc: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(f"{self.probe_name}: {desc}", done, total)

    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(f"{self.probe_name}: {msg}")

    def generator(self, salt: int = 0) -> torch.Generator:
        g = torch.Generator()
        g.manual_seed((self.seed * 1_000_003 + salt) % (2**63))
        return g

    def cache_dir(self, name: str) -> Path | None:
        """A persistent directory for reusable artefacts (e.g. reference models)."""
        if self.workdir is None:
            return None
        p = self.workdir / name
        p.mkdir(parents=True, exist_ok=True)
        return p
