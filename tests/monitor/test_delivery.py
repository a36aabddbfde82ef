"""Webhook registrations and the delivery queue on the store, against a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

import canary
from keysentry.domain.secrets import Secret
from keysentry.monitor.delivery import (
    StoreDeliveryLog,
    WebhookNotFound,
    add_events,
    create_webhook,
    delete_webhook,
    deliver_claimed,
    get_webhook,
    list_deliveries,
    list_webhooks,
    send_test,
)
from keysentry.monitor.events import Event, EventType
from keysentry.monitor.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    RetryPolicy,
    WebhookSender,
    WebhookURLError,
    verify,
)
from keysentry.store import connections as repo
from keysentry.store import monitoring as store
from keysentry.store.db import Database
from keysentry.store.models import AuditEntry
from keysentry.store.monitoring import Webhook, WebhookDelivery
from keysentry.vault import Vault, generate_master_key

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)
_TOKEN_TAIL = secrets.token_hex(10)
URL_TOKEN = canary.register(f"CANARY{_TOKEN_TAIL}", "webhook-url-token", _TOKEN_TAIL).value


@dataclass
class Receiver:
    base: str
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"{self.base}/hooks/{URL_TOKEN}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver("")

    async def hook(request: web.Request) -> web.Response:
        found.calls.append((dict(request.headers), await request.read()))
        return web.Response(status=found.answers.pop(0) if found.answers else 200)

    app = web.Application()
    app.router.add_post("/hooks/{token}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield found
    finally:
        await runner.cleanup()


@dataclass
class Kit:
    db: Database
    vault: Vault
    sender: WebhookSender
    now: datetime = NOW

    def clock(self) -> float:
        return self.now.timestamp()

    async def register(
        self, url: str, tenant: str = "t1", types: list[str] | None = None
    ) -> tuple[str, Secret]:
        view, secret = await create_webhook(
            self.db, self.vault, tenant_id=tenant, url=url, event_types=types, actor="api:tok_1", now=self.now,
            allow_private=True,
        )  # fmt: skip
        canary.register(secret.reveal(), "webhook-secret")  # a leak of it anywhere fails the test
        return view.id, secret

    async def emit(self, *events: Event) -> int:
        async with self.db.session() as s, s.begin():
            return await add_events(s, list(events), now=self.now)

    async def deliver_due(self) -> int:
        async with self.db.session() as s, s.begin():
            claim = await store.claim_deliveries(s, now=self.now, limit=100, lease=LEASE)
        if claim is None:
            return 0
        return await deliver_claimed(self.db, self.vault, self.sender, claim, now=self.now)

    async def attempts(self) -> list[tuple[int, str, int | None]]:
        async with self.db.session() as s:
            rows = await s.execute(
                select(WebhookDelivery.attempt, WebhookDelivery.status, WebhookDelivery.http_status).order_by(
                    WebhookDelivery.id
                )
            )
            return [tuple(r) for r in rows.all()]  # type: ignore[misc]


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}")
    vault = Vault.open(tmp_path / "vault", master_key=generate_master_key(), create=True)
    async with db.session() as s, s.begin():
        for tenant in ("t1", "t2"):
            await repo.ensure_tenant(s, tenant, NOW)
    found = Kit(db, vault, None)  # type: ignore[arg-type]
    found.sender = WebhookSender(
        StoreDeliveryLog(db),
        policy=RetryPolicy(max_attempts=3, base_s=60),
        allow_private=True,
        clock=found.clock,
    )
    try:
        yield found
    finally:
        await found.sender.close()
        await db.close()


def broken(tenant: str = "t1") -> Event:
    return Event(EventType.BROKEN, tenant, "con_1", NOW, {"exchange": "okx", "status_after": "expired"})


async def test_the_secret_is_shown_once_and_stored_sealed(kit: Kit, receiver: Receiver) -> None:
    webhook_id, secret = await kit.register(receiver.url)
    assert secret.reveal().startswith("whsec_") and secret.reveal() not in repr(secret)
    async with kit.db.session() as s:
        row = await s.get(Webhook, webhook_id)
    assert row is not None
    assert secret.reveal().encode() not in row.secret_ciphertext
    assert URL_TOKEN.encode() not in row.url_ciphertext
    listed = await list_webhooks(kit.db, kit.vault, "t1")
    assert [w.id for w in listed] == [webhook_id] and listed[0].url == receiver.url
    assert not hasattr(listed[0], "secret")
    assert URL_TOKEN not in repr(listed[0])  # URLs often carry a token: reprs and logs never show them
    assert await list_webhooks(kit.db, kit.vault, "t2") == []


async def test_urls_and_event_types_are_checked(kit: Kit) -> None:
    with pytest.raises(WebhookURLError, match="public address"):
        await create_webhook(
            kit.db, kit.vault, tenant_id="t1", url="http://127.0.0.1/x", event_types=None, actor="a", now=NOW
        )
    with pytest.raises(WebhookURLError):
        await create_webhook(
            kit.db, kit.vault, tenant_id="t1", url="ftp://example.com/", event_types=None, actor="a", now=NOW
        )
    with pytest.raises(ValueError, match="unknown event type"):
        await kit.register("https://example.com/h", types=["connection.exploded"])
    with pytest.raises(ValueError, match="at least one"):
        await kit.register("https://example.com/h", types=[])
    with pytest.raises(ValueError, match=r"webhook\.test"):  # sent on request only: not a subscription
        await kit.register("https://example.com/h", types=["webhook.test"])
    assert await list_webhooks(kit.db, kit.vault, "t1") == []


async def test_another_tenants_webhook_does_not_exist_for_a_tenant(kit: Kit, receiver: Receiver) -> None:
    webhook_id, _ = await kit.register(receiver.url, tenant="t1")
    with pytest.raises(WebhookNotFound):
        await get_webhook(kit.db, kit.vault, "t2", webhook_id)
    with pytest.raises(WebhookNotFound):
        await delete_webhook(kit.db, "t2", webhook_id, actor="a", now=NOW)
    with pytest.raises(WebhookNotFound):
        await list_deliveries(kit.db, "t2", webhook_id)
    with pytest.raises(WebhookNotFound):
        await send_test(
            kit.db, kit.vault, kit.sender, tenant_id="t2", webhook_id=webhook_id, actor="a", now=NOW
        )
    assert (await get_webhook(kit.db, kit.vault, "t1", webhook_id)).id == webhook_id
    assert receiver.calls == []


async def test_an_event_reaches_the_tenants_matching_webhooks_signed(kit: Kit, receiver: Receiver) -> None:
    everything, secret = await kit.register(receiver.url)
    await kit.register(receiver.url, types=["connection.expiring"])  # not subscribed to broken
    await kit.register(receiver.url, tenant="t2")  # another tenant's
    event = broken()
    assert await kit.emit(event) == 1
    assert await kit.deliver_due() == 1
    assert len(receiver.calls) == 1
    headers, body = receiver.calls[0]
    verify(secret, headers[SIGNATURE_HEADER], body, now=NOW.timestamp())
    assert headers[EVENT_ID_HEADER] == event.id
    assert await kit.attempts() == [(1, "delivered", 200)]
    log = await list_deliveries(kit.db, "t1", everything)
    assert [(d.event_type, d.status) for d in log] == [("connection.broken", "delivered")]
    assert await kit.deliver_due() == 0  # delivered once


async def test_a_failed_attempt_is_retried_later_with_the_same_event_id(kit: Kit, receiver: Receiver) -> None:
    await kit.register(receiver.url)
    receiver.answers = [503]
    await kit.emit(broken())
    await kit.deliver_due()
    assert await kit.attempts() == [(1, "retrying", 503), (2, "pending", None)]
    assert await kit.deliver_due() == 0  # the retry waits its backoff (30 to 60 s here)
    kit.now += timedelta(seconds=61)
    assert await kit.deliver_due() == 1
    assert await kit.attempts() == [(1, "retrying", 503), (2, "delivered", 200)]
    ids = {h[EVENT_ID_HEADER] for h, _ in receiver.calls}
    assert len(receiver.calls) == 2 and len(ids) == 1


async def test_after_the_last_attempt_it_gives_up(kit: Kit, receiver: Receiver) -> None:
    await kit.register(receiver.url)
    receiver.answers = [500, 500, 500, 500]
    await kit.emit(broken())
    for _ in range(3):
        await kit.deliver_due()
        kit.now += timedelta(hours=1)
    assert await kit.attempts() == [(1, "retrying", 500), (2, "retrying", 500), (3, "failed", 500)]
    assert await kit.deliver_due() == 0


async def test_a_claimed_attempt_is_not_sent_twice_while_its_lease_holds(
    kit: Kit, receiver: Receiver
) -> None:
    await kit.register(receiver.url)
    await kit.emit(broken())
    async with kit.db.session() as s, s.begin():
        first = await store.claim_deliveries(s, now=NOW, limit=10, lease=LEASE)
        second = await store.claim_deliveries(s, now=NOW, limit=10, lease=LEASE)
    assert first is not None and second is None
    # the first claimer vanished: after the lease, the attempt is taken again and sent once
    kit.now += LEASE + timedelta(seconds=1)
    assert await kit.deliver_due() == 1
    assert await deliver_claimed(kit.db, kit.vault, kit.sender, first, now=kit.now) == 0  # stale claim
    assert len(receiver.calls) == 1


async def test_deleting_a_webhook_drops_what_is_queued_for_it(kit: Kit, receiver: Receiver) -> None:
    webhook_id, _ = await kit.register(receiver.url)
    await kit.emit(broken())
    await delete_webhook(kit.db, "t1", webhook_id, actor="api:tok_1", now=NOW)
    assert await kit.deliver_due() == 0
    assert await kit.attempts() == []
    assert await list_webhooks(kit.db, kit.vault, "t1") == []


async def test_a_test_event_is_sent_at_once_and_logged(kit: Kit, receiver: Receiver) -> None:
    webhook_id, secret = await kit.register(receiver.url, types=["connection.broken"])
    attempt = await send_test(
        kit.db, kit.vault, kit.sender, tenant_id="t1", webhook_id=webhook_id, actor="a", now=NOW
    )
    assert (attempt.outcome, attempt.http_status) == ("delivered", 200)
    headers, body = receiver.calls[0]
    verify(secret, headers[SIGNATURE_HEADER], body, now=NOW.timestamp())
    assert b'"type":"webhook.test"' in body
    assert await kit.deliver_due() == 0  # not sent a second time by the queue
    assert [d.status for d in await list_deliveries(kit.db, "t1", webhook_id)] == ["delivered"]


async def test_registrations_and_signing_keys_are_audited_without_secrets(
    kit: Kit, receiver: Receiver
) -> None:
    webhook_id, secret = await kit.register(receiver.url)
    await kit.emit(broken())
    await kit.deliver_due()
    await delete_webhook(kit.db, "t1", webhook_id, actor="api:tok_1", now=NOW)
    async with kit.db.session() as s:
        entries = (await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all()
    assert [(e.action, e.target) for e in entries] == [
        ("webhook_create", webhook_id),
        ("webhook_decrypt", webhook_id),
        ("webhook_delete", webhook_id),
    ]
    text = repr([(e.actor, e.details) for e in entries])
    assert secret.reveal() not in text and URL_TOKEN not in text


# -- the REST routes (/v1/webhooks) -------------------------------------------------------------------


@dataclass
class Api:
    base: str
    http: Any
    admin: str

    async def call(
        self, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            return r.status, dict(r.headers), json.loads(text) if text else None

    async def tenant(self) -> str:
        status, _, made = await self.call("POST", "/v1/tenants", self.admin, {"name": "a platform"})
        assert status == 201, made
        status, _, issued = await self.call(
            "POST", f"/v1/tenants/{made['id']}/tokens", self.admin, {"name": "t"}
        )
        assert status == 201, issued
        token: str = issued["token"]
        canary.register(token, "api-token", token[3:])
        return token


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Api]:
    import aiohttp
    from fastapi.routing import iter_route_contexts

    from api.harness import ADMIN_TOKEN, serving, settings_for
    from keysentry.api import create_app
    from keysentry.connections import ConnectionService

    monkeypatch.setenv("KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE", "1")  # the receiver is on loopback
    url = f"sqlite+aiosqlite:///{tmp_path / 'api.db'}"
    db = await Database.open(url)
    vault = Vault.open(tmp_path / "vault", master_key=generate_master_key(), create=True)
    app = create_app(settings_for(tmp_path, url), service=ConnectionService(db, vault=vault, engine=None))
    # the real API serves them (included routers are flattened by iter_route_contexts)
    assert "/v1/webhooks" in {c.path for c in iter_route_contexts(app.routes)}
    try:
        async with serving(app) as base, aiohttp.ClientSession() as http:
            yield Api(base, http, ADMIN_TOKEN)
    finally:
        await db.close()


async def test_a_tenant_registers_lists_tests_and_deletes_a_webhook(api: Api, receiver: Receiver) -> None:
    token = await api.tenant()
    status, headers, made = await api.call(
        "POST", "/v1/webhooks", token, {"url": receiver.url, "event_types": ["connection.broken"]}
    )
    assert status == 201, made
    assert headers["Cache-Control"] == "no-store" and headers["Location"] == f"/v1/webhooks/{made['id']}"
    secret = made["secret"]
    canary.register(secret, "webhook-secret")
    assert made["event_types"] == ["connection.broken"] and made["url"] == receiver.url

    status, _, listed = await api.call("GET", "/v1/webhooks", token)
    assert status == 200 and [w["id"] for w in listed["items"]] == [made["id"]]
    assert "secret" not in listed["items"][0]

    status, _, tested = await api.call("POST", f"/v1/webhooks/{made['id']}/test", token)
    assert status == 200 and tested["delivered"] is True and tested["http_status"] == 200
    headers_sent, body = receiver.calls[-1]
    verify(Secret(secret), headers_sent[SIGNATURE_HEADER], body)
    assert headers_sent[EVENT_ID_HEADER] == tested["event_id"]

    status, _, log = await api.call("GET", f"/v1/webhooks/{made['id']}/deliveries", token)
    assert status == 200 and [(d["event_type"], d["status"]) for d in log["items"]] == [
        ("webhook.test", "delivered")
    ]

    assert (await api.call("DELETE", f"/v1/webhooks/{made['id']}", token))[0] == 204
    assert (await api.call("GET", f"/v1/webhooks/{made['id']}", token))[0] == 404
    assert (await api.call("GET", "/v1/webhooks", token))[2] == {"items": []}


async def test_another_tenants_webhook_answers_404_everywhere(api: Api, receiver: Receiver) -> None:
    owner, other = await api.tenant(), await api.tenant()
    _, _, made = await api.call("POST", "/v1/webhooks", owner, {"url": receiver.url})
    canary.register(made["secret"], "webhook-secret")
    path = f"/v1/webhooks/{made['id']}"
    missing = f"/v1/webhooks/whk_{'0' * 16}"
    for method, suffix in [("GET", ""), ("DELETE", ""), ("POST", "/test"), ("GET", "/deliveries")]:
        theirs = await api.call(method, path + suffix, other)
        nobodys = await api.call(method, missing + suffix, other)
        assert theirs[0] == nobodys[0] == 404
        assert theirs[2]["detail"] == nobodys[2]["detail"]  # nothing tells "another tenant's" apart
    assert (await api.call("GET", "/v1/webhooks", other))[2] == {"items": []}
    assert receiver.calls == []
    assert (await api.call("GET", path, owner))[0] == 200


async def test_bad_registrations_are_refused_with_the_field_named(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await api.tenant()
    status, _, problem = await api.call(
        "POST", "/v1/webhooks", token, {"url": "https://x.example/h", "event_types": ["nope"]}
    )
    assert status == 422 and problem["errors"][0]["field"] == "event_types"
    status, _, problem = await api.call("POST", "/v1/webhooks", token, {"url": "ftp://x.example/h"})
    assert status == 422 and problem["errors"][0]["field"] == "url"
    monkeypatch.delenv("KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE")
    status, _, problem = await api.call("POST", "/v1/webhooks", token, {"url": "http://10.0.0.8/hook"})
    assert status == 422 and "public address" in problem["errors"][0]["problem"]
    status, _, problem = await api.call(
        "POST", "/v1/webhooks", token, {"url": "https://x.example/h", "secret": "mine"}
    )
    assert status == 422  # unknown fields are refused, not ignored
    assert (await api.call("GET", "/v1/webhooks", token))[2] == {"items": []}
    assert (await api.call("GET", "/v1/webhooks", api.admin))[0] == 403  # the admin acts for no tenant
