"""Issue 7 acceptance, distributed mode: two Celery workers sweep 5,000 connections; one is SIGKILLed.

Real services: PostgreSQL (a database of this run) and Redis (a queue and key prefix of this run).
5,000 connections (Bybit and OKX simulators at their published rate limits, four egress
addresses) are written straight into the store; a Celery beat enqueues the due batches and two
`celery worker` processes (prefork, two children each) check them. When about a third is
recorded, the first worker's whole process group is killed with SIGKILL. Every connection must
still be checked, none more than twice (counted in the check history), and the simulators must
have answered no 429 and no ban (counted in the recorded findings).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import string
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import canary
from conftest import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, pg_query
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import Connection, CredentialVersion, Tenant
from keysentry.vault import Vault, generate_master_key

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(240)]

PER_EXCHANGE = {"bybit": 2500, "okx": 2500}
TOTAL = sum(PER_EXCHANGE.values())
EGRESS = "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5"
KILL_AT = TOTAL // 3
SWEEP_TIMEOUT_S = 150.0
_ALNUM = string.ascii_letters + string.digits
_HEX_UP = "0123456789ABCDEF"


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


@dataclass(frozen=True)
class Key:
    exchange: str
    api_key: str
    secret: str
    account: str
    passphrase: str | None = None


def _keys() -> list[Key]:
    """Keys in each exchange's format; a few hold canary secrets (every log line is scanned for them)."""
    out = []
    for i in range(PER_EXCHANGE["bybit"]):
        secret = canary.bybit_secret() if i < 2 else _rand(_ALNUM, 36)
        out.append(Key("bybit", _rand(_ALNUM, 18), secret, str(70_000_000 + i)))
    for i in range(PER_EXCHANGE["okx"]):
        secret = canary.okx_secret() if i < 2 else _rand(_HEX_UP, 32)
        passphrase = canary.passphrase("okx") if i < 2 else "Pass-" + _rand(_ALNUM, 12)
        out.append(Key("okx", str(uuid.uuid4()), secret, str(80_000_000 + i), passphrase))
    return out


def _scenario(keys: list[Key]) -> dict[str, Any]:
    perms = {"bybit": ["Spot.SpotTrade"], "okx": ["read_only", "trade"]}
    exchanges: dict[str, Any] = {name: {"accounts": []} for name in PER_EXCHANGE}
    for k in keys:
        # made yesterday: OKX deletes a key without an IP binding after 14 days unused
        spec: dict[str, Any] = {
            "api_key": k.api_key, "secret": k.secret, "permissions": perms[k.exchange], "created_at": "-1d"
        }  # fmt: skip
        if k.passphrase:
            spec["passphrase"] = k.passphrase
        exchanges[k.exchange]["accounts"].append({"id": k.account, "keys": [spec]})
    return {"seed": 11, "exchanges": exchanges}


async def _store_connections(db: Database, vault: Vault, keys: list[Key], tenant: str) -> None:
    """Write connections and their sealed keys in bulk, all due now (what an import would do)."""
    now = datetime.now(UTC)
    due = now - timedelta(minutes=1)
    connections, versions = [], []
    for i, k in enumerate(keys):
        cid = f"con_{i:016x}"
        credentials = ApiCredentials(
            k.api_key, Secret(k.secret), Secret(k.passphrase) if k.passphrase else None
        )
        version = creds.seal(
            vault, credentials, tenant_id=tenant, connection_id=cid, version=1, now=now, verified=True
        )
        connections.append(
            {
                "id": cid, "tenant_id": tenant, "exchange": k.exchange, "environment": "mainnet",
                "label": f"bot {i}", "profile": "trading", "account_id": k.account,
                "masked_key": credentials.masked_key, "key_fingerprint": version.key_fingerprint,
                "api_key_hash": creds.api_key_hash(vault, k.api_key), "current_version": 1,
                "status": "connected", "severity": "ok", "summary": "", "last_known_status": "connected",
                "findings": [], "permissions": [], "ip_restricted": None, "expires_at": None,
                "last_definitive_at": now, "temporary_findings": [], "temporary_since": None,
                "last_checked_at": now, "next_check_at": due, "created_at": now, "updated_at": now,
                "removed_at": None,
            }
        )  # fmt: skip
        versions.append(
            {c.key: getattr(version, c.key) for c in CredentialVersion.__table__.columns if c.key != "id"}
        )
    async with db.session() as s, s.begin():
        s.add(Tenant(id=tenant, name=tenant, created_at=now))
        await s.flush()
        await s.execute(Connection.__table__.insert(), connections)
        await s.execute(CredentialVersion.__table__.insert(), versions)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _start(name: str, args: list[str], env: dict[str, str], folder: Path) -> Proc:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "keysentry.monitor.celery_app", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            start_new_session=True,  # its own process group: SIGKILL takes the children too
        )
    return Proc(name, process, log)


@pytest.fixture
async def processes() -> AsyncIterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


async def test_a_sweep_survives_a_killed_worker(
    tmp_path: Path, pg_database: str, redis_prefix: str, processes: list[Proc]
) -> None:
    keys = _keys()
    master = generate_master_key()
    data_dir = tmp_path / "data"
    vault = Vault.open(data_dir, master_key=master, create=True)
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{pg_database}"
    db = await Database.open(url)
    try:
        await _store_connections(db, vault, keys, "t1")
    finally:
        await db.close()

    async with SimCluster(parse_scenario(_scenario(keys))) as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
        env.update(
            PYTHONUNBUFFERED="1",
            KEYSENTRY_DATA_DIR=str(data_dir),
            KEYSENTRY_MASTER_KEY=master,
            KEYSENTRY_DATABASE_URL=url,
            KEYSENTRY_REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            KEYSENTRY_EGRESS_IPS=EGRESS,
            KEYSENTRY_BYBIT_BASE_URL=cluster.url("bybit"),
            KEYSENTRY_OKX_BASE_URL=cluster.url("okx"),
            KEYSENTRY_MONITOR_QUEUE=f"{redis_prefix}-monitor",
            KEYSENTRY_MONITOR_KEY_PREFIX=redis_prefix,
            KEYSENTRY_MONITOR_BATCH_SIZE="50",
            KEYSENTRY_MONITOR_CONCURRENCY="50",
            KEYSENTRY_MONITOR_MAX_QUEUED_BATCHES="6",
            KEYSENTRY_MONITOR_BEAT_S="0.5",
            KEYSENTRY_MONITOR_LEASE_S="120",
            KEYSENTRY_MONITOR_VISIBILITY_TIMEOUT_S="8",
            KEYSENTRY_MONITOR_RESTORE_INTERVAL_S="1",
        )
        worker = [
            "worker",
            "--concurrency=2",
            "--pool=prefork",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        first = _start("worker1", [*worker, "--hostname=w1@%h"], env, tmp_path)
        second = _start("worker2", [*worker, "--hostname=w2@%h"], env, tmp_path)
        beat = _start(
            "beat", ["beat", "--loglevel=INFO", f"--schedule={tmp_path / 'beat-schedule'}"], env, tmp_path
        )
        processes.extend([first, second, beat])

        async def checked() -> int:
            rows = await pg_query("SELECT count(DISTINCT connection_id) AS n FROM check_history", pg_database)
            return int(rows[0]["n"])

        started = time.monotonic()
        killed_at: int | None = None
        while time.monotonic() - started < SWEEP_TIMEOUT_S:
            await asyncio.sleep(0.25)
            done = await checked()
            if killed_at is None and done >= KILL_AT:
                first.kill()  # the whole worker at once, mid-batch: its batches are unacknowledged
                killed_at = done
            if done >= TOTAL:
                break
            for p in (second, beat):
                assert p.process.poll() is None, f"{p.name} exited: {p.output()[-3000:]}"
        elapsed = time.monotonic() - started

    counts = await pg_query(
        "SELECT c.id, count(h.id) AS n FROM connections c LEFT JOIN check_history h ON h.connection_id = c.id "
        "GROUP BY c.id",
        pg_database,
    )
    per_connection = [int(r["n"]) for r in counts]
    assert killed_at is not None and killed_at < TOTAL, "the worker was not killed mid-sweep"
    missing = sum(1 for n in per_connection if n == 0)
    assert missing == 0, f"{missing} of {TOTAL} connections never checked within {elapsed:.0f} s"
    assert len(per_connection) == TOTAL
    assert max(per_connection) <= 2, f"a connection was checked {max(per_connection)} times"

    # No 429 and no ban: every recorded finding, temporary ones included, is free of them.
    findings = await pg_query("SELECT status, findings FROM check_history", pg_database)
    refused = [
        f
        for r in findings
        for f in json.loads(r["findings"])
        if (f.get("details") or {}).get("reason") in ("rate_limited", "ip_banned")
        or (f.get("details") or {}).get("http_status") in (418, 429)
    ]
    assert refused == []
    statuses = {r["status"] for r in findings}
    assert statuses <= {"connected", "expires_soon"}, statuses

    for p in processes:
        p.stop()
        assert canary.scan(p.output()) == [], f"{p.name} wrote a canary secret"
