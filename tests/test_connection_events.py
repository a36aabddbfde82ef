"""Checks made by hand (add, refresh, key update) follow the monitor's policy and announce their
transitions with the monitor's events, once, whoever saw the change first.

Over the lifecycle on SQLite and PostgreSQL (store.backends) and the Bybit simulator; the
monitor runs over the same store where a test needs it. The API case runs the app as `keysentry
serve` builds it (Runtime.build), with the operator's KEYSENTRY_MONITOR_* settings.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from api.harness import ADMIN_TOKEN, Client, serving, settings_for
from keysentry.api.app import create_app
from keysentry.connections import ConnectionService
from keysentry.diagnosis.engine import CheckOptions
from keysentry.diagnosis.profiles import get_profile
from keysentry.domain import Status
from keysentry.monitor.delivery import create_webhook
from keysentry.monitor.policy import RecheckPolicy, backoff_bound, next_check_function, next_slot
from keysentry.monitor.scheduler import BatchReport, Monitor
from keysentry.monitor.service import MonitorConfig, MonitorRuntime
from keysentry.settings import Settings
from keysentry.sim.scenario import MaintenanceWindow, parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store.models import Connection
from keysentry.store.monitoring import Streaks, WebhookDelivery, WebhookEvent, load_streaks
from keysentry.vault import generate_master_key
from store.backends import (  # noqa: F401 - fixtures
    GOOD,
    Bench,
    bench,
    bybit_key,
    db,
    db_target,
    pg_database,
    vault,
)

TENANT = "local"


@pytest.fixture
async def b(db: Any, vault: Any) -> AsyncIterator[Bench]:  # noqa: F811 - the imported fixtures
    async with bench(db, vault) as it:
        yield it


@dataclasses.dataclass(frozen=True)
class Seen:
    id: str
    type: str
    tenant_id: str
    connection_id: str | None
    created_at: datetime
    data: dict[str, Any]


async def events(b: Bench, connection_id: str | None = None) -> list[Seen]:
    """Every event written so far (of one connection), oldest first."""
    query = select(WebhookEvent).order_by(WebhookEvent.created_at, WebhookEvent.type)
    if connection_id is not None:
        query = query.where(WebhookEvent.connection_id == connection_id)
    async with b.db.session() as s:
        rows = (await s.execute(query)).scalars().all()
    return [Seen(r.id, r.type, r.tenant_id, r.connection_id, r.created_at, dict(r.data)) for r in rows]


def types(seen: list[Seen]) -> list[str]:
    return sorted(e.type for e in seen)


async def added(b: Bench, name: str, **kwargs: Any) -> str:
    return (await b.service.add(TENANT, "bybit", b.key(name), label=name, **kwargs)).connection.id


def maintenance(b: Bench) -> None:
    b.bybit.maintenance.append(MaintenanceWindow(start=datetime.now(UTC) - timedelta(minutes=1)))


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# -- add: the first check ----------------------------------------------------------------------------


async def test_an_add_announces_the_first_status_as_a_change_from_unchecked(b: Bench) -> None:
    good = await added(b, "a1")
    [first] = await events(b, good)
    assert (first.type, first.tenant_id) == ("connection.status_changed", TENANT)
    assert (first.data["status_before"], first.data["status_after"]) == ("unchecked", "connected")
    broken = await added(b, "expired", save_anyway=True)
    assert types(await events(b, broken)) == ["connection.broken", "connection.status_changed"]


async def test_an_add_saved_during_a_temporary_issue_announces_nothing_until_a_definitive_answer(
    b: Bench,
) -> None:
    maintenance(b)
    cid = await added(b, "a1", save_anyway=True)
    await b.service.refresh(TENANT, cid)  # still in maintenance
    assert await events(b, cid) == []
    b.bybit.maintenance.clear()
    await b.service.refresh(TENANT, cid)
    [first] = await events(b, cid)  # the same event the monitor would send on its first answer
    assert (first.type, first.data["status_before"], first.data["status_after"]) == (
        "connection.status_changed",
        "unchecked",
        "connected",
    )


# -- refresh and update ---------------------------------------------------------------------------------


async def test_a_refresh_that_breaks_the_key_writes_its_events_once_with_their_deliveries(b: Bench) -> None:
    cid = await added(b, "a1")
    hook, _ = await create_webhook(
        b.db, b.vault, tenant_id=TENANT, url="http://127.0.0.1:9/hook", event_types=None, actor="t",
        now=datetime.now(UTC), allow_private=True,
    )  # fmt: skip
    known = {e.id for e in await events(b)}
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    record = (await b.service.refresh(TENANT, cid)).connection
    new = [e for e in await events(b, cid) if e.id not in known]
    assert types(new) == ["connection.broken", "connection.status_changed"]  # one of each
    for event in new:
        assert (event.tenant_id, event.connection_id) == (TENANT, cid)
        assert record.last_checked_at is not None
        assert as_utc(event.created_at) == record.last_checked_at  # when the check ran
        assert event.data["exchange"] == "bybit"
        assert (event.data["status_before"], event.data["status_after"]) == ("connected", "expired")
        assert event.data["severity"] == "error"
        assert {"code": "expired", "severity": "error"} in event.data["findings"]
        assert all(set(f) == {"code", "severity"} for f in event.data["findings"])  # never a message
    async with b.db.session() as s:
        queued = (await s.execute(select(WebhookDelivery.event_id, WebhookDelivery.webhook_id))).all()
    assert sorted(queued) == sorted((e.id, hook.id) for e in new)  # one pending delivery per event
    # still expired: nothing new, however often it is refreshed
    await b.service.refresh(TENANT, cid)
    await b.service.refresh_many(TENANT)
    assert len(await events(b, cid)) == len(new) + 1  # the add's, and these


async def test_a_refresh_without_a_change_writes_no_event(b: Bench) -> None:
    cid = await added(b, "a1")
    before = await events(b)
    for _ in range(3):
        assert (await b.service.refresh(TENANT, cid)).connection.status is Status.CONNECTED
    assert await events(b) == before


async def test_a_temporary_issue_writes_no_event_going_in_or_coming_out(b: Bench) -> None:
    cid = await added(b, "a1")
    before = await events(b)
    maintenance(b)
    for _ in range(2):
        shown = (await b.service.refresh(TENANT, cid)).connection
        assert (shown.status, shown.last_known_status) == (Status.TEMPORARY_ISSUE, Status.CONNECTED)
    b.bybit.maintenance.clear()
    assert (await b.service.refresh(TENANT, cid)).connection.status is Status.CONNECTED
    assert await events(b) == before
    # a key that broke during the outage: the first definitive answer says so, once
    maintenance(b)
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    await b.service.refresh(TENANT, cid)
    assert await events(b) == before
    b.bybit.maintenance.clear()
    await b.service.refresh(TENANT, cid)
    new = [e for e in await events(b, cid) if e not in before]
    assert types(new) == ["connection.broken", "connection.status_changed"]
    assert new[0].data["status_before"] == "connected"  # the last definitive status, not the outage


async def test_a_key_near_expiry_announces_its_threshold_once(b: Bench) -> None:
    cid = await added(b, "a1")
    b.sim_key("a1").expires_at = datetime.now(UTC) + timedelta(days=5)
    await b.service.refresh(TENANT, cid)
    new = (await events(b, cid))[1:]
    assert types(new) == ["connection.expiring", "connection.status_changed"]
    expiring = next(e for e in new if e.type == "connection.expiring")
    assert (expiring.data["threshold_days"], expiring.data["expires_in_days"]) == (7, 4)
    assert expiring.data["status_after"] == "expires_soon"
    await b.service.refresh(TENANT, cid)
    assert len(await events(b, cid)) == 3


async def test_an_update_that_fixes_a_broken_key_announces_the_recovery(b: Bench) -> None:
    cid = await added(b, "a1")
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    await b.service.refresh(TENANT, cid)
    known = {e.id for e in await events(b)}
    await b.service.update_credentials(TENANT, cid, b.key("a2"))
    new = [e for e in await events(b, cid) if e.id not in known]
    assert types(new) == ["connection.recovered", "connection.status_changed"]
    assert {(e.data["status_before"], e.data["status_after"]) for e in new} == {("expired", "connected")}
    # a new key of a working connection that works too: no change, no event
    known = {e.id for e in await events(b)}
    b.sim_key("a1").expires_at = None
    await b.service.update_credentials(TENANT, cid, b.key("a1"))
    assert [e for e in await events(b) if e.id not in known] == []


# -- with the monitor ------------------------------------------------------------------------------------


@asynccontextmanager
async def monitor_of(
    b: Bench, tmp_path: Path, *, rng: random.Random | None = None, clock: Any = None
) -> AsyncIterator[Monitor]:
    """The monitor over the bench's store, vault and simulator (its clock and random source given)."""

    def options(exchange: str, environment: str, profile: str) -> CheckOptions:
        return CheckOptions(
            profile=get_profile(profile),
            environment=environment,
            base_url=b.cluster.url(exchange, environment),
        )

    settings = Settings(
        data_dir=tmp_path / "monitor",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'monitor.db'}",
        master_key=SecretStr(generate_master_key()),
        redis_url=None,
        egress_ips="",
    )
    runtime = await MonitorRuntime.open(
        settings, MonitorConfig(budget_wait_s=1.0), options=options, clock=clock
    )
    own_db = runtime.db
    await own_db.close()
    runtime.db, runtime.vault = b.db, b.vault
    try:
        yield Monitor(runtime, rng=rng)
    finally:
        runtime.db = own_db  # the bench closes its own store
        await runtime.close()


async def due_now(b: Bench, cid: str) -> None:
    async with b.db.session() as s, s.begin():
        await s.execute(
            update(Connection)
            .where(Connection.id == cid)
            .values(next_check_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def monitor_pass(monitor: Monitor) -> tuple[BatchReport, Any]:
    claim = await monitor.claim()
    assert claim is not None
    return await monitor.check_batch(list(claim.ids), claim.lease_until), claim


async def test_the_monitor_does_not_repeat_what_a_refresh_announced_nor_the_reverse(
    b: Bench, tmp_path: Path
) -> None:
    one, two = await added(b, "a1"), await added(b, "b1")
    async with monitor_of(b, tmp_path) as monitor:
        # a refresh sees the break first: the monitor's check after it sends nothing
        b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await b.service.refresh(TENANT, one)
        sent = await events(b, one)
        await due_now(b, one)
        report, _ = await monitor_pass(monitor)
        assert (report.checked, report.events) == (1, 0)
        assert await events(b, one) == sent
        assert [c.trigger for c in await b.service.history(TENANT, one)][:2] == ["refresh", "refresh"]
        # the monitor sees the break first: a refresh after it sends nothing
        b.sim_key("b1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await due_now(b, two)
        report, _ = await monitor_pass(monitor)
        assert report.checked == 1
        sent = await events(b, two)
        assert types(sent) == ["connection.broken", "connection.status_changed", "connection.status_changed"]
        await b.service.refresh(TENANT, two)
        assert await events(b, two) == sent


async def test_a_refresh_recorded_while_the_monitor_checks_is_the_one_that_announces(
    b: Bench, tmp_path: Path
) -> None:
    cid = await added(b, "a1")
    async with monitor_of(b, tmp_path) as monitor:
        await due_now(b, cid)
        claim = await monitor.claim()
        assert claim is not None  # the monitor holds the row ...
        b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
        await b.service.refresh(TENANT, cid)  # ... when the user's refresh records the break
        report = await monitor.check_batch(list(claim.ids), claim.lease_until)
        assert (report.checked, report.stale) == (0, 1)  # its result came too late: not recorded
    assert types((await events(b, cid))[1:]) == ["connection.broken", "connection.status_changed"]


# -- scheduling by the monitor's policy --------------------------------------------------------------------


async def test_a_refresh_is_scheduled_by_the_policy_not_a_fixed_delay(b: Bench) -> None:
    cid = await added(b, "a1")
    policy = MonitorConfig().policy()
    for _ in range(3):
        record = (await b.service.refresh(TENANT, cid)).connection
        # a healthy key: its own slot in the interval after the next half interval, every time
        assert record.next_check_at == next_slot(
            cid, not_before=record.updated_at + policy.interval / 2, interval=policy.interval
        )
    maintenance(b)
    record = (await b.service.refresh(TENANT, cid)).connection
    assert record.next_check_at is not None
    assert record.next_check_at - record.updated_at <= max(policy.temporary_base, policy.min_delay)


def frozen(at: datetime) -> Any:
    return lambda: at


def scheduled(b: Bench, *, rng: random.Random, clock: Any) -> None:
    """The bench's service with the monitor's policy, a seeded random source and a fixed clock."""
    b.service = ConnectionService(
        b.db, vault=b.vault, engine=b.service._engine, options=b.service._options, clock=clock,
        next_check=next_check_function(MonitorConfig().policy(), rng),
    )  # fmt: skip


async def streaks(b: Bench, cid: str) -> Streaks:
    async with b.db.session() as s:
        return await load_streaks(s, cid)


async def planned(b: Bench, cid: str) -> datetime:
    async with b.db.session() as s:
        row = await s.get(Connection, cid)
        assert row is not None and row.next_check_at is not None
        return as_utc(row.next_check_at)


def world(b: Bench, step: str) -> None:
    """The exchange as the next check finds it: in maintenance, the keys expired, or all fine."""
    b.bybit.maintenance.clear()
    expiry = datetime.now(UTC) - timedelta(seconds=1) if step == "expired" else None
    for name in ("a1", "b1"):
        b.sim_key(name).expires_at = expiry
    if step == "temporary":
        maintenance(b)


async def test_refreshes_plan_and_count_exactly_as_monitor_checks_do(b: Bench, tmp_path: Path) -> None:
    # two keys through the same results, one refreshed by hand, one checked by the monitor, at
    # the same moment with the same random draws: the same streaks and the same schedule
    at = datetime.now(UTC) + timedelta(seconds=5)
    policy = MonitorConfig().policy()
    by_hand, by_monitor = await added(b, "a1"), await added(b, "b1")
    scheduled(b, rng=random.Random(11), clock=frozen(at))
    steps = ["temporary"] * 3 + ["ok"] + ["expired"] * 3 + ["ok", "temporary", "ok"]
    expected = [(1, 0), (2, 0), (3, 0), (0, 0), (0, 1), (0, 2), (0, 3), (0, 0), (1, 0), (0, 0)]
    async with monitor_of(b, tmp_path, rng=random.Random(11), clock=frozen(at)) as monitor:
        for i, (step, counts) in enumerate(zip(steps, expected, strict=True)):
            world(b, step)
            await b.service.refresh(TENANT, by_hand)
            await due_now(b, by_monitor)
            report, _ = await monitor_pass(monitor)
            assert report.checked == 1, step
            assert await streaks(b, by_hand) == await streaks(b, by_monitor) == Streaks(*counts), step
            hand, monitored = await planned(b, by_hand), await planned(b, by_monitor)
            if step == "ok" and steps[i - 1] == "expired":  # a change (expired -> connected): soon
                assert hand == monitored == at + policy.after_change
            elif step == "ok":  # healthy, as before the outage: each at its own slot
                for cid, when in ((by_hand, hand), (by_monitor, monitored)):
                    assert when == next_slot(
                        cid, not_before=at + policy.interval / 2, interval=policy.interval
                    )
            else:  # backoff: the same draw from the same streak
                assert hand == monitored, step
    for cid in (by_hand, by_monitor):  # the add, then one check per step
        assert len(await b.service.history(TENANT, cid)) == 1 + len(steps)


async def test_a_refresh_continues_the_monitors_streak_and_the_monitor_continues_the_refreshs(
    b: Bench, tmp_path: Path
) -> None:
    at = datetime.now(UTC) + timedelta(seconds=5)
    policy = MonitorConfig().policy()
    cid = await added(b, "a1")
    scheduled(b, rng=random.Random(1), clock=frozen(at))
    maintenance(b)
    async with monitor_of(b, tmp_path, clock=frozen(at)) as monitor:
        for failures in range(1, 7):
            if failures % 2:
                await due_now(b, cid)
                report, _ = await monitor_pass(monitor)
                assert report.checked == 1
            else:
                await b.service.refresh(TENANT, cid)
            assert await streaks(b, cid) == Streaks(failures, 0)
            # backed off by the whole streak, whoever checked: not from 1 again after each refresh
            bound = backoff_bound(failures, base=policy.temporary_base, cap=policy.temporary_cap)
            assert at + policy.min_delay <= await planned(b, cid) <= at + max(bound, policy.min_delay)
        b.bybit.maintenance.clear()
        await b.service.refresh(TENANT, cid)  # an answer ends the streak ...
        assert await streaks(b, cid) == Streaks(0, 0)
        maintenance(b)
        await due_now(b, cid)
        await monitor_pass(monitor)
        assert await streaks(b, cid) == Streaks(1, 0)  # ... so the monitor's next one starts afresh
        assert await planned(b, cid) <= at + max(policy.temporary_base, policy.min_delay)


async def test_a_status_change_by_refresh_or_update_is_confirmed_soon(b: Bench) -> None:
    at = datetime.now(UTC) + timedelta(seconds=5)
    policy = MonitorConfig().policy()
    cid = await added(b, "a1")
    scheduled(b, rng=random.Random(2), clock=frozen(at))
    b.sim_key("a1").expires_at = datetime.now(UTC) - timedelta(seconds=1)
    await b.service.refresh(TENANT, cid)  # connected -> expired
    assert await planned(b, cid) == at + policy.after_change
    assert await streaks(b, cid) == Streaks(0, 1)
    await b.service.refresh(TENANT, cid)  # still expired: no change, backoff by the error streak
    assert await streaks(b, cid) == Streaks(0, 2)
    bound = backoff_bound(2, base=policy.error_base, cap=min(policy.error_cap, policy.interval))
    assert await planned(b, cid) <= at + max(bound, policy.min_delay)
    await b.service.update_credentials(TENANT, cid, b.key("a2"))  # a working key: expired -> connected
    assert await planned(b, cid) == at + policy.after_change
    assert await streaks(b, cid) == Streaks(0, 0)
    await b.service.refresh(TENANT, cid)  # connected again: back to its own slot
    assert await planned(b, cid) == next_slot(
        cid, not_before=at + policy.interval / 2, interval=policy.interval
    )


async def test_an_add_counts_as_the_first_check_of_the_streaks(b: Bench, tmp_path: Path) -> None:
    at = datetime.now(UTC) + timedelta(seconds=5)
    policy = RecheckPolicy()
    scheduled(b, rng=random.Random(4), clock=frozen(at))
    maintenance(b)
    cid = await added(b, "a1", save_anyway=True)  # saved during a temporary issue: its first failure
    assert await streaks(b, cid) == Streaks(1, 0)
    assert await planned(b, cid) <= at + max(policy.temporary_base, policy.min_delay)
    async with monitor_of(b, tmp_path, clock=frozen(at)) as monitor:
        await due_now(b, cid)
        await monitor_pass(monitor)
    assert await streaks(b, cid) == Streaks(2, 0)  # the monitor's check is the second in a row
    b.bybit.maintenance.clear()
    healthy = await added(b, "b1")
    assert await streaks(b, healthy) == Streaks(0, 0)
    assert await planned(b, healthy) == next_slot(
        healthy, not_before=at + policy.interval / 2, interval=policy.interval
    )


@pytest.fixture
def sim_keys() -> dict[str, Any]:
    return {f"k{i}": bybit_key(f"7700000{i}") for i in range(4)}


@pytest.fixture
async def cluster(sim_keys: dict[str, Any]) -> AsyncIterator[SimCluster]:
    spec = {
        "seed": 9,
        "exchanges": {
            "bybit": {"accounts": [{"id": k.account, "keys": [k.spec(**GOOD)]} for k in sim_keys.values()]}
        },
    }
    async with SimCluster(parse_scenario(spec)) as found:
        yield found


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    import os

    for name in [n for n in os.environ if n.startswith("KEYSENTRY_")]:
        monkeypatch.delenv(name)
    yield monkeypatch


async def test_keys_added_through_the_api_follow_the_operators_monitor_policy(
    tmp_path: Path, cluster: SimCluster, sim_keys: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("KEYSENTRY_BYBIT_BASE_URL", cluster.url("bybit"))
    clean_env.setenv("KEYSENTRY_MONITOR_INTERVAL_HOURS", "2")  # what the monitor of this deployment reads
    settings = settings_for(
        tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}", master_key=SecretStr(generate_master_key()),
        egress_ips="",
    )  # fmt: skip
    interval = timedelta(hours=2)
    app = create_app(settings)  # no service given: built as `keysentry serve` builds it
    async with serving(app) as base, aiohttp.ClientSession() as http:
        client = Client(base, http)
        made = await client.call("POST", "/v1/tenants", token=ADMIN_TOKEN, json_body={"name": "platform"})
        tenant = made.json["id"]
        issued = await client.call(
            "POST", f"/v1/tenants/{tenant}/tokens", token=ADMIN_TOKEN, json_body={"name": "t"}
        )
        token = issued.json["token"]
        records = []
        for name, key in sim_keys.items():
            body = {"exchange": "bybit", "label": name, "api_key": key.api_key, "secret": key.secret}
            reply = await client.call("POST", "/v1/connections", token=token, json_body=body)
            assert reply.status == 201, reply.text
            records.append(reply.json["connection"])
        plans = [
            datetime.fromisoformat(r["next_check_at"]) - datetime.fromisoformat(r["updated_at"])
            for r in records
        ]
        # the operator's 2-hour interval (not the 6-hour default, nor a fixed placeholder delay),
        # each key at its own place within it
        assert all(interval / 2 <= p < interval * 3 / 2 for p in plans), plans
        assert len(set(plans)) == len(plans)
        for r in records:  # the slot the monitor plans for that connection
            at = datetime.fromisoformat(r["updated_at"])
            assert datetime.fromisoformat(r["next_check_at"]) == next_slot(
                r["id"], not_before=at + interval / 2, interval=interval
            )
        # a refresh through the API that finds the key broken announces it, once
        cid = records[0]["id"]
        account = cluster.scenario.exchanges["bybit"].find_key(sim_keys["k0"].api_key)
        assert account is not None
        account[0].expires_at = datetime.now(UTC) - timedelta(seconds=1)
        policy = MonitorConfig(interval_hours=2).policy()
        for attempt in (1, 2):
            refreshed = await client.call("POST", f"/v1/connections/{cid}/refresh", token=token)
            assert refreshed.status == 200, refreshed.text
            shown = refreshed.json["connection"]
            delay = datetime.fromisoformat(shown["next_check_at"]) - datetime.fromisoformat(
                shown["updated_at"]
            )
            if attempt == 1:  # connected -> expired: confirmed soon, by the operator's scaled policy
                assert delay == policy.after_change
            else:  # still broken: the second error in a row backs off within its bound
                cap = min(policy.error_cap, policy.interval)
                assert delay <= max(backoff_bound(2, base=policy.error_base, cap=cap), policy.min_delay)
        runtime_db = app.state.keysentry.service.db
        async with runtime_db.session() as s:
            rows = (
                await s.execute(
                    select(WebhookEvent.type, WebhookEvent.tenant_id).where(WebhookEvent.connection_id == cid)
                )
            ).all()
    assert sorted(rows) == sorted(
        [
            ("connection.status_changed", tenant),  # the add: unchecked -> connected
            ("connection.status_changed", tenant),  # the refresh: connected -> expired
            ("connection.broken", tenant),
        ]
    )
