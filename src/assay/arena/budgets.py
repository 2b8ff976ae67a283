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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from sqlalchemy import case, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from assay.arena.store import Budget, QueryLog, Store


@dataclass
class Charge:
    ok: bool
    remaining: int  # hard total left after this charge
    tokens: float  # bucket level after this charge
    reason: str = ""  # "" | "total" | "rate"
    retry_after: int = 0  # seconds until the bucket holds enough tokens (reason "rate")
    log_id: int | None = None  # the query-log row written in the same transaction


def _least(a, b):
    # Portable two-argument minimum (SQLite's min() and PostgreSQL's least() differ).
    return case((a < b, a), else_=b)


class Budgets:
    def __init__(self, store: Store):
        self.store = store

    def _ensure_row(self, player_id: int, challenge_id: str, burst: float, sub_burst: float, now: float) -> None:
        values = dict(
            player_id=player_id, challenge_id=challenge_id, tokens=float(burst), updated_at=now, used=0,
            sub_tokens=float(sub_burst), sub_updated_at=now, sub_used=0,
        )
        ins = (postgresql if self.store.dialect == "postgresql" else sqlite).insert(Budget).values(**values)
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

    def refund_query(self, player_id: int, challenge_id: str, cost: int, log_id: int | None = None,
                     outcome: str | None = None) -> None:
        """Give back the hard-total part of a charge whose payload the challenge rejected (the bucket
        part stays spent, so invalid requests are still rate limited), and correct its log row."""
        with self.store.engine.begin() as conn:
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
