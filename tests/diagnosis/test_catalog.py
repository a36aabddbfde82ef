"""The catalogue of findings: coverage of the status contract, texts, per-exchange remedies, docs."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from keysentry.diagnosis import catalog
from keysentry.diagnosis.catalog import (
    CATALOG,
    COMMON_FIELDS,
    STATUS_TEXTS,
    all_codes,
    finding,
    render_markdown,
)
from keysentry.diagnosis.remedies import EXCHANGE_TEXTS, KNOWN_EXCHANGES, Texts
from keysentry.domain import PRECEDENCE, Permission, Severity, Status, headline_status, severity_of
from keysentry.domain.secrets import Secret

DOCS = Path(__file__).resolve().parents[2] / "docs" / "statuses.md"
NO_FINDING = {Status.CONNECTED, Status.UNCHECKED}
EXCHANGES = (*KNOWN_EXCHANGES, "gate", "newexchange")
IPS = ("127.0.0.2", "127.0.0.3")
AMBIGUOUS = "ambiguous_refusal"

# One realistic value per detail a code accepts: every accepted detail must have one here.
EXAMPLES: dict[str, Any] = {
    "exchange_code": "-2015",
    "http_status": 401,
    "egress_ip": "127.0.0.3",
    "retry_after_s": 120,
    "evidence": ["ipRestrict true"],
    "profile": "trading",
    "found_in": "testnet",
    "checked_in": "mainnet",
    "key_version": 2,
    "offset_ms": 2500,
    "window_ms": 5000,
    "whitelist": ["10.1.2.3"],
    "expired_at": datetime(2026, 3, 1, tzinfo=UTC),
    "expires_at": datetime(2026, 4, 2, tzinfo=UTC),
    "days": 9,
    "connection_id": "conn_42",
    "label": "Main bot",
    "account_id": "354937868",
    "forbidden_permissions": frozenset({Permission.WITHDRAW}),
    "missing_permissions": frozenset({Permission.SPOT_TRADE}),
    "excess_permissions": frozenset({Permission.FUTURES_TRADE}),
    "until": datetime(2026, 3, 1, 12, 30, tzinfo=UTC),
    "rule_days": 30,
    "age_days": 120,
    "max_age_days": 90,
    "currency": "USDT",
    "pairs": ["ETH/USDT"],
}


def full_details(code: str) -> dict[str, Any]:
    return {name: EXAMPLES[name] for name in CATALOG[code].fields | COMMON_FIELDS}


def reasons(code: str) -> list[str | None]:
    return [None, *CATALOG[code].reasons]


def joined(f: Any) -> str:
    return " ".join(f.remedy)


# --- coverage of the status contract --------------------------------------------------------------


def test_every_status_with_a_cause_has_its_entry() -> None:
    for status in PRECEDENCE:
        if status in NO_FINDING:
            assert status.value not in CATALOG
            continue
        entry = CATALOG[status.value]
        assert entry.status is status
        assert entry.severity is severity_of(status)
        assert entry.title and entry.meaning and entry.action


def test_codes_are_unique_and_headline_causes_come_first_in_contract_order() -> None:
    codes = all_codes()
    assert len(set(codes)) == len(codes)
    headline_codes = [s.value for s in PRECEDENCE if s not in NO_FINDING]
    assert list(codes[: len(headline_codes)]) == headline_codes
    assert {"no_ip_restriction", "permissions_broader_than_needed", "key_rotation_age"} <= set(codes)
    assert {"missing_deposit_address", "pair_not_tradable", "wrong_environment", "server_time_offset"} <= set(
        codes
    )


def test_status_texts_cover_the_whole_contract() -> None:
    assert set(STATUS_TEXTS) == set(Status)
    colours = {
        Severity.ERROR: "red",
        Severity.WARNING: "orange",
        Severity.OK: "green",
        Severity.UNKNOWN: "grey",
    }
    for status, text in STATUS_TEXTS.items():
        assert text.status is status and text.severity is severity_of(status)
        assert text.colour == colours[text.severity]
        assert text.title and text.meaning and text.action
    assert len({t.title for t in STATUS_TEXTS.values()}) == len(STATUS_TEXTS)


# --- every code renders, with and without details -------------------------------------------------


@pytest.mark.parametrize("code", [c for c in all_codes() if c != AMBIGUOUS])
def test_every_code_renders_for_every_exchange_and_reason(code: str) -> None:
    for exchange in EXCHANGES:
        for reason in reasons(code):
            for details, ips in (({}, ()), (full_details(code), IPS)):
                f = finding(code, exchange=exchange, reason=reason, egress_ips=ips, **details)
                assert f.code == code
                assert f.status is CATALOG[code].status
                for text in (f.message, *f.remedy):
                    assert text.strip() and "{" not in text and "}" not in text, (
                        code,
                        exchange,
                        reason,
                        text,
                    )
                assert f.remedy, (code, exchange, reason)
                json.dumps(f.to_json())  # details are JSON-ready


def test_no_template_alternative_is_dead() -> None:
    """Every alternative can be reached: its fields are all produced when every detail is known.

    A misspelt field in a template would otherwise silently fall back to vaguer wording forever.
    """
    for code, entry in CATALOG.items():
        known: set[str] = set()
        for exchange in EXCHANGES:
            known |= catalog._context(exchange, full_details(code), IPS).keys()
        if code == AMBIGUOUS:
            known |= {"likely", "candidates"}
        tables: list[Texts] = list(entry.texts.values())
        tables += [t for by_reason in EXCHANGE_TEXTS.get(code, {}).values() for t in by_reason.values()]
        for texts in tables:
            alts = [texts.message] if texts.message else []
            alts += list(texts.remedy or ())
            alts += [entry.check] if entry.check else []
            for alt in alts:
                for option in (alt,) if isinstance(alt, str) else alt:
                    missing = catalog._fields(option) - known
                    assert not missing, f"{code}: {option!r} needs {missing}"


def test_exchange_texts_only_name_known_codes_reasons_and_exchanges() -> None:
    for code, by_exchange in EXCHANGE_TEXTS.items():
        assert code in CATALOG
        for exchange, by_reason in by_exchange.items():
            assert exchange in KNOWN_EXCHANGES
            for reason in by_reason:
                assert reason is None or reason in CATALOG[code].reasons, (code, exchange, reason)


# --- exchange-specific remedies -------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ip_not_allowed", "no_ip_restriction"])
def test_whitelisting_remedies_name_the_page_and_list_the_egress_ips(code: str) -> None:
    remedies = {ex: joined(finding(code, exchange=ex, egress_ips=IPS)) for ex in EXCHANGES}
    for ex, remedy in remedies.items():
        assert "127.0.0.2 and 127.0.0.3" in remedy, ex
    assert "Restrict access to trusted IPs only" in remedies["binance"]
    assert "IP addresses (up to 20 per key)" in remedies["okx"]
    assert "under IP restriction" in remedies["bybit"]
    assert "KuCoin" in remedies["kucoin"]
    assert len({remedies[ex] for ex in KNOWN_EXCHANGES}) == len(KNOWN_EXCHANGES)


def test_ip_not_allowed_without_configured_ips_uses_the_refused_address() -> None:
    f = finding("ip_not_allowed", exchange="okx", egress_ip="127.0.0.9", whitelist=["10.0.0.1", "10.0.0.2"])
    assert "127.0.0.9" in f.message and "10.0.0.1 and 10.0.0.2" in f.message
    assert "add 127.0.0.9" in joined(f)


def test_every_exchange_specific_text_differs_from_the_general_one() -> None:
    for code, by_exchange in EXCHANGE_TEXTS.items():
        if code == AMBIGUOUS:
            continue
        for exchange, by_reason in by_exchange.items():
            for reason in by_reason:
                details = full_details(code)
                own = finding(code, exchange=exchange, reason=reason, egress_ips=IPS, **details)
                general = finding(code, exchange="newexchange", reason=reason, egress_ips=IPS, **details)
                strip = (own.message.replace(catalog.display_name(exchange), "X"), joined(own))
                other = (
                    general.message.replace("Newexchange", "X"),
                    joined(general).replace("Newexchange", "X"),
                )
                assert strip != other, (code, exchange, reason)


@pytest.mark.parametrize(
    ("exchange", "setting"),
    [
        ("binance", "“Enable Spot & Margin Trading”"),
        ("okx", "“Trade”"),
        ("bybit", "“SPOT: Trade”"),
        ("kucoin", "“Spot Trading”"),
        ("newexchange", "the permission for spot trading"),
    ],
)
def test_missing_permissions_are_named_as_the_exchange_names_them(exchange: str, setting: str) -> None:
    f = finding("incorrect_permissions", exchange=exchange, missing_permissions=[Permission.SPOT_TRADE])
    assert setting in joined(f)
    assert "spot trading" in f.message
    assert f.details["missing_permissions"] == ["spot_trade"]


def test_bybit_read_only_keys_are_told_to_become_read_write() -> None:
    f = finding("incorrect_permissions", exchange="bybit", missing_permissions=["spot_trade"])
    assert "Read-Write" in joined(f)


def test_withdrawal_remedy_names_the_setting_to_untick() -> None:
    both = {Permission.WITHDRAW, Permission.TRANSFER}
    binance = finding("withdrawal_enabled", exchange="binance", forbidden_permissions=both, profile="trading")
    assert "“Enable Withdrawals”" in joined(binance) and "“Permits Universal Transfer”" in joined(binance)
    assert "the “trading” profile forbids" in binance.message
    okx = finding("withdrawal_enabled", exchange="okx", forbidden_permissions=[Permission.WITHDRAW])
    assert "“Withdraw”" in joined(okx)


def test_futures_fixes_differ_by_cause_and_exchange() -> None:
    not_opened = finding("inactive_futures", exchange="binance", reason="account_not_opened")
    missing = finding("inactive_futures", exchange="binance", reason="permission_missing")
    assert "create a new API key" in joined(not_opened)  # older keys never get futures on Binance
    assert "“Enable Futures”" in joined(missing)
    assert not_opened.remedy != missing.remedy
    okx = finding("inactive_futures", exchange="okx", reason="account_not_opened")
    assert "account mode" in joined(okx)


@pytest.mark.parametrize(
    ("exchange", "rule"),
    [
        ("binance", "30 days after it was enabled"),
        ("okx", "after 14 days without use"),
        ("bybit", "90 days after creation"),
    ],
)
def test_no_ip_restriction_states_the_exchange_rule_and_date(exchange: str, rule: str) -> None:
    f = finding("no_ip_restriction", exchange=exchange, expires_at=datetime(2026, 5, 17, tzinfo=UTC))
    assert rule in f.message and "2026-05-17" in f.message
    assert f.status is None and f.severity is Severity.WARNING
    assert catalog.no_ip_expiry_days(exchange) is not None


def test_no_ip_rule_days_are_configurable_and_absent_where_undocumented() -> None:
    assert (
        "45 days after it was enabled"
        in finding("no_ip_restriction", exchange="binance", rule_days=45).message
    )
    kucoin = finding("no_ip_restriction", exchange="kucoin")
    assert "days" not in kucoin.message and catalog.no_ip_expiry_days("kucoin") is None


def test_expired_trading_authority_on_binance() -> None:
    f = finding(
        "expired",
        exchange="binance",
        reason="trading_authority",
        expired_at=datetime(2026, 2, 3, 4, 5, tzinfo=UTC),
        egress_ips=IPS,
    )
    assert f.status is Status.EXPIRED and "2026-02-03" in f.message
    assert "Enable Spot & Margin Trading" in f.message and "127.0.0.2" in joined(f)
    bybit = finding("expired", exchange="bybit", expired_at="2026-02-03T00:00:00+00:00")
    assert "90 days" in bybit.message and "2026-02-03" in bybit.message


@pytest.mark.parametrize(("days", "words"), [(0, "less than a day"), (1, "1 day"), (9, "9 days")])
def test_expires_soon_says_when(days: int, words: str) -> None:
    f = finding("expires_soon", exchange="okx", days=days, expires_at=datetime(2026, 4, 2, tzinfo=UTC))
    assert f"expires in {words} (2026-04-02)" in f.message
    assert f.status is Status.EXPIRES_SOON and f.severity is Severity.WARNING


@pytest.mark.parametrize(
    ("offset_ms", "words"), [(2500, "2.5 s behind"), (-45000, "45 s ahead of"), (3000, "3 s behind")]
)
def test_clock_skew_says_how_far_and_which_way(offset_ms: int, words: str) -> None:
    f = finding("clock_skew", exchange="okx", offset_ms=offset_ms)
    assert words in f.message and "30 s either way" in f.message
    assert "NTP" in joined(f)


def test_clock_windows_differ_per_exchange() -> None:
    assert "5 s either way" in finding("clock_skew", exchange="kucoin").message
    assert "receive window" in finding("clock_skew", exchange="binance").message


def test_server_time_offset_warns_only_near_the_limit() -> None:
    calm = finding("server_time_offset", exchange="kucoin", offset_ms=-800, window_ms=5000)
    near = finding("server_time_offset", exchange="kucoin", offset_ms=-3200, window_ms=5000)
    assert calm.severity is Severity.OK and near.severity is Severity.WARNING
    assert "close to the limit" in near.message and "close to the limit" not in calm.message
    assert calm.status is None and near.status is None


def test_temporary_issue_keeps_state_and_says_when_it_retries() -> None:
    f = finding("temporary_issue", exchange="binance", reason="rate_limited", retry_after_s=120)
    assert "not marked invalid" in f.message and "about 2 min" in joined(f)
    ban = finding("temporary_issue", exchange="binance", reason="ip_banned")
    assert "418" in joined(ban)
    until = finding(
        "temporary_issue", exchange="okx", reason="maintenance", until=datetime(2026, 3, 1, 12, 30)
    )
    assert "2026-03-01 12:30 UTC" in until.message


def test_account_restriction_reasons_have_their_own_words() -> None:
    messages = {
        r: finding("account_restricted", exchange="kucoin", reason=r).message
        for r in reasons("account_restricted")
    }
    assert len(set(messages.values())) == len(messages)
    agreement = finding("account_restricted", exchange="binance", reason="agreement_pending")
    assert "API Management" in joined(agreement)


def test_already_connected_points_to_the_existing_connection() -> None:
    f = finding("already_connected", exchange="okx", connection_id="conn_42", label="Main bot")
    assert "“Main bot”" in f.message and "conn_42" in f.message
    assert "update the connection “Main bot”" in joined(f)


def test_wrong_environment_says_which_and_what_to_change() -> None:
    f = finding("wrong_environment", exchange="okx", found_in="demo trading", checked_in="live")
    assert "OKX demo trading" in f.message and "live" in f.message
    assert "50101" in joined(f) and f.status is None
    key = finding(
        "invalid_key", exchange="bybit", reason="wrong_environment", found_in="testnet", checked_in="mainnet"
    )
    assert key.status is Status.INVALID_KEY and "testnet demo" in joined(key)


def test_malformed_key_states_the_expected_format() -> None:
    assert "64 letters and digits" in finding("invalid_key", exchange="binance", reason="malformed").message
    assert "24 lowercase hex digits" in finding("invalid_key", exchange="kucoin", reason="malformed").message


def test_exchange_code_is_appended_once() -> None:
    f = finding("secret_mismatch", exchange="binance", exchange_code=-1022)
    assert f.message.endswith("(Binance error -1022).")
    assert f.details["exchange_code"] == -1022


# --- ambiguous refusals -----------------------------------------------------------------------------


def test_ambiguous_refusal_heads_with_the_most_likely_cause() -> None:
    f = finding(
        "ambiguous_refusal",
        exchange="binance",
        candidates=["ip_not_allowed", Status.INCORRECT_PERMISSIONS, "invalid_key"],
        egress_ips=IPS,
        exchange_code="-2015",
    )
    assert f.status is Status.IP_NOT_ALLOWED and f.severity is Severity.ERROR
    assert f.details["likely"] == "ip_not_allowed"
    assert f.details["candidates"] == ["incorrect_permissions", "invalid_key"]
    assert "-2015" in f.message and f.message.count("-2015") == 1 and "not certain" in f.message
    assert (
        f.message.index("IP not allowed")
        < f.message.index("Incorrect permissions")
        < f.message.index("Invalid key")
    )
    ip_steps = finding("ip_not_allowed", exchange="binance", egress_ips=IPS).remedy
    assert f.remedy[: len(ip_steps)] == ip_steps
    rest = f.remedy[len(ip_steps) :]
    assert len(rest) == 2 and all(
        step.startswith("If that does not help, check that the key") for step in rest
    )
    assert headline_status([Status.EXPIRES_SOON, f.status]) is Status.IP_NOT_ALLOWED


def test_ambiguous_refusal_drops_repeated_candidates() -> None:
    f = finding("ambiguous_refusal", exchange="binance", candidates=["invalid_key", "invalid_key"])
    assert f.status is Status.INVALID_KEY and f.details["candidates"] == []
    assert "Most likely: “Invalid key”." in f.message and "Otherwise" not in f.message
    assert f.remedy == finding("invalid_key", exchange="binance").remedy


def test_ambiguous_refusal_reason_applies_to_the_likely_cause() -> None:
    f = finding(
        "ambiguous_refusal",
        exchange="binance",
        reason="trading_authority",
        candidates=["expired", "invalid_key"],
    )
    assert f.status is Status.EXPIRED and "Enable Spot & Margin Trading" in joined(f)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "needs candidates"),
        ({"candidates": "ip_not_allowed"}, "needs candidates"),
        ({"candidates": []}, "needs candidates"),
        ({"candidates": ["ip_not_allowed", "expires_soon"]}, "'expires_soon' is not an error status"),
        ({"candidates": ["ip_not_allowed", "unknown_key"]}, "'unknown_key' is not an error status"),
        ({"candidates": ["ip_not_allowed", "invalid_key"], "label": "x"}, "unknown detail 'label'"),
    ],
)
def test_ambiguous_refusal_refuses_bad_candidates(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        finding("ambiguous_refusal", exchange="binance", **kwargs)


# --- guarding the API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (
            ("no_such_code",),
            {"exchange": "okx"},
            "unknown finding code 'no_such_code'; known codes: invalid_key",
        ),
        (("expired",), {"exchange": "okx", "reason": "old"}, "unknown reason 'old'; valid reasons: key"),
        (("clock_skew",), {"exchange": "okx", "reason": "x"}, "this code takes no reason"),
        (("clock_skew",), {"exchange": "okx", "offset": 5}, "unknown detail 'offset'; accepted details:"),
        (("clock_skew",), {"exchange": "okx", "secret": "abc"}, "unknown detail 'secret'"),
        (("clock_skew",), {"exchange": "OKX"}, "lowercase name"),
        (
            ("incorrect_permissions",),
            {"exchange": "okx", "missing_permissions": ["trade"]},
            "unknown permission",
        ),
    ],
)
def test_misuse_fails_with_a_clear_message(args: tuple[str], kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        finding(*args, **kwargs)


def test_a_secret_can_never_enter_a_finding() -> None:
    with pytest.raises(TypeError, match="credential"):
        finding("already_connected", exchange="okx", label=Secret("hunter2"))
    with pytest.raises(TypeError, match="cannot carry"):
        finding("already_connected", exchange="okx", label=object())


def test_details_are_kept_json_ready() -> None:
    f = finding(
        "expires_soon",
        exchange="bybit",
        reason="key",
        days=3,
        expires_at=datetime(2026, 4, 2, tzinfo=UTC),
        evidence=("expiredAt",),
    )
    assert f.details == {
        "reason": "key",
        "days": 3,
        "expires_at": "2026-04-02T00:00:00+00:00",
        "evidence": ["expiredAt"],
    }


# --- docs/statuses.md -----------------------------------------------------------------------------


def test_docs_cover_every_code_status_and_profile() -> None:
    md = render_markdown()
    for code in all_codes():
        assert f"### `{code}`" in md
    for status in Status:
        assert f"`{status.value}`" in md
    for name in ("trading", "futures-trading", "read-only", "market-making"):
        assert f"| `{name}` |" in md
    assert "{" not in md.replace("```yaml", "")


def test_committed_docs_match_the_catalogue() -> None:
    regenerate = "python -m keysentry.diagnosis.catalog --markdown > docs/statuses.md"
    assert DOCS.exists(), f"docs/statuses.md is missing; create it with: {regenerate}"
    assert DOCS.read_text(encoding="utf-8") == render_markdown(), (
        f"docs/statuses.md is out of date with the catalogue; regenerate it with: {regenerate}"
    )


def test_module_command_prints_the_docs() -> None:
    cmd = [sys.executable, "-m", "keysentry.diagnosis.catalog"]
    run = subprocess.run([*cmd, "--markdown"], capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode == 0 and run.stderr == ""
    assert run.stdout == render_markdown()
    usage = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert usage.returncode == 3 and "--markdown" in usage.stderr and usage.stdout == ""


def test_public_api_is_pinned_and_loads_lazily() -> None:
    import keysentry.diagnosis as diagnosis

    assert set(diagnosis.__all__) == {
        "BUILTIN_PROFILES",
        "CATALOG",
        "DEFAULT_PROFILE",
        "KEY_ROTATION_DAYS",
        "STATUS_TEXTS",
        "Entry",
        "Profile",
        "ProfileError",
        "StatusText",
        "all_codes",
        "evaluate_permissions",
        "finding",
        "get_profile",
        "load_profiles",
        "no_ip_expiry_days",
        "render_markdown",
    }
    for name in diagnosis.__all__:
        assert getattr(diagnosis, name) is not None
    assert diagnosis.finding is finding
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = diagnosis.no_such_name


# -- the cache of rendered findings ------------------------------------------------------------------

P_ = Permission
EQUAL_BUT_READ_APART: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("key_rotation_age", {"age_days": 100, "max_age_days": 90}, {"age_days": 100.0, "max_age_days": 90}),
    ("server_time_offset", {"offset_ms": 1}, {"offset_ms": True}),
    ("server_time_offset", {"offset_ms": 0.0}, {"offset_ms": -0.0}),
    (
        "permissions_broader_than_needed",
        {"excess_permissions": {P_.MARGIN_TRADE, P_.FUTURES_TRADE}, "profile": "trading"},
        {"excess_permissions": {"margin_trade", "futures_trade"}, "profile": "trading"},
    ),
    (
        "permissions_broader_than_needed",
        {"excess_permissions": frozenset({P_.MARGIN_TRADE}), "profile": "trading"},
        {"profile": "trading", "excess_permissions": [P_.MARGIN_TRADE]},  # other order, other kind
    ),
    ("pair_not_tradable", {"pairs": ["BTC/USDT", "ETH/USDT"]}, {"pairs": ("ETH/USDT", "BTC/USDT")}),
]


@pytest.mark.parametrize(("code", "first", "second"), EQUAL_BUT_READ_APART)
def test_cached_findings_are_the_ones_built_for_the_very_same_details(
    code: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    # `finding` reuses what it rendered for equal inputs; inputs Python calls equal but that read
    # differently (1 and True, 0.0 and -0.0, a set of enums and of strings) each get their own.
    catalog._CACHE.clear()
    for details in (first, second, first, second):
        cached = finding(code, exchange="okx", **details)
        built = catalog.build_finding(code, exchange="okx", **details)
        assert cached == built
        assert list(cached.details) == list(built.details)  # the order given, too
        assert json.dumps(cached.to_json()) == json.dumps(built.to_json())


def test_findings_are_rendered_once_for_the_same_details() -> None:
    catalog._CACHE.clear()
    details = {"excess_permissions": frozenset({P_.MARGIN_TRADE}), "profile": "trading"}
    first = finding("permissions_broader_than_needed", exchange="okx", **details)
    again = finding("permissions_broader_than_needed", exchange="okx", **dict(details))
    assert again is first
    unhashable = {"evidence": [["a nested list"]]}  # still rendered, if not cached by value
    assert finding("clock_skew", exchange="okx", **unhashable) == catalog.build_finding(
        "clock_skew", exchange="okx", **unhashable
    )
