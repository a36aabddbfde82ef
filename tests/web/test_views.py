"""What a card, a guide and a check's result show, computed from records (no HTTP, no store)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from keysentry.diagnosis.catalog import STATUS_TEXTS, finding
from keysentry.domain import Diagnosis, Permission, Severity, Status
from keysentry.store.records import ConnectionRecord
from keysentry.web import views

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IPS = ("127.0.0.2", "127.0.0.3")


def record(status: Status, findings: tuple[Any, ...] = (), **kw: Any) -> ConnectionRecord:
    values: dict[str, Any] = {
        "id": "con_0123456789abcdef",
        "tenant_id": "t1",
        "exchange": "binance",
        "environment": "mainnet",
        "label": "grid bot",
        "profile": "trading",
        "account_id": "354937801",
        "masked_key": "ABCD…WXYZ",
        "key_fingerprint": "f" * 16,
        "credential_version": 1,
        "status": status,
        "severity": Severity.ERROR,
        "summary": "summary",
        "last_known_status": status,
        "findings": findings,
        "temporary_findings": (),
        "permissions": (),
        "ip_restricted": None,
        "expires_at": None,
        "last_checked_at": NOW - timedelta(minutes=5),
        "last_definitive_at": NOW - timedelta(minutes=5),
        "temporary_since": None,
        "next_check_at": NOW + timedelta(hours=1),
        "created_at": NOW - timedelta(days=3),
        "updated_at": NOW,
    }
    values.update(kw)
    return ConnectionRecord(**values)


def test_days_left_round_up_like_the_diagnosis_and_stop_at_zero() -> None:
    assert views.days_left(None, NOW) is None
    assert views.days_left(NOW + timedelta(days=4, hours=23), NOW) == 5
    assert views.days_left(NOW + timedelta(days=5), NOW) == 5
    assert views.days_left(NOW + timedelta(hours=1), NOW) == 1
    assert views.days_left(NOW - timedelta(days=3), NOW) == 0


def test_relative_times() -> None:
    assert views.when(None, NOW) is None
    shown = views.when(NOW - timedelta(minutes=5), NOW)
    assert shown is not None and shown.ago == "5 minutes ago" and shown.text == "2026-03-01 11:55 UTC"
    assert views.when(NOW - timedelta(seconds=10), NOW).ago == "just now"  # type: ignore[union-attr]
    assert views.when(NOW + timedelta(hours=3, minutes=5), NOW).ago == "in 3 hours"  # type: ignore[union-attr]
    assert views.when(NOW - timedelta(days=1), NOW).ago == "1 day ago"  # type: ignore[union-attr]


def test_a_card_shows_missing_permissions_in_words_and_the_days_left() -> None:
    missing = finding(
        "incorrect_permissions",
        exchange="binance",
        missing_permissions=[Permission.SPOT_TRADE, Permission.TRADE_HISTORY_READ],
    )
    c = views.card(
        record(Status.INCORRECT_PERMISSIONS, (missing,), expires_at=NOW + timedelta(days=2, hours=1)), NOW
    )
    assert set(c.missing_permissions) == {"spot trading", "reading trade history"}
    assert c.expires_in_days == 3
    assert c.badge.title == STATUS_TEXTS[Status.INCORRECT_PERMISSIONS].title
    assert (c.badge.severity, c.badge.icon) == ("error", "✕")
    assert c.last_known is None
    assert c.exchange_name == "Binance"


def test_badges_have_a_word_and_a_shape_per_severity() -> None:
    shapes = {
        views.badge(s).icon for s in (Status.CONNECTED, Status.EXPIRES_SOON, Status.EXPIRED, Status.UNCHECKED)
    }
    assert len(shapes) == 4
    assert views.badge(Status.EXPIRES_SOON).severity == "warning"
    assert views.badge(Status.UNCHECKED).severity == "unknown"


def test_the_guide_of_an_error_takes_its_cause_and_steps_from_the_headline_finding() -> None:
    notice = finding("no_ip_restriction", exchange="binance", egress_ips=IPS)
    blocked = finding("ip_not_allowed", exchange="binance", egress_ips=IPS, egress_ip="127.0.0.2")
    g = views.guide(record(Status.IP_NOT_ALLOWED, (notice, blocked)), NOW, IPS)
    assert g.cause == blocked.message
    assert g.steps == blocked.remedy and g.steps
    assert [n.code for n in g.notices] == ["no_ip_restriction"]
    assert g.egress_ips == IPS and g.ips_matter
    assert "`" not in g.meaning  # sentences naming API fields are for developers
    assert g.title == STATUS_TEXTS[Status.IP_NOT_ALLOWED].title


def test_the_guide_of_a_temporary_issue_also_shows_the_last_known_state() -> None:
    expired = finding("expired", exchange="bybit")
    down = finding("temporary_issue", exchange="bybit", reason="maintenance")
    r = record(
        Status.TEMPORARY_ISSUE,
        (expired,),
        exchange="bybit",
        last_known_status=Status.EXPIRED,
        temporary_findings=(down,),
    )
    g = views.guide(r, NOW, ())
    assert g.cause == down.message and g.steps == down.remedy
    assert g.last_known is not None and g.last_known.message == expired.message
    assert g.card.last_known is not None and g.card.last_known.status == "expired"
    assert g.notices == ()


def test_the_guide_of_a_connected_key_has_no_steps_to_fix() -> None:
    g = views.guide(record(Status.CONNECTED, (), summary="The key works."), NOW, IPS)
    assert g.steps == ()
    assert g.cause == "The key works."
    assert not g.ips_matter


def test_a_result_names_the_cause_and_the_fix_of_a_refused_key() -> None:
    expired = finding("expired", exchange="bybit")
    cleaned = dataclasses.replace(
        expired, code="input_whitespace_removed", status=None, severity=Severity.WARNING
    )
    d = Diagnosis(
        exchange="bybit",
        environment="mainnet",
        findings=[expired, cleaned],
        summary="The key has expired.",
        checked_at=NOW,
        expires_at=NOW - timedelta(days=1),
        missing_permissions=frozenset({Permission.SPOT_TRADE}),
    )
    r = views.result(d)
    assert r.badge.status == "expired"
    assert r.steps == expired.remedy
    assert [n.code for n in r.notices] == ["input_whitespace_removed"]
    assert r.expires_in_days == 0
    assert r.missing_permissions == ("spot trading",)
    assert r.exchange_name == "Bybit"
