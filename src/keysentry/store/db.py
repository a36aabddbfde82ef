"""Where the store lives and how it is opened: URL resolution, the async engine, sessions.

Default: a SQLite file `<data dir>/keysentry.db` (mode 0600) used through aiosqlite. Production:
PostgreSQL through asyncpg, named by KEYSENTRY_DATABASE_URL. `Database.open` runs the
migrations before anything else touches the schema.

SQLite is opened in WAL mode with foreign keys on, a busy timeout, `secure_delete` (a destroyed
ciphertext is overwritten in the file, not just unlinked) and `BEGIN IMMEDIATE` transactions:
a transaction that reads and then writes would otherwise fail at once with "database is
locked" when another process wrote in between, instead of waiting its turn.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from keysentry.store.errors import DatabaseConfigError, DatabaseUnavailable

DB_FILE = "keysentry.db"
BUSY_TIMEOUT_MS = 30_000
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
T = TypeVar("T")


def default_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir).expanduser() / DB_FILE}"


def resolve_url(database_url: str | None, data_dir: Path) -> URL:
    """The URL to use: KEYSENTRY_DATABASE_URL if set, else the SQLite file in the data directory.

    `sqlite://` and `postgresql://` (or `postgres://`) are accepted and given their async drivers.
    """
    raw = (database_url or "").strip() or default_url(data_dir)
    try:
        url = make_url(raw)
    except ArgumentError:
        # the unparsable text may hold a password: do not echo it
        raise DatabaseConfigError(
            "KEYSENTRY_DATABASE_URL is not a database URL; use e.g. "
            "postgresql://user@host:5432/keysentry or sqlite:////path/to/keysentry.db"
        ) from None
    return normalize_url(url)


def normalize_url(url: URL) -> URL:
    """`url` with keysentry's async driver for its database; refuses databases keysentry cannot use."""
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise DatabaseConfigError(
            f"database {url.drivername!r} is not supported (URL {safe_url(url)}); "
            "keysentry runs on SQLite (sqlite:///...) or PostgreSQL (postgresql://...)"
        )
    url = url.set(drivername=driver)
    if driver.startswith("sqlite") and url.database in (None, "", ":memory:"):
        raise DatabaseConfigError(
            "an in-memory SQLite database would forget every key on exit; give a file path "
            "(sqlite:////path/to/keysentry.db) or leave KEYSENTRY_DATABASE_URL unset"
        )
    return url


def safe_url(url: URL | str) -> str:
    """The URL with its password hidden, for messages and logs."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise DatabaseConfigError(
            f"schema name {schema[:70]!r} is not usable: lowercase letters, digits and _, at most 63"
        )
    return schema


def _prepare_sqlite_file(url: URL) -> None:
    path = Path(str(url.database)).expanduser()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # created 0600 before SQLite opens it (the -wal and -shm files take the same mode)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as e:
        raise DatabaseUnavailable(f"cannot open the database file {path}: {e.strerror}") from None


def _sqlite_events(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take transaction control from the sqlite3 module: it would not BEGIN before a SELECT
        # nor around DDL, so reads would see no snapshot and migrations would not be atomic
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA secure_delete = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: SyncConnection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: URL, *, schema: str | None = None, echo: bool = False) -> AsyncEngine:
    """An AsyncEngine for `url` (already resolved). `schema` (PostgreSQL only) sets the search path,
    so keysentry's tables live in their own schema of a shared database."""
    kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": False}
    if is_sqlite(url):
        if schema is not None:
            raise DatabaseConfigError("a schema applies to PostgreSQL only; SQLite has one per file")
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, **kwargs)
        _sqlite_events(engine)
        return engine
    if schema is not None:
        kwargs["connect_args"] = {"server_settings": {"search_path": check_schema_name(schema)}}
    return create_async_engine(url, pool_size=10, max_overflow=20, **kwargs)


def unavailable(url: URL, error: BaseException) -> DatabaseUnavailable:
    """A DatabaseUnavailable naming the database and the driver's reason, never its password."""
    reason = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    password = url.password
    if password:
        text = text.replace(str(password), "***")
    return DatabaseUnavailable(f"cannot use the database {safe_url(url)}: {text}")


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OperationalError, OSError, ConnectionError)


class Database:
    """The engine and session factory of one store. Open with `await Database.open(url)`."""

    def __init__(self, engine: AsyncEngine, url: URL, schema: str | None = None) -> None:
        self.engine = engine
        self.url = url
        self.schema = schema
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(
        cls,
        url: URL | str,
        *,
        schema: str | None = None,
        migrate: bool = True,
    ) -> Database:
        """Open the store at `url`, bringing its schema up to date unless `migrate` is False."""
        if isinstance(url, str) and not url.strip():
            # resolve_url would fall back to a file in the current directory: never by accident
            raise DatabaseConfigError(
                "no database URL given; use resolve_url(settings.database_url, data_dir)"
            )
        resolved = resolve_url(url, Path(".")) if isinstance(url, str) else normalize_url(url)
        engine = create_engine(resolved, schema=schema)
        db = cls(engine, resolved, schema)
        if migrate:
            from keysentry.store.migrate import upgrade_engine  # Alembic only when migrating

            try:
                await upgrade_engine(engine, resolved)
            except BaseException:
                await engine.dispose()
                raise
        return db

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def display_url(self) -> str:
        return safe_url(self.url)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def run_sync(self, fn: Callable[[SyncConnection], T]) -> T:
        """Run blocking code (the vault's rewrap) on one connection that commits as it goes."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(fn)

    async def checkpoint(self) -> bool:
        """SQLite: copy the WAL into the file and truncate it (old page versions, such as a destroyed
        ciphertext, leave the WAL). Outside any transaction, which SQLite requires. True if done."""
        if self.dialect != "sqlite":
            return False
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            busy, _, _ = await cursor.fetchone()
            await cursor.close()
        return not busy

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"
