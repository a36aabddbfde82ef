"""API tokens of tenants and the admin token: made, stored hashed, checked in constant time.

A tenant token is `ks_` and 32 random bytes (urlsafe base64, 43 characters). It is shown once
when made; the store keeps its SHA-256 only, so a database dump yields no usable token.
Look-up is by that hash: timing differences of the index look-up can reveal at most something
about a hash of 256 random bits, which does not help to guess a token.

The admin token comes from KEYSENTRY_ADMIN_TOKEN. A short or placeholder value is refused at
start (an admin token from a tutorial is an open door), with a sentence saying how to make one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from keysentry.domain.secrets import REDACTED, Secret

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from keysentry.store.db import Database
    from keysentry.store.tokens import TokenView

__all__ = [
    "MIN_ADMIN_TOKEN",
    "TOKEN_PREFIX",
    "AdminToken",
    "AdminTokenRejected",
    "NewToken",
    "authenticate",
    "generate_token",
    "hash_token",
    "issue_token",
    "looks_like_token",
]

TOKEN_PREFIX = "ks_"
_TOKEN = re.compile(r"ks_[A-Za-z0-9_-]{43}")
# Shown in listings so a person can tell tokens apart: 4 of 43 random characters reveal nothing useful.
_SHOWN = len(TOKEN_PREFIX) + 4
MIN_ADMIN_TOKEN = 32
_MIN_DISTINCT = 12
_PLACEHOLDERS = (
    "changeme", "changethis", "placeholder", "example", "yourtoken", "yoursecret", "admintoken",
    "secret", "password", "replace", "todo", "fixme", "xxxx", "12345", "abcdef", "qwerty", "dummy",
)  # fmt: skip
GENERATE_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class AdminTokenRejected(ValueError):
    """KEYSENTRY_ADMIN_TOKEN is unusable; the message says why and how to make one (never the value)."""


@dataclass(frozen=True, slots=True, repr=False)
class NewToken:
    """A token just made: the value (to show once), its id, its hash and its shown prefix."""

    id: str
    value: Secret
    token_hash: str
    prefix: str

    def __repr__(self) -> str:
        return f"NewToken(id={self.id!r}, value={REDACTED})"

    __str__ = __repr__


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def looks_like_token(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


def generate_token() -> NewToken:
    value = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return NewToken(
        id=f"tok_{secrets.token_hex(8)}",
        value=Secret(value),
        token_hash=hash_token(value),
        prefix=value[:_SHOWN],
    )


class AdminToken:
    """The configured admin token, kept only as its SHA-256; `matches` compares in constant time."""

    __slots__ = ("_digest",)

    def __init__(self, token: str) -> None:
        check_admin_token(token)
        self._digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def matches(self, given: str) -> bool:
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._digest)

    def __repr__(self) -> str:
        return f"AdminToken({REDACTED})"


def check_admin_token(token: str) -> None:
    """Refuse a short, repetitive or placeholder admin token (KEYSENTRY_ADMIN_TOKEN)."""
    how = f"generate one with {GENERATE_HINT}"
    if len(token) < MIN_ADMIN_TOKEN:
        raise AdminTokenRejected(
            f"KEYSENTRY_ADMIN_TOKEN is {len(token)} characters long; it needs at least {MIN_ADMIN_TOKEN} "
            f"random characters: {how}"
        )
    if len(set(token)) < _MIN_DISTINCT:
        raise AdminTokenRejected(f"KEYSENTRY_ADMIN_TOKEN repeats a few characters; it must be random: {how}")
    folded = re.sub(r"[^a-z0-9]", "", token.lower())
    if any(word in folded for word in _PLACEHOLDERS):
        raise AdminTokenRejected(
            f"KEYSENTRY_ADMIN_TOKEN looks like a placeholder or a guessable word; it must be random: {how}"
        )


# -- with the store -------------------------------------------------------------------------------


async def authenticate(db: Database, token: str, now: datetime) -> TokenView | None:
    """The live tenant token `token` is, or None (unknown, revoked, or not a token at all)."""
    from keysentry.store import tokens as store

    if not looks_like_token(token):
        return None  # no database round trip for what cannot be a token
    async with db.session() as s:
        found = await store.find_active(s, hash_token(token))
        if found is not None and (found.last_used_at is None or found.last_used_at < now - store.TOUCH_EVERY):
            await store.touch(s, found.id, now)
            await s.commit()
    return found


async def issue_token(
    session: AsyncSession, tenant_id: str, name: str, now: datetime, *, actor: str
) -> tuple[NewToken, TokenView]:
    """Make a token for an existing tenant inside the caller's transaction; audited."""
    from keysentry.store import tokens as store

    made = generate_token()
    row = store.new_token_row(
        token_id=made.id,
        tenant_id=tenant_id,
        name=name,
        token_hash=made.token_hash,
        prefix=made.prefix,
        now=now,
    )
    session.add(row)
    await session.flush()
    session.add(
        store.audit(
            action="token_create",
            actor=actor,
            tenant_id=tenant_id,
            now=now,
            target=made.id,
            details={"token_id": made.id, "name": name},
        )
    )
    view = store.TokenView(
        id=made.id,
        tenant_id=tenant_id,
        name=name,
        prefix=made.prefix,
        created_at=now,
        last_used_at=None,
        revoked_at=None,
    )
    return made, view
