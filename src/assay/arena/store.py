"""Persistent state: SQLAlchemy 2 typed models, engine and sessions.

SQLite (the default) runs in WAL mode with a busy timeout so several worker processes share one
file; PostgreSQL (``postgresql+psycopg://...``) is the choice for large events. Times are stored as
UNIX seconds (float) so that budget arithmetic happens inside SQL identically on both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from assay.arena.names import skeleton


class Base(DeclarativeBase):
    pass


class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    join_code: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Player(Base):
    __tablename__ = "players"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    # SHA-256 of the API key: keys are 256-bit random, so a fast hash is enough and allows lookup.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class Budget(Base):
    """One row per player and challenge: the query token bucket and hard total, and the flag
    submission bucket and total. Updated only by single conditional UPDATE statements."""

    __tablename__ = "budgets"
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), primary_key=True)
    challenge_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    used: Mapped[int] = mapped_column(Integer, default=0)
    sub_tokens: Mapped[float] = mapped_column(Float)
    sub_updated_at: Mapped[float] = mapped_column(Float)
    sub_used: Mapped[int] = mapped_column(Integer, default=0)


class Solve(Base):
    __tablename__ = "solves"
    __table_args__ = (UniqueConstraint("player_id", "challenge_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), index=True)
    challenge_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    value: Mapped[int] = mapped_column(Integer)  # the challenge's value when this solve was made


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    player_id: Mapped[int] = mapped_column(ForeignKey("players.id"), index=True)
    challenge_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    correct: Mapped[bool] = mapped_column(Boolean)
    suspected_sharing: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_owner_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # whose flag it was


class QueryLog(Base):
    """Every scored query; the payload itself is not kept, only its size and SHA-256."""

    __tablename__ = "query_log"
    __table_args__ = (Index("ix_query_log_player_challenge", "player_id", "challenge_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    player_id: Mapped[int] = mapped_column(Integer)
    challenge_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    cost: Mapped[int] = mapped_column(Integer)
    payload_bytes: Mapped[int] = mapped_column(Integer)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))  # ok, solved, invalid, budget, rate, error
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)


class LoginAttempts(Base):
    """One token bucket per client address for the password routes; rows of full buckets are
    deleted from time to time (they hold no information), so the table stays small."""

    __tablename__ = "login_attempts"
    client: Mapped[str] = mapped_column(String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class EventState(Base):
    """A single row (id 1): whether the event is open, the scoreboard freeze, the scoring mode."""

    __tablename__ = "event_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    open: Mapped[bool] = mapped_column(Boolean, default=True)
    frozen_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recompute_values: Mapped[bool] = mapped_column(Boolean, default=False)


class AccountEpoch(Base):
    """A single row (id 1) whose counter goes up whenever an account changes in a way an API-key
    cache must notice (key rotated, team changed, operator flag set). Each worker process reads it
    once per cache period and drops its key cache when it moved, so caches can be kept long while
    a rotated key still stops working everywhere within that period."""

    __tablename__ = "account_epoch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    counter: Mapped[int] = mapped_column(Integer, default=0)


class NameClaim(Base):
    """The uniqueness key (:func:`assay.arena.names.skeleton`) of every player and team name, so that
    look-alikes (``Admin``, ``admin.``, Cyrillic ``а``) cannot register beside a name. Inserted in the
    registration's transaction: the primary key settles concurrent registrations in the database.
    Its own table, so that older databases gain it; their accounts are claimed at start-up."""

    __tablename__ = "name_claims"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # "player" or "team"
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    owner_id: Mapped[int] = mapped_column(Integer)


class SolutionRelease(Base):
    """A single row (id 1): when the operator published the reference solutions (None: not).
    Its own table, so that databases created before it existed gain it from ``create_all``."""

    __tablename__ = "solution_release"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    published_at: Mapped[float | None] = mapped_column(Float, nullable=True)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, ``synchronous=NORMAL`` (a committed transaction
    survives a killed process) and a 30 s busy timeout so that worker processes wait, not fail."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Store:
    """Engine + session factory + schema creation."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine)
        with self.session() as s:
            if s.get(EventState, 1) is None:
                s.add(EventState(id=1, open=True))
            if s.get(AccountEpoch, 1) is None:
                s.add(AccountEpoch(id=1, counter=0))
            if s.get(SolutionRelease, 1) is None:
                s.add(SolutionRelease(id=1, published_at=None))
        self.claim_existing_names()

    def insert_ignoring_conflicts(self, model):
        """An INSERT that skips rows whose key exists (both dialects spell it ON CONFLICT DO NOTHING)."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(model)

    def claim_existing_names(self) -> list[str]:
        """Give every player and team without a name claim one (accounts from before the claims
        existed); returns the names that could not be claimed because an older look-alike holds the
        key (they keep working; only new registrations are affected)."""
        clashes = []
        with self.engine.begin() as conn:
            for kind, model in (("player", Player), ("team", Team)):
                claimed = select(NameClaim.owner_id).where(NameClaim.kind == kind)
                rows = conn.execute(select(model.id, model.name).where(model.id.not_in(claimed))
                                    .order_by(model.id)).all()
                for owner_id, name in rows:
                    done = conn.execute(self.insert_ignoring_conflicts(NameClaim)
                                        .values(kind=kind, key=skeleton(name), owner_id=owner_id)
                                        .on_conflict_do_nothing())
                    if done.rowcount == 0:
                        clashes.append(name)
        return clashes

    def sql(self, text: str) -> str:
        """``text``, written with ``:name`` parameters (sqlite3's style), in this database's DBAPI
        style (psycopg takes ``%(name)s``)."""
        return re.sub(r":(\w+)", r"%(\1)s", text) if self.dialect == "postgresql" else text

    @contextmanager
    def raw_transaction(self) -> Iterator[Any]:
        """A DBAPI cursor on a pooled connection, for the hot paths that skip the ORM (prepared SQL
        text from :meth:`sql`): commits when the block ends, rolls back on any exception."""
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            yield cur
            cur.close()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.close()  # back to the pool

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def event_state(self) -> EventState:
        with self.session() as s:
            state = s.get(EventState, 1)
            assert state is not None, "schema not initialised: run `assay arena init`"
            return state

    def state(self) -> tuple[EventState, int, float | None]:
        """The event state, the account epoch and when the solutions were published, read together
        (one session)."""
        with self.session() as s:
            state = s.get(EventState, 1)
            assert state is not None, "schema not initialised: run `assay arena init`"
            epoch = s.scalar(select(AccountEpoch.counter).where(AccountEpoch.id == 1)) or 0
            return state, epoch, s.scalar(select(SolutionRelease.published_at).where(SolutionRelease.id == 1))

    @staticmethod
    def bump_epoch(session: Session) -> None:
        """Advance the account epoch inside ``session``'s transaction (see :class:`AccountEpoch`)."""
        session.execute(update(AccountEpoch).where(AccountEpoch.id == 1).values(counter=AccountEpoch.counter + 1))

    def player_by_name(self, name: str) -> Player | None:
        with self.session() as s:
            return s.scalars(select(Player).where(Player.name == name)).first()

    def dispose(self) -> None:
        self.engine.dispose()
