"""Challenge values and the scoreboard.

Static scoring: a challenge is worth its manifest ``points``.

Dynamic scoring (``ASSAY_ARENA_SCORING=dynamic``), the quadratic decay CTFd popularised: with
``P`` the manifest points, ``m = ceil(min_fraction * P)`` the floor, ``d`` the decay (number of
solves after which the floor is reached) and ``s`` the number of earlier solves,

    value(s) = max(m, ceil(P - (P - m) * s**2 / d**2))

so the first solver gets ``P`` and the value falls slowly at first, then faster.

Who gets which value: by default each solve is frozen at the value the challenge had when it was
made (``Solve.value``), so later solves never take points from earlier solvers. An operator can
switch the event to ``recompute_values``: then every solver of a challenge gets its current value
(CTFd's behaviour). Ranking: higher score first; ties go to whoever reached that score first (the
earlier last solve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def dynamic_value(points: int, solves_before: int, decay: int, min_fraction: float) -> int:
    """The value of a challenge worth ``points`` after ``solves_before`` solves.

    Example
    -------
    >>> [dynamic_value(500, s, decay=10, min_fraction=0.2) for s in (0, 1, 5, 10, 20)]
    [500, 496, 400, 100, 100]
    """
    minimum = math.ceil(min_fraction * points)
    decay = max(1, decay)
    value = math.ceil(points - (points - minimum) * solves_before**2 / decay**2)
    return max(minimum, value)


@dataclass
class Standing:
    rank: int
    name: str
    score: int
    solves: int
    last_solve: float | None
    history: list[tuple[float, int]]  # (time, cumulative score) at each solve


def rank(entries: dict[str, list[tuple[float, int]]]) -> list[Standing]:
    """Rank accounts given each one's solves as (time, value): score descending, then earlier last
    solve first, then name (so the order is total)."""
    rows = []
    for name, solves in entries.items():
        solves = sorted(solves)
        total, history = 0, []
        for t, v in solves:
            total += v
            history.append((t, total))
        last = solves[-1][0] if solves else None
        rows.append((name, total, len(solves), last, history))
    rows.sort(key=lambda r: (-r[1], r[3] if r[3] is not None else math.inf, r[0]))
    return [Standing(i + 1, n, s, c, last, h) for i, (n, s, c, last, h) in enumerate(rows)]
