"""The arena's behaviour, independent of HTTP: accounts, scoring queries (with budgets, logging and
micro-batching), flag submissions, challenge listings, scoreboards and operator views. ``api.py``
and ``web.py`` are thin layers over one :class:`Arena`."""

from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from assay.arena import auth, fastjson, names
from assay.arena.bodies import BAD_FLAG, MAX_FLAG
from assay.arena.budgets import AttemptLimiter, Budgets, QueryItem
from assay.arena.challenge import ChallengeSpec, ScoreResult, discover
from assay.arena.flags import check_flag, flag_for, flag_owner
from assay.arena.scoring import Standing, dynamic_value, rank
from assay.arena.settings import MIN_PASSWORD, Settings
from assay.arena.store import (
    Budget,
    EventState,
    NameClaim,
    Player,
    QueryLog,
    SolutionRelease,
    Solve,
    Store,
    Submission,
    Team,
)
from assay.errors import InputError

log = logging.getLogger("assay.arena")

OPERATOR_NAME = "admin"  # the operator account `init` creates; its name is reserved in all its forms


@dataclass
class Outcome:
    """An HTTP-independent answer: status code, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Pending:
    """One scoring query on its way through a :class:`Batcher`: the budget item to charge and log,
    the parsed payload (None when already refused) and the answer for a refusal made before the
    charge (an invalid payload: logged, never charged)."""

    __slots__ = ("player", "payload", "item", "refusal", "t0")

    def __init__(self, player: Player, payload: dict[str, Any] | None, item: QueryItem, refusal: Outcome | None,
                 t0: float):
        self.player, self.payload, self.item, self.refusal, self.t0 = player, payload, item, refusal, t0


class Batcher:
    """Gathers concurrent scoring queries for one challenge and hands each group to ``process``
    (charge and log all in one transaction, one ``score_batch`` call, build the answers), run in a
    worker thread so the event loop keeps accepting requests meanwhile. While one group is being
    processed the next one gathers, so under load groups grow by themselves (group commit)."""

    def __init__(self, process, max_size: int, window_s: float):
        self.process, self.max_size, self.window_s = process, max_size, window_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batch_sizes: list[int] = []

    async def submit(self, pending: Pending) -> Outcome:
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        fut = loop.create_future()
        self.queue.put_nowait((pending, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.window_s > 0 and self.queue.qsize() < self.max_size - 1:
                await asyncio.sleep(self.window_s)
            while len(batch) < self.max_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.batch_sizes.append(len(batch))
            if len(self.batch_sizes) > 10_000:
                del self.batch_sizes[:5_000]
            try:
                outcomes = await asyncio.to_thread(self.process, [p for p, _ in batch])
            except Exception as e:  # nothing was answered as accepted: fail the group's requests
                log.exception("scoring group of %d failed", len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), out in zip(batch, outcomes):
                if not fut.done():
                    fut.set_result(out)


def load_challenges(settings: Settings) -> dict[str, ChallengeSpec]:
    """Discover the challenges in ``settings.challenges_dir`` and load each one's built model."""
    specs = discover(settings.challenges_dir)
    for cid, spec in specs.items():
        workdir = settings.built_dir / cid
        if not workdir.exists():
            raise InputError(f"challenge {cid!r} is not built; run `assay arena build` (data dir {settings.data_dir})")
        spec.challenge.load(workdir)
    return specs


def build_challenges(settings: Settings, only: list[str] | None = None) -> list[str]:
    """Run each challenge's ``build(manifest.seed, <data_dir>/built/<id>)``; returns the ids built."""
    specs = discover(settings.challenges_dir)
    unknown = sorted(set(only or ()) - set(specs))
    if unknown:  # checked before building anything: a typo must not pass as a successful build
        raise InputError(f"no challenge {', '.join(map(repr, unknown))} in {settings.challenges_dir}; "
                         f"available: {', '.join(sorted(specs))}")
    built = []
    for cid, spec in specs.items():
        if only and cid not in only:
            continue
        workdir = settings.built_dir / cid
        workdir.mkdir(parents=True, exist_ok=True)
        spec.challenge.build(spec.manifest.seed, workdir)
        built.append(cid)
    return built


class Arena:
    def __init__(self, settings: Settings, specs: dict[str, ChallengeSpec] | None = None):
        self.settings = settings
        self.store = Store(settings.db_url)
        self.store.create_all()
        self.budgets = Budgets(self.store)
        self.hasher = auth.password_hasher(settings.argon2)
        self._dummy_hash = auth.dummy_hash(self.hasher)
        self.password_attempts = AttemptLimiter(self.store, settings.login_per_minute, settings.login_burst)
        self.sessions = auth.Sessions(settings.secret)
        self.specs = load_challenges(settings) if specs is None else specs
        self.artifacts = {cid: s.challenge.artifacts() for cid, s in self.specs.items()}
        self._batchers: dict[tuple[asyncio.AbstractEventLoop, str], Batcher] = {}
        # Per-request reads are cached: the event state for ``cache_seconds``, API keys until the
        # account epoch moves (read with the event state), so a rotated key or an event change
        # reaches every worker process within these many seconds. Budgets, solves and submissions
        # are never cached.
        self.cache_seconds = 1.0
        self.key_cache_seconds = 300.0  # a bound even if the database is edited by hand
        self._key_cache: dict[str, tuple[float, Player | None]] = {}
        self._event_cache: tuple[float, EventState] | None = None
        self._published_at: float | None = None
        self._epoch: int | None = None
        if settings.admin_password:
            self.ensure_operator(OPERATOR_NAME, settings.admin_password)

    # ---------------------------------------------------------------- accounts
    @staticmethod
    def check_name(name: Any, what: str = "name", *, operator: bool = False) -> str:
        """``name`` in its stored (NFKC) form, or an InputError: the character rule, and the
        operator's name in any of its look-alike forms is refused to everyone else."""
        name = names.normalize(name) if isinstance(name, str) and fastjson.text_ok(name) else name
        problem = names.problem(name, what)
        if problem:
            raise InputError(problem)
        if not operator and names.skeleton(name) == names.skeleton(OPERATOR_NAME):
            raise InputError(f"the {what} {name!r} is reserved (it reads as the operator's); choose another")
        return name

    @staticmethod
    def check_registration(name: Any, password: Any, *, operator: bool = False) -> str:
        """The name and password rules, checked without touching the database or hashing anything,
        so that the HTTP layers can refuse a malformed sign-up before it counts as a password
        attempt. Returns the name in its stored form."""
        name = Arena.check_name(name, operator=operator)
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise InputError(f"password must have at least {MIN_PASSWORD} characters")
        if not fastjson.text_ok(password):
            raise InputError("password must be text without NUL characters or lone surrogates")
        return name

    def _add_named(self, s, row, kind: str, what: str) -> None:
        """Insert ``row`` (a Player or Team) and its name claim in session ``s``; a name whose
        skeleton is claimed (or the same name, in a race) is refused as taken."""
        s.add(row)
        try:
            s.flush()
            s.add(NameClaim(kind=kind, key=names.skeleton(row.name), owner_id=row.id))
            s.flush()
        except IntegrityError:
            raise InputError(f"the {what} {row.name!r} is taken (or too like one that is); choose another") from None

    def register(self, name: str, password: str, *, operator: bool = False) -> tuple[Player, str]:
        """Create a player; returns it and its API key (shown once, stored only as a hash)."""
        name = self.check_registration(name, password, operator=operator)
        key = auth.new_api_key()
        player = Player(name=name, password_hash=self.hasher.hash(password), api_key_hash=auth.hash_api_key(key),
                        is_operator=operator)
        with self.store.session() as s:
            self._add_named(s, player, "player", "name")
        return player, key

    def ensure_operator(self, name: str, password: str) -> None:
        with self.store.session() as s:
            p = s.scalars(select(Player).where(Player.name == name)).first()
            if p is None:
                self._add_named(s, Player(name=self.check_name(name, operator=True), password_hash=self.hasher.hash(password),
                                          api_key_hash=auth.hash_api_key(auth.new_api_key()), is_operator=True),
                                "player", "name")
            elif not (p.is_operator and auth.verify_password(self.hasher, p.password_hash, password)):
                p.password_hash, p.is_operator = self.hasher.hash(password), True
                self.store.bump_epoch(s)

    def login(self, name: str, password: str) -> Player | None:
        """The player if name and password match, else None (same work either way)."""
        readable = isinstance(name, str) and fastjson.text_ok(name)
        p = self.store.player_by_name(names.normalize(name)) if readable else None
        if not (isinstance(password, str) and fastjson.text_ok(password)):
            password = ""  # not encodable for argon2: it cannot match, and costs the same work
        ok = auth.verify_password(self.hasher, p.password_hash if p else self._dummy_hash, password)
        return p if (p is not None and ok) else None

    def player_by_key(self, key: str) -> Player | None:
        """The player owning API ``key``, or None. Keys are 256-bit random strings stored as their
        SHA-256, so lookup by hash is safe (a timing difference can reveal at most a hash prefix,
        which does not help to find a key) and no slow password hash is needed per request. Hits
        come from an in-memory cache that the account epoch invalidates."""
        h = auth.hash_api_key(key)
        self.event()  # refreshes the account epoch at most every cache_seconds
        now = time.monotonic()
        hit = self._key_cache.get(h)
        if hit is not None and hit[0] > now:
            player = hit[1]
            if player is None or hmac.compare_digest(player.api_key_hash, h):
                return player
        with self.store.session() as s:
            player = s.scalars(select(Player).where(Player.api_key_hash == h)).first()
        if len(self._key_cache) > 50_000:
            self._key_cache.clear()
        # Misses expire sooner: a key just created by another worker must start working quickly.
        self._key_cache[h] = (now + (self.key_cache_seconds if player else self.cache_seconds), player)
        return player

    def player(self, pid: int) -> Player | None:
        with self.store.session() as s:
            return s.get(Player, pid)

    @contextmanager
    def _account_change(self) -> Iterator[Session]:
        """A session for a change that API-key caches must see (key, team): it advances the account
        epoch in the same transaction, so other workers drop their caches, and drops this one's."""
        with self.store.session() as s:
            yield s
            self.store.bump_epoch(s)
        self._key_cache.clear()

    def rotate_key(self, pid: int) -> str:
        key = auth.new_api_key()
        with self._account_change() as s:
            s.execute(update(Player).where(Player.id == pid).values(api_key_hash=auth.hash_api_key(key)))
        return key

    def create_team(self, pid: int, name: str) -> Team:
        name = self.check_name(name, "team name")
        with self._account_change() as s:
            team = Team(name=name, join_code=secrets.token_urlsafe(12))
            self._add_named(s, team, "team", "team name")
            s.execute(update(Player).where(Player.id == pid).values(team_id=team.id))
        return team

    def join_team(self, pid: int, join_code: str) -> Team:
        unknown = "unknown join code; ask your team for the current one"
        if not (isinstance(join_code, str) and fastjson.text_ok(join_code)):
            raise InputError(unknown)
        with self._account_change() as s:
            team = s.scalars(select(Team).where(Team.join_code == join_code)).first()
            if team is None:
                raise InputError(unknown)
            s.execute(update(Player).where(Player.id == pid).values(team_id=team.id))
        return team

    def team_of(self, pid: int) -> Team | None:
        with self.store.session() as s:
            p = s.get(Player, pid)
            return s.get(Team, p.team_id) if p and p.team_id else None

    # ---------------------------------------------------------------- event
    def event(self, fresh: bool = False) -> EventState:
        """The event state, re-read at most every ``cache_seconds``; the account epoch with it."""
        now = time.monotonic()
        if fresh or self._event_cache is None or self._event_cache[0] <= now:
            state, epoch, published_at = self.store.state()
            if epoch != self._epoch:
                self._key_cache.clear()
                self._epoch = epoch
            self._event_cache = (now + self.cache_seconds, state)
            self._published_at = published_at
        return self._event_cache[1]

    def solutions_visible(self) -> bool:
        """Reference solutions are shown while they are published, an explicit state that only a
        closed event can enter and that reopening the event clears (closing it again does not bring
        them back: the operator publishes again). The closed check stays as a second guard."""
        state = self.event()
        return self._published_at is not None and not state.open

    def solution(self, cid: str) -> dict[str, str] | None:
        """The challenge's teaching material: its reference solver and the naive attempt that fails,
        as source code (they hold no secrets: flags and hidden data live only in the built files)."""
        spec = self.specs.get(cid)
        if spec is None:
            return None
        return {"challenge": cid, "name": spec.manifest.name, "solver": inspect.getsource(spec.solve),
                "naive_attempt": inspect.getsource(spec.naive)}

    def set_event(self, *, open: bool | None = None, frozen: bool | None = None,
                  recompute_values: bool | None = None, solutions: bool | None = None) -> EventState:
        with self.store.session() as s:
            st = s.get(EventState, 1)
            if solutions and (st.open if open is None else open):
                raise InputError("close the event before publishing the reference solutions")
            if open:  # reopening withdraws the publication: it would otherwise return at the next close
                solutions = False if solutions is None else solutions
            if solutions is not None:
                s.execute(update(SolutionRelease).where(SolutionRelease.id == 1)
                          .values(published_at=time.time() if solutions else None))
            if open is not None:
                st.open = open
            if frozen is not None:
                st.frozen_at = (st.frozen_at or time.time()) if frozen else None
            if recompute_values is not None:
                st.recompute_values = recompute_values
        self._event_cache = None
        return self.event(fresh=True)

    # ---------------------------------------------------------------- challenges
    def _solve_counts(self) -> dict[str, int]:
        with self.store.session() as s:
            rows = s.execute(
                select(Solve.challenge_id, func.count()).join(Player, Player.id == Solve.player_id)
                .where(Player.is_operator.is_(False)).group_by(Solve.challenge_id)
            ).all()
        return {cid: n for cid, n in rows}

    def value(self, cid: str, solves_before: int) -> int:
        points = self.specs[cid].manifest.points
        if self.settings.scoring == "static":
            return points
        return dynamic_value(points, solves_before, self.settings.decay, self.settings.min_fraction)

    def challenge_list(self, pid: int) -> list[dict[str, Any]]:
        counts = self._solve_counts()
        with self.store.session() as s:
            mine = set(s.scalars(select(Solve.challenge_id).where(Solve.player_id == pid)).all())
            used = dict(s.execute(select(Budget.challenge_id, Budget.used).where(Budget.player_id == pid)).all())
        out = []
        for cid, spec in self.specs.items():
            m = spec.manifest
            out.append(dict(
                id=cid, name=m.name, category=m.category, difficulty=m.difficulty,
                points=self.value(cid, counts.get(cid, 0)), solves=counts.get(cid, 0), description=m.description,
                artifacts=[dict(name=a, url=f"/api/challenges/{cid}/artifacts/{a}") for a in sorted(self.artifacts[cid])],
                query_budget=m.query_budget, remaining=m.query_budget - used.get(cid, 0),
                rate_per_minute=m.rate_per_minute, burst=m.burst, solved=cid in mine,
            ))
        return out

    def artifact(self, cid: str, name: str) -> bytes | None:
        return self.artifacts.get(cid, {}).get(name)

    # ---------------------------------------------------------------- scoring queries
    def _closed_to(self, player: Player, cid: str) -> Outcome | None:
        """Why ``player`` may not query or submit to ``cid`` now, checked before anything else: no
        such challenge (404), or the event is closed (403; operators still may)."""
        if cid not in self.specs:
            return Outcome(404, {"detail": f"no challenge {cid!r}"})
        if not self.event().open and not player.is_operator:
            return Outcome(403, {"detail": "the event is closed"})
        return None

    def _batcher(self, cid: str) -> Batcher:
        # Keyed by the loop itself (not its id, which a later loop may reuse): a batcher's queue
        # belongs to one event loop.
        key = (asyncio.get_running_loop(), cid)
        b = self._batchers.get(key)
        if b is None:
            b = self._batchers[key] = Batcher(functools.partial(self._process, cid), self.settings.batch_max,
                                             self.settings.batch_window_ms / 1000.0)
        return b

    async def score(self, player: Player, cid: str, body: bytes) -> Outcome:
        """Check, charge, score and log one query. ``body`` is the raw JSON, already size-capped.

        The answer comes only after the charge and the query-log row are committed. With
        micro-batching on, concurrent queries for a challenge share one transaction and one
        ``score_batch`` call; with it off each query runs alone."""
        t0 = time.perf_counter()
        if (closed := self._closed_to(player, cid)) is not None:
            return closed
        spec = self.specs[cid]
        payload, refusal, cost = None, None, 0
        try:
            payload = fastjson.parse_body(body)
        except fastjson.BodyError as e:
            refusal = Outcome(400, {"detail": str(e)})
        if refusal is None and not isinstance(payload, dict):
            refusal = Outcome(422, {"detail": "body must be a JSON object, e.g. {\"input\": ...}"})
        if refusal is None:
            try:
                cost = spec.challenge.cost(payload)
                if not isinstance(cost, int) or cost < 1:
                    raise InputError("payload has no scorable content")
                m = spec.manifest
                if cost > min(m.burst, m.query_budget):  # could never be charged: a limit, not a wait
                    raise InputError(f"this request would cost {cost} queries; one request may cost at most "
                                     f"{min(m.burst, m.query_budget)} on this challenge; split it")
            except InputError as e:
                refusal, cost = Outcome(422, {"detail": str(e).splitlines()[0]}), 0
        pending = Pending(player, None if refusal else payload, QueryItem.of_body(player.id, cost, body), refusal, t0)
        if self.settings.micro_batching:
            return await self._batcher(cid).submit(pending)
        return (await asyncio.to_thread(self._process, cid, [pending]))[0]

    def _process(self, cid: str, group: list[Pending]) -> list[Outcome]:
        """Charge and log ``group`` in one transaction, score the accepted payloads, answer each.
        Runs in a worker thread; returns only after the charges are committed."""
        spec = self.specs[cid]
        m = spec.manifest
        t = time.perf_counter()
        for p in group:
            p.item.log["latency_ms"] = (t - p.t0) * 1000  # arrival until the charge was attempted
        charges = self.budgets.charge_queries(cid, [p.item for p in group], rate_per_minute=m.rate_per_minute,
                                              burst=m.burst, total=m.query_budget,
                                              submit_burst=self.settings.submit_per_minute)
        outcomes: list[Outcome | None] = [None] * len(group)
        accepted = []
        for i, (p, charge) in enumerate(zip(group, charges)):
            if charge.ok:
                accepted.append(i)
            elif not charge.reason:
                outcomes[i] = p.refusal
            else:
                headers = {"X-Queries-Remaining": str(charge.remaining),
                           "X-RateLimit-Remaining": str(int(charge.tokens))}
                if charge.reason == "total":
                    outcomes[i] = Outcome(429, {"detail": "query budget for this challenge exhausted",
                                                "remaining": charge.remaining}, headers)
                else:
                    headers["Retry-After"] = str(charge.retry_after)
                    outcomes[i] = Outcome(429, {"detail": f"rate limit: {m.rate_per_minute:g} queries per minute, "
                                                          f"burst {m.burst}; retry in {charge.retry_after} s",
                                                "remaining": charge.remaining}, headers)
        results = self._run_model(cid, [group[i].payload for i in accepted])
        corrections = []
        for i, result in zip(accepted, results):
            p, charge, cost = group[i], charges[i], group[i].item.cost
            if isinstance(result, Exception):
                outcome = "invalid" if isinstance(result, InputError) else "error"
                corrections.append((p.player.id, cost, charge.log_id, outcome))
                if isinstance(result, InputError):
                    outcomes[i] = Outcome(422, {"detail": str(result).splitlines()[0] if str(result) else "invalid input"})
                else:
                    outcomes[i] = Outcome(500, {"detail": "the challenge failed to score this input; "
                                                          "the operator has been logged"})
                continue
            remaining = charge.remaining
            refund = cost - result.cost if 0 <= result.cost < cost else 0  # the challenge charged less than announced
            if refund or result.solved:
                corrections.append((p.player.id, refund, charge.log_id, "solved" if result.solved else "ok"))
                remaining += refund
            body_out: dict[str, Any] = {"result": result.output, "remaining": remaining}
            if result.solved:
                body_out["flag"] = flag_for(self.settings.secret, p.player.id, cid)
            outcomes[i] = Outcome(200, body_out, {"X-Queries-Remaining": str(remaining),
                                                  "X-RateLimit-Remaining": str(int(charge.tokens))})
        self.budgets.correct_queries(cid, corrections)
        return outcomes  # type: ignore[return-value]

    def _run_model(self, cid: str, payloads: list[dict[str, Any]]) -> list[ScoreResult | Exception]:
        """One ``score_batch`` call (micro-batching) or ``score`` per payload; a broken challenge
        fails its requests, not the server."""
        if not payloads:
            return []
        ch = self.specs[cid].challenge
        if not self.settings.micro_batching:
            out: list[ScoreResult | Exception] = []
            for payload in payloads:
                try:
                    out.append(ch.score(payload))
                except Exception as e:
                    if not isinstance(e, InputError):
                        log.exception("challenge %s: score failed", cid)
                    out.append(e)
            return out
        try:
            results = ch.score_batch(payloads)
            if len(results) != len(payloads):
                raise RuntimeError(f"score_batch returned {len(results)} results for {len(payloads)} payloads")
            return results
        except Exception as e:
            log.exception("challenge %s: score_batch failed", cid)
            return [e] * len(payloads)

    # ---------------------------------------------------------------- flag submissions
    def submit(self, player: Player, cid: str, flag: Any) -> Outcome:
        if (closed := self._closed_to(player, cid)) is not None:
            return closed
        if not isinstance(flag, str) or len(flag) > MAX_FLAG or not fastjson.text_ok(flag):
            return Outcome(422, {"detail": BAD_FLAG})  # checked before charging
        m = self.specs[cid].manifest
        charge = self.budgets.charge_submission(player.id, cid, per_minute=self.settings.submit_per_minute,
                                                total=m.submission_limit, query_burst=m.burst)
        if not charge.ok:
            if charge.reason == "total":
                return Outcome(429, {"detail": f"submission limit for this challenge reached ({m.submission_limit})"})
            return Outcome(429, {"detail": f"too many submissions: {self.settings.submit_per_minute:g} per minute; "
                                           f"retry in {charge.retry_after} s"}, {"Retry-After": str(charge.retry_after)})
        now = time.time()
        if check_flag(self.settings.secret, player.id, cid, flag):
            with self.store.session() as s:
                already = s.scalars(select(Solve.id).where(Solve.player_id == player.id, Solve.challenge_id == cid)).first()
                s.add(Submission(player_id=player.id, challenge_id=cid, created_at=now, correct=True))
                if already is None:
                    n = s.scalar(select(func.count()).select_from(Solve).join(Player, Player.id == Solve.player_id)
                                 .where(Solve.challenge_id == cid, Player.is_operator.is_(False))) or 0
                    value = self.value(cid, n)
                    s.add(Solve(player_id=player.id, challenge_id=cid, created_at=now, value=value))
            if already is not None:
                return Outcome(200, {"correct": True, "already_solved": True})
            return Outcome(200, {"correct": True, "value": value})
        with self.store.session() as s:
            pids = list(s.scalars(select(Player.id)).all())
        owner = flag_owner(self.settings.secret, pids, cid, flag)
        sharing = owner is not None and owner != player.id
        with self.store.session() as s:
            s.add(Submission(player_id=player.id, challenge_id=cid, created_at=now, correct=False,
                             suspected_sharing=sharing, flag_owner_id=owner if sharing else None))
        if sharing:
            log.warning("suspected flag sharing: player %s submitted player %s's flag for %s", player.id, owner, cid)
        # The same answer as any wrong flag: the submitter learns nothing about the sharing check.
        return Outcome(200, {"correct": False})

    def verify(self, player_name: str, cid: str, flag: str, *, record: bool = False) -> Outcome:
        """Whether ``flag`` is ``player_name``'s flag for ``cid``, for operators and external boards.

        With ``record`` the check is a submission made on the player's behalf (an external scoreboard
        such as CTFd delegating its flag check): the same rate limits, solve bookkeeping and
        flag-sharing log as ``submit``. Body: ``{"valid": bool}`` (plus ``detail`` when refused).
        """
        if not all(isinstance(v, str) and fastjson.text_ok(v) for v in (player_name, cid, flag)):
            return Outcome(200, {"valid": False})
        p = self.store.player_by_name(names.normalize(player_name))
        if p is None or cid not in self.specs:
            return Outcome(200, {"valid": False})
        if not record:
            return Outcome(200, {"valid": check_flag(self.settings.secret, p.id, cid, flag)})
        if not self.event().open:  # machine-readable, so an external board can say so to its player
            return Outcome(403, {"valid": False, "event_closed": True, "detail": "the event is closed"})
        out = self.submit(p, cid, flag)
        if out.status != 200:
            return Outcome(out.status, {"valid": False, **out.body}, out.headers)
        return Outcome(200, {"valid": bool(out.body.get("correct"))})

    # ---------------------------------------------------------------- scoreboard
    def scoreboard(self, *, by: str = "player", live: bool = False) -> tuple[list[Standing], float | None]:
        """Ranked standings (players or teams) and the freeze time applied (None if live)."""
        st = self.event()
        frozen_at = None if live else st.frozen_at
        with self.store.session() as s:
            q = (select(Solve.challenge_id, Solve.created_at, Solve.value, Player.name, Team.name)
                 .join(Player, Player.id == Solve.player_id).outerjoin(Team, Team.id == Player.team_id)
                 .where(Player.is_operator.is_(False)))
            if frozen_at is not None:
                q = q.where(Solve.created_at <= frozen_at)
            rows = s.execute(q).all()
            names = s.scalars(select(Team.name) if by == "team" else
                              select(Player.name).where(Player.is_operator.is_(False))).all()
        counts: dict[str, int] = {}
        for cid, *_ in rows:
            counts[cid] = counts.get(cid, 0) + 1
        entries: dict[str, dict[str, tuple[float, int]]] = {n: {} for n in names}
        for cid, t, value, pname, tname in rows:
            if cid not in self.specs:
                continue
            if st.recompute_values:
                value = self.value(cid, max(0, counts[cid] - 1))
            account = tname if by == "team" else pname
            if account is None:
                continue
            prev = entries.setdefault(account, {}).get(cid)
            if prev is None or t < prev[0]:  # a team counts each challenge once, at its first solve
                entries[account][cid] = (t, value)
        return rank({n: list(v.values()) for n, v in entries.items()}), frozen_at

    # ---------------------------------------------------------------- operator views
    def submissions(self, limit: int = 500) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(Submission, Player.name).join(Player, Player.id == Submission.player_id)
                             .order_by(Submission.id.desc()).limit(limit)).all()
            owners = dict(s.execute(select(Player.id, Player.name)).all())
        return [dict(id=sub.id, player=name, challenge=sub.challenge_id, time=sub.created_at, correct=sub.correct,
                     suspected_sharing=sub.suspected_sharing,
                     flag_owner=owners.get(sub.flag_owner_id) if sub.flag_owner_id else None) for sub, name in rows]

    MAX_PAGE = 1000

    def query_log_page(self, limit: int = 100, before: int | None = None, *, player: str | None = None,
                       challenge: str | None = None) -> tuple[list[dict[str, Any]], int | None]:
        """One page of the query log, newest first: at most ``limit`` rows with ids below ``before``
        (keyset paging: rows logged meanwhile neither shift nor repeat a page), optionally of one
        player (by name) and/or challenge. Returns the rows and the cursor of the next page (None
        on the last one)."""
        if not 1 <= limit <= self.MAX_PAGE:
            raise InputError(f"limit must be 1 to {self.MAX_PAGE}")
        self._check_log_filters(player, challenge)
        q = (select(QueryLog, Player.name).join(Player, Player.id == QueryLog.player_id)
             .order_by(QueryLog.id.desc()).limit(limit))
        if before is not None:
            q = q.where(QueryLog.id < before)
        if player is not None:
            q = q.where(Player.name == names.normalize(player))
        if challenge is not None:
            q = q.where(QueryLog.challenge_id == challenge)
        with self.store.session() as s:
            rows = s.execute(q).all()
        out = [dict(id=r.id, player=name, challenge=r.challenge_id, time=r.created_at, cost=r.cost,
                    payload_bytes=r.payload_bytes, payload_sha256=r.payload_sha256, outcome=r.outcome,
                    latency_ms=round(r.latency_ms, 2)) for r, name in rows]
        return out, (out[-1]["id"] if len(out) == limit else None)

    @staticmethod
    def _check_log_filters(*values: str | None) -> None:
        if not all(v is None or fastjson.text_ok(v) for v in values):
            raise InputError("the player and challenge filters must be text without NUL characters")

    def query_log_all(self, *, player: str | None = None, challenge: str | None = None,
                      batch: int = MAX_PAGE) -> Iterator[dict[str, Any]]:
        """Every matching row, newest first, read page by page (memory stays one page, however long
        the log): for exports. The filters are checked now, before the first row is asked for."""
        self._check_log_filters(player, challenge)

        def rows() -> Iterator[dict[str, Any]]:
            before = None
            while True:
                page, before = self.query_log_page(batch, before, player=player, challenge=challenge)
                yield from page
                if before is None:
                    return

        return rows()

    def query_log(self, limit: int = 500) -> list[dict[str, Any]]:
        """The latest ``limit`` rows (see :meth:`query_log_page` for paging)."""
        return self.query_log_page(limit)[0]


def new_secret() -> str:
    return secrets.token_hex(32)


def ensure_data_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path
