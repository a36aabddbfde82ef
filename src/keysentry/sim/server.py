"""Run the simulators of a scenario: one HTTP server per (exchange, environment), then the admin endpoint."""

from __future__ import annotations

import importlib
import ipaddress
import secrets
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from aiohttp import web

from keysentry.sim.admin import Admin
from keysentry.sim.base import ExchangeSim
from keysentry.sim.scenario import Scenario, ScenarioError

# Simulators hold no state worth draining for: stop quickly even with requests still hanging
# (a timeout fault sleeps for timeout_s).
SHUTDOWN_TIMEOUT_S = 0.25


def simulator_class(exchange: str) -> type[ExchangeSim]:
    module_name = f"keysentry.sim.{exchange}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise  # the simulator exists but needs something missing: that is a bug, not a bad scenario
        raise ScenarioError(f"no simulator for exchange {exchange!r}") from None
    cls: type[ExchangeSim] | None = getattr(module, "SIMULATOR", None)
    if cls is None:
        raise ScenarioError(f"{module_name} does not declare SIMULATOR")
    return cls


@dataclass(frozen=True, slots=True)
class Endpoint:
    exchange: str
    environment: str
    url: str
    sim: ExchangeSim


def _url(host: str, port: int) -> str:
    try:
        bracket = ipaddress.ip_address(host).version == 6
    except ValueError:
        bracket = False
    return f"http://[{host}]:{port}" if bracket else f"http://{host}:{port}"


class SimCluster:
    """Starts every simulator of a scenario on `host`, then the admin endpoint.

    Ports are `port`, `port+1`, ... (the admin endpoint takes the one after the last simulator),
    or random ones when `port` is 0. The admin token is `admin_token`, else the scenario's,
    else a generated one. Use as an async context manager in tests:
    `async with SimCluster(scenario) as c: c.url("binance")`.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.admin_token = admin_token or scenario.admin_token or secrets.token_urlsafe(24)
        self.admin_url = ""
        self.endpoints: list[Endpoint] = []
        self._runners: list[web.AppRunner] = []

    def __repr__(self) -> str:
        return f"SimCluster(host={self.host!r}, port={self.port}, endpoints={len(self.endpoints)})"

    async def _serve(self, app: web.Application, port: int) -> str:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, self.host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        actual = sockets[0].getsockname()[1] if sockets else port
        return _url(self.host, actual)

    def _port(self, i: int) -> int:
        return self.port + i if self.port else 0

    async def start(self) -> Self:
        # Build every simulator first, so a bad scenario fails before anything listens.
        sims = [
            simulator_class(name)(spec, env, seed=self.scenario.seed)
            for name, spec in self.scenario.exchanges.items()
            for env in spec.environments
        ]
        try:
            for i, sim in enumerate(sims):
                url = await self._serve(sim.build_app(), self._port(i))
                self.endpoints.append(Endpoint(sim.name, sim.environment, url, sim))
            admin = Admin(self.scenario, self.endpoints, self.admin_token)
            self.admin_url = await self._serve(admin.build_app(), self._port(len(sims)))
        except BaseException:
            await self.stop()  # a port in use half-way: leave nothing listening
            raise
        return self

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    def endpoint(self, exchange: str, environment: str = "mainnet") -> Endpoint:
        for ep in self.endpoints:
            if ep.exchange == exchange and ep.environment == environment:
                return ep
        raise KeyError(f"{exchange}/{environment} is not running")

    def url(self, exchange: str, environment: str = "mainnet") -> str:
        return self.endpoint(exchange, environment).url

    def sim(self, exchange: str, environment: str = "mainnet") -> ExchangeSim:
        return self.endpoint(exchange, environment).sim

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
