"""Database backends and a Bybit/OKX bench for store and lifecycle tests (import as `store.backends`).

Every test that takes `db_target` runs twice: on a SQLite file and on the real PostgreSQL.
PostgreSQL gets one database per test run (`ks_<random>`, dropped at the end) and one schema
per test inside it, so runs and tests cannot collide. When CI=true a missing PostgreSQL fails
the test (tests/conftest.py `require_service`); elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import string
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import select

import canary
from conftest import require_service
from keysentry.connections import ConnectionService, NewKey
from keysentry.diagnosis.catalog import finding
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain import Diagnosis, Status
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import Connection, CredentialVersion
from keysentry.store.rewrap import CredentialRewrapTarget
from keysentry.vault import RewrapReport, Vault, generate_master_key, rewrap

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Target:
    """Where one test's store lives."""

    kind: str  # "sqlite" or "postgresql"
    url: str
    schema: str | None = None
    path: Path | None = None  # the SQLite file
    database: str | None = None  # the PostgreSQL database

    async def open(self, *, migrate: bool = True) -> Database:
        return await Database.open(self.url, schema=self.schema, migrate=migrate)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _pg_execute(sql: str, database: str = "postgres") -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this test run; its name."""
    require_service(PG_HOST, PG_PORT, "PostgreSQL")
    name = f"ks_{secrets.token_hex(6)}"
    _run(_pg_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        _run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "store" / "keysentry.db"
        yield Target("sqlite", f"sqlite+aiosqlite:///{path}", path=path)
        return
    yield from _pg_target(request.getfixturevalue("pg_database"))


@pytest.fixture
def pg_target(pg_database: str) -> Iterator[Target]:
    yield from _pg_target(pg_database)


def _pg_target(database: str) -> Iterator[Target]:
    schema = f"t_{secrets.token_hex(5)}"
    _run(_pg_execute(f"CREATE SCHEMA {schema}", database))
    try:
        yield Target(
            "postgresql",
            f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{database}",
            schema=schema,
            database=database,
        )
    finally:
        _run(_pg_execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE", database))


@pytest.fixture
async def db(db_target: Target) -> AsyncIterator[Database]:
    database = await db_target.open()
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.open(tmp_path / "vault", master_key=generate_master_key())


# -- keys and the exchange bench ----------------------------------------------------------------------


def _random_alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def bybit_api_key() -> str:
    return _random_alnum(18)


@dataclass(frozen=True)
class SimKey:
    """A key the simulator knows, with a canary secret (registered: a leak anywhere fails the test)."""

    exchange: str
    api_key: str
    secret: str
    account: str
    passphrase: str | None = None

    def new(self) -> NewKey:
        return NewKey(self.api_key, Secret(self.secret), Secret(self.passphrase) if self.passphrase else None)

    def spec(self, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"api_key": self.api_key, "secret": self.secret, **fields}
        if self.passphrase:
            out["passphrase"] = self.passphrase
        return out

    def __repr__(self) -> str:
        return f"SimKey({self.exchange}, {self.api_key[:4]}…, account {self.account})"


def bybit_key(account: str) -> SimKey:
    return SimKey("bybit", bybit_api_key(), canary.bybit_secret(), account)


def okx_key(account: str) -> SimKey:
    import uuid

    return SimKey("okx", str(uuid.uuid4()), canary.okx_secret(), account, canary.passphrase("okx"))


GOOD = {"permissions": ["Spot.SpotTrade"], "ip_whitelist": ["127.0.0.1"], "created_at": "-5d"}
OKX_GOOD = {"permissions": ["read_only", "trade"], "ip_whitelist": ["127.0.0.1"], "created_at": "-5d"}


@dataclass
class Bench:
    """A Bybit simulator with known accounts and keys, and a ConnectionService over one store."""

    cluster: SimCluster
    db: Database
    vault: Vault
    service: ConnectionService
    keys: dict[str, SimKey] = field(default_factory=dict)

    def key(self, name: str) -> NewKey:
        return self.keys[name].new()

    @property
    def bybit(self) -> Any:
        return self.cluster.scenario.exchanges["bybit"]

    def sim_key(self, name: str) -> Any:
        found = self.bybit.find_key(self.keys[name].api_key)
        assert found is not None
        return found[0]


@functools.cache
def bybit_keys() -> dict[str, SimKey]:
    """a1, a2: two healthy keys of account 30000001; b1 of 30000002; expired; deleted.

    Made once per run: every test has its own simulator and store, and every registered canary
    makes the log scan of every later test slower."""
    return {
        "a1": bybit_key("30000001"),
        "a2": bybit_key("30000001"),
        "b1": bybit_key("30000002"),
        "expired": bybit_key("30000003"),
        "deleted": bybit_key("30000004"),
        "c1": bybit_key("30000005"),
    }


def bybit_scenario(keys: dict[str, SimKey]) -> dict[str, Any]:
    by_account: dict[str, list[dict[str, Any]]] = {}
    for name, k in keys.items():
        fields = dict(GOOD)
        if name == "expired":
            fields = {"permissions": ["Spot.SpotTrade"], "created_at": "-95d"}
        if name == "deleted":
            fields["deleted"] = True
        by_account.setdefault(k.account, []).append(k.spec(**fields))
    accounts = [{"id": acc, "keys": ks} for acc, ks in by_account.items()]
    return {"seed": 5, "exchanges": {"bybit": {"accounts": accounts}}}


@asynccontextmanager
async def bench(db: Database, vault: Vault, *, spec: dict[str, Any] | None = None) -> AsyncIterator[Bench]:
    keys = bybit_keys()
    scenario = parse_scenario(spec or bybit_scenario(keys))
    async with (
        SimCluster(scenario) as cluster,
        Transport(timeouts=Timeouts(connect=2.0, total=4.0)) as transport,
    ):

        def options(exchange: str, environment: str, profile: str) -> CheckOptions:
            return CheckOptions(
                profile=get_profile(profile),
                environment=environment,
                base_url=cluster.url(exchange, environment),
            )

        service = ConnectionService(db, vault=vault, engine=DiagnosisEngine(transport), options=options)
        yield Bench(cluster, db, vault, service, keys)


# -- rows made by hand, for store-level tests ---------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def diagnosis(status: Status = Status.CONNECTED, **kw: Any) -> Diagnosis:
    findings = []
    if status is Status.TEMPORARY_ISSUE:
        findings = [finding("temporary_issue", exchange="bybit", reason="maintenance")]
    elif status is Status.EXPIRED:
        findings = [finding("expired", exchange="bybit")]
    return Diagnosis(exchange="bybit", environment="mainnet", findings=findings, checked_at=NOW, **kw)


def make_connection(
    cid: str, *, tenant: str = "t1", account: str | None = "A1", key_hash: str | None = None
) -> Connection:
    return Connection(
        id=cid,
        tenant_id=tenant,
        exchange="bybit",
        environment="mainnet",
        label=f"label {cid}",
        profile="trading",
        account_id=account,
        masked_key="ABCD…WXYZ",
        key_fingerprint="f" * 16,
        api_key_hash=key_hash or f"hash-{cid}",
        current_version=1,
        created_at=NOW,
        removed_at=None,
        **repo.initial_values(diagnosis(account_id=account), now=NOW, next_check_at=NOW + timedelta(hours=1)),
    )


async def populate(
    db: Database, vault: Vault, n: int, *, passphrase_every: int = 2, canaries: int = 3
) -> dict[str, ApiCredentials]:
    """n connections of tenant t1, each with one current version; returns what each holds.

    The first `canaries` hold canary secrets (enough to catch a leak on every path); the rest
    random ones, which keeps the log scan of later tests fast."""
    held: dict[str, ApiCredentials] = {}
    async with db.session() as s, s.begin():
        await repo.ensure_tenant(s, "t1", NOW)
        for i in range(n):
            cid = f"c{i:03d}"
            s.add(make_connection(cid, account=f"A{i}"))
            marked = i < canaries
            secret = canary.bybit_secret() if marked else _random_alnum(36)
            passphrase = (
                (canary.passphrase("okx") if marked else _random_alnum(20))
                if i % passphrase_every == 0
                else None
            )
            given = ApiCredentials(
                f"KEY{i:015d}", Secret(secret), Secret(passphrase) if passphrase is not None else None
            )
            held[cid] = given
        await s.flush()
        for cid, given in held.items():
            s.add(
                creds.seal(vault, given, tenant_id="t1", connection_id=cid, version=1, now=NOW, verified=True)
            )
    return held


async def run_rewrap(db: Database, vault: Vault, batch: int = 500) -> RewrapReport:
    def go(conn: SyncConnection) -> RewrapReport:
        target = CredentialRewrapTarget(conn)
        report = rewrap(vault, target, batch=batch)
        target.finish()
        return report

    return await db.run_sync(go)


async def open_all(db: Database, vault: Vault) -> dict[str, ApiCredentials]:
    async with db.session() as s:
        rows = (
            await s.execute(select(CredentialVersion).where(CredentialVersion.revoked_at.is_(None)))
        ).scalars()
        return {r.connection_id: creds.open_version(vault, r, tenant_id="t1") for r in rows}


def scan_bytes(data: bytes) -> list[str]:
    """Canary labels found in raw bytes (UTF-8 text inside a binary file)."""
    return canary.scan(data.decode("latin-1"))


def environ_without_keysentry() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
