"""The vault's RewrapTarget over the credential-versions table, and the store's rewrap run.

Each secret field of each credential version is one rewrap row, id "<row id>:<field>" (the
ids in a rewrap report name the credential-version row and the field). `replace` is the
compare-and-swap the vault requires:

    UPDATE credential_versions SET secret_ciphertext = :new, secret_key_version = :new_version
     WHERE id = :id AND secret_key_version = :old_version AND secret_ciphertext = :old_ciphertext

Writes are committed batch by batch (when the next batch is read, and at the end): a kill loses
at most the current batch, which the next run simply finds stale again. Reads run in their own
short transactions so SQLite never has to upgrade a read snapshot to a write.

The vault's rewrap is blocking code; `Database.run_sync` runs it on one connection with
SQLAlchemy's greenlet bridge, so it works the same over aiosqlite and asyncpg.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from keysentry.store.credentials import FIELDS, SecretField, ad_field
from keysentry.store.models import Connection as ConnectionRow
from keysentry.store.models import CredentialVersion
from keysentry.vault import RowId, StaleRow, VaultUsageError

_CV = CredentialVersion


def _row_id(cv_id: int, name: SecretField) -> str:
    return f"{cv_id}:{name}"


def _parse(row_id: RowId | None) -> tuple[int, int]:
    """(credential-version id, field index) of a rewrap row id; (-1, -1) before the first."""
    if row_id is None:
        return (-1, -1)
    text = str(row_id)
    head, _, name = text.partition(":")
    if not head.isdigit() or name not in FIELDS:
        raise VaultUsageError(f"not a rewrap row id of the credential store: {text!r}")
    return (int(head), FIELDS.index(name))


def _columns(name: SecretField) -> tuple[Any, Any]:
    return getattr(_CV, f"{name}_ciphertext"), getattr(_CV, f"{name}_key_version")


class CredentialRewrapTarget:
    """RewrapTarget over credential versions, on one synchronous connection that commits as it goes."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterable[StaleRow]:
        self._conn.commit()  # the previous batch's replacements are durable from here
        after_id, after_field = _parse(after)
        stale = or_(*(_columns(name)[1] < below_version for name in FIELDS))
        query = (
            select(
                _CV.id,
                _CV.connection_id,
                _CV.version,
                ConnectionRow.tenant_id,
                *(col for name in FIELDS for col in _columns(name)),
            )
            .join(ConnectionRow, ConnectionRow.id == _CV.connection_id)
            .where(_CV.id >= after_id, _CV.destroyed_at.is_(None), stale)
            .order_by(_CV.id)
            .limit(batch + 1)  # the first row may be partly done already
        )
        rows = self._conn.execute(query).all()
        self._conn.commit()
        out: list[StaleRow] = []
        for row in rows:
            for index, name in enumerate(FIELDS):
                if (row.id, index) <= (after_id, after_field):
                    continue
                ciphertext = getattr(row, f"{name}_ciphertext")
                key_version = getattr(row, f"{name}_key_version")
                if ciphertext is None or key_version is None or key_version >= below_version:
                    continue
                out.append(
                    StaleRow(
                        row_id=_row_id(row.id, name),
                        tenant=row.tenant_id,
                        connection=row.connection_id,
                        field=ad_field(name, row.version),
                        ciphertext=bytes(ciphertext),
                        key_version=key_version,
                    )
                )
                if len(out) == batch:
                    return out
        return out

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        cv_id, index = _parse(row.row_id)
        ciphertext_col, version_col = _columns(FIELDS[index])
        result = self._conn.execute(
            update(_CV)
            .where(
                and_(
                    _CV.id == cv_id,
                    version_col == row.key_version,
                    ciphertext_col == row.ciphertext,
                    _CV.destroyed_at.is_(None),
                )
            )
            .values({ciphertext_col.key: new_ciphertext, version_col.key: new_version})
        )
        return int(result.rowcount or 0) == 1

    def finish(self) -> None:
        self._conn.commit()
