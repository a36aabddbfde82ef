"""The connection lifecycle over a real store (SQLite and PostgreSQL) and the Bybit simulator over HTTP.

add, update credentials, refresh, remove, list and get, with the refusals each must make.
Secrets are canaries: any that reaches a log, a record or an error message fails the test.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

import canary
from keysentry.connections import (
    AccountMismatch,
    AlreadyConnected,
    ConnectionChanged,
    ConnectionNotFound,
    ConnectionService,
    CredentialsUnreadable,
    DuplicateKey,
    KeyRefused,
    NewKey,
)
from keysentry.domain import Severity, Status
from keysentry.domain.secrets import Secret
from keysentry.monitor.policy import ConnectionState, RecheckPolicy, next_slot
from keysentry.sim.scenario import MaintenanceWindow
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import CredentialVersion
from keysentry.store.monitoring import WebhookEvent
from keysentry.vault import Vault
from store.backends import Bench, bench, db, db_target, pg_database, vault  # noqa: F401 - fixtures


@pytest.fixture
async def b(db: Database, vault: Vault) -> Any:  # noqa: F811 - the imported fixtures
    async with bench(db, vault) as it:
        yield it


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        canary.assert_no_leak(str(text), "a record, result or error")


async def audit_actions(b: Bench, target: str) -> list[str]:
    return [e.action for e in reversed(await b.service.audit_log("local", target))]


# -- add ------------------------------------------------------------------------------------------------


async def test_add_checks_the_key_and_stores_it_encrypted(b: Bench) -> None:
    outcome = await b.service.add("local", "bybit", b.key("a1"), label="  spot   bot ")
    record = outcome.connection
    assert record.id.startswith("con_")
    assert (record.exchange, record.label, record.account_id) == ("bybit", "spot bot", "30000001")
    assert record.status is Status.CONNECTED and record.last_known_status is Status.CONNECTED
    assert record.masked_key == b.keys["a1"].api_key[:4] + "…" + b.keys["a1"].api_key[-4:]
    assert record.credential_version == 1
    assert "spot_trade" in record.permissions
    assert record.next_check_at is not None and record.next_check_at > record.last_checked_at  # type: ignore[operator]
    assert [r.id for r in await b.service.list_connections("local")] == [record.id]
    assert [c.trigger for c in await b.service.history("local", record.id)] == ["add"]
    assert await audit_actions(b, record.id) == ["add"]
    # the stored key opens to exactly what was given, and the opening is audited
    opened = await b.service.open_credentials("local", record.id, actor="bot-runner", purpose="trade")
    assert (opened.api_key, opened.secret.reveal()) == (b.keys["a1"].api_key, b.keys["a1"].secret)
    assert await audit_actions(b, record.id) == ["add", "decrypt"]
    assert_no_secret(record.to_json(datetime.now(UTC)), record, outcome.diagnosis.to_json())
    assert b.keys["a1"].api_key not in str(record.to_json(datetime.now(UTC)))


async def test_the_same_api_key_twice_is_refused_naming_the_connection(b: Bench) -> None:
    first = await b.service.add("local", "bybit", b.key("a1"), label="one")
    with pytest.raises(DuplicateKey) as caught:
        # pasted with stray whitespace: cleaned first, so still the same key
        key = b.keys["a1"]
        await b.service.add("local", "bybit", NewKey(f" {key.api_key}\n", Secret(key.secret)), label="two")
    assert caught.value.existing_id == first.connection.id
    assert "“one”" in str(caught.value)
    assert len(await b.service.list_connections("local")) == 1
    # another tenant may store the same key: duplicates are per tenant
    other = await b.service.add("tenant-2", "bybit", b.key("a1"), label="theirs")
    assert other.connection.id != first.connection.id


async def test_a_second_key_of_a_connected_account_is_refused_with_the_existing_connection(b: Bench) -> None:
    first = await b.service.add("local", "bybit", b.key("a1"), label="main account")
    with pytest.raises(AlreadyConnected) as caught:
        await b.service.add("local", "bybit", b.key("a2"), label="again")
    error = caught.value
    assert (error.existing_id, error.label) == (first.connection.id, "main account")
    assert error.diagnosis.status is Status.ALREADY_CONNECTED
    top = error.diagnosis.findings[0]
    assert top.code == "already_connected"
    assert top.details["connection_id"] == first.connection.id
    assert top.details["label"] == "main account"
    assert f"keysentry update {first.connection.id}" in str(error)
    assert not error.can_save_anyway
    with pytest.raises(AlreadyConnected):  # saving anyway does not make a second connection
        await b.service.add("local", "bybit", b.key("a2"), label="again", save_anyway=True)
    assert len(await b.service.list_connections("local")) == 1


async def test_a_key_with_an_error_status_is_refused_unless_saved_anyway(b: Bench) -> None:
    with pytest.raises(KeyRefused) as caught:
        await b.service.add("local", "bybit", b.key("expired"), label="old")
    assert caught.value.diagnosis.status is Status.EXPIRED
    assert caught.value.can_save_anyway
    assert "--save-anyway" in str(caught.value)
    assert await b.service.list_connections("local") == []
    saved = await b.service.add("local", "bybit", b.key("expired"), label="old", save_anyway=True)
    assert saved.connection.status is Status.EXPIRED
    assert saved.connection.severity is Severity.ERROR
    entries = await b.service.audit_log("local", saved.connection.id)
    assert entries[0].details["saved_anyway"] is True


async def test_an_unverified_key_is_refused_when_the_exchange_cannot_answer(b: Bench) -> None:
    b.bybit.maintenance.append(MaintenanceWindow(start=datetime.now(UTC) - timedelta(minutes=1)))
    with pytest.raises(KeyRefused) as caught:
        await b.service.add("local", "bybit", b.key("a1"), label="bot")
    assert caught.value.diagnosis.status is Status.TEMPORARY_ISSUE
    assert "not verified" in str(caught.value)
    saved = await b.service.add("local", "bybit", b.key("a1"), label="bot", save_anyway=True)
    assert saved.connection.status is Status.TEMPORARY_ISSUE
    assert saved.connection.last_known_status is Status.UNCHECKED
    assert saved.connection.account_id is None
    b.bybit.maintenance.clear()
    # the first definitive check fills in the account
    refreshed = await b.service.refresh("local", saved.connection.id)
    assert (refreshed.connection.status, refreshed.connection.account_id) == (Status.CONNECTED, "30000001")


async def test_malformed_input_is_refused_before_anything_is_sent_even_when_saving_anyway(b: Bench) -> None:
    broken = NewKey("short", Secret(canary.bybit_secret()))
    with pytest.raises(KeyRefused) as caught:
        await b.service.add("local", "bybit", broken, label="typo", save_anyway=True)
    assert caught.value.diagnosis.status is Status.INVALID_KEY
    assert not caught.value.can_save_anyway
    assert_no_secret(caught.value, caught.value.diagnosis.to_json())


async def test_adds_racing_for_one_account_make_one_connection(b: Bench) -> None:
    results = await asyncio.gather(
        b.service.add("local", "bybit", b.key("a1"), label="racer 1"),
        b.service.add("local", "bybit", b.key("a2"), label="racer 2"),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1
    assert isinstance(lost[0], AlreadyConnected)
    assert lost[0].existing_id == won[0].connection.id
    assert len(await b.service.list_connections("local")) == 1


async def test_first_adds_of_a_new_tenant_racing_both_succeed(b: Bench) -> None:
    results = await asyncio.gather(
        b.service.add("fresh-tenant", "bybit", b.key("a1"), label="one"),
        b.service.add("fresh-tenant", "bybit", b.key("b1"), label="two"),
    )
    assert {r.connection.label for r in results} == {"one", "two"}


async def test_diagnose_checks_like_add_and_stores_nothing(b: Bench) -> None:
    diagnosis = await b.service.diagnose("bybit", b.key("expired"))
    assert diagnosis.status is Status.EXPIRED
    assert (await b.service.diagnose("bybit", b.key("a1"))).account_id == "30000001"
    assert await b.service.list_connections("local") == []
    assert await b.service.audit_log("local") == []


async def test_bad_labels_profiles_and_exchanges_are_usage_errors(b: Bench) -> None:
    with pytest.raises(ValueError, match="label"):
        await b.service.add("local", "bybit", b.key("a1"), label="   ")
    with pytest.raises(ValueError, match="profile"):
        await b.service.add("local", "bybit", b.key("a1"), label="x", profile="no-such-profile")
    with pytest.raises(ValueError, match="exchange"):
        await b.service.add("local", "nosuchex", b.key("a1"), label="x")


# -- update credentials -----------------------------------------------------------------------------


async def test_update_switches_to_a_new_key_of_the_same_account_keeping_id_label_and_history(
    b: Bench,
) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    await b.service.refresh("local", added.id)
    updated = (await b.service.update_credentials("local", added.id, b.key("a2"))).connection
    assert (updated.id, updated.label, updated.account_id) == (added.id, "main", "30000001")
    assert updated.credential_version == 2
    assert updated.masked_key != added.masked_key
    assert updated.key_fingerprint != added.key_fingerprint
    assert [c.trigger for c in await b.service.history("local", added.id)] == ["update", "refresh", "add"]
    opened = await b.service.open_credentials("local", added.id, actor="t", purpose="test")
    assert opened.api_key == b.keys["a2"].api_key
    async with b.db.session() as s:
        versions = await creds.versions(s, added.id)
    assert [(v.version, v.revoked_at is None, v.verified_at is not None) for v in versions] == [
        (1, False, True),
        (2, True, True),
    ]
    # the old version is kept (revoked) and still opens to the old key
    old = creds.open_version(b.vault, versions[0], tenant_id="local")
    assert old.api_key == b.keys["a1"].api_key
    # the old key is free again: duplicates are checked against current keys only... but it is
    # the same account, so adding it elsewhere is refused as already connected
    with pytest.raises(AlreadyConnected):
        await b.service.add("local", "bybit", b.key("a1"), label="old key")


async def test_update_with_a_key_of_another_account_changes_nothing(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    with pytest.raises(AccountMismatch) as caught:
        await b.service.update_credentials("local", added.id, b.key("b1"), save_anyway=True)
    assert (caught.value.expected, caught.value.found) == ("30000001", "30000002")
    current = await b.service.get("local", added.id)
    assert current.credential_version == 1 and current.masked_key == added.masked_key
    opened = await b.service.open_credentials("local", added.id, actor="t", purpose="test")
    assert opened.api_key == b.keys["a1"].api_key


async def test_update_with_a_key_that_does_not_work_keeps_the_old_one(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    # a deleted key tells nothing about its account: it is never switched in, not even "anyway"
    with pytest.raises(KeyRefused) as caught:
        await b.service.update_credentials("local", added.id, b.key("deleted"), save_anyway=True)
    assert caught.value.diagnosis.status is Status.INVALID_KEY
    assert "old key stays in use" in str(caught.value)
    assert (await b.service.get("local", added.id)).credential_version == 1


async def test_update_refuses_keys_stored_elsewhere_or_already_current(b: Bench) -> None:
    main = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    other = (await b.service.add("local", "bybit", b.key("b1"), label="other")).connection
    with pytest.raises(DuplicateKey) as elsewhere:
        await b.service.update_credentials("local", main.id, b.key("b1"))
    assert elsewhere.value.existing_id == other.id
    with pytest.raises(DuplicateKey, match="already the key of connection"):
        await b.service.update_credentials("local", main.id, b.key("a1"))


async def test_update_of_an_unknown_or_foreign_connection_is_not_found(b: Bench) -> None:
    mine = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    for tenant, cid in (("local", "con_doesnotexist"), ("tenant-2", mine.id)):
        with pytest.raises(ConnectionNotFound):
            await b.service.update_credentials(tenant, cid, b.key("a2"))
        with pytest.raises(ConnectionNotFound):
            await b.service.refresh(tenant, cid)
        with pytest.raises(ConnectionNotFound):
            await b.service.get(tenant, cid)
        with pytest.raises(ConnectionNotFound):
            await b.service.history(tenant, cid)
        with pytest.raises(ConnectionNotFound):
            await b.service.remove(tenant, cid)
    assert await b.service.list_connections("tenant-2") == []


# -- refresh ----------------------------------------------------------------------------------------


async def test_a_temporary_issue_never_overwrites_the_last_definitive_state(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    b.bybit.maintenance.append(MaintenanceWindow(start=datetime.now(UTC) - timedelta(minutes=1)))
    first = (await b.service.refresh("local", added.id)).connection
    second = (await b.service.refresh("local", added.id)).connection
    for shown in (first, second):
        assert shown.status is Status.TEMPORARY_ISSUE and shown.severity is Severity.WARNING
        assert shown.last_known_status is Status.CONNECTED
        assert shown.findings == added.findings
        assert shown.permissions == added.permissions
        assert shown.account_id == added.account_id
        assert shown.last_definitive_at == added.last_definitive_at
        assert shown.temporary_findings[0].status is Status.TEMPORARY_ISSUE
    assert second.temporary_since == first.temporary_since == first.last_checked_at
    b.bybit.maintenance.clear()
    back = (await b.service.refresh("local", added.id)).connection
    assert back.status is Status.CONNECTED and back.temporary_since is None and back.temporary_findings == ()
    statuses = [c.status for c in await b.service.history("local", added.id)]
    assert statuses == [Status.CONNECTED, Status.TEMPORARY_ISSUE, Status.TEMPORARY_ISSUE, Status.CONNECTED]


async def test_refresh_records_a_key_that_broke_since(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    refreshed = (await b.service.refresh("local", added.id)).connection
    assert refreshed.status is Status.EXPIRED and refreshed.last_known_status is Status.EXPIRED
    assert refreshed.next_check_at is not None
    assert await audit_actions(b, added.id) == ["add", "decrypt", "refresh"]


async def test_refresh_many_reports_each_connection(b: Bench) -> None:
    one = (await b.service.add("local", "bybit", b.key("a1"), label="one")).connection
    two = (await b.service.add("local", "bybit", b.key("b1"), label="two")).connection
    seen: list[str] = []
    results = await b.service.refresh_many(
        "local", [one.id, "con_gone", two.id], concurrency=2, on_done=lambda cid, _r: seen.append(cid)
    )
    assert list(results) == [one.id, "con_gone", two.id]
    assert isinstance(results["con_gone"], ConnectionNotFound)
    assert sorted(seen) == sorted(results)
    everything = await b.service.refresh_many("local")
    assert set(everything) == {one.id, two.id}


async def test_a_refresh_that_raced_an_update_does_not_record_the_old_keys_result(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    engine = b.service._engine
    assert engine is not None
    real = engine.diagnose_credentials
    calls = 0

    async def update_meanwhile(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(*args, **kwargs)
        if calls == 1:  # the refresh's check: the user updates the key before it is recorded
            await b.service.update_credentials("local", added.id, b.key("a2"))
        return result

    engine.diagnose_credentials = update_meanwhile  # type: ignore[method-assign]
    with pytest.raises(ConnectionChanged):
        await b.service.refresh("local", added.id)
    engine.diagnose_credentials = real  # type: ignore[method-assign]
    assert [c.trigger for c in await b.service.history("local", added.id)] == ["update", "add"]


async def test_a_stored_key_that_does_not_decrypt_asks_for_the_key_again(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    async with b.db.session() as s, s.begin():
        row = (await s.execute(select(CredentialVersion))).scalar_one()
        tampered = bytearray(row.secret_ciphertext or b"")
        tampered[-1] ^= 1
        await s.execute(update(CredentialVersion).values(secret_ciphertext=bytes(tampered)))
    with pytest.raises(CredentialsUnreadable, match=f"keysentry update {added.id}"):
        await b.service.refresh("local", added.id)
    # the key can be entered again, and it works again
    with pytest.raises(DuplicateKey):
        await b.service.update_credentials("local", added.id, b.key("a1"))
    updated = await b.service.update_credentials("local", added.id, b.key("a2"))
    assert (await b.service.refresh("local", updated.connection.id)).connection.status is Status.CONNECTED


# -- remove -----------------------------------------------------------------------------------------


async def test_remove_destroys_every_version_and_keeps_the_audit(b: Bench) -> None:
    added = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    await b.service.update_credentials("local", added.id, b.key("a2"))
    removed = await b.service.remove("local", added.id)
    assert removed.id == added.id
    async with b.db.session() as s:
        versions = await creds.versions(s, added.id)
    assert len(versions) == 2
    for v in versions:
        assert v.destroyed_at is not None and v.revoked_at is not None
        assert (v.api_key_ciphertext, v.secret_ciphertext, v.passphrase_ciphertext) == (None, None, None)
    with pytest.raises(ConnectionNotFound):
        await b.service.get("local", added.id)
    assert await b.service.list_connections("local") == []
    assert await audit_actions(b, added.id) == ["add", "update", "remove"]
    # the account and both keys may be connected again
    again = await b.service.add("local", "bybit", b.key("a1"), label="back")
    assert again.connection.id != added.id


# -- the re-check schedule ----------------------------------------------------------------------------


async def test_without_a_policy_given_checks_are_scheduled_by_the_monitors_default_policy(b: Bench) -> None:
    policy = RecheckPolicy()
    healthy = (await b.service.add("local", "bybit", b.key("a1"), label="main")).connection
    assert healthy.next_check_at is not None
    # the connection's own slot, half an interval away at least
    assert healthy.next_check_at == next_slot(
        healthy.id, not_before=healthy.updated_at + policy.interval / 2, interval=policy.interval
    )
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    broken = (await b.service.refresh("local", healthy.id)).connection
    # connected -> expired: confirmed soon, as the monitor confirms a change
    assert broken.next_check_at == broken.updated_at + policy.after_change
    again = (await b.service.refresh("local", healthy.id)).connection
    assert again.next_check_at is not None
    # still broken, the second time in a row: within the second backoff bound
    assert again.next_check_at - again.updated_at <= max(policy.error_base * 2, policy.min_delay)


async def test_the_schedule_and_the_expiry_thresholds_given_are_used(db: Database, vault: Vault) -> None:  # noqa: F811
    planned: list[tuple[ConnectionState, ConnectionState]] = []

    def next_check(before: ConnectionState, after: ConnectionState, now: datetime) -> datetime:
        planned.append((before, after))
        return now + timedelta(minutes=42)

    async with bench(db, vault) as it:
        it.service = ConnectionService(
            db, vault=vault, engine=it.service._engine, options=it.service._options,
            next_check=next_check, expiring_days=(30,),
        )  # fmt: skip
        record = (await it.service.add("local", "bybit", it.key("a1"), label="main")).connection
        assert record.next_check_at is not None
        assert record.next_check_at - record.updated_at == timedelta(minutes=42)  # from the recording
        it.sim_key("a1").expires_at = datetime.now(UTC) + timedelta(days=20)
        await it.service.refresh("local", record.id)
        it.bybit.maintenance.append(MaintenanceWindow(start=datetime.now(UTC) - timedelta(minutes=1)))
        await it.service.refresh("local", record.id)
        await it.service.refresh("local", record.id)
    # what the policy plans by: the connection (its phase), the last definitive status before the
    # check, the check's own status and expiry, and the backoff streaks after it
    assert {after.connection_id for _, after in planned} == {record.id}
    assert [(before.last_known_status, after.status) for before, after in planned] == [
        (Status.UNCHECKED, Status.CONNECTED),
        (Status.CONNECTED, Status.CONNECTED),  # 20 days left: no warning by the exchange's window
        (Status.CONNECTED, Status.TEMPORARY_ISSUE),
        (Status.CONNECTED, Status.TEMPORARY_ISSUE),
    ]
    assert planned[0][1].expires_at is None and planned[1][1].expires_at is not None
    assert [after.temporary_failures for _, after in planned] == [0, 0, 1, 2]
    async with db.session() as s:
        data = (
            await s.execute(select(WebhookEvent.data).where(WebhookEvent.type == "connection.expiring"))
        ).scalar_one()
    assert data["threshold_days"] == 30
