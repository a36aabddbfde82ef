"""The read-only routes: supported exchanges, the status contract, health and readiness."""

from __future__ import annotations

import pytest

from api.harness import EGRESS, Stack
from keysentry.credentials import SUPPORTED_EXCHANGES, requires_passphrase
from keysentry.diagnosis.catalog import STATUS_TEXTS
from keysentry.diagnosis.engine import adapter_class
from keysentry.domain import PRECEDENCE

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_exchanges_say_what_to_ask_for_and_which_addresses_to_whitelist(api: Stack) -> None:
    _, token = await api.new_tenant()
    reply = await api.client.call("GET", "/v1/exchanges", token=token)
    assert reply.status == 200
    body = reply.json
    assert body["egress_ips"] == [EGRESS]
    by_name = {e["name"]: e for e in body["exchanges"]}
    assert list(by_name) == list(SUPPORTED_EXCHANGES)
    for name, exchange in by_name.items():
        assert exchange["environments"] == list(adapter_class(name).environments)
        fields = [f["name"] for f in exchange["fields"]]
        assert fields == ["api_key", "secret", *(["passphrase"] if requires_passphrase(name) else [])]
        assert all(f["format"] for f in exchange["fields"])
        assert (exchange["key_versions"] is not None) == (name == "kucoin")
    assert by_name["okx"]["fields"][2]["format"].startswith("8 to 32")
    assert by_name["binance"]["unrestricted_key_expiry_days"] == 30
    assert "http" not in reply.text  # base URLs are the operator's business, not shown


async def test_statuses_are_the_contract_most_severe_first_with_their_texts(api: Stack) -> None:
    _, token = await api.new_tenant()
    reply = await api.client.call("GET", "/v1/statuses", token=token)
    statuses = reply.json["statuses"]
    assert [s["status"] for s in statuses] == [s.value for s in PRECEDENCE]
    assert [s["precedence"] for s in statuses] == list(range(len(PRECEDENCE)))
    for item in statuses:
        text = STATUS_TEXTS[PRECEDENCE[item["precedence"]]]
        assert (item["title"], item["meaning"], item["action"]) == (text.title, text.meaning, text.action)
    by_status = {s["status"]: s for s in statuses}
    # written out, so a change of the contract shows here
    assert (by_status["invalid_key"]["severity"], by_status["invalid_key"]["exit_code"]) == ("error", 2)
    assert (by_status["temporary_issue"]["severity"], by_status["temporary_issue"]["exit_code"]) == (
        "warning",
        1,
    )
    assert (by_status["connected"]["severity"], by_status["connected"]["exit_code"]) == ("ok", 0)
    assert (by_status["unchecked"]["severity"], by_status["unchecked"]["exit_code"]) == ("unknown", 3)


async def test_health_and_readiness_need_no_token(api: Stack) -> None:
    health = await api.client.call("GET", "/healthz")
    assert (health.status, health.json) == (200, {"status": "ok"})
    ready = await api.client.call("GET", "/readyz")
    assert ready.status == 200
    assert ready.json == {"status": "ready", "checks": {"vault": "ok", "database": "ok"}}
