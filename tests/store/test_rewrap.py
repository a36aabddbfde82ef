"""The store as the vault's rewrap target: credential versions and webhooks; paging,
compare-and-swap, resuming, retiring. Every test that takes `db` runs on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import delete, select, update

import canary
from keysentry.monitor import delivery
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import CredentialVersion
from keysentry.store.monitoring import Webhook
from keysentry.store.rewrap import (
    WEBHOOK_AD_FIELDS,
    CredentialRewrapTarget,
    StoreRewrapTargets,
    WebhookRewrapTarget,
)
from keysentry.vault import (
    RewrapReport,
    StaleRow,
    Vault,
    VaultUsageError,
    generate_master_key,
    retire,
    rewrap,
    status_command,
)
from store.backends import NOW, open_all, populate, run_rewrap


async def stale(db: Database, batch: int, below: int, after: Any = None) -> list[StaleRow]:
    return await db.run_sync(lambda c: list(CredentialRewrapTarget(c).iter_stale(batch, below, after)))


async def key_versions(db: Database) -> set[int]:
    async with db.session() as s:
        rows = (await s.execute(select(CredentialVersion))).scalars().all()
    return {
        v
        for r in rows
        for v in (r.api_key_key_version, r.secret_key_version, r.passphrase_key_version)
        if v is not None
    }


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
async def test_paging_visits_every_stale_field_once_in_order(db: Database, vault: Vault, batch: int) -> None:
    held = await populate(db, vault, 5)
    vault.rotate()
    seen: list[StaleRow] = []
    after: Any = None
    while rows := await stale(db, batch, vault.current_version, after):
        assert len(rows) <= batch
        seen.extend(rows)
        after = rows[-1].row_id
    fields = sum(3 if g.passphrase is not None else 2 for g in held.values())
    assert len(seen) == fields
    assert len({r.row_id for r in seen}) == fields
    assert all(r.key_version == 1 and r.tenant == "t1" for r in seen)
    assert {r.field.split("/")[0] for r in seen} == {"api_key", "secret", "passphrase"}


async def test_rewrap_moves_everything_and_a_second_run_does_nothing(db: Database, vault: Vault) -> None:
    held = await populate(db, vault, 12)
    vault.rotate()
    report = await run_rewrap(db, vault, batch=5)
    fields = sum(3 if g.passphrase is not None else 2 for g in held.values())
    assert (report.scanned, report.rewrapped, report.failed) == (fields, fields, 0)
    assert await key_versions(db) == {vault.current_version}
    assert await open_all(db, vault) == held
    again = await run_rewrap(db, vault)
    assert (again.scanned, again.rewrapped) == (0, 0)
    # nothing is left under version 1, so it may be retired, after which everything still opens
    assert await db.run_sync(lambda c: retire(vault, CredentialRewrapTarget(c))) == (1,)
    assert await open_all(db, vault) == held


async def test_replace_is_a_compare_and_swap(db: Database, vault: Vault) -> None:
    await populate(db, vault, 1)
    vault.rotate()
    row = (await stale(db, 1, vault.current_version))[0]
    sealed = vault.encrypt(
        vault.decrypt(
            row.ciphertext, tenant=row.tenant, connection=row.connection, field=row.field, key_version=1
        ),
        tenant=row.tenant,
        connection=row.connection,
        field=row.field,
    )

    def replace_twice(conn: SyncConnection) -> tuple[bool, bool]:
        target = CredentialRewrapTarget(conn)
        first = target.replace(row, sealed.ciphertext, sealed.key_version)
        second = target.replace(row, sealed.ciphertext, sealed.key_version)  # the row no longer holds `row`
        target.finish()
        return first, second

    assert await db.run_sync(replace_twice) == (True, False)


async def test_rows_destroyed_or_changed_meanwhile_are_left_alone(db: Database, vault: Vault) -> None:
    held = await populate(db, vault, 4)
    vault.rotate()
    async with db.session() as s, s.begin():
        await creds.destroy_all(s, "c000", NOW)
    rows = await stale(db, 100, vault.current_version)
    assert {r.connection for r in rows} == {"c001", "c002", "c003"}
    # a user re-encrypts c001's secret (new ciphertext, same version) after the rows were read
    async with db.session() as s, s.begin():
        cv = await creds.current(s, "c001")
        assert cv is not None
        cv.secret_ciphertext = vault.encrypt(
            held["c001"].secret, tenant="t1", connection="c001", field=creds.ad_field("secret", 1)
        ).ciphertext
        cv.secret_key_version = vault.current_version

    def finish_with_old_rows(conn: SyncConnection) -> list[bool]:
        target = CredentialRewrapTarget(conn)
        out = [target.replace(r, b"\x01new", vault.current_version) for r in rows if r.connection == "c001"]
        target.finish()
        return out

    assert sorted(await db.run_sync(finish_with_old_rows)) == [False, True]


async def test_undecryptable_rows_are_reported_by_id_and_left(db: Database, vault: Vault) -> None:
    await populate(db, vault, 3)
    async with db.session() as s, s.begin():
        await s.execute(
            update(CredentialVersion)
            .where(CredentialVersion.connection_id == "c002")
            .values(secret_ciphertext=b"\x01\x00\x00\x00\x01" + b"\x00" * 40)
        )
        cv_id = (
            await s.execute(select(CredentialVersion.id).where(CredentialVersion.connection_id == "c002"))
        ).scalar_one()
    vault.rotate()
    report = await run_rewrap(db, vault)
    assert report.failed == 1
    assert report.failed_rows == [f"{cv_id}:secret"]
    assert f"{cv_id}:secret" in report.summary()
    again = await run_rewrap(db, vault)  # the broken row stays stale but cannot loop
    assert (again.scanned, again.failed) == (1, 1)


async def test_a_row_id_from_elsewhere_is_refused(db: Database) -> None:
    with pytest.raises(VaultUsageError):
        await stale(db, 1, 2, after="17:password")


# -- webhooks -----------------------------------------------------------------------------------------

# One canary token, in the URL of every registered webhook: a URL leaked into a log or a report fails.
_URL_TAIL = secrets.token_hex(10)
URL_TOKEN = canary.register(f"CANARY{_URL_TAIL}", "webhook-url-token", _URL_TAIL).value


@dataclass(frozen=True)
class Hook:
    """A webhook as registered: what its URL and secret must keep opening to."""

    id: str
    tenant: str
    url: str
    secret: str


async def register_webhooks(db: Database, vault: Vault, per_tenant: dict[str, int]) -> dict[str, Hook]:
    """Webhooks registered the way the API does it (keysentry.monitor.delivery.create_webhook)."""
    async with db.session() as s, s.begin():
        for tenant in per_tenant:
            await repo.ensure_tenant(s, tenant, NOW)
    hooks: dict[str, Hook] = {}
    for tenant, n in per_tenant.items():
        for i in range(n):
            url = f"https://hooks.example.com/{tenant}/{i}/{URL_TOKEN}"
            view, secret = await delivery.create_webhook(
                db, vault, tenant_id=tenant, url=url, event_types=None, actor="test", now=NOW
            )
            hooks[view.id] = Hook(view.id, tenant, url, secret.reveal())
    return hooks


async def webhook_rows(db: Database) -> list[Webhook]:
    async with db.session() as s:
        return list((await s.execute(select(Webhook).order_by(Webhook.id))).scalars())


async def open_webhooks(db: Database, vault: Vault) -> dict[str, Hook]:
    """Every stored webhook, opened with the associated data the monitor uses (its field names)."""
    out: dict[str, Hook] = {}
    for row in await webhook_rows(db):

        def open_(field: str, ciphertext: bytes, version: int, row: Webhook = row) -> str:
            return vault.decrypt(
                ciphertext, tenant=row.tenant_id, connection=row.id, field=field, key_version=version
            ).reveal()

        out[row.id] = Hook(
            row.id,
            row.tenant_id,
            open_(delivery.URL_FIELD, row.url_ciphertext, row.url_key_version),
            open_(delivery.SECRET_FIELD, row.secret_ciphertext, row.secret_key_version),
        )
    return out


async def webhook_versions(db: Database) -> set[int]:
    return {v for r in await webhook_rows(db) for v in (r.url_key_version, r.secret_key_version)}


async def webhook_stale(db: Database, batch: int, below: int, after: Any = None) -> list[StaleRow]:
    return await db.run_sync(lambda c: list(WebhookRewrapTarget(c).iter_stale(batch, below, after)))


async def rewrap_store(db: Database, vault: Vault, batch: int = 500) -> RewrapReport:
    def go(conn: SyncConnection) -> RewrapReport:
        targets = StoreRewrapTargets(conn)
        report = rewrap(vault, targets, batch=batch)
        targets.finish()
        return report

    return await db.run_sync(go)


def test_webhook_fields_are_the_ones_the_monitor_seals_with() -> None:
    assert WEBHOOK_AD_FIELDS == {"url": delivery.URL_FIELD, "secret": delivery.SECRET_FIELD}


@pytest.mark.parametrize("batch", [1, 2, 3])
async def test_webhook_paging_visits_url_and_secret_of_every_webhook_once(
    db: Database, vault: Vault, batch: int
) -> None:
    hooks = await register_webhooks(db, vault, {"t1": 3, "t2": 2})
    vault.rotate()
    seen: list[StaleRow] = []
    after: Any = None
    while rows := await webhook_stale(db, batch, vault.current_version, after):
        assert len(rows) <= batch
        seen.extend(rows)
        after = rows[-1].row_id
    assert [r.row_id for r in seen] == [f"{h}:{f}" for h in sorted(hooks) for f in ("url", "secret")]
    assert all(r.key_version == 1 and r.tenant == hooks[r.connection].tenant for r in seen)
    assert {r.field for r in seen} == {delivery.URL_FIELD, delivery.SECRET_FIELD}


async def test_store_rewrap_moves_credentials_and_webhooks_and_a_second_run_does_nothing(
    db: Database, vault: Vault
) -> None:
    held = await populate(db, vault, 5)
    hooks = await register_webhooks(db, vault, {"t1": 4, "t2": 3})
    vault.rotate()
    report = await rewrap_store(db, vault, batch=3)
    fields = sum(3 if g.passphrase is not None else 2 for g in held.values())
    assert (report.scanned, report.rewrapped, report.failed) == (fields + 14, fields + 14, 0)
    assert set(report.parts) == {"credentials", "webhooks"}
    assert (report.parts["credentials"].scanned, report.parts["credentials"].rewrapped) == (fields, fields)
    assert (report.parts["webhooks"].scanned, report.parts["webhooks"].rewrapped) == (14, 14)
    assert f"credentials: {fields} of {fields}, webhooks: 14 of 14" in report.summary()
    # nothing is left on version 1, and everything opens under version 2, also through the monitor
    assert await webhook_versions(db) == {2} and await key_versions(db) == {2}
    assert await open_webhooks(db, vault) == hooks
    assert await open_all(db, vault) == held
    listed = await delivery.list_webhooks(db, vault, "t2")
    assert sorted(v.url for v in listed) == sorted(h.url for h in hooks.values() if h.tenant == "t2")

    again = await rewrap_store(db, vault)
    assert (again.scanned, again.rewrapped) == (0, 0)
    assert {n: p.scanned for n, p in again.parts.items()} == {"credentials": 0, "webhooks": 0}
    assert await db.run_sync(lambda c: retire(vault, StoreRewrapTargets(c))) == (1,)
    assert vault.versions == (2,)
    assert await open_webhooks(db, vault) == hooks


async def test_retiring_waits_for_the_webhooks(db: Database, tmp_path: Path) -> None:
    master = generate_master_key()
    vault = Vault.open(tmp_path / "vault", master_key=master)
    await populate(db, vault, 2)
    hooks = await register_webhooks(db, vault, {"t1": 2})
    vault.rotate()
    credentials_only = await run_rewrap(db, vault)
    assert credentials_only.ok and await key_versions(db) == {2}
    # the webhooks are still on version 1: nothing may be retired, and status says what is left
    assert await db.run_sync(lambda c: retire(vault, StoreRewrapTargets(c))) == ()
    assert vault.versions == (1, 2)
    status = await db.run_sync(
        lambda c: status_command(tmp_path / "vault", master_key=master, target=StoreRewrapTargets(c))
    )
    assert "some secrets (webhooks) still use older versions: run `keysentry vault rewrap`" in status
    report = await rewrap_store(db, vault)
    assert (report.parts["credentials"].scanned, report.parts["webhooks"].rewrapped) == (0, 4)
    assert await db.run_sync(lambda c: retire(vault, StoreRewrapTargets(c))) == (1,)
    assert await open_webhooks(db, vault) == hooks
    status = await db.run_sync(
        lambda c: status_command(tmp_path / "vault", master_key=master, target=StoreRewrapTargets(c))
    )
    assert "still use older versions" not in status


async def test_webhooks_deleted_or_registered_again_meanwhile_are_not_clobbered(
    db: Database, vault: Vault
) -> None:
    hooks = await register_webhooks(db, vault, {"t1": 3})
    first, second, third = sorted(hooks)
    vault.rotate()
    rows = await webhook_stale(db, 100, vault.current_version)
    assert len(rows) == 6
    # after the rows were read: the tenant deletes the first webhook, and the second is registered
    # again under the same id (new URL, new secret, sealed by a process on the new version)
    await delivery.delete_webhook(db, "t1", first, actor="test", now=NOW)
    new_url = f"https://hooks.example.com/moved/{URL_TOKEN}"
    async with db.session() as s, s.begin():
        row = await s.get(Webhook, second)
        assert row is not None
        for name, value in (("url", new_url), ("secret", "whsec_registered_again")):
            sealed = vault.encrypt(value, tenant="t1", connection=second, field=WEBHOOK_AD_FIELDS[name])
            setattr(row, f"{name}_ciphertext", sealed.ciphertext)
            setattr(row, f"{name}_key_version", sealed.key_version)

    def replace_all(conn: SyncConnection) -> dict[Any, bool]:
        target = WebhookRewrapTarget(conn)
        out = {}
        for r in rows:
            opened = vault.decrypt(
                r.ciphertext, tenant=r.tenant, connection=r.connection, field=r.field, key_version=1
            )
            sealed = vault.encrypt(opened, tenant=r.tenant, connection=r.connection, field=r.field)
            out[r.row_id] = target.replace(r, sealed.ciphertext, sealed.key_version)
        target.finish()
        return out

    done = await db.run_sync(replace_all)
    assert done == {
        f"{first}:url": False,
        f"{first}:secret": False,
        f"{second}:url": False,
        f"{second}:secret": False,
        f"{third}:url": True,
        f"{third}:secret": True,
    }
    opened = await open_webhooks(db, vault)
    assert set(opened) == {second, third}  # the deleted one stays deleted
    assert (opened[second].url, opened[second].secret) == (new_url, "whsec_registered_again")
    assert opened[third] == hooks[third]


async def test_a_webhook_deleted_during_a_run_counts_as_changed_meanwhile(db: Database, vault: Vault) -> None:
    hooks = await register_webhooks(db, vault, {"t1": 3})
    victim = sorted(hooks)[1]
    vault.rotate()

    def go(conn: SyncConnection) -> RewrapReport:
        targets = StoreRewrapTargets(conn)
        webhooks = targets["webhooks"]
        original = webhooks.replace

        def racing_replace(row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
            if row.row_id == f"{victim}:url":  # the tenant deletes it between our read and our write
                conn.execute(delete(Webhook).where(Webhook.id == victim))
            return original(row, new_ciphertext, new_version)

        webhooks.replace = racing_replace  # type: ignore[method-assign]
        report = rewrap(vault, targets, batch=10)
        targets.finish()
        return report

    report = await db.run_sync(go)
    part = report.parts["webhooks"]
    assert (part.scanned, part.rewrapped, part.changed_meanwhile, report.ok) == (6, 4, 2, True)
    opened = await open_webhooks(db, vault)
    assert opened == {k: v for k, v in hooks.items() if k != victim}
    assert await webhook_versions(db) == {2}


async def test_an_undecryptable_webhook_is_reported_by_id_and_blocks_retiring(
    db: Database, vault: Vault
) -> None:
    hooks = await register_webhooks(db, vault, {"t1": 2})
    broken = sorted(hooks)[0]
    async with db.session() as s, s.begin():
        await s.execute(  # a ciphertext moved from the other webhook: its associated data differs
            update(Webhook)
            .where(Webhook.id == broken)
            .values(
                secret_ciphertext=select(Webhook.secret_ciphertext)
                .where(Webhook.id == sorted(hooks)[1])
                .scalar_subquery()
            )
        )
    vault.rotate()
    report = await rewrap_store(db, vault)
    assert (report.failed, report.failed_rows, report.ok) == (1, [f"{broken}:secret"], False)
    assert report.parts["webhooks"].rewrapped == 3
    assert f"webhooks: rows {broken}:secret, their tenants must register those webhooks again" in (
        report.summary()
    )
    assert await db.run_sync(lambda c: retire(vault, StoreRewrapTargets(c))) == ()
    again = await rewrap_store(db, vault)  # the broken row stays stale but cannot loop
    assert (again.scanned, again.failed) == (1, 1)


async def test_a_webhook_row_id_from_elsewhere_is_refused(db: Database) -> None:
    for bad in ("whk_1:passphrase", ":url", "whk_1", 17):
        with pytest.raises(VaultUsageError):
            await webhook_stale(db, 1, 2, after=bad)
