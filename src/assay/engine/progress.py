"""Progress of a running audit, in real units (samples, classes, queries), with an ETA.

On a terminal: one tqdm bar per step. Elsewhere (a CI log, a file): a line at most every
``interval`` seconds, and a heartbeat line when a step has been silent that long, so a long attack
never leaves a log silent for minutes. Each line names the probe and step, how far it is, the
queries spent so far and an ETA from the step's own rate.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LineProgress:
    """Plain-text progress for logs (see the module doc). Call :meth:`close` when the audit ends."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0,
                 queries: Callable[[], int] | None = None, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.interval = interval
        self.queries = queries
        self.clock = clock
        self._steps: dict[str, tuple[float, int, int]] = {}  # desc -> (started, done, total)
        self._current: str | None = None
        self._phase_started = clock()
        self._last_line = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()

    def __call__(self, desc: str, done: int, total: int) -> None:
        with self._lock:
            started = self._steps.get(desc, (self.clock(), 0, total))[0]
            self._steps[desc] = (started, done, total)
            self._current = desc
            finished = done >= total
            if finished or self.clock() - self._last_line >= self.interval:
                self._emit(desc)
            if finished:
                self._steps.pop(desc, None)

    def phase(self, name: str) -> None:
        """A new stretch of work begins (a probe starts): until it reports finer steps, the heartbeat
        says it is still at work on ``name``, so a log is never silent for more than ``interval``."""
        with self._lock:
            self._current = name
            self._phase_started = self.clock()
            self._last_line = self.clock()

    def line(self, desc: str) -> str:
        started, done, total = self._steps[desc]
        elapsed = self.clock() - started
        parts = [f"{desc}: {done:,}/{total:,}" + (f" ({done / total:.0%})" if total else "")]
        if self.queries is not None:
            parts.append(f"{self.queries():,} queries so far")
        parts.append(f"{_duration(elapsed)} elapsed")
        if 0 < done < total:
            parts.append(f"ETA {_duration(elapsed * (total - done) / done)}")
        return ", ".join(parts)

    def _emit(self, desc: str) -> None:
        print(f"  progress: {self.line(desc)}", file=self.stream, flush=True)
        self._last_line = self.clock()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            with self._lock:
                if self.clock() - self._last_line < self.interval:
                    continue
                if self._current in self._steps:
                    self._emit(self._current)
                elif self._current is not None:
                    q = f", {self.queries():,} queries so far" if self.queries is not None else ""
                    took = _duration(self.clock() - self._phase_started)
                    print(f"  progress: still working on {self._current}{q}, {took} elapsed", file=self.stream, flush=True)
                    self._last_line = self.clock()

    def close(self) -> None:
        self._stop.set()


class BarProgress:
    """tqdm bars on a terminal, one per step."""

    def __init__(self, queries: Callable[[], int] | None = None):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.queries = queries
        self._bars: dict = {}

    def __call__(self, desc: str, done: int, total: int) -> None:
        bar = self._bars.get(desc)
        if bar is None:
            bar = self._bars[desc] = self._tqdm(total=total, desc=desc, file=sys.stderr, leave=False,
                                                dynamic_ncols=True)
        bar.total = total
        bar.n = done
        if self.queries is not None:
            bar.set_postfix_str(f"{self.queries():,} queries", refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()
            self._bars.pop(desc, None)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def make_progress(progress, queries: Callable[[], int] | None = None):
    """``True``: bars on a terminal, else log lines; ``"log"``: log lines; a callable: itself;
    falsy: none."""
    if callable(progress):
        return progress
    if not progress:
        return None
    if progress == "log" or not sys.stderr.isatty():
        return LineProgress(queries=queries)
    return BarProgress(queries=queries)
