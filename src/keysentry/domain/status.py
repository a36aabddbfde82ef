"""The status contract (public API: names, severities, precedence and exit codes are kept stable)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    OK = "ok"
    UNKNOWN = "unknown"


class Status(StrEnum):
    # Order of declaration is the precedence: the first one present wins the headline.
    INVALID_KEY = "invalid_key"
    SECRET_MISMATCH = "secret_mismatch"
    PASSPHRASE_INVALID = "passphrase_invalid"
    CLOCK_SKEW = "clock_skew"
    IP_NOT_ALLOWED = "ip_not_allowed"
    EXPIRED = "expired"
    ACCOUNT_RESTRICTED = "account_restricted"
    ALREADY_CONNECTED = "already_connected"
    WITHDRAWAL_ENABLED = "withdrawal_enabled"
    INCORRECT_PERMISSIONS = "incorrect_permissions"
    INACTIVE_FUTURES = "inactive_futures"
    TEMPORARY_ISSUE = "temporary_issue"
    EXPIRES_SOON = "expires_soon"
    CONNECTED = "connected"
    UNCHECKED = "unchecked"


PRECEDENCE: tuple[Status, ...] = tuple(Status)

_SEVERITY: dict[Status, Severity] = {
    **{s: Severity.ERROR for s in PRECEDENCE[: PRECEDENCE.index(Status.INACTIVE_FUTURES) + 1]},
    Status.TEMPORARY_ISSUE: Severity.WARNING,
    Status.EXPIRES_SOON: Severity.WARNING,
    Status.CONNECTED: Severity.OK,
    Status.UNCHECKED: Severity.UNKNOWN,
}

# Monitoring-plugin convention (Nagios): 0 ok, 1 warning, 2 error/critical, 3 unknown.
EXIT_CODES: dict[Severity, int] = {
    Severity.OK: 0,
    Severity.WARNING: 1,
    Severity.ERROR: 2,
    Severity.UNKNOWN: 3,
}


def severity_of(status: Status) -> Severity:
    return _SEVERITY[status]


def exit_code_for(status: Status) -> int:
    return EXIT_CODES[severity_of(status)]


_RANK: dict[Status, int] = {status: rank for rank, status in enumerate(PRECEDENCE)}


def headline_status(statuses: Iterable[Status | None]) -> Status:
    """The most severe status present by contract precedence; `connected` when none is."""
    best = len(PRECEDENCE)
    for status in statuses:
        if status is not None:
            best = min(best, _RANK.get(status, best))
    return PRECEDENCE[best] if best < len(PRECEDENCE) else Status.CONNECTED
