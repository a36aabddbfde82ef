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

A store with several kinds of ciphertext (credential fields, webhook URLs and secrets) passes
a mapping of named targets: `rewrap` moves them one after the other to the same key version and
reports each one's counts in `report.parts`; `retire` and `has_stale` look at all of them.
A target may carry a `remedy` attribute: the sentence telling the operator what to do about
its rows that do not decrypt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from keysentry.vault.errors import DecryptionFailed, VaultUsageError
from keysentry.vault.vault import Vault

log = logging.getLogger("keysentry.vault")

RowId = int | str
DEFAULT_BATCH = 500
_MAX_LISTED_FAILURES = 100
_DEFAULT_REMEDY = "their users must enter those credentials again"


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


# One target, or several by name ("credentials", "webhooks"): what rewrap, retire and has_stale take.
RewrapTargets: TypeAlias = RewrapTarget | Mapping[str, RewrapTarget]
_Outcome = Literal["rewrapped", "changed_meanwhile", "failed"]


def _named(targets: RewrapTargets) -> dict[str, RewrapTarget]:
    if isinstance(targets, Mapping):
        return dict(targets)
    return {"": targets}


@dataclass(slots=True)
class RewrapReport:
    target_version: int
    scanned: int = 0
    rewrapped: int = 0
    changed_meanwhile: int = 0  # compare-and-swap lost: someone wrote the row during the run
    failed: int = 0  # rows that do not decrypt (their secrets are lost either way)
    failed_rows: list[RowId] = field(default_factory=list)  # the first few, for the operator
    retired_versions: tuple[int, ...] = ()
    # With several named targets: each one's counts (the fields above are their totals).
    parts: dict[str, RewrapReport] = field(default_factory=dict)
    remedy: str = _DEFAULT_REMEDY  # what to do about rows that do not decrypt

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def _count(self, outcome: _Outcome, row_id: RowId) -> None:
        if outcome == "rewrapped":
            self.rewrapped += 1
        elif outcome == "changed_meanwhile":
            self.changed_meanwhile += 1
        else:
            self.failed += 1
            if len(self.failed_rows) < _MAX_LISTED_FAILURES:
                self.failed_rows.append(row_id)

    def summary(self) -> str:
        moved = f"moved {self.rewrapped} of {self.scanned} older secrets to key version {self.target_version}"
        if self.parts:
            moved += (
                " (" + ", ".join(f"{n}: {p.rewrapped} of {p.scanned}" for n, p in self.parts.items()) + ")"
            )
        parts = [moved]
        if self.changed_meanwhile:
            parts.append(
                f"{self.changed_meanwhile} were changed by someone else meanwhile and left as they are"
            )
        if self.failed and self.parts:
            broken = [(n, p) for n, p in self.parts.items() if p.failed]
            parts.append(
                f"{self.failed} do not decrypt and were left untouched ("
                + "; ".join(f"{n}: {p._failures()}, {p.remedy}" for n, p in broken)
                + ")"
            )
        elif self.failed:
            parts.append(
                f"{self.failed} do not decrypt and were left untouched ({self._failures()}); {self.remedy}"
            )
        if self.retired_versions:
            parts.append(f"retired key versions {', '.join(map(str, self.retired_versions))}")
        return "; ".join(parts)

    def _failures(self) -> str:
        listed = ", ".join(str(r) for r in self.failed_rows)
        more = (
            "" if self.failed <= len(self.failed_rows) else f" and {self.failed - len(self.failed_rows)} more"
        )
        return f"rows {listed}{more}"


def rewrap(
    vault: Vault,
    target: RewrapTargets,
    *,
    batch: int = DEFAULT_BATCH,
    on_batch: Callable[[RewrapReport], None] | None = None,
) -> RewrapReport:
    """Re-encrypt every row older than the newest key version. Exceptions from the target propagate;
    rows done before them stay done, and the next run continues with the rest.

    With a mapping of named targets, each is run in turn (in the mapping's order) to one and the
    same key version; `report.parts[name]` holds each one's counts, the report itself the totals,
    and `on_batch` gets the totals."""
    if batch < 1:
        raise VaultUsageError("batch must be at least 1")
    vault.refresh()  # rotate may have run in another process a moment ago
    report = RewrapReport(target_version=vault.current_version)
    if isinstance(target, Mapping):
        for name, one in target.items():
            part = RewrapReport(target_version=report.target_version, remedy=_remedy(one))
            report.parts[name] = part
            _run(vault, one, batch, (part, report), on_batch)
    else:
        report.remedy = _remedy(target)
        _run(vault, target, batch, (report,), on_batch)
    log.info("rewrap: %s", report.summary())
    return report


def _remedy(target: RewrapTarget) -> str:
    remedy = getattr(target, "remedy", None)
    return remedy if isinstance(remedy, str) and remedy else _DEFAULT_REMEDY


def _run(
    vault: Vault,
    target: RewrapTarget,
    batch: int,
    reports: tuple[RewrapReport, ...],
    on_batch: Callable[[RewrapReport], None] | None,
) -> None:
    """Rewrap one target; every report in `reports` counts its rows (the last one gets `on_batch`)."""
    version = reports[-1].target_version
    after: RowId | None = None
    while True:
        rows = list(target.iter_stale(batch, version, after))
        if not rows:
            break
        if after is not None and rows[-1].row_id == after:
            raise VaultUsageError("the rewrap target ignored `after` and returned the same rows again")
        for row in rows:
            outcome = _rewrap_row(vault, target, row, version)
            for report in reports:
                report.scanned += 1
                report._count(outcome, row.row_id)
        after = rows[-1].row_id
        if on_batch is not None:
            on_batch(reports[-1])


def _rewrap_row(vault: Vault, target: RewrapTarget, row: StaleRow, version: int) -> _Outcome:
    if row.key_version >= version:
        return "changed_meanwhile"
    try:
        secret = vault.decrypt(
            row.ciphertext,
            tenant=row.tenant,
            connection=row.connection,
            field=row.field,
            key_version=row.key_version,
        )
    except DecryptionFailed:
        log.warning("rewrap: row %r (field %r) does not decrypt; left untouched", row.row_id, row.field)
        return "failed"
    sealed = vault.encrypt(secret, tenant=row.tenant, connection=row.connection, field=row.field)
    if target.replace(row, sealed.ciphertext, sealed.key_version):
        return "rewrapped"
    return "changed_meanwhile"


def stale_targets(target: RewrapTargets, below_version: int) -> list[str]:
    """The names of the targets holding a row older than `below_version` ("" for a single target)."""
    return [
        name
        for name, one in _named(target).items()
        if any(True for _ in one.iter_stale(1, below_version, None))
    ]


def has_stale(target: RewrapTargets, below_version: int) -> bool:
    return bool(stale_targets(target, below_version))


def retire(vault: Vault, target: RewrapTargets) -> tuple[int, ...]:
    """Drop key versions older than the primary, but only when no target (with a mapping: none of
    them) holds a row under them."""
    vault.refresh()
    version = vault.current_version
    if has_stale(target, version):
        return ()
    return vault.retire_versions_below(version)
