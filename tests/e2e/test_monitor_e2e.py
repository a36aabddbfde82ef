"""Issue 7 acceptance, local mode: the monitor watches connections break on the simulators and tells a webhook.

Six connections on Bybit, OKX and Binance simulators are stored through the lifecycle; a tenant
webhook points at a real HTTP receiver. With the monitor running (re-check interval 2 s), the
admin endpoint changes each key the way an exchange account changes in real life: expire it,
set it to expire in two days, remove a permission, enable withdrawal, freeze the account (then
unfreeze it), start maintenance. Each change must reach the receiver as the right events with
a valid signature, within a few intervals; maintenance must show as temporary_issue over the
last known state and send nothing.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import func, select

import canary
from keysentry.connections import ConnectionService, NewKey
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain import Status
from keysentry.domain.secrets import Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.monitor.delivery import create_webhook
from keysentry.monitor.scheduler import Monitor
from keysentry.monitor.service import MonitorConfig, MonitorRuntime, next_check_function
from keysentry.monitor.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from keysentry.settings import Settings
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store.db import Database
from keysentry.store.monitoring import WebhookDelivery
from keysentry.vault import Vault, generate_master_key

pytestmark = pytest.mark.e2e

TENANT = "acme"
INTERVAL_S = 2.0
DETECT_TIMEOUT_S = 20.0  # generous on a loaded CI machine; detection takes 1-2 intervals
_ALNUM = string.ascii_letters + string.digits


def _alnum(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


@dataclass(frozen=True)
class Key:
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


def _keys() -> dict[str, Key]:
    return {
        "expire": Key("bybit", _alnum(18), canary.bybit_secret(), "41000001"),
        "expiring": Key("bybit", _alnum(18), canary.bybit_secret(), "41000002"),
        "permission": Key("bybit", _alnum(18), canary.bybit_secret(), "41000003"),
        "withdrawal": Key(
            "okx", str(uuid.uuid4()), canary.okx_secret(), "51000001", canary.passphrase("okx")
        ),
        "freeze": Key("okx", str(uuid.uuid4()), canary.okx_secret(), "51000002", canary.passphrase("okx")),
        "maintenance": Key("binance", _alnum(64), canary.binance_secret(), "61000001"),
    }


def _scenario(keys: dict[str, Key]) -> dict[str, Any]:
    whitelist = {"ip_whitelist": ["127.0.0.1"], "created_at": "-5d"}
    perms = {
        "bybit": ["Spot.SpotTrade"],
        "okx": ["read_only", "trade"],
        "binance": ["reading", "spot_and_margin_trading"],
    }
    exchanges: dict[str, Any] = {}
    for k in keys.values():
        accounts = exchanges.setdefault(k.exchange, {"accounts": []})["accounts"]
        accounts.append({"id": k.account, "keys": [k.spec(permissions=perms[k.exchange], **whitelist)]})
    return {"seed": 7, "exchanges": exchanges}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    calls: list[Received] = field(default_factory=list)

    def events(self, connection_id: str | None = None) -> list[dict[str, Any]]:
        return [
            c.event for c in self.calls if connection_id is None or c.event["connection_id"] == connection_id
        ]

    def types(self, connection_id: str) -> set[str]:
        return {e["type"] for e in self.events(connection_id)}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = web.Application()
    found = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        found.calls.append(Received(dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app.router.add_post("/hooks/keysentry", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hooks/keysentry"
    try:
        yield found
    finally:
        await runner.cleanup()


async def _eventually(condition: Callable[[], Any], what: str, within: float = DETECT_TIMEOUT_S) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not seen within {within:g} s: {what}")


async def test_the_monitor_sees_each_change_and_tells_the_webhook(tmp_path: Path, receiver: Receiver) -> None:
    keys = _keys()
    master = generate_master_key()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
        master_key=SecretStr(master),
        redis_url=None,
        egress_ips="",
    )
    config = MonitorConfig(
        interval_hours=INTERVAL_S / 3600,
        tick_s=0.1,
        batch_size=10,
        webhook_allow_private=True,
        webhook_base_s=0.2,
    )
    policy = config.policy()
    async with SimCluster(parse_scenario(_scenario(keys))) as cluster:

        def options(exchange: str, environment: str, profile: str) -> CheckOptions:
            return CheckOptions(
                profile=get_profile(profile),
                environment=environment,
                base_url=cluster.url(exchange, environment),
            )

        vault = Vault.open(settings.data_dir, master_key=master, create=True)
        db = await Database.open(str(settings.database_url))
        async with Transport(timeouts=Timeouts(connect=2.0, total=4.0)) as transport:
            service = ConnectionService(
                db,
                vault=vault,
                engine=DiagnosisEngine(transport),
                options=options,
                next_check=next_check_function(policy),
            )
            ids: dict[str, str] = {}
            for name, key in keys.items():
                outcome = await service.add(TENANT, key.exchange, key.new(), label=name)
                assert outcome.diagnosis.status is Status.CONNECTED, (name, outcome.diagnosis.summary)
                ids[name] = outcome.connection.id
        hook, secret = await create_webhook(
            db, vault, tenant_id=TENANT, url=receiver.url, event_types=None, actor="test", now=service.clock(),
            allow_private=True,
        )  # fmt: skip

        runtime = await MonitorRuntime.open(settings, config, options=options, policy=policy)
        stop = asyncio.Event()
        monitor = asyncio.create_task(Monitor(runtime).run(stop))
        try:
            async with aiohttp.ClientSession(
                cluster.admin_url, headers={"Authorization": f"Bearer {cluster.admin_token}"}
            ) as admin:

                async def change(method: str, path: str, body: dict[str, Any] | None = None) -> None:
                    async with admin.request(method, path, json=body) as r:
                        assert r.status == 200, await r.text()

                k = keys
                await change("POST", f"/admin/bybit/keys/{k['expire'].api_key}/expire")
                await change("POST", f"/admin/bybit/keys/{k['expiring'].api_key}/expire", {"at": "+2d"})
                await change("PATCH", f"/admin/bybit/keys/{k['permission'].api_key}", {"permissions": []})
                await change(
                    "PATCH",
                    f"/admin/okx/keys/{k['withdrawal'].api_key}",
                    {"permissions": ["read_only", "trade", "withdraw"]},
                )
                await change("POST", f"/admin/okx/accounts/{k['freeze'].account}/freeze")
                await change("POST", "/admin/binance/maintenance", {"active": True})

                expected = {
                    "expire": ("expired", {"connection.status_changed", "connection.broken"}),
                    "permission": (
                        "incorrect_permissions",
                        {"connection.status_changed", "connection.broken"},
                    ),
                    "withdrawal": ("withdrawal_enabled", {"connection.status_changed", "connection.broken"}),
                    "freeze": ("account_restricted", {"connection.status_changed", "connection.broken"}),
                    "expiring": ("expires_soon", {"connection.status_changed", "connection.expiring"}),
                }

                async def all_seen() -> bool:
                    return all(types <= receiver.types(ids[name]) for name, (_, types) in expected.items())

                await _eventually(all_seen, "every change as events at the webhook")

                async def maintenance_seen() -> bool:
                    record = await service.get(TENANT, ids["maintenance"])
                    return record.status is Status.TEMPORARY_ISSUE

                await _eventually(maintenance_seen, "maintenance as temporary_issue")

                await change("POST", f"/admin/okx/accounts/{k['freeze'].account}/unfreeze")

                async def recovered() -> bool:
                    return "connection.recovered" in receiver.types(ids["freeze"])

                await _eventually(recovered, "the unfrozen account as connection.recovered")
                # a few more intervals under maintenance: still nothing about that key
                await asyncio.sleep(2 * INTERVAL_S)
        finally:
            stop.set()
            await asyncio.wait_for(monitor, timeout=10)
            await runtime.close()

        # What each event said, and that every request was signed with the tenant's secret.
        for name, (status, _) in expected.items():
            changed = [e for e in receiver.events(ids[name]) if e["type"] == "connection.status_changed"]
            assert changed[0]["data"]["status_before"] == "connected", name
            assert changed[0]["data"]["status_after"] == status, name
            assert changed[0]["tenant_id"] == TENANT
        expiring = [e for e in receiver.events(ids["expiring"]) if e["type"] == "connection.expiring"]
        assert [e["data"]["threshold_days"] for e in expiring] == [
            3
        ]  # 14 and 7 crossed at once: the tightest
        recovered_events = [e for e in receiver.events(ids["freeze"]) if e["type"] == "connection.recovered"]
        assert recovered_events[0]["data"]["status_after"] == "connected"
        assert receiver.events(ids["maintenance"]) == []  # a temporary issue is not a change of the key
        for call in receiver.calls:
            verify(secret, call.headers[SIGNATURE_HEADER], call.body)
            assert call.headers[EVENT_ID_HEADER] == call.event["id"]
        assert len({c.event["id"] for c in receiver.calls}) == len(receiver.calls)  # delivered once each

        maintenance = await service.get(TENANT, ids["maintenance"])
        assert maintenance.status is Status.TEMPORARY_ISSUE
        assert maintenance.last_known_status is Status.CONNECTED  # the key is not marked broken
        assert maintenance.findings == ()  # its last definitive findings: none

        # the delivery log holds one delivered attempt per event, none left pending
        async with db.session() as s:
            rows = (
                await s.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status))
            ).all()
        assert dict(rows) == {"delivered": len(receiver.calls)}
        assert hook.tenant_id == TENANT
        await db.close()
        for call in receiver.calls:
            assert canary.scan(call.body.decode()) == []
