"""The credential store as the vault's rewrap target: paging, compare-and-swap, resuming."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import select, update

from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import CredentialVersion
from keysentry.store.rewrap import CredentialRewrapTarget
from keysentry.vault import StaleRow, Vault, VaultUsageError, retire
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
