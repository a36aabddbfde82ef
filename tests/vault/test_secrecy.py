"""Canary scans: no plaintext, data key or master key in any message, repr, log line or file.

Every error path is forced with canary values in play; each exception's str, repr and
formatted traceback, every repr the vault hands out, all log output at DEBUG, and the
files on disk are searched for the canaries (and their base64 forms).
"""

from __future__ import annotations

import base64
import logging
import os
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keysentry.vault import (
    MasterKeyUnavailable,
    RowId,
    StaleRow,
    Vault,
    VaultError,
    rewrap,
)

SECRET_CANARY = "CANARY-plaintext-7f3a9c-é"
MASTER = os.urandom(32)
MASTER_B64 = base64.b64encode(MASTER).decode()
ROW = {"tenant": "tenant-a", "connection": "conn-1", "field": "api_secret"}


def forbidden(vault: Vault | None) -> list[str]:
    words = [
        SECRET_CANARY,
        "CANARY-plaintext",
        MASTER_B64,
        MASTER_B64[:24],
        base64.urlsafe_b64encode(MASTER).decode()[:24],
        MASTER.hex()[:24],
    ]
    if vault is not None:
        keyring = vault._state.keyring  # the data keys themselves, to search for them
        for key in [*keyring.keys.values(), keyring.hash_key]:
            words += [base64.b64encode(key).decode()[:24], key.hex()[:24]]
    return words


def assert_clean(text: str, vault: Vault | None) -> None:
    for word in forbidden(vault):
        assert word not in text, f"found {word[:12]}... in output"


def describe(error: BaseException) -> str:
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


class Target:
    def __init__(self, rows: list[StaleRow]) -> None:
        self.rows = rows

    def iter_stale(self, batch: int, below_version: int, after: RowId | None) -> Iterator[StaleRow]:
        start = -1 if after is None else int(after)
        return iter([r for r in self.rows if int(r.row_id) > start and r.key_version < below_version][:batch])

    def replace(self, row: StaleRow, new_ciphertext: bytes, new_version: int) -> bool:
        self.rows[self.rows.index(row)] = StaleRow(
            row.row_id, row.tenant, row.connection, row.field, new_ciphertext, new_version
        )
        return True


def every_error(tmp_path: Path, vault: Vault) -> Iterator[VaultError]:
    sealed = vault.encrypt(SECRET_CANARY, **ROW)
    attempts: list[Callable[[], object]] = [
        lambda: vault.decrypt(sealed.ciphertext[:-1] + b"\x00", key_version=1, **ROW),
        lambda: vault.decrypt(sealed.ciphertext, key_version=1, **{**ROW, "field": "passphrase"}),
        lambda: vault.decrypt(sealed.ciphertext, key_version=9, **ROW),
        lambda: vault.decrypt(b"junk", key_version=1, **ROW),
        lambda: Vault.open(tmp_path, master_key=base64.b64encode(os.urandom(32)).decode()),  # wrong key
        lambda: Vault.open(tmp_path / "x", master_key=MASTER_B64[:-8]),  # too short
        lambda: Vault.open(tmp_path / "x", master_key=SECRET_CANARY),  # not base64, canary as the value
        lambda: Vault.open(tmp_path / "x", master_key=MASTER_B64 + "AAAA"),  # too long
        lambda: Vault.open(tmp_path / "x", master_key=MASTER_B64, kms_uri="aws-kms://arn"),  # two sources
        lambda: Vault.open(tmp_path / "x", create=False),
        lambda: vault.keyed_hash(SECRET_CANARY, ""),
        lambda: vault.encrypt(SECRET_CANARY, **{**ROW, "tenant": ""}),
    ]
    for attempt in attempts:
        with pytest.raises(VaultError) as caught:
            attempt()
        yield caught.value
    key_file = tmp_path / "kf"
    key_file.write_text(MASTER_B64)
    key_file.chmod(0o644)
    with pytest.raises(VaultError) as caught:
        Vault.open(tmp_path / "y", master_key_file=key_file)
    yield caught.value
    keyring = tmp_path / "keyring.json"
    original = keyring.read_bytes()
    keyring.write_bytes(original.replace(b'"sealed": "', b'"sealed": "AAAA'))
    with pytest.raises(VaultError) as caught:
        Vault.open(tmp_path, master_key=MASTER_B64)
    yield caught.value
    keyring.write_bytes(original)

    def leaky_kms(uri: str) -> object:
        class Remote:
            def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes:
                raise RuntimeError(f"refused {SECRET_CANARY}")

            def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes:
                raise RuntimeError(f"refused {SECRET_CANARY}")

        return Remote()

    with pytest.raises(MasterKeyUnavailable) as kms_error:
        Vault.open(tmp_path / "z", kms_uri="gcp-kms://projects/p/k", kms_factory=leaky_kms)  # type: ignore[arg-type]
    assert SECRET_CANARY not in str(kms_error.value) and SECRET_CANARY not in repr(kms_error.value)


def test_no_secret_in_any_error_repr_log_or_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vault = Vault.open(tmp_path, master_key=MASTER_B64)
    errors = list(every_error(tmp_path, vault))
    assert len(errors) == 14
    for error in errors:
        assert_clean(describe(error), vault)

    sealed = vault.encrypt(SECRET_CANARY, **ROW)
    secret = vault.decrypt(sealed.ciphertext, key_version=sealed.key_version, **ROW)
    assert secret.reveal() == SECRET_CANARY
    bad = vault.encrypt(SECRET_CANARY, **ROW)
    rows = [
        StaleRow(0, ROW["tenant"], ROW["connection"], ROW["field"], sealed.ciphertext, 1),
        StaleRow(
            1,
            ROW["tenant"],
            ROW["connection"],
            ROW["field"],
            bad.ciphertext[:-1] + bytes([bad.ciphertext[-1] ^ 1]),
            1,
        ),
    ]
    vault.rotate()
    report = rewrap(vault, Target(rows))
    assert (report.rewrapped, report.failed) == (1, 1)
    reprs = [repr(x) for x in (vault, sealed, secret, rows[0], report, vault._state.keyring, vault._master)]
    reprs += [str(secret), f"{secret}", report.summary()]
    assert_clean("\n".join(reprs), vault)
    assert_clean(caplog.text, vault)
    assert "created keyring" in caplog.text  # logging did happen, it just holds nothing secret
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "kf":  # kf: the key file this test wrote on purpose
            assert_clean(path.read_bytes().decode("latin-1"), vault)


def test_default_key_file_holds_the_key_but_logs_only_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    vault = Vault.open(tmp_path)
    key_b64 = (tmp_path / "master.key").read_text().strip()
    assert str(tmp_path / "master.key") in caplog.text
    assert key_b64 not in caplog.text
    assert key_b64 not in repr(vault) and key_b64 not in vault.master_source
    assert key_b64 not in (tmp_path / "keyring.json").read_text()
