"""Request models, cursors and validation problems as units: what they accept and what they never repeat."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import get_args

import pytest
from pydantic import ValidationError

import canary
from keysentry.api.problems import field_errors
from keysentry.api.queries import BadCursor, decode_cursor, encode_cursor
from keysentry.api.schemas import ConnectionCreate, DiagnoseRequest, ExchangeName, TenantCreate
from keysentry.credentials import SUPPORTED_EXCHANGES
from keysentry.store.records import ConnectionRecord


def test_the_request_schema_names_exactly_the_supported_exchanges() -> None:
    assert get_args(ExchangeName) == SUPPORTED_EXCHANGES


def test_secrets_in_a_request_model_never_show_in_its_repr_or_errors() -> None:
    secret, passphrase = canary.okx_secret(), canary.passphrase("okx")
    body = {"exchange": "okx", "label": "x", "api_key": "k", "secret": secret, "passphrase": passphrase}
    model = ConnectionCreate.model_validate(body)
    canary.assert_no_leak(repr(model) + str(model), "a request model's repr")
    with pytest.raises(ValidationError) as caught:
        DiagnoseRequest.model_validate({**body, "label": "not a field here", "secret": secret * 20})
    canary.assert_no_leak(str(caught.value), "a validation error")
    canary.assert_no_leak(
        json.dumps([e.model_dump() for e in field_errors(caught.value.errors())]), "field errors"
    )


@pytest.mark.parametrize(
    ("label", "stored"),
    [("  spot   bot ", "spot bot"), ("Ünïcødé 🙂", "Ünïcødé 🙂"), ("tab\there", "tab here")],
)
def test_labels_are_collapsed_and_kept(label: str, stored: str) -> None:
    body = {"exchange": "bybit", "label": label, "api_key": "k", "secret": "s"}
    assert ConnectionCreate.model_validate(body).label == stored


@pytest.mark.parametrize("label", ["\x00", "a\x07b", "\ud800", "   ", "x" * 201])
def test_labels_that_cannot_be_stored_or_shown_are_refused(label: str) -> None:
    with pytest.raises(ValidationError):
        ConnectionCreate.model_validate({"exchange": "bybit", "label": label, "api_key": "k", "secret": "s"})


@pytest.mark.parametrize("tenant", ["Acme", "-x", "a" * 64, "a b", "ä"])
def test_tenant_ids_are_plain_lowercase_slugs(tenant: str) -> None:
    with pytest.raises(ValidationError):
        TenantCreate.model_validate({"id": tenant, "name": "n"})


def _record(cid: str, at: datetime) -> ConnectionRecord:
    from keysentry.domain import Severity, Status

    return ConnectionRecord(
        id=cid, tenant_id="t", exchange="bybit", environment="mainnet", label="l", profile="trading",
        account_id=None, masked_key="m", key_fingerprint="f", credential_version=1, status=Status.CONNECTED,
        severity=Severity.OK, summary="", last_known_status=Status.CONNECTED, findings=(), temporary_findings=(),
        permissions=(), ip_restricted=None, expires_at=None, last_checked_at=None, last_definitive_at=None,
        temporary_since=None, next_check_at=None, created_at=at, updated_at=at,
    )  # fmt: skip


def test_a_cursor_round_trips_and_junk_is_refused() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(_record("con_0123", at))) == (at, "con_0123")
    forged = [
        "",
        "%%%",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps(["2026-03-01T12:00:00", "con_1"]).encode()).decode(),  # no zone
        base64.urlsafe_b64encode(json.dumps(["2026-03-01T12:00:00+00:00", "con\x00"]).encode()).decode(),
    ]
    for cursor in forged:
        with pytest.raises(BadCursor):
            decode_cursor(cursor)
