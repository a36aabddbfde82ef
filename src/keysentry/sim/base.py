"""The contract every exchange simulator implements, and the request pipeline they share.

Each exchange module (binance.py, okx.py, ...) subclasses ExchangeSim, declares its
environments, permission vocabulary, unverified behaviours (settings) and published
limits, and adds its routes. The shared pipeline here applies the scenario's faults
(latency, connection resets, timeouts, 5xx) and maintenance windows before a handler runs.

Handlers must read the scenario state on every request (never cache it), so a change made
through the admin endpoint shows on the very next call.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from keysentry.sim.scenario import AccountSpec, ExchangeSpec, KeySpec, ScenarioError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class KeyLookup:
    key: KeySpec
    account: AccountSpec
    # The key exists, but in another environment of this exchange (testnet key on mainnet...).
    other_environment: bool


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class ExchangeSim(ABC):
    name: ClassVar[str]
    # environment name -> what it stands for (e.g. "us": "Binance.US")
    environments: ClassVar[Mapping[str, str]]
    permissions: ClassVar[frozenset[str]]
    # Behaviours the reference marks (unverified), with the most likely default.
    default_settings: ClassVar[Mapping[str, Any]] = {}
    # The published rate limits, overridable per scenario.
    default_limits: ClassVar[Mapping[str, float]] = {}
    # Paths that answer even during maintenance (system status, server time).
    status_paths: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: ExchangeSpec, environment: str, *, seed: int = 0) -> None:
        if environment not in self.environments:
            raise ScenarioError(
                f"exchanges.{self.name}: unknown environment {environment!r}; "
                f"use one of: {', '.join(self.environments)}"
            )
        self._check_names("settings", spec.settings, self.default_settings)
        self._check_names("limits", spec.limits, self.default_limits)
        for account in spec.accounts:
            for key in account.keys:
                unknown = sorted(set(key.permissions) - self.permissions)
                if unknown:
                    raise ScenarioError(
                        f"exchanges.{self.name}: key {key.label or key.api_key[:6]!r} has unknown "
                        f"permission(s) {', '.join(unknown)}; "
                        f"{self.name} knows: {', '.join(sorted(self.permissions))}"
                    )
        self.spec = spec
        self.environment = environment
        # A string seed is hashed deterministically, so each simulator has its own reproducible stream.
        self.rng = random.Random(f"{seed}:{self.name}:{environment}")
        # Faults draw from their own stream, so handlers drawing from `rng` cannot shift the fault sequence.
        self.fault_rng = random.Random(f"{seed}:{self.name}:{environment}:faults")

    def _check_names(self, what: str, given: Mapping[str, Any], known: Mapping[str, Any]) -> None:
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ScenarioError(
                f"exchanges.{self.name}.{what}: unknown name(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known)) or '(none)'}"
            )

    # -- state read by handlers -------------------------------------------------------------

    def setting(self, name: str) -> Any:
        return self.spec.settings.get(name, self.default_settings[name])

    def limit(self, name: str) -> float:
        return self.spec.limits.get(name, self.default_limits[name])

    def now_ms(self) -> int:
        """The exchange's clock: real time plus the scenario's offset (so clock skew is real)."""
        return int(time.time() * 1000) + self.spec.clock_offset_ms

    def now(self) -> datetime:
        # Full precision, not now_ms(): a time the admin endpoint just set ("expire now", "end
        # maintenance now") must already be in the past on the next request, even within the same ms.
        return datetime.fromtimestamp(time.time() + self.spec.clock_offset_ms / 1000, tz=UTC)

    def lookup(self, api_key: str) -> KeyLookup | None:
        found = self.spec.find_key(api_key)
        if found is None:
            return None
        key, account = found
        return KeyLookup(key, account, other_environment=key.environment != self.environment)

    @staticmethod
    def peer_ip(request: web.Request) -> str:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return str(peer[0]) if peer else "0.0.0.0"

    # -- what each exchange must provide ----------------------------------------------------

    @abstractmethod
    def add_routes(self, app: web.Application) -> None: ...

    @abstractmethod
    def maintenance_response(self, request: web.Request) -> web.StreamResponse: ...

    @abstractmethod
    def server_error_response(self, request: web.Request) -> web.StreamResponse: ...

    def reset_limits(self) -> None:
        """Forget rate-limit counters and bans (admin `POST /admin/{exchange}/reset-limits`).

        The default does nothing; a simulator that keeps counters or bans overrides it.
        """
        return

    # -- the shared pipeline ------------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._pipeline])
        app[SIM_KEY] = self
        self.add_routes(app)
        return app

    def _latency_s(self) -> float:
        lat = self.spec.faults.latency
        rng = self.fault_rng
        match lat.distribution:
            case "none":
                return 0.0
            case "fixed":
                ms = lat.ms
            case "uniform":
                ms = rng.uniform(lat.min_ms, lat.max_ms)
            case "normal":
                ms = rng.gauss(lat.ms, lat.stddev_ms)
            case "lognormal":
                # Parameters chosen so the delays' mean is `ms` and their standard deviation `stddev_ms`.
                if lat.ms <= 0:
                    return 0.0
                sigma2 = math.log1p((lat.stddev_ms / lat.ms) ** 2)
                ms = rng.lognormvariate(math.log(lat.ms) - sigma2 / 2, math.sqrt(sigma2))
        return max(0.0, ms) / 1000

    @staticmethod
    def _reset_connection(request: web.Request) -> None:
        """Drop the connection with a TCP RST, as a crashed proxy or a stateful firewall does."""
        transport = request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST instead of FIN, so the client sees "connection reset by peer".
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    @web.middleware
    async def _pipeline(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        faults = self.spec.faults
        if faults.active:
            # Always draw the same numbers per request, so a seed gives the same fault sequence.
            rng = self.fault_rng
            r_reset, r_timeout, r_error = rng.random(), rng.random(), rng.random()
            delay = self._latency_s()
            if delay:
                await asyncio.sleep(delay)
            if r_reset < faults.reset_rate:
                self._reset_connection(request)
                # aiohttp treats a cancelled handler as a client that went away: nothing is written.
                raise asyncio.CancelledError
            if r_timeout < faults.timeout_rate:
                await asyncio.sleep(faults.timeout_s)
                return self.server_error_response(request)
            if r_error < faults.error_rate:
                return self.server_error_response(request)
        if request.path not in self.status_paths and self.spec.in_maintenance(self.now()):
            return self.maintenance_response(request)
        return await handler(request)


# Where build_app stores the simulator: `request.app[SIM_KEY]`.
SIM_KEY: web.AppKey[ExchangeSim] = web.AppKey("sim", ExchangeSim)
