"""Per-tenant rate limits on diagnose, add, update, refresh and webhook tests: memory by default,
shared through Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

import canary
from api.harness import REFUSED_URL, Stack, stack
from conftest import require_service
from keysentry.api.config import ApiConfig
from keysentry.api.limits import RateLimiter

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIGHT = ApiConfig(
    rate_limit_diagnose="2/minute",
    rate_limit_add="3/minute",
    rate_limit_update="1/minute",
    rate_limit_refresh="1/minute",
    rate_limit_webhook_test="2/minute",
)
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def limited(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("limits")
    async with stack(tmp, f"sqlite+aiosqlite:///{tmp / 'k.db'}", config=TIGHT) as s:
        yield s


async def test_a_rate_that_is_not_one_is_refused_with_the_notation() -> None:
    with pytest.raises(ValueError, match="COUNT/PERIOD"):
        ApiConfig(rate_limit_add="lots")


async def test_diagnose_is_limited_per_tenant_with_retry_after(limited: Stack) -> None:
    _, token = await limited.new_tenant()
    _, other = await limited.new_tenant()
    body = limited.keys["bybit"].body(exchange="bybit")
    for _ in range(2):
        assert (await limited.client.call("POST", "/v1/diagnose", token=token, json_body=body)).status == 200
    refused = await limited.client.call("POST", "/v1/diagnose", token=token, json_body=body)
    assert refused.status == 429
    assert refused.problem_type() == "rate-limited"
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 60
    assert refused.json["retry_after_s"] == wait
    # another tenant has its own budget, and the same tenant's other actions theirs
    assert (await limited.client.call("POST", "/v1/diagnose", token=other, json_body=body)).status == 200
    added = await limited.client.call(
        "POST", "/v1/connections", token=token, json_body=limited.keys["bybit"].add()
    )
    assert added.status == 201
    metrics = (await limited.client.call("GET", "/metrics")).text
    assert 'keysentry_api_rate_limited_total{action="diagnose"} 1.0' in metrics


async def test_add_update_and_refresh_are_limited_too(limited: Stack) -> None:
    _, token = await limited.new_tenant()
    statuses = []
    for name in ("binance", "okx", "kucoin", "bybit"):
        reply = await limited.client.call(
            "POST", "/v1/connections", token=token, json_body=limited.keys[name].add()
        )
        statuses.append(reply.status)
    assert statuses == [201, 201, 201, 429]
    cid = (await limited.client.call("GET", "/v1/connections", token=token)).json["items"][0]["id"]
    assert (await limited.client.call("POST", f"/v1/connections/{cid}/refresh", token=token)).status == 200
    assert (await limited.client.call("POST", f"/v1/connections/{cid}/refresh", token=token)).status == 429
    body = limited.keys["bybit_other"].body()
    first = await limited.client.call(
        "PUT", f"/v1/connections/{cid}/credentials", token=token, json_body=body
    )
    assert first.status == 422  # refused (another account), but counted: it made an exchange call
    second = await limited.client.call(
        "PUT", f"/v1/connections/{cid}/credentials", token=token, json_body=body
    )
    assert second.status == 429


async def test_webhook_tests_are_limited_per_tenant_with_retry_after(
    limited: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a test event makes keysentry call the tenant's own URL at once: not an unlimited request cannon
    monkeypatch.setenv("KEYSENTRY_MONITOR_WEBHOOK_ALLOW_PRIVATE", "1")  # the discard port, not the internet
    hooks = []
    tokens = [(await limited.new_tenant())[1] for _ in range(2)]
    for token in tokens:
        made = await limited.client.call(
            "POST", "/v1/webhooks", token=token, json_body={"url": REFUSED_URL + "/hook"}
        )
        assert made.status == 201, made.text
        canary.register(made.json["secret"], "webhook-secret-of-limits")
        hooks.append(made.json["id"])
    token, hook = tokens[0], hooks[0]
    for _ in range(2):
        fired = await limited.client.call("POST", f"/v1/webhooks/{hook}/test", token=token)
        assert fired.status == 200, fired.text
    refused = await limited.client.call("POST", f"/v1/webhooks/{hook}/test", token=token)
    assert refused.status == 429 and refused.problem_type() == "rate-limited", refused.text
    wait = int(refused.headers["Retry-After"])
    assert 0 < wait <= 60 and refused.json["retry_after_s"] == wait
    assert "webhook_test" in refused.json["detail"]
    # the limit is per tenant and per action: the other tenant may test, this one may still read
    assert (await limited.client.call("POST", f"/v1/webhooks/{hooks[1]}/test", token=tokens[1])).status == 200
    log = await limited.client.call("GET", f"/v1/webhooks/{hook}/deliveries", token=token)
    assert log.status == 200 and len(log.json["items"]) == 4  # two tests, each with its queued retry
    metrics = (await limited.client.call("GET", "/metrics")).text
    assert 'keysentry_api_rate_limited_total{action="webhook_test"} 1.0' in metrics


async def test_redis_shares_one_budget_between_processes(tmp_path: Path) -> None:
    require_service("127.0.0.1", 6379, "Redis")
    async with stack(
        tmp_path,
        f"sqlite+aiosqlite:///{tmp_path / 'k.db'}",
        config=TIGHT,
        settings_extra={"redis_url": REDIS_URL},
    ) as s:
        tenant, token = await s.new_tenant()
        elsewhere = RateLimiter.redis(REDIS_URL, TIGHT)  # as another API process would
        try:
            assert await elsewhere.hit("diagnose", tenant) is None
            assert await elsewhere.hit("diagnose", tenant) is None
        finally:
            await elsewhere.close()
        body = s.keys["bybit"].body(exchange="bybit")
        refused = await s.client.call("POST", "/v1/diagnose", token=token, json_body=body)
        assert refused.status == 429, refused.text


async def test_an_unreachable_redis_refuses_instead_of_letting_everything_through(tmp_path: Path) -> None:
    down = RateLimiter.redis("redis://127.0.0.1:9/0", TIGHT)  # nothing listens there
    async with stack(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'k.db'}", limiter=down) as s:
        _, token = await s.new_tenant()
        body = s.keys["bybit"].body(exchange="bybit")
        reply = await s.client.call("POST", "/v1/diagnose", token=token, json_body=body)
        assert reply.status == 503
        assert reply.problem_type() == "unavailable"
        assert (
            await s.client.call("GET", "/v1/connections", token=token)
        ).status == 200  # reads are not limited


async def test_each_tenant_and_action_has_its_own_window() -> None:
    limiter = RateLimiter.memory(TIGHT)
    a, b = f"t_{secrets.token_hex(3)}", f"t_{secrets.token_hex(3)}"
    assert await limiter.hit("update", a) is None
    wait = await limiter.hit("update", a)
    assert wait is not None and 0 < wait <= 60
    assert await limiter.hit("update", b) is None
    assert await limiter.hit("refresh", a) is None
