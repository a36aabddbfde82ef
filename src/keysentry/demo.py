"""`keysentry demo` (what `make demo` runs): everything a newcomer needs to look around, in one process.

In order: the shipped demo scenario's exchange simulators (keysentry.sim); the service (the
REST API and the "My Exchanges" page, `keysentry.api.create_app` under uvicorn) on a SQLite
store in ./.demo with a generated master key file and admin token, sending from 127.0.0.2 and
127.0.0.3 to the simulators; a demo tenant and its token, made through the admin API; every
demo key added as a connection through the REST API, like a platform would; the monitor when
one exists. Then it prints the page's URL and the token, and serves until Ctrl-C or SIGTERM,
when it stops everything and exits 0.

Every key is saved "anyway" where refused, so every status shows on the page. The two keys of
an account that is already connected (Bybit, KuCoin) are first added normally, and their
refusal is printed; then each is added once more while its exchange is in (simulated)
maintenance, so it is saved unverified (`temporary_issue`, over a last known state of
"not checked yet"). The KuCoin one is then refreshed and shows `already_connected`; the Bybit
one is left as it is, and shows `already_connected` after a Refresh on the page.

Ports: the page and API on `port` (8600), the simulators on the next ones, their admin endpoint
after them; `port` 0 picks free ports for all. Nothing of the user's own configuration is used:
every KEYSENTRY_* variable of the environment is replaced by the demo's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import aiohttp
    import uvicorn
    from fastapi import FastAPI

    from keysentry.settings import Settings
    from keysentry.sim.server import SimCluster

__all__ = ["DEMO_DIR", "run_demo"]

DEMO_DIR = Path(".demo")
MARKER = ".keysentry-demo"
TENANT = "demo"
EGRESS_IPS = "127.0.0.2,127.0.0.3"
HOST = "127.0.0.1"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 2, 3
# the demo adds all its keys at once: the API's per-tenant limits are meant for real traffic
DEMO_RATES = {"KEYSENTRY_RATE_LIMIT_ADD": "1000/minute", "KEYSENTRY_RATE_LIMIT_REFRESH": "1000/minute"}
# statuses that only show with another profile than the default "trading"
PROFILE_FOR_INTENT = {"inactive_futures": "futures-trading"}
LOAD_CONCURRENCY = 8


class DemoError(Exception):
    """The demo cannot start; the message says why and what to do."""


# -- the pieces ----------------------------------------------------------------------------------


def prepare_data_dir(path: Path) -> Path:
    """A fresh demo data directory (0700) with a new master key file (0600); the previous run's goes."""
    path = path.resolve()
    if path.exists():
        if not (path / MARKER).exists():
            raise DemoError(
                f"{path} exists and was not made by `keysentry demo`; move it away or run the demo "
                "from another directory"
            )
        shutil.rmtree(path)
    path.mkdir(mode=0o700, parents=True)
    (path / MARKER).write_text("made by `keysentry demo`; deleted and made again by each run\n")
    from keysentry.vault import generate_master_key

    fd = os.open(path / "master.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_master_key() + "\n")
    return path


def demo_environment(cluster: SimCluster, data_dir: Path, admin_token: str) -> dict[str, str]:
    """The KEYSENTRY_* settings of the demo service: simulators as the exchanges, the demo store."""
    env = {
        "KEYSENTRY_DATA_DIR": str(data_dir),
        "KEYSENTRY_MASTER_KEY_FILE": str(data_dir / "master.key"),
        "KEYSENTRY_EGRESS_IPS": EGRESS_IPS,
        "KEYSENTRY_ADMIN_TOKEN": admin_token,
        **DEMO_RATES,
    }
    for ep in cluster.endpoints:
        middle = "" if ep.environment == "mainnet" else f"{ep.environment.upper()}_"
        env[f"KEYSENTRY_{ep.exchange.upper()}_{middle}BASE_URL"] = ep.url
    return env


def use_environment(env: Mapping[str, str]) -> None:
    """Replace every KEYSENTRY_* variable of this process by the demo's: never the user's database."""
    for name in [n for n in os.environ if n.startswith("KEYSENTRY_")]:
        del os.environ[name]
    os.environ.update(env)


def port_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


class _Server:
    """uvicorn in this event loop; the demo owns the signals (uvicorn would re-raise Ctrl-C)."""

    def __init__(self, app: FastAPI, port: int) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        config = uvicorn.Config(
            app, host=HOST, port=port, lifespan="on", access_log=False, log_config=None, log_level="warning"
        )
        self.server: uvicorn.Server = Quiet(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot listen or start
                    self.task.result()
                raise DemoError("the service did not start (see the messages above)")
            await asyncio.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{HOST}:{port}"

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(SystemExit, asyncio.CancelledError):
            await asyncio.wait_for(self.task, timeout=10)


@contextlib.asynccontextmanager
async def serving(app: FastAPI, port: int) -> AsyncIterator[str]:
    server = _Server(app, port)
    try:
        yield await server.start()
    finally:
        await server.stop()


# -- talking to the service like a platform ------------------------------------------------------


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    token: str = ""

    async def call(
        self, method: str, path: str, body: Any = None, *, bearer: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {bearer or self.token}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.content_length != 0 else None
            return r.status, data


async def make_tenant(api: Api, admin_token: str) -> str:
    status, body = await api.call(
        "POST", "/v1/tenants", {"id": TENANT, "name": "Demo trader"}, bearer=admin_token
    )
    if status != 201:
        raise DemoError(f"the service refused to make the demo tenant ({status}: {_detail(body)})")
    status, body = await api.call(
        "POST", f"/v1/tenants/{TENANT}/tokens", {"name": "keysentry demo"}, bearer=admin_token
    )
    if status != 201 or not isinstance(body, dict) or "token" not in body:
        raise DemoError(f"the service refused to make the demo token ({status}: {_detail(body)})")
    return str(body["token"])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or "no detail")[:300]
    return "no detail"


def _connection_body(line: Mapping[str, Any], *, save_anyway: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "exchange": line["exchange"],
        "environment": "mainnet",  # keys of other environments show what pasting them here does
        "profile": PROFILE_FOR_INTENT.get(str(line.get("intent")), "trading"),
        "label": line["label"] or f"{line['exchange']} key",
        "api_key": line["api_key"],
        "secret": line["secret"],
        "save_anyway": save_anyway,
    }
    if line.get("passphrase"):
        body["passphrase"] = line["passphrase"]
    if "key_version" in line:
        body["key_version"] = line["key_version"]
    return body


@dataclass
class LoadReport:
    statuses: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def add_key(api: Api, line: Mapping[str, Any], report: LoadReport, *, save_anyway: bool = True) -> Any:
    status, body = await api.call("POST", "/v1/connections", _connection_body(line, save_anyway=save_anyway))
    if status == 201 and isinstance(body, dict):
        report.statuses[body["connection"]["status"]] += 1
        return body
    if not save_anyway:
        return body
    report.failures.append(f"{line['exchange']} “{line['label']}”: {status} {_detail(body)}")
    return None


async def _admin(cluster: SimCluster, http: aiohttp.ClientSession, path: str, body: Any) -> None:
    headers = {"Authorization": f"Bearer {cluster.admin_token}"}
    async with http.post(cluster.admin_url + path, json=body, headers=headers) as r:
        if r.status >= 400:
            raise DemoError(f"the simulators' admin endpoint refused {path} ({r.status})")


async def load_connections(api: Api, cluster: SimCluster, lines: list[dict[str, Any]]) -> LoadReport:
    """Every demo key as a connection of the demo tenant, so that every status shows."""
    report = LoadReport()
    sem = asyncio.Semaphore(LOAD_CONCURRENCY)
    second = [line for line in lines if line.get("intent") == "already_connected"]
    first = [line for line in lines if line.get("intent") != "already_connected"]

    async def one(line: dict[str, Any]) -> None:
        async with sem:
            await add_key(api, line, report)

    await asyncio.gather(*(one(line) for line in first))
    for line in second:
        name = line["exchange"]
        refused = await add_key(api, line, report, save_anyway=False)
        report.notes.append(f"{name} “{line['label']}”: refused as expected: {_detail(refused)}")
        # saved unverified while the exchange cannot answer, so its card exists
        await _admin(cluster, api.http, f"/admin/{name}/maintenance", {"active": True})
        try:
            saved = await add_key(api, line, report)
        finally:
            await _admin(cluster, api.http, f"/admin/{name}/maintenance", {"active": False})
        if saved is None:
            continue
        connection_id = saved["connection"]["id"]
        if name == "kucoin":
            report.statuses[saved["connection"]["status"]] -= 1
            status, body = await api.call("POST", f"/v1/connections/{connection_id}/refresh")
            shown = body["connection"]["status"] if status == 200 else "unchanged"
            report.statuses[shown if status == 200 else saved["connection"]["status"]] += 1
            report.notes.append(
                f"  then saved unverified during a maintenance and re-checked: it shows {shown}"
            )
        else:
            report.notes.append(
                "  then saved unverified during a maintenance: it shows temporary_issue until you press "
                "Refresh on its card, then already_connected"
            )
    report.statuses = +report.statuses  # drop zero counts
    return report


# -- the monitor (optional) ----------------------------------------------------------------------


def start_monitor(settings: Settings, stop: asyncio.Event) -> tuple[asyncio.Task[Any] | None, str]:
    """The local scheduler when keysentry.monitor.scheduler offers `run_local(settings, stop=event)`."""
    try:
        import importlib

        module = importlib.import_module("keysentry.monitor.scheduler")
    except ModuleNotFoundError as e:
        if e.name != "keysentry.monitor.scheduler":
            raise
        return None, "not started (this keysentry has no local scheduler yet)"
    runner = getattr(module, "run_local", None)
    if runner is None:
        return None, "not started (keysentry.monitor.scheduler has no run_local)"
    return asyncio.create_task(runner(settings, stop=stop)), "re-checks connections as they fall due"


# -- the whole demo ------------------------------------------------------------------------------


@dataclass
class Banner:
    page: str
    token: str
    cluster: SimCluster
    data_dir: Path
    monitor: str
    report: LoadReport

    def write(self, out: TextIO) -> None:
        c = self.cluster
        total = sum(self.report.statuses.values())
        lines = [
            "",
            "keysentry demo is running.",
            "",
            f"  page        {self.page}/  (sign in with the token below)",
            f"  token       {self.token}",
            f"  api         {self.page}/v1  (Authorization: Bearer <token>; docs at {self.page}/docs)",
            f"  sim admin   {c.admin_url}  (Authorization: Bearer {c.admin_token}; docs/simulators.md)",
            f"  data        {self.data_dir}  (SQLite and its master key; made afresh by each run)",
            f"  monitor     {self.monitor}",
            "",
            f"{total} connections of tenant “{TENANT}”, one per demo key:",
            *(
                f"  {n:>3}  {status}"
                for status, n in sorted(self.report.statuses.items(), key=lambda kv: -kv[1])
            ),
            *self.report.notes,
            *(f"  not loaded: {f}" for f in self.report.failures),
            "",
            "simulators:",
            *(f"  {ep.exchange:<8} {ep.environment:<8} {ep.url}" for ep in c.endpoints),
            "",
            "Try: open a status to read its guide; change a key through the sim admin endpoint (e.g. expire it)",
            "and press Refresh on its card; add a key. Stop with Ctrl-C.",
            "",
        ]
        out.write("\n".join(lines) + "\n")
        out.flush()


async def _demo(port: int, data_dir: Path, out: TextIO) -> int:
    import aiohttp

    from keysentry.sim.runner import DEMO_SCENARIO, key_lines
    from keysentry.sim.scenario import load_scenario
    from keysentry.sim.server import SimCluster

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        if not port_free(port):
            raise DemoError(f"port {port} is in use; choose another with --port, or --port 0 for free ones")
        out.write(f"keysentry demo: starting the simulators and the service (data in {data_dir})…\n")
        out.flush()
        data_dir = prepare_data_dir(data_dir)
        scenario = load_scenario(DEMO_SCENARIO)
        try:
            cluster = await SimCluster(scenario, host=HOST, port=port + 1 if port else 0).start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise DemoError(f"a simulator port after {port} is in use ({e}); try --port 0") from None
            raise
        try:
            admin_token = secrets.token_urlsafe(32)
            use_environment(demo_environment(cluster, data_dir, admin_token))
            from keysentry.api import create_app
            from keysentry.process import tune_collector
            from keysentry.settings import load_settings

            try:
                settings = load_settings()
                tune_collector(settings.gc_threshold)  # the service and monitor run here, as in serve
                app = create_app(settings)
            except Exception as e:  # the service's own refusals; their sentences name no secret
                raise DemoError(f"the service refused to start: {_first_line(e)}") from None
            async with serving(app, port) as url, aiohttp.ClientSession() as http:
                api = Api(http, url)
                api.token = await make_tenant(api, admin_token)
                report = await load_connections(api, cluster, key_lines(scenario))
                monitor_task, monitor = start_monitor(settings, stop)
                Banner(url, api.token, cluster, data_dir, monitor, report).write(out)
                await stop.wait()
                out.write("keysentry demo: stopping…\n")
                out.flush()
                if monitor_task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await asyncio.wait_for(monitor_task, timeout=5)
        finally:
            await cluster.stop()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    out.write("keysentry demo: stopped.\n")
    out.flush()
    return EXIT_OK


def run_demo(*, port: int = 8600, data_dir: Path | None = None, out: TextIO | None = None) -> int:
    """Run the demo until Ctrl-C or SIGTERM; 0 after a clean stop, 3 when it cannot start."""
    err = sys.stderr
    if port != 0 and not 1024 <= port <= 65535 - 32:
        err.write(f"keysentry demo: --port {port} leaves no room for the simulators; use 1024-65503, or 0\n")
        return EXIT_USAGE
    try:
        return asyncio.run(_demo(port, data_dir or DEMO_DIR, out or sys.stdout))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return EXIT_OK
    except DemoError as e:
        err.write(f"keysentry demo: {e}\n")
        return EXIT_USAGE
    except Exception as e:  # anything else: one sentence, not a traceback (the demo holds no secret of yours)
        err.write(f"keysentry demo: stopped by an unexpected error: {type(e).__name__}: {_first_line(e)}\n")
        return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """`python -m keysentry.demo [--port N] [--data-dir DIR]` (tests run the demo in a temporary directory)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m keysentry.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8600, help="port of the page; 0 picks free ports")
    parser.add_argument("--data-dir", type=Path, default=DEMO_DIR, help="where the demo keeps its store")
    args = parser.parse_args(argv)
    return run_demo(port=args.port, data_dir=args.data_dir)


if __name__ == "__main__":
    raise SystemExit(main())
