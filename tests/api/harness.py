"""The API under test: simulators, a store, the app on a real uvicorn, and a client that scans for canaries.

`stack(...)` runs everything in-process on one event loop: a SimCluster with keys of every
exchange (secrets and passphrases are canaries, tests/canary.py), a store (SQLite file or a
PostgreSQL schema), a vault, one Transport sending from 127.0.0.2, a ConnectionService, and the
app served by uvicorn on 127.0.0.1 with a random port. `Stack.client` sends real HTTP with
aiohttp and scans every answer (body and headers) for every registered canary; `new_tenant()`
makes a tenant and a token through the admin API and registers the token as a canary after it
was shown (the one answer allowed to hold it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

import canary
from keysentry.api.app import create_app
from keysentry.api.config import ApiConfig
from keysentry.api.limits import RateLimiter
from keysentry.connections import ConnectionService
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.settings import Settings
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store.db import Database
from keysentry.vault import Vault, generate_master_key

EGRESS = "127.0.0.2"
REFUSED_URL = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
LOOPBACK = ["127.0.0.0/8"]
_ALNUM = string.ascii_letters + string.digits


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass(frozen=True)
class SimKey:
    """A key the simulators know; secret and passphrase are registered canaries."""

    exchange: str
    api_key: str
    secret: str
    account: str
    passphrase: str | None = None

    def body(self, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"api_key": self.api_key, "secret": self.secret}
        if self.passphrase is not None:
            out["passphrase"] = self.passphrase
        return {**out, **extra}

    def add(self, label: str = "bot", **extra: Any) -> dict[str, Any]:
        return self.body(exchange=self.exchange, label=label, **extra)

    def __repr__(self) -> str:
        return f"SimKey({self.exchange}, {self.api_key[:4]}…, account {self.account})"


def _key(exchange: str, account: str) -> SimKey:
    if exchange == "binance":
        return SimKey(exchange, _alnum(64), canary.binance_secret(), account)
    if exchange == "bybit":
        return SimKey(exchange, _alnum(18), canary.bybit_secret(), account)
    if exchange == "okx":
        return SimKey(exchange, str(uuid.uuid4()), canary.okx_secret(), account, canary.passphrase("okx"))
    return SimKey(
        exchange, secrets.token_hex(12), canary.kucoin_secret(), account, canary.passphrase("kucoin")
    )


_GOOD: Mapping[str, dict[str, Any]] = {
    "binance": {"permissions": ["reading", "spot_and_margin_trading"], "ip_whitelist": LOOPBACK},
    "okx": {"permissions": ["read_only", "trade"], "ip_whitelist": LOOPBACK},
    "bybit": {"permissions": ["Spot.SpotTrade"], "ip_whitelist": LOOPBACK},
    "kucoin": {"permissions": ["General", "Spot"], "ip_whitelist": LOOPBACK},
}

# name -> (exchange, account, how the key differs from a good one)
KEY_PLAN: Mapping[str, tuple[str, str, dict[str, Any]]] = {
    "binance": ("binance", "100000001", {}),
    "binance_deleted": ("binance", "100000002", {"deleted": True}),
    "binance_read_only": ("binance", "100000003", {"permissions": ["reading"]}),
    "okx": ("okx", "600000000000000001", {}),
    "bybit": ("bybit", "30000001", {}),
    "bybit_same_account": ("bybit", "30000001", {}),
    "bybit_other": ("bybit", "30000002", {}),
    "bybit_ip": ("bybit", "30000003", {"ip_whitelist": ["10.1.2.3"]}),
    "kucoin": ("kucoin", "170000001", {}),
}

# What each key shows when added by itself (the e2e test asserts these over HTTP too).
EXPECTED = {
    "binance": "connected",
    "binance_deleted": "invalid_key",
    "binance_read_only": "incorrect_permissions",
    "okx": "connected",
    "bybit": "connected",
    "bybit_other": "connected",
    "bybit_ip": "ip_not_allowed",
    "kucoin": "connected",
}

_KEYS: dict[str, SimKey] = {}


def keys() -> dict[str, SimKey]:
    """The keys of KEY_PLAN, made once per test run (each canary makes every later log scan slower)."""
    if not _KEYS:
        _KEYS.update({name: _key(ex, account) for name, (ex, account, _) in KEY_PLAN.items()})
    return _KEYS


def scenario(made: Mapping[str, SimKey]) -> dict[str, Any]:
    exchanges: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, (ex, account, changes) in KEY_PLAN.items():
        k = made[name]
        spec = {**_GOOD[ex], "created_at": "-5d", **changes, "api_key": k.api_key, "secret": k.secret}
        if k.passphrase is not None:
            spec["passphrase"] = k.passphrase
        accounts = exchanges.setdefault(ex, {}).setdefault("accounts", [])
        found = next((a for a in accounts if a["id"] == account), None)
        if found is None:
            found = {"id": account, "keys": []}
            accounts.append(found)
        found["keys"].append(spec)
    return {"seed": 11, "exchanges": exchanges}


# -- the client ------------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)

    def problem_type(self) -> str:
        assert self.headers.get("Content-Type", "").startswith("application/problem+json"), self.text[:300]
        kind: str = self.json["type"]
        return kind.removeprefix("urn:keysentry:problem:")


@dataclass
class Client:
    """Real HTTP to the app; every answer is scanned for canaries before the test sees it."""

    base: str
    session: aiohttp.ClientSession
    seen: list[str] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Any = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, self.base + path, json=json_body, data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            reply = Reply(response.status, dict(response.headers), text)
        canary.assert_no_leak(text, f"the body of {method} {path}")
        canary.assert_no_leak(json.dumps(reply.headers), f"the headers of {method} {path}")
        self.seen.append(f"{method} {path} {reply.status}")
        return reply


@dataclass
class Stack:
    app: FastAPI
    client: Client
    cluster: SimCluster
    service: ConnectionService
    db: Database
    admin: str
    keys: dict[str, SimKey]
    settings: Settings

    async def new_tenant(self, name: str = "a platform") -> tuple[str, str]:
        """A new tenant and a token of it: (tenant id, token)."""
        made = await self.client.call("POST", "/v1/tenants", token=self.admin, json_body={"name": name})
        assert made.status == 201, made.text
        tenant = made.json["id"]
        issued = await self.client.call(
            "POST", f"/v1/tenants/{tenant}/tokens", token=self.admin, json_body={"name": "tests"}
        )
        assert issued.status == 201, issued.text
        token: str = issued.json["token"]
        canary.register(token, f"api-token-of-{tenant}", token[3:])
        return tenant, token


ADMIN_TOKEN = secrets.token_urlsafe(32)
canary.register(ADMIN_TOKEN, "admin-token")


def settings_for(tmp: Path, database_url: str, **extra: Any) -> Settings:
    """Settings of a test app; explicit values win over whatever KEYSENTRY_* the environment holds."""
    values: dict[str, Any] = {
        "data_dir": tmp,
        "database_url": database_url,
        "admin_token": SecretStr(ADMIN_TOKEN),
        "egress_ips": EGRESS,
        "master_key": None,
        "profiles_file": None,
        "redis_url": None,
    }
    return Settings(**{**values, **extra})


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 and a random port until the block ends; its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def stack(
    tmp: Path,
    database_url: str,
    *,
    schema: str | None = None,
    config: ApiConfig | None = None,
    settings_extra: Mapping[str, Any] | None = None,
    limiter: RateLimiter | None = None,
) -> AsyncIterator[Stack]:
    made = keys()
    settings = settings_for(tmp, database_url, **dict(settings_extra or {}))
    vault = Vault.open(tmp / "vault", master_key=generate_master_key())
    db = await Database.open(database_url, schema=schema)
    try:
        async with (
            SimCluster(parse_scenario(scenario(made))) as cluster,
            Transport(egress_ips=(EGRESS,), timeouts=Timeouts(connect=2.0, total=5.0)) as transport,
        ):

            def options(exchange: str, environment: str, profile: str) -> CheckOptions:
                try:
                    url = cluster.url(exchange, environment)
                except KeyError:
                    url = REFUSED_URL  # an environment no simulator runs: refused at once, never the internet
                return CheckOptions(
                    profile=get_profile(profile), environment=environment, base_url=url, egress_ips=(EGRESS,)
                )

            service = ConnectionService(db, vault=vault, engine=DiagnosisEngine(transport), options=options)
            app = create_app(settings, service=service, config=config or ApiConfig(), limiter=limiter)
            async with serving(app) as base, aiohttp.ClientSession() as session:
                yield Stack(app, Client(base, session), cluster, service, db, ADMIN_TOKEN, made, settings)
    finally:
        await db.close()


@dataclass
class Threaded:
    """A stack served from a thread with its own event loop, for synchronous clients (schemathesis)."""

    base: str
    admin: str
    keys: dict[str, SimKey]
    app: FastAPI


@contextmanager
def threaded_stack(tmp: Path, database_url: str, **options: Any) -> Iterator[Threaded]:
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        found["stop"] = (asyncio.get_running_loop(), stop)
        try:
            async with stack(tmp, database_url, **options) as s:
                found["stack"] = s
                ready.set()
                await stop.wait()
        except BaseException as e:
            found["error"] = e
            ready.set()
            raise

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="api-under-test", daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in found:
        raise RuntimeError(f"the API did not start: {found.get('error')!r}")
    s: Stack = found["stack"]
    try:
        yield Threaded(s.client.base, s.admin, s.keys, s.app)
    finally:
        loop, stop = found["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
