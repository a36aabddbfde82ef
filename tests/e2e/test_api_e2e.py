"""Issue 5 acceptance, end to end: `keysentry sim` and `keysentry serve` on PostgreSQL, each its own process.

Tenants and tokens are made through the admin API, a key of every exchange is connected over
HTTP, and each connection must show its status (the same table the in-process API tests use,
api.harness.EXPECTED). The serving process's output and the whole database are scanned for the
canary secrets; a second tenant sees none of the first one's connections.

`keysentry serve` is run as `python -m keysentry serve` once cli.py has the command, and as
`python -m keysentry.api` (the same `serve()` function) until then.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

import canary
from api.harness import EXPECTED, keys, scenario
from conftest import require_service

pytestmark = [pytest.mark.e2e, pytest.mark.services]

PG_HOST, PG_PORT = "127.0.0.1", 5432
START_TIMEOUT_S = 30
BANNER = "keysentry API listening on "


def _serve_command() -> list[str]:
    with warnings.catch_warnings():  # typer's own deprecation warnings on import are not ours
        warnings.simplefilter("ignore", DeprecationWarning)
        from keysentry.cli import app

    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    if "serve" in names:
        return [sys.executable, "-m", "keysentry", "serve", "--host", "127.0.0.1", "--port", "0"]
    return [sys.executable, "-m", "keysentry.api", "--host", "127.0.0.1", "--port", "0"]


async def _pg(sql: str, database: str = "postgres") -> list[Any]:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=database)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[tuple[str, str]]:
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ks_e2e_{secrets.token_hex(5)}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}", name
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Served:
    process: subprocess.Popen[str]
    base: str
    stderr: Path
    admin: str


def _wait_for_banner(process: subprocess.Popen[str], stderr: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if line.startswith(BANNER):
                return line[len(BANNER) :].strip()
            if not line and process.poll() is not None:
                break
        elif process.poll() is not None:
            break
    process.kill()
    raise AssertionError(
        f"keysentry serve did not start: {canary.redact(stderr.read_text(errors='replace'))}"
    )


@pytest.fixture(scope="module")
def served(
    start_sim: Any, clean_env: Any, pg_url: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    sim = start_sim(scenario(keys()))
    admin = secrets.token_urlsafe(32)
    canary.register(admin, "e2e-admin-token")
    folder = tmp_path_factory.mktemp("serve")
    env = clean_env(
        KEYSENTRY_DATA_DIR=str(folder / "data"),
        KEYSENTRY_DATABASE_URL=pg_url[0],
        KEYSENTRY_ADMIN_TOKEN=admin,
        KEYSENTRY_EGRESS_IPS="127.0.0.3",
        **{f"KEYSENTRY_{ex.upper()}_BASE_URL": sim.url(ex) for ex in ("binance", "okx", "bybit", "kucoin")},
    )
    stderr = folder / "stderr.txt"
    with stderr.open("w", encoding="utf-8") as err:
        process = subprocess.Popen(_serve_command(), stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    base = _wait_for_banner(process, stderr)
    try:
        yield Served(process, base, stderr, admin)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError("keysentry serve did not stop on SIGTERM") from None
        finally:
            if process.stdout is not None:
                process.stdout.close()
        # uvicorn re-raises the signal after its clean shutdown
        assert code in (0, -signal.SIGTERM), code


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    canary.assert_no_leak(text, f"the answer to {method} {url}")
    return r.status, json.loads(text) if text else None


async def _tenant(session: aiohttp.ClientSession, base: str, admin: str, name: str) -> str:
    status, tenant = await _call(session, "POST", f"{base}/v1/tenants", admin, {"name": name})
    assert status == 201, tenant
    status, made = await _call(
        session, "POST", f"{base}/v1/tenants/{tenant['id']}/tokens", admin, {"name": "e2e"}
    )
    assert status == 201, made
    token: str = made["token"]
    canary.register(token, f"e2e-token-{name}", token[3:])
    return token


async def test_connections_added_over_http_show_their_statuses(
    served: Served, pg_url: tuple[str, str]
) -> None:
    made = keys()
    async with aiohttp.ClientSession() as session:
        token = await _tenant(session, served.base, served.admin, "e2e-a")
        other = await _tenant(session, served.base, served.admin, "e2e-b")
        shown: dict[str, str] = {}
        for name, expected in EXPECTED.items():
            key = made[name]
            url = f"{served.base}/v1/connections"
            status, body = await _call(session, "POST", url, token, key.add(name))
            if expected == "connected":
                assert status == 201, body
            else:  # refused with its diagnosis, then stored on purpose
                assert status == 422, body
                assert body["diagnosis"]["status"] == expected
                status, body = await _call(session, "POST", url, token, key.add(name, save_anyway=True))
                assert status == 201, body
            shown[name] = body["connection"]["status"]
        assert shown == dict(EXPECTED)
        status, page = await _call(session, "GET", f"{served.base}/v1/connections?limit=200", token)
        assert status == 200
        assert {c["label"]: c["status"] for c in page["items"]} == dict(EXPECTED)
        first = page["items"][0]["id"]
        status, refreshed = await _call(
            session, "POST", f"{served.base}/v1/connections/{first}/refresh", token
        )
        assert status == 200, refreshed
        status, checks = await _call(session, "GET", f"{served.base}/v1/connections/{first}/checks", token)
        assert [c["trigger"] for c in checks["items"]][:1] == ["refresh"]
        # the other tenant sees nothing of it, and cannot reach it
        status, theirs = await _call(session, "GET", f"{served.base}/v1/connections", other)
        assert (status, theirs["items"]) == (200, [])
        status, _ = await _call(session, "GET", f"{served.base}/v1/connections/{first}", other)
        assert status == 404
        status, ready = await _call(session, "GET", f"{served.base}/readyz", token)
        assert (status, ready["status"]) == (200, "ready")
        status, exchanges = await _call(session, "GET", f"{served.base}/v1/exchanges", token)
        assert exchanges["egress_ips"] == ["127.0.0.3"]

    # nothing secret in the database in clear, nor in what the server wrote
    tables = await _pg("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=pg_url[1])
    for row in tables:
        rows = await _pg(f'SELECT * FROM "{row["tablename"]}"', database=pg_url[1])
        canary.assert_no_leak(repr([dict(r) for r in rows]), f"table {row['tablename']}")
    canary.assert_no_leak(served.stderr.read_text(errors="replace"), "keysentry serve's stderr")
