"""Shared test fixtures.

Services (PostgreSQL, Redis) are required in CI: when CI=true a missing service fails the
test loudly instead of skipping it.

Canary secrets (tests/canary.py): every log record of every test is collected at DEBUG level,
formatted as a log file would hold it (tracebacks included), and scanned for every registered
canary; a test whose records hold one fails, naming the logger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Test modules import shared helpers by their bare name (`import canary`), whatever the rootdir.
sys.path.append(str(Path(__file__).parent))

import canary

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(host: str, port: int, name: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as e:
        message = f"{name} is not reachable at {host}:{port} ({e})"
        if IN_CI:
            pytest.fail(f"{message}; CI must run it (see ../shared/RECIPES.md)")
        pytest.skip(message)


# -- a database and a Redis key space of a test's own ---------------------------------------------

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


async def pg_query(sql: str, database: str = "postgres") -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=database)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (packages with their own fixture override it)."""
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ks_test_{secrets.token_hex(5)}"
    asyncio.run(pg_query(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(pg_query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A Redis key prefix of the test's own; its keys are deleted afterwards."""
    import redis

    require_service(REDIS_HOST, REDIS_PORT, "Redis")
    prefix = f"kstest-{secrets.token_hex(5)}"
    yield prefix
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        for key in client.scan_iter(f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


# -- canaries in logs ---------------------------------------------------------------------------


class LogCollector(logging.Handler):
    """Keeps every record as formatted text: what a log file or a log shipper would receive."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot be formatted is still scanned, raw
            text = f"{record.msg!r} {record.args!r}"
        self.lines.append((record.name, text))  # list.append is atomic: records from threads are safe

    def take(self) -> list[tuple[str, str]]:
        lines, self.lines = self.lines, []
        return lines


@pytest.fixture(scope="session")
def log_collector() -> Iterator[LogCollector]:
    root = logging.getLogger()
    handler, previous = LogCollector(), root.level
    root.addHandler(handler)
    # DEBUG, so a secret in a debug line is caught although no one runs with debug logs on.
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture(autouse=True)
def no_canary_in_logs(request: pytest.FixtureRequest, log_collector: LogCollector) -> Iterator[None]:
    """Fail the test when a registered canary secret appears in any log record.

    Records logged while fixtures of a wider scope were set up or torn down between tests are
    scanned with the next test's.
    """
    yield
    leaks = sorted({(label, name) for name, text in log_collector.take() for label in canary.scan(text)})
    if leaks:
        where = "; ".join(f"{label} in a record of logger {name!r}" for label, name in leaks)
        pytest.fail(f"{request.node.nodeid}: canary secret leaked into the logs: {where}", pytrace=False)
