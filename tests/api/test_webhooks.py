"""/v1/webhooks in the real API: who may use it, what it refuses and how, and where the secret shows.

The flows themselves (register, list, test, deliveries, delete) and the signature are in
tests/monitor/test_delivery.py; tenants kept apart in tests/api/test_cross_tenant.py. Here: the
routes take tenant tokens only (there are no read-only tokens: a tenant token may do everything
for its tenant, the admin token nothing), a private-network URL is refused with a sentence that
says so, bad input is a 4xx problem (never a 500), and the signing secret is in the answer that
registers the endpoint and in no other answer and no log line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

import canary
from api.harness import REFUSED_URL, Client, Stack, serving, settings_for
from keysentry.api.app import create_app
from keysentry.connections import ConnectionService
from keysentry.store.db import Database

pytestmark = pytest.mark.asyncio(loop_scope="module")

# .invalid never resolves (RFC 2606): nothing is ever sent to the internet from these tests
PUBLIC = "https://hooks.keysentry.invalid/hook"
ALLOW_PRIVATE = "KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE"
ROUTES = [
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("GET", "/v1/webhooks/{id}"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("POST", "/v1/webhooks/{id}/test"),
    ("GET", "/v1/webhooks/{id}/deliveries"),
]


@pytest.fixture(autouse=True)
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE, raising=False)  # the default: private networks refused


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def token(api: Stack) -> str:
    return (await api.new_tenant())[1]


async def _register(api: Stack, token: str, body: dict[str, Any]) -> dict[str, Any]:
    made = await api.client.call("POST", "/v1/webhooks", token=token, json_body=body)
    assert made.status == 201, made.text
    found: dict[str, Any] = made.json
    canary.register(found["secret"], f"webhook-secret-of-{found['id']}")
    return found


async def _refused(api: Stack, token: str, body: Any, field: str) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await api.client.call(
        "POST", "/v1/webhooks", token=token, data=raw, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 422, reply.text
    assert reply.problem_type() == "validation-error"
    first: dict[str, Any] = reply.json["errors"][0]
    assert first["field"] == field, reply.text
    assert first["fix"], reply.text
    return first


async def test_only_a_tenant_token_may_use_them(api: Stack, token: str) -> None:
    hook = (await _register(api, token, {"url": PUBLIC}))["id"]
    for method, path in ROUTES:
        filled = path.format(id=hook)
        body = {"url": PUBLIC} if method == "POST" and path == "/v1/webhooks" else None
        nobody = await api.client.call(method, filled, json_body=body)
        assert nobody.status == 401 and nobody.problem_type() == "unauthenticated", (method, path)
        unknown = await api.client.call(method, filled, token="ks_" + "A" * 43, json_body=body)
        assert unknown.status == 401, (method, path)
        admin = await api.client.call(method, filled, token=api.admin, json_body=body)
        assert admin.status == 403 and admin.problem_type() == "forbidden", (method, path)
        assert "tenant" in admin.json["detail"]
    # none of those registered, deleted or sent anything
    listed = await api.client.call("GET", "/v1/webhooks", token=token)
    assert [w["id"] for w in listed.json["items"]] == [hook]
    log = await api.client.call("GET", f"/v1/webhooks/{hook}/deliveries", token=token)
    assert log.json == {"items": []}
    assert (await api.client.call("DELETE", f"/v1/webhooks/{hook}", token=token)).status == 204


async def test_a_revoked_token_can_no_longer_reach_its_webhooks(api: Stack) -> None:
    tenant, token = await api.new_tenant()
    hook = (await _register(api, token, {"url": PUBLIC}))["id"]
    tokens = await api.client.call("GET", f"/v1/tenants/{tenant}/tokens", token=api.admin)
    token_id = tokens.json["items"][0]["id"]
    assert (
        await api.client.call("DELETE", f"/v1/tenants/{tenant}/tokens/{token_id}", token=api.admin)
    ).status == 204
    for method in ("GET", "DELETE"):
        assert (await api.client.call(method, f"/v1/webhooks/{hook}", token=token)).status == 401


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.8/hook",
        "http://192.168.1.20/hook",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",
        "http://api.localhost/hook",
        "http://127.1/hook",  # shorthand forms of 127.0.0.1 that are not address literals
        "http://2130706433/hook",
        "http://0x7f.1/hook",
    ],
)
async def test_a_private_network_url_is_refused_and_says_why(api: Stack, token: str, url: str) -> None:
    error = await _refused(api, token, {"url": url}, "url")
    assert "public address" in error["problem"]
    assert "public" in error["fix"]
    listed = await api.client.call("GET", "/v1/webhooks", token=token)
    assert url not in listed.text


async def test_the_operator_may_allow_private_networks(
    api: Stack, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    made = await _register(api, token, {"url": REFUSED_URL + "/hook"})
    fired = await api.client.call("POST", f"/v1/webhooks/{made['id']}/test", token=token)
    # nothing listens there: the answer says so, and is not an error of the API
    assert fired.status == 200, fired.text
    assert fired.json["delivered"] is False and fired.json["error"].startswith("could not connect")
    assert REFUSED_URL not in fired.json["error"]  # errors never quote the endpoint
    log = await api.client.call("GET", f"/v1/webhooks/{made['id']}/deliveries", token=token)
    # newest first: the failed attempt, and the retry it queued (a failed test is retried like any event)
    assert [(d["attempt"], d["status"]) for d in log.json["items"]] == [(2, "pending"), (1, "retrying")]
    assert (await api.client.call("DELETE", f"/v1/webhooks/{made['id']}", token=token)).status == 204


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({}, "url", "Field required"),
        ({"url": ""}, "url", ""),
        ({"url": "ftp://files.keysentry.invalid/"}, "url", "http"),
        ({"url": "https://user:pass@hooks.keysentry.invalid/"}, "url", "user name or password"),
        ({"url": PUBLIC + "/a b"}, "url", "spaces"),
        ({"url": PUBLIC + "/\x00"}, "url", "control characters"),
        ({"url": PUBLIC + "/" + "a" * 2048}, "url", ""),
        ({"url": 42}, "url", ""),
        ({"url": PUBLIC, "event_types": ["connection.exploded"]}, "event_types", "unknown event type"),
        ({"url": PUBLIC, "event_types": []}, "event_types", "at least one"),
        ({"url": PUBLIC, "event_types": ["webhook.test"]}, "event_types", "webhook.test"),
        ({"url": PUBLIC, "event_types": ["x" * 65]}, "event_types.0", ""),
        ({"url": PUBLIC, "event_types": ["connection.broken"] * 11}, "event_types", ""),
        ({"url": PUBLIC, "description": "a\x00b"}, "description", "control characters"),
        ({"url": PUBLIC, "description": "x" * 201}, "description", ""),
        ({"url": PUBLIC, "secret": "whsec_mine"}, "secret", ""),  # a secret is made, never chosen
    ],
)
async def test_bad_registrations_are_a_validation_problem_naming_the_field(
    api: Stack, token: str, body: dict[str, Any], field: str, says: str
) -> None:
    error = await _refused(api, token, body, field)
    assert says in error["problem"]


async def test_bodies_that_are_not_one_json_object_are_refused(api: Stack, token: str) -> None:
    for raw in (b"[]", b'"https://hooks.keysentry.invalid/"', b"{", b"\xff\xfe"):
        reply = await api.client.call(
            "POST", "/v1/webhooks", token=token, data=raw, headers={"Content-Type": "application/json"}
        )
        assert reply.status in {400, 422}, reply.text
        assert reply.headers["Content-Type"].startswith("application/problem+json")
    big = json.dumps({"url": PUBLIC, "description": "x" * 20_000}).encode()
    reply = await api.client.call(
        "POST", "/v1/webhooks", token=token, data=big, headers={"Content-Type": "application/json"}
    )
    assert reply.status == 413 and reply.problem_type() == "payload-too-large"


async def test_ids_and_query_parameters_are_checked_without_a_500(api: Stack, token: str) -> None:
    for path in ("/v1/webhooks/..%2F..%2Fetc", "/v1/webhooks/whk%00x", "/v1/webhooks/" + "w" * 64):
        reply = await api.client.call("GET", path, token=token)
        assert reply.status == 404 and reply.problem_type() == "not-found", path
    too_long = await api.client.call("GET", "/v1/webhooks/" + "w" * 65, token=token)
    assert too_long.status == 422
    hook = (await _register(api, token, {"url": PUBLIC}))["id"]
    for query in ({"limit": "0"}, {"limit": "201"}, {"limit": "many"}, {"lmit": "5"}):
        reply = await api.client.call("GET", f"/v1/webhooks/{hook}/deliveries", token=token, params=query)
        assert reply.status == 422 and reply.problem_type() == "validation-error", query
    unknown = await api.client.call("GET", "/v1/webhooks", token=token, params={"url": "x"})
    assert unknown.status == 422
    assert (await api.client.call("DELETE", f"/v1/webhooks/{hook}", token=token)).status == 204


async def test_a_tenant_has_at_most_20_and_is_told_what_to_do(api: Stack) -> None:
    _, token = await api.new_tenant()
    made = [await _register(api, token, {"url": f"{PUBLIC}/{n}"}) for n in range(20)]
    full = await api.client.call("POST", "/v1/webhooks", token=token, json_body={"url": f"{PUBLIC}/21"})
    # a valid request the tenant's current endpoints leave no room for: a conflict, not a bad field
    assert full.status == 409 and full.problem_type() == "too-many-webhooks", full.text
    assert "20" in full.json["detail"] and "DELETE /v1/webhooks/" in full.json["detail"]
    assert "errors" not in full.json
    assert (await api.client.call("DELETE", f"/v1/webhooks/{made[0]['id']}", token=token)).status == 204
    await _register(api, token, {"url": f"{PUBLIC}/21"})


async def test_an_endpoint_stored_while_private_networks_were_allowed_is_not_sent_to_after(
    api: Stack, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE, "1")
    made = await _register(api, token, {"url": "http://localhost:9/hook?token=abc"})
    monkeypatch.delenv(ALLOW_PRIVATE)
    fired = await api.client.call("POST", f"/v1/webhooks/{made['id']}/test", token=token)
    assert fired.status == 200, fired.text
    assert fired.json["delivered"] is False and fired.json["http_status"] is None
    assert fired.json["error"].startswith("not sent: a webhook URL must point to a public address")
    log = await api.client.call("GET", f"/v1/webhooks/{made['id']}/deliveries", token=token)
    # refused for good: not retried, and no part of the URL in the log
    assert [(d["attempt"], d["status"]) for d in log.json["items"]] == [(1, "failed")]
    for part in ("localhost", "/hook", "token=abc"):
        assert part not in log.text
    assert (await api.client.call("DELETE", f"/v1/webhooks/{made['id']}", token=token)).status == 204


async def test_invalid_monitor_settings_answer_503_never_500(
    api: Stack, token: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # This app was given its service, so it has not read KEYSENTRY_MONITOR_* at start (an app
    # that builds its own runtime refuses to start on such a value).
    hook = (await _register(api, token, {"url": PUBLIC}))["id"]
    monkeypatch.setenv(ALLOW_PRIVATE, "perhaps-SECRETISH")
    with caplog.at_level(logging.ERROR, logger="keysentry.api"):
        for path in ("/v1/webhooks", f"/v1/webhooks/{hook}/test"):
            body = {"url": PUBLIC} if path == "/v1/webhooks" else None
            reply = await api.client.call("POST", path, token=token, json_body=body)
            assert reply.status == 503 and reply.problem_type() == "unavailable", reply.text
            assert "SECRETISH" not in reply.text
    assert "webhook_allow_private" in caplog.text and "SECRETISH" not in caplog.text
    monkeypatch.setenv("KEYSENTRY_MONITOR_EXPIRING_DAYS", "[1,")  # not JSON: a SettingsError
    monkeypatch.delenv(ALLOW_PRIVATE)
    reply = await api.client.call("POST", "/v1/webhooks", token=token, json_body={"url": PUBLIC})
    assert reply.status == 503 and reply.problem_type() == "unavailable", reply.text
    monkeypatch.delenv("KEYSENTRY_MONITOR_EXPIRING_DAYS")
    assert (await api.client.call("DELETE", f"/v1/webhooks/{hook}", token=token)).status == 204


async def test_the_secret_is_shown_once_and_nowhere_else(
    api: Stack, token: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_PRIVATE, "1")  # the test event goes to the discard port, not the internet
    with caplog.at_level(logging.DEBUG):
        made = await api.client.call(
            "POST",
            "/v1/webhooks",
            token=token,
            json_body={
                "url": REFUSED_URL + "/hook",
                "event_types": ["connection.broken"],
                "description": "ops",
            },
        )
        assert made.status == 201, made.text
        secret = made.json["secret"]
        assert secret.startswith("whsec_")
        assert made.headers["Cache-Control"] == "no-store"
        assert made.headers["Location"] == f"/v1/webhooks/{made.json['id']}"
        # from here on, any answer (the client scans each) or log line holding it fails the test
        canary.register(secret, "webhook-secret-shown-once", secret.removeprefix("whsec_"))
        hook = made.json["id"]
        one = await api.client.call("GET", f"/v1/webhooks/{hook}", token=token)
        listed = await api.client.call("GET", "/v1/webhooks", token=token)
        for reply in (one, listed):
            assert reply.status == 200 and "secret" not in reply.text
        assert one.json == {k: v for k, v in made.json.items() if k != "secret"}
        fired = await api.client.call("POST", f"/v1/webhooks/{hook}/test", token=token)
        assert fired.status == 200 and fired.json["delivered"] is False
        log = await api.client.call("GET", f"/v1/webhooks/{hook}/deliveries", token=token)
        assert log.status == 200 and len(log.json["items"]) == 2
        assert (await api.client.call("DELETE", f"/v1/webhooks/{hook}", token=token)).status == 204
    canary.assert_no_leak(caplog.text, "the logs of the webhook routes")
    async with api.db.session() as s:
        from sqlalchemy import text

        dump = str((await s.execute(text("SELECT * FROM audit_log"))).all())
    canary.assert_no_leak(dump, "the audit log")


@pytest_asyncio.fixture(loop_scope="module")
async def sealed(tmp_path: Path) -> AsyncIterator[Client]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sealed.db'}"
    db = await Database.open(url)
    app = create_app(settings_for(tmp_path, url), service=ConnectionService(db, vault=None, engine=None))
    try:
        async with serving(app) as base, aiohttp.ClientSession() as session:
            yield Client(base, session)
    finally:
        await db.close()


async def test_without_a_vault_the_routes_answer_503_sealed(sealed: Client) -> None:
    from api.harness import ADMIN_TOKEN

    made = await sealed.call("POST", "/v1/tenants", token=ADMIN_TOKEN, json_body={"name": "x"})
    issued = await sealed.call(
        "POST", f"/v1/tenants/{made.json['id']}/tokens", token=ADMIN_TOKEN, json_body={"name": "t"}
    )
    token = issued.json["token"]
    canary.register(token, "api-token-of-sealed", token[3:])
    for method, path in (("POST", "/v1/webhooks"), ("GET", "/v1/webhooks")):
        body = {"url": PUBLIC} if method == "POST" else None
        reply = await sealed.call(method, path, token=token, json_body=body)
        assert reply.status == 503 and reply.problem_type() == "sealed", reply.text
