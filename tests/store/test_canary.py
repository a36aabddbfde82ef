"""No plaintext secret reaches the database: a raw dump after adding canary keys holds none of them.

Keys are added through the service against the simulators (Bybit: secret; OKX: secret and
passphrase), then updated, refreshed and one removed, so every write path has run. SQLite: the
bytes of the file and its -wal and -shm files. PostgreSQL: `pg_dump` of the database. The full
API keys must not appear either (only their masked form is kept in clear).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

import canary
from keysentry.store.db import Database
from keysentry.vault import Vault
from store.backends import GOOD, OKX_GOOD, SimKey, Target, bench, bybit_key, okx_key, scan_bytes

PG_DUMP = shutil.which("pg_dump") or "/usr/bin/pg_dump"


@pytest.fixture(autouse=True)
def _pg_dump_exists(request: pytest.FixtureRequest) -> None:
    if "pg_target" in request.fixturenames and not Path(PG_DUMP).exists():
        pytest.fail(f"pg_dump is needed for this test and was not found at {PG_DUMP}")


def scenario(keys: list[SimKey]) -> dict[str, object]:
    exchanges: dict[str, dict[str, list[dict[str, object]]]] = {}
    for k in keys:
        fields = GOOD if k.exchange == "bybit" else OKX_GOOD
        accounts = exchanges.setdefault(k.exchange, {"accounts": []})["accounts"]
        accounts.append({"id": k.account, "keys": [k.spec(**fields)]})
    return {"seed": 3, "exchanges": exchanges}


async def fill(db: Database, vault: Vault) -> list[SimKey]:
    """Add, update, refresh and remove canary keys through the service; returns every key used."""
    keys = [bybit_key("50000001"), bybit_key("50000001"), bybit_key("50000002"), okx_key("60000001")]
    keys.append(okx_key("60000001"))
    async with bench(db, vault, spec=scenario(keys)) as b:
        first = await b.service.add("local", "bybit", keys[0].new(), label="bybit one")
        await b.service.update_credentials("local", first.connection.id, keys[1].new())
        removed = await b.service.add("local", "bybit", keys[2].new(), label="to remove")
        okx = await b.service.add("local", "okx", keys[3].new(), label="okx")
        assert okx.connection.status.value == "connected", okx.diagnosis.summary
        await b.service.update_credentials("local", okx.connection.id, keys[4].new())
        await b.service.refresh("local", first.connection.id)
        await b.service.refresh("local", okx.connection.id)
        await b.service.remove("local", removed.connection.id)
    return keys


def assert_clean(dump: bytes, keys: list[SimKey], where: str) -> None:
    leaks = scan_bytes(dump)
    assert not leaks, f"canary secrets {leaks} in {where}"
    for k in keys:
        assert k.api_key.encode() not in dump, f"a full API key ({k!r}) in {where}"
    # and the dump is not trivially empty: the masked keys are there
    assert keys[0].api_key[:4].encode() in dump


async def test_sqlite_file_wal_and_shm_hold_no_plaintext_secret(tmp_path: Path, vault: Vault) -> None:
    path = tmp_path / "db" / "keysentry.db"
    db = await Database.open(f"sqlite:///{path}")
    try:
        keys = await fill(db, vault)
        # read while the database is open: the WAL still holds recent pages
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert {p.name for p in files} >= {"keysentry.db"}
        dump = b"".join(p.read_bytes() for p in files)
    finally:
        await db.close()
    assert_clean(dump, keys, "the SQLite files")
    assert_clean(
        b"".join(p.read_bytes() for p in path.parent.iterdir()), keys, "the SQLite files after close"
    )


async def test_postgresql_dump_holds_no_plaintext_secret(pg_target: Target, vault: Vault) -> None:
    db = await pg_target.open()
    try:
        keys = await fill(db, vault)
    finally:
        await db.close()
    assert pg_target.database is not None
    argv = [PG_DUMP, "-h", "127.0.0.1", "-U", "postgres", "--no-password", "-n", str(pg_target.schema)]
    proc = await asyncio.create_subprocess_exec(
        *argv, pg_target.database, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    dump, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert b"credential_versions" in dump
    assert_clean(dump, keys, "pg_dump")


async def test_removed_keys_ciphertexts_are_gone_from_the_sqlite_file(tmp_path: Path, vault: Vault) -> None:
    # secure_delete and the WAL checkpoint after a removal: not even the ciphertext stays on disk
    from sqlalchemy import select

    from keysentry.store.models import CredentialVersion

    path = tmp_path / "keysentry.db"
    db = await Database.open(f"sqlite:///{path}")
    key = bybit_key("70000001")
    try:
        async with bench(db, vault, spec=scenario([key])) as b:
            added = await b.service.add("local", "bybit", key.new(), label="short-lived")
            async with db.session() as s:
                row = (await s.execute(select(CredentialVersion))).scalar_one()
            ciphertexts = [row.api_key_ciphertext, row.secret_ciphertext]
            assert all(c is not None and c in _files(path) for c in ciphertexts)
            await b.service.remove("local", added.connection.id)
        left = _files(path)
        for c in ciphertexts:
            assert c is not None and c[17:] not in left
    finally:
        await db.close()
    assert canary.scan(_files(path).decode("latin-1")) == []


def _files(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
