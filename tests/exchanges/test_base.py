"""The shared adapter plumbing (keysentry.exchanges.base): running probes together, HTTP-level answers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from keysentry.exchanges.base import (
    Cause,
    ExchangeAdapter,
    KeyFacts,
    Probe,
    ProbeOutcome,
    SignedRequest,
    classify_http,
)
from keysentry.exchanges.okx import OkxAdapter
from keysentry.exchanges.transport import MockTransport, RawResponse


def outcome(probe: Probe) -> ProbeOutcome:
    return ProbeOutcome(probe, Cause.OK)


async def test_gather_returns_outcomes_in_order_and_runs_probes_together() -> None:
    probes = (Probe.INTROSPECTION, Probe.BALANCE, Probe.TRADE)
    started: list[Probe] = []
    release = asyncio.Event()

    async def probe(p: Probe) -> ProbeOutcome:
        started.append(p)
        if len(started) == len(probes):
            release.set()
        await release.wait()  # every probe must have started before any can finish
        return outcome(p)

    results = await asyncio.wait_for(ExchangeAdapter.gather(*(probe(p) for p in probes)), 5)
    assert [o.probe for o in results] == list(probes)
    assert started == list(probes)  # requests leave in the order the adapter listed them


async def test_gather_of_nothing_and_of_one() -> None:
    assert await ExchangeAdapter.gather() == []

    async def one() -> ProbeOutcome:
        return outcome(Probe.ACCOUNT)

    tasks_before = len(asyncio.all_tasks())
    assert [o.probe for o in await ExchangeAdapter.gather(one())] == [Probe.ACCOUNT]
    assert len(asyncio.all_tasks()) == tasks_before  # the only probe ran in the calling task


def _slow(cancelled: list[Probe]) -> Callable[[Probe], Coroutine[Any, Any, ProbeOutcome]]:
    """A probe that waits until cancelled, and notes in `cancelled` that it was."""

    async def slow(p: Probe) -> ProbeOutcome:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(p)
            raise
        return outcome(p)

    return slow


async def test_gather_cancels_the_other_probes_when_one_raises() -> None:
    cancelled: list[Probe] = []
    slow = _slow(cancelled)

    async def broken() -> ProbeOutcome:
        await asyncio.sleep(0)
        raise RuntimeError("a bug in an adapter")

    with pytest.raises(RuntimeError, match="a bug"):
        await ExchangeAdapter.gather(broken(), slow(Probe.BALANCE), slow(Probe.TRADE))
    await asyncio.sleep(0)
    assert sorted(cancelled) == sorted([Probe.BALANCE, Probe.TRADE])


async def test_gather_cancelled_from_outside_cancels_every_probe() -> None:
    cancelled: list[Probe] = []
    slow = _slow(cancelled)

    task = asyncio.create_task(ExchangeAdapter.gather(slow(Probe.INTROSPECTION), slow(Probe.BALANCE)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert sorted(cancelled) == sorted([Probe.INTROSPECTION, Probe.BALANCE])


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (200, None),
        (400, None),
        (404, None),
        (418, Cause.IP_BANNED),
        (429, Cause.RATE_LIMITED),
        (500, Cause.SERVER_ERROR),
        (503, Cause.MAINTENANCE),
        (504, Cause.SERVER_ERROR),
    ],
)
def test_classify_http(status: int, cause: Cause | None) -> None:
    result = classify_http(Probe.ACCOUNT, RawResponse(status, {"Retry-After": "7"}))
    assert (result.cause if result else None) is cause
    if result is not None:
        assert (result.http_status, result.retry_after_s) == (status, 7.0)


def test_adapters_share_their_base_urls_read_only() -> None:
    mock = MockTransport(lambda *_: RawResponse(200))
    a = OkxAdapter(mock, base_url="http://127.0.0.1:9999/prefix")
    b = OkxAdapter(mock, base_url="http://127.0.0.1:9999/prefix")
    assert a.base_urls == {"rest": "http://127.0.0.1:9999/prefix"} and a.base_urls is b.base_urls
    with pytest.raises(TypeError):
        a.base_urls["rest"] = "https://elsewhere.example"  # type: ignore[index]
    assert OkxAdapter(mock).base_urls == {"rest": "https://www.okx.com"}


class _Adapter(ExchangeAdapter):
    name = "test"
    environments = {"mainnet": {"api": "https://api.example.com"}}  # noqa: RUF012
    shared = ProbeOutcome(Probe.ACCOUNT, Cause.OK)

    def __init__(self, *, share: bool) -> None:
        super().__init__(
            MockTransport(lambda *_: RawResponse(200, elapsed_ms=12.5), egress_ips=("127.0.0.2",))
        )
        self.share = share

    async def check(self, request: object) -> KeyFacts:  # type: ignore[override]
        raise NotImplementedError

    def classify(self, probe: Probe, raw: RawResponse) -> ProbeOutcome:
        return self.shared if self.share else ProbeOutcome(probe, Cause.OK, raw.status)


@pytest.mark.parametrize("share", [False, True])
async def test_send_stamps_timing_and_address_without_touching_a_shared_outcome(share: bool) -> None:
    adapter = _Adapter(share=share)
    request = SignedRequest("GET", "https://api.example.com/x", {})
    sent = await adapter.send(Probe.ACCOUNT, request, egress_ip="127.0.0.2")
    assert (sent.elapsed_ms, sent.egress_ip) == (12.5, "127.0.0.2")
    default = await adapter.send(Probe.ACCOUNT, request)
    assert (default.elapsed_ms, default.egress_ip) == (12.5, None)  # the address asked for, not chosen
    assert (_Adapter.shared.elapsed_ms, _Adapter.shared.egress_ip) == (0.0, None)
    assert sent is not default
