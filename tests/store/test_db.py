"""Where the store lives and how it is opened: URLs, SQLite settings, unreachable databases."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path

import pytest
from sqlalchemy import text

from keysentry.store.db import Database, resolve_url, safe_url
from keysentry.store.errors import DatabaseConfigError, DatabaseUnavailable
from store.backends import Target


def test_default_url_is_a_sqlite_file_in_the_data_directory(tmp_path: Path) -> None:
    url = resolve_url(None, tmp_path / "data")
    assert url.drivername == "sqlite+aiosqlite"
    assert Path(str(url.database)) == tmp_path / "data" / "keysentry.db"
    assert resolve_url("  ", tmp_path) == resolve_url(None, tmp_path)


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u@db:5432/ks", "postgresql+asyncpg"),
        ("postgres://u@db/ks", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u@db/ks", "postgresql+asyncpg"),
        ("sqlite:////var/lib/ks.db", "sqlite+aiosqlite"),
    ],
)
def test_plain_urls_get_the_async_driver(given: str, driver: str, tmp_path: Path) -> None:
    url = resolve_url(given, tmp_path)
    assert url.drivername == driver
    assert url.database == resolve_url(given.replace("postgres://", "postgresql://"), tmp_path).database


def test_unsupported_databases_are_refused_without_echoing_the_password(tmp_path: Path) -> None:
    with pytest.raises(DatabaseConfigError) as caught:
        resolve_url("mysql://admin:Sup3rSecretPw@db/ks", tmp_path)
    assert "mysql" in str(caught.value)
    assert "Sup3rSecretPw" not in str(caught.value)
    with pytest.raises(DatabaseConfigError, match="not a database URL"):
        resolve_url("::not a url Sup3rSecretPw", tmp_path)
    with pytest.raises(DatabaseConfigError, match="in-memory"):
        resolve_url("sqlite://", tmp_path)


def test_safe_url_hides_the_password() -> None:
    shown = safe_url("postgresql+asyncpg://ks:Sup3rSecretPw@db:5432/ks")
    assert "Sup3rSecretPw" not in shown
    assert shown.startswith("postgresql+asyncpg://ks:***@db:5432/ks")


async def test_sqlite_file_is_private_and_opened_with_wal_foreign_keys_and_a_busy_timeout(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "dir" / "keysentry.db"
    db = await Database.open(f"sqlite:///{path}")
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        async with db.engine.connect() as conn:
            pragmas = {
                name: (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "secure_delete")
            }
        assert pragmas == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": 30000,
            "secure_delete": 1,
        }
    finally:
        await db.close()


async def test_sqlite_writers_wait_for_each_other_instead_of_failing(tmp_path: Path) -> None:
    # Transactions begin IMMEDIATE: read-then-write transactions from two connections serialise.
    db = await Database.open(f"sqlite:///{tmp_path / 'k.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))

        async def bump() -> None:
            async with db.engine.begin() as conn:
                n = (await conn.execute(text("SELECT n FROM counter"))).scalar_one()
                await asyncio.sleep(0.01)
                await conn.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

        await asyncio.gather(*(bump() for _ in range(8)))
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM counter"))).scalar_one() == 8
    finally:
        await db.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_postgresql_is_named_with_its_password_hidden() -> None:
    url = f"postgresql://ks:Sup3rSecretPw@127.0.0.1:{_closed_port()}/ks"
    with pytest.raises(DatabaseUnavailable) as caught:
        await Database.open(url)
    message = str(caught.value)
    assert "Sup3rSecretPw" not in message
    assert "cannot use the database postgresql+asyncpg://ks:***@127.0.0.1" in message


async def test_schema_is_refused_for_sqlite_and_checked_for_postgresql(tmp_path: Path) -> None:
    with pytest.raises(DatabaseConfigError, match="PostgreSQL only"):
        await Database.open(f"sqlite:///{tmp_path / 'k.db'}", schema="ks")
    with pytest.raises(DatabaseConfigError, match="schema name"):
        await Database.open("postgresql://u@127.0.0.1/ks", schema="ks; DROP TABLE x")


async def test_postgresql_schema_holds_the_tables(pg_target: Target) -> None:
    db = await pg_target.open()
    try:
        async with db.engine.connect() as conn:
            tables = set(
                (
                    await conn.execute(
                        text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
                        {"s": pg_target.schema},
                    )
                ).scalars()
            )
        assert {"connections", "credential_versions", "check_history", "audit_log", "tenants"} <= tables
    finally:
        await db.close()


async def test_an_empty_url_is_refused_rather_than_a_file_in_the_current_directory() -> None:
    with pytest.raises(DatabaseConfigError, match="no database URL"):
        await Database.open("  ")
