"""A finding: one fact about a key, with a stable code, the user's message and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keysentry.domain.status import Severity, Status


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation about a key.

    `code` is stable public API (documented in docs/statuses.md). `status` is the contract
    status this finding stands for when it is the most severe one; findings that never
    become the headline (cleaned input, no IP restriction, broad permissions...) leave it None.
    `details` holds structured facts (missing permissions, measured clock offset, candidate
    causes...) and must never hold a secret.
    """

    code: str
    severity: Severity
    message: str
    remedy: tuple[str, ...] = ()
    status: Status | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "remedy": list(self.remedy),
        }
        if self.status is not None:
            out["status"] = self.status.value
        if self.details:
            out["details"] = dict(self.details)
        return out
