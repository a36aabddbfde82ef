"""Authentication: tenant tokens (random, shown once, stored hashed, revocable) and the admin token."""

from __future__ import annotations

import secrets
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select, text

import canary
from api.harness import ADMIN_TOKEN, Client, Stack, serving, settings_for
from keysentry.api.app import create_app
from keysentry.api.tokens import hash_token
from keysentry.store.tokens import ApiToken

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_no_token_or_an_unknown_one_is_401_with_a_challenge(api: Stack) -> None:
    for token in (None, "ks_" + "A" * 43, "not even a token", ADMIN_TOKEN + "x"):
        reply = await api.client.call("GET", "/v1/connections", token=token)
        assert reply.status == 401, token
        assert reply.problem_type() == "unauthenticated"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    basic = await api.client.call("GET", "/v1/connections", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status == 401


async def test_the_admin_token_manages_tenants_but_acts_for_no_tenant(api: Stack) -> None:
    refused = await api.client.call("GET", "/v1/connections", token=api.admin)
    assert refused.status == 403
    assert refused.problem_type() == "forbidden"
    assert "tenant" in refused.json["detail"]
    assert (await api.client.call("GET", "/v1/statuses", token=api.admin)).status == 200
    _, token = await api.new_tenant()
    for method, path in (("GET", "/v1/tenants"), ("POST", "/v1/tenants")):
        body = {"name": "x"} if method == "POST" else None
        denied = await api.client.call(method, path, token=token, json_body=body)
        assert denied.status == 403, path


async def test_a_token_is_stored_as_its_hash_only_and_revoking_it_locks_it_out(api: Stack) -> None:
    tenant, token = await api.new_tenant()
    assert (await api.client.call("GET", "/v1/connections", token=token)).status == 200
    async with api.db.session() as s:
        rows = (await s.execute(select(ApiToken).where(ApiToken.tenant_id == tenant))).scalars().all()
        dump = str((await s.execute(text("SELECT * FROM api_tokens"))).all())
    assert len(rows) == 1
    assert rows[0].token_hash == hash_token(token)
    assert rows[0].last_used_at is not None
    canary.assert_no_leak(dump, "the api_tokens table")  # the token was registered as a canary
    listed = await api.client.call("GET", f"/v1/tenants/{tenant}/tokens", token=api.admin)
    assert [t["id"] for t in listed.json["items"]] == [rows[0].id]
    assert "token" not in listed.json["items"][0]
    revoked = await api.client.call("DELETE", f"/v1/tenants/{tenant}/tokens/{rows[0].id}", token=api.admin)
    assert revoked.status == 204
    locked = await api.client.call("GET", "/v1/connections", token=token)
    assert locked.status == 401
    again = await api.client.call("DELETE", f"/v1/tenants/{tenant}/tokens/{rows[0].id}", token=api.admin)
    assert again.status == 404


async def test_tenants_are_made_listed_and_conflicts_named(api: Stack) -> None:
    wanted = f"acme-{secrets.token_hex(3)}"
    made = await api.client.call(
        "POST", "/v1/tenants", token=api.admin, json_body={"id": wanted, "name": "Acme"}
    )
    assert made.status == 201
    assert made.headers["Location"] == f"/v1/tenants/{wanted}"
    twice = await api.client.call(
        "POST", "/v1/tenants", token=api.admin, json_body={"id": wanted, "name": "Acme"}
    )
    assert twice.status == 409
    assert twice.problem_type() == "tenant-exists"
    fetched = await api.client.call("GET", f"/v1/tenants/{wanted}", token=api.admin)
    assert fetched.json["name"] == "Acme"
    assert (await api.client.call("GET", "/v1/tenants/nobody-here", token=api.admin)).status == 404
    seen: list[str] = []
    cursor = None
    while True:
        page = await api.client.call(
            "GET",
            "/v1/tenants",
            token=api.admin,
            params={"limit": "2", **({"cursor": cursor} if cursor else {})},
        )
        seen += [t["id"] for t in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert wanted in seen and seen == sorted(seen) and len(seen) == len(set(seen))
    assert (
        await api.client.call(
            "POST", "/v1/tenants/nobody-here/tokens", token=api.admin, json_body={"name": "x"}
        )
    ).status == 404


async def test_without_an_admin_token_the_admin_api_is_off(tmp_path: Path, api: Stack) -> None:
    settings = settings_for(tmp_path, "unused").model_copy(update={"admin_token": None})
    app = create_app(settings, service=api.service)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        client = Client(base, session)
        _, token = await api.new_tenant()  # made through the other app, on the same store
        for bearer in (ADMIN_TOKEN, token):
            off = await client.call("GET", "/v1/tenants", token=bearer)
            assert off.status == (401 if bearer == ADMIN_TOKEN else 403), off.text
        off = await client.call("GET", "/v1/tenants", token=token)
        assert off.problem_type() == "admin-disabled"
        assert (await client.call("GET", "/v1/connections", token=token)).status == 200
