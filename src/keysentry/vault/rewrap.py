"""Rewrap: move every stored secret to the newest key version, resumably and idempotently.

The vault does not know the database. A `RewrapTarget` (the store implements it) lists
rows whose key version is older than a given one, in a stable order, and replaces one
row's (ciphertext, key_version) with a compare-and-swap. So:

- each row changes in one atomic step, or not at all (a crash leaves it old or new, never mixed);
- a row that someone re-encrypted meanwhile (the user updated the key) is left alone;
- running again after an interruption simply finds fewer stale rows; running after
  completion finds none and changes nothing.

    UPDATE secret SET ciphertext = :new, key_version = :new_version
     WHERE id = :id AND key_version = :old_version AND ciphertext = :old_ciphertext
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from keysentry.vault.errors import DecryptionFailed, VaultUsageError
from keysentry.vault.vault import Vault

log = logging.getLogger("keysentry.vault")

RowId = int | str
DEFAULT_BATCH = 500
_MAX_LISTED_FAILURES = 100


@dataclass(frozen=True, slots=True)
class StaleRow:
    """One stored secret field as the target reads it."""

    row_id: RowId
    tenant: str
    connection: str
    field: str
    ciphertext: bytes
    key_version: int

    def __repr__(self) -> str:
        return (
            f"StaleRow(row_id={self.row_id!r}, tenant={self.tenant!r}, connection={self.connection!r}, "
            f"field={self.field!r}, key_version={self.key_version}, ciphertext=<{len(self.ciphertext)} bytes>)"
        )


class RewrapTarget(Protocol):
    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterable[StaleRow]:
        """Up to `batch` rows with key_version < below_version and row_id > after, ordered by row_id."""
        ...

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        """Atomically set (ciphertext, key_version) if the row still holds `row`'s; False if it changed."""
        ...


@dataclass(slots=True)
class RewrapReport:
    target_version: int
    scanned: int = 0
    rewrapped: int = 0
    changed_meanwhile: int = 0  # compare-and-swap lost: someone wrote the row during the run
    failed: int = 0  # rows that do not decrypt (their secrets are lost either way)
    failed_rows: list[RowId] = field(default_factory=list)  # the first few, for the operator
    retired_versions: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def summary(self) -> str:
        parts = [
            f"moved {self.rewrapped} of {self.scanned} older secrets to key version {self.target_version}"
        ]
        if self.changed_meanwhile:
            parts.append(
                f"{self.changed_meanwhile} were changed by someone else meanwhile and left as they are"
            )
        if self.failed:
            listed = ", ".join(str(r) for r in self.failed_rows)
            more = (
                ""
                if self.failed <= len(self.failed_rows)
                else f" and {self.failed - len(self.failed_rows)} more"
            )
            parts.append(
                f"{self.failed} do not decrypt and were left untouched (rows {listed}{more}); "
                "their users must enter those credentials again"
            )
        if self.retired_versions:
            parts.append(f"retired key versions {', '.join(map(str, self.retired_versions))}")
        return "; ".join(parts)


def rewrap(
    vault: Vault,
    target: RewrapTarget,
    *,
    batch: int = DEFAULT_BATCH,
    on_batch: Callable[[RewrapReport], None] | None = None,
) -> RewrapReport:
    """Re-encrypt every row older than the newest key version. Exceptions from the target propagate;
    rows done before them stay done, and the next run continues with the rest."""
    if batch < 1:
        raise VaultUsageError("batch must be at least 1")
    vault.refresh()  # rotate may have run in another process a moment ago
    report = RewrapReport(target_version=vault.current_version)
    after: RowId | None = None
    while True:
        rows = list(target.iter_stale(batch, report.target_version, after))
        if not rows:
            break
        if after is not None and rows[-1].row_id == after:
            raise VaultUsageError("the rewrap target ignored `after` and returned the same rows again")
        for row in rows:
            _rewrap_row(vault, target, row, report)
        after = rows[-1].row_id
        if on_batch is not None:
            on_batch(report)
    log.info("rewrap: %s", report.summary())
    return report


def _rewrap_row(vault: Vault, target: RewrapTarget, row: StaleRow, report: RewrapReport) -> None:
    report.scanned += 1
    if row.key_version >= report.target_version:
        report.changed_meanwhile += 1
        return
    try:
        secret = vault.decrypt(
            row.ciphertext,
            tenant=row.tenant,
            connection=row.connection,
            field=row.field,
            key_version=row.key_version,
        )
    except DecryptionFailed:
        report.failed += 1
        if len(report.failed_rows) < _MAX_LISTED_FAILURES:
            report.failed_rows.append(row.row_id)
        log.warning("rewrap: row %r (field %r) does not decrypt; left untouched", row.row_id, row.field)
        return
    sealed = vault.encrypt(secret, tenant=row.tenant, connection=row.connection, field=row.field)
    if target.replace(row, sealed.ciphertext, sealed.key_version):
        report.rewrapped += 1
    else:
        report.changed_meanwhile += 1


def has_stale(target: RewrapTarget, below_version: int) -> bool:
    return any(True for _ in target.iter_stale(1, below_version, None))


def retire(vault: Vault, target: RewrapTarget) -> tuple[int, ...]:
    """Drop key versions older than the primary, but only when the target holds no row under them."""
    vault.refresh()
    version = vault.current_version
    if has_stale(target, version):
        return ()
    return vault.retire_versions_below(version)
