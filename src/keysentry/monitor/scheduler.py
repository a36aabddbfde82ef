"""The monitor's scheduler: claim due connections, check them within rate budgets, record, emit events.

One `Monitor` over a `MonitorRuntime` does the work for both modes:

- `claim()` takes the next batch of due connections through the `next_check_at` index and
  leases it (keysentry.store.monitoring explains the claim); `check_batch(ids, lease_until)`
  checks a claimed batch concurrently and records each result while the lease still holds,
  so a batch run twice records each connection at most once.
- Local mode: `run_monitor(settings)` (what `keysentry monitor` runs) loops over `claim()` and
  `check_batch()` in this process, and delivers webhook events as they fall due.
- Distributed mode: keysentry.monitor.celery_app calls the same two from a beat task and from
  workers.
- `record_backlog()` sets the backlog gauges (due connections left unclaimed, age of the
  oldest): after each enqueue round in distributed mode, and in local mode after a claiming
  round at most every BACKLOG_EVERY_S, when the process serves its metrics.

A check: the first round's cost is acquired from the budget (an egress address with room, or a
wait; a row that finds no room within `budget_wait_s` goes back unchecked), the adapter sends
from the leased address first through a `BudgetedTransport` (anything beyond the first round is
charged as it goes out), and a 429 or ban in the answer pauses that exchange and address (or
account) for everyone sharing the budget. The result is recorded by the store's one rule
(`check_values`: a temporary issue never changes the known state), the next check is planned by
the re-check policy, and the events of the change are written with the check, in one
transaction, for delivery (keysentry.monitor.events.record_transitions, which the lifecycle's
add, refresh and key update use too: a transition is sent once, by whichever check recorded it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from keysentry.domain import Diagnosis, Finding
from keysentry.monitor.events import connection_state, record_transitions
from keysentry.monitor.policy import ConnectionState, merge, schedule
from keysentry.store import audit, history
from keysentry.store import connections as repo
from keysentry.store import monitoring as store

if TYPE_CHECKING:
    from keysentry.monitor.service import MonitorConfig, MonitorRuntime
    from keysentry.settings import Settings

__all__ = ["BACKLOG_CAP", "BACKLOG_EVERY_S", "BatchReport", "Monitor", "run_local", "run_monitor", "state_of"]

log = logging.getLogger(__name__)

ACTOR = "monitor"
BACKLOG_CAP = 100_000  # due connections counted at most, so the count stays one short index scan
# Local mode measures the backlog at most this often: a common Prometheus scrape interval, so a
# scrape rarely sees a value older than one interval, while the two index queries (up to
# BACKLOG_CAP rows counted) run a few times a minute instead of on every 1 s tick.
BACKLOG_EVERY_S = 15.0


@dataclass(frozen=True, slots=True)
class _Skip:
    """A claimed connection given back unchecked, due again after `delay`."""

    why: str
    delay: timedelta


@dataclass
class BatchReport:
    claimed: int = 0
    checked: int = 0  # checks recorded
    skipped: int = 0  # given back unchecked (no budget, unreadable key, a failed check)
    stale: int = 0  # no longer held by the claim when loaded or recorded
    events: int = 0  # webhook deliveries queued


def state_of(row: store.BatchItem) -> ConnectionState:
    """The monitor's view of a stored connection (the columns the policy and events read)."""
    return connection_state(
        row.connection, temporary_failures=row.temporary_failures, error_streak=row.error_streak
    )


class Monitor:
    """Claims, checks and records over one runtime (one event loop)."""

    def __init__(self, runtime: MonitorRuntime, *, rng: random.Random | None = None) -> None:
        self.rt = runtime
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()  # set when there may be new work: a batch ended, events queued

    @property
    def config(self) -> MonitorConfig:
        return self.rt.config

    # -- claiming ------------------------------------------------------------------------------

    async def claim(self, limit: int | None = None) -> store.Claim | None:
        """Lease the next due connections (at most `limit`, default the batch size)."""
        now = self.rt.clock()
        async with self.rt.db.session() as s, s.begin():
            claim = await store.claim_connections(
                s, now=now, limit=limit or self.config.batch_size, lease=self.config.lease
            )
        if claim is not None:
            for due in claim.due:
                if due is not None:
                    self.rt.metrics.record_due_lag((now - due).total_seconds())
        return claim

    async def record_backlog(self) -> None:
        """Set the backlog gauges: due connections not claimed yet (at most BACKLOG_CAP counted) and
        how long the oldest of them has been due. Never raises: a failed measurement is a warning."""
        from sqlalchemy import func, select

        from keysentry.store.models import Connection

        now = self.rt.clock()
        due = (Connection.removed_at.is_(None), Connection.next_check_at <= now)
        counted = select(Connection.next_check_at).where(*due).limit(BACKLOG_CAP).subquery()
        try:
            async with self.rt.db.session() as s:
                waiting = (await s.execute(select(func.count()).select_from(counted))).scalar_one()
                oldest = (
                    await s.execute(select(func.min(Connection.next_check_at)).where(*due))
                ).scalar_one()
        except Exception as e:  # a metric must never fail the round that measures it (nor stop the loop)
            log.warning("the due backlog could not be measured (%s)", type(e).__name__)
            return
        self.rt.metrics.record_backlog(int(waiting), (now - oldest).total_seconds() if oldest else 0.0)

    async def claim_deliveries(self, limit: int = 100) -> store.Claim | None:
        now = self.rt.clock()
        async with self.rt.db.session() as s, s.begin():
            return await store.claim_deliveries(s, now=now, limit=limit, lease=self.config.lease)

    async def deliver(self, claim: store.Claim) -> int:
        from keysentry.monitor.delivery import deliver_claimed

        return await deliver_claimed(
            self.rt.db,
            self.rt.vault,
            self.rt.sender,
            claim,
            now=self.rt.clock(),
            actor=ACTOR,
            concurrency=self.config.webhook_concurrency,
        )

    # -- one batch -----------------------------------------------------------------------------

    async def check_batch(self, ids: Sequence[str], lease_until: datetime) -> BatchReport:
        """Check the connections of one claim and record each while the claim still holds it."""
        report = BatchReport(claimed=len(ids))
        now = self.rt.clock()
        async with self.rt.db.session() as s, s.begin():
            items = await store.load_batch(s, ids, lease_until)
            for item in items:  # the decrypts are logged before they happen
                s.add(_decrypt_entry(item, now))
        report.stale = len(ids) - len(items)
        results: list[tuple[store.BatchItem, Diagnosis | _Skip]] = []
        writing = asyncio.Lock()
        gate = asyncio.Semaphore(self.config.concurrency)

        async def flush() -> None:
            # Group commit: results that arrive while a write runs go together in the next one.
            async with writing:
                taken = results[:]
                del results[:]
                if taken:
                    await self._record(taken, lease_until, report)

        async def one(item: store.BatchItem) -> None:
            async with gate:
                result = await self._check(item)
            results.append((item, result))
            if not writing.locked():
                await flush()

        try:
            await asyncio.gather(*(one(item) for item in items))
        finally:
            await flush()
        self._wake.set()
        return report

    async def _check(self, item: store.BatchItem) -> Diagnosis | _Skip:
        from keysentry.diagnosis.engine import DiagnosisEngine
        from keysentry.monitor.budget import BudgetedTransport, BudgetExhausted, check_calls, cost_of
        from keysentry.store import credentials as creds
        from keysentry.vault import DecryptionFailed

        rt, row = self.rt, item.connection
        try:
            credentials = creds.open_version(rt.vault, item.version, tenant_id=row.tenant_id)
        except (DecryptionFailed, creds.CredentialsDestroyed):
            log.error("connection %s: its stored key does not decrypt; not checked", row.id)
            return _Skip("unreadable", rt.policy.interval)
        try:
            options = rt.options(row.exchange, row.environment, row.profile)
            calls = check_calls(
                row.exchange,
                needs_futures=options.profile.needs_futures,
                deposit=options.profile.deposit_currency is not None,
            )
            lease = await rt.budget.acquire(
                row.exchange,
                cost_of(row.exchange, calls),
                account=row.account_id,
                max_wait_s=self.config.budget_wait_s,
            )
        except BudgetExhausted:
            return _Skip("no rate budget", self._soon())
        except ValueError as e:  # operator configuration: an unknown profile or environment
            log.error("connection %s cannot be checked: %s", row.id, e)
            return _Skip("configuration", rt.policy.interval)
        rt.metrics.record_wait(row.exchange, lease.waited_s)
        if lease.egress_ip is not None:
            ips = options.egress_ips or rt.transport.egress_ips
            options = dataclasses.replace(
                options, egress_ips=(lease.egress_ip, *(ip for ip in ips if ip != lease.egress_ip))
            )
        transport = BudgetedTransport(
            rt.transport,
            rt.budget,
            row.exchange,
            account=row.account_id,
            prepaid=calls,
            max_wait_s=self.config.request_wait_s,
        )
        started = time.perf_counter()
        try:
            diagnosis = await DiagnosisEngine(transport, clock=rt.clock).diagnose_credentials(
                row.exchange, credentials, options
            )
        except Exception as e:  # a bug in one adapter must not stop the sweep; no message: it may quote input
            log.error("connection %s: the check failed with %s", row.id, type(e).__name__)
            rt.metrics.record_check(row.exchange, "failed", time.perf_counter() - started)
            return _Skip("check failed", self._soon())
        rt.metrics.record_check(row.exchange, diagnosis.status, time.perf_counter() - started)
        await self._obey(row.exchange, row.account_id, diagnosis.findings)
        return diagnosis

    def _soon(self) -> timedelta:
        bound = self.rt.policy.temporary_base
        return max(self.rt.policy.min_delay, bound * self._rng.random())

    async def _obey(self, exchange: str, account: str | None, findings: Sequence[Finding]) -> None:
        """Pause the exchange for everyone sharing the budget when it said 429 or banned us."""
        from keysentry.exchanges.base import Cause, Probe, ProbeOutcome

        for f in findings:
            reason = f.details.get("reason")
            if f.code != "temporary_issue" or reason not in ("rate_limited", "ip_banned"):
                continue
            banned = reason == "ip_banned"
            code = f.details.get("exchange_code")
            retry_after = f.details.get("retry_after_s")
            outcome = ProbeOutcome(
                Probe.ACCOUNT,
                Cause.IP_BANNED if banned else Cause.RATE_LIMITED,
                http_status=f.details.get("http_status"),
                code=str(code) if code is not None else None,
                retry_after_s=float(retry_after) if isinstance(retry_after, int | float) else None,
                egress_ip=f.details.get("egress_ip"),
            )
            until = await self.rt.budget.observe(exchange, outcome, account=account)
            self.rt.metrics.record_rejection(exchange, "418" if banned else "429")
            log.warning(
                "%s %s%s: paused until %s",
                exchange,
                "banned our address" if banned else "rate limited us",
                f" ({outcome.egress_ip})" if outcome.egress_ip else "",
                time.strftime("%H:%M:%S", time.gmtime(until)) if until else "its usual pause",
            )

    async def _record(
        self,
        results: list[tuple[store.BatchItem, Diagnosis | _Skip]],
        lease_until: datetime,
        report: BatchReport,
    ) -> None:
        try:
            await self._record_together(results, lease_until, report)
        except IntegrityError:
            # Another connection of the tenant took the account meanwhile (a race with an add):
            # record one at a time so only that one is given back.
            if len(results) == 1:
                item, _ = results[0]
                log.warning(
                    "connection %s: recording failed on a uniqueness conflict; retried later",
                    item.connection.id,
                )
                async with self.rt.db.session() as s, s.begin():
                    await store.release(
                        s, item.connection.id, lease_until=lease_until, at=self.rt.clock() + self._soon()
                    )
                report.skipped += 1
                return
            for one in results:
                await self._record([one], lease_until, report)

    async def _record_together(
        self,
        results: list[tuple[store.BatchItem, Diagnosis | _Skip]],
        lease_until: datetime,
        report: BatchReport,
    ) -> None:
        from keysentry.connections import with_already_connected

        now = self.rt.clock()
        counts = BatchReport()
        async with self.rt.db.session() as s, s.begin():
            checks: list[store.CheckResult] = []
            states: dict[str, tuple[ConnectionState, ConnectionState]] = {}
            for item, result in results:
                row = item.connection
                if isinstance(result, _Skip):
                    await store.release(s, row.id, lease_until=lease_until, at=now + result.delay)
                    counts.skipped += 1
                    continue
                diagnosis, learned = result, {}
                if row.account_id is None and diagnosis.account_id is not None:
                    # the first definitive check tells the account: refuse a second connection of it
                    existing = await repo.find_by_account(
                        s, row.tenant_id, row.exchange, diagnosis.account_id
                    )
                    if existing is not None and existing.id != row.id:
                        diagnosis = with_already_connected(diagnosis, existing)
                    else:
                        learned["account_id"] = diagnosis.account_id
                before = state_of(item)
                after = merge(before, diagnosis, now=now)
                planned = schedule(self.rt.policy, before, after, now=now, rng=self._rng)
                states[row.id] = (before, after)
                checks.append(
                    store.CheckResult(
                        item,
                        values={**repo.check_values(diagnosis, now=now, next_check_at=planned), **learned},
                        history=history.new_check(row.id, item.version.version, "refresh", diagnosis, now),
                        temporary_failures=after.temporary_failures,
                        error_streak=after.error_streak,
                    )
                )
            recorded = await store.record_checks(s, checks, lease_until=lease_until, now=now)
            counts.checked = len(recorded)
            counts.stale = len(checks) - len(recorded)
            counts.events = await record_transitions(
                s,
                (states[cid] for cid in sorted(recorded)),
                now=now,
                expiring_days=self.rt.policy.expiring_days,
            )
        report.checked += counts.checked
        report.skipped += counts.skipped
        report.stale += counts.stale
        report.events += counts.events
        if counts.events:
            self._wake.set()

    # -- local mode ----------------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, *, tick_s: float | None = None, backlog_every_s: float = BACKLOG_EVERY_S
    ) -> None:
        """Claim and check due batches and deliver due events until `stop` is set.

        In-flight batches finish on stop (rows not recorded by then return when their lease ends).
        When the runtime's metrics are served, the backlog gauges are set after a claiming round,
        the first at once and then at most every `backlog_every_s`.
        """
        tick = tick_s if tick_s is not None else self.config.tick_s
        batches: set[asyncio.Task[BatchReport]] = set()
        delivering: asyncio.Task[None] | None = None
        measured_at: float | None = None  # time.monotonic() of the last backlog measurement
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    while len(batches) < self.config.batches_in_flight:
                        claim = await self.claim()
                        if claim is None:
                            break
                        task = asyncio.create_task(self.check_batch(claim.ids, claim.lease_until))
                        batches.add(task)
                        task.add_done_callback(self._batch_done(batches))
                    if delivering is None or delivering.done():
                        delivering = asyncio.create_task(self._deliver_due())
                except (SQLAlchemyError, OSError) as e:
                    log.error("the monitor could not reach the database (%s); retrying", type(e).__name__)
                # After the claims, so the gauges count what this round left unclaimed. Unserved
                # metrics are never read: no query for them (`keysentry monitor` without a port).
                if self.rt.metrics.served and (
                    measured_at is None or time.monotonic() - measured_at >= backlog_every_s
                ):
                    measured_at = time.monotonic()
                    await self.record_backlog()
                await _wait_any(stop, self._wake, tick)
        finally:
            pending = [*batches, *([delivering] if delivering is not None else [])]
            if pending:
                await asyncio.wait(pending)

    def _batch_done(
        self, batches: set[asyncio.Task[BatchReport]]
    ) -> Callable[[asyncio.Task[BatchReport]], None]:
        def done(task: asyncio.Task[BatchReport]) -> None:
            batches.discard(task)
            self._wake.set()
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                log.error(
                    "a monitor batch failed (%s); its rows return when their lease ends", type(error).__name__
                )

        return done

    async def _deliver_due(self) -> None:
        try:
            while True:
                claim = await self.claim_deliveries()
                if claim is None:
                    return
                await self.deliver(claim)
        except (SQLAlchemyError, OSError) as e:
            log.error("webhook delivery could not reach the database (%s); retrying", type(e).__name__)
        except Exception as e:  # a bug must not end delivery for good; the claimed attempts come back
            log.error(
                "webhook delivery failed (%s); its claimed attempts return when their lease ends",
                type(e).__name__,
            )


def _decrypt_entry(item: store.BatchItem, now: datetime) -> object:
    from keysentry.store import credentials as creds

    version = item.version
    return audit.entry(
        tenant_id=item.connection.tenant_id,
        actor=ACTOR,
        action="decrypt",
        target=item.connection.id,
        now=now,
        details={
            "purpose": "monitor",
            "credential_version": version.version,
            "fields": [n for n in creds.FIELDS if getattr(version, f"{n}_ciphertext") is not None],
            "key_fingerprint": version.key_fingerprint,
        },
    )


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


async def run_monitor(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    tick_s: float | None = None,
    config: MonitorConfig | None = None,
) -> None:
    """The local monitor (`keysentry monitor`): re-check due connections until `stop` is set."""
    from keysentry.monitor.service import MonitorRuntime

    runtime = await MonitorRuntime.open(settings, config)
    try:
        await Monitor(runtime).run(stop or asyncio.Event(), tick_s=tick_s)
    finally:
        await runtime.close()


run_local = run_monitor  # the name `keysentry demo` looks for
