"""Acceptance: tenant B never reads, refreshes, updates, deletes, or learns of tenant A's connections
and webhooks (nor test-fires A's webhook or reads its delivery log).

Every route of the app is looked up in CASES by "METHOD path": a route without a case fails the
test, so a new route cannot ship without saying what another tenant sees on it. Runs on SQLite
and on the real PostgreSQL.

The cases compare what B gets for A's connection with what B gets for an id that does not exist:
the same status, the same body (but for the path in `instance`) and the same headers; and A's
connection is unchanged afterwards (same key version, same update time, one check in its history),
and so is A's webhook (same registration, same delivery log, A's receiver called by A alone).
A's webhook secret is a canary: no answer to anyone, and no log line, may hold it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from fastapi.routing import APIRoute, iter_route_contexts

import canary
from api.harness import Reply, Stack, stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Routes outside /v1 that the API itself serves; they must hold nothing of any tenant.
INFRA = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
_VOLATILE_HEADERS = {"date", "content-length"}


@dataclass
class Receiver:
    """Webhook endpoints on 127.0.0.1: /a/... is A's, /b is B's; every call is counted by path."""

    base: str = ""
    calls: list[str] = field(default_factory=list)


@dataclass
class World:
    stack: Stack
    a: str  # tenant A's token
    b: str  # tenant B's token
    tenant_a: str
    tenant_b: str
    conn_a: str  # A's connection
    conn_b: str  # B's connection
    missing: str  # an id no one has
    a_before: dict[str, Any]
    receiver: Receiver
    hook_a: str  # A's webhook
    hook_b: str  # B's webhook
    hook_missing: str  # a webhook id no one has
    hook_a_url: str  # A's endpoint URL (its path holds a token of A's)
    hook_a_before: dict[str, Any]
    hook_a_deliveries: list[dict[str, Any]]


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    found = Receiver()

    async def hook(request: web.Request) -> web.Response:
        found.calls.append(request.path)
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{path:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        yield found
    finally:
        await runner.cleanup()


async def _register(s: Stack, token: str, url: str, description: str) -> dict[str, Any]:
    made = await s.client.call(
        "POST", "/v1/webhooks", token=token, json_body={"url": url, "description": description}
    )
    assert made.status == 201, made.text
    body: dict[str, Any] = made.json
    canary.register(body["secret"], f"webhook-secret-of-{body['id']}")  # shown once: never again
    return body


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgresql"])
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    tmp: Path = tmp_path_factory.mktemp("xtenant")
    url = (
        f"sqlite+aiosqlite:///{tmp / 'keysentry.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("api_pg_database")
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE", "1")  # the receivers are on loopback
        async with stack(tmp, url) as s, receiving() as receiver:
            tenant_a, a = await s.new_tenant("A")
            tenant_b, b = await s.new_tenant("B")
            added = await s.client.call(
                "POST", "/v1/connections", token=a, json_body=s.keys["bybit"].add("A's bot")
            )
            assert added.status == 201, added.text
            mine = await s.client.call(
                "POST", "/v1/connections", token=b, json_body=s.keys["okx"].add("B's bot")
            )
            assert mine.status == 201, mine.text
            conn_a = added.json["connection"]["id"]
            before = (await s.client.call("GET", f"/v1/connections/{conn_a}", token=a)).json
            hook_a_url = f"{receiver.base}/a/{secrets.token_hex(8)}"
            hook_a = (await _register(s, a, hook_a_url, f"A's receiver {secrets.token_hex(4)}"))["id"]
            hook_b = (await _register(s, b, f"{receiver.base}/b", "B's receiver"))["id"]
            # A's log has an entry to protect: A's own test event
            fired = await s.client.call("POST", f"/v1/webhooks/{hook_a}/test", token=a)
            assert fired.status == 200 and fired.json["delivered"] is True, fired.text
            hook_before = (await s.client.call("GET", f"/v1/webhooks/{hook_a}", token=a)).json
            log = (await s.client.call("GET", f"/v1/webhooks/{hook_a}/deliveries", token=a)).json["items"]
            assert len(log) == 1
            yield World(
                s,
                a,
                b,
                tenant_a,
                tenant_b,
                conn_a,
                mine.json["connection"]["id"],
                f"con_{secrets.token_hex(8)}",
                before,
                receiver,
                hook_a,
                hook_b,
                f"whk_{secrets.token_hex(8)}",
                hook_a_url,
                hook_before,
                log,
            )


def _comparable(reply: Reply, *ids: str) -> tuple[int, str, dict[str, str]]:
    text = reply.text
    for cid in ids:
        text = text.replace(cid, "<id>")
    headers = {k.lower(): v for k, v in reply.headers.items() if k.lower() not in _VOLATILE_HEADERS}
    return reply.status, text, headers


async def _a_is_untouched(w: World) -> None:
    now = await w.stack.client.call("GET", f"/v1/connections/{w.conn_a}", token=w.a)
    assert now.status == 200, now.text
    for name in ("credential_version", "updated_at", "last_checked_at", "masked_key", "status", "label"):
        assert now.json[name] == w.a_before[name], name
    checks = await w.stack.client.call("GET", f"/v1/connections/{w.conn_a}/checks", token=w.a)
    assert [c["trigger"] for c in checks.json["items"]] == ["add"]
    hook = await w.stack.client.call("GET", f"/v1/webhooks/{w.hook_a}", token=w.a)
    assert hook.status == 200, hook.text
    assert hook.json == w.hook_a_before
    log = await w.stack.client.call("GET", f"/v1/webhooks/{w.hook_a}/deliveries", token=w.a)
    assert log.json["items"] == w.hook_a_deliveries
    assert [c for c in w.receiver.calls if c.startswith("/a/")] == [
        w.hook_a_url.removeprefix(w.receiver.base)
    ]


def _leaks_nothing_of_a(w: World, reply: Reply, *, b_has_the_key: bool = False, sent: str = "") -> None:
    """Nothing of A in the answer, but for the path B sent itself (`instance` echoes it)."""
    text = reply.text.replace(sent, "") if sent else reply.text
    of_a = [
        w.conn_a,
        w.tenant_a,
        w.a_before["label"],
        w.hook_a,
        w.hook_a_url.rsplit("/", 1)[-1],  # the token in A's endpoint URL
        w.hook_a_before["description"],
    ]
    # A's webhook secret is a registered canary: the client fails on it in any answer
    if not b_has_the_key:  # a fingerprint is the key's, whoever connects it: B may see its own
        of_a += [w.stack.keys["bybit"].api_key, w.a_before["key_fingerprint"], w.a_before["masked_key"]]
    for item in of_a:
        assert item not in text, f"{reply.status}: B saw something of A"


Case = Callable[[World, str, str], Awaitable[None]]


def _same_as_missing(body: Callable[[World], Any] | None = None) -> Case:
    """B on A's connection answers exactly what B on a missing id answers: 404, same body and headers."""

    async def case(w: World, method: str, path: str) -> None:
        payload = body(w) if body is not None else None
        on_a = await w.stack.client.call(
            method, path.format(connection_id=w.conn_a), token=w.b, json_body=payload
        )
        on_none = await w.stack.client.call(
            method, path.format(connection_id=w.missing), token=w.b, json_body=payload
        )
        assert on_a.status == 404, on_a.text
        assert on_a.problem_type() == "not-found"
        assert _comparable(on_a, w.conn_a) == _comparable(on_none, w.missing)
        _leaks_nothing_of_a(w, on_a, sent=path.format(connection_id=w.conn_a))
        # B's own connection answers on the same route: the 404 is about ownership, not the route
        mine = w.conn_b
        if method == "DELETE":  # delete one made for the purpose, and keep conn_b for the other routes
            made = await w.stack.client.call(
                "POST", "/v1/connections", token=w.b, json_body=w.stack.keys["bybit_other"].add("to delete")
            )
            mine = made.json["connection"]["id"]
        own = await w.stack.client.call(method, path.format(connection_id=mine), token=w.b, json_body=payload)
        assert own.status < 400 or own.problem_type() != "not-found", own.text
        await _a_is_untouched(w)

    return case


async def _hook_same_as_missing(w: World, method: str, path: str) -> None:
    """B on A's webhook answers exactly what B on a missing webhook id answers: 404, same body and
    headers; nothing is sent to A's endpoint, and A's registration and log are unchanged."""
    on_a = await w.stack.client.call(method, path.format(webhook_id=w.hook_a), token=w.b)
    on_none = await w.stack.client.call(method, path.format(webhook_id=w.hook_missing), token=w.b)
    assert on_a.status == 404, on_a.text
    assert on_a.problem_type() == "not-found"
    assert _comparable(on_a, w.hook_a) == _comparable(on_none, w.hook_missing)
    _leaks_nothing_of_a(w, on_a, sent=path.format(webhook_id=w.hook_a))
    # B's own webhook answers on the same route: the 404 is about ownership, not the route
    mine = w.hook_b
    if method == "DELETE":  # delete one made for the purpose, and keep hook_b for the other routes
        mine = (await _register(w.stack, w.b, f"{w.receiver.base}/b/gone", "to delete"))["id"]
    own = await w.stack.client.call(method, path.format(webhook_id=mine), token=w.b)
    assert own.status < 400, own.text
    if method == "POST":  # the test event reached B's own endpoint
        assert own.json["delivered"] is True, own.text
    await _a_is_untouched(w)


async def _hook_list(w: World, method: str, path: str) -> None:
    page = await w.stack.client.call(method, path, token=w.b)
    assert page.status == 200, page.text
    seen = [h["id"] for h in page.json["items"]]
    assert w.hook_b in seen and w.hook_a not in seen
    assert all("secret" not in h for h in page.json["items"])
    _leaks_nothing_of_a(w, page)
    await _a_is_untouched(w)


async def _hook_add(w: World, method: str, path: str) -> None:
    # B registers A's very URL: it is B's own webhook, with its own id and secret; nothing names A's
    made = await w.stack.client.call(
        method, path, token=w.b, json_body={"url": w.hook_a_url, "description": "B's copy"}
    )
    assert made.status == 201, made.text
    canary.register(made.json["secret"], "webhook-secret-of-b")
    assert made.json["id"] != w.hook_a
    _leaks_nothing_of_a(w, made, sent=w.hook_a_url)
    removed = await w.stack.client.call("DELETE", f"/v1/webhooks/{made.json['id']}", token=w.b)
    assert removed.status == 204
    await _a_is_untouched(w)


def _new_key_of_a(w: World) -> dict[str, Any]:
    return w.stack.keys["bybit_same_account"].body()


async def _list(w: World, method: str, path: str) -> None:
    for params in ({}, {"exchange": "bybit"}, {"status": "connected"}, {"limit": "1"}):
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = await w.stack.client.call("GET", path, token=w.b, params=query)
            assert page.status == 200, page.text
            seen += [c["id"] for c in page.json["items"]]
            _leaks_nothing_of_a(w, page)
            cursor = page.json["next_cursor"]
            if cursor is None:
                break
        assert w.conn_a not in seen
        if "exchange" not in params:
            assert w.conn_b in seen


async def _add(w: World, method: str, path: str) -> None:
    # B connects the very key A connected: it is B's own connection, and nothing names A's
    again = await w.stack.client.call(
        method, path, token=w.b, json_body=w.stack.keys["bybit"].add("B's copy")
    )
    assert again.status == 201, again.text
    assert again.json["connection"]["id"] != w.conn_a
    _leaks_nothing_of_a(w, again, b_has_the_key=True)
    removed = await w.stack.client.call(
        "DELETE", f"/v1/connections/{again.json['connection']['id']}", token=w.b
    )
    assert removed.status == 204
    await _a_is_untouched(w)


async def _diagnose(w: World, method: str, path: str) -> None:
    body = w.stack.keys["bybit"].body(exchange="bybit")
    checked = await w.stack.client.call(method, path, token=w.b, json_body=body)
    assert checked.status == 200, checked.text
    assert checked.json["status"] == "connected"  # not already_connected: A's connections do not exist for B
    _leaks_nothing_of_a(w, checked, b_has_the_key=True)
    await _a_is_untouched(w)


async def _same_for_everyone(w: World, method: str, path: str) -> None:
    for_b = await w.stack.client.call(method, path, token=w.b)
    for_a = await w.stack.client.call(method, path, token=w.a)
    assert for_b.status == 200
    assert for_b.json == for_a.json
    _leaks_nothing_of_a(w, for_b)


async def _admin_only(w: World, method: str, path: str) -> None:
    filled = path.format(tenant_id=w.tenant_a, token_id="tok_0123456789abcdef")
    body = {"name": "from B"} if method == "POST" else None
    refused = await w.stack.client.call(method, filled, token=w.b, json_body=body)
    assert refused.status == 403, refused.text
    assert refused.problem_type() == "forbidden"
    _leaks_nothing_of_a(w, refused, sent=filled)
    tokens = await w.stack.client.call("GET", f"/v1/tenants/{w.tenant_a}/tokens", token=w.stack.admin)
    assert all(t["revoked_at"] is None for t in tokens.json["items"])
    assert (
        await w.stack.client.call("GET", "/v1/exchanges", token=w.a)
    ).status == 200  # A's token still works


async def _infra(w: World, method: str, path: str) -> None:
    reply = await w.stack.client.call(method, path, token=w.b)
    assert reply.status in {200, 503}, reply.text
    _leaks_nothing_of_a(w, reply)


CASES: Mapping[str, Case] = {
    "GET /v1/connections": _list,
    "POST /v1/connections": _add,
    "GET /v1/connections/{connection_id}": _same_as_missing(),
    "DELETE /v1/connections/{connection_id}": _same_as_missing(),
    "PUT /v1/connections/{connection_id}/credentials": _same_as_missing(_new_key_of_a),
    "POST /v1/connections/{connection_id}/refresh": _same_as_missing(),
    "GET /v1/connections/{connection_id}/checks": _same_as_missing(),
    "POST /v1/diagnose": _diagnose,
    "GET /v1/webhooks": _hook_list,
    "POST /v1/webhooks": _hook_add,
    "GET /v1/webhooks/{webhook_id}": _hook_same_as_missing,
    "DELETE /v1/webhooks/{webhook_id}": _hook_same_as_missing,
    "POST /v1/webhooks/{webhook_id}/test": _hook_same_as_missing,
    "GET /v1/webhooks/{webhook_id}/deliveries": _hook_same_as_missing,
    "GET /v1/exchanges": _same_for_everyone,
    "GET /v1/statuses": _same_for_everyone,
    "POST /v1/tenants": _admin_only,
    "GET /v1/tenants": _admin_only,
    "GET /v1/tenants/{tenant_id}": _admin_only,
    "POST /v1/tenants/{tenant_id}/tokens": _admin_only,
    "GET /v1/tenants/{tenant_id}/tokens": _admin_only,
    "DELETE /v1/tenants/{tenant_id}/tokens/{token_id}": _admin_only,
}


def _routes(w: World) -> list[tuple[str, str]]:
    out = []
    for route in iter_route_contexts(w.stack.app.routes):  # included routers are flattened here
        path: str = route.path or ""
        if not path.startswith("/v1") and path not in INFRA:
            continue  # the web page's routes (keysentry.web) are tested there, and live outside /v1
        methods = getattr(route, "methods", None) or {"GET"}
        out += [(m, path) for m in sorted(methods - {"HEAD", "OPTIONS"})]
    return out


async def test_every_route_keeps_tenants_apart(world: World) -> None:
    missing = []
    for method, path in _routes(world):
        if path in INFRA:
            await _infra(world, method, path)
            continue
        case = CASES.get(f"{method} {path}")
        if case is None:
            missing.append(f"{method} {path}")
            continue
        await case(world, method, path)
    assert not missing, f"routes without a cross-tenant case (add them to CASES): {missing}"
    # The table has no stale entries either: every case names a route that exists.
    assert set(CASES) <= {f"{m} {p}" for m, p in _routes(world)}


async def test_no_route_outside_v1_is_an_api_route(world: World) -> None:
    # Routes outside /v1 are skipped above as the web page's: none of them may be the API's own.
    for route in iter_route_contexts(world.stack.app.routes):
        original = route.original_route
        if isinstance(original, APIRoute) and original.endpoint.__module__.startswith("keysentry.api"):
            assert (route.path or "").startswith("/v1") or route.path in INFRA, route.path


async def test_a_connection_is_loaded_by_tenant_in_sql(world: World) -> None:
    # Below the HTTP layer too: the lifecycle with B's tenant id finds nothing of A's.
    from keysentry.connections import ConnectionNotFound

    with pytest.raises(ConnectionNotFound):
        await world.stack.service.get(world.tenant_b, world.conn_a)
    assert world.conn_a not in json.dumps(
        [r.id for r in await world.stack.service.list_connections(world.tenant_b)]
    )


async def test_a_webhook_is_loaded_by_tenant_in_sql(world: World) -> None:
    # Below the HTTP layer too: the webhook lifecycle with B's tenant id finds nothing of A's.
    from keysentry.monitor import delivery

    db, vault = world.stack.service.db, world.stack.service.vault
    assert vault is not None
    with pytest.raises(delivery.WebhookNotFound):
        await delivery.get_webhook(db, vault, world.tenant_b, world.hook_a)
    with pytest.raises(delivery.WebhookNotFound):
        await delivery.list_deliveries(db, world.tenant_b, world.hook_a)
    assert world.hook_a not in [h.id for h in await delivery.list_webhooks(db, vault, world.tenant_b)]
