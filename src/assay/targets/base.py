"""The model under test, seen only through what it exposes.

A :class:`Target` answers queries on batches of inputs (tensors in the target's declared input
space, ``bounds``; or lists of strings for a text target, ``inputs == "text"``) and counts every queried sample against a hard :class:`QueryBudget`. It declares
its capabilities so that probes can check their requirements before running:

``scores``     logits or probabilities per class (``output`` says which)
``labels``     hard decisions only
``gradients``  white-box: :attr:`Target.module` is a differentiable ``nn.Module`` on input space
``generate``   text generation
"""

from __future__ import annotations

import contextlib
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from assay.errors import BudgetExceeded, InputError, TargetError

SCORES = "scores"
LABELS = "labels"
GRADIENTS = "gradients"
GENERATE = "generate"
CAPABILITIES = (SCORES, LABELS, GRADIENTS, GENERATE)


class QueryBudget:
    """A hard limit on the number of samples a target may be queried on. Thread-safe.

    ``charge(n)`` reserves ``n`` queries or raises :class:`BudgetExceeded` without reserving any:
    a budget is never exceeded, not even by one batch. Within :meth:`share` a part of the work (one
    probe of an audit) may spend at most its allowance, so one probe cannot starve the others.
    ``on_charge(used)`` (if set) is called after every charge, under the lock: the audit uses it
    to write the spent budget to its checkpoint before a request goes out, so an audit killed and
    resumed continues from what was really spent.
    """

    def __init__(self, limit: int | None = None):
        if limit is not None and limit < 0:
            raise InputError(f"query budget {limit} is negative; give a number of queries >= 0 (--query-budget)")
        self.limit = limit
        self.used = 0
        self.on_charge: Callable[[int], None] | None = None
        self._share: tuple[int, int, str] | None = None  # (used at start, allowance, who)
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        left = None if self.limit is None else self.limit - self.used
        if self._share is not None:
            start, allowance, _ = self._share
            mine = start + allowance - self.used
            left = mine if left is None else min(left, mine)
        return left

    def charge(self, n: int) -> None:
        with self._lock:
            if self.limit is not None and self.used + n > self.limit:
                raise BudgetExceeded(
                    f"query budget exhausted: {self.used} of {self.limit} queries used, {n} more "
                    "requested; raise the budget (--query-budget) or lower the attack's queries"
                )
            if self._share is not None:
                start, allowance, who = self._share
                if self.used + n > start + allowance:
                    raise BudgetExceeded(
                        f"{who}'s share of the query budget is spent: {self.used - start} of {allowance} "
                        f"queries used, {n} more requested; raise --query-budget or give it a larger share "
                        "(--budget-split)"
                    )
            self.used += n
            if self.on_charge is not None:
                self.on_charge(self.used)

    def can_afford(self, n: int) -> bool:
        r = self.remaining
        return r is None or n <= r

    @contextlib.contextmanager
    def share(self, allowance: int | None, who: str):
        """Within the block, at most ``allowance`` more queries (None: no extra limit)."""
        if allowance is None:
            yield
            return
        prev, self._share = self._share, (self.used, int(allowance), who)
        try:
            yield
        finally:
            self._share = prev


class Target(ABC):
    """Base class of every model access path.

    Subclasses implement :meth:`_scores` (or :meth:`_labels` for label-only targets) on one batch;
    the base class handles chunking into ``batch_size``, budget accounting and output checks.

    Attributes
    ----------
    num_classes : number of output classes.
    input_shape : per-sample input shape, e.g. ``(1, 8, 8)`` or ``(n_features,)``.
    bounds : ``(low, high)`` value range of valid inputs in the space the target is queried in.
    output : ``"logits"``, ``"probs"`` or ``"labels"``: what :meth:`scores` returns.
    inputs : ``"tensor"`` (a batch is a tensor of shape ``(N, *input_shape)``) or ``"text"`` (a batch
        is a sequence of ``N`` strings, ``input_shape == ()``).
    """

    kind: str = "target"
    output: str = "logits"
    remote: bool = False  # queried over a network: every charge is written down before it is sent
    inputs: str = "tensor"  # "text": batches are lists of strings

    def __init__(
        self,
        *,
        num_classes: int,
        input_shape: tuple[int, ...],
        bounds: tuple[float, float] = (0.0, 1.0),
        capabilities: frozenset[str] | set[str] = frozenset({SCORES, LABELS}),
        query_budget: int | None = None,
        batch_size: int = 256,
        name: str | None = None,
    ):
        if bounds[0] >= bounds[1]:
            raise TargetError(f"input bounds {bounds} are empty; pass bounds as (low, high) with low < high")
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.capabilities = frozenset(capabilities)
        self.budget = QueryBudget(query_budget)
        self.batch_size = int(batch_size)
        self.name = name or self.kind
        self.source_sha256: str | None = None  # set by the loader: the model file's bytes

    # ----------------------------------------------------------------- queries
    @property
    def queries(self) -> int:
        """Samples queried so far (every path: scores, labels, gradient forward passes)."""
        return self.budget.used

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def has(self, *caps: str) -> bool:
        return all(c in self.capabilities for c in caps)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-class scores for a batch, shape ``(N, num_classes)``; charges ``N`` queries."""
        if SCORES not in self.capabilities:
            raise TargetError(f"{self.name} returns hard labels only; use a label-only attack or probe")
        return self._chunked(x, self._scores)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted class per sample, shape ``(N,)`` int64; charges ``N`` queries."""
        if SCORES in self.capabilities:
            return self.scores(x).argmax(dim=1)
        return self._chunked(x, self._labels)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax of logits where the target returns logits)."""
        s = self.scores(x)
        return torch.softmax(s, dim=1) if self.output == "logits" else s

    @property
    def module(self) -> torch.nn.Module:
        """Differentiable model on input space (white-box targets only)."""
        raise TargetError(
            f"{self.name} exposes no gradients; use a black-box probe (robustness.blackbox)"
        )

    # ------------------------------------------------------------ to implement
    @abstractmethod
    def _scores(self, x: torch.Tensor) -> torch.Tensor: ...

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._scores(x).argmax(dim=1)

    # ----------------------------------------------------------------- helpers
    def _chunked(self, x, fn) -> torch.Tensor:
        x = self._check_input(x)
        n = len(x)
        self.budget.charge(n)
        outs = [fn(x[i : i + self.batch_size]) for i in range(0, n, self.batch_size)]
        if not outs:
            return torch.empty((0, self.num_classes) if fn == self._scores else (0,))
        return self._check_output(torch.cat(outs))

    def _check_input(self, x):
        if self.inputs == "text":
            return self._check_texts(x)
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise TargetError(
                f"input shape {tuple(x.shape[1:])} does not match the target's {self.input_shape}; "
                "reshape the data or pass --input-shape"
            )
        return x

    def _check_texts(self, texts) -> list[str]:
        if isinstance(texts, str):  # one text, not its characters
            texts = [texts]
        if isinstance(texts, torch.Tensor) or not hasattr(texts, "__len__"):
            raise TargetError(f"{self.name} takes a list of strings; got {type(texts).__name__}")
        texts = list(texts)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TargetError(f"{self.name} takes a list of strings; got {type(bad).__name__} items")
        return texts

    def _check_output(self, out: torch.Tensor) -> torch.Tensor:
        if out.dtype.is_floating_point and not torch.isfinite(out).all():
            raise TargetError(f"{self.name} returned NaN or inf scores; check the model and input range")
        return out

    # describe() keys that change while the audit runs, not what the model is
    _VOLATILE = ("queries", "requests_sent", "cache_hits")

    def budgets(self) -> dict[str, QueryBudget]:
        """Every hard budget the target enforces, by name (language models add ``tokens``)."""
        return {"queries": self.budget}

    def spent(self) -> dict[str, int]:
        """What each budget has charged so far: what an audit checkpoint records."""
        return {k: b.used for k, b in self.budgets().items()}

    def restore_spent(self, spent: dict[str, int]) -> None:
        """Charge what an earlier, interrupted run of the same audit already spent."""
        for key, budget in self.budgets().items():
            n = int(spent.get(key, 0))
            if n < 0:
                raise InputError(f"spent {key} must be >= 0")
            with budget._lock:
                budget.used = max(budget.used, n)

    def attach_store(self, directory) -> None:
        """Keep answers across runs in ``directory`` (remote targets: a resumed audit replays its
        queries from there, at no budget, instead of sending them again). No-op by default."""
        return None

    def content_digest(self) -> str:
        """Identity of the model's function (weights, code, file bytes); "" where it cannot be seen
        (a remote API). Subclasses override it; see :mod:`assay.targets.identity`."""
        return ""

    def fingerprint(self) -> str:
        """Identity of the target for checkpoints and caches: what it is (its description, the
        bytes of the file it was loaded from) and what it computes (:meth:`content_digest`)."""
        import hashlib
        import json

        d = {k: v for k, v in self.describe().items() if k not in self._VOLATILE}
        h = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode())
        h.update(self.content_digest().encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What the report records about the target."""
        return {
            "kind": self.kind,
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            # an infinite bound (unbounded tabular features) is null, keeping the report strict JSON
            "bounds": [b if math.isfinite(b) else None for b in self.bounds],
            "output": self.output,
            "capabilities": sorted(self.capabilities),
            "query_budget": self.budget.limit,
            "queries": self.queries,
            **({"source_sha256": self.source_sha256} if self.source_sha256 else {}),
        }
