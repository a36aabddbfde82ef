"""CPU per key check: keysentry against the raw signed request and a naive ccxt check, in one run.

For each exchange, in this process (pinned to one core) against the simulators (a child process
pinned to the other core, rate limits lifted), these ways to learn about a healthy key:

- raw: one GET to the key-introspection endpoint, signed by a few lines of hmac, on one shared
  aiohttp session: the floor for one signed HTTP call;
- keysentry: `DiagnosisEngine.diagnose` of a healthy key (cleaning, the adapter's probes in
  parallel, classification, the decision, the catalogue's wording) on one shared `Transport`,
  many checks at once; its CPU is divided by the HTTP calls a check makes;
- naive: what most tools do: a new ccxt async client per key, credentials set, the implicit
  introspection call (`sapi_get_account_apirestrictions` on Binance, ...), close.

Two more phases split keysentry's cost, so a miss points at its cause:

- transport: the raw request sent through keysentry's `Transport.request` (its HTTP layer alone);
- requests: each check's own HTTP requests (signed just before the phase) sent through
  `Transport.request` the way a check sends them, in parallel, the first in the calling task and
  the others in tasks of their own; nothing else: the floor a check's design sets (its calls,
  POST bodies included, and the tasks that make them concurrent);
- logic: the same checks answered in-process from recorded answers (no network): cleaning,
  signing, classification, the decision and the wording.

CPU is this process's user + system time around each phase (`time.process_time`), after a
warm-up. Each round runs every phase once, briefly, one after the other; ratios are taken per
round and their median kept, so load from elsewhere on the machine moves both sides of a ratio
alike. Importing ccxt is not counted, and the heap left by imports is frozen (`gc.freeze`) so no
phase pays for scanning it. The raw and transport phases keep as many requests in flight as the
checks do (concurrency x calls per check), over the same 100 connections.

keysentry's processes (the CLI, the service, the monitor) set the collector's young-generation
threshold (KEYSENTRY_GC_THRESHOLD, default 7,000; keysentry.process): its phases run under it,
and the per-call target is judged against the raw request under it too (equal terms; the raw
request gains a little from it). The raw request, a keysentry check and the naive check also
run under Python's own threshold (700), as a plain script or a host process that keeps it would.

    python bench/check_cpu.py [--exchanges binance,okx,bybit,kucoin] [--rounds 15] [--checks 150]
                              [--raw 500] [--naive 5] [--concurrency 50]
    KEYSENTRY_GC_THRESHOLD=2000 python bench/check_cpu.py    # another threshold for keysentry
    python bench/check_cpu.py --profile okx      # where a check's CPU goes (cProfile)

Targets (issue 3): keysentry's CPU per HTTP call at most 1.5x the raw request's, and a check at
least 20x cheaper than the naive ccxt check. Exit code 0 when every target is met, 1 when not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from _common import (
    EXCHANGES,
    BenchKey,
    CountingTransport,
    SimServer,
    answered_ok,
    available_exchanges,
    bench_key,
    cores,
    cpu_s,
    healthy_scenario,
    machine,
    median,
    naive_ccxt_check,
    raw_request,
    raw_session,
    send_raw,
    verdict,
)

TARGET_PER_CALL = 1.5
TARGET_NAIVE = 20.0
KEYS = 64  # distinct keys per exchange, used in turn
CONNECTIONS = 100  # keysentry's Transport keeps up to 100 connections per host; so does the raw session
T = TypeVar("T")


async def run_workers(n: int, concurrency: int, job: Callable[[int], Awaitable[T]]) -> list[T]:
    """`n` jobs, `concurrency` at a time (workers, not n tasks: the harness should cost little)."""
    results: list[T] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            results.append(await job(i))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    return results


class GcClock:
    """CPU seconds spent in the garbage collector since installed (through `gc.callbacks`)."""

    def __init__(self) -> None:
        import gc

        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = cpu_s()
        else:
            self.total += cpu_s() - self._started


GC = GcClock()


async def timed(n: int, concurrency: int, job: Callable[[int], Awaitable[T]]) -> tuple[float, list[T]]:
    """(CPU ms per job, results) of n jobs."""
    before = cpu_s()
    results = await run_workers(n, concurrency, job)
    return (cpu_s() - before) / n * 1000, results


@dataclass
class Samples:
    raw_ms: list[float] = field(default_factory=list)
    transport_ms: list[float] = field(default_factory=list)
    check_ms: list[float] = field(default_factory=list)
    requests_ms: list[float] = field(default_factory=list)  # the check's requests alone, in parallel
    requests_gc_ms: list[float] = field(default_factory=list)
    logic_ms: list[float] = field(default_factory=list)
    naive_ms: list[float] = field(default_factory=list)
    raw_tuned_ms: list[float] = field(default_factory=list)  # raw, at keysentry's threshold
    check_default_ms: list[float] = field(default_factory=list)  # keysentry at Python's threshold
    check_gc_ms: list[float] = field(default_factory=list)  # of check_ms, in the garbage collector
    raw_gc_ms: list[float] = field(default_factory=list)
    calls: float = 0.0


# -- the collector threshold ---------------------------------------------------------------------


@contextlib.contextmanager
def collector(threshold: int) -> Iterator[None]:
    """Phases run under this young-generation threshold (0: Python's own), restored after."""
    import gc

    from keysentry.process import tune_collector

    before = tune_collector(threshold)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def keysentry_threshold() -> int:
    """The threshold keysentry's processes set (KEYSENTRY_GC_THRESHOLD, default 7,000)."""
    from keysentry.settings import load_settings

    return load_settings().gc_threshold


# -- the phases ----------------------------------------------------------------------------------------


class ReplayTransport:
    """Answers every request from answers recorded off the simulator: the check without a network."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = answers

    @property
    def egress_ips(self) -> tuple[str, ...]:
        return ()

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
        return self.answers[url.partition("?")[0]]

    async def close(self) -> None:
        return None


class SpyTransport(ReplayTransport):
    """`ReplayTransport` that also keeps every request sent: (method, url, headers, body)."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        super().__init__(answers)
        self.sent: list[tuple[str, str, Mapping[str, str] | None, bytes | None]] = []

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
        self.sent.append((method, url, headers, body))
        return await super().request(method, url, headers=headers, body=body)


async def signed_requests(
    answers: Mapping[str, Any], exchange: str, url: str, keys: Sequence[BenchKey], n: int, calls: int
) -> list[list[tuple[str, str, Mapping[str, str] | None, bytes | None]]]:
    """The requests of n checks, signed now by keysentry itself (one check at a time)."""
    spy = SpyTransport(answers)
    one = _checker(spy, exchange, url, keys)
    for i in range(n):
        await one(i)
    if len(spy.sent) != n * calls:
        raise SystemExit(f"{exchange}: {len(spy.sent)} requests for {n} checks of {calls} calls")
    return [spy.sent[i : i + calls] for i in range(0, len(spy.sent), calls)]


class RecordingTransport(CountingTransport):
    """Counts requests and keeps the last answer per URL path, for `ReplayTransport`."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.answers: dict[str, Any] = {}

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
        answer = await super().request(
            method, url, headers=headers, body=body, egress_ip=egress_ip, timeouts=timeouts
        )
        self.answers[url.partition("?")[0]] = answer
        return answer


def _checker(
    transport: Any, exchange: str, url: str, keys: Sequence[BenchKey]
) -> Callable[[int], Awaitable[Any]]:
    """One healthy check per call, as a platform's connect or re-check would run it."""
    from keysentry.diagnosis.engine import CheckOptions, DiagnosisEngine

    engine, options = DiagnosisEngine(transport), CheckOptions(base_url=url)

    async def one(i: int) -> Any:
        k = keys[i % len(keys)]
        return await engine.diagnose(exchange, k.api_key, k.secret, k.passphrase, options)

    return one


def _code(body: bytes) -> Any:
    data = json.loads(body)
    return (data.get("code"), data.get("retCode")) if isinstance(data, dict) else None


def _as_recorded(
    recorded: Mapping[str, Any], batch: Sequence[tuple[str, str, Any, Any]], got: Sequence[Any]
) -> bool:
    """Whether requests sent alone got the answers the healthy check got (status and the exchange's code)."""
    expected = [recorded[url.partition("?")[0]] for _, url, _, _ in batch]
    return all(
        a.status == e.status and _code(a.body) == _code(e.body) for a, e in zip(got, expected, strict=True)
    )


def _healthy(exchange: str, diagnoses: Sequence[Any]) -> None:
    from keysentry.domain import Status

    bad = [d for d in diagnoses if d.status is not Status.CONNECTED]
    if bad:
        raise SystemExit(f"{exchange}: a healthy key was diagnosed {bad[0].status}: {bad[0].summary}")


async def measure(ccxt_async: Any, exchange: str, url: str, args: argparse.Namespace) -> Samples:
    """Every phase for one exchange, `args.rounds` times in turn, on warm sessions.

    Short phases taken one after the other, many times, let a ratio be read per round: the
    machine may be shared, and what it does moves all phases of one round alike.
    """
    from keysentry.exchanges.transport import Transport

    keys = [bench_key(exchange, n) for n in range(KEYS)]
    s = Samples()
    async with Transport(limit_per_host=CONNECTIONS) as transport, raw_session(CONNECTIONS) as session:
        recording = RecordingTransport(transport)
        warm_n = max(args.concurrency, args.checks)
        _healthy(
            exchange, await run_workers(warm_n, args.concurrency, _checker(recording, exchange, url, keys))
        )
        s.calls = recording.count / warm_n
        # The same demand as the checks (concurrency x calls), over the same 100 connections.
        inflight = round(args.concurrency * s.calls)

        async def raw(i: int) -> tuple[int, bytes]:
            return await send_raw(session, exchange, url, keys[i % len(keys)])

        async def through_transport(i: int) -> Any:
            target, headers = raw_request(exchange, url, keys[i % len(keys)])
            return await transport.request("GET", target, headers=headers)

        async def naive(i: int) -> Any:
            return await naive_ccxt_check(ccxt_async, exchange, url, keys[i % len(keys)])

        check = _checker(transport, exchange, url, keys)
        logic = _checker(ReplayTransport(recording.answers), exchange, url, keys)
        calls = round(s.calls)
        batches: list[list[tuple[str, str, Mapping[str, str] | None, bytes | None]]] = []

        async def requests(i: int) -> list[Any]:
            from keysentry.exchanges.base import ExchangeAdapter

            sends = (transport.request(m, u, headers=h, body=b) for m, u, h, b in batches[i])
            return await ExchangeAdapter.gather(*sends)

        warm_raw = await run_workers(args.raw, inflight, raw)
        if not all(answered_ok(exchange, status, body) for status, body in warm_raw):
            raise SystemExit(f"{exchange}: the raw request was refused; the bench scenario is broken")
        warm_transport = await run_workers(args.raw, inflight, through_transport)
        if not all(answered_ok(exchange, a.status, a.body) for a in warm_transport):
            raise SystemExit(f"{exchange}: the raw request sent through Transport was refused")
        _healthy(exchange, await run_workers(args.checks, args.concurrency, logic))
        batches = await signed_requests(recording.answers, exchange, url, keys, args.checks, calls)
        if not _as_recorded(recording.answers, batches[0], await requests(0)):
            raise SystemExit(f"{exchange}: a check's own requests, sent alone, got other answers")
        if not all(isinstance(a, dict) for a in await run_workers(3, 3, naive)):
            raise SystemExit(f"{exchange}: the naive ccxt check got no answer")

        async def sandwich() -> tuple[float, float, float, float]:
            """Raw, check, check, raw (CPU ms per request and per check, and their GC ms): the
            machine's speed drifts over seconds, and this order cancels a steady drift."""
            raw_ms = check_ms = raw_gc = check_gc = 0.0
            for phase in ("raw", "check", "check", "raw"):
                gc_before = GC.total
                if phase == "raw":
                    ms, answers = await timed(args.raw, inflight, raw)
                    if any(status != 200 for status, _ in answers):
                        raise SystemExit(f"{exchange}: the raw request failed during the measurement")
                    raw_ms, raw_gc = raw_ms + ms / 2, raw_gc + (GC.total - gc_before) / args.raw * 500
                else:
                    ms, done = await timed(args.checks, args.concurrency, check)
                    _healthy(exchange, done)
                    check_ms, check_gc = (
                        check_ms + ms / 2,
                        check_gc + (GC.total - gc_before) / args.checks * 500,
                    )
            return raw_ms, check_ms, raw_gc, check_gc

        for _ in range(args.rounds):
            # Python's own threshold, as a plain script (and ccxt's users) run.
            raw_ms, check_ms, raw_gc, _ = await sandwich()
            s.raw_ms.append(raw_ms)
            s.raw_gc_ms.append(raw_gc)
            s.check_default_ms.append(check_ms)
            # Signed just before (outside the measurement): timestamps stay within every window.
            batches = await signed_requests(recording.answers, exchange, url, keys, args.checks, calls)
            # keysentry's threshold, as its processes run; the raw request again, on equal terms.
            with collector(args.threshold):
                raw_ms, check_ms, _, check_gc = await sandwich()
                s.raw_tuned_ms.append(raw_ms)
                s.check_ms.append(check_ms)
                s.check_gc_ms.append(check_gc)
                gc_before = GC.total
                ms, sent = await timed(args.checks, args.concurrency, requests)
                s.requests_gc_ms.append((GC.total - gc_before) / args.checks * 1000)
                s.requests_ms.append(ms)
                ms, _ = await timed(args.checks, args.concurrency, logic)
                s.logic_ms.append(ms)
                ms, through = await timed(args.raw, inflight, through_transport)
                s.transport_ms.append(ms)
            ms, _ = await timed(args.naive, args.concurrency, naive)
            s.naive_ms.append(ms)
            if any(a.status != 200 for a in through):
                raise SystemExit(f"{exchange}: requests through Transport failed during the measurement")
            if not all(_as_recorded(recording.answers, b, a) for b, a in zip(batches, sent, strict=True)):
                raise SystemExit(
                    f"{exchange}: a check's own requests got other answers during the measurement"
                )
    return s


# -- profiling ----------------------------------------------------------------------------------


async def profile(exchange: str, url: str, keys: Sequence[BenchKey], n: int, concurrency: int) -> str:
    """cProfile of n keysentry checks: where the CPU of a check goes, heaviest first."""
    from keysentry.exchanges.transport import Transport

    async with Transport(limit_per_host=CONNECTIONS) as transport:
        one = _checker(transport, exchange, url, keys)
        await run_workers(concurrency, concurrency, one)
        profiler = cProfile.Profile()
        profiler.enable()
        await run_workers(n, concurrency, one)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(r"keysentry", 30)
    return out.getvalue()


# -- the run -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, urls: dict[str, str], exchanges: Sequence[str]) -> dict[str, Samples]:
    import gc

    import ccxt.async_support as ccxt_async  # ~1 s and not per check: kept out of the measurement

    # ccxt's import leaves a large heap that keysentry never has; frozen, no phase pays for
    # scanning it when its allocations happen to trigger a full collection.
    gc.freeze()
    return {ex: await measure(ccxt_async, ex, urls[ex], args) for ex in exchanges}


def _range(values: Sequence[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}"


def _ratios(top: Sequence[float], bottom: Sequence[float], scale: float = 1.0) -> float:
    """The median of the per-round ratios: each round's phases ran under the same conditions."""
    return median([t / scale / b for t, b in zip(top, bottom, strict=True)])


def report(samples: dict[str, Samples], missing: Sequence[str], args: argparse.Namespace) -> bool:
    print(
        f"{machine()}; this process on one core, the simulators on the other; {args.rounds} rounds of "
        f"{args.raw} raw requests ({args.concurrency} x calls per check in flight), {args.checks} "
        f"keysentry checks ({args.concurrency} at once), {args.naive} naive ccxt checks (all at once); "
        f"collector threshold {args.threshold} for keysentry as its processes run it and for the raw "
        "request on equal terms, Python's 700 otherwise; CPU ms, medians; ratios are medians of "
        "per-round ratios"
    )
    print(
        f"{'exchange':<8} {'raw/req':>7} {'Transport/req':>13} {'check':>6} {'calls':>5} {'check/call':>10} "
        f"{'per call vs raw':>15} {'logic/check':>11} {'naive/check':>11} {'naive vs check':>14}"
    )
    ok = True
    verdicts, splits, others = [], [], []
    for ex, s in samples.items():
        raw, transport, check = median(s.raw_tuned_ms), median(s.transport_ms), median(s.check_ms)
        logic, naive = median(s.logic_ms), median(s.naive_ms)
        # Judged on equal terms: both at keysentry's threshold (the raw request gains from it too).
        call_ratio = _ratios(s.check_ms, s.raw_tuned_ms, s.calls)
        # keysentry as its processes run it against ccxt as a plain script runs it.
        naive_ratio = _ratios(s.naive_ms, s.check_ms)
        print(
            f"{ex:<8} {raw:>7.3f} {transport:>13.3f} {check:>6.3f} {s.calls:>5.1f} {check / s.calls:>10.3f} "
            f"{call_ratio:>14.2f}x {logic:>11.3f} {naive:>11.2f} {naive_ratio:>13.1f}x"
        )
        per_call_ok, naive_ok = call_ratio <= TARGET_PER_CALL, naive_ratio >= TARGET_NAIVE
        ok = ok and per_call_ok and naive_ok
        verdicts.append(
            f"{ex}: {verdict(per_call_ok)} the per-call target ({call_ratio:.2f}x the raw request, "
            f"target <= {TARGET_PER_CALL}x); {verdict(naive_ok)} the naive-check target "
            f"({naive_ratio:.1f}x cheaper, target >= {TARGET_NAIVE:g}x)"
        )
        rest = check - logic - s.calls * transport
        requests = median(s.requests_ms)
        splits.append(
            f"{ex}: check {check:.3f} = logic {logic:.3f} + {s.calls:g} x Transport {transport:.3f} "
            f"+ {rest:.3f} rest; garbage collection {median(s.check_gc_ms):.3f} of the check; "
            f"budget at the target {TARGET_PER_CALL * raw * s.calls:.3f}; the check's own requests "
            f"alone, in parallel: {requests:.3f}, {_ratios(s.requests_ms, s.raw_tuned_ms, s.calls):.2f}x "
            f"the raw request per call (garbage collection {median(s.requests_gc_ms):.3f}); "
            f"rounds: raw {_range(s.raw_tuned_ms)}, check {_range(s.check_ms)}, logic {_range(s.logic_ms)}, "
            f"requests {_range(s.requests_ms)}"
        )
        others.append(
            f"{ex}: raw request {median(s.raw_ms):.3f} (garbage collection {median(s.raw_gc_ms):.3f}); "
            f"keysentry {median(s.check_default_ms):.3f} a check, "
            f"{_ratios(s.check_default_ms, s.raw_ms, s.calls):.2f}x the raw request per call; "
            f"keysentry at its threshold against this raw request: "
            f"{_ratios(s.check_ms, s.raw_ms, s.calls):.2f}x"
        )
    for line in verdicts:
        print(line)
    print("where a check's CPU goes (ms; logic: the check answered in-process, no network):")
    for line in splits:
        print("  " + line)
    print("at Python's threshold (700), as in a host process that keeps it:")
    for line in others:
        print("  " + line)
    for ex in missing:
        print(f"{ex}: not measured: keysentry has no adapter for it yet")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", default=",".join(EXCHANGES))
    parser.add_argument("--checks", type=int, default=150, help="keysentry checks per round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--raw", type=int, default=500, help="raw requests per round")
    parser.add_argument("--naive", type=int, default=5, help="naive ccxt checks per round")
    parser.add_argument("--rounds", type=int, default=15, help="rounds per exchange")
    parser.add_argument(
        "--profile", metavar="EXCHANGE", help="print a cProfile of keysentry's checks instead"
    )
    args = parser.parse_args()
    args.threshold = keysentry_threshold()
    wanted = [e.strip() for e in args.exchanges.split(",") if e.strip()]
    if args.profile:
        wanted = [args.profile]
    unknown = sorted(set(wanted) - set(EXCHANGES))
    if unknown:
        parser.error(f"unknown exchange(s) {', '.join(unknown)}; choose from {', '.join(EXCHANGES)}")
    exchanges, missing = available_exchanges(wanted)
    if not exchanges:
        print(f"nothing to measure: no keysentry adapter for {', '.join(missing)}")
        return 1
    server_core, client_core = cores()
    os.sched_setaffinity(0, {client_core})
    with SimServer(healthy_scenario(exchanges, KEYS), server_core) as server:
        if args.profile:
            ex = exchanges[0]
            keys = [bench_key(ex, n) for n in range(KEYS)]
            with collector(args.threshold):
                print(asyncio.run(profile(ex, server.urls[ex], keys, args.checks, args.concurrency)))
            return 0
        samples = asyncio.run(run(args, server.urls, exchanges))
    return 0 if report(samples, missing, args) else 1


if __name__ == "__main__":
    sys.exit(main())
