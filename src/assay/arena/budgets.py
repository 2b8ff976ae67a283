"""Query and submission budgets and password-attempt limits, enforced atomically in the database.

Each (player, challenge) has a token bucket (``rate_per_minute`` refill, ``burst`` capacity) and a
hard total (``query_budget``); flag submissions have their own bucket (settings'
``submit_per_minute``) and total (``submission_limit``); each client address has a bucket for
password attempts. Every spend is ONE conditional statement (:class:`TokenBuckets`),

    UPDATE budgets
       SET tokens = least(burst, tokens + (now - updated_at) * rate) - cost,
           updated_at = now, used = used + cost
     WHERE player_id = :p AND challenge_id = :c
       AND used + cost <= total
       AND least(burst, tokens + (now - updated_at) * rate) >= cost

so two requests (in one process or in several, on SQLite or PostgreSQL) can never both spend the
last token: the database serialises the writes and re-evaluates the WHERE clause on the row it
locks. Nothing is kept in process memory, so a restart loses nothing.

:meth:`Budgets.charge_queries` is the scoring path: a group commit. It charges many queries (a
micro-batch gathered from concurrent requests, or a single query) with one such conditional UPDATE
each, inserts every query-log row, and commits ONCE. The statements run in order inside one
transaction, so a player with several queries in the group sees each earlier charge: the group can
never exceed a budget. It talks to the DBAPI connection directly (prepared SQL text, no ORM)
because at hundreds of requests per second the per-statement overhead of the ORM/Core layers
dominates.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from assay.arena.store import Budget, LoginAttempts, QueryLog, Store


@dataclass
class Charge:
    ok: bool
    remaining: int  # hard total left after this charge (0 for buckets without a total)
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

    @classmethod
    def of_body(cls, player_id: int, cost: int, body: bytes, outcome: str = "invalid") -> QueryItem:
        """The item for a request ``body``: the log keeps its size and SHA-256, never the body.
        ``outcome`` is what the log says if the item is not charged."""
        return cls(player_id, cost, dict(created_at=time.time(), payload_bytes=len(body),
                                         payload_sha256=hashlib.sha256(body).hexdigest(), outcome=outcome,
                                         latency_ms=0.0))


def level_sql(tokens: str, stamp: str) -> str:
    """The token-bucket formula, the only place it is written: the level now of a bucket whose
    columns ``tokens`` and ``stamp`` hold its level at its last update,
    least(:burst, tokens + (:now - stamp) * :rate) (spelled with CASE: SQLite's min() and
    PostgreSQL's least() differ)."""
    grown = f"{tokens} + (:now - {stamp}) * :rate"
    return f"CASE WHEN {grown} < :burst THEN {grown} ELSE :burst END"


def retry_after(cost: float, level: float, rate: float, burst: float) -> int:
    """Whole seconds until a bucket at ``level`` holds ``cost`` tokens; an hour when it never can
    (the cost is over the capacity, or nothing refills): stop, rather than retry soon."""
    if cost > burst or rate <= 0:
        return 3600
    return max(1, math.ceil((cost - level) / rate))


class TokenBuckets:
    """One kind of token bucket kept in table rows, and its spend: the conditional UPDATE, then (if
    it refused) a SELECT of the state for the answer, and on first contact an INSERT of a full
    bucket and the UPDATE once more. Budgets' query and submission buckets and the password-attempt
    buckets are all spent by :meth:`take`.

    Parameters
    ----------
    store: the database (for its parameter style).
    table, key: the table and the SQL condition naming one row (``:name`` parameters).
    tokens, stamp: the columns holding the level and the time of its last update.
    used: the column counting spends against a hard total (``:total``), or None for none.
    new_row: the INSERT ... ON CONFLICT DO NOTHING creating a full bucket.
    """

    def __init__(self, store: Store, table: str, key: str, tokens: str, stamp: str, used: str | None,
                 new_row: str):
        level = level_sql(tokens, stamp)
        spend = f"{tokens} = {level} - :cost, {stamp} = :now" + (f", {used} = {used} + :cost" if used else "")
        within_total = f" AND {used} + :cost <= :total" if used else ""
        counted = f", {used}" if used else ""
        self.take_sql = store.sql(f"UPDATE {table} SET {spend} WHERE {key}{within_total} AND {level} >= :cost "
                                  f"RETURNING {tokens}{counted}")
        self.state_sql = store.sql(f"SELECT {level}{counted} FROM {table} WHERE {key}")
        self.new_row_sql = store.sql(new_row)
        self.has_total = used is not None

    def take(self, cur, params: dict[str, Any]) -> Charge:
        """Spend ``params["cost"]`` tokens (and as much of the total) in the transaction of DBAPI
        cursor ``cur``, or nothing. ``params``: the key's, ``now``, ``rate`` (tokens per second),
        ``burst`` (a float), ``cost``, ``total`` when there is one, and whatever ``new_row`` needs."""
        state = None
        for _attempt in range(2):
            cur.execute(self.take_sql, params)
            row = cur.fetchone()
            if row is not None:
                return Charge(True, params["total"] - row[1] if self.has_total else 0, row[0])
            cur.execute(self.state_sql, params)
            state = cur.fetchone()
            if state is not None:
                break
            cur.execute(self.new_row_sql, params)  # first contact: a full bucket, then try again
        if state is None:  # pragma: no cover - the row vanished between INSERT and UPDATE
            raise RuntimeError("token bucket row could not be created")
        level, cost = state[0], params["cost"]
        remaining = params["total"] - state[1] if self.has_total else 0
        if self.has_total and state[1] + cost > params["total"]:
            return Charge(False, remaining, level, "total")
        return Charge(False, remaining, level, "rate", retry_after(cost, level, params["rate"], params["burst"]))


_BUDGET_KEY = "player_id = :pid AND challenge_id = :cid"
# A first query or submission creates the row with both buckets full.
_NEW_BUDGET = ("INSERT INTO budgets (player_id, challenge_id, tokens, updated_at, used, sub_tokens, sub_updated_at, "
               "sub_used) VALUES (:pid, :cid, :query_burst, :now, 0, :submit_burst, :now, 0) ON CONFLICT DO NOTHING")
_SQL_LOG = ("INSERT INTO query_log (player_id, challenge_id, created_at, cost, payload_bytes, payload_sha256, "
            "outcome, latency_ms) VALUES (:pid, :cid, :created_at, :cost, :payload_bytes, :payload_sha256, "
            ":outcome, :latency_ms) RETURNING id")


class Budgets:
    def __init__(self, store: Store):
        self.store = store
        self.queries = TokenBuckets(store, "budgets", _BUDGET_KEY, "tokens", "updated_at", "used", _NEW_BUDGET)
        self.submissions = TokenBuckets(store, "budgets", _BUDGET_KEY, "sub_tokens", "sub_updated_at", "sub_used",
                                        _NEW_BUDGET)
        self._sql_log = store.sql(_SQL_LOG)

    def charge_submission(self, player_id: int, challenge_id: str, *, per_minute: float, total: int,
                          query_burst: int) -> Charge:
        """Take one flag submission from the submission bucket (capacity = per_minute) and total."""
        params = dict(pid=player_id, cid=challenge_id, now=time.time(), rate=per_minute / 60.0, burst=float(per_minute),
                      cost=1, total=total, query_burst=float(query_burst), submit_burst=float(per_minute))
        with self.store.raw_transaction() as cur:
            return self.submissions.take(cur, params)

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
        >>> budgets.charge_queries("c", [QueryItem.of_body(1, 1, b'{"x": 1}')], rate_per_minute=60, burst=10,
        ...                        total=100, submit_burst=10)  # doctest: +SKIP
        """
        charges: list[Charge] = [None] * len(items)  # type: ignore[list-item]  (all filled below)
        with self.store.raw_transaction() as cur:
            common = dict(cid=challenge_id, now=time.time(), rate=rate_per_minute / 60.0, burst=float(burst),
                          total=total, query_burst=float(burst), submit_burst=float(submit_burst))
            # Charged in player order: concurrent groups in other processes then lock budget rows
            # in the same order (no PostgreSQL deadlock); the sort is stable, so one player's
            # queries keep their arrival order.
            for i in sorted(range(len(items)), key=lambda j: items[j].player_id):
                item = items[i]
                charges[i] = (self.queries.take(cur, dict(common, pid=item.player_id, cost=item.cost))
                              if item.cost > 0 else Charge(False, 0, 0.0))
            for item, charge in zip(items, charges):
                if charge.ok:
                    outcome = "ok"
                else:
                    outcome = {"total": "budget", "rate": "rate"}.get(charge.reason, item.log["outcome"])
                cur.execute(self._sql_log, dict(item.log, pid=item.player_id, cid=challenge_id, outcome=outcome,
                                                cost=item.cost if charge.ok else 0))
                charge.log_id = cur.fetchone()[0]
        return charges

    def correct_queries(self, challenge_id: str, corrections: Sequence[tuple[int, int, int | None, str]]) -> None:
        """Correct charges after scoring, in one transaction: each (player_id, refund, log_id,
        outcome) gives back ``refund`` queries of the hard total (never of the bucket, so refused
        payloads stay rate limited) and sets its log row's outcome and cost."""
        if not corrections:
            return
        with self.store.engine.begin() as conn:
            # player order, as in charge_queries: no lock-order deadlock with other processes' groups
            for player_id, cost, log_id, outcome in sorted(corrections, key=lambda c: c[0]):
                if cost > 0:
                    conn.execute(update(Budget).where(Budget.player_id == player_id, Budget.challenge_id == challenge_id)
                                 .values(used=Budget.used - cost))
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
        self.buckets = TokenBuckets(store, "login_attempts", "client = :client", "tokens", "updated_at", None,
                                    "INSERT INTO login_attempts (client, tokens, updated_at) "
                                    "VALUES (:client, :burst, :now) ON CONFLICT DO NOTHING")
        self._sql_prune = store.sql(f"DELETE FROM login_attempts WHERE {level_sql('tokens', 'updated_at')} >= :burst")

    def take(self, client: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        if now - self._pruned_at >= self.prune_seconds:
            self._pruned_at = now
            self._prune(now)
        params = dict(client=client[:64], now=now, rate=self.rate, burst=self.burst, cost=1)
        with self.store.raw_transaction() as cur:
            charge = self.buckets.take(cur, params)
        return 0 if charge.ok else charge.retry_after

    def _prune(self, now: float) -> None:
        # Its own transaction, best effort: two workers pruning at once may deadlock on PostgreSQL
        # (they lock rows in different orders); one of them giving up loses nothing, the rows go later.
        try:
            with self.store.engine.begin() as conn:
                conn.exec_driver_sql(self._sql_prune, dict(now=now, rate=self.rate, burst=self.burst))
        except DBAPIError:
            pass

    def rows(self) -> int:
        """How many client addresses the table holds now."""
        with self.store.session() as s:
            return s.scalar(select(func.count()).select_from(LoginAttempts)) or 0
