"""Schema migrations (Alembic), packaged inside keysentry.store so an installed keysentry finds them.

`await upgrade_engine(engine, url)` (what `Database.open` does) and `upgrade(url)` (blocking,
for `keysentry db upgrade` and scripts; safe to call from inside a running event loop too)
bring a database to the newest revision. Concurrent upgrades are serialised: PostgreSQL by an
advisory lock taken in env.py, SQLite by its write lock (transactions begin IMMEDIATE).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import pkgutil
import threading
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import MetaData
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from keysentry.store.db import CONNECTION_ERRORS, create_engine, normalize_url, resolve_url, unavailable
from keysentry.store.errors import MigrationError

SCRIPT_LOCATION = str(Path(__file__).parent / "migrations")


def load_models() -> MetaData:
    """The metadata of every table keysentry stores: imports each module of keysentry.store, so a
    model declared outside models.py (tokens.py, ...) is compared and migrated too."""
    import keysentry.store as package
    from keysentry.store.models import Base

    for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        if not info.name.endswith(".migrations"):
            importlib.import_module(info.name)
    return Base.metadata


def alembic_config(connection: SyncConnection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def current_revision(connection: SyncConnection) -> str | None:
    """The revision a database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


# Alembic keeps its running context in module globals: two migrations of one process must not
# interleave, whether on two event loops (threads) or as two tasks of one loop.
_THREAD_LOCK = threading.Lock()
_LOOP_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _upgrade(connection: SyncConnection, revision: str) -> str | None:
    with _THREAD_LOCK:
        before = current_revision(connection)
        command.upgrade(alembic_config(connection), revision)
        return before


async def upgrade_engine(engine: AsyncEngine, url: URL, revision: str = "head") -> str | None:
    """Migrate the database behind `engine`; returns the revision it was at before (None: empty)."""
    lock = _LOOP_LOCKS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    try:
        async with lock, engine.begin() as conn:
            return await conn.run_sync(_upgrade, revision)
    except CommandError as e:
        # the usual cause: the database was migrated by a newer keysentry
        raise MigrationError(
            f"cannot migrate the database {url.render_as_string(hide_password=True)}: {e}. If a newer "
            "keysentry upgraded it, run that version (or restore the database from its backup)"
        ) from None
    except CONNECTION_ERRORS as e:
        raise unavailable(url, e) from None
    except SQLAlchemyError as e:
        raise MigrationError(
            f"migrating the database {url.render_as_string(hide_password=True)} failed and was rolled "
            f"back: {type(e).__name__}: {str(getattr(e, 'orig', e) or e).splitlines()[0]}"
        ) from None


async def upgrade_async(url: URL | str, *, schema: str | None = None, revision: str = "head") -> str | None:
    resolved = resolve_url(url, Path(".")) if isinstance(url, str) else normalize_url(url)
    engine = create_engine(resolved, schema=schema)
    try:
        return await upgrade_engine(engine, resolved, revision)
    finally:
        await engine.dispose()


def upgrade(url: URL | str, *, schema: str | None = None, revision: str = "head") -> str | None:
    """Blocking upgrade. Inside a running event loop it runs on a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(upgrade_async(url, schema=schema, revision=revision))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, upgrade_async(url, schema=schema, revision=revision)).result()


async def schema_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(current_revision)
