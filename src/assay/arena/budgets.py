"""Query and submission budgets, enforced atomically in the database.

Each (player, challenge) has a token bucket (``rate_per_minute`` refill, ``burst`` capacity) and a
hard total (``query_budget``); flag submissions have their own bucket (settings'
``submit_per_minute``) and total (``submission_limit``). A charge is ONE conditional statement,

    UPDATE budgets
       SET tokens = least(burst, tokens + (now - updated_at) * rate) - cost,
           updated_at = now, used = used + cost
     WHERE player_id = :p AND challenge_id = :c
       AND used + cost <= total
       AND least(burst, tokens + (now - updated_at) * rate) >= cost

so two requests (in one process or in several, on SQLite or PostgreSQL) can never both spend the
last token: the database serialises the writes and re-evaluates the WHERE clause on the row it
locks. Nothing is kept in process memory, so a restart loses nothing.

:meth:`Budgets.charge_queries` is the scoring hot path: a group commit. It charges many queries (a
micro-batch gathered from concurrent requests) with one such conditional UPDATE each, inserts every
query-log row, and commits ONCE. The statements run in order inside one transaction, so a player
with several queries in the group sees each earlier charge: the group can never exceed a budget.
It talks to the DBAPI connection directly (prepared SQL text, no ORM) because at hundreds of
requests per second the per-statement overhead of the ORM/Core layers dominates.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.exc import DBAPIError

from assay.arena.store import Budget, LoginAttempts, QueryLog, Store


@dataclass
class Charge:
    ok: bool
    remaining: int  # hard total left after this charge
    tokens: float  # bucket level after this charge
    reason: str = ""  # "" | "total" | "rate"
    retry_after: int = 0  # seconds until the bucket holds enough tokens (reason "rate")
    log_id: int | None = None  # the query-log row written in the same transaction


@dataclass
class QueryItem:
    """One scoring query in a group commit. ``cost`` 0 means "log only" (the request was already
    refused, e.g. as invalid, and ``outcome`` says why); ``log`` holds the other QueryLog columns
    (created_at, payload_bytes, payload_sha256, outcome, latency_ms)."""

    player_id: int
    cost: int
    log: dict[str, Any]


# Raw SQL for the hot path, written with :name parameters (sqlite3's style) and translated to
# %(name)s for psycopg. The refill expression is least(burst, tokens + (now - updated_at) * rate).
_REFILL = ("CASE WHEN tokens + (:now - updated_at) * :rate < :burst "
           "THEN tokens + (:now - updated_at) * :rate ELSE :burst END")
_SQL_CHARGE = (f"UPDATE budgets SET tokens = {_REFILL} - :cost, updated_at = :now, used = used + :cost "
               f"WHERE player_id = :pid AND challenge_id = :cid AND used + :cost <= :total "
               f"AND {_REFILL} >= :cost RETURNING tokens, used")
_SQL_STATE = "SELECT tokens, updated_at, used FROM budgets WHERE player_id = :pid AND challenge_id = :cid"
_SQL_NEW_ROW = ("INSERT INTO budgets (player_id, challenge_id, tokens, updated_at, used, sub_tokens, "
                "sub_updated_at, sub_used) VALUES (:pid, :cid, :burst, :now, 0, :sub_burst, :now, 0) "
                "ON CONFLICT DO NOTHING")
_SQL_LOG = ("INSERT INTO query_log (player_id, challenge_id, created_at, cost, payload_bytes, payload_sha256, "
            "outcome, latency_ms) VALUES (:pid, :cid, :created_at, :cost, :payload_bytes, :payload_sha256, "
            ":outcome, :latency_ms) RETURNING id")


def _pyformat(sql: str) -> str:
    return re.sub(r":(\w+)", r"%(\1)s", sql)


def _least(a, b):
    # Portable two-argument minimum (SQLite's min() and PostgreSQL's least() differ).
    return case((a < b, a), else_=b)


class Budgets:
    def __init__(self, store: Store):
        self.store = store
        sqls = (_SQL_CHARGE, _SQL_STATE, _SQL_NEW_ROW, _SQL_LOG)
        if store.dialect == "postgresql":
            sqls = tuple(_pyformat(q) for q in sqls)
        self._sql_charge, self._sql_state, self._sql_new_row, self._sql_log = sqls

    def _ensure_row(self, player_id: int, challenge_id: str, burst: float, sub_burst: float, now: float) -> None:
        values = dict(
            player_id=player_id, challenge_id=challenge_id, tokens=float(burst), updated_at=now, used=0,
            sub_tokens=float(sub_burst), sub_updated_at=now, sub_used=0,
        )
        ins = self.store.insert_ignoring_conflicts(Budget).values(**values)
        with self.store.engine.begin() as conn:
            conn.execute(ins.on_conflict_do_nothing())

    def _charge(self, player_id, challenge_id, cost, rate_per_minute, burst, total, submission: bool,
                other_burst: float, log_row: dict | None = None) -> Charge:
        B = Budget
        tokens, stamp, used = (B.sub_tokens, B.sub_updated_at, B.sub_used) if submission else (B.tokens, B.updated_at, B.used)
        rate = rate_per_minute / 60.0
        for _attempt in range(2):
            now = time.time()
            refilled = _least(literal(float(burst)), tokens + (literal(now) - stamp) * rate)
            stmt = (
                update(B)
                .where(B.player_id == player_id, B.challenge_id == challenge_id)
                .where(used + cost <= total)
                .where(refilled >= cost)
                .values({tokens: refilled - cost, stamp: now, used: used + cost})
                .returning(tokens, used)
            )
            with self.store.engine.begin() as conn:
                row = conn.execute(stmt).first()
                if row is not None:
                    log_id = None
                    if log_row is not None:  # same transaction: the log is exactly as durable as the charge
                        log_id = conn.execute(QueryLog.__table__.insert().values(**log_row, cost=cost)
                                              .returning(QueryLog.id)).scalar()
                    return Charge(True, total - row[1], row[0], log_id=log_id)
                state = conn.execute(
                    select(tokens, stamp, used).where(B.player_id == player_id, B.challenge_id == challenge_id)
                ).first()
            if state is None:  # first contact with this challenge: create the full bucket, retry
                bursts = (other_burst, burst) if submission else (burst, other_burst)
                self._ensure_row(player_id, challenge_id, bursts[0], bursts[1], now)
                continue
            level = min(burst, state[0] + (now - state[1]) * rate)
            if state[2] + cost > total:
                return Charge(False, total - state[2], level, "total")
            wait = math.ceil((cost - level) / rate) if rate > 0 else 3600
            if cost > burst:
                wait = 3600  # can never fit; tell the client to stop, not to retry soon
            return Charge(False, total - state[2], level, "rate", max(1, wait))
        raise RuntimeError("budget row could not be created")  # pragma: no cover

    def charge_query(self, player_id: int, challenge_id: str, cost: int, *, rate_per_minute: float, burst: int,
                     total: int, submit_burst: float, log_row: dict | None = None) -> Charge:
        """Take ``cost`` queries from the bucket and the hard total, or nothing at all; on success also
        insert ``log_row`` (QueryLog columns but cost) in the same transaction."""
        return self._charge(player_id, challenge_id, cost, rate_per_minute, burst, total, False, submit_burst,
                            log_row)

    def charge_submission(self, player_id: int, challenge_id: str, *, per_minute: float, total: int,
                          query_burst: int) -> Charge:
        """Take one flag submission from the submission bucket (capacity = per_minute) and total."""
        return self._charge(player_id, challenge_id, 1, per_minute, per_minute, total, True, query_burst)

    def charge_queries(self, challenge_id: str, items: Sequence[QueryItem], *, rate_per_minute: float, burst: int,
                       total: int, submit_burst: float) -> list[Charge]:
        """Charge a group of queries and log them all in ONE transaction (group commit).

        Parameters
        ----------
        challenge_id: the challenge every item queries.
        items: the group, in arrival order; a player may appear several times.
        rate_per_minute, burst, total: the challenge's bucket and hard total (see the module doc).
        submit_burst: capacity of the submission bucket, for budget rows created here.

        Returns
        -------
        One :class:`Charge` per item, in order: ``ok`` with the budget left, or the refusal
        (``reason`` "total" or "rate", and ``retry_after``); items with cost 0 are logged and
        returned as not ok with reason "". Each ``log_id`` names the item's query-log row. When this
        returns, everything is committed; on an exception nothing is.

        Example
        -------
        >>> budgets.charge_queries("c", [QueryItem(1, 1, log)], rate_per_minute=60, burst=10, total=100,
        ...                        submit_burst=10)  # doctest: +SKIP
        """
        rate = rate_per_minute / 60.0
        charges: list[Charge | None] = [None] * len(items)
        conn = self.store.engine.raw_connection()
        try:
            cur = conn.cursor()
            now = time.time()
            # Charged in player order: concurrent groups in other processes then lock budget rows
            # in the same order (no PostgreSQL deadlock); the sort is stable, so one player's
            # queries keep their arrival order.
            for i in sorted(range(len(items)), key=lambda j: items[j].player_id):
                item = items[i]
                if item.cost <= 0:
                    charges[i] = Charge(False, 0, 0.0)
                    continue
                params = dict(pid=item.player_id, cid=challenge_id, now=now, rate=rate, burst=float(burst),
                              cost=item.cost, total=total)
                cur.execute(self._sql_charge, params)
                row = cur.fetchone()
                if row is None:
                    cur.execute(self._sql_state, params)
                    state = cur.fetchone()
                    if state is None:  # first contact with this challenge: a full bucket, then retry
                        cur.execute(self._sql_new_row, dict(params, sub_burst=float(submit_burst)))
                        cur.execute(self._sql_charge, params)
                        row = cur.fetchone()
                        if row is None:  # e.g. a cost above the burst: refused even on a full bucket
                            cur.execute(self._sql_state, params)
                            state = cur.fetchone()
                if row is not None:
                    charges[i] = Charge(True, total - row[1], row[0])
                    continue
                level = min(burst, state[0] + (now - state[1]) * rate)
                if state[2] + item.cost > total:
                    charges[i] = Charge(False, total - state[2], level, "total")
                    continue
                wait = math.ceil((item.cost - level) / rate) if rate > 0 else 3600
                if item.cost > burst:
                    wait = 3600  # can never fit; tell the client to stop, not to retry soon
                charges[i] = Charge(False, total - state[2], level, "rate", max(1, wait))
            for item, charge in zip(items, charges):
                if charge.ok:
                    outcome = "ok"
                else:
                    outcome = {"total": "budget", "rate": "rate"}.get(charge.reason, item.log["outcome"])
                cur.execute(self._sql_log, dict(item.log, pid=item.player_id, cid=challenge_id, outcome=outcome,
                                                cost=item.cost if charge.ok else 0))
                charge.log_id = cur.fetchone()[0]
            cur.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()  # back to the pool
        return charges  # type: ignore[return-value]

    def correct_queries(self, challenge_id: str, corrections: Sequence[tuple[int, int, int | None, str]]) -> None:
        """Apply several :meth:`refund_query` corrections, given as (player_id, refund, log_id,
        outcome), in one transaction."""
        if not corrections:
            return
        with self.store.engine.begin() as conn:
            # player order, as in charge_queries: no lock-order deadlock with other processes' groups
            for player_id, cost, log_id, outcome in sorted(corrections, key=lambda c: c[0]):
                self._refund(conn, player_id, challenge_id, cost, log_id, outcome)

    def refund_query(self, player_id: int, challenge_id: str, cost: int, log_id: int | None = None,
                     outcome: str | None = None) -> None:
        """Give back the hard-total part of a charge whose payload the challenge rejected (the bucket
        part stays spent, so invalid requests are still rate limited), and correct its log row."""
        with self.store.engine.begin() as conn:
            self._refund(conn, player_id, challenge_id, cost, log_id, outcome)

    @staticmethod
    def _refund(conn, player_id: int, challenge_id: str, cost: int, log_id: int | None, outcome: str | None) -> None:
        if cost > 0:
            conn.execute(
                update(Budget)
                .where(Budget.player_id == player_id, Budget.challenge_id == challenge_id)
                .values(used=Budget.used - cost)
            )
        if log_id is not None and outcome is not None:
            conn.execute(update(QueryLog).where(QueryLog.id == log_id)
                         .values(outcome=outcome, cost=QueryLog.cost - max(cost, 0)))

    def used(self, player_id: int, challenge_id: str) -> int:
        with self.store.session() as s:
            row = s.get(Budget, (player_id, challenge_id))
            return row.used if row else 0


class AttemptLimiter:
    """A token bucket per client address for the password routes (login and registration), kept in
    the database like the query budgets, so every worker process shares it.

    Every attempt counts, right or wrong: each one costs an argon2 computation, so an unthrottled
    route is both a password-guessing and a CPU-exhaustion vector. ``take(client)`` returns 0 when
    the attempt may proceed, else the whole seconds to wait; the spend is one conditional UPDATE,
    so concurrent attempts from N workers cannot share out more than the bucket holds. Rows of full
    buckets are deleted at most every ``prune_seconds`` per process. Behind a reverse proxy, run
    uvicorn with ``--proxy-headers`` so the client address is the real one.
    """

    def __init__(self, store: Store, per_minute: float, burst: int, prune_seconds: float = 60.0):
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be > 0 and burst >= 1")
        self.store, self.rate, self.burst = store, per_minute / 60.0, float(burst)
        self.prune_seconds, self._pruned_at = prune_seconds, float("-inf")

    def _refilled(self, now: float):
        L = LoginAttempts
        return _least(literal(self.burst), L.tokens + (literal(now) - L.updated_at) * self.rate)

    def take(self, client: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        client = client[:64]
        L = LoginAttempts
        if now - self._pruned_at >= self.prune_seconds:
            self._pruned_at = now
            self._prune(now)
        with self.store.engine.begin() as conn:
            for _attempt in range(2):
                spent = conn.execute(update(L).where(L.client == client, self._refilled(now) >= 1.0)
                                     .values(tokens=self._refilled(now) - 1.0, updated_at=now)
                                     .returning(L.tokens)).first()
                if spent is not None:
                    return 0
                state = conn.execute(select(L.tokens, L.updated_at).where(L.client == client)).first()
                if state is not None:
                    level = min(self.burst, state[0] + (now - state[1]) * self.rate)
                    return max(1, math.ceil((1.0 - level) / self.rate))
                insert = self.store.insert_ignoring_conflicts(L)
                conn.execute(insert.values(client=client, tokens=self.burst, updated_at=now).on_conflict_do_nothing())
        raise RuntimeError("login bucket row could not be created")  # pragma: no cover

    def _prune(self, now: float) -> None:
        # Its own transaction, best effort: two workers pruning at once may deadlock on PostgreSQL
        # (they lock rows in different orders); one of them giving up loses nothing, the rows go later.
        try:
            with self.store.engine.begin() as conn:
                conn.execute(delete(LoginAttempts).where(self._refilled(now) >= self.burst))
        except DBAPIError:
            pass

    def rows(self) -> int:
        """How many client addresses the table holds now."""
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(LoginAttempts)) or 0
