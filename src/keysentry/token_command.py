"""`keysentry token create|revoke|list` and `keysentry serve`: functions cli.py wires to typer.

Each takes the command's options as plain values, prints, and returns the exit code: 0 done,
2 failed (no such token), 3 usage or configuration error. A token is printed once, by
`token create`, on stdout alone (notes go to stderr), so `TOKEN=$(keysentry token create ...)`
captures exactly the token; it is stored only as a hash and cannot be shown again.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keysentry.store.db import Database
    from keysentry.store.tokens import TokenView

OK, ERROR, USAGE = 0, 2, 3

__all__ = ["serve", "token_create", "token_list", "token_revoke"]


class _Usage(Exception):
    """Bad input or configuration; the message says what to do."""


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _note(message: str) -> None:
    sys.stderr.write(message + "\n")


def _run(body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    from pydantic import ValidationError

    from keysentry.store.errors import DatabaseConfigError, StoreError

    try:
        return asyncio.run(body())
    except (_Usage, DatabaseConfigError) as e:
        _note(f"error: {e}")
        return USAGE
    except ValidationError as e:
        from keysentry.settings import settings_problem

        _note(f"error: {settings_problem(e)}")
        return USAGE
    except StoreError as e:
        _note(f"error: {e}")
        return ERROR
    except KeyboardInterrupt:
        _note("error: interrupted; nothing half-done was saved")
        return ERROR


async def _open() -> Database:
    from keysentry.api.runtime import database
    from keysentry.settings import load_settings
    from keysentry.store.migrate import upgrade_engine

    db = database(load_settings())
    try:
        await upgrade_engine(db.engine, db.url)
    except BaseException:
        await db.close()
        raise
    return db


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment is not None else "-"


def _token_json(t: TokenView) -> dict[str, Any]:
    iso = _iso
    return {
        "id": t.id,
        "tenant_id": t.tenant_id,
        "name": t.name,
        "prefix": t.prefix,
        "created_at": iso(t.created_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


def token_create(tenant: str, *, name: str, tenant_name: str | None = None, as_json: bool = False) -> int:
    """`keysentry token create TENANT --name NAME`: a new API token (the tenant is made if new)."""
    from keysentry.api.schemas import TenantCreate, TokenCreate
    from keysentry.api.tokens import issue_token
    from keysentry.store import tokens as store

    async def body() -> int:
        wanted = TenantCreate(id=tenant.strip(), name=tenant_name or tenant.strip())
        token_name = TokenCreate(name=name).name
        tenant_id = wanted.id or ""
        db = await _open()
        try:
            now = _now()
            async with db.session() as s, s.begin():
                made_tenant = await store.create_tenant(s, tenant_id, wanted.name, now)
                if made_tenant is not None:
                    s.add(
                        store.audit(
                            action="tenant_create",
                            actor=_actor(),
                            tenant_id=tenant_id,
                            now=now,
                            details={"name": wanted.name},
                        )
                    )
                made, view = await issue_token(s, tenant_id, token_name, now, actor=_actor())
        finally:
            await db.close()
        if made_tenant is not None:
            _note(f"created tenant {tenant_id}")
        if as_json:
            sys.stdout.write(json.dumps({**_token_json(view), "token": made.value.reveal()}) + "\n")
        else:
            sys.stdout.write(made.value.reveal() + "\n")
        _note(
            f"token {view.id} for tenant {tenant_id} (“{token_name}”): shown this once and stored only as "
            f"a hash; keep it now. Revoke it with `keysentry token revoke {view.id}`"
        )
        return OK

    return _run(body)


def token_revoke(token_id: str) -> int:
    """`keysentry token revoke TOKEN_ID`: requests with that token are refused from now on."""
    from keysentry.store import tokens as store

    async def body() -> int:
        db = await _open()
        try:
            now = _now()
            async with db.session() as s, s.begin():
                found = await store.get_token(s, token_id.strip())
                if found is None or not await store.revoke_token(s, found.id, now, tenant_id=None):
                    _note(
                        f"error: there is no live token {token_id.strip()[:64]!r}; `keysentry token list` shows them"
                    )
                    return ERROR
                s.add(
                    store.audit(
                        action="token_revoke",
                        actor=_actor(),
                        tenant_id=found.tenant_id,
                        now=now,
                        target=found.id,
                        details={"token_id": found.id},
                    )
                )
        finally:
            await db.close()
        _note(f"revoked token {found.id} of tenant {found.tenant_id}")
        return OK

    return _run(body)


def token_list(tenant: str | None = None, *, as_json: bool = False) -> int:
    """`keysentry token list [TENANT]`: tokens by id and first characters; never the tokens."""
    from keysentry.store import tokens as store

    async def body() -> int:
        db = await _open()
        try:
            async with db.session() as s:
                found = await store.list_tokens(s, tenant.strip() if tenant else None)
        finally:
            await db.close()
        if as_json:
            for t in found:
                sys.stdout.write(json.dumps(_token_json(t)) + "\n")
            return OK
        if not found:
            _note("no tokens yet: `keysentry token create TENANT --name NAME` makes one")
            return OK
        sys.stdout.write("id\ttenant\tname\tprefix\tcreated\tlast used\trevoked\n")
        for t in found:
            when = _when
            sys.stdout.write(
                f"{t.id}\t{t.tenant_id}\t{t.name}\t{t.prefix}…\t{when(t.created_at)}\t"
                f"{when(t.last_used_at)}\t{when(t.revoked_at)}\n"
            )
        return OK

    return _run(body)


def serve(host: str = "127.0.0.1", port: int = 8080, *, log_level: str = "info") -> int:
    """`keysentry serve`: the REST API (and the web page) until Ctrl-C or SIGTERM."""
    from keysentry.api.server import serve as run

    return run(host, port, log_level=log_level)
