"""Unified permissions: every exchange's native permission vocabulary maps onto these."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    BALANCE_READ = "balance_read"
    TRADE_HISTORY_READ = "trade_history_read"
    DEPOSIT_ADDRESS_READ = "deposit_address_read"
    SPOT_TRADE = "spot_trade"
    MARGIN_TRADE = "margin_trade"
    FUTURES_TRADE = "futures_trade"
    OPTIONS_TRADE = "options_trade"
    WITHDRAW = "withdraw"
    TRANSFER = "transfer"


READ_PERMISSIONS: frozenset[Permission] = frozenset(
    {Permission.BALANCE_READ, Permission.TRADE_HISTORY_READ, Permission.DEPOSIT_ADDRESS_READ}
)
# Permissions that can move funds off the account: a leaked key with these can drain it.
FUNDS_OUT_PERMISSIONS: frozenset[Permission] = frozenset({Permission.WITHDRAW, Permission.TRANSFER})
