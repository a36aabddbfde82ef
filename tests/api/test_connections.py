"""/v1/connections and /v1/diagnose over real HTTP against the simulators: the lifecycle's rules as an API."""

from __future__ import annotations

from typing import Any

import pytest

from api.harness import EXPECTED, Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET_FIELDS = {"secret", "passphrase", "api_key"}


def _walk_keys(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _walk_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _walk_keys(v)}
    return set()


async def test_add_stores_the_key_and_answers_with_its_diagnosis(api: Stack) -> None:
    _, token = await api.new_tenant()
    key = api.keys["okx"]
    added = await api.client.call("POST", "/v1/connections", token=token, json_body=key.add("okx bot"))
    assert added.status == 201, added.text
    connection, diagnosis = added.json["connection"], added.json["diagnosis"]
    assert added.headers["Location"] == f"/v1/connections/{connection['id']}"
    assert connection["status"] == diagnosis["status"] == "connected"
    assert connection["account_id"] == key.account
    assert connection["label"] == "okx bot"
    assert connection["masked_key"] == f"{key.api_key[:4]}…{key.api_key[-4:]}"
    assert connection["credential_version"] == 1
    # no field of any response may be a secret field, whatever its value
    assert not (_walk_keys(added.json) & SECRET_FIELDS)
    fetched = await api.client.call("GET", f"/v1/connections/{connection['id']}", token=token)
    assert fetched.status == 200
    assert fetched.json["id"] == connection["id"]
    assert key.api_key not in added.text + fetched.text  # the whole API key is never shown either


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_each_key_gets_its_status(api: Stack, name: str) -> None:
    _, token = await api.new_tenant()
    key = api.keys[name]
    checked = await api.client.call(
        "POST", "/v1/diagnose", token=token, json_body=key.body(exchange=key.exchange)
    )
    assert checked.status == 200, checked.text
    assert checked.json["status"] == EXPECTED[name]


async def test_a_refused_key_is_not_stored_unless_saved_anyway(api: Stack) -> None:
    _, token = await api.new_tenant()
    body = api.keys["bybit_ip"].add("behind a whitelist")
    refused = await api.client.call("POST", "/v1/connections", token=token, json_body=body)
    assert refused.status == 422
    assert refused.problem_type() == "key-refused"
    assert refused.json["diagnosis"]["status"] == "ip_not_allowed"
    assert refused.json["can_save_anyway"] is True
    assert '"save_anyway": true' in refused.json["detail"]
    assert (await api.client.call("GET", "/v1/connections", token=token)).json["items"] == []
    saved = await api.client.call(
        "POST", "/v1/connections", token=token, json_body={**body, "save_anyway": True}
    )
    assert saved.status == 201, saved.text
    assert saved.json["connection"]["status"] == "ip_not_allowed"


async def test_input_that_cannot_be_a_key_is_refused_for_good(api: Stack) -> None:
    _, token = await api.new_tenant()
    body = {**api.keys["binance"].add(), "api_key": "too short", "save_anyway": True}
    refused = await api.client.call("POST", "/v1/connections", token=token, json_body=body)
    assert refused.status == 422
    assert refused.problem_type() == "key-refused"
    assert refused.json["can_save_anyway"] is False
    assert refused.json["diagnosis"]["status"] == "invalid_key"


async def test_the_same_account_twice_names_the_first_connection(api: Stack) -> None:
    _, token = await api.new_tenant()
    first = await api.client.call("POST", "/v1/connections", token=token, json_body=api.keys["bybit"].add())
    first_id = first.json["connection"]["id"]
    again = await api.client.call(
        "POST", "/v1/connections", token=token, json_body=api.keys["bybit_same_account"].add("second")
    )
    assert again.status == 409
    assert again.problem_type() == "already-connected"
    assert again.json["existing_id"] == first_id
    assert f"PUT /v1/connections/{first_id}/credentials" in again.json["detail"]
    assert again.json["diagnosis"]["status"] == "already_connected"
    same_key = await api.client.call(
        "POST", "/v1/connections", token=token, json_body=api.keys["bybit"].add()
    )
    assert same_key.status == 409
    assert same_key.problem_type() == "duplicate-key"
    assert same_key.json["existing_id"] == first_id


async def test_update_credentials_keeps_the_connection_and_its_history(api: Stack) -> None:
    _, token = await api.new_tenant()
    added = await api.client.call("POST", "/v1/connections", token=token, json_body=api.keys["bybit"].add())
    cid = added.json["connection"]["id"]
    other = await api.client.call(
        "PUT", f"/v1/connections/{cid}/credentials", token=token, json_body=api.keys["bybit_other"].body()
    )
    assert other.status == 422
    assert other.problem_type() == "account-mismatch"
    updated = await api.client.call(
        "PUT",
        f"/v1/connections/{cid}/credentials",
        token=token,
        json_body=api.keys["bybit_same_account"].body(),
    )
    assert updated.status == 200, updated.text
    assert updated.json["connection"]["id"] == cid
    assert updated.json["connection"]["credential_version"] == 2
    assert updated.json["connection"]["masked_key"].startswith(api.keys["bybit_same_account"].api_key[:4])
    refreshed = await api.client.call("POST", f"/v1/connections/{cid}/refresh", token=token)
    assert refreshed.status == 200, refreshed.text
    assert refreshed.json["diagnosis"]["status"] == "connected"
    checks = await api.client.call("GET", f"/v1/connections/{cid}/checks", token=token)
    items = checks.json["items"]
    assert [(c["trigger"], c["credential_version"]) for c in items] == [
        ("refresh", 2),
        ("update", 2),
        ("add", 1),
    ]
    newest = await api.client.call("GET", f"/v1/connections/{cid}/checks", token=token, params={"limit": "1"})
    assert [c["trigger"] for c in newest.json["items"]] == ["refresh"]


async def test_remove_forgets_the_connection_and_allows_connecting_again(api: Stack) -> None:
    _, token = await api.new_tenant()
    added = await api.client.call("POST", "/v1/connections", token=token, json_body=api.keys["kucoin"].add())
    assert added.status == 201, added.text
    cid = added.json["connection"]["id"]
    removed = await api.client.call("DELETE", f"/v1/connections/{cid}", token=token)
    assert removed.status == 204
    assert removed.text == ""
    for method, path in (("GET", ""), ("DELETE", ""), ("GET", "/checks"), ("POST", "/refresh")):
        gone = await api.client.call(method, f"/v1/connections/{cid}{path}", token=token)
        assert gone.status == 404, (method, path)
    again = await api.client.call("POST", "/v1/connections", token=token, json_body=api.keys["kucoin"].add())
    assert again.status == 201
    assert again.json["connection"]["id"] != cid


async def test_list_filters_and_pages_without_repeats(api: Stack) -> None:
    _, token = await api.new_tenant()
    names = ["binance", "okx", "bybit", "kucoin"]
    for name in names:
        made = await api.client.call(
            "POST", "/v1/connections", token=token, json_body=api.keys[name].add(name)
        )
        assert made.status == 201, made.text
    saved = await api.client.call(
        "POST", "/v1/connections", token=token, json_body=api.keys["bybit_ip"].add("ip", save_anyway=True)
    )
    assert saved.status == 201
    seen: list[str] = []
    cursor = None
    while True:
        page = await api.client.call(
            "GET",
            "/v1/connections",
            token=token,
            params={"limit": "2", **({"cursor": cursor} if cursor else {})},
        )
        assert page.status == 200
        assert len(page.json["items"]) <= 2
        seen += [c["label"] for c in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [*names, "ip"]  # oldest first, each once
    by_exchange = await api.client.call("GET", "/v1/connections", token=token, params={"exchange": "bybit"})
    assert sorted(c["label"] for c in by_exchange.json["items"]) == ["bybit", "ip"]
    failing = await api.client.call(
        "GET", "/v1/connections", token=token, params=[("status", "ip_not_allowed"), ("status", "expired")]
    )
    assert [c["label"] for c in failing.json["items"]] == ["ip"]
    bad = await api.client.call("GET", "/v1/connections", token=token, params={"cursor": "not-a-cursor"})
    assert bad.status == 422
    assert bad.json["errors"][0]["field"] == "cursor"


async def test_environment_and_profile_are_checked_before_any_call(api: Stack) -> None:
    _, token = await api.new_tenant()
    body = api.keys["okx"].body(exchange="okx", environment="testnet")
    wrong_env = await api.client.call("POST", "/v1/diagnose", token=token, json_body=body)
    assert wrong_env.status == 422
    assert wrong_env.json["errors"][0]["field"] == "environment"
    assert "mainnet" in wrong_env.json["errors"][0]["fix"]
    body = api.keys["okx"].body(exchange="okx", profile="yolo")
    wrong_profile = await api.client.call("POST", "/v1/diagnose", token=token, json_body=body)
    assert wrong_profile.status == 422
    assert wrong_profile.json["errors"][0]["field"] == "profile"
    assert "read-only" in wrong_profile.json["errors"][0]["fix"]


async def test_diagnose_tells_a_wrong_passphrase_and_stores_nothing(api: Stack) -> None:
    _, token = await api.new_tenant()
    body = api.keys["okx"].body(exchange="okx", passphrase="Another-Passphrase-9")
    checked = await api.client.call("POST", "/v1/diagnose", token=token, json_body=body)
    assert checked.status == 200
    assert checked.json["status"] == "passphrase_invalid"
    assert checked.json["findings"][0]["remedy"]  # how to fix it, not just what is wrong
    assert (await api.client.call("GET", "/v1/connections", token=token)).json["items"] == []


async def test_metrics_count_checks_and_requests_by_template_without_secrets(api: Stack) -> None:
    _, token = await api.new_tenant()
    added = await api.client.call("POST", "/v1/connections", token=token, json_body=api.keys["binance"].add())
    cid = added.json["connection"]["id"]
    await api.client.call("GET", f"/v1/connections/{cid}", token=token)
    metrics = (await api.client.call("GET", "/metrics")).text  # the client scans it for canaries
    assert 'keysentry_checks_total{exchange="binance",outcome="connected"}' in metrics
    assert 'route="/v1/connections/{connection_id}"' in metrics
    assert cid not in metrics and token not in metrics
