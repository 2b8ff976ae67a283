"""Where independent work runs: in-process, a local process pool, or a Ray cluster.

``executor.map(fn, items)`` returns results in order. ``fn`` must be a module-level function (it is
pickled to reach another process); items should be small (indices, seeds, paths), with large
inputs shipped once through ``shared``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from assay.errors import InputError


class Executor:
    name = "base"

    def map(self, fn: Callable, items: Iterable[Any], shared: Any = None) -> list[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class InProcessExecutor(Executor):
    name = "local"

    def map(self, fn, items, shared=None):
        return [fn(item, shared) for item in items]


def _call(args):
    fn, item, shared = args
    return fn(item, shared)


class ProcessPoolExecutorAdapter(Executor):
    name = "process"

    def __init__(self, workers: int | None = None):
        self.workers = workers or max(1, (os.cpu_count() or 2))

    def map(self, fn, items, shared=None):
        import multiprocessing as mp

        items = list(items)
        # spawn: forking a process that already holds torch threads can deadlock
        with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(_call, [(fn, it, shared) for it in items]))


class RayExecutor(Executor):
    """Runs each item as a Ray task on a running cluster (``address``) or a local one it starts."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus_per_task: float = 1.0):
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'assay[ray]'") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            # WARNING: Ray's INFO start-up lines would interleave with the audit's own progress
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     log_to_driver=False, ignore_reinit_error=True, logging_level=logging.WARNING)
            self._started = True
        self._remote = ray.remote(num_cpus=num_cpus_per_task)(_ray_call)

    def map(self, fn, items, shared=None):
        ray = self._ray
        shared_ref = ray.put(shared)
        return ray.get([self._remote.remote(fn, it, shared_ref) for it in items])

    def close(self):
        if self._started:
            self._ray.shutdown()


def _ray_call(fn, item, shared):
    return fn(item, shared)


def make_executor(kind: str | Executor | None = "local", **kw) -> Executor:
    if isinstance(kind, Executor):
        return kind
    kind = (kind or "local").lower()
    if kind in ("local", "inprocess", "in-process"):
        return InProcessExecutor()
    if kind in ("process", "processes", "pool"):
        return ProcessPoolExecutorAdapter(kw.get("workers"))
    if kind == "ray":
        return RayExecutor(kw.get("address"))
    raise InputError(f"unknown executor {kind!r}; use local, process or ray")
