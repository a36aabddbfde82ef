"""The scheduler: claims through the next_check_at index, batches recorded once per claim, the
temporary-issue rule, rate budgets obeyed, events written with the check, the backlog gauges of
the local loop (scraped from the runtime's own registry); Celery settings.

Claims run on SQLite and on the real PostgreSQL (store.backends); checks run against a Bybit
simulator on a SQLite store, with the monitor's clock a fixed offset from real time so leases
can be made to run out without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import func, select, text, update

from keysentry.connections import ConnectionService, NewKey
from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain import Diagnosis, Finding, Status, severity_of
from keysentry.domain.secrets import Secret
from keysentry.exchanges.transport import Timeouts, Transport
from keysentry.monitor.celery_app import DistributedModeError, celery_config
from keysentry.monitor.delivery import create_webhook
from keysentry.monitor.policy import ConnectionState, merge, schedule
from keysentry.monitor.scheduler import Monitor
from keysentry.monitor.service import MonitorConfig, MonitorRuntime, next_check_function
from keysentry.settings import Settings
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store import monitoring as store
from keysentry.store.db import Database
from keysentry.store.models import AuditEntry, CheckRecord, Connection
from keysentry.store.monitoring import ConnectionMonitor, WebhookDelivery, WebhookEvent
from keysentry.vault import Vault, generate_master_key
from store.backends import (  # noqa: F401 - fixtures
    NOW,
    Target,
    bybit_key,
    db,
    db_target,
    pg_database,
    pg_target,
    populate,
    vault,
)

TENANT = "t1"
LEASE = timedelta(minutes=10)


# -- claims, on both backends ------------------------------------------------------------------------


async def _due(db: Database, vault: Vault, n: int) -> list[str]:  # noqa: F811
    """n stored connections, due one minute apart from NOW on (oldest first)."""
    ids = sorted(await populate(db, vault, n, canaries=0))
    async with db.session() as s, s.begin():
        for i, cid in enumerate(ids):
            await s.execute(
                update(Connection)
                .where(Connection.id == cid)
                .values(next_check_at=NOW + timedelta(minutes=i))
            )
    return ids


async def test_a_claim_takes_due_rows_oldest_first_and_leases_them(db: Database, vault: Vault) -> None:  # noqa: F811
    ids = await _due(db, vault, 6)
    at = NOW + timedelta(minutes=3, seconds=30)  # the first four are due
    async with db.session() as s, s.begin():
        claim = await store.claim_connections(s, now=at, limit=3, lease=LEASE)
    assert claim is not None
    assert list(claim.ids) == ids[:3] and claim.lease_until == at + LEASE
    assert list(claim.due) == [NOW + timedelta(minutes=i) for i in range(3)]
    async with db.session() as s, s.begin():
        rest = await store.claim_connections(s, now=at, limit=10, lease=LEASE)
        none = await store.claim_connections(s, now=at, limit=10, lease=LEASE)
    assert rest is not None and list(rest.ids) == [ids[3]]  # leased rows are not due any more
    assert none is None
    # a lease that ran out without a result: the rows are due again
    async with db.session() as s, s.begin():
        again = await store.claim_connections(s, now=at + LEASE + timedelta(seconds=1), limit=10, lease=LEASE)
    assert again is not None and set(again.ids) == set(ids)


async def test_concurrent_claimers_never_take_the_same_row(db: Database, vault: Vault) -> None:  # noqa: F811
    ids = await _due(db, vault, 40)
    at = NOW + timedelta(hours=1)
    taken: list[str] = []

    async def claimer() -> None:
        while True:
            async with db.session() as s, s.begin():
                claim = await store.claim_connections(s, now=at, limit=3, lease=LEASE)
                await asyncio.sleep(0)  # let the other claimer run while this one holds its rows
            if claim is None:
                return
            taken.extend(claim.ids)

    await asyncio.gather(*(claimer() for _ in range(4)))
    assert sorted(taken) == sorted(ids)  # each row once, none left out


async def test_the_due_query_uses_the_next_check_index(pg_target: Target) -> None:  # noqa: F811
    database = await pg_target.open()
    try:
        async with database.session() as s, s.begin():
            await s.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table: force the choice
            plan = await s.execute(
                text(
                    "EXPLAIN SELECT id FROM connections WHERE removed_at IS NULL AND next_check_at <= now() "
                    "ORDER BY next_check_at LIMIT 100"
                )
            )
            explained = "\n".join(r[0] for r in plan)
        assert "ix_connections_next_check" in explained
    finally:
        await database.close()


# -- checks against the simulator ----------------------------------------------------------------------


@dataclass
class Clock:
    """Real time plus an offset the test moves: the simulator keeps real time, leases can expire."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Kit:
    cluster: SimCluster
    db: Database
    service: ConnectionService
    runtime: MonitorRuntime
    monitor: Monitor
    clock: Clock
    ids: dict[str, str] = field(default_factory=dict)

    async def due_now(self, *names: str) -> None:
        ids = [self.ids[n] for n in names] if names else list(self.ids.values())
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(Connection)
                .where(Connection.id.in_(ids))
                .values(next_check_at=self.clock() - timedelta(seconds=1))
            )

    async def history(self, name: str) -> list[str]:
        async with self.db.session() as s:
            rows = await s.execute(
                select(CheckRecord.status)
                .where(CheckRecord.connection_id == self.ids[name])
                .order_by(CheckRecord.id)
            )
            return list(rows.scalars())

    async def row(self, name: str) -> Connection:
        async with self.db.session() as s:
            found = await s.get(Connection, self.ids[name])
            assert found is not None
            return found

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.cluster.admin_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.cluster.admin_url + path, json=body, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()


NAMES = ("a", "b", "c", "d")


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    keys = {n: bybit_key(f"9100000{i}") for i, n in enumerate(NAMES)}
    spec = {
        "seed": 3,
        "exchanges": {
            "bybit": {
                "accounts": [
                    {
                        "id": k.account,
                        "keys": [k.spec(permissions=["Spot.SpotTrade"], ip_whitelist=["127.0.0.1"])],
                    }
                    for k in keys.values()
                ]
            }
        },
    }
    master = generate_master_key()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
        master_key=SecretStr(master),
        redis_url=None,
        egress_ips="",
    )
    config = MonitorConfig(batch_size=10, webhook_allow_private=True, budget_wait_s=0.5)
    clock = Clock()
    async with SimCluster(parse_scenario(spec)) as cluster:

        def options(exchange: str, environment: str, profile: str) -> CheckOptions:
            return CheckOptions(
                profile=get_profile(profile), environment=environment, base_url=cluster.url(exchange)
            )

        vault = Vault.open(settings.data_dir, master_key=master, create=True)
        database = await Database.open(str(settings.database_url))
        async with Transport(timeouts=Timeouts(connect=2.0, total=4.0)) as transport:
            service = ConnectionService(
                database, vault=vault, engine=DiagnosisEngine(transport), options=options, clock=clock,
                next_check=next_check_function(config.policy(), random.Random(1)),
            )  # fmt: skip
            found = Kit(cluster, database, service, None, None, clock)  # type: ignore[arg-type]
            for name, key in keys.items():
                found.ids[name] = (await service.add(TENANT, "bybit", key.new(), label=name)).connection.id
            runtime = await MonitorRuntime.open(settings, config, options=options, clock=clock)
            found.runtime, found.monitor = runtime, Monitor(runtime, rng=random.Random(2))
            try:
                yield found
            finally:
                await runtime.close()
                await database.close()


async def test_nothing_is_checked_before_it_is_due(kit: Kit) -> None:
    assert await kit.monitor.claim() is None  # just added: next checks are hours away


async def test_a_batch_records_each_connection_once_even_when_run_twice(kit: Kit) -> None:
    await kit.due_now()
    claim = await kit.monitor.claim()
    assert claim is not None and len(claim.ids) == len(NAMES)
    # the first run dies after recording two connections: run a batch of those two only
    first = await kit.monitor.check_batch(list(claim.ids[:2]), claim.lease_until)
    assert (first.checked, first.stale) == (2, 0)
    again = await kit.monitor.check_batch(list(claim.ids), claim.lease_until)  # redelivered in full
    assert (again.checked, again.stale) == (2, 2)
    third = await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    assert (third.checked, third.stale) == (0, 4)
    for name in NAMES:
        assert await kit.history(name) == ["connected", "connected"]  # the add, then one monitor check
        row = await kit.row(name)
        assert row.next_check_at is not None and row.next_check_at > kit.clock() + timedelta(hours=2)


async def test_a_batch_whose_lease_ran_out_records_nothing(kit: Kit) -> None:
    await kit.due_now("a")
    old = await kit.monitor.claim()
    assert old is not None
    kit.clock.offset += LEASE + timedelta(minutes=1)  # the claimer vanished; the lease ran out
    new = await kit.monitor.claim()
    assert new is not None and list(new.ids) == list(old.ids)
    late = await kit.monitor.check_batch(list(old.ids), old.lease_until)
    assert (late.checked, late.stale) == (0, 1)
    assert (await kit.monitor.check_batch(list(new.ids), new.lease_until)).checked == 1
    assert await kit.history("a") == ["connected", "connected"]


async def test_a_removed_connection_is_not_checked(kit: Kit) -> None:
    await kit.due_now("a", "b")
    claim = await kit.monitor.claim()
    assert claim is not None
    await kit.service.remove(TENANT, kit.ids["a"])
    report = await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    assert (report.checked, report.stale) == (1, 1)
    assert await kit.history("a") == ["connected"]


async def _event_count(kit: Kit) -> int:
    async with kit.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(WebhookEvent))).scalar_one())


async def test_maintenance_is_a_temporary_issue_over_the_last_known_state(kit: Kit) -> None:
    announced = await _event_count(kit)  # each add's first status
    assert announced == len(NAMES)
    await kit.admin("POST", "/admin/bybit/maintenance", {"active": True})
    streaks = []
    for _ in range(3):
        await kit.due_now("a")
        claim = await kit.monitor.claim()
        assert claim is not None
        before = kit.clock()
        assert (await kit.monitor.check_batch(list(claim.ids), claim.lease_until)).checked == 1
        row = await kit.row("a")
        assert (row.status, row.last_known_status) == ("temporary_issue", "connected")
        assert row.temporary_since is not None and row.next_check_at is not None
        bound = kit.runtime.policy.temporary_base * 2 ** len(streaks)
        assert row.next_check_at <= before + max(bound, kit.runtime.policy.min_delay) + timedelta(seconds=5)
        async with kit.db.session() as s:
            state = await s.get(ConnectionMonitor, kit.ids["a"])
            assert state is not None
            streaks.append(state.temporary_failures)
    assert streaks == [1, 2, 3]
    await kit.admin("POST", "/admin/bybit/maintenance", {"active": False})
    await kit.due_now("a")
    claim = await kit.monitor.claim()
    assert claim is not None
    await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    row = await kit.row("a")
    assert (row.status, row.temporary_since) == ("connected", None)
    async with kit.db.session() as s:
        state = await s.get(ConnectionMonitor, kit.ids["a"])
        assert state is not None and state.temporary_failures == 0
    assert await _event_count(kit) == announced  # nothing happened to the key: no event at all


async def test_a_change_writes_its_events_and_queues_matching_webhooks(kit: Kit) -> None:
    now = kit.clock()
    everything, _ = await create_webhook(
        kit.db, kit.runtime.vault, tenant_id=TENANT, url="http://127.0.0.1:9/all", event_types=None,
        actor="t", now=now, allow_private=True,
    )  # fmt: skip
    only_expiring, _ = await create_webhook(
        kit.db, kit.runtime.vault, tenant_id=TENANT, url="http://127.0.0.1:9/exp",
        event_types=["connection.expiring"], actor="t", now=now, allow_private=True,
    )  # fmt: skip
    await kit.admin("POST", f"/admin/bybit/keys/{_api_key(kit, 'a')}/expire")
    await kit.due_now("a")
    claim = await kit.monitor.claim()
    assert claim is not None
    report = await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    assert report.checked == 1 and report.events == 2  # status_changed and broken, to one webhook
    async with kit.db.session() as s:
        events = (
            (
                await s.execute(
                    select(WebhookEvent.type)
                    .where(WebhookEvent.data["status_before"].as_string() == "connected")  # not the adds'
                    .order_by(WebhookEvent.type)
                )
            )
            .scalars()
            .all()
        )
        queued = (await s.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.status))).all()
    assert list(events) == ["connection.broken", "connection.status_changed"]
    assert {(w, st) for w, st in queued} == {(everything.id, "pending")}
    assert only_expiring.id not in {w for w, _ in queued}
    row = await kit.row("a")
    assert (row.status, row.last_known_status) == ("expired", "expired")
    assert row.next_check_at is not None  # a status change is confirmed soon
    assert row.next_check_at <= kit.clock() + kit.runtime.policy.after_change + timedelta(seconds=5)


async def test_the_first_definitive_answer_is_announced_by_whoever_gets_it(kit: Kit) -> None:
    """An add announces its first status (a change from unchecked); one saved while the exchange
    could not answer is announced by the monitor's first definitive check instead, the same event."""
    await kit.service.remove(TENANT, kit.ids["a"])
    await kit.admin("POST", "/admin/bybit/maintenance", {"active": True})
    key = next(k for k in kit.cluster.scenario.exchanges["bybit"].accounts if k.id == "91000000").keys[0]
    again = NewKey(key.api_key, Secret(key.secret))
    kit.ids["a"] = (await kit.service.add(TENANT, "bybit", again, label="a", save_anyway=True)).connection.id
    assert await _events_of(kit, "a") == []
    await kit.admin("POST", "/admin/bybit/maintenance", {"active": False})
    await kit.due_now("a")
    claim = await kit.monitor.claim()
    assert claim is not None
    await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    assert await _events_of(kit, "a") == [("connection.status_changed", "unchecked", "connected")]
    await kit.due_now("a")  # and only once
    claim = await kit.monitor.claim()
    assert claim is not None
    assert (await kit.monitor.check_batch(list(claim.ids), claim.lease_until)).events == 0
    assert len(await _events_of(kit, "a")) == 1
    assert await _events_of(kit, "b") == [("connection.status_changed", "unchecked", "connected")]  # its add


async def _events_of(kit: Kit, name: str) -> list[tuple[str, str, str]]:
    async with kit.db.session() as s:
        rows = (
            await s.execute(
                select(WebhookEvent.type, WebhookEvent.data).where(
                    WebhookEvent.connection_id == kit.ids[name]
                )
            )
        ).all()
    return sorted((t, d["status_before"], d["status_after"]) for t, d in rows)


def _api_key(kit: Kit, name: str) -> str:
    account = f"9100000{NAMES.index(name)}"
    spec = kit.cluster.scenario.exchanges["bybit"]
    return next(k.api_key for a in spec.accounts if a.id == account for k in a.keys)


async def test_without_rate_budget_a_row_goes_back_unchecked(kit: Kit) -> None:
    await kit.due_now("a", "b")
    claim = await kit.monitor.claim()
    assert claim is not None
    # Bybit banned every address we send from: the budget holds everything back
    await kit.runtime.budget.penalize("bybit", None, 3600, True)
    report = await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    assert (report.checked, report.skipped) == (0, 2)
    assert await kit.history("a") == ["connected"]  # nothing recorded, nothing sent
    row = await kit.row("a")
    assert row.next_check_at is not None and row.next_check_at < claim.lease_until  # due again soon


async def test_a_429_pauses_the_exchange_for_everyone_on_the_budget(kit: Kit) -> None:
    await kit.admin("PATCH", "/admin/bybit/limits", {"ip_requests": 1})  # the next request is refused
    await kit.due_now()
    claim = await kit.monitor.claim()
    assert claim is not None
    await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    paused = await kit.runtime.budget.paused_until("bybit", None)
    assert paused is not None and paused > kit.clock().timestamp()
    async with kit.db.session() as s:
        statuses = (await s.execute(select(Connection.status, Connection.last_known_status))).all()
    # the refused checks are temporary issues: no key became an error
    assert {last for _, last in statuses} == {"connected"}
    assert "temporary_issue" in {st for st, _ in statuses}
    # Bybit bans an address that goes over its limit (403 for 10 minutes): counted as a ban
    rejections = kit.runtime.metrics.rejections
    counted = sum(rejections.labels("bybit", kind)._value.get() for kind in ("429", "418"))
    assert counted >= 1


async def test_every_decrypt_is_audited_for_the_monitor(kit: Kit) -> None:
    await kit.due_now("a")
    claim = await kit.monitor.claim()
    assert claim is not None
    await kit.monitor.check_batch(list(claim.ids), claim.lease_until)
    async with kit.db.session() as s:
        entries = (
            (
                await s.execute(
                    select(AuditEntry).where(AuditEntry.actor == "monitor", AuditEntry.target == kit.ids["a"])
                )
            )
            .scalars()
            .all()
        )
    assert [(e.action, e.details["purpose"]) for e in entries] == [("decrypt", "monitor")]


async def test_the_local_loop_checks_what_falls_due_and_stops_on_request(kit: Kit) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(kit.monitor.run(stop, tick_s=0.05))
    await asyncio.sleep(0.2)
    assert await kit.history("a") == ["connected"]
    await kit.due_now("a", "c")
    for _ in range(100):
        if len(await kit.history("c")) == 2:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    assert [len(await kit.history(n)) for n in NAMES] == [2, 1, 2, 1]


# -- the backlog gauges in local mode --------------------------------------------------------------------

BACKLOG = ("keysentry_due_unclaimed", "keysentry_due_oldest_seconds")


def _backlog_gauges(runtime: MonitorRuntime) -> dict[str, float]:
    """The backlog gauges as a scrape of the runtime's own registry shows them (none: never set)."""
    text = generate_latest(runtime.metrics.registry).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in BACKLOG
    }


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


async def _all_checked_again(kit: Kit) -> bool:
    return [len(await kit.history(n)) for n in NAMES] == [2] * len(NAMES)  # the add, one monitor check


async def test_a_served_local_loop_sets_the_backlog_gauges_after_claiming(kit: Kit) -> None:
    # One connection per claim and one batch at a time: the first round claims "a" and leaves three.
    config = kit.runtime.config.model_copy(update={"batch_size": 1, "batches_in_flight": 1})
    runtime = await MonitorRuntime.open(
        kit.runtime.settings, config, options=kit.runtime.options, clock=kit.clock
    )
    try:
        runtime.metrics.served = True  # what `keysentry monitor --metrics-port` does
        async with kit.db.session() as s, s.begin():
            for name, minutes in {"a": 40, "b": 30, "c": 20, "d": 10}.items():
                await s.execute(
                    update(Connection)
                    .where(Connection.id == kit.ids[name])
                    .values(next_check_at=kit.clock() - timedelta(minutes=minutes))
                )
        stop = asyncio.Event()
        loop = asyncio.create_task(Monitor(runtime).run(stop, tick_s=0.05, backlog_every_s=3600))
        await _until(lambda: _all_checked_again(kit), "the loop checked all four")
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
        # Measured once, right after the first claim, and not again within the throttle: three
        # left unclaimed, the oldest of them ("b") due for half an hour.
        gauges = _backlog_gauges(runtime)
        assert gauges["keysentry_due_unclaimed"] == 3
        assert gauges["keysentry_due_oldest_seconds"] == pytest.approx(30 * 60, abs=10)

        # Measured on every round: the next one sees nothing due.
        stop = asyncio.Event()
        loop = asyncio.create_task(Monitor(runtime).run(stop, tick_s=0.05, backlog_every_s=0))

        async def emptied() -> bool:
            return _backlog_gauges(runtime) == {
                "keysentry_due_unclaimed": 0,
                "keysentry_due_oldest_seconds": 0,
            }

        await _until(emptied, "the gauges show no backlog")
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
    finally:
        await runtime.close()


async def test_a_local_loop_whose_metrics_no_one_serves_does_not_measure_the_backlog(kit: Kit) -> None:
    assert not kit.runtime.metrics.served  # `keysentry monitor` without --metrics-port
    await kit.due_now()
    stop = asyncio.Event()
    loop = asyncio.create_task(kit.monitor.run(stop, tick_s=0.05, backlog_every_s=0))
    await _until(lambda: _all_checked_again(kit), "the loop checked all four")
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    assert _backlog_gauges(kit.runtime) == {}


async def test_a_backlog_that_cannot_be_measured_is_a_warning_and_the_loop_goes_on(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    kit.runtime.metrics.served = True
    async with kit.db.session() as s, s.begin():  # a real failure: the table is gone for a while
        await s.execute(text("ALTER TABLE connections RENAME TO connections_away"))

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if "backlog" in r.getMessage()]

    async def failed_twice() -> bool:  # measured again on a later round: the loop went on
        return loop.done() or len(failures()) >= 2

    with caplog.at_level(logging.WARNING, logger="keysentry.monitor"):
        stop = asyncio.Event()
        loop = asyncio.create_task(kit.monitor.run(stop, tick_s=0.05, backlog_every_s=0))
        await _until(failed_twice, "two measurements failed")
        assert not loop.done()
        assert set(failures()) == {"the due backlog could not be measured (OperationalError)"}  # no SQL
        assert _backlog_gauges(kit.runtime) == {}

        async with kit.db.session() as s, s.begin():
            await s.execute(text("ALTER TABLE connections_away RENAME TO connections"))
        await kit.due_now("a")

        async def recovered() -> bool:
            checked = len(await kit.history("a")) == 2
            return checked and _backlog_gauges(kit.runtime).get("keysentry_due_unclaimed") == 0

        await _until(recovered, "the loop checked 'a' and measured the backlog again")
        stop.set()
        await asyncio.wait_for(loop, timeout=5)


# -- configuration -------------------------------------------------------------------------------------


def test_short_intervals_scale_the_whole_policy() -> None:
    quick = MonitorConfig(interval_hours=0.01).policy()
    normal = MonitorConfig().policy()
    assert normal.interval == timedelta(hours=6)
    assert quick.interval == timedelta(hours=0.01)
    assert quick.after_change < normal.after_change and quick.after_change == normal.after_change * (0.01 / 6)
    assert quick.min_delay < quick.interval


def test_the_service_schedule_spreads_keys_by_their_phase_and_follows_the_policy() -> None:
    policy = MonitorConfig().policy()
    plan = next_check_function(policy, random.Random(5))
    now = datetime(2026, 3, 10, tzinfo=UTC)

    def added(
        cid: str, status: Status = Status.CONNECTED, **kw: Any
    ) -> tuple[ConnectionState, ConnectionState]:
        first = ConnectionState(connection_id=cid, tenant_id="t", exchange="bybit")
        found = Diagnosis("bybit", "mainnet", findings=findings_of(status), checked_at=now, **kw)
        return first, merge(first, found, now=now)

    healthy = [plan(*added(f"con_{i:04x}"), now) for i in range(400)]
    assert all(now + policy.interval / 2 <= t < now + policy.interval * 1.5 for t in healthy)
    assert max(healthy) - min(healthy) > policy.interval * 0.9  # spread over the interval
    # each at its own slot: the one the monitor plans for that id, every time
    assert healthy[7] == plan(*added("con_0007"), now) == schedule(policy, *added("con_0007"), now=now)
    flaky = plan(*added("con_x", Status.TEMPORARY_ISSUE), now)
    assert flaky <= now + max(policy.temporary_base, policy.min_delay)
    expiring = plan(*added("con_y", expires_at=now + timedelta(days=7, hours=1)), now)
    assert expiring == now + timedelta(hours=1) + policy.expiry_grace


def findings_of(status: Status) -> list[Finding]:
    if status is Status.CONNECTED:
        return []
    return [Finding(status.value, severity_of(status), f"{status.value} seen", status=status)]


def test_celery_settings_make_batches_at_least_once() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/3")
    conf = celery_config(settings, MonitorConfig(queue="q1", key_prefix="p1", visibility_timeout_s=42))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 42
    assert conf["broker_transport_options"]["global_keyprefix"].startswith("p1:")
    assert conf["task_default_queue"] == "q1"
    with pytest.raises(DistributedModeError, match="KEYSENTRY_REDIS_URL"):
        celery_config(Settings(redis_url=None), MonitorConfig())
