"""Requirement profiles: built-ins, operator-defined profiles, and how they judge granted permissions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.diagnosis.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    Profile,
    ProfileError,
    evaluate_permissions,
    get_profile,
    load_profiles,
)
from keysentry.domain import Finding, Permission, Severity, Status, headline_status

P = Permission
READS = frozenset({P.BALANCE_READ, P.TRADE_HISTORY_READ})
ALL_READS = READS | {P.DEPOSIT_ADDRESS_READ}


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def headline(findings: list[Finding]) -> Status:
    return headline_status(f.status for f in findings)


def by_code(findings: list[Finding], code: str) -> Finding:
    (match,) = [f for f in findings if f.code == code]
    return match


# --- built-ins ------------------------------------------------------------------------------------


def test_builtin_profiles_are_the_four_of_the_design() -> None:
    assert set(BUILTIN_PROFILES) == {"trading", "futures-trading", "read-only", "market-making"}
    assert DEFAULT_PROFILE == "trading"
    for profile in BUILTIN_PROFILES.values():
        assert {P.WITHDRAW, P.TRANSFER} <= profile.forbidden
        assert profile.required >= READS
        assert profile.description


def test_builtin_profiles_read_the_design_as_documented() -> None:
    trading, futures = get_profile("trading"), get_profile("futures-trading")
    assert trading.required == READS | {P.SPOT_TRADE}
    assert futures.required == trading.required | {P.FUTURES_TRADE} and futures.needs_futures
    assert P.FUTURES_TRADE in trading.excess_flagged and P.FUTURES_TRADE not in futures.excess_flagged
    read_only = get_profile("read-only")
    assert read_only.required == READS
    assert {P.SPOT_TRADE, P.FUTURES_TRADE} <= read_only.excess_flagged
    mm = get_profile("market-making")
    assert mm.required == ALL_READS | {P.SPOT_TRADE} and mm.deposit_currency == "USDT"


def test_a_profile_cannot_both_require_and_forbid() -> None:
    with pytest.raises(ProfileError, match="cannot be both required and forbidden"):
        Profile("x", "", required=frozenset({P.WITHDRAW}), forbidden=frozenset({P.WITHDRAW}))
    with pytest.raises(ProfileError, match="must require futures_trade"):
        Profile("x", "", required=READS, needs_futures=True)


def test_get_profile_names_the_available_ones() -> None:
    custom = load_profiles({"grid": {"extends": "trading"}})
    assert get_profile("grid", custom).name == "grid"
    with pytest.raises(ProfileError) as err:
        get_profile("tradng", custom)
    message = str(err.value)
    assert "'tradng'" in message
    assert "futures-trading, grid, market-making, read-only, trading" in message


# --- operator-defined profiles --------------------------------------------------------------------


def test_extends_adds_to_the_base_and_normalises_pairs() -> None:
    grid = load_profiles({"grid": {"extends": "trading", "pairs": ["btc/usdt", "ETH/USDT", "BTC/USDT"]}})[
        "grid"
    ]
    trading = get_profile("trading")
    assert grid.required == trading.required and grid.forbidden == trading.forbidden
    assert grid.pairs == ("BTC/USDT", "ETH/USDT")
    assert grid.description == "Based on trading."


def test_own_lists_override_where_the_base_put_a_permission() -> None:
    p = load_profiles({"sweeper": {"extends": "read-only", "required": ["transfer", "spot_trade"]}})[
        "sweeper"
    ]
    assert P.TRANSFER in p.required and P.TRANSFER not in p.forbidden
    assert P.SPOT_TRADE in p.required and P.SPOT_TRADE not in p.excess_flagged
    assert P.WITHDRAW in p.forbidden


def test_profiles_may_extend_each_other_in_any_order() -> None:
    data = {
        "child": {"extends": "parent", "pairs": ["ETH/USDT"]},
        "parent": {"extends": "trading", "pairs": ["BTC/USDT"], "deposit_currency": "usdc"},
    }
    child = load_profiles(data)["child"]
    assert child.pairs == ("BTC/USDT", "ETH/USDT")
    assert child.deposit_currency == "USDC"
    assert P.DEPOSIT_ADDRESS_READ in child.required  # a deposit currency needs the permission to read it


def test_futures_flag_and_deposit_currency() -> None:
    out = load_profiles(
        {
            "fut": {"extends": "trading", "futures": True},
            "implicit": {"required": ["balance_read", "futures_trade"]},
            "no-deposit": {"extends": "market-making", "deposit_currency": None},
        }
    )
    assert out["fut"].needs_futures and P.FUTURES_TRADE in out["fut"].required
    assert P.FUTURES_TRADE not in out["fut"].excess_flagged
    assert out["implicit"].needs_futures
    assert out["no-deposit"].deposit_currency is None


def test_an_empty_profile_requires_nothing() -> None:
    empty = load_profiles({"validity-only": None})["validity-only"]
    assert empty.required == frozenset() and not empty.needs_futures


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (["trading"], ["must be a mapping"]),
        ({"My Bot": {}}, ["'My Bot'", "lowercase letters"]),
        ({"trading": {}}, ["built in", "extends: trading"]),
        ({"bot": ["spot_trade"]}, ["'bot'", "must be a mapping"]),
        (
            {"bot": {"requires": ["spot_trade"]}},
            ["'bot'", "'requires'", "valid settings: description, extends"],
        ),
        (
            {"bot": {"required": ["trade"]}},
            ["'bot'", "'required'", "'trade'", "valid permissions: balance_read", "withdraw"],
        ),
        ({"bot": {"forbidden": ["withdrawal"]}}, ["'bot'", "'forbidden'", "'withdrawal'"]),
        ({"bot": {"excess": ["margin"]}}, ["'bot'", "'excess'", "'margin'"]),
        ({"bot": {"required": "spot_trade"}}, ["'bot'", "'required' must be a list"]),
        ({"bot": {"required": ["withdraw"], "forbidden": ["withdraw"]}}, ["'bot'", "withdraw", "both"]),
        ({"bot": {"extends": "tradin"}}, ["'bot'", "'extends'", "'tradin'", "available: futures-trading"]),
        ({"a": {"extends": "b"}, "b": {"extends": "a"}}, ["circle", "a -> b -> a"]),
        ({"bot": {"futures": "yes"}}, ["'bot'", "'futures' must be true or false"]),
        ({"bot": {"pairs": ["BTCUSDT"]}}, ["'bot'", "'pairs'", "BTCUSDT", "BTC/USDT"]),
        ({"bot": {"deposit_currency": "US DT"}}, ["'bot'", "'deposit_currency'"]),
        ({"bot": {"futures": True, "forbidden": ["futures_trade"]}}, ["'bot'", "futures_trade", "bans"]),
        ({"bot": {"description": 5}}, ["'bot'", "'description'"]),
    ],
)
def test_bad_profiles_are_refused_with_a_clear_message(data: Any, fragments: list[str]) -> None:
    with pytest.raises(ProfileError) as err:
        load_profiles(data)
    for fragment in fragments:
        assert fragment in str(err.value)


# --- evaluate_permissions --------------------------------------------------------------------------


def evaluate(name: str, granted: set[Permission], **kw: Any) -> list[Finding]:
    kw.setdefault("exchange", "binance")
    return evaluate_permissions(get_profile(name), frozenset(granted), **kw)


def test_exactly_what_trading_needs_is_connected() -> None:
    assert evaluate("trading", {*READS, P.SPOT_TRADE}) == []


def test_missing_permission_is_incorrect_permissions_with_the_exchange_setting() -> None:
    found = evaluate("trading", set(ALL_READS), egress_ips=["127.0.0.7"])
    assert codes(found) == ["incorrect_permissions"]
    (f,) = found
    assert f.status is Status.INCORRECT_PERMISSIONS and f.severity is Severity.ERROR
    assert f.details["missing_permissions"] == ["spot_trade"]
    assert f.details["profile"] == "trading"
    assert "“Enable Spot & Margin Trading”" in " ".join(f.remedy)
    assert "127.0.0.7" in " ".join(f.remedy)  # Binance may want trusted IPs before it allows trading
    okx = evaluate("trading", set(READS), exchange="okx")
    assert "“Trade”" in " ".join(by_code(okx, "incorrect_permissions").remedy)


def test_withdrawal_is_forbidden_and_outranks_missing_permissions() -> None:
    found = evaluate("trading", {P.BALANCE_READ, P.WITHDRAW, P.TRANSFER})
    assert codes(found)[0] == "withdrawal_enabled"
    assert by_code(found, "withdrawal_enabled").details["forbidden_permissions"] == ["transfer", "withdraw"]
    assert "“Enable Withdrawals”" in " ".join(by_code(found, "withdrawal_enabled").remedy)
    assert headline(found) is Status.WITHDRAWAL_ENABLED


def test_excess_permissions_are_a_notice_that_never_heads() -> None:
    found = evaluate("trading", {*READS, P.SPOT_TRADE, P.FUTURES_TRADE, P.MARGIN_TRADE})
    assert codes(found) == ["permissions_broader_than_needed"]
    (f,) = found
    assert f.status is None and f.severity is Severity.WARNING
    assert f.details["excess_permissions"] == ["futures_trade", "margin_trade"]
    assert headline(found) is Status.CONNECTED


def test_read_only_flags_trading_and_needs_the_reads() -> None:
    assert codes(evaluate("read-only", {*READS, P.SPOT_TRADE})) == ["permissions_broader_than_needed"]
    found = evaluate("read-only", {P.BALANCE_READ})
    assert by_code(found, "incorrect_permissions").details["missing_permissions"] == ["trade_history_read"]


def test_futures_permission_missing_is_inactive_futures_not_incorrect_permissions() -> None:
    base = {*READS, P.SPOT_TRADE}
    assert evaluate("futures-trading", {*base, P.FUTURES_TRADE}, futures_active=True) == []
    found = evaluate("futures-trading", base, futures_active=None)
    assert codes(found) == ["inactive_futures"]
    assert found[0].details["reason"] == "permission_missing"
    assert "“Enable Futures”" in " ".join(found[0].remedy)
    assert headline(found) is Status.INACTIVE_FUTURES


def test_unopened_futures_account_is_a_different_fix() -> None:
    found = evaluate("futures-trading", {*READS, P.SPOT_TRADE, P.FUTURES_TRADE}, futures_active=False)
    assert codes(found) == ["inactive_futures"]
    assert found[0].details["reason"] == "account_not_opened"
    other = evaluate("futures-trading", {*READS, P.SPOT_TRADE}, futures_active=None)
    assert found[0].remedy != other[0].remedy


def test_missing_spot_and_futures_give_both_findings_and_precedence_picks_the_headline() -> None:
    found = evaluate("futures-trading", set(READS), futures_active=True)
    assert codes(found) == ["incorrect_permissions", "inactive_futures"]
    assert by_code(found, "incorrect_permissions").details["missing_permissions"] == ["spot_trade"]
    assert headline(found) is Status.INCORRECT_PERMISSIONS


def test_futures_are_not_judged_under_a_spot_profile() -> None:
    assert evaluate("trading", {*READS, P.SPOT_TRADE}, futures_active=False) == []


def test_market_making_needs_a_deposit_address_but_only_warns() -> None:
    granted = {*ALL_READS, P.SPOT_TRADE}
    assert evaluate("market-making", granted, deposit_addresses={"usdt": True}) == []
    assert evaluate("market-making", granted, deposit_addresses=None) == []  # unknown: no conclusion
    found = evaluate("market-making", granted, deposit_addresses={"BTC": True, "USDT": False}, exchange="okx")
    assert codes(found) == ["missing_deposit_address"]
    (f,) = found
    assert f.status is None and f.details["currency"] == "USDT" and "USDT" in f.message
    assert headline(found) is Status.CONNECTED


def test_unreadable_deposit_addresses_are_not_reported_missing() -> None:
    found = evaluate("market-making", {*READS, P.SPOT_TRADE}, deposit_addresses={})
    assert codes(found) == ["incorrect_permissions"]
    assert by_code(found, "incorrect_permissions").details["missing_permissions"] == ["deposit_address_read"]


def test_untradable_pairs_are_listed() -> None:
    grid = load_profiles({"grid": {"extends": "trading", "pairs": ["BTC/USDT", "ETH/USDT"]}})["grid"]
    granted = frozenset({*READS, P.SPOT_TRADE})
    ok = evaluate_permissions(
        grid, granted, exchange="bybit", tradable_pairs=frozenset({"btc/usdt", "eth/usdt"})
    )
    assert ok == []
    assert evaluate_permissions(grid, granted, exchange="bybit", tradable_pairs=None) == []
    found = evaluate_permissions(grid, granted, exchange="bybit", tradable_pairs=frozenset({"BTC/USDT"}))
    assert codes(found) == ["pair_not_tradable"]
    assert found[0].details["pairs"] == ["ETH/USDT"] and found[0].status is None
    assert "ETH/USDT" in found[0].message


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(BUILTIN_PROFILES)),
    granted=st.frozensets(st.sampled_from(list(Permission))),
    futures_active=st.sampled_from([None, True, False]),
)
def test_connected_exactly_when_required_met_and_nothing_forbidden(
    name: str, granted: frozenset[Permission], futures_active: bool | None
) -> None:
    profile = get_profile(name)
    found = evaluate_permissions(profile, granted, exchange="kucoin", futures_active=futures_active)
    futures_ok = not profile.needs_futures or futures_active is not False
    fine = profile.required <= granted and not granted & profile.forbidden and futures_ok
    assert (headline(found) is Status.CONNECTED) == fine
    assert all(f.message and f.remedy for f in found)
    missing = profile.required - granted - ({P.FUTURES_TRADE} if profile.needs_futures else set())
    listed = {p for f in found for p in f.details.get("missing_permissions", ())}
    assert listed == {p.value for p in missing}
