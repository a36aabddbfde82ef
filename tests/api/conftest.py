"""Fixtures of the API tests: the stack on SQLite (module-scoped) and a PostgreSQL database per run."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from api.harness import Stack, stack
from conftest import require_service

PG_HOST, PG_PORT = "127.0.0.1", 5432


async def _pg_async(sql: str, database: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg(sql: str, database: str = "postgres") -> None:
    # On a thread of its own: the fixture may first be asked for from inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, _pg_async(sql, database)).result()


@pytest.fixture(scope="session")
def api_pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test run (dropped at the end): its URL."""
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ks_api_{secrets.token_hex(5)}"
    _pg(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """The whole API on SQLite, shared by a module's tests (each test makes its own tenants)."""
    tmp: Path = tmp_path_factory.mktemp("api")
    async with stack(tmp, f"sqlite+aiosqlite:///{tmp / 'keysentry.db'}") as s:
        yield s
