"""What a probe sees while it runs."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from assay.data.dataset import Dataset
from assay.engine.checkpoint import Checkpoint
from assay.parallel import Executor, InProcessExecutor
from assay.targets.base import SCORES, Target


def derived_seed(seed: int, label: str) -> int:
    """A seed for one part of the audit (a probe, a unit of work), fixed by the audit seed and the
    part's name, so a part draws the same random numbers whether or not earlier parts were resumed."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}|{label}".encode()).digest()[:8], "little") >> 1


@contextlib.contextmanager
def seeded(seed: int, label: str):
    """Run the block with torch's global generators seeded from ``(seed, label)`` and restored after.

    Models with randomness in ``forward`` (noise defences, dropout left on) draw from the global
    generator: seeding it makes their figures reproducible from the audit seed."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derived_seed(seed, label))
        yield


class CleanCache:
    """Clean predictions on the audit data, computed once and shared by every probe."""

    def __init__(self, target: Target, data: Dataset, checkpoint: Checkpoint, namespace: str, seed: int = 0):
        self.target, self.data = target, data
        self._ckpt, self._ns = checkpoint, namespace
        self._seed = seed
        self._scores: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def scores(self) -> torch.Tensor:
        if self._scores is None:
            hit = self._ckpt.get(self._ns, "clean-scores")
            if hit is not None:
                self._scores = hit["scores"]
            else:
                with seeded(self._seed, "clean"):
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
                    with seeded(self._seed, "clean"):
                        self._labels = self.target.labels(self.data.x)
                    self._ckpt.put(self._ns, "clean-labels", {"labels": self._labels})
        return self._labels

    def correct(self) -> torch.Tensor:
        """Bool mask of points the model classifies correctly (needs labels)."""
        return self.labels() == self.data.y


class ProbeContext:
    """Target, data, seed, shared clean predictions, checkpointed units, executor and progress.

    ``data`` is the probe's view of the audit data: with a membership column, probes that do not
    study membership see the non-member rows only (``rows`` maps the view back to the full data).
    ``unit(key, fn)`` runs ``fn()`` (returning a dict of tensors / arrays / JSON values) once per
    audit: the result is checkpointed, so an interrupted audit resumes past finished units.
    ``facts`` is shared by the probes of one audit (e.g. robustness found gradient masking, so
    white-box results of later probes on the same model need a caveat).
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
        rows: torch.Tensor | None = None,
        facts: dict[str, Any] | None = None,
        display_name: str | None = None,
    ):
        self.target = target
        self.full_data = data
        self.rows = rows
        self.data = data if rows is None else data.subset(rows)
        self.seed = seed
        self.probe_name = probe_name
        self.display_name = display_name or probe_name  # what progress lines and logs call the probe
        self.checkpoint = checkpoint or Checkpoint(None)
        self.namespace = f"{namespace}/{probe_name}"
        self.clean = clean or CleanCache(target, data, self.checkpoint, namespace + "/clean", seed)
        self.executor = executor or InProcessExecutor()
        self.workdir = Path(workdir) if workdir is not None else None
        self._progress = progress
        self._log = log
        self.facts: dict[str, Any] = facts if facts is not None else {}
        self.new_facts: dict[str, Any] = {}
        self.sampling: dict[str, Any] | None = None
        self.units_run = 0
        self.units_resumed = 0
        self.resumed_queries = 0  # queries the resumed units cost when they first ran
        self.started = time.time()

    # shared clean predictions, on this probe's rows
    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.rows is None else t[self.rows]

    def clean_scores(self) -> torch.Tensor:
        return self._view(self.clean.scores())

    def clean_labels(self) -> torch.Tensor:
        return self._view(self.clean.labels())

    def clean_correct(self) -> torch.Tensor:
        return self.clean_labels() == self.data.y

    def unit(self, key: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        hit = self.checkpoint.get(self.namespace, key)
        if hit is not None:
            self.units_resumed += 1
            self.resumed_queries += int(hit.pop("__queries__", 0))
            return hit
        q0 = self.target.queries
        # seeded by the probe and unit alone, not the model: two models audited with the same seed
        # draw the same noise (a paired comparison's draws are shared); the checkpoint keeps the model
        with seeded(self.seed, f"{self.probe_name}/{key}"):
            out = fn()
        self.checkpoint.put(self.namespace, key, {**out, "__queries__": self.target.queries - q0})
        self.units_run += 1
        return out

    def sample(self, n: int, salt: int = 0) -> torch.Tensor:
        """Indices (sorted) of at most ``n`` rows of :attr:`data`: all rows when there are no more
        than ``n``, else a seeded random subset stratified by class (each class keeps its share,
        largest remainders first). Never the first ``n`` rows: files are often sorted (by class,
        or members first). What was drawn is recorded in the finding's accounting."""
        total = len(self.data)
        if n >= total:
            self.sampling = {"n": total, "of": total, "method": "all rows"}
            return torch.arange(total)
        g = self.generator(salt=9_000_017 + salt)
        y = self.data.y
        if y is None:
            idx = torch.randperm(total, generator=g)[:n]
            method = "seeded random"
        else:
            classes, counts = torch.unique(y, return_counts=True)
            exact = counts.double() * n / total
            take = exact.floor().long()
            short = n - int(take.sum())
            if short:  # largest remainders get the rows left over
                order = torch.argsort(exact - take, descending=True, stable=True)
                take[order[:short]] += 1
            parts = []
            for c, k in zip(classes.tolist(), take.tolist()):
                members = (y == c).nonzero().flatten()
                parts.append(members[torch.randperm(len(members), generator=g)[:k]])
            idx = torch.cat(parts)
            method = "seeded random, stratified by class"
        idx = idx.sort().values
        self.sampling = {"n": int(len(idx)), "of": total, "method": method, "seed": self.seed,
                         "indices": idx.tolist()}
        return idx

    def note_fact(self, key: str, value: Any) -> None:
        """Tell later probes of this audit something about the model (kept in the checkpoint too)."""
        self.facts[key] = value
        self.new_facts[key] = value

    def progress(self, desc: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(f"{self.display_name}: {desc}", done, total)

    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(f"{self.display_name}: {msg}")

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
