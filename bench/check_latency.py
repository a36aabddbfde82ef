"""Wall time of a full check of a healthy key against one request, with 100 ms latency per request.

The simulators run in a child process on the other core and delay every request by a fixed
latency (scenario `faults.latency`, distribution `fixed`, 100 ms by default). For each exchange,
alternating, `--runs` times:

- baseline: one raw signed request to the key-introspection endpoint (the slowest single
  request a check could make: the same latency, the same endpoint);
- check: `DiagnosisEngine.diagnose` of a healthy key, every probe included;

both cold (a new aiohttp session or `Transport` each time: new connections, as one
`keysentry check` process has) and warm (connections kept alive, as a service re-checking
keys has them). It prints the medians, their ratio, the HTTP requests a check made and in how
many sequential rounds (requests that start together form one round).

    python bench/check_latency.py [--exchanges binance,okx,bybit,kucoin] [--runs 9] [--latency-ms 100]

Target (issue 3): a full check of a healthy key takes under 1.5x the slowest single request.
Exit code 0 when every exchange meets it (cold and warm), 1 when not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from _common import (
    EXCHANGES,
    BenchKey,
    SimServer,
    answered_ok,
    available_exchanges,
    bench_key,
    cores,
    healthy_scenario,
    machine,
    median,
    raw_session,
    send_raw,
    verdict,
)

TARGET = 1.5


class TimingTransport:
    """keysentry's HttpTransport protocol around another transport, noting when each request starts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.starts: list[float] = []

    @property
    def egress_ips(self) -> tuple[str, ...]:
        ips: tuple[str, ...] = self.inner.egress_ips
        return ips

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        egress_ip: str | None = None,
        timeouts: Any = None,
    ) -> Any:
        self.starts.append(time.perf_counter())
        return await self.inner.request(
            method, url, headers=headers, body=body, egress_ip=egress_ip, timeouts=timeouts
        )

    async def close(self) -> None:
        await self.inner.close()

    def rounds(self, gap_s: float) -> int:
        """Requests starting within `gap_s` of the previous one belong to the same round."""
        starts = sorted(self.starts)
        return sum(1 for a, b in zip([-1e9, *starts], starts, strict=False) if b - a > gap_s)


@dataclass
class Samples:
    baseline_cold: list[float] = field(default_factory=list)
    check_cold: list[float] = field(default_factory=list)
    baseline_warm: list[float] = field(default_factory=list)
    check_warm: list[float] = field(default_factory=list)
    requests: set[int] = field(default_factory=set)
    rounds: set[int] = field(default_factory=set)


async def _baseline(session: Any, exchange: str, url: str, key: BenchKey) -> float:
    started = time.perf_counter()
    status, body = await send_raw(session, exchange, url, key)
    elapsed = time.perf_counter() - started
    if not answered_ok(exchange, status, body):
        raise SystemExit(f"{exchange}: the baseline request was refused (HTTP {status})")
    return elapsed * 1000


async def _check(transport: Any, exchange: str, url: str, key: BenchKey, s: Samples, gap_s: float) -> float:
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine
    from keysentry.domain import Status

    timing = TimingTransport(transport)
    started = time.perf_counter()
    diagnosis = await DiagnosisEngine(timing).diagnose(
        exchange, key.api_key, key.secret, key.passphrase, CheckOptions(base_url=url)
    )
    elapsed = time.perf_counter() - started
    if diagnosis.status is not Status.CONNECTED:
        raise SystemExit(f"{exchange}: the healthy key was diagnosed {diagnosis.status}: {diagnosis.summary}")
    s.requests.add(len(timing.starts))
    s.rounds.add(timing.rounds(gap_s))
    return elapsed * 1000


async def measure(exchange: str, url: str, runs: int, latency_ms: float) -> Samples:
    from keysentry.exchanges.transport import Transport

    s = Samples()
    gap_s = latency_ms / 2000  # half the latency: a later round cannot start sooner than one latency
    keys = [bench_key(exchange, n) for n in range(4)]
    async with raw_session() as warm_session, Transport() as warm_transport:
        await _baseline(warm_session, exchange, url, keys[0])  # open the warm connections
        await _check(warm_transport, exchange, url, keys[0], s, gap_s)
        for i in range(runs):
            key = keys[i % len(keys)]
            async with raw_session() as session:
                s.baseline_cold.append(await _baseline(session, exchange, url, key))
            async with Transport() as transport:
                s.check_cold.append(await _check(transport, exchange, url, key, s, gap_s))
            s.baseline_warm.append(await _baseline(warm_session, exchange, url, key))
            s.check_warm.append(await _check(warm_transport, exchange, url, key, s, gap_s))
    return s


def _counts(values: set[int]) -> str:
    return "/".join(str(v) for v in sorted(values))


def report(samples: dict[str, Samples], missing: Sequence[str], args: argparse.Namespace) -> bool:
    print(
        f"{machine()}; simulators on one core with {args.latency_ms:g} ms fixed latency per request, "
        f"this process on the other; medians of {args.runs} runs (ms of wall time)"
    )
    print(
        f"{'exchange':<8} {'connections':<11} {'one request':>11} {'full check':>10} {'ratio':>6}  "
        f"{'requests':>8} {'rounds':>6}  verdict"
    )
    ok = True
    for ex, s in samples.items():
        for kind, base, check in (
            ("cold", s.baseline_cold, s.check_cold),
            ("warm", s.baseline_warm, s.check_warm),
        ):
            b, c = median(base), median(check)
            met = c / b < TARGET
            ok = ok and met
            print(
                f"{ex:<8} {kind:<11} {b:>11.1f} {c:>10.1f} {c / b:>5.2f}x  {_counts(s.requests):>8} "
                f"{_counts(s.rounds):>6}  {verdict(met)} (< {TARGET}x)"
            )
    for ex in missing:
        print(f"{ex}: not measured: keysentry has no adapter for it yet")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", default=",".join(EXCHANGES))
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    wanted = [e.strip() for e in args.exchanges.split(",") if e.strip()]
    unknown = sorted(set(wanted) - set(EXCHANGES))
    if unknown:
        parser.error(f"unknown exchange(s) {', '.join(unknown)}; choose from {', '.join(EXCHANGES)}")
    exchanges, missing = available_exchanges(wanted)
    if not exchanges:
        print(f"nothing to measure: no keysentry adapter for {', '.join(missing)}")
        return 1
    server_core, client_core = cores()
    os.sched_setaffinity(0, {client_core})
    scenario = healthy_scenario(exchanges, 4, latency_ms=args.latency_ms)
    with SimServer(scenario, server_core) as server:
        samples = {
            ex: asyncio.run(measure(ex, server.urls[ex], args.runs, args.latency_ms)) for ex in exchanges
        }
    return 0 if report(samples, missing, args) else 1


if __name__ == "__main__":
    sys.exit(main())
