"""The local CLI over the store: add, list, refresh, update, remove, history, db upgrade, vault.

Each function takes the command's options as plain values, prints, and returns the exit code;
cli.py only wires typer options to them. Credentials are read like `keysentry check` reads them
(environment, hidden prompt or --from-file; never argv). Exit codes follow `check`: 0 ok,
1 warning, 2 error (worst status; also a refused key or a failed operation), 3 usage error or
a sealed vault. No traceback reaches the user: every expected error prints one sentence.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from keysentry.check_command import (
    USAGE_ERROR,
    KeyInput,
    UsageError,
    _console,
    _custom_profiles,
    prompt_credentials,
    read_env_credentials,
    read_key_file,
    render_human,
)
from keysentry.domain import Diagnosis, Severity, Status, exit_code_for, severity_of
from keysentry.domain.status import EXIT_CODES

if TYPE_CHECKING:
    from keysentry.connections import ConnectionService, NewKey, Outcome
    from keysentry.monitor.policy import RecheckPolicy
    from keysentry.settings import Settings
    from keysentry.store.db import Database
    from keysentry.store.records import CheckView, ConnectionRecord
    from keysentry.vault import Vault

ERROR = EXIT_CODES[Severity.ERROR]
OK = EXIT_CODES[Severity.OK]
T = TypeVar("T")

_STYLE = {
    Severity.OK: "bold green",
    Severity.WARNING: "bold dark_orange",
    Severity.ERROR: "bold red",
    Severity.UNKNOWN: "bold bright_black",
}


# -- running a command -----------------------------------------------------------------------------


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (containers without /etc/passwd entry)
        return "cli"


def _error(message: str) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _run(body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run one command; turn every expected failure into its sentence and exit code."""
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from keysentry.connections import ConnectionsError
    from keysentry.store.errors import DatabaseConfigError, StoreError
    from keysentry.vault import VaultError, VaultSealed

    try:
        return asyncio.run(body())
    except (UsageError, DatabaseConfigError, VaultSealed) as e:
        _error(str(e))
        return USAGE_ERROR
    except (ConnectionsError, StoreError, VaultError) as e:
        _error(str(e))
        return ERROR
    except ValidationError as e:  # KEYSENTRY_* settings; the values themselves are not repeated
        from keysentry.settings import settings_problem

        _error(settings_problem(e))
        return USAGE_ERROR
    except ValueError as e:  # operator configuration: profile, environment, base URL
        _error(_first_line(e))
        return USAGE_ERROR
    except SQLAlchemyError as e:
        # the database failed mid-command (went away, disk full): its reason, never the statement
        # or its parameters
        reason = e.orig if isinstance(e, DBAPIError) and e.orig is not None else e
        _error(f"the database failed: {_first_line(reason)}; nothing half-done was saved")
        return ERROR
    except KeyboardInterrupt:
        _error("interrupted; nothing half-done was saved")
        return ERROR


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _settings() -> Settings:
    from keysentry.process import tune_collector
    from keysentry.settings import load_settings

    settings = load_settings()
    tune_collector(settings.gc_threshold)  # add, update and refresh run checks
    return settings


@dataclass
class _Session:
    settings: Settings
    db: Database
    service: ConnectionService


def _open_vault(settings: Settings, *, create: bool = True) -> Vault:
    from keysentry.vault import Vault

    return Vault.open(
        settings.data_dir,
        master_key=settings.master_key.get_secret_value() if settings.master_key else None,
        master_key_file=settings.master_key_file,
        kms_uri=settings.kms_uri,
        create=create,
    )


async def _open_db(settings: Settings) -> Database:
    from keysentry.store.db import Database, resolve_url

    return await Database.open(resolve_url(settings.database_url, settings.data_dir))


def _recheck_policy() -> RecheckPolicy:
    """The monitor's re-check policy and expiry thresholds, from the settings the monitor reads
    (KEYSENTRY_MONITOR_*): keys added, updated and refreshed here are scheduled as it would."""
    from pydantic import ValidationError

    from keysentry.monitor.service import MonitorConfig

    try:
        return MonitorConfig().policy()
    except ValidationError as e:  # named by variable; the value itself is not repeated
        from keysentry.settings import settings_problem

        raise UsageError(settings_problem(e)) from None


@asynccontextmanager
async def _session(*, checks: bool, base_url: str | None = None) -> AsyncIterator[_Session]:
    """The store, and when `checks`, the vault and a diagnosis engine on one shared transport."""
    from keysentry.connections import ConnectionService, options_factory
    from keysentry.store import credentials as creds

    settings = _settings()
    options = options_factory(
        settings, base_url=base_url, custom_profiles=_custom_profiles(settings.profiles_file)
    )
    db = await _open_db(settings)
    try:
        vault = None
        if checks:
            async with db.session() as s:
                stored = await creds.any_stored(s)
            # a keyring is created on first use only: once secrets are stored, a missing keyring
            # (or master key) is a loss to restore from backup, never a reason to start afresh
            vault = _open_vault(settings, create=not stored)
        if not checks:
            yield _Session(settings, db, ConnectionService(db, vault=None, engine=None, options=options))
            return
        from keysentry.diagnosis.engine import DiagnosisEngine
        from keysentry.exchanges.transport import Timeouts, Transport
        from keysentry.monitor.service import next_check_function

        policy = _recheck_policy()
        timeouts = Timeouts(connect=min(5.0, settings.request_timeout_s), total=settings.request_timeout_s)
        async with Transport(egress_ips=settings.egress_ip_list, timeouts=timeouts) as transport:
            service = ConnectionService(
                db,
                vault=vault,
                engine=DiagnosisEngine(transport),
                options=options,
                next_check=next_check_function(policy),
                expiring_days=policy.expiring_days,
            )
            yield _Session(settings, db, service)
    finally:
        await db.close()


# -- credentials -----------------------------------------------------------------------------------


def _keys(exchange: str, from_file: Path | None) -> list[KeyInput]:
    from keysentry.credentials import SUPPORTED_EXCHANGES, requires_passphrase

    if exchange not in SUPPORTED_EXCHANGES:
        raise UsageError(f"unsupported exchange {exchange!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}")
    if from_file is not None:
        keys = read_key_file(from_file, exchange)
        for k in keys:
            if k.exchange != exchange:
                raise UsageError(
                    f"{from_file}: an entry is for {k.exchange!r}, but this command adds {exchange!r}"
                )
        return keys
    found = read_env_credentials(exchange)
    return [found or prompt_credentials(exchange, requires_passphrase(exchange))]


def _new_key(k: KeyInput, key_version: int) -> NewKey:
    from keysentry.connections import NewKey
    from keysentry.domain.secrets import Secret

    return NewKey(
        api_key=k.api_key,
        secret=Secret(k.secret),
        passphrase=Secret(k.passphrase) if k.passphrase is not None else None,
        key_version=key_version,
    )


# -- output ----------------------------------------------------------------------------------------


def _json_line(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")


def _refused(error: Exception, as_json: bool) -> int:
    """Print a refused key: its diagnosis (what is wrong and how to fix it), then why it was not saved."""
    from keysentry.connections import AlreadyConnected, DuplicateKey, KeyRefused

    diagnosis: Diagnosis | None = getattr(error, "diagnosis", None)
    if as_json:
        out: dict[str, Any] = {"error": str(error), "saved": False}
        if isinstance(error, AlreadyConnected | DuplicateKey):
            out["existing_id"] = error.existing_id
        if isinstance(error, KeyRefused):
            out["can_save_anyway"] = error.can_save_anyway
        if diagnosis is not None:
            out["diagnosis"] = diagnosis.to_json()
        _json_line(out)
    else:
        if diagnosis is not None:
            render_human([diagnosis], [None])
        _error(error.brief if isinstance(error, KeyRefused) else str(error))
    return ERROR


def _saved(outcome: Outcome, verb: str, as_json: bool) -> int:
    from rich.markup import escape

    record = outcome.connection
    if as_json:
        _json_line({"connection": record.to_json(_now()), "diagnosis": outcome.diagnosis.to_json()})
    else:
        render_human([outcome.diagnosis], [record.label])
        _console().print(
            f"{verb} connection [bold]{record.id}[/] (“{escape(record.label)}”, {record.exchange} "
            f"account {escape(record.account_id or 'not known yet')}, key {escape(record.masked_key)})"
        )
    return exit_code_for(outcome.diagnosis.status)


def _now() -> datetime:
    return datetime.now(UTC)


def _status_cell(record: ConnectionRecord) -> str:
    style = _STYLE[record.severity]
    text = f"[{style}]{record.status.value}[/]"
    if record.status is Status.TEMPORARY_ISSUE and record.last_known_status is not Status.UNCHECKED:
        last = record.last_known_status
        text += f" [dim](last known:[/] [{_STYLE[severity_of(last)]}]{last.value}[/][dim])[/]"
    return text


def _expiry_cell(record: ConnectionRecord, now: datetime) -> str:
    if record.expires_at is None:
        return "[dim]—[/]"
    days = record.expires_in_days(now)
    if record.expires_at <= now:
        return "[bold red]expired[/]"
    style = "bold dark_orange" if days is not None and days < 14 else ""
    label = "today" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
    return f"[{style}]{label}[/]" if style else label


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return "just now"


def render_table(records: Sequence[ConnectionRecord], now: datetime) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    # ids and statuses are copied and grepped: never broken across lines; the rest may fold
    for name in ("id", "exchange", "label", "key", "account", "status", "expires", "last checked"):
        table.add_column(name, no_wrap=name in {"id", "status"}, overflow="fold")
    for r in records:
        table.add_row(
            r.id,
            r.exchange if r.environment == "mainnet" else f"{r.exchange} ({r.environment})",
            escape(r.label),
            escape(r.masked_key),
            escape(r.account_id or "—"),
            _status_cell(r),
            _expiry_cell(r, now),
            _ago(r.last_checked_at, now),
        )
    _console().print(table)


def render_history(checks: Sequence[CheckView]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(header_style="bold")
    for name in ("checked at (UTC)", "trigger", "key version", "status", "summary"):
        table.add_column(name, overflow="fold")
    for c in checks:
        table.add_row(
            c.checked_at.strftime("%Y-%m-%d %H:%M:%S"),
            c.trigger,
            str(c.credential_version),
            f"[{_STYLE[c.severity]}]{c.status.value}[/]",
            escape(c.summary),
        )
    _console().print(table)


def _worst(statuses: Sequence[Status]) -> int:
    return max((exit_code_for(s) for s in statuses), default=OK)


# -- commands --------------------------------------------------------------------------------------


def add(
    exchange: str,
    *,
    label: str | None,
    profile: str = "trading",
    environment: str = "mainnet",
    base_url: str | None = None,
    from_file: Path | None = None,
    save_anyway: bool = False,
    key_version: int = 2,
    as_json: bool = False,
) -> int:
    """`keysentry add EXCHANGE --label L`: check the key, then store it encrypted."""
    from keysentry.connections import LOCAL_TENANT, DuplicateKey, KeyRefused

    exchange = exchange.strip().lower()

    async def body() -> int:
        keys = _keys(exchange, from_file)
        for k in keys:
            if not (k.label or label):
                raise UsageError("give the connection a name with --label (e.g. --label 'spot bot')")
        if label and len(keys) > 1 and any(not k.label for k in keys):
            raise UsageError(f"{from_file} holds {len(keys)} keys: give each its own label in the file")
        codes: list[int] = []
        async with _session(checks=True, base_url=base_url) as s:
            for k in keys:
                try:
                    outcome = await s.service.add(
                        LOCAL_TENANT,
                        exchange,
                        _new_key(k, key_version),
                        label=k.label or label or "",
                        profile=profile,
                        environment=environment,
                        save_anyway=save_anyway,
                        actor=_actor(),
                    )
                except (KeyRefused, DuplicateKey) as e:
                    codes.append(_refused(e, as_json))
                    continue
                codes.append(_saved(outcome, "saved as", as_json))
        return max(codes)

    return _run(body)


def update(
    connection_id: str,
    *,
    base_url: str | None = None,
    from_file: Path | None = None,
    save_anyway: bool = False,
    key_version: int = 2,
    as_json: bool = False,
) -> int:
    """`keysentry update ID`: replace the key of a connection with a new key of the same account."""
    from keysentry.connections import LOCAL_TENANT, DuplicateKey, KeyRefused

    async def body() -> int:
        async with _session(checks=True, base_url=base_url) as s:
            current = await s.service.get(LOCAL_TENANT, connection_id.strip())
            keys = _keys(current.exchange, from_file)
            if len(keys) != 1:
                raise UsageError(f"{from_file} holds {len(keys)} keys; an update takes exactly one")
            try:
                outcome = await s.service.update_credentials(
                    LOCAL_TENANT,
                    current.id,
                    _new_key(keys[0], key_version),
                    save_anyway=save_anyway,
                    actor=_actor(),
                )
            except (KeyRefused, DuplicateKey) as e:
                return _refused(e, as_json)
            return _saved(outcome, f"updated (key version {outcome.connection.credential_version})", as_json)

    return _run(body)


def list_connections(*, as_json: bool = False) -> int:
    """`keysentry list`: every connection with its status and expiry; never a secret."""
    from keysentry.connections import LOCAL_TENANT

    async def body() -> int:
        async with _session(checks=False) as s:
            records = await s.service.list_connections(LOCAL_TENANT)
        now = _now()
        if as_json:
            for r in records:
                _json_line(r.to_json(now))
        elif not records:
            _console().print("no connections yet: `keysentry add EXCHANGE --label NAME` adds one")
        else:
            render_table(records, now)
        return _worst([r.status for r in records])

    return _run(body)


def refresh(
    connection_id: str | None, *, all_: bool = False, as_json: bool = False, concurrency: int = 8
) -> int:
    """`keysentry refresh ID | --all`: check stored keys again and record the results."""
    from keysentry.connections import LOCAL_TENANT, ConnectionsError, Outcome

    if bool(connection_id) == all_:
        return _usage("give one connection ID, or --all")

    async def body() -> int:
        async with _session(checks=True) as s:
            if connection_id:
                ids = [connection_id.strip()]
            else:
                ids = [r.id for r in await s.service.list_connections(LOCAL_TENANT)]
                if not ids:
                    _console().print("no connections to refresh")
                    return OK
            show_bar = len(ids) > 1 and not as_json and sys.stderr.isatty()
            results = await _refresh_with_bar(s.service, ids, concurrency, show_bar)
        first = results[ids[0]]
        if connection_id and isinstance(first, ConnectionsError):
            raise first  # one connection asked for: its failure is the command's
        codes: list[int] = []
        rows: list[tuple[str, Outcome | ConnectionsError]] = list(results.items())
        for cid, result in rows:
            if isinstance(result, Outcome):
                codes.append(exit_code_for(result.diagnosis.status))
                if as_json:
                    _json_line(
                        {
                            "connection": result.connection.to_json(_now()),
                            "diagnosis": result.diagnosis.to_json(),
                        }
                    )
            else:
                codes.append(ERROR)
                if as_json:
                    _json_line({"id": cid, "error": str(result)})
        if not as_json:
            if connection_id:
                outcome = results[ids[0]]
                assert isinstance(outcome, Outcome)
                render_human([outcome.diagnosis], [outcome.connection.label])
                _kept_note(outcome)
            else:
                _refresh_table(rows)
        return max(codes, default=OK)

    return _run(body)


async def _refresh_with_bar(
    service: ConnectionService, ids: list[str], concurrency: int, show_bar: bool
) -> dict[str, Any]:
    from keysentry.connections import LOCAL_TENANT

    if not show_bar:
        return await service.refresh_many(LOCAL_TENANT, ids, concurrency=concurrency, actor=_actor())
    from rich.progress import Progress

    with Progress(transient=True, console=_console(stderr=True)) as bar:
        task = bar.add_task("checking keys", total=len(ids))
        return await service.refresh_many(
            LOCAL_TENANT,
            ids,
            concurrency=concurrency,
            actor=_actor(),
            on_done=lambda _cid, _result: bar.advance(task),
        )


def _kept_note(outcome: Outcome) -> None:
    record = outcome.connection
    if record.status is Status.TEMPORARY_ISSUE and record.last_known_status is not Status.UNCHECKED:
        _console().print(
            f"  the exchange could not answer; the last known status "
            f"[{_STYLE[severity_of(record.last_known_status)]}]{record.last_known_status.value}[/] is kept",
        )


def _refresh_table(rows: Sequence[tuple[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from keysentry.connections import Outcome

    table = Table(header_style="bold")
    for name in ("id", "label", "status", "summary"):
        table.add_column(name, overflow="fold")
    for cid, result in rows:
        if isinstance(result, Outcome):
            r = result.connection
            table.add_row(r.id, escape(r.label), _status_cell(r), escape(result.diagnosis.summary))
        else:
            table.add_row(cid, "", "[bold red]not checked[/]", escape(str(result)))
    _console().print(table)


def remove(connection_id: str, *, yes: bool = False) -> int:
    """`keysentry remove ID`: destroy the stored key (crypto-shred) and forget the connection."""
    from rich.markup import escape

    from keysentry.connections import LOCAL_TENANT

    async def body() -> int:
        async with _session(checks=False) as s:
            record = await s.service.get(LOCAL_TENANT, connection_id.strip())
            if not yes:
                if not sys.stdin.isatty():
                    raise UsageError("removing destroys the stored key: confirm with --yes")
                import typer

                question = (
                    f"Remove connection {record.id} (“{record.label}”, {record.exchange} account "
                    f"{record.account_id or 'unknown'}) and destroy its stored key?"
                )
                if not typer.confirm(question, default=False):
                    _console().print("nothing removed")
                    return OK
            await s.service.remove(LOCAL_TENANT, record.id, actor=_actor())
        _console().print(
            f"removed connection [bold]{record.id}[/] (“{escape(record.label)}”): its stored key was "
            "destroyed; the audit log keeps a record. Delete the key on the exchange too if no one uses it"
        )
        return OK

    return _run(body)


def history(connection_id: str, *, limit: int = 20, as_json: bool = False) -> int:
    """`keysentry history ID`: the connection's past checks, newest first."""
    from keysentry.connections import LOCAL_TENANT

    async def body() -> int:
        async with _session(checks=False) as s:
            checks = await s.service.history(LOCAL_TENANT, connection_id.strip(), limit=max(1, limit))
        if as_json:
            for c in checks:
                _json_line(c.to_json())
        else:
            render_history(checks)
        return OK

    return _run(body)


def db_upgrade() -> int:
    """`keysentry db upgrade`: bring the database schema to this version of keysentry."""
    from keysentry.store.db import resolve_url, safe_url
    from keysentry.store.migrate import head_revision, upgrade_async

    async def body() -> int:
        settings = _settings()
        url = resolve_url(settings.database_url, settings.data_dir)
        before = await upgrade_async(url)
        head = head_revision()
        if before == head:
            _console().print(f"database {safe_url(url)} is up to date (revision {head})")
        else:
            _console().print(f"database {safe_url(url)} upgraded from revision {before or 'none'} to {head}")
        return OK

    return _run(body)


def vault_status() -> int:
    """`keysentry vault status`: the keyring, its master key, and whether secrets need a rewrap."""
    from keysentry.store.rewrap import StoreRewrapTargets
    from keysentry.vault import status_command

    async def body() -> int:
        settings = _settings()
        db = await _open_db(settings)
        try:
            line = await db.run_sync(
                lambda conn: status_command(
                    settings.data_dir, target=StoreRewrapTargets(conn), **_master(settings)
                )
            )
        finally:
            await db.close()
        _console().print(line, highlight=False)
        return OK

    return _run(body)


def vault_init() -> int:
    """`keysentry vault init`: create the master key file and the keyring (first use does it too)."""
    from keysentry.vault import init_command

    async def body() -> int:
        settings = _settings()
        _console().print(init_command(settings.data_dir, **_master(settings)), highlight=False)
        return OK

    return _run(body)


def vault_rotate() -> int:
    """`keysentry vault rotate`: a new key version becomes primary (then run `vault rewrap`)."""
    from keysentry.vault import rotate_command

    async def body() -> int:
        settings = _settings()
        db = await _open_db(settings)
        try:
            line = rotate_command(settings.data_dir, **_master(settings))
            await _audit_vault(
                db, "rotate", {"key_version": _open_vault(settings, create=False).current_version}
            )
        finally:
            await db.close()
        _console().print(line, highlight=False)
        return OK

    return _run(body)


def vault_rewrap(*, batch: int = 500, retire: bool = False) -> int:
    """`keysentry vault rewrap`: move every stored secret to the newest key version (resumable)."""
    from keysentry.store.rewrap import StoreRewrapTargets
    from keysentry.vault import RewrapReport, rewrap_command

    if batch < 1:
        return _usage("--batch must be at least 1")

    async def body() -> int:
        settings = _settings()
        db = await _open_db(settings)
        try:

            def run(conn: Any) -> RewrapReport:
                target = StoreRewrapTargets(conn)
                report = rewrap_command(
                    settings.data_dir, target, batch=batch, retire_old=retire, **_master(settings)
                )
                target.finish()
                return report

            report = await db.run_sync(run)
            await _audit_vault(
                db,
                "rewrap",
                {
                    "target_version": report.target_version,
                    "rewrapped": report.rewrapped,
                    "failed": report.failed,
                    "changed_meanwhile": report.changed_meanwhile,
                    "retired_versions": list(report.retired_versions),
                },
            )
        finally:
            await db.close()
        if report.ok:
            _console().print(report.summary(), highlight=False)
            return OK
        _error(report.summary())
        return ERROR

    return _run(body)


def _master(settings: Settings) -> dict[str, Any]:
    return {
        "master_key": settings.master_key.get_secret_value() if settings.master_key else None,
        "master_key_file": settings.master_key_file,
        "kms_uri": settings.kms_uri,
    }


async def _audit_vault(db: Database, action: str, details: dict[str, Any]) -> None:
    from keysentry.store import audit

    async with db.session() as s, s.begin():
        s.add(
            audit.entry(
                tenant_id=None, actor=_actor(), action=action, target=None, now=_now(), details=details
            )
        )


def _usage(message: str) -> int:
    _error(message)
    return USAGE_ERROR
