"""Migrations: the models and the migrations agree, upgrades are idempotent and safe to race."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from keysentry.store.db import Database
from keysentry.store.errors import MigrationError
from keysentry.store.migrate import (
    SCRIPT_LOCATION,
    alembic_config,
    head_revision,
    load_models,
    schema_revision,
    upgrade,
)
from store.backends import Target

TABLES = {"tenants", "connections", "credential_versions", "check_history", "audit_log", "alembic_version"}


def _differences(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, load_models()))


async def test_migrated_schema_matches_the_models(db_target: Target) -> None:
    db = await db_target.open()
    try:
        async with db.engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            names = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert names >= TABLES
        assert await schema_revision(db.engine) == head_revision()
    finally:
        await db.close()


async def test_upgrade_twice_is_a_no_op_and_concurrent_upgrades_both_succeed(db_target: Target) -> None:
    # Several processes starting at once all migrate on start: they must not trip over each other.
    results = await asyncio.gather(*(_open_and_close(db_target) for _ in range(3)))
    assert all(r == head_revision() for r in results)
    again = await db_target.open()
    try:
        assert await schema_revision(again.engine) == head_revision()
    finally:
        await again.close()


async def _open_and_close(target: Target) -> str | None:
    db = await target.open()
    try:
        return await schema_revision(db.engine)
    finally:
        await db.close()


def test_processes_starting_at_once_all_migrate_safely(db_target: Target) -> None:
    # PostgreSQL serialises them with an advisory lock, SQLite with its write lock
    code = "import sys; from keysentry.store.migrate import upgrade; upgrade(sys.argv[1], schema=sys.argv[2] or None)"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_target.url, db_target.schema or ""],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=60), p.stderr.read().decode() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()
    assert [code for code, _ in outcomes] == [0, 0, 0], [err[-500:] for _, err in outcomes]
    assert upgrade(db_target.url, schema=db_target.schema) == head_revision()


def test_upgrade_is_callable_from_plain_code(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert upgrade(url) is None  # an empty database: no revision before
    assert upgrade(url) == head_revision()


async def test_upgrade_is_callable_from_inside_a_running_loop(tmp_path: Path) -> None:
    # a blocking call from async code must not try to re-enter the running loop
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert upgrade(url) is None
    db = await Database.open(url, migrate=False)
    try:
        assert await schema_revision(db.engine) == head_revision()
    finally:
        await db.close()


async def test_downgrade_to_nothing_and_up_again(db_target: Target) -> None:
    db = await db_target.open()
    try:

        def down(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "base")

        async with db.engine.begin() as conn:
            await conn.run_sync(down)
        async with db.engine.connect() as conn:
            left = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert left <= {"alembic_version"}
    finally:
        await db.close()
    db = await db_target.open()
    try:
        assert await schema_revision(db.engine) == head_revision()
    finally:
        await db.close()


async def test_a_database_from_a_newer_keysentry_is_refused_with_advice(db_target: Target) -> None:
    db = await db_target.open()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    finally:
        await db.close()
    with pytest.raises(MigrationError, match="newer keysentry"):
        await db_target.open()


def test_migrations_ship_inside_the_package() -> None:
    # an installed keysentry (a wheel, no source tree) must find them next to the models
    versions = Path(SCRIPT_LOCATION) / "versions"
    assert (Path(SCRIPT_LOCATION) / "env.py").is_file()
    assert any(p.suffix == ".py" for p in versions.iterdir())
    assert Path(SCRIPT_LOCATION).parent.name == "store"
