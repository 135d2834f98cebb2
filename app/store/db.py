"""The database connection: SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL.

One code path for both. Differences are confined here: the URL's driver, SQLite's locking
(every transaction takes the write lock at BEGIN, so a read-modify-write cannot interleave with
another process), and the dialect's ``INSERT .. ON CONFLICT`` constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from app.logs import event, get_logger, register_secret
from app.store import schema

log = get_logger(__name__)

DEFAULT_SQLITE_PATH = Path("data") / "voice-agent.db"


class StoreError(RuntimeError):
    """The database cannot be used (bad URL, newer schema, unreachable server)."""


def engine_url(database_url: str | None, default_path: Path = DEFAULT_SQLITE_PATH) -> str:
    """``DATABASE_URL`` -> a SQLAlchemy async URL. Unset: a SQLite file under ./data."""
    if not database_url:
        default_path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{default_path}"
    for prefix in ("postgresql+asyncpg://", "sqlite+aiosqlite://"):
        if database_url.startswith(prefix):
            return database_url
    for prefix in ("postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+asyncpg://" + database_url[len(prefix) :]
    if database_url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + database_url[len("sqlite://") :]
    raise StoreError("DATABASE_URL must be a postgresql:// or sqlite:// URL")


class Database:
    """An async engine plus the few dialect-specific helpers the stores need."""

    def __init__(self, database_url: str | None, *, sqlite_path: Path = DEFAULT_SQLITE_PATH):
        register_secret(database_url)
        url = engine_url(database_url, sqlite_path)
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            # A wait instead of "database is locked" when another process holds the write lock.
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=5, max_overflow=5, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock: asyncio.Lock | None = None
        if self.is_sqlite:
            self._write_lock = asyncio.Lock()
            _sqlite_locking(self.engine)

    @property
    def dialect(self) -> str:
        return "sqlite" if self.is_sqlite else "postgresql"

    def insert(self, table: sa.Table) -> Any:
        """``INSERT`` supporting ``on_conflict_do_nothing/_do_update`` on either database."""
        return (sqlite.insert if self.is_sqlite else postgresql.insert)(table)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        """One read-write transaction; commits on success, rolls back on error. On SQLite,
        writers of this process queue here rather than in SQLite's sleeping busy handler."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only connection (on SQLite a deferred transaction: it takes no write lock)."""
        async with self.engine.connect() as conn:
            await conn.execution_options(read_only=True)
            yield conn

    async def create(self) -> None:
        """Create missing tables (idempotent; safe when several instances start at once)."""
        try:
            async with self.engine.begin() as conn:
                if not self.is_sqlite:
                    # Concurrent CREATE TABLE from two instances would collide; serialise them.
                    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7402519)"))
                await conn.run_sync(schema.metadata.create_all)
                row = (await conn.execute(sa.select(schema.schema_info.c.version))).first()
                if row is None:
                    await conn.execute(
                        schema.schema_info.insert().values(id=1, version=schema.SCHEMA_VERSION)
                    )
                elif row.version > schema.SCHEMA_VERSION:
                    raise StoreError(
                        f"database schema v{row.version} is newer than this build "
                        f"(v{schema.SCHEMA_VERSION})"
                    )
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            event(log, "store_unavailable", error=type(exc).__name__, dialect=self.dialect)
            reason = type(exc).__name__
            raise StoreError(f"cannot open the {self.dialect} database: {reason}") from exc
        event(log, "store_ready", dialect=self.dialect)

    async def drop_all(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(schema.metadata.drop_all)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_locking(engine: AsyncEngine) -> None:
    """Let SQLAlchemy, not the driver, start transactions, and start them as IMMEDIATE: the
    write lock is taken at BEGIN, so claims and pacing reservations are serialised even across
    processes sharing the file."""

    @sa_event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # With WAL, NORMAL survives a process crash intact; only power loss can drop the last
        # commits. One fsync per commit would cap call-record writes at disk latency.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @sa_event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
