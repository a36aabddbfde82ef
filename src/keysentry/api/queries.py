"""The API's one read the lifecycle does not offer: a filtered page of a tenant's connections.

Filtered by tenant in SQL like every other query, ordered by (created_at, id), paged by keyset
(the cursor is the last row's created_at and id): a page costs the same at any depth, and a
connection added meanwhile neither repeats nor shifts a page.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, or_, select

from keysentry.store import connections as repo
from keysentry.store.db import Database
from keysentry.store.models import Connection
from keysentry.store.records import ConnectionRecord

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class BadCursor(ValueError):
    """A cursor this API did not make."""


def encode_cursor(record: ConnectionRecord) -> str:
    raw = json.dumps([record.created_at.isoformat(), record.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, cid = json.loads(raw)
        moment = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise BadCursor(cursor) from None
    if not isinstance(cid, str) or _ID.fullmatch(cid) is None or moment.tzinfo is None:
        raise BadCursor(cursor)
    return moment, cid


async def connection_page(
    db: Database,
    tenant: str,
    *,
    statuses: Sequence[str] = (),
    exchanges: Sequence[str] = (),
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> tuple[list[ConnectionRecord], bool]:
    """Up to `limit` live connections of `tenant` after the cursor, and whether more follow."""
    query = select(Connection).where(Connection.tenant_id == tenant, Connection.removed_at.is_(None))
    if statuses:
        query = query.where(Connection.status.in_(list(statuses)))
    if exchanges:
        query = query.where(Connection.exchange.in_(list(exchanges)))
    if after is not None:
        at, cid = after
        query = query.where(
            or_(Connection.created_at > at, and_(Connection.created_at == at, Connection.id > cid))
        )
    query = query.order_by(Connection.created_at, Connection.id).limit(limit + 1)
    async with db.session() as s:
        rows = (await s.execute(query)).scalars().all()
    records = [repo.to_record(r) for r in rows[:limit]]
    return records, len(rows) > limit
