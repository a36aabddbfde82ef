"""The connection lifecycle: add, update credentials, refresh, remove, list and get.

One service layer for the CLI and the REST API, over the store (keysentry.store), the vault and
the diagnosis engine. Rules (docs/store.md explains them to operators):

- add: the key is checked first. The same API key twice (keyed hash, per tenant) is refused
  before any network call; a key of an exchange account this tenant already connected is
  refused naming that connection (`already_connected`); a key whose status is an error, or that
  could not be verified because the exchange did not answer, is refused unless the caller saves
  it anyway.
- update credentials: the new key must belong to the same exchange account; it is checked
  before the switch, and the switch is atomic (old version revoked, new one current, in one
  transaction). Connection id, label and history stay.
- refresh: re-check and record. A temporary issue never overwrites the last definitive state
  (see keysentry.store.connections for the exact rule); every check goes into the history.
- schedule and events: add, update and refresh plan the next check with the monitor's re-check
  policy (`next_check`; the API and the CLI pass the operator's, keysentry.monitor.policy.
  next_check_function) from what the monitor plans by: the stored state the check replaces
  (read under the row lock, with the backoff streaks of keysentry.store.monitoring) and the
  state it records, so the key keeps its slot in the interval, a status change is confirmed
  soon, and a temporary issue backs off from the same streak. They record the streaks as the
  monitor does (`record_streaks`; a key update starts them afresh: they count the failures of
  one key), and write the events of the change they record (connection.
  status_changed, .broken, .recovered, .expiring) through keysentry.monitor.events.
  record_transitions, in the transaction that records the check, exactly as the monitor does: a
  transition is sent once, whoever saw it first. An add counts as the first check: its first
  definitive status is a change from `unchecked`, as it is when the monitor sees it first (after
  an add saved during a temporary issue); a temporary issue sends nothing.
- remove: every credential version is crypto-shredded (ciphertexts destroyed); the audit log
  and a tombstone of the connection stay.
- list and get: never secrets; masked key and fingerprint only.

Errors, by what the caller must do (all carry a message meant for the user):

    ConnectionsError                 root
    ├── ConnectionNotFound           no such connection for this tenant (another tenant's id
    │                                included: a caller must not learn that it exists)
    ├── KeyRefused                   the key failed its check: fix it (see .diagnosis) or save anyway
    │   ├── AlreadyConnected         this exchange account is connected already: update that one
    │   └── AccountMismatch          update with a key of another account: use a key of this account
    ├── DuplicateKey                 this API key is stored already (in .existing_id)
    ├── ConnectionChanged            someone changed the connection meanwhile: run again
    └── CredentialsUnreadable        the stored key does not decrypt: enter it again (update)

Vault errors (VaultSealed: an operator must supply the master key) and store errors
(DatabaseUnavailable, ...) pass through unchanged: their messages are written for operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from keysentry.diagnosis.catalog import finding
from keysentry.diagnosis.options import OptionsFactory, options_factory
from keysentry.domain import Diagnosis, Finding, Severity, Status
from keysentry.domain.secrets import REDACTED, ApiCredentials, Secret, mask_key
from keysentry.monitor.events import DEFAULT_EXPIRING_DAYS, connection_state, record_transitions
from keysentry.monitor.policy import ConnectionState, NextCheck, merge
from keysentry.store import audit, history
from keysentry.store import connections as repo
from keysentry.store import credentials as creds_repo
from keysentry.store import monitoring as monitor_repo
from keysentry.store.db import Database
from keysentry.store.models import Connection
from keysentry.store.records import AuditView, CheckView, ConnectionRecord
from keysentry.vault import DecryptionFailed, Vault

if TYPE_CHECKING:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine

__all__ = [
    "LOCAL_TENANT",
    "AccountMismatch",
    "AlreadyConnected",
    "ConnectionChanged",
    "ConnectionNotFound",
    "ConnectionService",
    "ConnectionsError",
    "CredentialsUnreadable",
    "DuplicateKey",
    "KeyRefused",
    "NewKey",
    "NextCheck",
    "Outcome",
    "options_factory",
]

LOCAL_TENANT = repo.LOCAL_TENANT
MAX_LABEL = 200

Clock = Callable[[], datetime]
# NextCheck: (the stored state a check replaces, the state it records, now) -> when to check
# again; the monitor's re-check policy in this shape is keysentry.monitor.policy.next_check_function


# -- errors ---------------------------------------------------------------------------------------


class ConnectionsError(Exception):
    """Root of the lifecycle's errors."""


class ConnectionNotFound(ConnectionsError):
    def __init__(self, connection_id: str) -> None:
        shown = connection_id if len(connection_id) <= 64 else connection_id[:64] + "…"
        super().__init__(f"there is no connection {shown!r}; `keysentry list` shows yours")
        self.connection_id = connection_id


class KeyRefused(ConnectionsError):
    """The key was checked and is not good enough to store; `diagnosis` says why and how to fix it."""

    def __init__(
        self, diagnosis: Diagnosis, message: str | None = None, *, can_save_anyway: bool = True
    ) -> None:
        super().__init__(message or _refusal(diagnosis, can_save_anyway))
        self.diagnosis = diagnosis
        self.can_save_anyway = can_save_anyway
        # for callers that show the diagnosis just before: the sentence without its summary
        self.brief = message or _refusal(diagnosis, can_save_anyway, brief=True)


class AlreadyConnected(KeyRefused):
    def __init__(self, existing_id: str, label: str, diagnosis: Diagnosis) -> None:
        super().__init__(
            diagnosis,
            f"this {diagnosis.exchange} account is already connected as “{label}” ({existing_id}); "
            f"to use this key for it, run `keysentry update {existing_id}`",
            can_save_anyway=False,
        )
        self.existing_id = existing_id
        self.label = label


class AccountMismatch(KeyRefused):
    def __init__(self, connection_id: str, expected: str, found: str, diagnosis: Diagnosis) -> None:
        super().__init__(
            diagnosis,
            f"the new key belongs to {diagnosis.exchange} account {found}, but connection {connection_id} "
            f"is account {expected}; use a key created in account {expected}, or add the other account "
            "as a new connection",
            can_save_anyway=False,
        )
        self.expected = expected
        self.found = found


class DuplicateKey(ConnectionsError):
    def __init__(self, existing_id: str, label: str, *, same_connection: bool = False) -> None:
        if same_connection:
            message = (
                f"this is already the key of connection “{label}” ({existing_id}); nothing to update "
                f"(`keysentry refresh {existing_id}` re-checks it)"
            )
        else:
            message = f"this API key is already stored as connection “{label}” ({existing_id})"
        super().__init__(message)
        self.existing_id = existing_id
        self.label = label


class ConnectionChanged(ConnectionsError):
    def __init__(self, connection_id: str) -> None:
        super().__init__(
            f"connection {connection_id} was changed by someone else while this ran (its key was "
            "updated or it was removed); nothing was saved: run the command again"
        )
        self.connection_id = connection_id


class CredentialsUnreadable(ConnectionsError):
    def __init__(self, connection_id: str) -> None:
        super().__init__(
            f"the stored key of connection {connection_id} cannot be decrypted (it was altered, or sealed "
            f"with a vault key that is gone); enter it again with `keysentry update {connection_id}`"
        )
        self.connection_id = connection_id


def _refusal(diagnosis: Diagnosis, can_save_anyway: bool, *, brief: bool = False) -> str:
    anyway = " (or save it anyway with --save-anyway)" if can_save_anyway else ""
    status = diagnosis.status.value
    if diagnosis.status is Status.TEMPORARY_ISSUE:
        why = "" if brief else f" ({diagnosis.summary})"
        return (
            f"the key was not saved: {diagnosis.exchange} could not answer, so it was not verified{why}. "
            f"Try again later{anyway}"
        )
    if brief:
        return f"the key was not saved: its status is {status} (see above). Fix the key and try again{anyway}"
    return f"the key was not saved: {status}: {diagnosis.summary} Fix the key and try again{anyway}"


# -- inputs and results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class NewKey:
    """Credentials as the user pasted them (they are cleaned and checked before anything is stored)."""

    api_key: str
    secret: str | Secret
    passphrase: str | Secret | None = None
    key_version: int = 2  # KuCoin only

    def __repr__(self) -> str:
        pp = REDACTED if self.passphrase is not None else None
        return f"NewKey(api_key={mask_key(self.api_key.strip())!r}, secret={REDACTED}, passphrase={pp})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Outcome:
    """A stored connection and the check that was just made of it."""

    connection: ConnectionRecord
    diagnosis: Diagnosis


def _reveal(value: str | Secret | None) -> str | None:
    return value.reveal() if isinstance(value, Secret) else value


def new_connection_id() -> str:
    return f"con_{secrets.token_hex(8)}"


def with_already_connected(diagnosis: Diagnosis, existing: Connection) -> Diagnosis:
    """The diagnosis with the already_connected finding on top (it outranks the key's own state)."""
    found = finding(
        "already_connected",
        exchange=diagnosis.exchange,
        connection_id=existing.id,
        label=existing.label,
        account_id=existing.account_id,
    )
    return dataclasses.replace(diagnosis, findings=[found, *diagnosis.findings], summary=found.message)


# -- options from settings ------------------------------------------------------------------------


# -- the service ----------------------------------------------------------------------------------


class ConnectionService:
    """The lifecycle over one store. `vault` and `engine` may be None for callers that only read
    or remove (list, get, history, remove need neither)."""

    def __init__(
        self,
        db: Database,
        *,
        vault: Vault | None,
        engine: DiagnosisEngine | None,
        options: OptionsFactory | None = None,
        clock: Clock | None = None,
        next_check: NextCheck | None = None,
        expiring_days: Sequence[int] = DEFAULT_EXPIRING_DAYS,
    ) -> None:
        """`next_check` and `expiring_days`: the monitor's re-check policy and expiry warning
        thresholds, so checks recorded here are scheduled and announced as the monitor's are; the
        API and the CLI pass the operator's (KEYSENTRY_MONITOR_*). Without them: the policy's
        defaults."""
        self.db = db
        self._vault = vault
        self._engine = engine
        self._options = options
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._expiring_days = tuple(expiring_days)
        if next_check is None:
            from keysentry.monitor.policy import RecheckPolicy, next_check_function

            next_check = next_check_function(RecheckPolicy(expiring_days=self._expiring_days))
        self._next_check: NextCheck = next_check

    # -- reading -----------------------------------------------------------------------------

    async def list_connections(self, tenant: str) -> list[ConnectionRecord]:
        async with self.db.session() as s:
            return [repo.to_record(row) for row in await repo.list_live(s, tenant)]

    async def get(self, tenant: str, connection_id: str) -> ConnectionRecord:
        async with self.db.session() as s:
            return repo.to_record(await self._live(s, tenant, connection_id))

    async def history(self, tenant: str, connection_id: str, *, limit: int = 50) -> list[CheckView]:
        async with self.db.session() as s:
            await self._live(s, tenant, connection_id)
            return await history.list_checks(s, connection_id, limit)

    async def audit_log(
        self, tenant: str, connection_id: str | None = None, *, limit: int = 100
    ) -> list[AuditView]:
        async with self.db.session() as s:
            return await audit.list_entries(s, tenant_id=tenant, target=connection_id, limit=limit)

    # -- check without storing -------------------------------------------------------------------

    async def diagnose(
        self, exchange: str, key: NewKey, *, environment: str = "mainnet", profile: str = "trading"
    ) -> Diagnosis:
        """Check a key exactly as `add` would (same options, egress, profiles), storing nothing."""
        exchange = _check_exchange(exchange)
        options = self._options_for(exchange, environment, profile)
        return await self._need_engine().diagnose(
            exchange,
            key.api_key,
            _reveal(key.secret) or "",
            _reveal(key.passphrase),
            options,
            key_version=key.key_version,
        )

    # -- add ---------------------------------------------------------------------------------

    async def add(
        self,
        tenant: str,
        exchange: str,
        key: NewKey,
        *,
        label: str,
        profile: str = "trading",
        environment: str = "mainnet",
        save_anyway: bool = False,
        actor: str = "local",
    ) -> Outcome:
        exchange = _check_exchange(exchange)
        label = _check_label(label)
        options = self._options_for(exchange, environment, profile)
        credentials, input_findings = await self._clean(exchange, key, options)
        vault = self._need_vault()
        key_hash = creds_repo.api_key_hash(vault, credentials.api_key)
        async with self.db.session() as s:
            duplicate = await repo.find_by_key_hash(s, tenant, key_hash)
        if duplicate is not None:
            raise DuplicateKey(duplicate.id, duplicate.label)
        diagnosis = await self._need_engine().diagnose_credentials(
            exchange, credentials, options, input_findings
        )
        if diagnosis.account_id is not None:
            async with self.db.session() as s:
                existing = await repo.find_by_account(s, tenant, exchange, diagnosis.account_id)
            if existing is not None:
                raise AlreadyConnected(
                    existing.id, existing.label, with_already_connected(diagnosis, existing)
                )
        _acceptable(diagnosis, save_anyway)

        now = self.clock()
        connection_id = new_connection_id()
        # the add is the connection's first check: from `unchecked`, as the monitor would see it
        first = ConnectionState(connection_id=connection_id, tenant_id=tenant, exchange=exchange)
        after = merge(first, diagnosis, now=now)
        version = creds_repo.seal(
            vault,
            credentials,
            tenant_id=tenant,
            connection_id=connection_id,
            version=1,
            now=now,
            verified=_verified(diagnosis),
        )
        row = Connection(
            id=connection_id,
            tenant_id=tenant,
            exchange=exchange,
            environment=environment,
            label=label,
            profile=profile,
            account_id=diagnosis.account_id,
            masked_key=credentials.masked_key,
            key_fingerprint=version.key_fingerprint,
            api_key_hash=key_hash,
            current_version=1,
            created_at=now,
            removed_at=None,
            **repo.initial_values(diagnosis, now=now, next_check_at=self._next_check(first, after, now)),
        )
        try:
            async with self.db.session() as s, s.begin():
                await repo.ensure_tenant(s, tenant, now)
                s.add(row)
                await s.flush()  # the connection first: the others refer to it
                s.add(version)
                s.add(history.new_check(connection_id, 1, "add", diagnosis, now))
                await self._record_state(s, first, after, now)
                s.add(
                    audit.entry(
                        tenant_id=tenant,
                        actor=actor,
                        action="add",
                        target=connection_id,
                        now=now,
                        details={
                            "exchange": exchange,
                            "environment": environment,
                            "account_id": diagnosis.account_id,
                            "status": diagnosis.status.value,
                            "saved_anyway": save_anyway and not _acceptable_quietly(diagnosis),
                            "key_fingerprint": version.key_fingerprint,
                        },
                    )
                )
        except IntegrityError:
            # another add of the same account or key won the race: name it like the checks above
            await self._raise_conflict(tenant, exchange, diagnosis, key_hash)
            raise
        return Outcome(await self.get(tenant, connection_id), diagnosis)

    # -- update credentials --------------------------------------------------------------------

    async def update_credentials(
        self,
        tenant: str,
        connection_id: str,
        key: NewKey,
        *,
        save_anyway: bool = False,
        actor: str = "local",
    ) -> Outcome:
        async with self.db.session() as s:
            row = await self._live(s, tenant, connection_id)
        options = self._options_for(row.exchange, row.environment, row.profile)
        credentials, input_findings = await self._clean(row.exchange, key, options)
        vault = self._need_vault()
        key_hash = creds_repo.api_key_hash(vault, credentials.api_key)
        async with self.db.session() as s:
            duplicate = await repo.find_by_key_hash(s, tenant, key_hash)
        if duplicate is not None:
            raise DuplicateKey(duplicate.id, duplicate.label, same_connection=duplicate.id == row.id)
        diagnosis = await self._need_engine().diagnose_credentials(
            row.exchange, credentials, options, input_findings
        )
        account_id = row.account_id
        if row.account_id is not None:
            if diagnosis.account_id is None:
                # the key could not be tied to an account (error or no answer): never switch blind
                raise KeyRefused(diagnosis, _unverified_update(diagnosis, row), can_save_anyway=False)
            if diagnosis.account_id != row.account_id:
                raise AccountMismatch(row.id, row.account_id, diagnosis.account_id, diagnosis)
        elif diagnosis.account_id is not None:
            async with self.db.session() as s:
                existing = await repo.find_by_account(s, tenant, row.exchange, diagnosis.account_id)
            if existing is not None and existing.id != row.id:
                raise AlreadyConnected(
                    existing.id, existing.label, with_already_connected(diagnosis, existing)
                )
            account_id = diagnosis.account_id
        _acceptable(diagnosis, save_anyway)

        now = self.clock()
        old = row.current_version
        new = old + 1
        version = creds_repo.seal(
            vault,
            credentials,
            tenant_id=tenant,
            connection_id=row.id,
            version=new,
            now=now,
            verified=_verified(diagnosis),
        )
        try:
            async with self.db.session() as s, s.begin():
                current = await self._lock(s, tenant, row.id, old)
                if current is None:
                    raise ConnectionChanged(row.id)
                # a new key starts its backoff streaks afresh: they count one key's failures in a row
                before = connection_state(current)
                after = merge(before, diagnosis, now=now)
                # the switch: revoke the current version only if it still is current, then the new one
                if not await creds_repo.revoke(s, row.id, old, now):
                    raise ConnectionChanged(row.id)
                s.add(version)
                await s.flush()
                moved = await s.execute(
                    update(Connection)
                    .where(
                        Connection.id == row.id,
                        Connection.tenant_id == tenant,
                        Connection.current_version == old,
                        Connection.removed_at.is_(None),
                    )
                    .values(
                        current_version=new,
                        masked_key=credentials.masked_key,
                        key_fingerprint=version.key_fingerprint,
                        api_key_hash=key_hash,
                        account_id=account_id,
                        **repo.check_values(
                            diagnosis, now=now, next_check_at=self._next_check(before, after, now)
                        ),
                    )
                    .execution_options(synchronize_session=False)
                )
                if _rowcount(moved) != 1:
                    raise ConnectionChanged(row.id)
                s.add(history.new_check(row.id, new, "update", diagnosis, now))
                await self._record_state(s, before, after, now)
                s.add(
                    audit.entry(
                        tenant_id=tenant,
                        actor=actor,
                        action="update",
                        target=row.id,
                        now=now,
                        details={
                            "previous_version": old,
                            "credential_version": new,
                            "status": diagnosis.status.value,
                            "saved_anyway": save_anyway and not _acceptable_quietly(diagnosis),
                            "key_fingerprint": version.key_fingerprint,
                        },
                    )
                )
        except IntegrityError:
            async with self.db.session() as s:
                duplicate = await repo.find_by_key_hash(s, tenant, key_hash)
            if duplicate is not None and duplicate.id != row.id:
                raise DuplicateKey(duplicate.id, duplicate.label) from None
            raise ConnectionChanged(row.id) from None
        return Outcome(await self.get(tenant, row.id), diagnosis)

    # -- refresh -------------------------------------------------------------------------------

    async def refresh(self, tenant: str, connection_id: str, *, actor: str = "local") -> Outcome:
        """Check the stored key again and record the result (a temporary issue keeps the last state)."""
        row, version, credentials = await self._open(tenant, connection_id, actor=actor, purpose="refresh")
        options = self._options_for(row.exchange, row.environment, row.profile)
        diagnosis = await self._need_engine().diagnose_credentials(row.exchange, credentials, options)
        values: dict[str, Any] = {}
        if row.account_id is None and diagnosis.account_id is not None:
            async with self.db.session() as s:
                existing = await repo.find_by_account(s, tenant, row.exchange, diagnosis.account_id)
            if existing is not None and existing.id != row.id:
                diagnosis = with_already_connected(diagnosis, existing)
            else:
                values["account_id"] = diagnosis.account_id
        now = self.clock()
        async with self.db.session() as s, s.begin():
            current = await self._lock(s, tenant, row.id, version)
            if current is None:
                # the key was replaced or the connection removed while we checked: this result is stale
                raise ConnectionChanged(row.id)
            # the state this check replaces, streaks included, read under the lock: planned and
            # counted from exactly what the monitor would plan and count from
            streaks = await monitor_repo.load_streaks(s, row.id)
            before = connection_state(
                current, temporary_failures=streaks.temporary_failures, error_streak=streaks.error_streak
            )
            after = merge(before, diagnosis, now=now)
            values.update(
                repo.check_values(diagnosis, now=now, next_check_at=self._next_check(before, after, now))
            )
            recorded = await s.execute(
                update(Connection)
                .where(
                    Connection.id == row.id,
                    Connection.tenant_id == tenant,
                    Connection.current_version == version,
                    Connection.removed_at.is_(None),
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(recorded) != 1:
                raise ConnectionChanged(row.id)
            s.add(history.new_check(row.id, version, "refresh", diagnosis, now))
            await self._record_state(s, before, after, now)
            s.add(
                audit.entry(
                    tenant_id=tenant,
                    actor=actor,
                    action="refresh",
                    target=row.id,
                    now=now,
                    details={"credential_version": version, "status": diagnosis.status.value},
                )
            )
        return Outcome(await self.get(tenant, row.id), diagnosis)

    async def refresh_many(
        self,
        tenant: str,
        connection_ids: Sequence[str] | None = None,
        *,
        concurrency: int = 8,
        actor: str = "local",
        on_done: Callable[[str, Outcome | ConnectionsError], Awaitable[None] | None] | None = None,
    ) -> dict[str, Outcome | ConnectionsError]:
        """Refresh the given connections (all of the tenant's when None), `concurrency` at a time.
        A connection's own failure (not found, changed, unreadable) is its result; others propagate."""
        if connection_ids is None:
            connection_ids = [c.id for c in await self.list_connections(tenant)]
        sem = asyncio.Semaphore(max(1, concurrency))
        results: dict[str, Outcome | ConnectionsError] = {}

        async def one(cid: str) -> None:
            async with sem:
                result: Outcome | ConnectionsError
                try:
                    result = await self.refresh(tenant, cid, actor=actor)
                except ConnectionsError as e:
                    result = e
            results[cid] = result
            if on_done is not None:
                maybe = on_done(cid, result)
                if maybe is not None:
                    await maybe

        await asyncio.gather(*(one(cid) for cid in connection_ids))
        return {cid: results[cid] for cid in connection_ids}

    async def open_credentials(
        self, tenant: str, connection_id: str, *, actor: str, purpose: str
    ) -> ApiCredentials:
        """The current credentials in clear, for whoever must sign with them; audited as a decrypt."""
        _, _, credentials = await self._open(tenant, connection_id, actor=actor, purpose=purpose)
        return credentials

    # -- remove --------------------------------------------------------------------------------

    async def remove(self, tenant: str, connection_id: str, *, actor: str = "local") -> ConnectionRecord:
        """Crypto-shred every credential version and hide the connection; the audit log stays."""
        now = self.clock()
        async with self.db.session() as s, s.begin():
            row = await self._live(s, tenant, connection_id)
            record = repo.to_record(row)
            destroyed = await creds_repo.destroy_all(s, row.id, now)
            gone = await s.execute(
                update(Connection)
                .where(Connection.id == row.id, Connection.removed_at.is_(None))
                .values(removed_at=now, updated_at=now, api_key_hash=None, next_check_at=None)
                .execution_options(synchronize_session=False)
            )
            if _rowcount(gone) != 1:
                raise ConnectionNotFound(connection_id)
            s.add(
                audit.entry(
                    tenant_id=tenant,
                    actor=actor,
                    action="remove",
                    target=row.id,
                    now=now,
                    details={
                        "exchange": row.exchange,
                        "account_id": row.account_id,
                        "destroyed_versions": destroyed,
                        "key_fingerprint": row.key_fingerprint,
                    },
                )
            )
        await self._checkpoint()
        return record

    # -- internals -----------------------------------------------------------------------------

    async def _live(self, session: Any, tenant: str, connection_id: str) -> Connection:
        row = await repo.get_live(session, tenant, connection_id)
        if row is None:
            raise ConnectionNotFound(connection_id)
        return row

    async def _open(
        self, tenant: str, connection_id: str, *, actor: str, purpose: str
    ) -> tuple[Connection, int, ApiCredentials]:
        vault = self._need_vault()
        now = self.clock()
        async with self.db.session() as s, s.begin():
            row = await self._live(s, tenant, connection_id)
            version = await creds_repo.current(s, row.id)
            if version is None or version.version != row.current_version:
                raise ConnectionChanged(row.id)
            # the decrypt is logged before it happens: a crash right after still leaves its trace
            s.add(
                audit.entry(
                    tenant_id=tenant,
                    actor=actor,
                    action="decrypt",
                    target=row.id,
                    now=now,
                    details={
                        "purpose": purpose,
                        "credential_version": version.version,
                        "fields": [
                            name
                            for name in creds_repo.FIELDS
                            if getattr(version, f"{name}_ciphertext") is not None
                        ],
                        "key_fingerprint": version.key_fingerprint,
                    },
                )
            )
        try:
            credentials = creds_repo.open_version(vault, version, tenant_id=tenant)
        except (DecryptionFailed, creds_repo.CredentialsDestroyed):
            raise CredentialsUnreadable(row.id) from None
        return row, version.version, credentials

    async def _clean(
        self, exchange: str, key: NewKey, options: CheckOptions
    ) -> tuple[ApiCredentials, list[Finding]]:
        """Cleaned credentials and the findings about the input, or KeyRefused with the input findings when they cannot be right."""
        from keysentry.credentials import clean_credentials

        cleaned = clean_credentials(
            exchange,
            key.api_key,
            _reveal(key.secret) or "",
            _reveal(key.passphrase),
            key_version=key.key_version,
        )
        if cleaned.credentials is None or not cleaned.ok:
            # the engine turns the input findings into a diagnosis without sending anything
            refused = await self._need_engine().diagnose(
                exchange,
                key.api_key,
                _reveal(key.secret) or "",
                _reveal(key.passphrase),
                options,
                key_version=key.key_version,
            )
            raise KeyRefused(refused, can_save_anyway=False)
        return cleaned.credentials, list(cleaned.findings)

    def _options_for(self, exchange: str, environment: str, profile: str) -> CheckOptions:
        if self._options is None:
            from keysentry.diagnosis.engine import CheckOptions
            from keysentry.diagnosis.profiles import get_profile

            return CheckOptions(profile=get_profile(profile), environment=environment)
        return self._options(exchange, environment, profile)

    async def _lock(self, session: Any, tenant: str, connection_id: str, version: int) -> Connection | None:
        """The live row, still on credential `version`, locked until the transaction ends (SQLite's
        transactions take the write lock when they begin): the state a check replaces is read where
        it is replaced, so its events compare against what the monitor or another refresh recorded
        last, never against a copy read before the check."""
        result = await session.execute(
            select(Connection)
            .where(
                Connection.id == connection_id,
                Connection.tenant_id == tenant,
                Connection.current_version == version,
                Connection.removed_at.is_(None),
            )
            .with_for_update()
        )
        found: Connection | None = result.scalar_one_or_none()
        return found

    async def _record_state(
        self, session: Any, before: ConnectionState, after: ConnectionState, now: datetime
    ) -> None:
        """The backoff streaks and the events of recording `after` (`merge`d from the stored state
        `before`), written in `session`'s transaction exactly as the monitor writes those of its
        checks."""
        streaks = monitor_repo.Streaks(after.temporary_failures, after.error_streak)
        await monitor_repo.record_streaks(session, {after.connection_id: streaks}, now=now)
        await record_transitions(session, [(before, after)], now=now, expiring_days=self._expiring_days)

    @property
    def vault(self) -> Vault | None:
        """The vault this service seals with (None for a check-only service); webhooks share it."""
        return self._vault

    def _need_vault(self) -> Vault:
        if self._vault is None:
            raise RuntimeError("this ConnectionService was built without a vault")
        return self._vault

    def _need_engine(self) -> DiagnosisEngine:
        if self._engine is None:
            raise RuntimeError("this ConnectionService was built without a diagnosis engine")
        return self._engine

    async def _raise_conflict(self, tenant: str, exchange: str, diagnosis: Diagnosis, key_hash: str) -> None:
        async with self.db.session() as s:
            duplicate = await repo.find_by_key_hash(s, tenant, key_hash)
            existing = (
                await repo.find_by_account(s, tenant, exchange, diagnosis.account_id)
                if diagnosis.account_id is not None
                else None
            )
        if duplicate is not None:
            raise DuplicateKey(duplicate.id, duplicate.label) from None
        if existing is not None:
            raise AlreadyConnected(
                existing.id, existing.label, with_already_connected(diagnosis, existing)
            ) from None

    async def _checkpoint(self) -> None:
        """SQLite keeps old page versions in its WAL until a checkpoint: checkpoint after destroying
        ciphertexts (secure_delete zeroes them in the file itself). Best effort: when readers keep
        it busy, SQLite's own automatic checkpoints follow."""
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self.db.checkpoint()


def _acceptable(diagnosis: Diagnosis, save_anyway: bool) -> None:
    if save_anyway or _acceptable_quietly(diagnosis):
        return
    raise KeyRefused(diagnosis)


def _acceptable_quietly(diagnosis: Diagnosis) -> bool:
    """A key is stored without asking when it works: no error status, and verified by the exchange."""
    return diagnosis.severity is not Severity.ERROR and diagnosis.status is not Status.TEMPORARY_ISSUE


def _verified(diagnosis: Diagnosis) -> bool:
    return diagnosis.status is not Status.TEMPORARY_ISSUE and diagnosis.account_id is not None


def _unverified_update(diagnosis: Diagnosis, row: Connection) -> str:
    if diagnosis.status is Status.TEMPORARY_ISSUE:
        why = f"{row.exchange} could not answer ({diagnosis.summary})"
    else:
        why = f"the check failed: {diagnosis.status.value}: {diagnosis.summary}"
    return (
        f"the new key was not switched in: keysentry could not confirm it belongs to account "
        f"{row.account_id} because {why}. The old key stays in use"
    )


def _check_exchange(exchange: str) -> str:
    from keysentry.credentials import SUPPORTED_EXCHANGES

    name = exchange.strip().lower()
    if name not in SUPPORTED_EXCHANGES:
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise ValueError(f"unsupported exchange {shown!r}; supported: {', '.join(SUPPORTED_EXCHANGES)}")
    return name


def _check_label(label: str) -> str:
    label = " ".join(label.split())
    if not label:
        raise ValueError("a connection needs a label (--label), such as 'main trading bot'")
    if len(label) > MAX_LABEL:
        raise ValueError(f"the label is {len(label)} characters long; keep it under {MAX_LABEL}")
    return label


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
