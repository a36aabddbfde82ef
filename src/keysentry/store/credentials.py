"""Credential versions: sealing a key's fields with the vault, opening them, the atomic switch.

Each field is its own vault ciphertext with its own key-version column, bound by the vault's
associated data to (tenant, connection, "<field>/<version number>"): a ciphertext copied to
another connection, tenant, field or credential version does not decrypt. The API key itself is
encrypted too (a key is half a credential); the connection row keeps only its masked form and
fingerprint.

Switching a connection to a new key is one transaction: revoke the current version (a
compare-and-swap on "still current"), insert the new one, move the connection's pointer. A crash
anywhere leaves the old version current or the new one, never neither (tests/store kill
processes to check it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.store.models import CredentialVersion
from keysentry.vault import Vault

SecretField = Literal["api_key", "secret", "passphrase"]
FIELDS: tuple[SecretField, ...] = ("api_key", "secret", "passphrase")


def ad_field(name: SecretField, version: int) -> str:
    """The vault `field` of one secret of one credential version."""
    return f"{name}/{version}"


def api_key_hash(vault: Vault, api_key: str) -> str:
    """Keyed hash of an API key: duplicate detection per tenant, stable across vault rotations."""
    return vault.keyed_hash(api_key, "api_key")


def fingerprint(vault: Vault, api_key: str) -> str:
    """What a person may compare to tell keys apart: 16 hex digits of a keyed hash."""
    return vault.keyed_hash(api_key, "fingerprint")[:16]


def seal(
    vault: Vault,
    credentials: ApiCredentials,
    *,
    tenant_id: str,
    connection_id: str,
    version: int,
    now: datetime,
    verified: bool,
) -> CredentialVersion:
    """A new credential-version row holding `credentials` encrypted (not yet added to a session)."""
    values: dict[SecretField, str | Secret | None] = {
        "api_key": credentials.api_key,
        "secret": credentials.secret,
        "passphrase": credentials.passphrase,
    }
    columns: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            columns[f"{name}_ciphertext"] = None
            columns[f"{name}_key_version"] = None
            continue
        sealed = vault.encrypt(
            value, tenant=tenant_id, connection=connection_id, field=ad_field(name, version)
        )
        columns[f"{name}_ciphertext"] = sealed.ciphertext
        columns[f"{name}_key_version"] = sealed.key_version
    return CredentialVersion(
        connection_id=connection_id,
        version=version,
        masked_key=credentials.masked_key,
        key_fingerprint=fingerprint(vault, credentials.api_key),
        exchange_key_version=credentials.key_version,
        created_at=now,
        verified_at=now if verified else None,
        **columns,
    )


class CredentialsDestroyed(Exception):
    """The version's ciphertexts were destroyed (the connection was removed)."""


def open_version(vault: Vault, row: CredentialVersion, *, tenant_id: str) -> ApiCredentials:
    """Decrypt one version; DecryptionFailed (from the vault) if any field does not open for it."""
    if row.api_key_ciphertext is None or row.secret_ciphertext is None:
        raise CredentialsDestroyed(f"credential version {row.version} of {row.connection_id} was destroyed")

    def one(name: SecretField, ciphertext: bytes, key_version: int | None) -> Secret:
        return vault.decrypt(
            ciphertext,
            tenant=tenant_id,
            connection=row.connection_id,
            field=ad_field(name, row.version),
            key_version=key_version if key_version is not None else -1,
        )

    api_key = one("api_key", row.api_key_ciphertext, row.api_key_key_version)
    secret = one("secret", row.secret_ciphertext, row.secret_key_version)
    passphrase = (
        one("passphrase", row.passphrase_ciphertext, row.passphrase_key_version)
        if row.passphrase_ciphertext is not None
        else None
    )
    return ApiCredentials(
        api_key=api_key.reveal(),
        secret=secret,
        passphrase=passphrase,
        key_version=row.exchange_key_version,
    )


async def any_stored(session: AsyncSession) -> bool:
    """Whether any secret is stored at all (then a missing keyring is a loss, never a fresh start)."""
    result = await session.execute(
        select(CredentialVersion.id).where(CredentialVersion.secret_ciphertext.is_not(None)).limit(1)
    )
    return result.first() is not None


async def current(session: AsyncSession, connection_id: str) -> CredentialVersion | None:
    result = await session.execute(
        select(CredentialVersion).where(
            CredentialVersion.connection_id == connection_id, CredentialVersion.revoked_at.is_(None)
        )
    )
    return result.scalar_one_or_none()


async def versions(session: AsyncSession, connection_id: str) -> Sequence[CredentialVersion]:
    result = await session.execute(
        select(CredentialVersion)
        .where(CredentialVersion.connection_id == connection_id)
        .order_by(CredentialVersion.version)
    )
    return result.scalars().all()


async def revoke(session: AsyncSession, connection_id: str, version: int, now: datetime) -> bool:
    """Revoke `version` if it is still the current one (the switch's compare-and-swap)."""
    result = await session.execute(
        update(CredentialVersion)
        .where(
            CredentialVersion.connection_id == connection_id,
            CredentialVersion.version == version,
            CredentialVersion.revoked_at.is_(None),
        )
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result) == 1


async def destroy_all(session: AsyncSession, connection_id: str, now: datetime) -> int:
    """Crypto-shred every version of a connection: ciphertexts gone, metadata kept. Returns how many."""
    result = await session.execute(
        update(CredentialVersion)
        .where(CredentialVersion.connection_id == connection_id, CredentialVersion.destroyed_at.is_(None))
        .values(
            api_key_ciphertext=None,
            api_key_key_version=None,
            secret_ciphertext=None,
            secret_key_version=None,
            passphrase_ciphertext=None,
            passphrase_key_version=None,
            # a version revoked by an earlier update keeps the time it was revoked
            revoked_at=func.coalesce(CredentialVersion.revoked_at, now),
            destroyed_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
