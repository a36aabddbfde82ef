"""The shared fault pipeline of ExchangeSim: seeded latency, resets, timeouts, 5xx and maintenance.

A minimal simulator defined here stands in for the exchanges, so these tests check the shared
pipeline alone.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp import web

from keysentry.sim.base import ExchangeSim, json_response
from keysentry.sim.scenario import ExchangeSpec, Faults, Latency, MaintenanceWindow

pytestmark = pytest.mark.timeout(30)


class ToySim(ExchangeSim):
    name: ClassVar[str] = "binance"
    environments: ClassVar[Mapping[str, str]] = {"mainnet": "toy"}
    permissions: ClassVar[frozenset[str]] = frozenset({"read"})
    status_paths: ClassVar[frozenset[str]] = frozenset({"/status"})

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/ping", self._ping)
        app.router.add_get("/status", self._status)

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({"pong": True})

    async def _status(self, request: web.Request) -> web.Response:
        return json_response({"status": "normal"})

    def maintenance_response(self, request: web.Request) -> web.StreamResponse:
        return json_response({"status": "maintenance"}, status=503)

    def server_error_response(self, request: web.Request) -> web.StreamResponse:
        return json_response({"error": "internal"}, status=500)


def toy(seed: int = 1, **faults: Any) -> ToySim:
    return ToySim(ExchangeSpec(faults=Faults(**faults)), "mainnet", seed=seed)


async def outcomes(url: str, n: int) -> list[str]:
    """Send n requests one after the other; POST, because aiohttp retries an idempotent request once."""
    seen: list[str] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            try:
                async with session.post(f"{url}/ping") as resp:
                    await resp.read()
                    seen.append({200: "ok", 500: "5xx"}.get(resp.status, str(resp.status)))
            except aiohttp.ClientConnectionError:
                seen.append("reset")
    return seen


async def test_same_seed_gives_the_same_fault_sequence(serve: Any) -> None:
    rates = {"error_rate": 0.2, "reset_rate": 0.1}
    first = await outcomes(await serve(toy(7, **rates).build_app()), 400)
    again = await outcomes(await serve(toy(7, **rates).build_app()), 400)
    other = await outcomes(await serve(toy(8, **rates).build_app()), 400)
    assert first == again
    assert first != other
    assert {"ok", "5xx", "reset"} <= set(first)


async def test_observed_rates_match_the_configured_ones(serve: Any) -> None:
    n, error_rate, reset_rate = 400, 0.3, 0.1
    counts = Counter(
        await outcomes(await serve(toy(3, error_rate=error_rate, reset_rate=reset_rate).build_app()), n)
    )
    # A reset is drawn first; a 5xx only where no reset happened.
    for outcome, p in (("reset", reset_rate), ("5xx", (1 - reset_rate) * error_rate)):
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[outcome] - n * p) < 4.5 * sd, (outcome, counts)


async def test_no_faults_configured_means_no_faults(serve: Any) -> None:
    assert set(await outcomes(await serve(toy(3).build_app()), 100)) == {"ok"}


async def test_a_reset_is_a_connection_error_and_the_server_keeps_serving(serve: Any) -> None:
    sim = toy(reset_rate=1.0)
    url = await serve(sim.build_app())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{url}/ping") as resp:
                await resp.read()
        sim.spec.faults = Faults()  # what the admin endpoint does
        async with session.get(f"{url}/ping") as resp:
            assert resp.status == 200
            assert await resp.json() == {"pong": True}


async def test_a_timeout_hangs_for_timeout_s_then_answers_5xx(serve: Any) -> None:
    url = await serve(toy(timeout_rate=1.0, timeout_s=0.4).build_app())
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(f"{url}/ping", timeout=aiohttp.ClientTimeout(total=0.1)) as resp:
                await resp.read()
        started = time.monotonic()
        async with session.post(f"{url}/ping", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            assert resp.status == 500
        assert time.monotonic() - started >= 0.39


@pytest.mark.parametrize(
    ("latency", "mean", "sd", "low", "high"),
    [
        (Latency(distribution="fixed", ms=12), 12, 0, 12, 12),
        (Latency(distribution="uniform", min_ms=10, max_ms=30), 20, 20 / math.sqrt(12), 10, 30),
        (Latency(distribution="normal", ms=50, stddev_ms=10), 50, 10, 0, math.inf),
        (Latency(distribution="lognormal", ms=40, stddev_ms=30), 40, 30, 0, math.inf),
        (Latency(distribution="lognormal", ms=40), 40, 0, 40, 40),
    ],
)
def test_latency_distribution_has_the_configured_shape(
    latency: Latency, mean: float, sd: float, low: float, high: float
) -> None:
    sim = toy()
    sim.spec.faults = Faults(latency=latency)
    samples = [sim._latency_s() * 1000 for _ in range(20_000)]
    assert low - 1e-9 <= min(samples) and max(samples) <= high + 1e-9
    assert statistics.fmean(samples) == pytest.approx(mean, rel=0.03, abs=1e-9)
    assert statistics.pstdev(samples) == pytest.approx(sd, rel=0.1, abs=1e-6)


async def test_latency_delays_the_answer(serve: Any) -> None:
    url = await serve(toy(latency=Latency(distribution="fixed", ms=60)).build_app())
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(f"{url}/ping") as resp:
            assert resp.status == 200
        assert time.monotonic() - started >= 0.059


async def test_maintenance_answers_everything_but_the_status_paths(serve: Any) -> None:
    sim = toy()
    url = await serve(sim.build_app())
    now = datetime.now(UTC)
    async with aiohttp.ClientSession() as session:

        async def ping() -> int:
            async with session.get(f"{url}/ping") as resp:
                return resp.status

        assert await ping() == 200
        sim.spec.maintenance.append(
            MaintenanceWindow(start=now - timedelta(hours=2), end=now - timedelta(hours=1))
        )
        assert await ping() == 200, "a window that is over does not count"
        sim.spec.maintenance.append(MaintenanceWindow(start=now - timedelta(minutes=1), end=None))
        async with session.get(f"{url}/ping") as resp:
            assert (resp.status, await resp.json()) == (503, {"status": "maintenance"})
        async with session.get(f"{url}/status") as resp:
            assert (resp.status, await resp.json()) == (200, {"status": "normal"})
        sim.spec.maintenance[-1].end = datetime.now(UTC)
        assert await ping() == 200


async def test_maintenance_is_judged_on_the_exchange_clock(serve: Any) -> None:
    sim = toy()
    now = datetime.now(UTC)
    sim.spec.maintenance.append(
        MaintenanceWindow(start=now + timedelta(hours=1), end=now + timedelta(hours=3))
    )
    url = await serve(sim.build_app())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/ping") as resp:
            assert resp.status == 200
        sim.spec.clock_offset_ms = 2 * 3600 * 1000  # the exchange's clock is two hours ahead
        async with session.get(f"{url}/ping") as resp:
            assert resp.status == 503


def test_handlers_drawing_from_rng_do_not_shift_the_fault_stream() -> None:
    a, b = toy(5, error_rate=0.5), toy(5, error_rate=0.5)
    b.rng.random()  # a handler used the simulator's general-purpose stream
    assert [a.fault_rng.random() for _ in range(5)] == [b.fault_rng.random() for _ in range(5)]
