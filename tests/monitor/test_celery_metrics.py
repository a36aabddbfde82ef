"""Prometheus metrics of distributed mode: a real `keysentry worker` (prefork, two pool processes)
on the real Redis broker and PostgreSQL checks keys against the simulators; its /metrics sums
what every pool process recorded (prometheus_client's multiprocess mode).

Also, without services: the multiprocess registry sums processes that have exited, the backlog
gauges (due connections left unclaimed, age of the oldest), and the metrics settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import update

import canary
from conftest import PG_HOST, PG_PORT, REDIS_HOST, REDIS_PORT, pg_query
from keysentry.domain import Diagnosis
from keysentry.domain.secrets import ApiCredentials, Secret
from keysentry.monitor.celery_app import metrics_config
from keysentry.monitor.metrics import multiprocess_registry
from keysentry.monitor.scheduler import Monitor
from keysentry.monitor.service import MonitorConfig, MonitorRuntime
from keysentry.settings import Settings
from keysentry.sim.scenario import parse_scenario
from keysentry.sim.server import SimCluster
from keysentry.store import connections as repo
from keysentry.store import credentials as creds
from keysentry.store.db import Database
from keysentry.store.models import Connection
from keysentry.vault import Vault, generate_master_key
from store.backends import NOW, bybit_key, okx_key, populate

TENANT = "t1"
START_TIMEOUT_S = 30.0  # ceilings for a loaded machine; about 4 s and 3 s usually
SWEEP_TIMEOUT_S = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """Values of sample `name` keyed by the given labels' values (zeros left out)."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, pairs), value in samples.items():
        if sample == name and value:
            found = dict(pairs)
            out[tuple(found[label] for label in labels)] = value
    return out


# -- a worker process with several pool processes, over the real services --------------------------------


@dataclass(frozen=True)
class Key:
    """One stored connection: what the store holds, what the simulator knows, what it should show."""

    exchange: str
    api_key: str
    secret: str  # stored (a canary)
    account: str
    passphrase: str | None
    sim: dict[str, Any]  # the simulator's key spec
    expected: str


def _keys() -> list[Key]:
    keys: list[Key] = []

    def add(exchange: str, account: str, expected: str, *, wrong_secret: bool = False, **spec: Any) -> None:
        k = bybit_key(account) if exchange == "bybit" else okx_key(account)
        sim = k.spec(**spec)
        if wrong_secret:  # the simulator holds another secret: the stored one signs wrongly
            sim["secret"] = bybit_key("0").secret if exchange == "bybit" else okx_key("0").secret
        keys.append(Key(exchange, k.api_key, k.secret, account, k.passphrase, sim, expected))

    spot, okx_perms = ["Spot.SpotTrade"], ["read_only", "trade"]
    add("bybit", "71000001", "connected", permissions=spot, created_at="-1d")
    add("bybit", "71000002", "connected", permissions=spot, created_at="-2d")
    add("bybit", "71000003", "expires_soon", permissions=spot, created_at="-85d")  # 90-day rule
    add("bybit", "71000004", "expired", permissions=spot, created_at="-95d")
    add("bybit", "71000005", "secret_mismatch", wrong_secret=True, permissions=spot, created_at="-1d")
    add("okx", "81000001", "connected", permissions=okx_perms, created_at="-1d")
    add("okx", "81000002", "connected", permissions=okx_perms, created_at="-1d")
    add("okx", "81000003", "secret_mismatch", wrong_secret=True, permissions=okx_perms, created_at="-1d")
    return keys


def _scenario(keys: list[Key]) -> dict[str, Any]:
    # A fixed delay per request: batches overlap, so both pool processes take some.
    exchanges: dict[str, Any] = {
        name: {"faults": {"latency": {"distribution": "fixed", "ms": 120}}, "accounts": []}
        for name in ("bybit", "okx")
    }
    for k in keys:
        exchanges[k.exchange]["accounts"].append({"id": k.account, "keys": [k.sim]})
    return {"seed": 5, "exchanges": exchanges}


async def _store(db: Database, vault: Vault, keys: list[Key]) -> None:
    """The connections, each due a minute ago (as if last checked long ago)."""
    now = datetime.now(UTC)
    versions = []
    async with db.session() as s, s.begin():
        await repo.ensure_tenant(s, TENANT, now)
        for i, k in enumerate(keys):
            cid = f"con_{i:04d}"
            given = ApiCredentials(
                k.api_key, Secret(k.secret), Secret(k.passphrase) if k.passphrase else None
            )
            version = creds.seal(
                vault, given, tenant_id=TENANT, connection_id=cid, version=1, now=now, verified=True
            )
            versions.append(version)
            last = Diagnosis(exchange=k.exchange, environment="mainnet", checked_at=now - timedelta(hours=6))
            s.add(
                Connection(
                    id=cid, tenant_id=TENANT, exchange=k.exchange, environment="mainnet", label=f"bot {i}",
                    profile="trading", account_id=k.account, masked_key=given.masked_key,
                    key_fingerprint=version.key_fingerprint, api_key_hash=creds.api_key_hash(vault, k.api_key),
                    current_version=1, created_at=now, removed_at=None,
                    **repo.initial_values(last, now=now, next_check_at=now - timedelta(minutes=1)),
                )
            )  # fmt: skip
        await s.flush()
        s.add_all(versions)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def processes() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def _start(name: str, args: list[str], env: dict[str, str], folder: Path) -> Proc:
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keysentry", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
            start_new_session=True,  # its own process group: stopping it stops its pool processes
        )
    return Proc(name, process, log)


_ANNOUNCED = re.compile(
    r"metrics of this worker and its pool processes on (http://\S+/metrics) \(files in (.+)\)"
)


async def _announced(worker: Proc) -> tuple[str, Path]:
    """The URL and the multiprocess directory the worker logged on start."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _ANNOUNCED.search(worker.output())
        if found:
            return found[1], Path(found[2])
        assert worker.process.poll() is None, f"the worker exited: {canary.redact(worker.output()[-3000:])}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"the worker did not announce its metrics: {canary.redact(worker.output()[-3000:])}")


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as answer:
        assert answer.status == 200
        return await answer.text()


def _per_process(folder: Path) -> dict[str, float]:
    """Checks counted in each pool process's counter file (pid: total)."""
    out: dict[str, float] = {}
    for path in sorted(folder.glob("counter_*.db")):
        merged = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
        out[path.stem.rpartition("_")[2]] = sum(
            s.value for m in merged if m.name == "keysentry_checks" for s in m.samples
        )
    return out


@pytest.mark.services
@pytest.mark.timeout(90)
async def test_a_worker_serves_the_checks_of_all_its_pool_processes(
    tmp_path: Path, pg_database: str, redis_prefix: str, processes: list[Proc]
) -> None:
    keys = _keys()
    master = generate_master_key()
    data_dir = tmp_path / "data"
    vault = Vault.open(data_dir, master_key=master, create=True)
    url = f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/{pg_database}"
    db = await Database.open(url)
    try:
        await _store(db, vault, keys)
    finally:
        await db.close()

    async with SimCluster(parse_scenario(_scenario(keys))) as cluster:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSENTRY_", "PROMETHEUS_"))}
        env.update(
            PYTHONUNBUFFERED="1",
            KEYSENTRY_DATA_DIR=str(data_dir),
            KEYSENTRY_MASTER_KEY=master,
            KEYSENTRY_DATABASE_URL=url,
            KEYSENTRY_REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            KEYSENTRY_BYBIT_BASE_URL=cluster.url("bybit"),
            KEYSENTRY_OKX_BASE_URL=cluster.url("okx"),
            KEYSENTRY_MONITOR_QUEUE=f"{redis_prefix}-monitor",
            KEYSENTRY_MONITOR_KEY_PREFIX=redis_prefix,
            KEYSENTRY_MONITOR_BATCH_SIZE="1",  # one batch per connection: both pool processes work
            KEYSENTRY_MONITOR_BEAT_S="0.5",
        )
        worker = _start(
            "worker",
            [
                "worker",
                "--concurrency",
                "2",
                "--pool",
                "prefork",
                "--metrics-port",
                "0",
                "--hostname",
                "m1@%h",
            ],
            env,
            tmp_path,
        )
        beat = _start("beat", ["beat", "--schedule-file", str(tmp_path / "beat-schedule")], env, tmp_path)
        processes.extend([worker, beat])
        metrics_url, folder = await _announced(worker)
        assert folder.is_dir()

        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        history: list[Any] = []
        while time.monotonic() < deadline:
            history = await pg_query(
                "SELECT c.exchange, h.status FROM check_history h JOIN connections c ON c.id = h.connection_id",
                pg_database,
            )
            if len(history) >= len(keys):
                break
            for p in processes:
                assert p.process.poll() is None, f"{p.name} exited: {canary.redact(p.output()[-3000:])}"
            await asyncio.sleep(0.2)
        assert len(history) == len(keys), f"{len(history)} of {len(keys)} checked in {SWEEP_TIMEOUT_S:g} s"

        # The last enqueue round left nothing unclaimed: the backlog gauges say so.
        samples: Samples = {}
        while time.monotonic() < deadline + 5:
            samples = parse(await _scrape(metrics_url))
            if samples.get(("keysentry_due_unclaimed", ())) == 0:
                break
            await asyncio.sleep(0.2)
        text = await _scrape(metrics_url)
        samples = parse(text)

    expected = Counter((k.exchange, k.expected) for k in keys)
    recorded = Counter((r["exchange"], r["status"]) for r in history)
    assert recorded == expected  # the statuses the scenario was written for
    checks = by_label(samples, "keysentry_checks_total", "exchange", "outcome")
    assert checks == {key: float(n) for key, n in expected.items()}

    per_exchange = Counter(k.exchange for k in keys)
    assert by_label(samples, "keysentry_check_latency_seconds_count", "exchange") == {
        (e,): float(n) for e, n in per_exchange.items()
    }
    assert by_label(samples, "keysentry_ratelimit_wait_seconds_count", "exchange") == {
        (e,): float(n) for e, n in per_exchange.items()
    }
    assert samples[("keysentry_due_lag_seconds_count", ())] == len(keys)  # one per claimed connection
    assert samples[("keysentry_due_unclaimed", ())] == 0
    assert samples[("keysentry_due_oldest_seconds", ())] == 0
    assert by_label(samples, "keysentry_exchange_rejections_total", "exchange", "kind") == {}

    # Several pool processes checked, each in its own file, and the scrape is their sum.
    contributed = {pid: n for pid, n in _per_process(folder).items() if n}
    assert len(contributed) >= 2, f"checks by pool process: {contributed}"
    assert sum(contributed.values()) == len(keys)

    # No secret anywhere: not in the exposition, the metric files or the processes' output.
    assert canary.scan(text) == []
    for path in folder.iterdir():
        assert canary.scan(path.read_bytes().decode("latin-1")) == [], path.name
    for p in processes:
        p.stop()
        assert canary.scan(p.output()) == [], f"{p.name} wrote a canary secret"
    assert worker.process.returncode == 0, canary.redact(worker.output()[-3000:])
    assert not folder.exists()  # the worker's own temporary directory is removed on shutdown


# -- multiprocess mode without Celery --------------------------------------------------------------------

_RECORDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from keysentry.monitor.metrics import MonitorMetrics
    m = MonitorMetrics()
    for exchange, _, n in (part.partition(":") for part in sys.argv[1].split(",")):
        for _ in range(int(n)):
            m.record_check(exchange, "connected", 0.2)
        m.record_check(exchange, "expired", 0.3)
        m.record_rejection(exchange, "429")
    m.record_due_lag(5.0)
    while sys.argv[3] and not Path(sys.argv[3]).exists():  # the test says when
        time.sleep(0.01)
    due = int(sys.argv[2])
    m.record_backlog(due, due * 10.0)
    """
)


def test_the_multiprocess_registry_sums_processes_that_have_exited(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    go = tmp_path / "go"
    first, last = (  # the last sets the backlog last
        subprocess.Popen([sys.executable, "-c", _RECORDER, checks, due, wait], env=env)
        for checks, due, wait in (("bybit:3,okx:4", "7", ""), ("bybit:2", "3", str(go)))
    )
    assert first.wait(timeout=30) == 0
    go.touch()
    assert last.wait(timeout=30) == 0
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) == 2  # one file per process

    samples = parse(generate_latest(multiprocess_registry(tmp_path / "metrics")).decode())
    assert by_label(samples, "keysentry_checks_total", "exchange", "outcome") == {
        ("bybit", "connected"): 5.0,
        ("bybit", "expired"): 2.0,
        ("okx", "connected"): 4.0,
        ("okx", "expired"): 1.0,
    }
    assert by_label(samples, "keysentry_check_latency_seconds_count", "exchange") == {
        ("bybit",): 7.0,
        ("okx",): 5.0,
    }
    assert samples[("keysentry_check_latency_seconds_sum", (("exchange", "okx"),))] == pytest.approx(1.1)
    bucket = ("keysentry_check_latency_seconds_bucket", (("exchange", "bybit"), ("le", "0.25")))
    assert samples[bucket] == 5.0  # histograms sum bucket by bucket
    assert samples[("keysentry_due_lag_seconds_count", ())] == 2
    assert by_label(samples, "keysentry_exchange_rejections_total", "exchange", "kind") == {
        ("bybit", "429"): 2.0,
        ("okx", "429"): 1.0,
    }
    # Gauges are the most recent value, whichever process set it.
    assert samples[("keysentry_due_unclaimed", ())] == 3
    assert samples[("keysentry_due_oldest_seconds", ())] == 30.0


# -- the backlog gauges -----------------------------------------------------------------------------------


async def test_the_backlog_counts_due_connections_left_unclaimed(tmp_path: Path) -> None:
    master = generate_master_key()
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'ks.db'}",
        master_key=SecretStr(master),
        redis_url=None,
        egress_ips="",
    )
    runtime = await MonitorRuntime.open(settings, MonitorConfig(batch_size=2), clock=lambda: NOW)
    try:
        assert b"keysentry_due_unclaimed" not in runtime.metrics.render()  # not before it is measured
        ids = sorted(await populate(runtime.db, runtime.vault, 6, canaries=1))
        due_at = {ids[0]: 50, ids[1]: 40, ids[2]: 30, ids[3]: -10, ids[4]: -20, ids[5]: 90}  # minutes ago
        async with runtime.db.session() as s, s.begin():
            for cid, minutes in due_at.items():
                await s.execute(
                    update(Connection)
                    .where(Connection.id == cid)
                    .values(next_check_at=NOW - timedelta(minutes=minutes))
                )
            await s.execute(update(Connection).where(Connection.id == ids[5]).values(removed_at=NOW))
        monitor = Monitor(runtime)

        await monitor.record_backlog()
        samples = parse(runtime.metrics.render().decode())
        assert samples[("keysentry_due_unclaimed", ())] == 3  # the removed one is not due
        assert samples[("keysentry_due_oldest_seconds", ())] == 50 * 60

        claim = await monitor.claim()  # the two oldest
        assert claim is not None and set(claim.ids) == {ids[0], ids[1]}
        await monitor.record_backlog()
        samples = parse(runtime.metrics.render().decode())
        assert samples[("keysentry_due_unclaimed", ())] == 1
        assert samples[("keysentry_due_oldest_seconds", ())] == 30 * 60

        assert await monitor.claim() is not None
        await monitor.record_backlog()
        samples = parse(runtime.metrics.render().decode())
        assert samples[("keysentry_due_unclaimed", ())] == 0
        assert samples[("keysentry_due_oldest_seconds", ())] == 0
    finally:
        await runtime.close()


# -- settings ---------------------------------------------------------------------------------------------


def test_metrics_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYSENTRY_MONITOR_METRICS_PORT", raising=False)
    monkeypatch.delenv("KEYSENTRY_MONITOR_METRICS_HOST", raising=False)
    assert metrics_config().port is None  # no metrics unless asked for
    monkeypatch.setenv("KEYSENTRY_MONITOR_METRICS_PORT", "9465")
    monkeypatch.setenv("KEYSENTRY_MONITOR_METRICS_HOST", "0.0.0.0")
    assert (metrics_config().port, metrics_config().host) == (9465, "0.0.0.0")
    monkeypatch.setenv("KEYSENTRY_MONITOR_METRICS_PORT", "70000")
    with pytest.raises(ValueError, match="KEYSENTRY_MONITOR_METRICS_PORT"):
        metrics_config()


def test_a_worker_with_a_taken_metrics_port_stops_with_one_sentence(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSENTRY_", "PROMETHEUS_"))}
        # The broker is never reached: the port is taken before the worker connects.
        temporary = tmp_path / "tmp"
        temporary.mkdir()
        env.update(
            KEYSENTRY_REDIS_URL="redis://127.0.0.1:1/0",
            KEYSENTRY_DATA_DIR=str(tmp_path),
            TMPDIR=str(temporary),
        )
        done = subprocess.run(
            [sys.executable, "-m", "keysentry", "worker", "--metrics-port", str(port)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 3
    assert f"keysentry: cannot serve metrics on 127.0.0.1 port {port}" in done.stderr
    assert list(temporary.iterdir()) == []  # its temporary directory is removed


def test_metrics_dirs_of_killed_workers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    from keysentry.monitor.celery_app import remove_orphaned_metrics_dirs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)  # its pid stays free for the moment: pids are not reused this soon
    dead = tmp_path / f"keysentry-metrics-{gone.pid}-abc123"
    live = tmp_path / f"keysentry-metrics-{os.getpid()}-def456"
    other = tmp_path / "keysentry-metrics-notapid-x"
    for path in (dead, live, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    assert remove_orphaned_metrics_dirs(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()
