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


# libpq's sslmode (what `fly postgres attach`, Heroku, Render, Supabase and Neon hand out) is
# asyncpg's ``ssl``; both take the same mode names.
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq parameters that mean nothing to asyncpg but are harmless to drop.
_IGNORED_PARAMS = {"sslrootcert", "sslcert", "sslkey", "target_session_attrs", "channel_binding"}


def engine_url(database_url: str | None, default_path: Path = DEFAULT_SQLITE_PATH) -> str:
    """``DATABASE_URL`` -> a SQLAlchemy async URL. Unset: a SQLite file under ./data."""
    if not database_url:
        default_path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{default_path}"
    if database_url.startswith("sqlite+aiosqlite://"):
        return database_url
    if database_url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + database_url[len("sqlite://") :]
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return _asyncpg_url("postgresql+asyncpg://" + database_url[len(prefix) :])
    raise StoreError("DATABASE_URL must be a postgresql:// or sqlite:// URL")


def _asyncpg_url(url: str) -> str:
    """Translate libpq query parameters into asyncpg's, and refuse what cannot be honoured."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError("DATABASE_URL is not a valid URL") from None
    query: dict[str, str] = {}
    for key, value in parsed.query.items():
        value = value[-1] if isinstance(value, tuple) else value
        if key in ("sslmode", "ssl"):
            if value not in _SSL_MODES:
                modes = ", ".join(sorted(_SSL_MODES))
                raise StoreError(f"DATABASE_URL: sslmode must be one of {modes}; got {value!r}")
            query["ssl"] = value
        elif key == "connect_timeout":
            if not value.isdigit():
                raise StoreError("DATABASE_URL: connect_timeout must be whole seconds")
            query["timeout"] = value
        elif key in ("application_name", "options", "timeout", "command_timeout"):
            query[key] = value
        elif key not in _IGNORED_PARAMS:
            raise StoreError(f"DATABASE_URL: unsupported parameter {key!r}")
    if "application_name" in query:  # asyncpg takes it as a server setting
        query.pop("application_name")
    return parsed.set(query=query).render_as_string(hide_password=False)


def describe_failure(exc: BaseException, database_url: str | None) -> str:
    """Which part of the database URL is wrong, from the driver's error; never the password."""
    try:
        url = sa.engine.make_url(engine_url(database_url))
    except (StoreError, sa.exc.ArgumentError):
        return type(exc).__name__
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 6:
        chain.append(cur)
        cur = getattr(cur, "orig", None) or cur.__cause__ or cur.__context__
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if names & {"InvalidPasswordError"} or "password authentication failed" in text:
        return f"password refused for user {url.username!r} at {where}"
    if names & {"InvalidAuthorizationSpecificationError"} or "role" in text and "not exist" in text:
        return f"user {url.username!r} is not known at {where}"
    if names & {"InvalidCatalogNameError"} or "database" in text and "not exist" in text:
        return f"database {url.database!r} does not exist at {where}"
    if names & {"gaierror"} or "name or service not known" in text or "nodename" in text:
        return f"host {url.host!r} cannot be resolved"
    if names & {"ConnectionRefusedError"} or "connect call failed" in text:
        return f"nothing is listening at {where}"
    if names & {"TimeoutError", "CancelledError"}:
        return f"no answer from {where} in time"
    if "ssl" in text:
        return f"TLS negotiation with {where} failed (check sslmode)"
    return f"{type(exc).__name__} at {where}"


class Database:
    """An async engine plus the few dialect-specific helpers the stores need."""

    def __init__(self, database_url: str | None, *, sqlite_path: Path = DEFAULT_SQLITE_PATH):
        register_secret(database_url)
        self.url = database_url
        url = engine_url(database_url, sqlite_path)
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            # A wait instead of "database is locked" when another process holds the write lock.
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=5, max_overflow=5, pool_pre_ping=True)
            if "timeout=" not in url:  # a firewalled host must not hang start-up
                kwargs["connect_args"] = {"timeout": 10}
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
                # create_all adds no index to a table that exists: indexes added later need it
                for table in schema.metadata.sorted_tables:
                    for index in table.indexes:
                        await conn.run_sync(lambda c, i=index: i.create(c, checkfirst=True))
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
        except (OSError, TimeoutError, sa.exc.SQLAlchemyError) as exc:
            reason = describe_failure(exc, self.url)
            event(log, "store_unavailable", error=reason, dialect=self.dialect)
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
