"""The vault's RewrapTargets over every ciphertext the store holds, and the store's rewrap run.

- `CredentialRewrapTarget`: each secret field of each credential version is one rewrap row, id
  "<row id>:<field>" (the ids in a rewrap report name the credential-version row and the field).
- `WebhookRewrapTarget`: a webhook's URL and its signing secret are two rewrap rows, ids
  "<webhook id>:url" and "<webhook id>:secret", sealed with the associated data the monitor
  uses (keysentry.monitor.delivery): tenant, webhook id as the connection, field `webhook_url`
  or `webhook_secret`.
- `StoreRewrapTargets(conn)`: both, by name ("credentials", "webhooks"): what `keysentry vault
  rewrap`, `vault status` and retiring a key version must look at.

`replace` is the compare-and-swap the vault requires:

    UPDATE credential_versions SET secret_ciphertext = :new, secret_key_version = :new_version
     WHERE id = :id AND secret_key_version = :old_version AND secret_ciphertext = :old_ciphertext

(and the same over `webhooks`, which also requires the row's tenant to be unchanged), so a row
deleted, re-registered or updated meanwhile keeps what was written, and counts as changed
meanwhile.

Writes are committed batch by batch (when the next batch is read, and at the end): a kill loses
at most the current batch, which the next run simply finds stale again. Reads run in their own
short transactions so SQLite never has to upgrade a read snapshot to a write.

The vault's rewrap is blocking code; `Database.run_sync` runs it on one connection with
SQLAlchemy's greenlet bridge, so it works the same over aiosqlite and asyncpg.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import Connection, and_, or_, select, update

from keysentry.store.credentials import FIELDS, SecretField, ad_field
from keysentry.store.models import Connection as ConnectionRow
from keysentry.store.models import CredentialVersion
from keysentry.store.monitoring import Webhook
from keysentry.vault import RewrapTarget, RowId, StaleRow, VaultUsageError

__all__ = ["WEBHOOK_AD_FIELDS", "CredentialRewrapTarget", "StoreRewrapTargets", "WebhookRewrapTarget"]

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


# -- webhooks -----------------------------------------------------------------------------------------

WebhookField = Literal["url", "secret"]
_WEBHOOK_FIELDS: tuple[WebhookField, ...] = ("url", "secret")
# The `field` of the associated data each webhook column is sealed with; keysentry.monitor.delivery's
# URL_FIELD and SECRET_FIELD (the monitor sits a floor above the store, so they are repeated here,
# and a test pins them equal).
WEBHOOK_AD_FIELDS: dict[WebhookField, str] = {"url": "webhook_url", "secret": "webhook_secret"}


def _webhook_columns(name: WebhookField) -> tuple[Any, Any]:
    return getattr(Webhook, f"{name}_ciphertext"), getattr(Webhook, f"{name}_key_version")


def _parse_webhook(row_id: RowId) -> tuple[str, int]:
    """(webhook id, field index) of a rewrap row id."""
    text = str(row_id)
    head, _, name = text.rpartition(":")
    if not head or name not in _WEBHOOK_FIELDS:
        raise VaultUsageError(f"not a rewrap row id of the webhook store: {text!r}")
    return (head, _WEBHOOK_FIELDS.index(name))


class WebhookRewrapTarget:
    """RewrapTarget over tenants' webhooks (URL and signing secret), on one synchronous connection
    that commits as it goes (batch by batch, like CredentialRewrapTarget)."""

    remedy = "their tenants must register those webhooks again"

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterable[StaleRow]:
        self._conn.commit()  # the previous batch's replacements are durable from here
        start = None if after is None else _parse_webhook(after)
        stale = or_(*(_webhook_columns(name)[1] < below_version for name in _WEBHOOK_FIELDS))
        query = (
            select(
                Webhook.id,
                Webhook.tenant_id,
                *(col for name in _WEBHOOK_FIELDS for col in _webhook_columns(name)),
            )
            .where(stale)
            .order_by(Webhook.id)
            .limit(batch + 1)  # the first row may be partly done already
        )
        if start is not None:
            query = query.where(Webhook.id >= start[0])
        rows = self._conn.execute(query).all()
        self._conn.commit()
        out: list[StaleRow] = []
        for row in rows:
            for index, name in enumerate(_WEBHOOK_FIELDS):
                # only the `after` row itself can be partly done; the database orders the others
                # (its collation, not Python's, decides what comes after a text id)
                if start is not None and row.id == start[0] and index <= start[1]:
                    continue
                key_version = getattr(row, f"{name}_key_version")
                if key_version >= below_version:
                    continue
                out.append(
                    StaleRow(
                        row_id=f"{row.id}:{name}",
                        tenant=row.tenant_id,
                        connection=row.id,
                        field=WEBHOOK_AD_FIELDS[name],
                        ciphertext=bytes(getattr(row, f"{name}_ciphertext")),
                        key_version=key_version,
                    )
                )
                if len(out) == batch:
                    return out
        return out

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        webhook_id, index = _parse_webhook(row.row_id)
        ciphertext_col, version_col = _webhook_columns(_WEBHOOK_FIELDS[index])
        result = self._conn.execute(
            update(Webhook)
            .where(
                and_(
                    Webhook.id == webhook_id,
                    Webhook.tenant_id == row.tenant,
                    version_col == row.key_version,
                    ciphertext_col == row.ciphertext,
                )
            )
            .values({ciphertext_col.key: new_ciphertext, version_col.key: new_version})
        )
        return int(result.rowcount or 0) == 1

    def finish(self) -> None:
        self._conn.commit()


# -- everything -----------------------------------------------------------------------------------------


class StoreRewrapTargets(dict[str, RewrapTarget]):
    """Every kind of ciphertext the store holds, by name, on one connection: pass it where the vault
    takes RewrapTargets (`rewrap`, `retire`, `rewrap_command`, `status_command`). Credentials come
    first, then webhooks; `report.parts` holds each one's counts."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(
            credentials=CredentialRewrapTarget(connection), webhooks=WebhookRewrapTarget(connection)
        )
        self._conn = connection

    def finish(self) -> None:
        self._conn.commit()
