"""Webhook signing and delivery against a real aiohttp receiver on 127.0.0.1, and the monitor's metrics."""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import canary
from keysentry.domain import Status
from keysentry.domain.secrets import Secret
from keysentry.monitor import metrics as metrics_module
from keysentry.monitor import webhooks as webhooks_module
from keysentry.monitor.events import Event, EventType, ping_event
from keysentry.monitor.metrics import MonitorMetrics
from keysentry.monitor.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    DeliveryAttempt,
    MemoryDeliveryLog,
    RetryPolicy,
    SignatureError,
    WebhookEndpoint,
    WebhookSender,
    WebhookURLError,
    backoff_delay,
    check_url,
    new_secret,
    sign,
    signature_header,
    verify,
)

DOC = Path(__file__).parents[2] / "docs/webhooks.md"
_SECRET_TAIL, _TOKEN_TAIL = secrets.token_hex(16), secrets.token_hex(10)
SECRET = canary.register(f"whsec_CANARY{_SECRET_TAIL}", "webhook-secret", _SECRET_TAIL).value
# A token in the endpoint's path, as many webhook URLs carry: as secret as the signing secret.
TOKEN = canary.register(f"CANARY{_TOKEN_TAIL}", "webhook-url-token", _TOKEN_TAIL).value
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def event(tenant: str = "tenant-1") -> Event:
    data = {"exchange": "binance", "status_before": "connected", "status_after": "expired"}
    return Event(EventType.BROKEN, tenant, "conn-1", NOW, data)


# -- a real receiver -----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base: str
    received: list[Received] = field(default_factory=list)
    # answers for /hook in order, then 200; each (status, headers)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = f"/hook/{TOKEN}") -> str:
        return self.base + path

    @property
    def hook_calls(self) -> list[Received]:
        return [r for r in self.received if r.path.startswith("/hook")]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver(base="")

    async def handle(request: web.Request) -> web.StreamResponse:
        state.received.append(Received(request.path, dict(request.headers), await request.read()))
        if request.path == "/slow":
            await state.release.wait()
        if request.path.startswith("/hook") and state.script:
            status, headers = state.script.pop(0)
            return web.Response(status=status, headers=headers, text=f"answer {status}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)  # the receiver is not ours: its log would show the token
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base = f"http://{host}:{port}"
    yield state
    state.release.set()
    await runner.cleanup()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@dataclass
class Kit:
    sender: WebhookSender
    log: MemoryDeliveryLog
    sleeps: Sleeps
    metrics: MonitorMetrics


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    log, sleeps, metrics = MemoryDeliveryLog(), Sleeps(), MonitorMetrics()
    policy = RetryPolicy(max_attempts=4, base_s=1.0, cap_s=8.0, connect_timeout_s=1.0, total_timeout_s=0.3)
    sender = WebhookSender(
        log, policy=policy, allow_private=True, metrics=metrics, sleep=sleeps, rng=random.Random(5)
    )
    async with sender:
        yield Kit(sender, log, sleeps, metrics)


def endpoint(url: str, **kw: Any) -> WebhookEndpoint:
    return WebhookEndpoint(id="ep-1", tenant_id="tenant-1", url=url, secret=Secret(SECRET), **kw)


def sample(metrics: MonitorMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_public_api_is_pinned() -> None:
    assert set(webhooks_module.__all__) == {
        "ATTEMPT_HEADER", "EVENT_ID_HEADER", "EVENT_TYPE_HEADER", "SIGNATURE_HEADER", "DeliveryAttempt",
        "DeliveryLog", "DeliveryResult", "MemoryDeliveryLog", "RetryPolicy", "SignatureError", "WebhookEndpoint",
        "WebhookSender", "WebhookURLError", "backoff_delay", "check_url", "new_secret", "sign",
        "signature_header", "verify",
    }  # fmt: skip
    assert set(metrics_module.__all__) == {"OTHER", "MonitorMetrics"}


# -- signing -------------------------------------------------------------------------------------------


def test_signature_round_trip_and_rejections() -> None:
    body, t = event().body(), 1_773_144_000
    header = signature_header([SECRET], body, t)
    assert re.fullmatch(r"t=1773144000,v1=[0-9a-f]{64}", header)
    assert verify(SECRET, header, body, now=t + 10) == t

    cases: list[tuple[str, str, bytes, float, str]] = [
        ("tampered body", header, body.replace(b"expired", b"connect"), t, "does not match"),
        (
            "tampered timestamp",
            header.replace("t=1773144000", "t=1773144100"),
            body,
            t + 100,
            "does not match",
        ),
        ("old timestamp", header, body, t + 301, "301 s old"),
        ("future timestamp", header, body, t - 400, "in the future"),
        ("wrong secret", signature_header(["whsec_other"], body, t), body, t, "does not match"),
        ("no signature", f"t={t}", body, t, "malformed"),
        ("two timestamps", f"t={t},{header}", body, t, "malformed"),
        ("garbage", "v1=abc", body, t, "malformed"),
    ]
    for name, bad_header, bad_body, now, reason in cases:
        with pytest.raises(SignatureError, match=reason):
            verify(SECRET, bad_header, bad_body, now=now)
        assert SECRET not in name  # the cases never print the secret; neither may errors:
    with pytest.raises(SignatureError) as caught:
        verify(SECRET, header, b"x", now=t)
    assert SECRET not in str(caught.value)


def test_both_secrets_sign_during_a_rotation() -> None:
    body, t = b'{"x":1}', 1_773_144_000
    header = signature_header([SECRET, "whsec_previous"], body, t)
    assert header.count("v1=") == 2
    assert verify(SECRET, header, body, now=t) == t
    assert verify("whsec_previous", header, body, now=t) == t
    assert sign(SECRET, body, t) in header


def test_new_secrets_are_unique_and_hidden() -> None:
    a, b = new_secret(), new_secret()
    assert a != b and a.reveal().startswith("whsec_") and len(a.reveal()) > 40
    assert a.reveal() not in repr(a)


def test_backoff_grows_with_jitter_and_stays_capped() -> None:
    rng = random.Random(2)
    for attempt in range(1, 12):
        bound = min(100.0, 5.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base_s=5, cap_s=100, rng=rng) for _ in range(200)]
        assert all(bound / 2 <= d <= bound for d in delays)
        assert max(delays) - min(delays) > bound / 4  # jittered, not one fixed value
    assert backoff_delay(10**6, base_s=5, cap_s=100, rng=rng) <= 100
    assert backoff_delay(1, base_s=5, cap_s=100, rng=rng, retry_after_s=60) == 60
    assert backoff_delay(1, base_s=5, cap_s=100, rng=rng, retry_after_s=10**5) == 100


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/hook", "http"),
        ("/hook", "http"),
        ("https://user:pw@example.com/hook", "user name"),
        ("http://127.0.0.1:8080/hook", "public address"),
        ("http://10.1.2.3/hook", "public address"),
        ("http://169.254.169.254/latest/meta-data", "public address"),
        ("http://[::1]/hook", "public address"),
        ("http://[::ffff:192.168.0.1]/hook", "public address"),
        ("http://0.0.0.0/hook", "public address"),
        ("http://224.0.0.1/hook", "public address"),  # multicast
        # names that lead to loopback without asking DNS (RFC 6761)
        ("http://localhost:8080/hook", "public address"),
        ("http://LocalHost./hook", "public address"),
        ("http://api.localhost/hook", "public address"),
        # numeric IPv4 forms resolvers accept that are not address literals
        ("http://127.1/hook", "public address"),
        ("http://2130706433/hook", "public address"),
        ("http://0x7f.1/hook", "public address"),
        ("http://0177.0.0.1/hook", "public address"),
        ("http://10.1/hook", "public address"),
        ("http://127.0.0.1./hook", "public address"),
        ("http://0/hook", "public address"),
    ],
)
def test_urls_keysentry_refuses(url: str, why: str) -> None:
    with pytest.raises(WebhookURLError, match=why) as refused:
        check_url(url)
    assert "/hook" not in str(refused.value) and "meta-data" not in str(refused.value)  # never the URL


def test_urls_keysentry_accepts() -> None:
    assert check_url("https://hooks.example.com/k/1?x=2").host == "hooks.example.com"
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True).port == 8080
    for allowed in ("http://localhost:8080/hook", "http://127.1/hook", "http://api.localhost/hook"):
        assert check_url(allowed, allow_private=True).path == "/hook"
    # names that merely look like the refused ones are names: checked when connecting
    for name in ("https://localhost.example.com/h", "https://mylocalhost/h", "https://8.8.8.8.nip.example/h"):
        assert check_url(name).host == name.split("/")[2]
    assert check_url("http://8.8/hook").host == "8.8"  # shorthand of 8.0.0.8: public


# -- delivery ------------------------------------------------------------------------------------------


async def test_a_delivered_event_verifies_at_the_receiver(receiver: Receiver, kit: Kit) -> None:
    e = event()
    result = await kit.sender.deliver(e, endpoint(receiver.url()))
    assert result.delivered and result.attempts == 1
    [got] = receiver.hook_calls
    assert got.body == e.body()
    assert got.headers[EVENT_ID_HEADER] == e.id and got.headers["Keysentry-Event-Type"] == "connection.broken"
    assert got.headers["Content-Type"] == "application/json"
    assert verify(SECRET, got.headers[SIGNATURE_HEADER], got.body) > 0
    [record] = kit.log.attempts
    assert (record.outcome, record.http_status, record.attempt, record.next_attempt_at) == (
        "delivered",
        200,
        1,
        None,
    )
    assert record.response_excerpt == "ok" and record.event_id == e.id
    assert sample(kit.metrics, "keysentry_events_delivered_total", type="connection.broken") == 1


async def test_retries_after_500_keep_the_event_id_then_succeed(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(500, {}), (502, {})]
    e = event()
    result = await kit.sender.deliver(e, endpoint(receiver.url()))
    assert result.delivered and result.attempts == 3
    calls = receiver.hook_calls
    assert [c.headers[EVENT_ID_HEADER] for c in calls] == [e.id] * 3
    assert [c.headers["Keysentry-Delivery-Attempt"] for c in calls] == ["1", "2", "3"]
    assert {c.body for c in calls} == {e.body()}
    assert all(verify(SECRET, c.headers[SIGNATURE_HEADER], c.body) for c in calls)
    assert [a.outcome for a in kit.log.for_event(e.id)] == ["retrying", "retrying", "delivered"]
    assert [a.http_status for a in kit.log.attempts] == [500, 502, 200]
    first, second = kit.sleeps.calls
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0  # base 1 s, doubling, jittered
    for attempt in kit.log.attempts[:2]:
        assert attempt.next_attempt_at is not None and attempt.next_attempt_at > attempt.sent_at


async def test_gives_up_after_the_last_attempt_and_logs_it(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(503, {})] * 10
    result = await kit.sender.deliver(event(), endpoint(receiver.url()))
    assert not result.delivered and result.attempts == 4 == len(receiver.hook_calls)
    assert [a.outcome for a in kit.log.attempts] == ["retrying"] * 3 + ["failed"]
    last = kit.log.attempts[-1]
    assert last.next_attempt_at is None and last.error == "the receiver answered HTTP 503"
    assert last.response_excerpt == "answer 503"
    assert len(kit.sleeps.calls) == 3
    assert sample(kit.metrics, "keysentry_events_failed_total", type="connection.broken") == 1
    assert sample(kit.metrics, "keysentry_events_delivered_total", type="connection.broken") == 0


async def test_retry_after_from_the_receiver_is_honoured(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(429, {"Retry-After": "6"})]
    assert (await kit.sender.deliver(event(), endpoint(receiver.url()))).delivered
    assert kit.sleeps.calls == [6.0]


async def test_redirects_are_not_followed(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(302, {"Location": receiver.url("/elsewhere")})]
    result = await kit.sender.deliver(event(), endpoint(receiver.url()))
    assert not result.delivered and result.attempts == 1
    assert [r.path for r in receiver.received] == [f"/hook/{TOKEN}"]
    assert result.last.http_status == 302 and "redirects are not followed" in (result.last.error or "")


async def test_gone_is_not_retried(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(410, {})]
    result = await kit.sender.deliver(event(), endpoint(receiver.url()))
    assert (result.delivered, result.attempts, kit.sleeps.calls) == (False, 1, [])


async def test_a_receiver_that_never_answers_times_out_and_is_retried(receiver: Receiver, kit: Kit) -> None:
    policy = RetryPolicy(max_attempts=2, base_s=1, cap_s=2, total_timeout_s=0.2)
    async with WebhookSender(kit.log, policy=policy, allow_private=True, sleep=kit.sleeps) as sender:
        result = await sender.deliver(event(), endpoint(receiver.url("/slow")))
    assert not result.delivered and result.attempts == 2
    assert [a.error for a in kit.log.attempts] == ["no answer within 0.2 s"] * 2
    assert [a.http_status for a in kit.log.attempts] == [None, None]


async def test_a_refused_connection_is_retried(kit: Kit) -> None:
    result = await kit.sender.deliver(event(), endpoint("http://127.0.0.1:9/hook"))
    assert not result.delivered and result.attempts == 4
    assert all((a.error or "").startswith("could not connect") for a in kit.log.attempts)


async def test_private_addresses_are_refused_unless_allowed(receiver: Receiver) -> None:
    log = MemoryDeliveryLog()
    port = receiver.base.rsplit(":", 1)[1]
    async with WebhookSender(log, sleep=Sleeps()) as sender:
        literal = await sender.deliver(event(), endpoint(receiver.url()))
        # refused by check_url before connecting, as at registration: an endpoint stored while
        # the operator allowed private networks is not sent to once they are no longer allowed
        for host in ("localhost", "127.1", "2130706433", "0x7f.1", "api.localhost"):
            shorthand = await sender.deliver(event(), endpoint(receiver.url().replace("127.0.0.1", host)))
            assert not shorthand.delivered and shorthand.attempts == 1, host
            assert shorthand.last.error == "not sent: " + webhooks_module._PRIVATE_URL, host
    assert receiver.received == []
    assert not literal.delivered and literal.attempts == 1 and "public address" in (literal.last.error or "")
    async with WebhookSender(MemoryDeliveryLog(), allow_private=True, sleep=Sleeps()) as sender:
        allowed = await sender.deliver(event(), endpoint(f"http://localhost:{port}/hook/{TOKEN}"))
        # aiohttp takes no shorthand IPv4: refused for good, not retried, and the URL not quoted
        shorthand = await sender.deliver(event(), endpoint(f"http://127.1:{port}/hook/{TOKEN}"))
    assert allowed.delivered and len(receiver.hook_calls) == 1
    assert not shorthand.delivered and shorthand.attempts == 1
    assert shorthand.last.error == "not sent: the HTTP client cannot use this URL"


async def test_a_name_resolving_to_private_addresses_is_refused_naming_no_part_of_the_url(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    class LoopbackDNS:
        """Answers every name with the loopback address: a tenant's name pointed at our network."""

        async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
            return [
                {"hostname": host, "host": "127.0.0.1", "port": port, "family": 2, "proto": 0, "flags": 0}
            ]

        async def close(self) -> None:
            pass

    monkeypatch.setattr(webhooks_module, "DefaultResolver", LoopbackDNS)
    port = receiver.base.rsplit(":", 1)[1]
    host = f"{_TOKEN_TAIL}.hooks.example.com"  # a token in a subdomain, as some receivers use
    log = MemoryDeliveryLog()
    async with WebhookSender(log, sleep=Sleeps()) as sender:
        result = await sender.deliver(event(), endpoint(f"http://{host}:{port}/hook/{TOKEN}?k={TOKEN}"))
    assert receiver.received == []
    assert not result.delivered
    error = result.last.error or ""
    assert error == "could not connect: the host resolves only to private, loopback or link-local addresses"
    for attempt in log.attempts:
        for part in (host, _TOKEN_TAIL, "/hook", "127.0.0.1", port):
            assert part not in (attempt.error or ""), part


async def test_connection_errors_name_no_host_or_address(kit: Kit) -> None:
    result = await kit.sender.deliver(event(), endpoint(f"http://127.0.0.1:9/hook/{TOKEN}"))
    assert not result.delivered
    assert {a.error for a in kit.log.attempts} == {"could not connect: Connection refused"}


async def test_events_go_only_to_their_tenants_endpoints(receiver: Receiver, kit: Kit) -> None:
    with pytest.raises(ValueError, match="own tenant"):
        await kit.sender.deliver(event(tenant="tenant-2"), endpoint(receiver.url()))
    assert receiver.received == []


async def test_no_secret_url_or_signature_in_the_log_or_reprs(receiver: Receiver, kit: Kit) -> None:
    receiver.script = [(500, {})]
    ep = endpoint(receiver.url())
    await kit.sender.deliver(event(), ep)
    signatures = {c.headers[SIGNATURE_HEADER] for c in receiver.hook_calls}
    texts = [repr(ep), repr(kit.log.attempts)]
    texts += [str(getattr(a, f.name)) for a in kit.log.attempts for f in fields(DeliveryAttempt)]
    for text in texts:
        canary.assert_no_leak(text, "the delivery log or an endpoint's repr")
        assert not any(s.split("v1=")[1] in text for s in signatures)


def test_endpoints_choose_their_event_types() -> None:
    ep = endpoint("https://example.com/h", event_types=frozenset({"connection.broken"}))
    assert ep.accepts(event())
    assert not ep.accepts(Event(EventType.EXPIRING, "tenant-1", "conn-1", NOW))
    assert ep.accepts(ping_event("tenant-1", now=NOW))  # a test event always goes


# -- the verification snippets of docs/webhooks.md run against a delivered event ------------------------------


def snippet(language: str, containing: str = "") -> str:
    blocks = [
        b
        for b in re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
        if containing in b
    ]
    assert blocks, f"docs/webhooks.md has no {language} block with {containing!r}"
    return str(blocks[0])


async def delivered(receiver: Receiver, kit: Kit) -> Received:
    assert (await kit.sender.deliver(ping_event("tenant-1", now=NOW), endpoint(receiver.url()))).delivered
    return receiver.hook_calls[-1]


async def test_the_documented_python_verifier_accepts_a_delivery(receiver: Receiver, kit: Kit) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(snippet("python"), str(DOC), "exec"), namespace)
    check: Callable[..., bool] = namespace["verify_keysentry_signature"]
    got = await delivered(receiver, kit)
    header = got.headers[SIGNATURE_HEADER]
    assert check(SECRET, header, got.body) is True
    assert check(SECRET, header, got.body + b" ") is False
    assert check("whsec_wrong", header, got.body) is False
    old = signature_header([SECRET], got.body, int((datetime.now(UTC) - timedelta(minutes=6)).timestamp()))
    assert check(SECRET, old, got.body) is False


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_the_documented_openssl_command_computes_the_signature(
    receiver: Receiver, kit: Kit, tmp_path: Path
) -> None:
    got = await delivered(receiver, kit)
    header = got.headers[SIGNATURE_HEADER]
    (tmp_path / "body.json").write_bytes(got.body)
    script = snippet("sh", containing="openssl")
    script = re.sub(r"^SECRET=.*$", f"SECRET='{SECRET}'", script, flags=re.MULTILINE)
    script = re.sub(r"^HEADER=.*$", f"HEADER='{header}'", script, flags=re.MULTILINE)
    command = ["bash", "-c", script]
    out = await asyncio.to_thread(
        subprocess.run, command, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == header.split("v1=")[1]


# -- metrics ----------------------------------------------------------------------------------------------


def test_metrics_expose_the_monitor_names() -> None:
    metrics = MonitorMetrics()
    metrics.record_check("binance", Status.CONNECTED, 0.12)
    metrics.record_wait("okx", 1.5)
    metrics.record_rejection("bybit", "418")
    metrics.record_due_lag(42.0)
    metrics.record_delivery(EventType.EXPIRING, delivered=True)
    metrics.record_delivery(EventType.BROKEN, delivered=False)
    text = metrics.render().decode()
    for name in (
        'keysentry_checks_total{exchange="binance",outcome="connected"} 1.0',
        'keysentry_check_latency_seconds_bucket{exchange="binance",le="0.25"} 1.0',
        'keysentry_ratelimit_wait_seconds_sum{exchange="okx"} 1.5',
        'keysentry_exchange_rejections_total{exchange="bybit",kind="418"} 1.0',
        "keysentry_due_lag_seconds_count 1.0",
        'keysentry_events_delivered_total{type="connection.expiring"} 1.0',
        'keysentry_events_failed_total{type="connection.broken"} 1.0',
    ):
        assert name in text, name


def test_metric_labels_never_carry_free_text() -> None:
    metrics = MonitorMetrics()
    free_text = f"{SECRET} tenant's label"
    metrics.record_check(free_text, free_text, 0.1)
    metrics.record_wait(free_text, 0.1)
    metrics.record_rejection(free_text, free_text)  # type: ignore[arg-type]
    metrics.record_delivery(free_text, delivered=True)
    text = metrics.render().decode()
    canary.assert_no_leak(text, "the metrics exposition")
    assert "tenant's label" not in text
    assert 'keysentry_checks_total{exchange="other",outcome="other"} 1.0' in text
    assert 'keysentry_events_delivered_total{type="other"} 1.0' in text


def test_each_metrics_instance_has_its_own_registry() -> None:
    a, b = MonitorMetrics(), MonitorMetrics()
    a.record_due_lag(1.0)
    assert b"keysentry_due_lag_seconds_count 0.0" in b.render()
