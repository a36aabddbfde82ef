"""The admin endpoint: authentication, every operation's effect on the live state, and what the
Binance simulator answers right after (end to end, over HTTP)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster

pytestmark = pytest.mark.timeout(30)

TOKEN = "test-admin-token-0123456789"
KEY = "k1" * 32
SECRET = "s1" * 32
NEW_KEY = "k2" * 32
NEW_SECRET = "s2" * 32
RESTRICTIONS = "/sapi/v1/account/apiRestrictions"

Admin = Callable[..., Awaitable[tuple[int, Any]]]


def scenario_data() -> dict[str, Any]:
    return {
        "seed": 3,
        "admin_token": TOKEN,
        "exchanges": {
            "binance": {
                "environments": ["mainnet", "testnet"],
                "accounts": [
                    {
                        "id": "1001",
                        "keys": [
                            {
                                "api_key": KEY,
                                "secret": SECRET,
                                "permissions": ["reading", "spot_and_margin_trading"],
                                "label": "bot",
                            }
                        ],
                    },
                    {"id": "1002"},
                ],
            }
        },
    }


@pytest.fixture
async def cluster() -> AsyncIterator[SimCluster]:
    async with SimCluster(parse_scenario(scenario_data())) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def admin(cluster: SimCluster, session: aiohttp.ClientSession) -> Admin:
    async def call(method: str, path: str, body: Any = None, *, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with session.request(method, cluster.admin_url + path, json=body, headers=headers) as resp:
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    return call


async def binance(
    session: aiohttp.ClientSession,
    url: str,
    path: str = RESTRICTIONS,
    *,
    key: str = KEY,
    secret: str = SECRET,
) -> tuple[int, Any]:
    """A signed Binance GET, signed here from the documented recipe (HMAC-SHA256 hex of the query)."""
    query = f"recvWindow=5000&timestamp={int(time.time() * 1000)}"
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    async with session.get(
        f"{url}{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": key}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def only_key(state: dict[str, Any]) -> Any:
    return state["exchanges"]["binance"]["accounts"][0]["keys"][0]


# -- authentication -------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, "Bearer "])
async def test_requests_without_the_right_token_get_401(
    cluster: SimCluster, session: aiohttp.ClientSession, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (("GET", "/admin/state"), ("DELETE", f"/admin/binance/keys/{KEY}"), ("GET", "/nope")):
        async with session.request(method, cluster.admin_url + path, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            body = await resp.json()
            assert set(body) == {"error", "hint"} and "Authorization: Bearer" in body["hint"]
    assert cluster.scenario.exchanges["binance"].accounts[0].keys[0].deleted is False


def test_the_token_comes_from_the_caller_then_the_scenario_then_is_generated() -> None:
    scenario = parse_scenario(scenario_data())
    assert SimCluster(scenario, admin_token="from-cli").admin_token == "from-cli"
    assert SimCluster(scenario).admin_token == TOKEN
    bare = parse_scenario({"exchanges": {}})
    generated = {SimCluster(bare).admin_token for _ in range(3)}
    assert len(generated) == 3 and all(len(t) >= 24 for t in generated)
    assert TOKEN not in repr(SimCluster(scenario))


# -- reading state --------------------------------------------------------------------------------


async def test_state_shows_every_key_with_masked_secrets(admin: Admin, cluster: SimCluster) -> None:
    status, state = await admin("GET", "/admin/state")
    assert status == 200
    assert SECRET not in str(state)
    key = only_key(state)
    assert key["api_key"] == KEY and key["secret"] == "****" + SECRET[-4:]
    assert key["expired"] is False and key["deleted"] is False
    binance = state["exchanges"]["binance"]
    assert {e["name"]: e["url"] for e in binance["environments"]} == {
        "mainnet": cluster.url("binance"),
        "testnet": cluster.url("binance", "testnet"),
    }
    assert "spot_and_margin_trading" in binance["permission_vocabulary"]
    one = (await admin("GET", "/admin/binance"))[1]
    assert {**one, "exchange_time": None} == {**binance, "exchange_time": None}
    assert (await admin("GET", f"/admin/binance/keys/{KEY}"))[1] == key
    assert (await admin("GET", "/admin/binance/accounts/1001"))[1]["keys"] == [key]


# -- keys -----------------------------------------------------------------------------------------


async def test_expire_now_takes_the_trading_authority_on_the_next_request(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, before = await binance(session, cluster.url("binance"))
    assert status == 200 and before["enableSpotAndMarginTrading"] is True
    status, key = await admin("POST", f"/admin/binance/keys/{KEY}/expire")
    assert status == 200 and key["expired"] is True
    status, after = await binance(session, cluster.url("binance"))
    assert status == 200 and after["enableSpotAndMarginTrading"] is False
    expires = datetime.fromisoformat(key["expires_at"])
    assert after["tradingAuthorityExpirationTime"] == int(expires.timestamp() * 1000)


async def test_expire_at_a_given_time(admin: Admin) -> None:
    status, key = await admin("POST", f"/admin/binance/keys/{KEY}/expire", {"at": "+2d"})
    assert status == 200 and key["expired"] is False
    expires = datetime.fromisoformat(key["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=2))) < timedelta(seconds=30)
    status, body = await admin("POST", f"/admin/binance/keys/{KEY}/expire", {"at": "someday"})
    assert status == 400 and "'someday' is not a time" in body["error"]


async def test_delete_and_restore_a_key(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, key = await admin("DELETE", f"/admin/binance/keys/{KEY}")
    assert status == 200 and key["deleted"] is True
    status, body = await binance(session, cluster.url("binance"))
    assert status == 401 and body["code"] == -2015
    status, key = await admin("POST", f"/admin/binance/keys/{KEY}/restore")
    assert status == 200 and key["deleted"] is False
    assert (await binance(session, cluster.url("binance")))[0] == 200


async def test_permissions_are_checked_against_the_exchange_vocabulary(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, body = await admin(
        "PATCH", f"/admin/binance/keys/{KEY}", {"permissions": ["reading", "trade", "fly"]}
    )
    assert status == 400
    assert body["error"] == "unknown binance permission(s): fly, trade"
    assert "spot_and_margin_trading" in body["hint"] and "futures" in body["hint"]
    status, key = await admin("PATCH", f"/admin/binance/keys/{KEY}", {"permissions": ["reading", "futures"]})
    assert status == 200 and key["permissions"] == ["reading", "futures"]
    status, flags = await binance(session, cluster.url("binance"))
    assert status == 200
    assert (flags["enableFutures"], flags["enableSpotAndMarginTrading"]) == (True, False)


async def test_ip_whitelist_is_validated_and_enforced_on_the_peer_address(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, body = await admin(
        "PATCH", f"/admin/binance/keys/{KEY}", {"ip_whitelist": ["127.0.0.5", "10.0.0.300"]}
    )
    assert status == 400 and "'10.0.0.300' is not an IP address" in body["error"]
    assert (await admin("PATCH", f"/admin/binance/keys/{KEY}", {"ip_whitelist": ["127.0.0.5"]}))[0] == 200
    status, body = await binance(session, cluster.url("binance"))
    assert status == 401 and body["code"] == -2015
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.5", 0))
    async with aiohttp.ClientSession(connector=connector) as whitelisted:
        status, flags = await binance(whitelisted, cluster.url("binance"))
    assert status == 200 and flags["ipRestrict"] is True


async def test_patch_sets_last_used_and_is_all_or_nothing(admin: Admin) -> None:
    status, key = await admin("PATCH", f"/admin/binance/keys/{KEY}", {"last_used_at": "2026-01-02T03:04:05Z"})
    assert status == 200 and key["last_used_at"] == "2026-01-02T03:04:05Z"
    status, body = await admin(
        "PATCH", f"/admin/binance/keys/{KEY}", {"label": "renamed", "ip_whitelist": ["x"]}
    )
    assert status == 400 and "ip_whitelist" in body["error"]
    assert (await admin("GET", f"/admin/binance/keys/{KEY}"))[1]["label"] == "bot"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"api_key": NEW_KEY}, "read-only"),
        ({"colour": "red"}, "unknown or read-only key field(s): colour"),
        ({"environment": "us"}, "does not serve environment 'us'"),
        ({"intent": "happy"}, "unknown intent 'happy'"),
        (["permissions"], "must be a JSON object"),
    ],
)
async def test_bad_key_patches_are_refused_with_the_reason(admin: Admin, body: Any, expected: str) -> None:
    status, answer = await admin("PATCH", f"/admin/binance/keys/{KEY}", body)
    assert status == 400 and expected in answer["error"] and answer["hint"]


async def test_add_a_key_to_an_account(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    new = {"api_key": NEW_KEY, "secret": NEW_SECRET, "permissions": ["reading"], "environment": "testnet"}
    assert (
        await binance(
            session, cluster.url("binance", "testnet"), "/api/v3/account", key=NEW_KEY, secret=NEW_SECRET
        )
    )[0] == 401
    status, key = await admin("POST", "/admin/binance/accounts/1002/keys", new)
    assert status == 201 and key["api_key"] == NEW_KEY and NEW_SECRET not in str(key)
    status, account = await binance(
        session, cluster.url("binance", "testnet"), "/api/v3/account", key=NEW_KEY, secret=NEW_SECRET
    )
    assert status == 200 and str(account["uid"]) == "1002"
    status, body = await admin("POST", "/admin/binance/accounts/1001/keys", new)
    assert status == 400 and "already has a key" in body["error"]
    status, body = await admin(
        "POST", "/admin/binance/accounts/1001/keys", {**new, "api_key": "x" * 64, "permissions": ["all"]}
    )
    assert status == 400 and "unknown binance permission(s): all" in body["error"]
    status, body = await admin("POST", "/admin/binance/accounts/1001/keys", {"api_key": "y" * 64})
    assert status == 400 and "secret" in body["error"]
    status, body = await admin("POST", "/admin/binance/accounts/9999/keys", new)
    assert status == 404 and "1001, 1002" in body["hint"]


# -- accounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("frozen", True),
        ("banned", True),
        ("api_disabled", True),
        ("kyc_required", True),
        ("region_restricted", True),
        ("futures_opened", False),
        ("kyc_level", 0),
        ("agreement_signed", False),
    ],
)
async def test_account_flags_are_set(admin: Admin, flag: str, value: Any) -> None:
    status, account = await admin("PATCH", "/admin/binance/accounts/1001", {flag: value})
    assert status == 200 and account[flag] == value
    assert (await admin("GET", "/admin/state"))[1]["exchanges"]["binance"]["accounts"][0][flag] == value


async def test_account_flags_change_the_next_answer(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    await admin("PATCH", "/admin/binance/accounts/1001", {"region_restricted": True})
    assert (await binance(session, cluster.url("binance")))[0] == 451
    await admin("PATCH", "/admin/binance/accounts/1001", {"region_restricted": False, "banned": True})
    status, body = await binance(session, cluster.url("binance"))
    assert status == 401 and body["code"] == -2015
    await admin("PATCH", "/admin/binance/accounts/1001", {"banned": False})
    assert (await binance(session, cluster.url("binance")))[0] == 200


async def test_freeze_and_unfreeze(admin: Admin) -> None:
    assert (await admin("POST", "/admin/binance/accounts/1001/freeze"))[1]["frozen"] is True
    assert (await admin("POST", "/admin/binance/accounts/1001/unfreeze"))[1]["frozen"] is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"kyc_level": 7}, "less than or equal to 3"), ({"id": "2"}, "read-only"), ({"keys": []}, "read-only")],
)
async def test_bad_account_patches_are_refused(admin: Admin, body: dict[str, Any], expected: str) -> None:
    status, answer = await admin("PATCH", "/admin/binance/accounts/1001", body)
    assert status == 400 and expected in answer["error"]


# -- the exchange as a whole ----------------------------------------------------------------------


async def test_maintenance_starts_and_ends(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, exchange = await admin("POST", "/admin/binance/maintenance", {"active": True})
    assert status == 200 and exchange["in_maintenance"] is True
    assert exchange["maintenance"][-1]["end"] is None
    async with session.get(cluster.url("binance") + "/sapi/v1/system/status") as resp:
        assert await resp.json() == {"status": 1, "msg": "system_maintenance"}
    assert (await binance(session, cluster.url("binance")))[0] != 200
    status, exchange = await admin("POST", "/admin/binance/maintenance", {"active": False})
    assert status == 200 and exchange["in_maintenance"] is False
    assert (await binance(session, cluster.url("binance")))[0] == 200
    status, exchange = await admin("POST", "/admin/binance/maintenance", {"active": True, "end": "+1h"})
    assert exchange["in_maintenance"] is True
    assert datetime.fromisoformat(exchange["maintenance"][-1]["end"]) > datetime.now(UTC) + timedelta(
        minutes=59
    )
    status, body = await admin("POST", "/admin/binance/maintenance", {"active": "yes"})
    assert status == 400 and "true or false" in body["error"]


async def test_faults_are_replaced_validated_and_reset(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, exchange = await admin("PUT", "/admin/binance/faults", {"error_rate": 1.0})
    assert status == 200 and exchange["faults"]["error_rate"] == 1.0
    for env in ("mainnet", "testnet"):  # one spec serves every environment of the exchange
        async with session.get(cluster.url("binance", env) + "/api/v3/ping") as resp:
            assert resp.status >= 500
    status, body = await admin("PUT", "/admin/binance/faults", {"error_rate": 2, "jitter": 1})
    assert status == 400 and "error_rate" in body["error"] and "jitter" in body["error"]
    assert (await admin("GET", "/admin/binance"))[1]["faults"]["error_rate"] == 1.0
    status, exchange = await admin("DELETE", "/admin/binance/faults")
    assert status == 200 and exchange["faults"]["error_rate"] == 0
    async with session.get(cluster.url("binance") + "/api/v3/ping") as resp:
        assert resp.status == 200


async def test_clock_offset_makes_the_client_clock_skewed(
    admin: Admin, cluster: SimCluster, session: aiohttp.ClientSession
) -> None:
    status, exchange = await admin("PUT", "/admin/binance/clock", {"offset_ms": 600_000})
    assert status == 200 and exchange["clock_offset_ms"] == 600_000
    shifted = datetime.fromisoformat(exchange["exchange_time"]) - datetime.now(UTC)
    assert timedelta(minutes=9) < shifted < timedelta(minutes=11)
    status, body = await binance(session, cluster.url("binance"))
    assert status == 400 and body["code"] == -1021
    status, body = await admin("PUT", "/admin/binance/clock", {"offset_ms": "10s"})
    assert status == 400 and "integer" in body["error"]


async def test_settings_names_are_checked(admin: Admin) -> None:
    status, body = await admin("PATCH", "/admin/binance/settings", {"no_such_setting": 1})
    assert status == 400 and "no_such_setting" in body["error"] and "banned_answer" in body["hint"]
    status, exchange = await admin("PATCH", "/admin/binance/settings", {"banned_answer": "not_authorized"})
    assert status == 200 and exchange["settings"] == {"banned_answer": "not_authorized"}
    status, exchange = await admin("PATCH", "/admin/binance/settings", {"banned_answer": None})
    assert exchange["settings"] == {}


async def test_reset_limits_calls_every_environments_hook(
    admin: Admin, cluster: SimCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[str] = []

    def spy(environment: str) -> Callable[[], None]:
        return lambda: called.append(environment)

    for ep in cluster.endpoints:
        monkeypatch.setattr(ep.sim, "reset_limits", spy(ep.environment))
    status, _ = await admin("POST", "/admin/binance/reset-limits")
    assert status == 200 and sorted(called) == ["mainnet", "testnet"]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "hint"),
    [
        ("GET", "/admin/bybit", 404, "exchange 'bybit' is not in this scenario", "running: binance"),
        ("DELETE", "/admin/binance/keys/nope", 404, "binance has no key 'nope'", "GET /admin/binance"),
        ("PATCH", "/admin/binance/accounts/77", 404, "binance has no account '77'", "1001, 1002"),
        ("GET", "/admin/binance/teleport", 404, "no admin route GET /admin/binance/teleport", "docs/"),
        ("PUT", "/admin/state", 405, "/admin/state does not take PUT", "docs/"),
    ],
)
async def test_errors_are_json_with_a_hint(
    admin: Admin, method: str, path: str, status: int, error: str, hint: str
) -> None:
    got, body = await admin(method, path, {})
    assert (got, body["error"]) == (status, error)
    assert hint in body["hint"]


async def test_a_body_that_is_not_json_is_a_400(cluster: SimCluster, session: aiohttp.ClientSession) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for data in (b"{not json", b"\xff\xfe", b""):
        async with session.patch(
            cluster.admin_url + f"/admin/binance/keys/{KEY}", data=data, headers=headers
        ) as r:
            assert r.status == 400
            assert "JSON" in (await r.json())["error"]
