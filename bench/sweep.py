"""A monitor sweep over many stored connections (PostgreSQL) against the simulators: issue 7's bench.

Connections are written straight into a PostgreSQL database of this run (sealed by the vault,
all due), then swept by worker processes running the monitor's batch loop (`Monitor.claim` and
`Monitor.check_batch`, exactly what a Celery `check_batch` task runs) in two phases:

(a) cpu: rate limits lifted on both sides (the simulators' and keysentry's budget), so the CPU
    is the limit: checks per second per worker process and the worker's CPU per check (its
    user + system time, claims, decrypts, checks, recording and events included); the
    simulators' CPU per check is given apart. With one worker, it is pinned to one core and the
    simulators to the other (PostgreSQL runs where it can). Baseline, in the same run: the same
    checks through the diagnosis engine alone (no store, claims, budget or recording), as many
    at once, in a process on the same core: what the monitor adds is the difference.
(b) published: the simulators enforce their published limits and keysentry's budget follows
    them, sending from several egress addresses: the share of the published limit used (Bybit's
    600 requests per 5 s per address, counted by the simulator per address and per fixed
    window, over the complete windows of the phase) and the 429s and bans (none expected).

    python bench/sweep.py [--connections 100000] [--cpu-seconds 60] [--published-seconds 40]
                          [--workers 1] [--egress 2] [--slack S] [--exchanges bybit,okx]

Each phase runs for its time bound (the whole sweep of 100,000 takes longer than needed for a
rate); the summary prints as a table and as JSON (`--json FILE`). Simulator keys are indexed by
API key in the simulator process (a bench-only patch: the scenario model looks keys up by
scanning, which 100,000 keys would make the bottleneck). Exit code 0 when phase (b) used at
least 90% of the published limit with no 429 or ban, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import PERMISSIONS, WHITELIST, bench_key, machine

PG = "postgresql://postgres@127.0.0.1:5432"
BYBIT_IP_LIMIT, BYBIT_WINDOW_S = 600, 5
BATCH, CONCURRENCY, LANES = 200, 100, 2  # a lane claims and checks one batch after the other


# -- the store ------------------------------------------------------------------------------------------


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fill(url: str, data_dir: Path, master: str, exchanges: list[str], n: int) -> float:
    """n connections spread over `exchanges`, sealed and all due; returns the seconds it took."""
    from keysentry.domain.secrets import ApiCredentials, Secret
    from keysentry.store import credentials as creds
    from keysentry.store.db import Database
    from keysentry.store.models import Connection, CredentialVersion, Tenant
    from keysentry.vault import Vault

    started = time.perf_counter()
    vault = Vault.open(data_dir, master_key=master, create=True)
    db = await Database.open(url)
    now = datetime.now(UTC)
    version_columns = [c.key for c in CredentialVersion.__table__.columns if c.key != "id"]
    try:
        async with db.session() as s, s.begin():
            s.add(Tenant(id="bench", name="bench", created_at=now))
        for start in range(0, n, 5000):
            connections, versions = [], []
            for i in range(start, min(n, start + 5000)):
                exchange, number = exchanges[i % len(exchanges)], i // len(exchanges)
                key = bench_key(exchange, number)
                cid = f"con_{i:016x}"
                secret = Secret(key.secret)
                passphrase = Secret(key.passphrase) if key.passphrase else None
                sealed = creds.seal(
                    vault, ApiCredentials(key.api_key, secret, passphrase), tenant_id="bench", connection_id=cid,
                    version=1, now=now, verified=True,
                )  # fmt: skip
                connections.append(
                    {
                        "id": cid, "tenant_id": "bench", "exchange": exchange, "environment": "mainnet",
                        "label": f"bench {i}", "profile": "trading", "account_id": str(354_900_000 + number),
                        "masked_key": sealed.masked_key, "key_fingerprint": sealed.key_fingerprint,
                        "api_key_hash": creds.api_key_hash(vault, key.api_key), "current_version": 1,
                        "status": "connected", "severity": "ok", "summary": "", "last_known_status": "connected",
                        "findings": [], "permissions": [], "ip_restricted": True, "expires_at": None,
                        "last_definitive_at": now, "temporary_findings": [], "temporary_since": None,
                        "last_checked_at": now, "next_check_at": now - timedelta(hours=1), "created_at": now,
                        "updated_at": now, "removed_at": None,
                    }
                )  # fmt: skip
                versions.append({c: getattr(sealed, c) for c in version_columns})
            async with db.session() as s, s.begin():
                await s.execute(Connection.__table__.insert(), connections)
                await s.execute(CredentialVersion.__table__.insert(), versions)
    finally:
        await db.close()
    return time.perf_counter() - started


async def make_due(url: str, exchange: str) -> None:
    from sqlalchemy import update

    from keysentry.store.db import Database
    from keysentry.store.models import Connection

    db = await Database.open(url, migrate=False)
    try:
        async with db.session() as s, s.begin():
            await s.execute(
                update(Connection)
                .where(Connection.exchange == exchange)
                .values(next_check_at=datetime.now(UTC) - timedelta(hours=1))
            )
    finally:
        await db.close()


async def park(url: str, keep: str) -> None:
    """Every connection not of exchange `keep` out of the way (due in a day)."""
    from sqlalchemy import update

    from keysentry.store.db import Database
    from keysentry.store.models import Connection

    db = await Database.open(url, migrate=False)
    try:
        async with db.session() as s, s.begin():
            await s.execute(
                update(Connection)
                .where(Connection.exchange != keep)
                .values(next_check_at=datetime.now(UTC) + timedelta(days=1))
            )
    finally:
        await db.close()


async def _debug(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/{name}")
    try:
        rows = await conn.fetch("SELECT status, trigger, count(*) FROM check_history GROUP BY 1, 2")
        print([tuple(r) for r in rows], file=sys.stderr)
        rows = await conn.fetch("SELECT findings FROM check_history WHERE status <> 'connected' LIMIT 3")
        print([r[0][:400] for r in rows], file=sys.stderr)
    finally:
        await conn.close()


# -- the simulators (a child process) -------------------------------------------------------------------


def scenario(exchanges: list[str], n: int) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for exchange in exchanges:
        accounts = []
        for number in range(len(range(exchanges.index(exchange), n, len(exchanges)))):
            k = bench_key(exchange, number)
            key: dict[str, Any] = {
                "api_key": k.api_key, "secret": k.secret, "permissions": PERMISSIONS[exchange],
                "ip_whitelist": WHITELIST,
            }  # fmt: skip
            if k.passphrase is not None:
                key["passphrase"] = k.passphrase
            accounts.append({"id": str(354_900_000 + number), "keys": [key]})
        spec[exchange] = {"accounts": accounts}
    return {"seed": 1, "exchanges": spec}


async def serve(path: str, lift: bool) -> None:
    from aiohttp import web

    from keysentry.sim.scenario import ExchangeSpec, parse_scenario
    from keysentry.sim.server import SimCluster, simulator_class

    data = json.loads(Path(path).read_text())  # noqa: ASYNC240 - before serving, nothing waits on it
    if lift:
        for name, spec in data["exchanges"].items():
            spec["limits"] = {k: 1e12 for k in simulator_class(name).default_limits if not k.endswith("_s")}
    parsed = parse_scenario(data)
    for spec in parsed.exchanges.values():  # bench-only: index keys instead of scanning 100,000
        index = {k.api_key: (k, a) for a in spec.accounts for k in a.keys}
        object.__setattr__(spec, "find_key", lambda api_key, index=index: index.get(api_key))
    assert all(isinstance(s, ExchangeSpec) for s in parsed.exchanges.values())
    windows: Counter[tuple[str, str, int]] = Counter()  # (exchange, peer, window) -> requests
    refused: Counter[tuple[str, int]] = Counter()

    def counting(name: str) -> Any:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername")[0] if request.transport else "?"
            windows[(name, peer, int(time.time() // BYBIT_WINDOW_S))] += 1
            response: web.StreamResponse = await handler(request)
            if response.status in (403, 418, 429):
                refused[(name, response.status)] += 1
            return response

        return count

    cls_build = {}
    for name in parsed.exchanges:
        cls = simulator_class(name)
        original = cls.build_app
        cls_build[name] = original

        def build(self: Any, original: Any = original, name: str = name) -> web.Application:
            app: web.Application = original(self)
            app.middlewares.insert(0, counting(name))
            return app

        cls.build_app = build  # type: ignore[method-assign]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with SimCluster(parsed) as cluster:
        sys.stdout.write("READY " + json.dumps({n: cluster.url(n) for n in parsed.exchanges}) + "\n")
        sys.stdout.flush()
        await stop.wait()
    stats = {
        "windows": [[e, p, w, c] for (e, p, w), c in windows.items()],
        "refused": [[e, s, c] for (e, s), c in refused.items()],
    }
    sys.stdout.write("STATS " + json.dumps(stats) + "\n")
    sys.stdout.flush()


class Sims:
    def __init__(self, scenario_file: str, *, lift: bool, core: int | None) -> None:
        cmd = [sys.executable, __file__, "--serve", scenario_file] + (["--lift"] if lift else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=_pin(core))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise SystemExit(f"the simulators did not start (exit code {self.proc.wait()})")
        self.urls: dict[str, str] = json.loads(line.removeprefix("READY "))

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        out, _ = self.proc.communicate(timeout=30)
        for line in out.splitlines():
            if line.startswith("STATS "):
                stats: dict[str, Any] = json.loads(line.removeprefix("STATS "))
                return stats
        return {"windows": [], "refused": []}


def _pin(core: int | None) -> Any:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


# -- the workers (child processes) ----------------------------------------------------------------------


async def work(seconds: float, lift: bool) -> dict[str, float]:
    import gc

    from keysentry.monitor.budget import PUBLISHED, Budget, Pool
    from keysentry.monitor.scheduler import Monitor
    from keysentry.monitor.service import MonitorConfig, MonitorRuntime
    from keysentry.process import tune_collector
    from keysentry.settings import load_settings

    settings, config = load_settings(), MonitorConfig()
    tune_collector(settings.gc_threshold)  # as a worker's pool process does
    runtime = await MonitorRuntime.open(settings, config)
    if lift:
        await runtime.budget.close()
        pools = {
            e: {n: Pool(p.scope, p.limit * 10**6, p.window_s) for n, p in ps.items()}
            for e, ps in PUBLISHED.items()
        }
        runtime.budget = Budget.memory(pools=pools, egress_ips=settings.egress_ip_list)
    monitor = Monitor(runtime)
    gc.collect()
    gc.freeze()  # the imported modules' heap: not this phase's garbage to scan
    checked, wall, cpu = 0, time.perf_counter(), time.process_time()
    deadline = time.monotonic() + seconds

    async def lane() -> None:
        nonlocal checked
        while time.monotonic() < deadline:
            claim = await monitor.claim()
            if claim is None:
                return
            report = await monitor.check_batch(claim.ids, claim.lease_until)
            checked += report.checked  # after the await: `checked += await ...` would read it before

    await asyncio.gather(*(lane() for _ in range(config.batches_in_flight)))
    result = {"checked": checked, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    await runtime.close()
    return result


async def baseline(seconds: float, exchanges: list[str]) -> dict[str, float]:
    """The floor: the same checks through the diagnosis engine alone (no store, claims, budget
    or recording), as many at once, on keysentry's shared Transport."""
    import gc
    import itertools

    from keysentry.diagnosis.engine import DiagnosisEngine
    from keysentry.diagnosis.options import options_factory
    from keysentry.domain.secrets import ApiCredentials, Secret
    from keysentry.exchanges.transport import Transport
    from keysentry.process import tune_collector
    from keysentry.settings import load_settings

    settings = load_settings()
    tune_collector(settings.gc_threshold)
    options = options_factory(settings)
    keys = itertools.cycle([bench_key(e, n) for n in range(500) for e in exchanges])
    gate = asyncio.Semaphore(CONCURRENCY)
    checked, deadline = 0, time.monotonic() + seconds
    async with Transport(egress_ips=settings.egress_ip_list) as transport:
        engine = DiagnosisEngine(transport)

        async def one() -> None:
            nonlocal checked
            key = next(keys)
            creds = ApiCredentials(
                key.api_key, Secret(key.secret), Secret(key.passphrase) if key.passphrase else None
            )
            async with gate:
                found = await engine.diagnose_credentials(
                    key.exchange, creds, options(key.exchange, "mainnet", "trading")
                )
            assert found.status.value == "connected", found.summary
            checked += 1

        await asyncio.gather(*(one() for _ in range(CONCURRENCY)))  # warm-up
        gc.collect()
        gc.freeze()
        checked, wall, cpu = 0, time.perf_counter(), time.process_time()
        while time.monotonic() < deadline:
            await asyncio.gather(*(one() for _ in range(BATCH)))
        return {"checked": checked, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def run_workers(
    count: int, env: dict[str, str], seconds: float, *, lift: bool, core: int | None, floor: str | None = None
) -> list[dict[str, float]]:
    cmd = [sys.executable, __file__, "--worker", str(seconds)] + (["--lift"] if lift else [])
    if floor is not None:
        cmd += ["--baseline", floor]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_pin(core))
        for _ in range(count)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 300)
        if p.returncode != 0:
            raise SystemExit(f"a worker failed (exit code {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# -- the phases -----------------------------------------------------------------------------------------


def environment(
    url: str, data_dir: Path, master: str, sims: Sims, egress: int, slack: float | None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYSENTRY_")}
    env.update(
        KEYSENTRY_DATABASE_URL=url,
        KEYSENTRY_DATA_DIR=str(data_dir),
        KEYSENTRY_MASTER_KEY=master,
        KEYSENTRY_EGRESS_IPS=",".join(f"127.0.0.{2 + i}" for i in range(egress)),
        KEYSENTRY_MONITOR_BATCH_SIZE=str(BATCH),
        KEYSENTRY_MONITOR_CONCURRENCY=str(CONCURRENCY),
        KEYSENTRY_MONITOR_BATCHES_IN_FLIGHT=str(LANES),
        KEYSENTRY_MONITOR_BUDGET_WAIT_S="30",
    )
    if slack is not None:  # otherwise the monitor's default
        env["KEYSENTRY_MONITOR_BUDGET_SLACK_S"] = repr(slack)
    for name, base in sims.urls.items():
        env[f"KEYSENTRY_{name.upper()}_BASE_URL"] = base
    return env


def phase_cpu(
    args: argparse.Namespace, url: str, data_dir: Path, master: str, scenario_file: str
) -> dict[str, Any]:
    single = args.workers == 1 and len(os.sched_getaffinity(0)) >= 2
    cores = sorted(os.sched_getaffinity(0))
    sims = Sims(scenario_file, lift=True, core=cores[0] if single else None)
    try:
        env = environment(url, data_dir, master, sims, args.egress, args.slack)
        sim_cpu = sims.cpu_s()
        results = run_workers(
            args.workers, env, args.cpu_seconds, lift=True, core=cores[1] if single else None
        )
        sim_cpu = sims.cpu_s() - sim_cpu
        floor = run_workers(
            1,
            env,
            min(20.0, args.cpu_seconds),
            lift=True,
            core=cores[1] if single else None,
            floor=args.exchanges,
        )[0]
    finally:
        sims.stop()
    checked = sum(r["checked"] for r in results)
    floor_ms = 1000 * floor["cpu_s"] / max(floor["checked"], 1)
    return {
        "baseline_cpu_ms_per_check": round(floor_ms, 3),
        "baseline_checks_per_s": round(floor["checked"] / floor["wall_s"], 1),
        "workers": args.workers,
        "checked": checked,
        "checks_per_s_per_worker": [round(r["checked"] / r["wall_s"], 1) for r in results],
        "worker_cpu_ms_per_check": round(1000 * sum(r["cpu_s"] for r in results) / max(checked, 1), 3),
        "worker_core_busy": [round(r["cpu_s"] / r["wall_s"], 2) for r in results],
        "sim_cpu_ms_per_check": round(1000 * sim_cpu / max(checked, 1), 3),
    }


def phase_published(
    args: argparse.Namespace, url: str, data_dir: Path, master: str, scenario_file: str
) -> dict[str, Any]:
    asyncio.run(make_due(url, "bybit"))
    asyncio.run(park(url, "bybit"))
    sims = Sims(scenario_file, lift=False, core=None)
    try:
        env = environment(url, data_dir, master, sims, args.egress, args.slack)
        if args.workers > 1:  # several processes must share one budget: Redis
            env.update(
                KEYSENTRY_REDIS_URL="redis://127.0.0.1:6379/0",
                KEYSENTRY_MONITOR_KEY_PREFIX=f"bench-{secrets.token_hex(4)}",
            )
        results = run_workers(args.workers, env, args.published_seconds, lift=False, core=None)
    finally:
        stats = sims.stop()
    per_window: dict[int, list[int]] = {}
    for exchange, _peer, window, count in stats["windows"]:
        if exchange == "bybit":
            per_window.setdefault(window, []).append(count)
    complete = sorted(per_window)[1:-1]  # the first and last windows are partial
    if os.environ.get("BENCH_DEBUG"):
        print({w: per_window[w] for w in sorted(per_window)}, file=sys.stderr)
    shares = [c / BYBIT_IP_LIMIT for w in complete for c in per_window[w]]
    refused = {f"{e} {s}": c for e, s, c in stats["refused"]}
    return {
        "egress_addresses": args.egress,
        "slack_s": args.slack if args.slack is not None else _default_slack(),
        "checked": sum(r["checked"] for r in results),
        "windows": len(complete),
        "share_of_published_limit": round(sum(shares) / len(shares), 3) if shares else 0.0,
        "lowest_window_share": round(min(shares), 3) if shares else 0.0,
        "highest_window_share": round(max(shares), 3) if shares else 0.0,
        "refused": refused,
    }


def _default_slack() -> float:
    from keysentry.monitor.service import MonitorConfig

    return float(MonitorConfig.model_fields["budget_slack_s"].default)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--exchanges", default="bybit,okx")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--egress", type=int, default=2, help="egress addresses (127.0.0.2, ...)")
    parser.add_argument(
        "--slack", type=float, default=None, help="KEYSENTRY_MONITOR_BUDGET_SLACK_S (default: the monitor's)"
    )
    parser.add_argument("--cpu-seconds", type=float, default=60)
    parser.add_argument("--published-seconds", type=float, default=40)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-published", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--lift", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.lift))
        return 0
    if args.worker is not None and args.baseline:
        print(json.dumps(asyncio.run(baseline(args.worker, args.baseline.split(",")))))
        return 0
    if args.worker is not None:
        print(json.dumps(asyncio.run(work(args.worker, args.lift))))
        return 0

    exchanges = [e.strip() for e in args.exchanges.split(",") if e.strip()]
    name = f"ks_bench_{secrets.token_hex(4)}"
    url = f"{PG.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    summary: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            from keysentry.vault import generate_master_key

            master, data_dir = generate_master_key(), Path(tmp) / "data"
            summary["fill_s"] = round(
                asyncio.run(fill(url, data_dir, master, exchanges, args.connections)), 1
            )
            scenario_file = str(Path(tmp) / "scenario.json")
            Path(scenario_file).write_text(json.dumps(scenario(exchanges, args.connections)))
            print(f"stored {args.connections:,} connections in {summary['fill_s']} s", flush=True)
            if not args.skip_cpu:
                summary["cpu"] = phase_cpu(args, url, data_dir, master, scenario_file)
                print("(a) cpu:", json.dumps(summary["cpu"]), flush=True)
            if not args.skip_published and "bybit" in exchanges:
                summary["published"] = phase_published(args, url, data_dir, master, scenario_file)
                print("(b) published:", json.dumps(summary["published"]), flush=True)
    finally:
        if os.environ.get("BENCH_DEBUG"):
            asyncio.run(_debug(name))
        with contextlib.suppress(Exception):
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    published = summary.get("published")
    if published is None:
        return 0
    ok = published["share_of_published_limit"] >= 0.9 and not published["refused"]
    print(f"(b) {'meets' if ok else 'MISSES'} the target: >= 90% of the published limit, no 429 or ban")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
