"""The schema's guarantees and the repositories' rules, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

import canary
from keysentry.domain import Permission, Status
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.store import audit
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import Connection, CredentialVersion
from keysentry.vault import DecryptionFailed, Vault
from store.backends import NOW, diagnosis
from store.backends import make_connection as connection


async def add(db: Database, *rows: Connection) -> None:
    async with db.session() as s, s.begin():
        for tenant in {r.tenant_id for r in rows}:
            await repo.ensure_tenant(s, tenant, NOW)
        s.add_all(rows)


async def test_one_live_connection_per_tenant_and_account(db: Database) -> None:
    await add(db, connection("c1"))
    with pytest.raises(IntegrityError):
        await add(db, connection("c2", key_hash="other"))
    # another tenant may connect the same account; a connection without a known account never collides
    await add(
        db, connection("c3", tenant="t2"), connection("c4", account=None), connection("c5", account=None)
    )
    # once removed, the account may be connected again
    async with db.session() as s, s.begin():
        row = await repo.get_live(s, "t1", "c1")
        assert row is not None
        row.removed_at = NOW
    await add(db, connection("c6", key_hash="hash-c1"))


async def test_one_live_connection_per_tenant_and_api_key_hash(db: Database) -> None:
    await add(db, connection("c1", key_hash="same"))
    with pytest.raises(IntegrityError):
        await add(db, connection("c2", account="A2", key_hash="same"))


async def test_other_tenants_connections_are_invisible(db: Database) -> None:
    await add(db, connection("c1", tenant="t1"), connection("c2", tenant="t2", account="A2"))
    async with db.session() as s:
        assert await repo.get_live(s, "t2", "c1") is None
        assert [r.id for r in await repo.list_live(s, "t1")] == ["c1"]
        assert await repo.find_by_account(s, "t2", "bybit", "A1") is None
        assert await repo.find_by_key_hash(s, "t2", "hash-c1") is None


async def test_timestamps_come_back_aware_utc_whatever_zone_went_in(db: Database) -> None:
    row = connection("c1")
    row.expires_at = datetime(2026, 3, 2, 15, 30, tzinfo=timezone(timedelta(hours=3)))
    await add(db, row)
    async with db.session() as s:
        got = await repo.get_live(s, "t1", "c1")
    assert got is not None and got.expires_at is not None
    assert got.expires_at.tzinfo is not None
    assert got.expires_at == datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    assert got.created_at == NOW


async def test_naive_timestamps_are_refused(db: Database) -> None:
    row = connection("c1")
    row.created_at = datetime(2026, 1, 1)
    with pytest.raises(Exception, match="naive datetime"):
        await add(db, row)


async def test_due_lists_live_connections_whose_check_is_due_oldest_first(db: Database) -> None:
    rows = [connection(f"c{i}", account=f"A{i}") for i in range(4)]
    for i, row in enumerate(rows):
        row.next_check_at = NOW + timedelta(minutes=10 * i - 15)
    rows[0].removed_at = NOW
    await add(db, *rows)
    async with db.session() as s:
        due = await repo.due(s, NOW, limit=10)
    assert [r.id for r in due] == ["c1"]


def test_a_temporary_issue_keeps_the_last_known_state() -> None:
    ok = repo.check_values(
        diagnosis(
            account_id="A1",
            permissions=frozenset({Permission.SPOT_TRADE}),
            expires_at=NOW + timedelta(days=30),
        ),
        now=NOW,
        next_check_at=None,
    )
    assert ok["last_known_status"] == "connected"
    assert ok["expires_at"] == NOW + timedelta(days=30)
    temp = repo.check_values(diagnosis(Status.TEMPORARY_ISSUE), now=NOW, next_check_at=None)
    assert temp["status"] == "temporary_issue"
    kept = {"last_known_status", "findings", "permissions", "expires_at", "account_id", "ip_restricted"}
    assert not kept & temp.keys()
    assert temp["temporary_findings"][0]["code"] == "temporary_issue"
    definitive = repo.check_values(diagnosis(Status.EXPIRED), now=NOW, next_check_at=None)
    assert definitive["last_known_status"] == "expired"
    assert definitive["temporary_findings"] == [] and definitive["temporary_since"] is None


def test_a_new_connection_first_seen_in_a_temporary_issue_is_unchecked_underneath() -> None:
    values = repo.initial_values(diagnosis(Status.TEMPORARY_ISSUE), now=NOW, next_check_at=None)
    assert values["status"] == "temporary_issue"
    assert values["last_known_status"] == "unchecked"
    assert values["temporary_since"] == NOW


async def test_records_round_trip_findings_and_status(db: Database) -> None:
    row = connection("c1")
    d = diagnosis(Status.EXPIRED)
    row.findings = [f.to_json() for f in d.findings]
    row.status = row.last_known_status = "expired"
    row.severity = "error"
    await add(db, row)
    async with db.session() as s:
        got = await repo.get_live(s, "t1", "c1")
    assert got is not None
    record = repo.to_record(got)
    assert record.status is Status.EXPIRED
    assert record.findings == tuple(d.findings)
    assert record.to_json(NOW)["findings"][0]["code"] == "expired"


# -- credential versions ----------------------------------------------------------------------------


def credentials(passphrase: bool = True) -> ApiCredentials:
    return ApiCredentials(
        "K" * 18,
        Secret(canary.bybit_secret()),
        Secret(canary.passphrase("okx")) if passphrase else None,
    )


async def test_sealed_versions_open_only_for_their_own_row(db: Database, vault: Vault) -> None:
    await add(db, connection("c1"), connection("c2", account="A2"))
    given = credentials()
    v1 = creds.seal(vault, given, tenant_id="t1", connection_id="c1", version=1, now=NOW, verified=True)
    assert v1.api_key_ciphertext is not None and given.api_key.encode() not in v1.api_key_ciphertext
    async with db.session() as s, s.begin():
        s.add(v1)
    async with db.session() as s:
        stored = await creds.current(s, "c1")
    assert stored is not None
    opened = creds.open_version(vault, stored, tenant_id="t1")
    assert (opened.api_key, opened.secret, opened.passphrase) == (
        given.api_key,
        given.secret,
        given.passphrase,
    )
    with pytest.raises(DecryptionFailed):
        creds.open_version(vault, stored, tenant_id="t2")  # another tenant
    moved = CredentialVersion(**{c: getattr(stored, c) for c in ("masked_key", "key_fingerprint")})
    for attr in ("api_key", "secret", "passphrase"):
        setattr(moved, f"{attr}_ciphertext", getattr(stored, f"{attr}_ciphertext"))
        setattr(moved, f"{attr}_key_version", getattr(stored, f"{attr}_key_version"))
    moved.connection_id, moved.version, moved.exchange_key_version = "c2", 1, 2
    with pytest.raises(DecryptionFailed):
        creds.open_version(vault, moved, tenant_id="t1")  # copied to another connection
    moved.connection_id, moved.version = "c1", 2
    with pytest.raises(DecryptionFailed):
        creds.open_version(vault, moved, tenant_id="t1")  # copied to another version of the same one


async def test_one_current_version_per_connection(db: Database, vault: Vault) -> None:
    await add(db, connection("c1"))
    given = credentials(passphrase=False)
    async with db.session() as s, s.begin():
        s.add(creds.seal(vault, given, tenant_id="t1", connection_id="c1", version=1, now=NOW, verified=True))
    with pytest.raises(IntegrityError):
        async with db.session() as s, s.begin():
            s.add(
                creds.seal(
                    vault, given, tenant_id="t1", connection_id="c1", version=2, now=NOW, verified=True
                )
            )
    async with db.session() as s, s.begin():
        assert await creds.revoke(s, "c1", 1, NOW)
        assert not await creds.revoke(s, "c1", 1, NOW)  # the compare-and-swap: only once
        s.add(creds.seal(vault, given, tenant_id="t1", connection_id="c1", version=2, now=NOW, verified=True))
    async with db.session() as s:
        current = await creds.current(s, "c1")
        assert current is not None and current.version == 2
        assert [v.revoked_at is not None for v in await creds.versions(s, "c1")] == [True, False]


async def test_destroy_removes_every_ciphertext_and_keeps_revocation_times(
    db: Database, vault: Vault
) -> None:
    await add(db, connection("c1"))
    given = credentials()
    earlier = NOW - timedelta(days=3)
    async with db.session() as s, s.begin():
        s.add(
            creds.seal(
                vault, given, tenant_id="t1", connection_id="c1", version=1, now=earlier, verified=True
            )
        )
        await s.flush()
        assert await creds.revoke(s, "c1", 1, earlier)
        s.add(creds.seal(vault, given, tenant_id="t1", connection_id="c1", version=2, now=NOW, verified=True))
    async with db.session() as s, s.begin():
        assert await creds.destroy_all(s, "c1", NOW) == 2
    async with db.session() as s:
        rows = await creds.versions(s, "c1")
    for row in rows:
        assert row.destroyed_at == NOW
        assert (
            row.api_key_ciphertext is None
            and row.secret_ciphertext is None
            and row.passphrase_ciphertext is None
        )
    assert [r.revoked_at for r in rows] == [earlier, NOW]
    with pytest.raises(creds.CredentialsDestroyed):
        creds.open_version(vault, rows[1], tenant_id="t1")


async def test_audit_refuses_details_that_could_hold_a_secret(db: Database) -> None:
    with pytest.raises(ValueError, match="not allowed"):
        audit.entry(tenant_id="t1", actor="a", action="add", target="c1", now=NOW, details={"secret": "x"})
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.entry(tenant_id="t1", actor="a", action="peek", target="c1", now=NOW)
    async with db.session() as s, s.begin():
        s.add(
            audit.entry(
                tenant_id="t1", actor="a", action="add", target="c1", now=NOW, details={"status": "ok"}
            )
        )
        s.add(audit.entry(tenant_id="t2", actor="b", action="add", target="c2", now=NOW))
    async with db.session() as s:
        mine = await audit.list_entries(s, tenant_id="t1")
        assert [(e.actor, e.target, dict(e.details)) for e in mine] == [("a", "c1", {"status": "ok"})]
        assert (await s.execute(select(Connection))).first() is None
