"""The contract between the arena server and a challenge.

A challenge is a directory ``arena/challenges/<id>/`` holding ``challenge.toml`` (the manifest) and
``challenge.py`` (a :class:`Challenge` subclass named ``CHALLENGE``, a reference ``solve`` and a
``naive`` attempt). The server never imports anything else of it and never sees a flag rule: it calls
:meth:`Challenge.score` with the player's untrusted JSON payload and, only when the returned
:class:`ScoreResult` says ``solved``, appends the player's own flag to the response.

Lifecycle: ``build(seed, workdir)`` once (deterministic from the seed, offline, seconds to a minute
on 2 CPU cores) -> ``load(workdir)`` in each server process -> ``score(payload)`` per request.
"""

from __future__ import annotations

import importlib.util
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.errors import InputError

CHALLENGES_DIR = Path(__file__).parent / "challenges"


@dataclass
class Manifest:
    id: str
    name: str
    category: str  # evasion, inversion, membership, extraction, poisoning, leakage, ...
    difficulty: str  # easy, medium, hard
    points: int
    description: str
    query_budget: int  # hard total of scored queries per player
    rate_per_minute: float = 120.0  # token-bucket refill
    burst: int = 30  # token-bucket capacity
    submission_limit: int = 50  # flag submissions per player
    max_payload_bytes: int = 262_144
    artifacts: list[str] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def load(cls, path: Path) -> Manifest:
        with open(path, "rb") as f:
            try:
                raw = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise InputError(f"bad manifest {path}: {e}; fix its TOML (see docs/arena.md)") from None
        try:
            return cls(**raw)
        except TypeError as e:
            raise InputError(f"bad manifest {path}: {e}; see docs/arena.md for the fields") from None


@dataclass
class ScoreResult:
    """``output``: what the player sees (never a flag); ``solved``: the success rule was met;
    ``cost``: queries charged against the player's budget (e.g. a batch of 8 inputs costs 8)."""

    output: dict[str, Any]
    solved: bool = False
    cost: int = 1


class Challenge(ABC):
    manifest: Manifest

    def __init__(self, manifest: Manifest):
        self.manifest = manifest

    @abstractmethod
    def build(self, seed: int, workdir: Path) -> None:
        """Deterministically build the model(s) and any hidden data into ``workdir``."""

    @abstractmethod
    def load(self, workdir: Path) -> None:
        """Load what :meth:`build` wrote, ready to score."""

    @abstractmethod
    def score(self, payload: dict[str, Any]) -> ScoreResult:
        """Check the untrusted payload (types, sizes, ranges: raise InputError with a clear message),
        run the model, decide whether the success rule is met."""

    def score_batch(self, payloads: list[dict[str, Any]]) -> list[ScoreResult | Exception]:
        """Score several players' payloads in one model call (the server micro-batches concurrent
        requests). Override for speed; an invalid payload yields its exception in its slot."""
        out: list[ScoreResult | Exception] = []
        for p in payloads:
            try:
                out.append(self.score(p))
            except InputError as e:
                out.append(e)
        return out

    def cost(self, payload: dict[str, Any]) -> int:
        """Queries a payload will cost, computed before scoring so the budget is checked first."""
        return 1

    def request_schema(self) -> dict[str, Any]:
        """JSON Schema (2020-12, as OpenAPI 3.1 uses it) of the payloads :meth:`score` accepts. The
        server publishes it in its OpenAPI description and derives the web page's input placeholder
        and the copy-paste client examples from it (:mod:`assay.arena.payload` has builders).
        Default: any JSON object."""
        return {"type": "object"}

    def response_schema(self) -> dict[str, Any]:
        """JSON Schema of :attr:`ScoreResult.output` (default: any JSON object)."""
        return {"type": "object"}

    def artifacts(self) -> dict[str, bytes]:
        """Files players may download (name -> content). Never contains hidden data or flags."""
        return {}


@dataclass
class ChallengeSpec:
    """A loaded challenge directory: manifest, the challenge object, its solver and naive attempt."""

    manifest: Manifest
    challenge: Challenge
    solve: Callable[..., Any] | None
    naive: Callable[..., Any] | None
    path: Path


def load_challenge_dir(path: Path) -> ChallengeSpec:
    path = Path(path)
    manifest = Manifest.load(path / "challenge.toml")
    spec = importlib.util.spec_from_file_location(f"assay_arena_challenge_{manifest.id}", path / "challenge.py")
    if spec is None or spec.loader is None:
        raise InputError(f"challenge {path} has no challenge.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = getattr(mod, "CHALLENGE", None)
    if cls is None:
        raise InputError(f"{path}/challenge.py defines no CHALLENGE class")
    return ChallengeSpec(manifest, cls(manifest), getattr(mod, "solve", None), getattr(mod, "naive", None), path)


def discover(root: Path = CHALLENGES_DIR) -> dict[str, ChallengeSpec]:
    """Every challenge directory under ``root`` (those with a challenge.toml), by id.

    A missing directory or one without challenges is an InputError: an empty pack would let build,
    serve and export succeed without doing anything."""
    root = Path(root)
    fix = "check --challenges (or ASSAY_ARENA_CHALLENGES); omit it for the packaged challenges"
    if not root.is_dir():
        raise InputError(f"challenge directory {root} does not exist or is not a directory; {fix}")
    out = {}
    for d in sorted(root.iterdir()):
        if (d / "challenge.toml").exists():
            s = load_challenge_dir(d)
            out[s.manifest.id] = s
    if not out:
        raise InputError(f"{root} holds no challenges (no <id>/challenge.toml); {fix}")
    return out


class LocalClient:
    """What a solver talks to, without a server: the same budget and success semantics.

    A solver written as ``solve(client)`` uses only ``client.score(payload) -> dict``,
    ``client.artifact(name) -> bytes``, ``client.remaining`` and ``client.flag`` (set once solved);
    the HTTP client in :mod:`assay.arena.client` offers the same four.
    """

    def __init__(self, spec: ChallengeSpec, budget: int | None = None):
        self.spec = spec
        self.remaining = spec.manifest.query_budget if budget is None else budget
        self.flag: str | None = None
        self.queries = 0

    def score(self, payload: dict[str, Any]) -> dict[str, Any]:
        from assay.errors import BudgetExceeded

        ch = self.spec.challenge
        cost = ch.cost(payload)
        if cost > self.remaining:
            raise BudgetExceeded(f"query budget exhausted: {self.remaining} left, {cost} needed")
        result = ch.score(payload)
        self.remaining -= result.cost
        self.queries += result.cost
        out = dict(result.output)
        if result.solved:
            self.flag = f"local-flag-{self.spec.manifest.id}"
            out["flag"] = self.flag
        out["remaining"] = self.remaining
        return out

    def artifact(self, name: str) -> bytes:
        arts = self.spec.challenge.artifacts()
        if name not in arts:
            raise InputError(f"no artifact {name!r}; available: {sorted(arts)}")
        return arts[name]
