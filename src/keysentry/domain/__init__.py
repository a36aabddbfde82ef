"""The vocabulary every layer speaks: statuses, severities, permissions, findings, diagnoses.

This package imports nothing else of keysentry; everything else imports it.
"""

from keysentry.domain.diagnosis import Diagnosis
from keysentry.domain.findings import Finding
from keysentry.domain.permissions import Permission
from keysentry.domain.status import (
    EXIT_CODES,
    PRECEDENCE,
    Severity,
    Status,
    exit_code_for,
    headline_status,
    severity_of,
)

__all__ = [
    "EXIT_CODES",
    "PRECEDENCE",
    "Diagnosis",
    "Finding",
    "Permission",
    "Severity",
    "Status",
    "exit_code_for",
    "headline_status",
    "severity_of",
]
