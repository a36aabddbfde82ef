"""Errors are RFC 9457 problems: a stable type per cause, the field and the fix, never a trace or a secret."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from sqlalchemy import make_url

import canary
from api.harness import Client, Stack, serving, settings_for
from keysentry.api.app import create_app
from keysentry.connections import ConnectionService
from keysentry.store.db import Database, create_engine
from keysentry.vault import VaultSealed

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def token(api: Stack) -> str:
    return (await api.new_tenant())[1]


def _first(reply_json: dict[str, object]) -> dict[str, str]:
    errors = reply_json["errors"]
    assert isinstance(errors, list) and errors
    first: dict[str, str] = errors[0]
    return first


@pytest.mark.parametrize(
    ("change", "field", "fix"),
    [
        ({"label": None}, "label", "add `label`"),
        ({"base_url": "http://169.254.169.254/latest"}, "base_url", "remove `base_url`"),
        ({"exchange": "ftx"}, "exchange", "use one of: binance, okx, bybit or kucoin"),
        ({"label": "bot\x00name"}, "label", "remove control characters"),
        ({"label": "   "}, "label", "it is blank"),
        ({"key_version": 7}, "key_version", "use one of: 1, 2 or 3"),
        ({"save_anyway": "perhaps"}, "save_anyway", "send true or false"),
        ({"environment": "../../etc"}, "environment", "pattern"),
    ],
)
async def test_validation_names_the_field_and_the_fix(
    api: Stack, token: str, change: dict[str, object], field: str, fix: str
) -> None:
    body = {**api.keys["binance"].add("bot"), **change}
    body = {k: v for k, v in body.items() if v is not None}
    reply = await api.client.call("POST", "/v1/connections", token=token, json_body=body)
    assert reply.status == 422, reply.text
    assert reply.problem_type() == "validation-error"
    first = _first(reply.json)
    assert first["field"] == field
    assert fix in first["fix"]
    assert field in reply.json["detail"]


async def test_a_rejected_secret_is_never_echoed(api: Stack, token: str) -> None:
    too_long = canary.binance_secret() * 9  # over the 512 characters a field takes
    body = {**api.keys["binance"].add(), "secret": too_long}
    reply = await api.client.call("POST", "/v1/connections", token=token, json_body=body)  # scanned for it
    assert reply.status == 422
    assert _first(reply.json)["field"] == "secret"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b"label=x", "text/plain")],
)
async def test_a_body_that_is_not_a_json_object_is_a_validation_problem(
    api: Stack, token: str, data: bytes, content_type: str
) -> None:
    reply = await api.client.call(
        "POST", "/v1/diagnose", token=token, data=data, headers={"Content-Type": content_type}
    )
    assert reply.status == 422, reply.text
    assert reply.problem_type() == "validation-error"
    assert "Traceback" not in reply.text


async def test_query_parameters_are_validated_like_bodies(api: Stack, token: str) -> None:
    reply = await api.client.call("GET", "/v1/connections", token=token, params={"limit": "0"})
    assert reply.status == 422
    assert _first(reply.json) == {
        "field": "limit",
        "location": "query",
        "problem": "Input should be greater than or equal to 1",
        "fix": "send a number of at least 1",
    }


async def test_bodies_over_16_kib_are_refused_before_they_are_read(api: Stack, token: str) -> None:
    big = b'{"label": "' + b"x" * (17 * 1024) + b'"}'
    declared = await api.client.call(
        "POST", "/v1/connections", token=token, data=big, headers={"Content-Type": "application/json"}
    )
    assert declared.status == 413
    assert declared.problem_type() == "payload-too-large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer encoding
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    async with api.client.session.post(
        api.client.base + "/v1/connections",
        data=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as response:
        assert response.status == 413
        assert (await response.json(content_type=None))["type"].endswith("payload-too-large")


async def test_unknown_routes_and_methods_are_problems_too(api: Stack, token: str) -> None:
    nowhere = await api.client.call("GET", "/v1/nowhere", token=token)
    assert nowhere.status == 404
    assert nowhere.problem_type() == "not-found"
    wrong = await api.client.call("DELETE", "/v1/diagnose", token=token)
    assert wrong.status == 405
    assert wrong.problem_type() == "method-not-allowed"
    assert "POST" in wrong.headers["Allow"]


async def test_an_unexpected_error_is_a_bare_500_and_logged_without_its_message(
    api: Stack, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = canary.bybit_secret()

    async def boom() -> None:
        raise RuntimeError(f"could not use secret {secret}")  # a careless message

    api.app.add_api_route("/v1/test-boom", boom, methods=["GET"])
    with caplog.at_level(logging.INFO):
        reply = await api.client.call("GET", "/v1/test-boom", token=token)
    assert reply.status == 500
    assert reply.problem_type() == "internal-error"
    assert "RuntimeError" not in reply.text and "Traceback" not in reply.text
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "RuntimeError at" in logged and "boom" in logged  # where it happened, for the operator
    assert "Traceback" not in caplog.text  # and the conftest fixture fails the test on the secret


async def test_a_sealed_vault_is_a_503_that_tells_the_operator_in_the_log(
    api: Stack, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def sealed() -> None:
        raise VaultSealed("no master key at /etc/keysentry/master.key: set KEYSENTRY_MASTER_KEY_FILE")

    api.app.add_api_route("/v1/test-sealed", sealed, methods=["GET"])
    with caplog.at_level(logging.INFO):
        reply = await api.client.call("GET", "/v1/test-sealed", token=token)
    assert reply.status == 503
    assert reply.problem_type() == "sealed"
    assert "/etc/keysentry" not in reply.text  # operator details stay in the log
    assert "/etc/keysentry/master.key" in caplog.text


async def test_a_database_that_is_down_answers_503_and_not_ready(tmp_path: Path) -> None:
    url = make_url("postgresql+asyncpg://postgres@127.0.0.1:9/keysentry")  # nothing listens there
    service = ConnectionService(Database(create_engine(url), url), vault=None, engine=None)
    app = create_app(settings_for(tmp_path, str(url)), service=service)
    async with serving(app) as base, aiohttp.ClientSession() as session:
        client = Client(base, session)
        from api.harness import ADMIN_TOKEN

        tenants = await client.call("GET", "/v1/tenants", token=ADMIN_TOKEN)
        assert tenants.status == 503, tenants.text
        assert tenants.problem_type() == "unavailable"
        assert "127.0.0.1:9" not in tenants.text
        as_tenant = await client.call("GET", "/v1/connections", token="ks_" + "A" * 43)
        assert as_tenant.status == 503
        ready = await client.call("GET", "/readyz")
        assert ready.status == 503
        assert ready.json["checks"]["database"] == "unavailable"
        assert (await client.call("GET", "/healthz")).status == 200


async def test_a_base_url_the_operator_got_wrong_is_a_503_for_the_caller(
    api: Stack, token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
    from keysentry.exchanges.transport import Transport

    async with Transport() as transport:
        service = ConnectionService(
            api.db,
            vault=None,
            engine=DiagnosisEngine(transport),
            options=lambda exchange, environment, profile: CheckOptions(base_url="binance.example"),
        )
        app = create_app(settings_for(tmp_path, "unused"), service=service)
        async with serving(app) as base, aiohttp.ClientSession() as session:
            body = api.keys["binance"].body(exchange="binance")
            with caplog.at_level(logging.INFO):
                reply = await Client(base, session).call("POST", "/v1/diagnose", token=token, json_body=body)
    assert reply.status == 503
    assert reply.problem_type() == "unavailable"
    assert "binance.example" not in reply.text
    assert "binance.example" in caplog.text  # the operator is told what to fix
