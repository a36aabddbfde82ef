"""The byte layouts: associated data must be injective, the ciphertext header must parse or be refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysentry.vault import VaultUsageError
from keysentry.vault.encoding import (
    MAX_KEY_VERSION,
    MIN_CIPHERTEXT_SIZE,
    NONCE_SIZE,
    associated_data,
    pack_ciphertext,
    parse_ciphertext,
)

ids = st.text(min_size=1, max_size=12)
versions = st.integers(min_value=1, max_value=MAX_KEY_VERSION)
contexts = st.tuples(ids, ids, ids, versions)


def ad(ctx: tuple[str, str, str, int]) -> bytes:
    tenant, connection, field, version = ctx
    return associated_data(tenant=tenant, connection=connection, field=field, key_version=version)


@given(contexts, contexts)
def test_different_rows_never_share_associated_data(
    a: tuple[str, str, str, int], b: tuple[str, str, str, int]
) -> None:
    assert (ad(a) == ad(b)) == (a == b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ab", "c", "f", 1), ("a", "bc", "f", 1)),
        (("t", "ab", "c", 1), ("t", "a", "bc", 1)),
        (("t\x00", "c", "f", 1), ("t", "\x00c", "f", 1)),
        (("t", "c", "f", 1), ("t", "c", "f", 256)),
    ],
)
def test_shifting_characters_between_parts_changes_associated_data(
    a: tuple[str, str, str, int], b: tuple[str, str, str, int]
) -> None:
    assert ad(a) != ad(b)


@pytest.mark.parametrize("part", ["tenant", "connection", "field"])
def test_empty_or_non_text_ids_are_refused(part: str) -> None:
    values: dict[str, object] = {"tenant": "t", "connection": "c", "field": "f", "key_version": 1}
    for bad in ("", "\ud800", 5, None):
        with pytest.raises(VaultUsageError, match=part):
            associated_data(**{**values, part: bad})  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, -1, MAX_KEY_VERSION + 1, True, 1.0, "1"])
def test_key_versions_outside_the_column_range_are_refused(version: object) -> None:
    with pytest.raises(VaultUsageError, match="key_version"):
        associated_data(tenant="t", connection="c", field="f", key_version=version)  # type: ignore[arg-type]


@given(versions, st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE), st.binary(min_size=16, max_size=80))
def test_packed_ciphertext_parses_back(version: int, nonce: bytes, body: bytes) -> None:
    parsed = parse_ciphertext(pack_ciphertext(version, nonce, body))
    assert parsed is not None
    assert (parsed.key_version, parsed.nonce, parsed.body) == (version, nonce, body)


def test_foreign_or_short_bytes_are_not_ciphertexts() -> None:
    good = pack_ciphertext(7, b"n" * NONCE_SIZE, b"b" * 16)
    assert len(good) == MIN_CIPHERTEXT_SIZE
    assert parse_ciphertext(good[:-1]) is None
    assert parse_ciphertext(b"\x02" + good[1:]) is None  # another format
    assert parse_ciphertext(b"\x01\x00\x00\x00\x00" + good[5:]) is None  # version 0 does not exist
    assert parse_ciphertext("text") is None  # type: ignore[arg-type]
