"""Rewrap over a row source: everything moves, a second run changes nothing, an interrupted run resumes.

Two targets: a list in memory (fast enough for property tests) and a SQLite table through
the stdlib driver, whose compare-and-swap is the UPDATE the store will issue.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keysentry.vault import (
    RewrapReport,
    RewrapTarget,
    RowId,
    StaleRow,
    Vault,
    VaultUsageError,
    generate_master_key,
    retire,
    rewrap,
)


class Crash(Exception):
    """Stands for a process dying halfway."""


@dataclass
class MemoryTarget:
    rows: dict[int, StaleRow]
    crash_after: int | None = None  # replace() raises once this many rows were replaced
    replaced: int = 0

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterator[StaleRow]:
        start = -1 if after is None else int(after)
        stale = [r for i, r in sorted(self.rows.items()) if i > start and r.key_version < below_version]
        return iter(stale[:batch])

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        if self.crash_after is not None and self.replaced >= self.crash_after:
            raise Crash
        current = self.rows[int(row.row_id)]
        if (current.ciphertext, current.key_version) != (row.ciphertext, row.key_version):
            return False
        self.rows[int(row.row_id)] = replace(current, ciphertext=new_ciphertext, key_version=new_version)
        self.replaced += 1
        return True


class SqliteTarget:
    def __init__(self, path: Path, crash_after: int | None = None) -> None:
        self.db = sqlite3.connect(
            path, isolation_level=None
        )  # autocommit: each UPDATE is its own transaction
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS secret (id INTEGER PRIMARY KEY, tenant TEXT, connection TEXT, "
            "field TEXT, ciphertext BLOB, key_version INTEGER)"
        )
        self.crash_after = crash_after
        self.replaced = 0

    def insert(
        self, row_id: int, tenant: str, connection: str, field: str, ciphertext: bytes, version: int
    ) -> None:
        self.db.execute(
            "INSERT INTO secret VALUES (?, ?, ?, ?, ?, ?)",
            (row_id, tenant, connection, field, ciphertext, version),
        )

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterator[StaleRow]:
        cursor = self.db.execute(
            "SELECT id, tenant, connection, field, ciphertext, key_version FROM secret "
            "WHERE key_version < ? AND id > ? ORDER BY id LIMIT ?",
            (below_version, -1 if after is None else after, batch),
        )
        return iter([StaleRow(*r) for r in cursor.fetchall()])

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        if self.crash_after is not None and self.replaced >= self.crash_after:
            raise Crash
        cursor = self.db.execute(
            "UPDATE secret SET ciphertext = ?, key_version = ? WHERE id = ? AND key_version = ? AND ciphertext = ?",
            (new_ciphertext, new_version, row.row_id, row.key_version, row.ciphertext),
        )
        self.replaced += cursor.rowcount
        return cursor.rowcount == 1

    def all(self) -> list[StaleRow]:
        cursor = self.db.execute(
            "SELECT id, tenant, connection, field, ciphertext, key_version FROM secret ORDER BY id"
        )
        return [StaleRow(*r) for r in cursor.fetchall()]


def plaintext(i: int) -> str:
    return f"secret-{i}-é"


def seal_rows(vault: Vault, n: int) -> dict[int, StaleRow]:
    rows = {}
    for i in range(n):
        tenant, connection, field = f"t{i % 3}", f"c{i}", ("api_secret", "passphrase")[i % 2]
        sealed = vault.encrypt(plaintext(i), tenant=tenant, connection=connection, field=field)
        rows[i] = StaleRow(i, tenant, connection, field, sealed.ciphertext, sealed.key_version)
    return rows


def assert_all_current(vault: Vault, rows: list[StaleRow]) -> None:
    for row in rows:
        assert row.key_version == vault.current_version
        secret = vault.decrypt(
            row.ciphertext,
            tenant=row.tenant,
            connection=row.connection,
            field=row.field,
            key_version=row.key_version,
        )
        assert secret.reveal() == plaintext(int(row.row_id))


@pytest.fixture(scope="module")
def key() -> str:
    return generate_master_key()


@pytest.fixture(scope="module")
def shared_vault(tmp_path_factory: pytest.TempPathFactory, key: str) -> Vault:
    return Vault.open(tmp_path_factory.mktemp("rewrap"), master_key=key)


@pytest.fixture
def vault(tmp_path: Path, key: str) -> Vault:
    return Vault.open(tmp_path / "data", master_key=key)


def test_rewrap_moves_every_row_and_a_second_run_changes_nothing(vault: Vault) -> None:
    target = MemoryTarget(seal_rows(vault, 25))
    vault.rotate()
    progress: list[int] = []
    report = rewrap(vault, target, batch=4, on_batch=lambda r: progress.append(r.scanned))
    assert (report.scanned, report.rewrapped, report.failed, report.ok) == (25, 25, 0, True)
    assert progress == [4, 8, 12, 16, 20, 24, 25]
    assert_all_current(vault, list(target.rows.values()))
    after_first = dict(target.rows)
    second = rewrap(vault, target, batch=4)
    assert (second.scanned, second.rewrapped) == (0, 0)
    assert target.rows == after_first


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 20), batch=st.integers(1, 7), data=st.data())
def test_interrupted_rewrap_resumes_to_completion(
    shared_vault: Vault, n: int, batch: int, data: st.DataObject
) -> None:
    vault = shared_vault  # each example rotates it once more: old rows of earlier examples do not matter
    rows = seal_rows(vault, n)
    vault.rotate()
    k = data.draw(st.integers(0, n), label="rows done before the crash")
    target = MemoryTarget(rows, crash_after=k)
    if k < n:
        with pytest.raises(Crash):
            rewrap(vault, target, batch=batch)
    else:
        rewrap(vault, target, batch=batch)
    moved = [r for r in target.rows.values() if r.key_version == vault.current_version]
    assert len(moved) == k
    for row in target.rows.values():  # rows not reached still decrypt under their old version
        assert vault.decrypt(
            row.ciphertext,
            tenant=row.tenant,
            connection=row.connection,
            field=row.field,
            key_version=row.key_version,
        ).reveal() == plaintext(int(row.row_id))
    target.crash_after = None
    report = rewrap(vault, target, batch=batch)
    assert report.rewrapped == n - k
    assert_all_current(vault, list(target.rows.values()))


def test_sqlite_rewrap_resumes_in_a_new_process_after_a_crash(tmp_path: Path, key: str) -> None:
    vault = Vault.open(tmp_path / "data", master_key=key)
    db_path = tmp_path / "store.sqlite"
    first = SqliteTarget(db_path, crash_after=7)
    for row in seal_rows(vault, 30).values():
        first.insert(int(row.row_id), row.tenant, row.connection, row.field, row.ciphertext, row.key_version)
    vault.rotate()
    with pytest.raises(Crash):
        rewrap(vault, first, batch=5)
    first.db.close()

    # a new process: fresh vault object and connection, same files
    vault2 = Vault.open(tmp_path / "data", master_key=key, create=False)
    second = SqliteTarget(db_path)
    assert sum(r.key_version == 2 for r in second.all()) == 7
    report = rewrap(vault2, second, batch=5)
    assert (report.scanned, report.rewrapped) == (23, 23)
    assert_all_current(vault2, second.all())
    assert rewrap(vault2, second, batch=5).scanned == 0


def test_a_row_updated_during_rewrap_keeps_the_update(vault: Vault) -> None:
    rows = seal_rows(vault, 3)
    vault.rotate()
    target = MemoryTarget(rows)
    user_update = vault.encrypt("updated by the user", tenant="t1", connection="c1", field="passphrase")
    original_replace = target.replace

    def racing_replace(row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        if row.row_id == 1:  # the user saves a new key between our read and our write
            target.rows[1] = replace(target.rows[1], ciphertext=user_update.ciphertext, key_version=2)
        return original_replace(row, new_ciphertext, new_version)

    target.replace = racing_replace  # type: ignore[method-assign]
    report = rewrap(vault, target)
    assert (report.rewrapped, report.changed_meanwhile) == (2, 1)
    assert target.rows[1].ciphertext == user_update.ciphertext


def test_undecryptable_rows_are_reported_left_alone_and_block_retiring(vault: Vault) -> None:
    rows = seal_rows(vault, 6)
    bad = rows[4]
    rows[4] = replace(bad, ciphertext=bad.ciphertext[:-1] + bytes([bad.ciphertext[-1] ^ 1]))
    vault.rotate()
    target = MemoryTarget(rows)
    report = rewrap(vault, target, batch=2)
    assert (report.rewrapped, report.failed, report.failed_rows, report.ok) == (5, 1, [4], False)
    assert "1 do not decrypt" in report.summary() and "rows 4" in report.summary()
    assert target.rows[4] == rows[4]
    again = rewrap(vault, target, batch=2)  # no loop on the bad row, no change
    assert (again.scanned, again.failed, again.rewrapped) == (1, 1, 0)
    assert retire(vault, target) == ()
    assert vault.versions == (1, 2)
    del target.rows[4]  # the store deletes it (the user re-enters that key)
    assert retire(vault, target) == (1,)
    assert_all_current(vault, list(target.rows.values()))


def test_rows_written_by_an_older_process_after_a_rotation_are_caught_by_the_next_run(
    vault: Vault, tmp_path: Path, key: str
) -> None:
    stale_service = Vault.open(tmp_path / "data", master_key=key)
    target = MemoryTarget(seal_rows(vault, 4))
    vault.rotate()
    rewrap(vault, target)
    late = stale_service.encrypt(plaintext(9), tenant="t0", connection="c9", field="api_secret")
    assert late.key_version == 1
    target.rows[9] = StaleRow(9, "t0", "c9", "api_secret", late.ciphertext, late.key_version)
    assert rewrap(vault, target).rewrapped == 1
    assert_all_current(vault, list(target.rows.values()))


def test_misbehaving_targets_and_bad_batches_are_refused(vault: Vault) -> None:
    class IgnoresAfter(MemoryTarget):
        def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterator[StaleRow]:
            return super().iter_stale(batch, below_version, None)

        def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
            return False

    target: RewrapTarget = IgnoresAfter(seal_rows(vault, 3))
    vault.rotate()
    with pytest.raises(VaultUsageError, match="after"):
        rewrap(vault, target, batch=2)
    with pytest.raises(VaultUsageError, match="batch"):
        rewrap(vault, target, batch=0)


def test_report_summary_counts() -> None:
    report = RewrapReport(target_version=3, scanned=10, rewrapped=8, changed_meanwhile=2)
    assert report.summary().startswith("moved 8 of 10 older secrets to key version 3")
    assert "2 were changed by someone else" in report.summary()


# -- several named targets (the store's credentials and webhooks) ------------------------------------


def test_named_targets_all_move_to_one_version_with_counts_for_each(vault: Vault) -> None:
    credentials = MemoryTarget(seal_rows(vault, 7))
    webhooks = MemoryTarget(seal_rows(vault, 4))
    vault.rotate()
    progress: list[tuple[int, int]] = []
    report = rewrap(
        vault,
        {"credentials": credentials, "webhooks": webhooks},
        batch=3,
        on_batch=lambda r: progress.append((r.scanned, r.rewrapped)),
    )
    assert (report.scanned, report.rewrapped, report.ok, report.target_version) == (11, 11, True, 2)
    assert list(report.parts) == ["credentials", "webhooks"]
    assert (report.parts["credentials"].scanned, report.parts["credentials"].rewrapped) == (7, 7)
    assert (report.parts["webhooks"].scanned, report.parts["webhooks"].rewrapped) == (4, 4)
    assert all(p.target_version == 2 for p in report.parts.values())
    assert progress == [(3, 3), (6, 6), (7, 7), (10, 10), (11, 11)]  # on_batch sees the totals
    assert report.summary().startswith(
        "moved 11 of 11 older secrets to key version 2 (credentials: 7 of 7, webhooks: 4 of 4)"
    )
    assert_all_current(vault, [*credentials.rows.values(), *webhooks.rows.values()])
    again = rewrap(vault, {"credentials": credentials, "webhooks": webhooks})
    assert again.scanned == 0 and {p.scanned for p in again.parts.values()} == {0}


def test_a_crash_in_the_second_target_resumes_without_redoing_the_first(vault: Vault) -> None:
    credentials = MemoryTarget(seal_rows(vault, 5))
    webhooks = MemoryTarget(seal_rows(vault, 6), crash_after=2)
    vault.rotate()
    with pytest.raises(Crash):
        rewrap(vault, {"credentials": credentials, "webhooks": webhooks}, batch=2)
    webhooks.crash_after = None
    report = rewrap(vault, {"credentials": credentials, "webhooks": webhooks}, batch=2)
    assert {n: (p.scanned, p.rewrapped) for n, p in report.parts.items()} == {
        "credentials": (0, 0),
        "webhooks": (4, 4),
    }
    assert_all_current(vault, [*credentials.rows.values(), *webhooks.rows.values()])


def test_failures_are_named_by_target_with_its_remedy_and_any_stale_target_blocks_retiring(
    vault: Vault,
) -> None:
    @dataclass
    class Webhooks(MemoryTarget):
        remedy: str = "their tenants must register those webhooks again"

    credentials = MemoryTarget(seal_rows(vault, 3))
    rows = seal_rows(vault, 3)
    bad = rows[1]
    rows[1] = replace(bad, ciphertext=bad.ciphertext[:-1] + bytes([bad.ciphertext[-1] ^ 1]))
    webhooks = Webhooks(rows)
    vault.rotate()
    targets: dict[str, RewrapTarget] = {"credentials": credentials, "webhooks": webhooks}
    report = rewrap(vault, targets)
    assert (report.failed, report.failed_rows, report.ok) == (1, [1], False)
    assert report.parts["webhooks"].failed == 1 and report.parts["credentials"].failed == 0
    assert "1 do not decrypt and were left untouched (webhooks: rows 1, their tenants must register" in (
        report.summary()
    )
    assert "credentials: rows" not in report.summary()
    assert retire(vault, targets) == ()  # the webhook row still needs version 1
    assert vault.versions == (1, 2)
    del webhooks.rows[1]  # the store deletes it (the tenant registers the endpoint again)
    assert retire(vault, targets) == (1,)
    assert_all_current(vault, [*credentials.rows.values(), *webhooks.rows.values()])
